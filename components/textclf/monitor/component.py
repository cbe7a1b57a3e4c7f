"""KFP components: drift check (thin wrapper around :func:`textclf.monitor.service.run_drift_check`) and drift
reference (around :func:`textclf.monitor.reference.reference_from_splits`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def drift_check_op(
    request_log: Input[Artifact],
    reference: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    result: Output[Artifact],
    rows: int = 0,
    min_window_size: int = 0,
    alpha: float = 0.0,
) -> NamedTuple("DriftCheckOutputs", drift_detected=bool, drift_score=float, window_rows=int):
    """Check the most recent requests of the serving request log for drift against the production model's
    reference (one check; no cooldown - the long-running ``textclf monitor`` applies that).

    Args:
        request_log: The request log: a JSON-lines file written by the model server (its rotated copies
            ``<file>.1``, ``<file>.2``, ... beside it are read too) or a directory of ``*.jsonl`` logs.
        reference: Output of ``drift_reference_op`` (``reference.parquet`` and ``reference.json``).
        metrics: Scalar metrics: drift_detected (0/1), drift_score, drifted_share, window_rows, check_seconds,
            malformed_lines and one ``p_value_<signal>`` per signal.
        report: Self-contained HTML report: the decision with its rule, then Evidently's data-drift report.
        result: Output directory with ``drift_result.json`` (every signal's test, p-value, threshold and summary).
        rows: Check the last ``rows`` requests; 0 uses ``DriftConfig.window_size``.
        min_window_size: Fewest rows checked; 0 uses ``DriftConfig.min_window_size``.
        alpha: Family-wise false-alarm rate (split over the signals); 0 uses ``DriftConfig.alpha``.

    Returns:
        drift_detected: Whether any signal's p-value fell below its threshold.
        drift_score: max over signals of log(p) / log(threshold), clipped to [0, 10] (>= 1 means drift).
        window_rows: Rows checked. The component fails if the log is missing or has fewer valid rows than
            ``min_window_size``, or if the reference is missing or empty.
    """
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from textclf.monitor.config import DriftConfig
    from textclf.monitor.service import RESULT_STEM, run_drift_check

    defaults = DriftConfig()
    config = defaults.replace(
        min_window_size=min_window_size or defaults.min_window_size,
        window_size=max(rows or defaults.window_size, min_window_size or defaults.min_window_size),
        alpha=alpha or defaults.alpha,
    )
    found = run_drift_check(request_log.path, reference.path, result.path, config, rows=rows)
    shutil.copy(Path(result.path) / f"{RESULT_STEM}.html", report.path)
    scalars = {
        "drift_detected": float(found.drift_detected),
        "drift_score": found.drift_score,
        "drifted_share": found.drifted_share,
        "window_rows": float(found.window_rows),
        "check_seconds": found.seconds,
        "malformed_lines": float(found.malformed_lines or 0),
    }
    scalars.update({f"p_value_{signal.name}": signal.p_value for signal in found.signals})
    for name, value in scalars.items():
        metrics.log_metric(name, float(value))
    result.metadata.update({"drift_detected": found.drift_detected, "drifted_signals": found.drifted_signals,
                            "reference_model_version": found.reference_model_version})
    outputs = namedtuple("DriftCheckOutputs", ["drift_detected", "drift_score", "window_rows"])
    return outputs(bool(found.drift_detected), float(found.drift_score), int(found.window_rows))


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def drift_reference_op(
    splits: Input[Dataset],
    onnx_model: Input[Model],
    evaluation: Input[Artifact],
    reference: Output[Dataset],
    sample_size: int = 0,
    seed: int = -1,
    publish_uri: str = "",
) -> int:
    """Build the drift reference of a model: a sample of its training data with the model's own predictions, and
    its test accuracy (the monitor's accuracy baseline once ground truth is fed back).

    Args:
        splits: Output of the validate/split component the model was trained on (validation rows are taken
            first, then train rows).
        onnx_model: Output of the export component (the INT8 model the server runs makes the predictions).
        evaluation: Output of the evaluate component for this model (``metrics.json``: its test accuracy is
            recorded as ``test_accuracy``).
        reference: Output directory: ``reference.parquet`` (text, label, confidence) and ``reference.json``
            (model version, labels, test accuracy, fingerprints of the sample and of the training data).
        sample_size: Reference rows; 0 uses ``DriftConfig.reference_size``.
        seed: Sampling seed; -1 uses ``DriftConfig.seed``.
        publish_uri: Also put the reference here (a path, ``s3://`` or ``gs://``: the running monitor's
            ``--reference``, which it re-reads and follows when the fingerprint changes); empty: only the output.

    Returns:
        The number of reference rows.
    """
    from textclf.monitor.config import DriftConfig
    from textclf.monitor.reference import publish_reference, reference_from_splits, save_reference, test_accuracy_of

    defaults = DriftConfig()
    built = reference_from_splits(splits.path, onnx_model.path, sample_size or defaults.reference_size,
                                  defaults.seed if seed < 0 else seed)
    built.meta["test_accuracy"] = test_accuracy_of(evaluation.path)
    save_reference(built, reference.path)
    if publish_uri:
        publish_reference(built, publish_uri)
    reference.metadata.update({"model_version": built.model_version, "rows": built.rows,
                               "fingerprint": built.fingerprint, "test_accuracy": built.meta["test_accuracy"],
                               "published_to": publish_uri})
    return built.rows
