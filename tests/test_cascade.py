"""The confidence cascade: the rule (offline = online), the threshold choice on validation, the cascade bundle and
its bad variants, and a real server answering confident texts from stage 1 and the rest from stage 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import read_ag_news, requires_ag_news
from test_serving import running_server, v2_infer_body
from textclf.config import CascadeConfig, ClassicalConfig
from textclf.errors import ConfigError, DataValidationError
from textclf.serving.bundle import BundleError
from textclf.serving.cascade import (
    CascadeClassifier,
    CascadeSpec,
    Stage2Returns,
    cascade_probabilities,
    stage1_answers,
)
from textclf.serving.config import Precision
from textclf.serving.contract import CASCADE_FILE, CLASSICAL_METADATA_FILE, LABELS_FILE, METADATA_FILE
from textclf.serving.models import load_served_model
from textclf.serving.request_log import InvalidRecord, RequestRecord

LABELS = ("World", "Sports", "Business", "Sci/Tech")


class TableModel:
    """A stage whose probabilities are looked up by text; records the texts it was asked about."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls: list[list[str]] = []

    def probabilities(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([self.table[text] for text in texts], dtype=np.float32)


def random_probabilities(rng: np.random.Generator, n: int, k: int, sharpness: float) -> np.ndarray:
    logits = rng.normal(size=(n, k)) * sharpness
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return (exp / exp.sum(-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("returns", list(Stage2Returns))
def test_cascade_classifier_equals_the_offline_rule_and_asks_stage2_only_about_uncertain_texts(returns):
    rng = np.random.default_rng(0)
    texts = [f"text {i}" for i in range(40)]
    first, second = random_probabilities(rng, 40, 4, 3.0), random_probabilities(rng, 40, 4, 3.0)
    stage1 = TableModel(dict(zip(texts, first.tolist(), strict=True)))
    stage2 = TableModel(dict(zip(texts, second.tolist(), strict=True)))
    threshold = float(np.median(first.max(-1)))
    scores = CascadeClassifier(stage1, stage2, CascadeSpec(threshold, returns, LABELS)).score(texts)

    expected, stages = cascade_probabilities(first, second, threshold, returns)
    np.testing.assert_allclose(scores.probabilities, expected, atol=1e-7)
    assert scores.stages.tolist() == stages.tolist()
    confident = first.max(-1) >= threshold
    assert 0 < confident.sum() < len(texts), "the median threshold splits the texts"
    assert stages.tolist() == [1 if sure else 2 for sure in confident]
    assert stage2.calls == [[text for text, sure in zip(texts, confident, strict=True) if not sure]]
    answered_by_2 = ~confident
    if returns is Stage2Returns.STAGE2:
        np.testing.assert_allclose(scores.probabilities[answered_by_2], second[answered_by_2], atol=1e-7)
    else:
        np.testing.assert_allclose(scores.probabilities[answered_by_2],
                                   (first[answered_by_2] + second[answered_by_2]) / 2, atol=1e-7)
    np.testing.assert_allclose(scores.probabilities[confident], first[confident], atol=1e-7)


def test_stage2_is_not_called_when_stage1_is_sure_of_everything():
    stage2 = TableModel({})
    cascade = CascadeClassifier(TableModel({"a": [0.97, 0.01, 0.01, 0.01]}), stage2,
                                CascadeSpec(0.9, Stage2Returns.STAGE2, LABELS))
    assert cascade.score(["a"]).stages.tolist() == [1] and stage2.calls == []


def test_stage_served_alone_says_which_texts_it_defers():
    stage1 = TableModel({"sure": [0.97, 0.01, 0.01, 0.01], "unsure": [0.4, 0.3, 0.2, 0.1]})
    cascade = CascadeClassifier(stage1, TableModel({}), CascadeSpec(0.9, Stage2Returns.STAGE2, LABELS))
    alone = cascade.score_stage(1, ["sure", "unsure"])
    assert alone.deferred.tolist() == [False, True] and alone.stages.tolist() == [1, 1]


def test_threshold_is_inclusive():
    probabilities = np.array([[0.9, 0.1], [0.8999, 0.1001]], dtype=np.float32)
    assert stage1_answers(probabilities, float(np.float32(0.9))).tolist() == [True, False]


# ------------------------------------------------------------------------------------ choosing the threshold


def brute_force(first, second, ids, tolerance, returns, confidence):
    """Every distinct stage-1 confidence tried as the threshold, the rule applied directly."""
    from scipy.stats import norm

    from textclf.cascade.cascade import _summary

    z = float(norm.ppf(confidence))
    rows = [_summary(first, second, ids, float(value), returns, z) for value in np.unique(first.max(-1))]
    feasible = [row for row in rows if row["accuracy_loss_upper_bound"] <= tolerance + 1e-12]
    return min(feasible, key=lambda row: row["stage2_share"]) if feasible else None


def synthetic_validation(n: int, seed: int = 1):
    """Stage 2 right on about 90%; stage 1 right mostly where it is confident."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 4, size=n)
    second = random_probabilities(rng, n, 4, 1.0)
    second[np.arange(n), ids] += 1.5 * (rng.random(n) < 0.9)
    second /= second.sum(-1, keepdims=True)
    first = random_probabilities(rng, n, 4, 2.5)
    sure = first.max(-1) > 0.8
    first[sure, :] = 0.02
    first[sure, ids[sure]] = 0.94
    return first, second, ids


@pytest.mark.parametrize("confidence", [0.5, 0.95])
@pytest.mark.parametrize("returns", list(Stage2Returns))
@pytest.mark.parametrize("tolerance", [0.0, 0.002, 0.02])
def test_chosen_threshold_has_the_lowest_stage2_share_within_the_tolerance(returns, tolerance, confidence):
    from textclf.cascade import choose_threshold

    first, second, ids = synthetic_validation(600)
    config = CascadeConfig(accuracy_tolerance=tolerance, stage2_returns=returns.value, confidence=confidence)
    threshold, selection = choose_threshold(first, second, ids, config)
    best = brute_force(first, second, ids, tolerance, returns, confidence)
    if best is None:  # averaging with a weak stage 1 can cost more than the tolerance at every threshold
        assert "no threshold" in selection["rule"]
        return
    chosen = selection["chosen"]
    assert chosen["stage2_share"] == pytest.approx(best["stage2_share"])
    assert chosen["accuracy_loss_upper_bound"] <= tolerance + 1e-12
    assert chosen["accuracy"] == pytest.approx(selection["stage2_accuracy"] - chosen["accuracy_loss"])
    assert chosen["threshold"] == threshold and 0 < threshold < 1
    assert selection["validation_rows"] == 600 and len(selection["table"]) > 0
    if tolerance == 0.02 and confidence == 0.5:
        assert chosen["stage2_share"] < 0.9, "stage 1 takes a real share of the texts"


def test_the_bound_keeps_texts_for_stage2_when_validation_is_small():
    from textclf.cascade import choose_threshold

    first, second, ids = synthetic_validation(300, seed=3)
    loose = choose_threshold(first, second, ids, CascadeConfig(accuracy_tolerance=0.01, confidence=0.5))[1]
    careful = choose_threshold(first, second, ids, CascadeConfig(accuracy_tolerance=0.01, confidence=0.95))[1]
    assert careful["chosen"]["stage2_share"] > loose["chosen"]["stage2_share"]


def test_fixed_threshold_is_used_as_given_and_still_measured():
    from textclf.cascade import choose_threshold

    rng = np.random.default_rng(2)
    first, second = random_probabilities(rng, 50, 3, 2.0), random_probabilities(rng, 50, 3, 2.0)
    ids = rng.integers(0, 3, size=50)
    threshold, selection = choose_threshold(first, second, ids, CascadeConfig(threshold=0.7))
    assert threshold == 0.7 and selection["rule"] == "fixed by the configuration"
    assert selection["chosen"]["stage2_share"] == pytest.approx(float((first.max(-1) < np.float32(0.7)).mean()))


def test_no_feasible_threshold_sends_everything_to_stage2():
    from textclf.cascade import choose_threshold

    ids = np.array([1, 1, 0, 1])
    first = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], dtype=np.float32)  # always wrong
    second = np.eye(2, dtype=np.float32)[ids]  # always right
    threshold, selection = choose_threshold(first, second, ids, CascadeConfig(accuracy_tolerance=0.0))
    assert threshold > 0.9 and selection["chosen"]["stage2_share"] == 1.0 and "no threshold" in selection["rule"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage2_returns": "max"}, "stage2_returns must be one of stage2, average"),
        ({"threshold": 1.0}, "threshold must be 0"),
        ({"threshold": -0.1}, "threshold must be 0"),
        ({"accuracy_tolerance": 1.5}, "accuracy_tolerance must be a number in"),
        ({"confidence": 0.4}, r"confidence must be a number in \[0.5, 1\)"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_cascade_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CascadeConfig(**kwargs)


# ------------------------------------------------------------------------------------------ the cascade bundle


@pytest.fixture(scope="module")
def classical_bundle(small_splits, tmp_path_factory) -> Path:
    from textclf.classical import train_classical

    work = tmp_path_factory.mktemp("cascade_classical")
    return train_classical(small_splits, ClassicalConfig(), work / "model", work / "logits").model_dir


@pytest.fixture(scope="module")
def cascade_bundle(classical_bundle, exported_tiny_model, small_splits, tmp_path_factory) -> Path:
    """TF-IDF stage 1, the tiny transformer as stage 2, the threshold chosen on the slice's validation split."""
    from textclf.cascade import build_cascade

    out = tmp_path_factory.mktemp("cascade") / "bundle"
    build_cascade(classical_bundle, exported_tiny_model, small_splits, CascadeConfig(accuracy_tolerance=0.05), out)
    return out


@pytest.fixture(scope="module")
def test_texts() -> list[str]:
    frame = read_ag_news("test").iloc[:24]
    return (frame["title"] + " " + frame["description"]).tolist()


@requires_ag_news
def test_built_bundle_records_its_validation_numbers(cascade_bundle, classical_bundle):
    spec = json.loads((cascade_bundle / CASCADE_FILE).read_text())
    assert spec["stages"] == ["stage1", "stage2"] and spec["stage2_returns"] == "stage2"
    assert 0 < spec["threshold"] < 1 and spec["labels"] == list(LABELS)
    selection = spec["selection"]
    assert selection["validation_rows"] == 80 and selection["stage_kinds"] == ["classical", "transformer"]
    assert selection["precision"] == "int8"
    chosen = selection["chosen"]
    assert chosen["accuracy"] >= selection["stage2_accuracy"] - 0.05 - 1e-12
    # the stage bundles are complete copies
    assert (cascade_bundle / "stage1" / CLASSICAL_METADATA_FILE).read_bytes() == \
        (classical_bundle / CLASSICAL_METADATA_FILE).read_bytes()
    assert (cascade_bundle / "stage2" / METADATA_FILE).is_file()
    # the classical bundle carries the temperature fitted on validation
    assert json.loads((classical_bundle / CLASSICAL_METADATA_FILE).read_text())["temperature"] > 0


@requires_ag_news
def test_loaded_cascade_answers_as_the_offline_rule(cascade_bundle, test_texts):
    served = load_served_model(cascade_bundle, Precision.INT8, 1, 16, 0)
    assert served.cascade and served.labels == LABELS and served.model_version.startswith("cascade-")
    answers = [served.score([text])[0] for text in test_texts]
    spec, first = spec_and_stage(cascade_bundle, 1, test_texts, 1)
    second = spec_and_stage(cascade_bundle, 2, test_texts, 1)[1]
    expected, stages = cascade_probabilities(first, second, spec.threshold, spec.stage2_returns)
    assert [answer.stage for answer in answers] == stages.tolist()
    np.testing.assert_allclose(np.stack([answer.probabilities for answer in answers]), expected, atol=1e-5)


def corrupt(bundle: Path, work: Path, change) -> Path:
    copy = work / "bad"
    shutil.copytree(bundle, copy)
    change(copy)
    return copy


def edit_json(path: Path, **changes) -> None:
    payload = json.loads(path.read_text())
    payload.update(changes)
    path.write_text(json.dumps(payload))


@requires_ag_news
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda root: shutil.rmtree(root / "stage2"), r"stage 2 missing: no stage2/ directory"),
        (lambda root: shutil.rmtree(root / "stage1"), r"stage 1 missing: no stage1/ directory"),
        (lambda root: edit_json(root / CASCADE_FILE, threshold=0.0), r"'threshold' must be a number in \(0, 1\)"),
        (lambda root: edit_json(root / CASCADE_FILE, threshold=1.0), r"'threshold' must be a number in \(0, 1\)"),
        (lambda root: edit_json(root / CASCADE_FILE, threshold="0.9"), r"'threshold' must be a number in \(0, 1\)"),
        (lambda root: edit_json(root / CASCADE_FILE, stage2_returns="max"), r"'stage2_returns' must be one of"),
        (lambda root: edit_json(root / CASCADE_FILE, format_version=9), r"format_version 9"),
        (lambda root: edit_json(root / "stage1" / LABELS_FILE, labels=["Sports", "World", "Business", "Sci/Tech"]),
         r"cascade stage 1 \(stage1/\) has labels \['Sports', 'World'"),
        (lambda root: edit_json(root / "stage2" / METADATA_FILE, normalisation_version="0"),
         r"cascade stage 2: .*text normalisation version 0"),
        (lambda root: edit_json(root / "stage1" / CLASSICAL_METADATA_FILE, normalisation_version="0"),
         r"cascade stage 1: .*text normalisation version 0"),
        (lambda root: (root / "stage1" / CLASSICAL_METADATA_FILE).unlink(),
         r"cascade stage 1: .*not a model bundle"),
        (lambda root: edit_json(root / "stage1" / CLASSICAL_METADATA_FILE, temperature=-1),
         r"cascade stage 1: .*'temperature' must be a finite number > 0"),
        (lambda root: shutil.copytree(root, root / "stage2_nested") and (
            shutil.rmtree(root / "stage2"), (root / "stage2_nested").rename(root / "stage2")),
         r"cascade stage 2: .*not another cascade"),
    ],
    ids=["no-stage2", "no-stage1", "threshold-0", "threshold-1", "threshold-str", "returns", "format",
         "labels-differ", "stage2-normalisation", "stage1-normalisation", "stage1-not-bundle", "stage1-temperature",
         "nested-cascade"],
)
def test_bad_cascade_bundles_fail_at_load_naming_the_problem(cascade_bundle, tmp_path, change, message):
    from textclf.serving.predictor import TextClassifierPredictor
    from textclf.serving.config import ServingConfig

    bad = corrupt(cascade_bundle, tmp_path, change)
    with pytest.raises(BundleError, match=message):
        load_served_model(bad, Precision.INT8, 1, 4, 0)
    predictor = TextClassifierPredictor(ServingConfig(model_dir=bad, warmup_batches=0))
    with pytest.raises(BundleError, match=message):
        predictor.load()
    assert not predictor.ready


