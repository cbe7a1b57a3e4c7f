"""Temperature scaling: the fit (validation only, lower ECE on a deliberately over-confident model), its bad inputs,
the export metadata's ``temperature`` and the serving side applying it (bundle, ONNX engine, Triton transformer) and,
marked slow, a real server on a calibrated MiniLM bundle whose probabilities equal ``softmax(logits / T)`` of the
offline ONNX Runtime model, in the response, the request log and the confidence metric."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kserve.protocol.infer_type import InferOutput, InferResponse

from conftest import requires_ag_news
from test_serving import LABELS, offline_probabilities, running_server, v1_predict, write_fake_bundle
from textclf.errors import ConfigError, DataValidationError
from textclf.evaluate.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    calibrated_probabilities,
    calibration_summary,
    check_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from textclf.evaluate.evaluate import expected_calibration_error, softmax
from textclf.export.export import calibration_metadata, export_model
from textclf.provenance import sha256_file
from textclf.serving.bundle import BundleError, load_bundle
from textclf.serving.config import Precision, ServingConfig
from textclf.serving.contract import METADATA_FILE, TEMPERATURE_KEY

BINS = 15


def sampled_case(seed: int, scale: float, rows: int = 6000, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a model that is calibrated at T = 1 by construction (each label drawn from
    ``softmax(logits)``), with the logits then multiplied by ``scale``: over-confident for ``scale > 1``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(rows, classes))
    cumulative = softmax(logits).cumsum(axis=1)
    labels = (cumulative < rng.random(rows)[:, None]).sum(axis=1)
    return logits * scale, labels


# ---------------------------------------------------------------------------------------------------------- the fit


def test_temperature_scaling_lowers_ece_of_an_over_confident_model():
    logits, labels = sampled_case(seed=0, scale=3.0)
    half = len(logits) // 2
    summary = calibration_summary(logits[:half], labels[:half], logits[half:], labels[half:], BINS)
    assert summary["temperature"] == pytest.approx(3.0, rel=0.1), "undoes the scaling"
    assert summary["test_ece_before"] > 0.1 and summary["test_ece_after"] < 0.03
    assert summary["test_nll_after"] < summary["test_nll_before"]
    assert summary["validation_nll_after"] < summary["validation_nll_before"]
    assert summary["test_ece_before"] == expected_calibration_error(softmax(logits[half:]), labels[half:], BINS)
    calibrated = calibrated_probabilities(logits[half:], summary["temperature"])
    assert (calibrated.argmax(axis=1) == logits[half:].argmax(axis=1)).all(), "accuracy is unchanged"
    assert summary["test_ece_after"] == expected_calibration_error(calibrated, labels[half:], BINS)
    assert (summary["validation_rows"], summary["test_rows"], summary["bins"]) == (half, half, BINS)


@pytest.mark.parametrize(("scale", "expected"), [(1.0, 1.0), (0.4, 0.4), (6.0, 6.0)])
def test_fitted_temperature_recovers_the_scale(scale, expected):
    logits, labels = sampled_case(seed=1, scale=scale)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(expected, rel=0.1)
    assert negative_log_likelihood(logits, labels, temperature) <= negative_log_likelihood(logits, labels, 1.0)


def test_the_temperature_comes_from_the_validation_rows_only():
    logits, labels = sampled_case(seed=2, scale=2.0, rows=3000)
    other_logits, other_labels = sampled_case(seed=3, scale=0.5, rows=500)
    first = calibration_summary(logits, labels, logits[:100], labels[:100], BINS)
    second = calibration_summary(logits, labels, other_logits, other_labels, BINS)
    assert first["temperature"] == second["temperature"] == fit_temperature(logits, labels)


def test_separable_logits_give_a_temperature_at_the_end_of_the_interval(caplog):
    logits = np.array([[1.0, 0.0], [0.0, 1.0]] * 10)
    labels = np.array([0, 1] * 10)
    assert fit_temperature(logits, labels) == MIN_TEMPERATURE
    assert "at the end of the search interval" in caplog.text
    assert fit_temperature(-logits, labels) == MAX_TEMPERATURE, "always wrong: as flat as allowed"


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((0, 4)), np.zeros(0, dtype=int), "logits are empty"),
        (np.zeros(4), np.zeros(4, dtype=int), r"2-D array \[rows, classes\], got shape \(4,\)"),
        (np.zeros((3, 1)), np.zeros(3, dtype=int), "at least 2 classes"),
        (np.zeros((3, 4)), np.zeros(2, dtype=int), r"3 rows of logits, labels of shape \(2,\)"),
        (np.zeros((3, 4)), np.zeros((3, 1), dtype=int), "one id per logits row"),
        (np.zeros((3, 4)), np.array([0, 1, 4]), r"label id 4 outside 0..3"),
        (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), "integer class ids"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1]), "1 non-finite values"),
    ],
)
def test_bad_logits_or_labels_are_refused(logits, labels, message):
    with pytest.raises(DataValidationError, match=message):
        fit_temperature(logits, labels)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), True, "2"])
def test_a_temperature_that_is_not_a_finite_positive_number_is_refused(temperature):
    logits = np.zeros((2, 4))
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        calibrated_probabilities(logits, temperature)
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        negative_log_likelihood(logits, np.array([0, 1]), temperature)
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        calibration_metadata(temperature)
    assert check_temperature(2) == 2.0 and check_temperature(np.float32(0.5)) == 0.5


def test_summary_checks_bins_and_class_counts():
    logits, labels = sampled_case(seed=4, scale=1.0, rows=50)
    with pytest.raises(ConfigError, match="bins must be an integer >= 1, got 0"):
        calibration_summary(logits, labels, logits, labels, 0)
    with pytest.raises(DataValidationError, match="validation logits have 4 classes, test logits 3"):
        calibration_summary(logits, labels, logits[:, :3], np.zeros(50, dtype=int), BINS)


# -------------------------------------------------------------------------------------------- export metadata


def test_export_records_a_temperature_only_when_given(tmp_path):
    assert calibration_metadata(None) == {}
    assert calibration_metadata(1.7) == {TEMPERATURE_KEY: 1.7}
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0, got -2.0"):
        export_model(tmp_path / "no-model", tmp_path / "no-texts.parquet", None, tmp_path / "onnx", temperature=-2.0)
    assert not (tmp_path / "onnx").exists(), "refused before anything is read or exported"


# ---------------------------------------------------------------------------------------------- serving, fast


def with_metadata(root: Path, **entries) -> Path:
    metadata = json.loads((root / METADATA_FILE).read_text())
    (root / METADATA_FILE).write_text(json.dumps({**metadata, **entries}))
    return root


def test_bundle_reads_its_temperature_and_defaults_to_one(tmp_path):
    assert load_bundle(write_fake_bundle(tmp_path / "plain")).temperature == 1.0
    assert load_bundle(with_metadata(write_fake_bundle(tmp_path / "t"), temperature=2.5)).temperature == 2.5
    assert load_bundle(with_metadata(write_fake_bundle(tmp_path / "int"), temperature=2)).temperature == 2.0


@pytest.mark.parametrize("value", [0, -1.5, float("nan"), float("inf"), None, "1.5", True])
def test_bundle_with_an_unusable_temperature_is_refused_at_load(tmp_path, value):
    root = with_metadata(write_fake_bundle(tmp_path / "bundle"), temperature=value)  # NaN/inf: JSON NaN, Infinity
    with pytest.raises(BundleError, match=r"export_metadata.json: 'temperature' must be a finite number > 0"):
        load_bundle(root)


def write_tiny_onnx(path: Path, vocab_size: int = 8, classes: int = 4) -> np.ndarray:
    """A real ONNX graph of the bundle's interface: logits = sum over the unmasked positions of a per-token row of
    a random [vocab_size, classes] table. Returns the table."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).normal(0.0, 2.0, size=(vocab_size, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
            helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
            helper.make_node("Mul", ["rows", "mask3"], ["kept"]),
            helper.make_node("ReduceSum", ["kept", "axes"], ["logits"], keepdims=0),
        ],
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1]), "axes"),
                     numpy_helper.from_array(np.array([2]), "last")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    metadata_path = path.parent / "export_metadata.json"
    if metadata_path.is_file():  # record the file's hash, as the export stage does: the server checks it at load
        metadata = json.loads(metadata_path.read_text())
        metadata.setdefault("files", {})[path.name] = sha256_file(path)
        metadata_path.write_text(json.dumps(metadata))
    return table


