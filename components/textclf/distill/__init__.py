"""Distill stage building blocks: Hinton distillation loss, k-layer student by encoder truncation, Trainer."""

from typing import Any

from textclf.distill.distill import (
    TEACHER_LOGITS,
    DistillationCollator,
    build_student,
    check_loss_parameters,
    distillation_loss,
    evenly_spaced_layers,
    truncate_encoder,
)

__all__ = [
    "TEACHER_LOGITS",
    "DistillationCollator",
    "DistillationTrainer",
    "build_student",
    "check_loss_parameters",
    "distillation_loss",
    "evenly_spaced_layers",
    "truncate_encoder",
]


def __getattr__(name: str) -> Any:
    """``DistillationTrainer`` imports transformers, so it is resolved on first use, not at package import."""
    if name == "DistillationTrainer":
        from textclf.distill import distill

        return distill.DistillationTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
