"""The compare stage on the real 320/80/200-row AG News slice: the tiny MiniLM as teacher (and again as student), a
classical model, and their ensemble, scored side by side; bad input refused before anything is scored; and the KFP
component's signature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from textclf.classical import load_classical_model, split_logits, train_classical
from textclf.classical.classical import LOGITS_FILES, logits_frame
from textclf.compare import (
    COMPARISON_FILE,
    REPORT_FILE,
    TABLE_FILE,
    TEST_LOGITS_DIR,
    ModelKind,
    ModelToScore,
    compare_models,
)
from textclf.config import ClassicalConfig, EnsembleConfig, EvaluateConfig
from textclf.ensemble import apply_ensemble, fit_ensemble_dirs
from textclf.ensemble.ensemble import member_from_frame
from textclf.errors import ConfigError, DataValidationError
from textclf.evaluate.calibration import calibration_summary
from textclf.evaluate.evaluate import classification_metrics, predict_logits, softmax
from textclf.provenance import read_json
from textclf.validate.validate import SPLIT_FILES

CONFIG = EvaluateConfig(batch_size=32, calibration_bins=10)
ROWS = ["teacher", "classical", "ensemble_vote", "ensemble_stack", "student"]


def split_labels(split_dir: Path) -> list[str]:
    return read_json(split_dir / "labels.json")["labels"]


def label_ids(split_dir: Path, split: str) -> np.ndarray:
    labels = split_labels(split_dir)
    frame = pd.read_parquet(split_dir / SPLIT_FILES[split])
    return frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()


@pytest.fixture(scope="module")
def classical(small_splits, tmp_path_factory):
    """(model dir, validation logits dir) of a word-n-gram SVM trained on the slice (seconds)."""
    work = tmp_path_factory.mktemp("compare_classical")
    result = train_classical(small_splits, ClassicalConfig(char_ngrams=False), work / "model", work / "logits")
    return result.model_dir, result.logits_dir


@pytest.fixture(scope="module")
def constructed_ensemble(classical, small_splits, tmp_path_factory):
    """An ensemble of ``classical`` and a constructed ``teacher`` (noisy copies of the classical validation logits):
    enough for the input checks, no transformer needed."""
    _, logits_dir = classical
    work = tmp_path_factory.mktemp("compare_constructed")
    frame = pd.read_parquet(logits_dir / LOGITS_FILES["validation"])
    labels = split_labels(small_splits)
    logits = frame[[f"logit_{label}" for label in labels]].to_numpy()
    noisy = (logits + np.random.default_rng(0).normal(0.0, 1.0, logits.shape)).astype(np.float32)
    teacher_dir = work / "teacher_logits"
    teacher_dir.mkdir()
    logits_frame(frame, noisy, labels).to_parquet(teacher_dir / LOGITS_FILES["validation"], index=False)
    fit_ensemble_dirs({"teacher": teacher_dir, "classical": logits_dir}, EnsembleConfig(cv_folds=3), work / "ensemble")
    return work / "ensemble"


@pytest.fixture(scope="module")
def teacher_logits(tiny_model, small_splits, tmp_path_factory):
    """The tiny model's logits on validation and test, computed here independently of the compare stage; the
    validation ones also written as a member's logits directory."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    max_length = read_json(tiny_model / "textclf_metadata.json")["max_length"]
    labels = split_labels(small_splits)
    logits, frames = {}, {}
    for split in ("validation", "test"):
        frames[split] = pd.read_parquet(small_splits / SPLIT_FILES[split])
        logits[split] = predict_logits(model, tokenizer, frames[split]["text"].tolist(), CONFIG.batch_size,
                                       max_length)
    directory = tmp_path_factory.mktemp("compare_teacher") / "logits"
    directory.mkdir()
    logits_frame(frames["validation"], logits["validation"], labels).to_parquet(
        directory / LOGITS_FILES["validation"], index=False
    )
    return directory, logits, frames


