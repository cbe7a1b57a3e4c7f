"""Evaluation metrics on constructed predictions, the calibration temperature the export stage reads back, and the
evaluate stage on a small trained model."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from textclf.config import EvaluateConfig
from textclf.errors import DataValidationError
from textclf.evaluate import evaluate_model
from textclf.evaluate.evaluate import (
    calibration_section,
    classification_metrics,
    evaluation_temperature,
    expected_calibration_error,
)
from textclf.provenance import read_json


def test_ece_of_perfectly_calibrated_and_overconfident_predictions():
    # 10 predictions at confidence 0.8, 8 of them right: calibrated, ECE 0.
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.0)
    # Same confidence, only half right: ECE = |0.5 - 0.8| = 0.3.
    labels = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.3)


def test_classification_metrics_on_constructed_predictions():
    labels = ["a", "b", "c"]
    truth = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    probs = np.eye(3)[predicted] * 0.7 + 0.1
    metrics = classification_metrics(truth, probs, labels, bins=5)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0,
                                         "f1": pytest.approx(0.8), "support": 2}
    expected_macro = np.mean([0.5, 0.8, 2 / 3])
    assert metrics["macro_f1"] == pytest.approx(expected_macro)


def write_metrics(directory, payload) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(payload if isinstance(payload, str) else json.dumps(payload))


def test_evaluation_temperature_reads_the_calibration_entry(tmp_path):
    write_metrics(tmp_path / "calibrated", {"test": {}, "calibration": {"temperature": 1.25, "test_ece_after": 0.1}})
    assert evaluation_temperature(tmp_path / "calibrated") == 1.25
    write_metrics(tmp_path / "before", {"test": {"accuracy": 0.9}})  # an evaluation written before calibration
    assert evaluation_temperature(tmp_path / "before") is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"calibration": {"temperature": 0.0}}, "calibration.temperature must be a finite number > 0, got 0.0"),
        ({"calibration": {"temperature": -1.5}}, "calibration.temperature must be a finite number > 0, got -1.5"),
        ('{"calibration": {"temperature": NaN}}', "calibration.temperature must be a finite number > 0, got nan"),
        ('{"calibration": {"temperature": Infinity}}', "must be a finite number > 0, got inf"),
        ({"calibration": {"temperature": "2"}}, "must be a finite number > 0, got str '2'"),
        ({"calibration": {"temperature": True}}, "must be a finite number > 0, got bool True"),
        ({"calibration": {"temperature": None}}, "must be a finite number > 0, got NoneType None"),
        ({"calibration": {"test_ece_after": 0.1}}, "'calibration' must be an object with a 'temperature'"),
        ({"calibration": 1.3}, "'calibration' must be an object with a 'temperature'"),
        ([1, 2], "expected a JSON object, got list"),
        ("{not json", "not valid JSON"),
    ],
)
def test_evaluation_temperature_refuses_a_bad_value(tmp_path, payload, message):
    write_metrics(tmp_path / "eval", payload)
    with pytest.raises(DataValidationError, match=message) as excinfo:
        evaluation_temperature(tmp_path / "eval")
    assert "metrics.json" in str(excinfo.value)


def test_evaluation_temperature_needs_a_metrics_file(tmp_path):
    with pytest.raises(DataValidationError, match=r"metrics.json: not found; is .* an evaluate-stage output\?"):
        evaluation_temperature(tmp_path)


def test_calibration_section_shows_temperature_ece_and_nll():
    calibration = {"temperature": 0.4321, "validation_rows": 1234, "bins": 15, "test_ece_before": 0.2,
                   "test_ece_after": 0.05, "test_nll_before": 1.1, "test_nll_after": 0.9,
                   "validation_nll_before": 1.0, "validation_nll_after": 0.8}
    section = calibration_section(calibration)
    assert "<h2>Calibration</h2>" in section and "T = 0.4321" in section and "1,234" in section
    assert "<td>0.2000</td>" in section and "<td>0.0500</td>" in section and "<td>0.9000</td>" in section
    assert calibration_section(None) == ""


@pytest.mark.slow
def test_evaluate_stage_writes_metrics_report_and_parity_sample(tiny_model, small_splits, tmp_path):
    config = EvaluateConfig(parity_rows=64, overfit_gap=-1.0)  # any gap counts, to exercise the flag
    result = evaluate_model(tiny_model, small_splits, config, tmp_path / "eval")
    metrics = result.metrics
    test = metrics["test"]
    assert test["rows"] == 200
    assert 0.25 < test["accuracy"] <= 1.0  # better than chance on 4 balanced classes
    assert sum(map(sum, test["confusion_matrix"])) == 200
    assert test["accuracy"] == pytest.approx(np.trace(test["confusion_matrix"]) / 200)
    assert 0.0 <= test["expected_calibration_error"] <= 1.0
    assert metrics["overfitting"] is True
    assert metrics["train_validation_gap"] == pytest.approx(
        metrics["train_accuracy"] - metrics["validation_accuracy"]
    )
    predictions = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert predictions["correct"].mean() == pytest.approx(test["accuracy"])
    prob_columns = [c for c in predictions.columns if c.startswith("p_")]
    assert np.allclose(predictions[prob_columns].sum(axis=1), 1.0, atol=1e-5)
    assert len(pd.read_parquet(tmp_path / "eval" / "parity_texts.parquet")) == 64
    assert list(pd.read_parquet(tmp_path / "eval" / "parity_texts.parquet").columns) == ["text"]  # no labels
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "data:image/png;base64," in html and "Confusion matrix" in html
    assert read_json(tmp_path / "eval" / "metrics.json")["test"]["accuracy"] == test["accuracy"]

    # Calibration: T fitted on the 80 validation rows only, its effect reported on the 200 test rows.
    calibration = metrics["calibration"]
    temperature = calibration["temperature"]
    assert math.isfinite(temperature) and temperature > 0
    assert (calibration["validation_rows"], calibration["test_rows"]) == (80, 200)
    assert calibration["bins"] == config.calibration_bins
    assert calibration["test_ece_before"] == pytest.approx(test["expected_calibration_error"])
    assert 0.0 <= calibration["test_ece_after"] <= 1.0
    assert calibration["validation_nll_after"] <= calibration["validation_nll_before"] + 1e-12
    assert read_json(tmp_path / "eval" / "metrics.json")["calibration"] == calibration
    assert evaluation_temperature(tmp_path / "eval") == temperature
    assert "<h2>Calibration</h2>" in html and f"T = {temperature:.4f}" in html
    assert f"{calibration['test_ece_before']:.4f}" in html and f"{calibration['test_ece_after']:.4f}" in html


def test_evaluate_stage_adds_error_analysis_and_robustness(tiny_model, small_splits, tmp_path):
    """The report's error analysis and robustness sections, from the same run's predictions and suites."""
    from textclf.robustness.robustness import ROBUSTNESS_FILE

    config = EvaluateConfig(parity_rows=16, robustness_suites="uppercase,typos", robustness_max_rows=40)
    metrics = evaluate_model(tiny_model, small_splits, config, tmp_path / "eval").metrics
    analysis = metrics["error_analysis"]
    predictions = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert analysis["errors"] == int((~predictions["correct"]).sum())
    assert sum(b["rows"] for b in analysis["by_length"]) == 200  # the buckets partition the test rows
    assert sum(b["count"] for b in analysis["by_confidence"]) == 200
    confused = {(p["true"], p["predicted"]): p["count"] for p in analysis["confused_pairs"]}
    for (true, guess), count in confused.items():
        assert count == int(((predictions["label"] == true) & (predictions["predicted"] == guess)).sum())
    counts = list(confused.values())
    assert counts == sorted(counts, reverse=True) and all(t != g for t, g in confused)
    confidences = [m["confidence"] for m in analysis["confident_mistakes"]]
    assert confidences == sorted(confidences, reverse=True) and all(
        m["true"] != m["predicted"] for m in analysis["confident_mistakes"])

    record = read_json(tmp_path / "eval" / ROBUSTNESS_FILE)
    assert set(record["suites"]) == {"uppercase", "typos"} and record["test_rows"] == 40
    assert metrics["robustness"]["worst_drop_points"] == record["worst_drop_points"]
    assert record["contrast"]["applicable"] == 0  # the slice's row ids are not the official test rows
    html = (tmp_path / "eval" / "report.html").read_text()
    for heading in ("Error analysis", "Most confused pairs", "Accuracy by text length", "Accuracy by confidence",
                    "Most confident mistakes", "<h2>Robustness</h2>"):
        assert heading in html, heading
    assert html.count("data:image/png;base64,") == 2  # confusion matrix and reliability diagram

    off = evaluate_model(tiny_model, small_splits, EvaluateConfig(parity_rows=16, robustness_suites="none"),
                         tmp_path / "off")
    assert "robustness" not in off.metrics and not (tmp_path / "off" / ROBUSTNESS_FILE).exists()
    with pytest.raises(Exception, match="unknown robustness suite 'caps'"):
        EvaluateConfig(robustness_suites="caps")
