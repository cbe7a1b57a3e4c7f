"""KFP component: promotion gate (thin wrapper around :func:`textclf.gate.decide_from_evaluations`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def gate_op(
    candidate_evaluation: Input[Artifact],
    production_evaluation: Input[Artifact],
    decision: Output[Artifact],
    metrics: Output[Metrics],
    has_production: bool = True,
    alpha: float = 0.05,
    min_improvement: float = 0.005,
    registration_passed: bool = True,
    registration_reasons: str = "",
) -> str:
    """Decide whether the retrained candidate replaces the production model.

    Both evaluations must come from the evaluate component run on the same held-out test set (same
    ``test_set_sha256``, same row ids, same true labels). Promote only if the candidate is better on the paired
    test rows (``b > c``), McNemar's test gives ``p < alpha``, and the accuracy gain is at least
    ``min_improvement``; with no production model the candidate is promoted.

    Args:
        candidate_evaluation: Evaluate-component output directory for the candidate (``predictions.parquet``,
            ``metrics.json``).
        production_evaluation: The same for the production model. KFP inputs cannot be optional: when
            ``has_production`` is false this input is ignored, so pass any artifact (an empty directory, or the
            candidate evaluation itself).
        decision: Output directory with ``decision.json``: ``decision`` ("promote"/"archive"), ``reason``,
            both accuracies, ``improvement``, ``p_value``, ``n``, ``b``, ``c``, ``test``, thresholds and the test-set
            fingerprints. The artifact metadata repeats ``decision``, ``reason`` and ``p_value``.
        metrics: Scalars: ``candidate_accuracy``, ``production_accuracy``, ``improvement``, ``p_value``, ``b``,
            ``c``, ``n``, ``promote`` (1.0/0.0); the production-side ones only when there is a production model.
        has_production: Whether a production model exists (false for the first model).
        alpha: McNemar significance level (default 0.05).
        min_improvement: Minimum accuracy gain as a fraction: 0.005 = +0.5 points (default); 0.02 = the
            original design's "+2%" rule.
        registration_passed: The registration gate's verdict (``registration_gate_op``: accuracy, robustness and
            size limits); false archives the candidate whatever McNemar's test says, with ``registration_reasons``
            as the reason.
        registration_reasons: Why the registration gate did not pass.

    Returns:
        ``"promote"`` or ``"archive"``, for ``dsl.If(gate_task.outputs["Output"] == "promote")`` (``.output``
        does not work: the task also has the ``decision`` and ``metrics`` outputs). The component fails (rather
        than promoting) when the two evaluations are not on the same test set or a file is missing.
    """
    from pathlib import Path

    from textclf.gate import GateConfig, decide_from_evaluations
    from textclf.gate.mcnemar import vetoed
    from textclf.gate.mcnemar import DECISION_FILE
    from textclf.provenance import write_json

    config = GateConfig(alpha=float(alpha), min_improvement=float(min_improvement))
    production_dir = production_evaluation.path if has_production else None
    result, context = decide_from_evaluations(candidate_evaluation.path, production_dir, config)
    if not registration_passed:
        result = vetoed(result, f"registration gate: {registration_reasons or 'not passed'}")
    payload = {**result.to_dict(), **context, "has_production": bool(has_production)}
    write_json(Path(decision.path) / DECISION_FILE, payload)
    decision.metadata.update({"decision": result.verdict, "reason": result.reason, "p_value": result.p_value})
    scalars = {
        "candidate_accuracy": result.candidate_accuracy, "production_accuracy": result.production_accuracy,
        "improvement": result.improvement, "p_value": result.p_value, "b": result.b, "c": result.c, "n": result.n,
        "promote": 1.0 if result.promote else 0.0,
    }
    for name, value in scalars.items():
        if value is not None and (has_production or name in ("candidate_accuracy", "n", "promote")):
            metrics.log_metric(name, float(value))
    print(f"gate: {result.verdict}: {result.reason}")
    return result.verdict
