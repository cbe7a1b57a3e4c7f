"""Classical stage: a TF-IDF + linear-model ensemble member, saved with skops (no pickle), with its logits."""

from textclf.classical.classical import (
    ClassicalResult,
    classical_logits,
    load_classical_model,
    split_logits,
    train_classical,
)

__all__ = ["ClassicalResult", "classical_logits", "load_classical_model", "split_logits", "train_classical"]