@requires_ag_news
def test_cascade_stage_flag_needs_a_cascade_bundle(classical_bundle):
    with pytest.raises(BundleError, match="--cascade-stage needs a cascade bundle"):
        load_served_model(classical_bundle, Precision.INT8, 1, 4, 0, cascade_stage=1)


@requires_ag_news
def test_build_cascade_refuses_stages_it_cannot_use(classical_bundle, exported_tiny_model, small_splits, tmp_path):
    from textclf.cascade import build_cascade

    with pytest.raises(DataValidationError, match="cascade stage 1: .*not a model bundle"):
        build_cascade(tmp_path, exported_tiny_model, small_splits, CascadeConfig(), tmp_path / "out1")
    relabelled = tmp_path / "relabelled"
    shutil.copytree(classical_bundle, relabelled)
    edit_json(relabelled / LABELS_FILE, labels=["a", "b", "c", "d"])
    with pytest.raises(DataValidationError, match=r"cascade stage 2: .*has labels \['a', 'b'"):
        build_cascade(classical_bundle, relabelled, small_splits, CascadeConfig(), tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists(), "nothing half-written"


def test_request_record_stage_field():
    assert RequestRecord.from_dict({"label": "World", "stage": 2}).stage == 2
    assert RequestRecord.from_dict({"label": "World"}).stage is None
    for bad in (0, "1", True, 1.5):
        with pytest.raises(InvalidRecord, match="'stage' must be an integer >= 1"):
            RequestRecord.from_dict({"label": "World", "stage": bad})


# ------------------------------------------------------------------------------------------ a real server


def metric_value(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture(scope="module")
def halving_cascade(cascade_bundle, test_texts, tmp_path_factory) -> Path:
    """The cascade bundle with its threshold set to the median stage-1 confidence on ``test_texts``: whatever the
    tiny models' accuracies, half of those texts go to each stage."""
    from textclf.cascade import score_stage

    first = score_stage(cascade_bundle / "stage1", test_texts, Precision.INT8, 1)[1]
    bundle = tmp_path_factory.mktemp("halving") / "bundle"
    shutil.copytree(cascade_bundle, bundle)
    edit_json(bundle / CASCADE_FILE, threshold=float(np.median(first.max(-1))))
    return bundle


def spec_and_stage(bundle: Path, stage: int, texts: list[str], batch_size: int) -> tuple[CascadeSpec, np.ndarray]:
    """A cascade bundle's spec and one stage's probabilities of ``texts`` (scored as the server scores them)."""
    from textclf.cascade import score_stage

    spec = CascadeSpec.from_json(json.loads((bundle / CASCADE_FILE).read_text()), "spec")
    return spec, score_stage(bundle / f"stage{stage}", texts, Precision.INT8, batch_size)[1]


@pytest.mark.slow
@requires_ag_news
def test_cascade_server_answers_from_the_stage_the_rule_picks(halving_cascade, test_texts, tmp_path):
    cascade_bundle = halving_cascade
    spec, first = spec_and_stage(cascade_bundle, 1, test_texts, 1)
    second = spec_and_stage(cascade_bundle, 2, test_texts, 1)[1]
    expected, stages = cascade_probabilities(first, second, spec.threshold, spec.stage2_returns)
    assert 0 < (stages == 1).sum() < len(test_texts), "the median threshold sends texts both ways"

    with running_server(cascade_bundle, tmp_path) as server:
        predictions, versions = [], set()
        for text in test_texts:  # one text per request: the same runs as the offline scores
            response = httpx.post(f"{server.http}/v1/models/textclf:predict", json={"instances": [text]}, timeout=30)
            assert response.status_code == 200, response.text
            predictions.extend(response.json()["predictions"])
            versions.add(response.json()["model_version"])
        v2 = httpx.post(f"{server.http}/v2/models/textclf/infer", json=v2_infer_body(test_texts[:2]), timeout=30)
        metrics_text = httpx.get(f"{server.http}/metrics", timeout=10).text
        # bench-serve's served-accuracy pass on the same server: the share each stage answered
        from textclf.benchmarks.serve_bench import measure_served_accuracy

        labels = [p["label"] for p in predictions]
        served_pass = measure_served_accuracy(f"{server.http}/v1/models/textclf:predict", test_texts, labels, 4)
    assert [p["stage"] for p in predictions] == stages.tolist()
    assert served_pass["accuracy"] == 1.0 and served_pass["errors"] == 0, "labels were the server's own answers"
    assert served_pass["stage_share"] == {str(n): float((stages == n).mean()) for n in (1, 2)}
    assert all("defer" not in p for p in predictions), "only a stage served alone says what it defers"
    served = np.array([[p["scores"][label] for label in LABELS] for p in predictions])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    outputs = {output["name"]: output for output in v2.json()["outputs"]}
    assert outputs["stage"]["datatype"] == "INT32" and outputs["stage"]["data"] == stages[:2].tolist()
    for number in (1, 2):
        served_count = int((stages == number).sum()) + int((stages[:2] == number).sum())  # before the pass
        assert metric_value(metrics_text, "textclf_cascade_answers_total", model_name="textclf",
                            stage=str(number)) == served_count
    records = [RequestRecord.from_json(line) for line in server.logged()]
    assert [record.stage for record in records[:len(test_texts)]] == stages.tolist()
    assert len(versions) == 1 and next(iter(versions)).startswith("cascade-")
    assert {record.model_version for record in records} == versions


@pytest.mark.slow
@requires_ag_news
def test_stage1_served_alone_marks_deferred_texts(halving_cascade, test_texts, tmp_path):
    cascade_bundle = halving_cascade
    spec, first = spec_and_stage(cascade_bundle, 1, test_texts, 8)
    with running_server(cascade_bundle, tmp_path, ("--cascade-stage", "1")) as server:
        response = httpx.post(f"{server.http}/v1/models/textclf:predict", json={"instances": test_texts[:8]},
                              timeout=30)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    deferred = (first[:8].max(-1) < np.float32(spec.threshold)).tolist()
    assert [p["defer"] for p in predictions] == deferred and True in deferred
    assert {p["stage"] for p in predictions} == {1}
    served = np.array([[p["scores"][label] for label in LABELS] for p in predictions])
    np.testing.assert_allclose(served, first[:8], atol=1e-6)
