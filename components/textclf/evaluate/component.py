"""KFP component: evaluate (thin wrapper around :func:`textclf.evaluate.evaluate_model`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate_op(
    model: Input[Model],
    splits: Input[Dataset],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    robustness_suites: str = "",
    robustness_max_rows: int = 1000,
) -> NamedTuple("EvaluateOutputs", accuracy=float, macro_f1=float, overfitting=bool):
    """Score the model on the held-out test set (the only stage that does) and write a report.

    Args:
        model: Output of the train component.
        splits: Output of the validate/split component.
        metrics: Scalar metrics: accuracy, macro-F1, ECE (uncalibrated), per-class F1, train/validation accuracy and
            gap, the calibration ``temperature`` fitted on the validation split and
            ``expected_calibration_error_calibrated`` (the test ECE with that temperature applied).
        confusion_matrix: The test confusion matrix, drawn by the KFP UI.
        report: Self-contained HTML report: the confusion-matrix plot, the error analysis (most confused pairs with
            examples, accuracy by length and by confidence with a reliability diagram, the most confident mistakes)
            and the robustness suites.
        evaluation: Output directory: ``metrics.json`` (with ``calibration``, read by the export component, and
            ``error_analysis``), ``predictions.parquet``, ``parity_texts.parquet`` and ``robustness.json`` (read by
            ``registration_gate_op`` and the model card).
        robustness_suites: Comma-separated robustness suites (``textclf.robustness.RobustnessSuite``) scored on a
            sample of the test rows, plus the contrast set; empty: all; ``none``: no robustness evaluation. Their
            ``<suite>_drop_points``, ``worst_drop_points`` and ``contrast_accuracy`` go to ``metrics``.
        robustness_max_rows: Test rows the suites score (a class-stratified sample); 0: all.

    Returns:
        accuracy: Test accuracy.
        macro_f1: Test macro-F1.
        overfitting: Whether train accuracy exceeds validation accuracy by more than the threshold.
    """
    import shutil
    from collections import namedtuple

    from textclf.config import EvaluateConfig
    from textclf.evaluate import evaluate_model
    from textclf.evaluate.evaluate import REPORT_FILE

    config = EvaluateConfig(robustness_suites=robustness_suites, robustness_max_rows=int(robustness_max_rows))
    result = evaluate_model(model.path, splits.path, config, evaluation.path)
    found = result.metrics
    test = found["test"]
    calibration = found["calibration"]
    scalars = {
        "accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
        "expected_calibration_error": test["expected_calibration_error"],
        "train_accuracy": found["train_accuracy"],
        "validation_accuracy": found["validation_accuracy"],
        "train_validation_gap": found["train_validation_gap"],
        "temperature": calibration["temperature"],
        "expected_calibration_error_calibrated": calibration["test_ece_after"],
    }
    scalars.update({f"f1_{label}": values["f1"] for label, values in test["per_class"].items()})
    robustness = found.get("robustness")
    if robustness:
        scalars.update({f"{suite}_drop_points": drop for suite, drop in robustness["drop_points"].items()})
        scalars["worst_drop_points"] = robustness["worst_drop_points"]
        if robustness.get("contrast_accuracy") is not None:
            scalars["contrast_accuracy"] = robustness["contrast_accuracy"]
    for name, value in scalars.items():
        metrics.log_metric(name, float(value))
    confusion_matrix.log_confusion_matrix(found["labels"], test["confusion_matrix"])
    shutil.copy(result.output_dir / REPORT_FILE, report.path)
    evaluation.metadata.update({"test_set_sha256": found["test_set_sha256"], "overfitting": found["overfitting"]})
    outputs = namedtuple("EvaluateOutputs", ["accuracy", "macro_f1", "overfitting"])
    return outputs(float(test["accuracy"]), float(test["macro_f1"]), bool(found["overfitting"]))


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate_production_op(registry_uri: str, splits: Input[Dataset], evaluation: Output[Artifact]) -> bool:
    """Score the registry's production model on this run's held-out test set, so the promotion gate compares the
    candidate and production row by row on the same texts.

    Args:
        registry_uri: Registry root (path, ``s3://`` or ``gs://``).
        splits: Output of the validate/split component (the same one the candidate was evaluated on).
        evaluation: Output directory in the evaluate component's layout (``metrics.json``,
            ``predictions.parquet``, ...); empty when there is no production model.

    Returns:
        Whether the registry has a production model (False for the first model: the gate then promotes).
        The production model's files are verified against their registered sha256 before it is scored.
    """
    import tempfile
    from pathlib import Path

    from textclf.config import ROBUSTNESS_OFF, EvaluateConfig
    from textclf.evaluate import evaluate_model
    from textclf.registry import ModelRegistry

    registry = ModelRegistry(registry_uri)
    version = registry.production_version()
    if version is None:
        Path(evaluation.path).mkdir(parents=True, exist_ok=True)
        evaluation.metadata["production_version"] = ""
        print(f"registry {registry_uri} has no production model")
        return False
    with tempfile.TemporaryDirectory(prefix="textclf-production-") as scratch:
        fetched = registry.fetch(version, Path(scratch) / version, parts=("model",))
        # Only the gate's paired comparison needs production's predictions: no robustness suites.
        result = evaluate_model(fetched / "model", splits.path, EvaluateConfig(robustness_suites=ROBUSTNESS_OFF),
                                evaluation.path)
    evaluation.metadata.update({"production_version": version, "accuracy": result.metrics["test"]["accuracy"]})
    print(f"production {version}: test accuracy {result.metrics['test']['accuracy']:.4f}")
    return True
