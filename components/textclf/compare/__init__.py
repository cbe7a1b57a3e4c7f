"""Compare stage: every model of a run (transformers, the classical model, an ensemble's vote and stack) scored on
the test set side by side: accuracy, macro-F1, calibration before and after temperature scaling, size, layers."""

from textclf.compare.compare import (
    COMPARISON_FILE,
    REPORT_FILE,
    TABLE_FILE,
    TEST_LOGITS_DIR,
    ComparisonResult,
    ComparisonRow,
    ModelKind,
    ModelToScore,
    check_inputs,
    compare_models,
)

__all__ = [
    "COMPARISON_FILE",
    "REPORT_FILE",
    "TABLE_FILE",
    "TEST_LOGITS_DIR",
    "ComparisonResult",
    "ComparisonRow",
    "ModelKind",
    "ModelToScore",
    "check_inputs",
    "compare_models",
]