def test_onnx_engine_applies_the_bundle_temperature(tmp_path):
    from textclf.serving.engine import OnnxTextClassifier

    texts = ["stocks fell", "goal scored", "Stocks fell goal"]
    probabilities = {}
    for name, entries in {"plain": {}, "calibrated": {TEMPERATURE_KEY: 2.5}}.items():
        root = with_metadata(write_fake_bundle(tmp_path / name), **entries)
        table = write_tiny_onnx(root / "model.int8.onnx")
        classifier = OnnxTextClassifier.from_bundle(load_bundle(root), Precision.INT8, 1, 8, warmup_rounds=0)
        probabilities[name] = classifier.probabilities(texts)
    ids = [[2, 4, 5, 3], [2, 6, 7, 3], [2, 1, 5, 6, 3]]  # [CLS] ... [SEP] of the fake bundle's WordLevel vocabulary
    logits = np.stack([table[row].sum(axis=0) for row in ids])
    np.testing.assert_allclose(probabilities["plain"], softmax(logits), atol=1e-6)
    np.testing.assert_allclose(probabilities["calibrated"], softmax(logits / 2.5), atol=1e-6)


def test_triton_transformer_applies_the_bundle_temperature(tmp_path):
    from textclf.serving.transformer import TritonResult, TritonTextTransformer

    root = with_metadata(write_fake_bundle(tmp_path / "bundle"), temperature=0.5)
    transformer = TritonTextTransformer(ServingConfig(model_dir=root, predictor_host="triton:8001"))
    assert transformer.load() and transformer.bundle.temperature == 0.5
    logits = np.array([[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.2, 0.0]], dtype=np.float32)

    async def roundtrip() -> dict:
        request = await transformer.preprocess({"instances": ["goal scored", "stocks fell"]})
        triton = InferResponse("r1", "textclf", [InferOutput("logits", [2, 4], "FP32", logits.ravel().tolist())],
                               model_version="1")
        return await transformer.postprocess(TritonResult(request.request, triton))

    body = asyncio.run(roundtrip())
    scores = np.array([[p["scores"][label] for label in LABELS] for p in body["predictions"]])
    np.testing.assert_allclose(scores, softmax(logits / 0.5), atol=1e-6)


