"""KFP components: robustness for any pipeline (thin wrapper around :func:`textclf.robustness.evaluate_robustness`,
with its own gate) and the registration gate over the evaluate and export steps' outputs
(:func:`textclf.robustness.robustness.gate_evaluation`), which the training and retraining pipelines use."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def robustness_op(
    model: Input[Model],
    splits: Input[Dataset],
    onnx_model: Input[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    robustness: Output[Artifact],
    suites: str = "",
    max_rows: int = 1000,
    first_words: int = 10,
    min_accuracy: float = 0.0,
    max_robustness_drop: float = 0.0,
    max_model_mb: float = 0.0,
) -> NamedTuple("RobustnessOutputs", passed=bool, reasons=str, worst_drop_points=float):
    """Score the model on perturbed copies of the test rows and decide whether it may be registered.

    Args:
        model: Output of the train component (PyTorch; scored as the evaluate stage scores it).
        splits: Output of the validate/split component (its test split; a ``title`` column enables the title and
            description suites).
        onnx_model: Output of the export component: its INT8 file's size is what ``max_model_mb`` limits.
        metrics: Per suite ``<suite>_accuracy`` and ``<suite>_drop_points``, plus ``worst_drop_points``.
        report: The per-suite table with an example of each perturbation.
        robustness: Output directory: ``robustness.json`` and ``robustness.html``.
        suites: Comma-separated suite names (``textclf.robustness.RobustnessSuite``); empty: all.
        max_rows: Test rows scored (a class-stratified sample); 0: all.
        first_words: N of the ``first_words`` suite.
        min_accuracy: Gate: lowest accepted accuracy on the scored test rows (0-1); 0 disables.
        max_robustness_drop: Gate: largest accepted drop, in accuracy points, of any suite; 0 disables.
        max_model_mb: Gate: largest accepted INT8 ONNX model, in MB; 0 disables.

    Returns:
        passed: Whether every gate limit is met (registration runs only then).
        reasons: Why not, one reason per missed limit ("" when passed); also printed to the step's log.
        worst_drop_points: The largest drop of any suite.
    """
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from textclf.robustness import RobustnessConfig, evaluate_robustness, robustness_gate
    from textclf.robustness.robustness import ROBUSTNESS_REPORT_FILE
    from textclf.serving.contract import INT8_ONNX_FILE

    defaults = RobustnessConfig()
    config = RobustnessConfig(suites=suites or defaults.suites, max_rows=int(max_rows),
                              first_words=int(first_words))
    result = evaluate_robustness(model.path, splits.path, config, robustness.path)
    for name, suite in result.suites.items():
        if suite["rows"]:
            metrics.log_metric(f"{name}_accuracy", suite["accuracy_perturbed"])
            metrics.log_metric(f"{name}_drop_points", suite["drop_points"])
    metrics.log_metric("worst_drop_points", result.worst_drop_points)
    metrics.log_metric("accuracy", result.base_accuracy)
    shutil.copyfile(Path(robustness.path) / ROBUSTNESS_REPORT_FILE, report.path)
    decision = robustness_gate(result.base_accuracy, result.worst_drop_points,
                               (Path(onnx_model.path) / INT8_ONNX_FILE).stat().st_size, min_accuracy=min_accuracy,
                               max_robustness_drop=max_robustness_drop, max_model_mb=max_model_mb)
    reasons = "; ".join(decision.reasons)
    print(f"robustness gate: {'passed' if decision.passed else 'NOT passed: ' + reasons}")
    outputs = namedtuple("RobustnessOutputs", ["passed", "reasons", "worst_drop_points"])
    return outputs(decision.passed, reasons, result.worst_drop_points)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def registration_gate_op(
    evaluation: Input[Artifact],
    onnx_model: Input[Model],
    min_accuracy: float = 0.0,
    max_robustness_drop: float = 0.0,
    max_model_mb: float = 0.0,
) -> NamedTuple("RegistrationGateOutputs", passed=bool, reasons=str):
    """Decide whether an evaluated, exported model may be registered; every limit 0 is off.

    Args:
        evaluation: Output of the evaluate component (``metrics.json``: test accuracy on the whole test split;
            ``robustness.json``: the suites' worst drop).
        onnx_model: Output of the export component: its INT8 file's size is what ``max_model_mb`` limits.
        min_accuracy: Lowest accepted test accuracy (0-1).
        max_robustness_drop: Largest accepted drop, in accuracy points, of any robustness suite (the evaluate step
            must have run its suites).
        max_model_mb: Largest accepted INT8 ONNX model, in MB.

    Returns:
        passed: Whether every limit is met.
        reasons: Why not, one reason per missed limit ("" when passed); also printed to the step's log.
    """
    from collections import namedtuple

    from textclf.robustness.robustness import gate_evaluation

    decision = gate_evaluation(evaluation.path, onnx_model.path, min_accuracy=min_accuracy,
                               max_robustness_drop=max_robustness_drop, max_model_mb=max_model_mb)
    reasons = "; ".join(decision.reasons)
    print(f"registration gate: {'passed' if decision.passed else 'NOT passed: ' + reasons}")
    return namedtuple("RegistrationGateOutputs", ["passed", "reasons"])(decision.passed, reasons)
