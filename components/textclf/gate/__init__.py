"""Promotion gate (McNemar's test plus a minimum accuracy improvement) and A/B analysis of canary request logs."""

from textclf.gate.abtest import (
    CONTROL, TREATMENT, ABLog, ABTestConfig, analyse_ab_log, assign_variant, read_ab_log, read_labels,
    render_html, render_markdown, two_proportion_test, variant_bucket, write_ab_report,
)
from textclf.gate.mcnemar import (
    ARCHIVE, DEFAULT_MIN_IMPROVEMENT, PROMOTE, SEED_MIN_IMPROVEMENT, GateConfig, GateDecision, align_predictions,
    decide, decide_from_evaluations, decide_from_predictions, mcnemar_test, read_decision,
)

__all__ = [
    "ARCHIVE", "CONTROL", "DEFAULT_MIN_IMPROVEMENT", "PROMOTE", "SEED_MIN_IMPROVEMENT", "TREATMENT", "ABLog",
    "ABTestConfig", "GateConfig", "GateDecision", "align_predictions", "analyse_ab_log", "assign_variant", "decide",
    "decide_from_evaluations", "decide_from_predictions", "mcnemar_test", "read_ab_log", "read_decision", "read_labels",
    "render_html", "render_markdown", "two_proportion_test", "variant_bucket", "write_ab_report",
]
