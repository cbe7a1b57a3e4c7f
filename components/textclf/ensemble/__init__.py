"""Ensemble stage: soft voting and stacking over members' logits, fitted on validation only, saved as JSON."""

from textclf.ensemble.ensemble import (
    FittedEnsemble,
    MemberLogits,
    align_members,
    apply_ensemble,
    fit_ensemble,
    fit_ensemble_dirs,
    load_ensemble,
    read_member_logits,
    save_ensemble,
)

__all__ = [
    "FittedEnsemble",
    "MemberLogits",
    "align_members",
    "apply_ensemble",
    "fit_ensemble",
    "fit_ensemble_dirs",
    "load_ensemble",
    "read_member_logits",
    "save_ensemble",
]
