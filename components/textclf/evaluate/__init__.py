"""Evaluate stage: test-set metrics, calibration, overfitting check and an HTML report."""

from textclf.evaluate.evaluate import EvaluationResult, evaluate_model

__all__ = ["EvaluationResult", "evaluate_model"]
