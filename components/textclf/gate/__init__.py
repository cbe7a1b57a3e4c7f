"""Promotion gate: McNemar's test plus a minimum accuracy improvement (:mod:`textclf.gate.mcnemar`), and its KFP
component (:mod:`textclf.gate.component`).

The A/B analysis of canary request logs is :mod:`textclf.monitor.abtest`, beside the drift monitor that reads the
same request log.
"""

from textclf.gate.mcnemar import (
    ARCHIVE, DEFAULT_MIN_IMPROVEMENT, PROMOTE, SEED_MIN_IMPROVEMENT, GateConfig, GateDecision, align_predictions,
    decide, decide_from_evaluations, decide_from_predictions, mcnemar_test, read_decision,
)

__all__ = [
    "ARCHIVE", "DEFAULT_MIN_IMPROVEMENT", "PROMOTE", "SEED_MIN_IMPROVEMENT", "GateConfig", "GateDecision",
    "align_predictions", "decide", "decide_from_evaluations", "decide_from_predictions", "mcnemar_test",
    "read_decision",
]
