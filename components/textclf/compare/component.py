"""KFP component: compare (thin wrapper around :func:`textclf.compare.compare_models`).

The distillation pipeline's four models are four named inputs (KFP has no typed list of artifacts); the ensemble's
members must be named ``teacher`` and ``classical`` (as the pipeline fits it). Not wired into a pipeline yet.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output
from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def compare_models_op(
    splits: Input[Dataset],
    teacher: Input[Model],
    classical: Input[Model],
    ensemble: Input[Model],
    student: Input[Model],
    comparison: Output[Artifact],
    report: Output[HTML],
    teacher_metrics: Output[Metrics],
    classical_metrics: Output[Metrics],
    vote_metrics: Output[Metrics],
    stack_metrics: Output[Metrics],
    student_metrics: Output[Metrics],
) -> float:
    """Score the teacher, the classical model, the ensemble (vote and stack) and the student on the held-out test
    set, side by side (with the evaluate stage, the only stages that read the test split).

    Every input is checked before anything is scored. Each row's temperature is fitted on the validation split.

    Args:
        splits: Output of the validate/split component.
        teacher: The teacher transformer (train component's layout).
        classical: The classical component's model directory.
        ensemble: The ensemble component's output, fitted on members named ``teacher`` and ``classical``.
        student: The distilled student transformer (train component's layout).
        comparison: Output directory: ``comparison.json`` (every row, ``test_set_sha256``), ``comparison.md`` (one
            Markdown table), ``report.html``.
        report: The self-contained HTML table.
        teacher_metrics: The teacher's row: accuracy, macro_f1, expected_calibration_error,
            expected_calibration_error_calibrated, temperature.
        classical_metrics: The classical model's row (same metrics).
        vote_metrics: The ensemble's soft-voting row (same metrics).
        stack_metrics: The ensemble's stacking row (same metrics).
        student_metrics: The student's row (same metrics).

    Returns:
        The student's test accuracy.
    """
    import shutil

    from textclf.compare import REPORT_FILE, ModelKind, ModelToScore, compare_models
    from textclf.config import EvaluateConfig

    models = [
        ModelToScore("teacher", ModelKind.TRANSFORMER, teacher.path),
        ModelToScore("classical", ModelKind.CLASSICAL, classical.path),
        ModelToScore("ensemble", ModelKind.ENSEMBLE, ensemble.path),
        ModelToScore("student", ModelKind.TRANSFORMER, student.path),
    ]
    result = compare_models(splits.path, models, EvaluateConfig(), comparison.path)
    outputs = {"teacher": teacher_metrics, "classical": classical_metrics, "ensemble_vote": vote_metrics,
               "ensemble_stack": stack_metrics, "student": student_metrics}
    for name, metrics in outputs.items():
        row = result.row(name)
        for key in ("accuracy", "macro_f1", "expected_calibration_error", "expected_calibration_error_calibrated",
                    "temperature"):
            metrics.log_metric(key, float(getattr(row, key)))
    shutil.copy(result.output_dir / REPORT_FILE, report.path)
    comparison.metadata.update({"test_set_sha256": result.test_set_sha256})
    comparison.metadata.update({f"accuracy_{row.name}": float(row.accuracy) for row in result.rows})
    return float(result.row("student").accuracy)
