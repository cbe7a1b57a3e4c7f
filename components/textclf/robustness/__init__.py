"""Robustness evaluation: perturbation suites over the test rows and the registration gate."""

from textclf.robustness.robustness import (
    RobustnessConfig,
    RobustnessResult,
    RobustnessSuite,
    evaluate_robustness,
    robustness_gate,
)

__all__ = ["RobustnessConfig", "RobustnessResult", "RobustnessSuite", "evaluate_robustness", "robustness_gate"]
