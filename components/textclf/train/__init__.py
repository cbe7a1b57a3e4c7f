"""Train stage: fine-tune a transformer classifier (full, LoRA, QLoRA) with resumable checkpoints."""

from textclf.train.train import TrainResult, check_hardware, train_model

__all__ = ["TrainResult", "check_hardware", "train_model"]
