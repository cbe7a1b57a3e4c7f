"""KFP component: the ensemble (thin wrapper around :func:`textclf.ensemble.fit_ensemble_dirs`).

Members are two required and one optional named input (KFP has no typed list of artifacts), each a member's logits
directory as the classical and train components write it (``validation_logits.parquet``: ``row``, ``label``,
``logit_<label>``, ``p_<label>``). Each input's name is its member's name in the saved ensemble (``member_a``,
``member_b``, ``member_c``) unless the matching ``*_name`` parameter is set. Not wired into a pipeline yet.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output
from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ensemble_op(
    member_a: Input[Dataset],
    member_b: Input[Dataset],
    method: str,
    stack_c: float,
    stack_max_iter: int,
    cv_folds: int,
    seed: int,
    ensemble: Output[Model],
    teacher_logits: Output[Dataset],
    member_c: Input[Dataset] | None = None,
    member_a_name: str = "",
    member_b_name: str = "",
    member_c_name: str = "",
) -> float:
    """Fit soft-voting weights and a stacking meta-learner on the members' VALIDATION logits; save them as JSON.

    The defaults of ``method``, ``stack_c``, ``stack_max_iter``, ``cv_folds`` and ``seed`` are
    :class:`textclf.config.EnsembleConfig`'s. The test split is not read: the evaluate stage applies the saved
    ensemble to the members' test logits (``textclf.ensemble.apply_ensemble``).

    Args:
        member_a: First member's logits directory (also the first block of stacking features).
        member_b: Second member's logits directory.
        method: ``vote`` or ``stack``: the method the saved ensemble applies by default (both are fitted).
        stack_c: Inverse L2 regularisation strength of the stacking meta-learner.
        stack_max_iter: Most iterations of the meta-learner.
        cv_folds: Stratified folds of the meta-learner's out-of-fold validation accuracy.
        seed: Seed of the folds.
        ensemble: Output directory: ``ensemble.json`` (weights, meta-learner coefficients, summary; no pickle).
        teacher_logits: Output directory: the ensemble's (``method``) logits, the log of its probabilities, on the
            members' train and validation rows (``train_logits.parquet``, ``validation_logits.parquet``): what the
            distill component trains a student on. Computed once here, so a resumed student run does not need the
            members again.
        member_c: Optional third member's logits directory.
        member_a_name: Name of ``member_a`` in the ensemble; empty: ``member_a``.
        member_b_name: Name of ``member_b``; empty: ``member_b``.
        member_c_name: Name of ``member_c``; empty: ``member_c``.

    Returns:
        The validation accuracy of ``method`` (out-of-fold for ``stack``).
    """
    from textclf.config import EnsembleConfig
    from textclf.ensemble import fit_ensemble_dirs
    from textclf.ensemble.members import write_ensemble_logits

    config = EnsembleConfig(method=method, stack_c=float(stack_c), stack_max_iter=int(stack_max_iter),
                            cv_folds=int(cv_folds), seed=int(seed))
    members = {member_a_name or "member_a": member_a.path, member_b_name or "member_b": member_b.path}
    if member_c is not None:
        members[member_c_name or "member_c"] = member_c.path
    fitted = fit_ensemble_dirs(members, config, ensemble.path)
    write_ensemble_logits(ensemble.path, members, teacher_logits.path, method=config.method)
    score_key = "vote" if config.method == "vote" else "stack_out_of_fold"
    accuracy = float(fitted.summary[score_key]["accuracy"])
    ensemble.metadata.update({"method": config.method, "members": ",".join(fitted.members),
                              "validation_accuracy": accuracy, "framework": "scikit-learn"})
    ensemble.metadata.update({f"weight_{name}": float(w) for name, w in zip(fitted.members, fitted.weights)})
    return accuracy


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def transformer_logits_op(model: Input[Model], splits: Input[Dataset], batch_size: int,
                          member_logits: Output[Dataset]) -> int:
    """A fine-tuned transformer's logits on the train and validation splits, as an ensemble member's logits directory.

    Args:
        model: Output of the train component.
        splits: Output of the validate/split component (the test split is not read).
        batch_size: Texts per forward pass.
        member_logits: Output directory: ``train_logits.parquet`` and ``validation_logits.parquet``, columns ``row``,
            ``label``, ``logit_<label>``, ``p_<label>``.

    Returns:
        The number of rows scored (train + validation).
    """
    from textclf.ensemble.members import write_transformer_logits

    rows = write_transformer_logits(model.path, splits.path, member_logits.path, batch_size=int(batch_size))
    member_logits.metadata.update({f"{split}_rows": count for split, count in rows.items()})
    return sum(rows.values())
