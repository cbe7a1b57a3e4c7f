"""KFP component: cascade (thin wrapper around :func:`textclf.cascade.build_cascade`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def cascade_op(
    stage1: Input[Model],
    stage2: Input[Model],
    splits: Input[Dataset],
    accuracy_tolerance: float,
    confidence: float,
    stage2_returns: str,
    threshold: float,
    precision: str,
    cascade: Output[Model],
    metrics: Output[Metrics],
) -> float:
    """Build a confidence-cascade bundle from two served models; its threshold is chosen on the validation split.

    The defaults of ``accuracy_tolerance``, ``confidence``, ``stage2_returns`` and ``threshold`` are
    :class:`textclf.config.CascadeConfig`'s. The test split is not read.

    Args:
        stage1: The cheap stage: the classical component's model, or a small transformer's export bundle.
        stage2: The transformer's export bundle (export component's ``onnx_model``).
        splits: Output of the validate/split component.
        accuracy_tolerance: The threshold is the lowest stage-2 share whose validation accuracy is at most this far
            below stage 2's alone (0.002 = 0.2 points), with ``confidence``.
        confidence: One-sided confidence of the upper bound on that loss, in [0.5, 1) (0.5: point estimates).
        stage2_returns: ``stage2`` (its own probabilities) or ``average`` (the mean with stage 1's).
        threshold: 0 chooses it as above; a number in (0, 1) fixes it.
        precision: ONNX precision the server runs (``int8`` or ``fp32``): the validation numbers are measured with
            it.
        cascade: Output directory: ``cascade.json`` and the two stage bundles (``stage1/``, ``stage2/``); serve it
            with ``python -m textclf.serving --model-dir`` like any bundle.
        metrics: The chosen threshold, the stage-2 share, the cascade's and each stage's validation accuracy.

    Returns:
        The threshold.
    """
    from textclf.cascade import build_cascade
    from textclf.config import CascadeConfig
    from textclf.serving.config import Precision

    config = CascadeConfig(accuracy_tolerance=float(accuracy_tolerance), confidence=float(confidence),
                           stage2_returns=stage2_returns, threshold=float(threshold))
    result = build_cascade(stage1.path, stage2.path, splits.path, config, cascade.path, Precision(precision))
    selection = result.spec.selection
    chosen = selection["chosen"]
    values = {
        "threshold": result.spec.threshold,
        "validation_stage2_share": chosen["stage2_share"],
        "validation_accuracy": chosen["accuracy"],
        "validation_stage1_accuracy": selection["stage1_accuracy"],
        "validation_stage2_accuracy": selection["stage2_accuracy"],
    }
    for key, value in values.items():
        metrics.log_metric(key, float(value))
    cascade.metadata.update({**values, "stage2_returns": stage2_returns, "framework": "textclf-cascade"})
    return float(result.spec.threshold)