# --------------------------------------------------------------------------------------- the server (slow, real)

#: The served temperature: sharpens the tiny model's close logits, so calibrated and plain clearly differ.
SERVED_TEMPERATURE = 0.5


@pytest.fixture(scope="module")
def calibrated_bundle(tiny_model, small_splits, tmp_path_factory) -> Path:
    """The tiny MiniLM exported by the export stage's writer with ``temperature`` = :data:`SERVED_TEMPERATURE`."""
    from textclf.config import ExportConfig
    from textclf.validate.validate import SPLIT_FILES

    work = tmp_path_factory.mktemp("calibrated_bundle")
    parity = work / "parity_texts.parquet"
    pd.read_parquet(small_splits / SPLIT_FILES["validation"])[["text"]].iloc[:64].to_parquet(parity, index=False)
    # The tiny model's logits are close together; the 99% INT8 threshold is checked on a real model elsewhere.
    export_model(tiny_model, parity, ExportConfig(min_int8_agreement=0.9), work / "onnx",
                 temperature=SERVED_TEMPERATURE)
    return work / "onnx"


@pytest.mark.slow
@requires_ag_news
def test_server_serves_calibrated_probabilities_everywhere(calibrated_bundle, exported_tiny_model, tmp_path):
    import httpx

    from test_serving import read_ag_news

    frame = read_ag_news("test").iloc[100:106]
    texts = (frame["title"] + " " + frame["description"]).tolist()
    labels = list(load_bundle(calibrated_bundle).labels)
    assert json.loads((calibrated_bundle / METADATA_FILE).read_text())[TEMPERATURE_KEY] == SERVED_TEMPERATURE
    assert TEMPERATURE_KEY not in json.loads((exported_tiny_model / METADATA_FILE).read_text())
    assert load_bundle(exported_tiny_model).temperature == 1.0, "a bundle without a temperature serves as before"

    expected = offline_probabilities(calibrated_bundle, texts, temperature=SERVED_TEMPERATURE)
    uncalibrated = offline_probabilities(calibrated_bundle, texts)
    assert np.abs(expected - uncalibrated).max() > 0.01, "the temperature visibly changes the probabilities"
    with running_server(calibrated_bundle, tmp_path) as server:
        served = []
        for text in texts:  # one text per request: INT8 activation scales then see only that text, as offline
            prediction = v1_predict(server, [text])["predictions"][0]
            served.append([prediction["scores"][label] for label in labels])
        served = np.array(served)
        np.testing.assert_allclose(served, expected, atol=1e-5)
        metrics = httpx.get(f"{server.http}/metrics", timeout=30).text
        deadline = time.monotonic() + 10
        while len(server.logged()) < len(texts) and time.monotonic() < deadline:
            time.sleep(0.1)
    logged = [json.loads(line) for line in server.logged()]
    assert [line["text"] for line in logged] == texts
    np.testing.assert_allclose([[line["probabilities"][label] for label in labels] for line in logged], served,
                               atol=1e-7)
    confidence_sum = next(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                          if line.startswith('textclf_prediction_confidence_sum{model_name="textclf"}'))
    assert math.isclose(confidence_sum, served.max(axis=1).sum(), rel_tol=1e-6), "the drift signal is calibrated"
