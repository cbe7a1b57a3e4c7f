"""Evaluation metrics on constructed predictions, and the evaluate stage on a small trained model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from textclf.config import EvaluateConfig
from textclf.evaluate import evaluate_model
from textclf.evaluate.evaluate import classification_metrics, expected_calibration_error
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
