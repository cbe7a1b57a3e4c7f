"""Robustness evaluation: perturbation suites and contrast sets over the test rows, and the registration gate."""

from textclf.robustness.robustness import (
    RegistrationLimits,
    RobustnessConfig,
    RobustnessResult,
    RobustnessSuite,
    evaluate_robustness,
    gate_evaluation,
    robustness_gate,
)

__all__ = ["RegistrationLimits", "RobustnessConfig", "RobustnessResult", "RobustnessSuite", "evaluate_robustness",
           "gate_evaluation", "robustness_gate"]