@pytest.fixture(scope="module")
def ensemble(teacher_logits, classical, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare_ensemble") / "ensemble"
    fit_ensemble_dirs({"teacher": teacher_logits[0], "classical": classical[1]}, EnsembleConfig(cv_folds=3), out)
    return out


@pytest.fixture(scope="module")
def comparison(tiny_model, classical, ensemble, small_splits, tmp_path_factory):
    models = [
        ModelToScore("teacher", ModelKind.TRANSFORMER, tiny_model),
        ModelToScore("classical", "classical", classical[0]),
        ModelToScore("ensemble", ModelKind.ENSEMBLE, ensemble),
        ModelToScore("student", "transformer", str(tiny_model)),
    ]
    return compare_models(small_splits, models, CONFIG, tmp_path_factory.mktemp("compare") / "out")


@pytest.mark.slow
def test_every_model_gets_a_row_with_its_numbers(comparison, tiny_model, classical, ensemble):
    assert [row.name for row in comparison.rows] == ROWS
    by_name = {row.name: row for row in comparison.rows}
    assert [by_name[name].kind for name in ROWS] == ["transformer", "classical", "ensemble", "ensemble",
                                                     "transformer"]
    assert by_name["ensemble_vote"].method == "vote" and by_name["ensemble_stack"].method == "stack"
    assert by_name["ensemble_vote"].members == ("teacher", "classical") and by_name["teacher"].members == ()
    layers = json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    for row in comparison.rows:
        assert row.test_rows == 200 and row.validation_rows == 80
        assert 0.25 < row.accuracy <= 1.0, row  # better than chance on 4 balanced classes
        assert 0.0 <= row.macro_f1 <= 1.0 and 0.0 <= row.expected_calibration_error <= 1.0
        assert 0.0 <= row.expected_calibration_error_calibrated <= 1.0 and row.temperature > 0
        assert row.encoder_layers == (layers if row.kind == "transformer" else None)
    teacher_size = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    classical_size = sum(p.stat().st_size for p in classical[0].rglob("*") if p.is_file())
    assert by_name["teacher"].size_bytes == by_name["student"].size_bytes == teacher_size
    assert by_name["classical"].size_bytes == classical_size
    ensemble_size = (ensemble / "ensemble.json").stat().st_size
    assert by_name["ensemble_stack"].size_bytes == ensemble_size
    assert by_name["ensemble_stack"].total_size_bytes == ensemble_size + teacher_size + classical_size
    # The same model under two names scores the same.
    teacher, student = by_name["teacher"], by_name["student"]
    assert (student.accuracy, student.macro_f1) == (teacher.accuracy, teacher.macro_f1)
    assert student.temperature == pytest.approx(teacher.temperature)


@pytest.mark.slow
def test_rows_match_metrics_computed_independently(comparison, teacher_logits, classical, ensemble, small_splits):
    _, logits, frames = teacher_logits
    labels = split_labels(small_splits)
    test_ids, validation_ids = label_ids(small_splits, "test"), label_ids(small_splits, "validation")

    expected = classification_metrics(test_ids, softmax(logits["test"].astype(np.float64)), labels, 10)
    calibration = calibration_summary(logits["validation"], validation_ids, logits["test"], test_ids, 10)
    teacher = comparison.row("teacher")
    assert teacher.accuracy == pytest.approx(expected["accuracy"])
    assert teacher.macro_f1 == pytest.approx(expected["macro_f1"])
    assert teacher.expected_calibration_error == pytest.approx(expected["expected_calibration_error"], abs=1e-6)
    assert teacher.temperature == pytest.approx(calibration["temperature"], rel=1e-3)
    assert teacher.expected_calibration_error_calibrated == pytest.approx(calibration["test_ece_after"], abs=1e-3)

    fitted = load_classical_model(classical[0])
    classical_test = split_logits(fitted, small_splits, "test")
    classical_probs = classical_test[[f"p_{label}" for label in labels]].to_numpy(dtype=np.float64)
    assert comparison.row("classical").accuracy == pytest.approx(
        classification_metrics(test_ids, classical_probs, labels, 10)["accuracy"]
    )

    from textclf.ensemble import load_ensemble

    members = [member_from_frame(logits_frame(frames["test"], logits["test"], labels), "teacher"),
               member_from_frame(classical_test, "classical")]
    for method in ("vote", "stack"):
        probabilities, _ = apply_ensemble(load_ensemble(ensemble), members, method)
        expected = classification_metrics(test_ids, probabilities, labels, 10)
        row = comparison.row(f"ensemble_{method}")
        assert row.accuracy == pytest.approx(expected["accuracy"]), method
        assert row.macro_f1 == pytest.approx(expected["macro_f1"]), method


@pytest.mark.slow
def test_tables_name_every_model_and_the_test_set(comparison, small_splits):
    out = comparison.output_dir
    assert sorted(path.name for path in out.iterdir()) == sorted([COMPARISON_FILE, TABLE_FILE, REPORT_FILE,
                                                                  TEST_LOGITS_DIR])
    # Every row's test logits are kept, in split order, and give the row's accuracy back.
    test = pd.read_parquet(small_splits / SPLIT_FILES["test"])
    for row in comparison.rows:
        kept = pd.read_parquet(out / TEST_LOGITS_DIR / f"{row.name}.parquet")
        assert kept["row"].tolist() == test["row"].tolist()
        logits = kept[[f"logit_{label}" for label in comparison.labels]].to_numpy()
        labels = np.array(comparison.labels)[logits.argmax(axis=1)]
        assert (labels == kept["label"].to_numpy()).mean() == pytest.approx(row.accuracy)
    payload = read_json(out / COMPARISON_FILE)
    sha = read_json(small_splits / "validation_report.json")["fingerprints"]["test_set_sha256"]
    assert payload["test_set_sha256"] == sha == comparison.test_set_sha256
    assert [row["name"] for row in payload["rows"]] == ROWS
    assert payload["rows"][0]["accuracy"] == comparison.row("teacher").accuracy
    table = (out / TABLE_FILE).read_text().strip().splitlines()
    assert all(line.startswith("|") and line.endswith("|") for line in table)
    assert len(table) == 2 + len(ROWS)  # heading, rule, one line per row: one table
    for name, line in zip(ROWS, table[2:]):
        assert line.startswith(f"| {name} |")
        assert f"{comparison.row(name).accuracy:.4f}" in line
    html = (out / REPORT_FILE).read_text()
    assert html.count("<table") == 1 and sha in html and "<img" not in html and "src=" not in html
    for name in ROWS:
        assert f"<td>{name}</td>" in html


@pytest.fixture
def no_scoring(monkeypatch):
    """Fail the test if anything is loaded or scored."""
    from textclf.compare import compare

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded or scored before the inputs were checked")

    for name in ("predict_logits", "split_logits", "load_classical_model", "_score_member"):
        monkeypatch.setattr(compare, name, refuse)


def test_an_ensemble_member_missing_is_refused_before_scoring(no_scoring, classical, constructed_ensemble,
                                                              small_splits, tmp_path):
    models = [ModelToScore("classical", ModelKind.CLASSICAL, classical[0]),
              ModelToScore("ensemble", ModelKind.ENSEMBLE, constructed_ensemble)]
    with pytest.raises(DataValidationError, match=r"ensemble 'ensemble': members \['teacher'\]"):
        compare_models(small_splits, models, CONFIG, tmp_path / "out")
    # A member given under another name is missing just the same; so is one given as an ensemble.
    renamed = [ModelToScore("classical_svm", ModelKind.CLASSICAL, classical[0]),
               ModelToScore("teacher", ModelKind.ENSEMBLE, constructed_ensemble)]
    with pytest.raises(DataValidationError, match=r"members \['teacher', 'classical'\]"):
        compare_models(small_splits, renamed, CONFIG, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_model_lists_are_refused_before_scoring(no_scoring, classical, constructed_ensemble, small_splits,
                                                    tmp_path):
    model_dir = classical[0]
    cases = [
        ([], ConfigError, "no models"),
        ([ModelToScore("a", "classical", model_dir), ModelToScore("a", "classical", model_dir)], ConfigError,
         r"repeated: \['a'\]"),
        ([ModelToScore("ensemble_vote", "classical", model_dir),
          ModelToScore("ensemble", "ensemble", constructed_ensemble)], ConfigError, r"repeated: \['ensemble_vote'\]"),
        ([("classical", "classical", model_dir)], ConfigError, "ModelToScore"),
    ]
    for models, error, message in cases:
        with pytest.raises(error, match=message):
            compare_models(small_splits, models, CONFIG, tmp_path / "out")
    with pytest.raises(ConfigError, match="calibration_bins"):
        compare_models(small_splits, [ModelToScore("a", "classical", model_dir)], EvaluateConfig(calibration_bins=0),
                       tmp_path / "out")
    with pytest.raises(ConfigError, match="kind must be one of"):
        ModelToScore("onnx", "onnx", model_dir)
    with pytest.raises(ConfigError, match="model name"):
        ModelToScore("two words", "classical", model_dir)
    assert not (tmp_path / "out").exists()


def test_model_directories_lacking_files_are_refused_before_scoring(no_scoring, classical, small_splits, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    half = tmp_path / "half_transformer"
    half.mkdir()
    (half / "config.json").write_text("{}")
    (half / "labels.json").write_text(json.dumps({"labels": split_labels(small_splits)}))
    cases = [
        (ModelToScore("teacher", "transformer", half), r"lacks \['textclf_metadata.json'"),
        (ModelToScore("classical", "classical", empty), "model.skops"),
        (ModelToScore("ensemble", "ensemble", empty), "ensemble.json"),
        (ModelToScore("gone", "transformer", tmp_path / "absent"), "not a directory"),
        # A transformer directory is not a classical one.
        (ModelToScore("classical", "classical", half), "model.skops"),
    ]
    good = ModelToScore("svm", ModelKind.CLASSICAL, classical[0])
    for model, message in cases:
        with pytest.raises(DataValidationError, match=message):
            compare_models(small_splits, [good, model], CONFIG, tmp_path / "out")
    with pytest.raises(DataValidationError, match="validate stage"):
        compare_models(empty, [good], CONFIG, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_component_signature():
    from textclf.compare.component import compare_models_op

    spec = compare_models_op.component_spec
    assert {name: spec.type for name, spec in spec.inputs.items()} == {
        "splits": "system.Dataset@0.0.1", "teacher": "system.Model@0.0.1", "classical": "system.Model@0.0.1",
        "ensemble": "system.Model@0.0.1", "student": "system.Model@0.0.1",
    }
    outputs = {name: output.type for name, output in spec.outputs.items()}
    metrics = ["teacher_metrics", "classical_metrics", "vote_metrics", "stack_metrics", "student_metrics"]
    assert outputs == {"comparison": "system.Artifact@0.0.1", "report": "system.HTML@0.0.1",
                       **{name: "system.Metrics@0.0.1" for name in metrics}, "Output": "Float"}
    documented = compare_models_op.python_func.__doc__
    for name in list(spec.inputs) + list(spec.outputs):
        assert name == "Output" or f"{name}:" in documented, name
