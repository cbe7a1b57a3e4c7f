"""The train settings as a KFP train step receives them (one scalar per setting, plus a tune stage's result), turned
into a :class:`~textclf.config.TrainConfig` once, for ``train_op`` in its pod and as a TrainJob alike."""

from __future__ import annotations

import json

from textclf.config import TrainConfig
from textclf.errors import ConfigError


def train_config_from_arguments(
    base_model: str, method: str, epochs: float, batch_size: int, learning_rate: float, max_length: int,
    checkpoint_steps: int, early_stopping_patience: int, seed: int, hyperparameters: str = "",
    lora_r: int = TrainConfig.lora_r, lora_alpha: int = TrainConfig.lora_alpha,
    lora_dropout: float = TrainConfig.lora_dropout, lora_target_modules: str = "", **strategy: object,
) -> TrainConfig:
    """The step's :class:`TrainConfig`: empty ``base_model`` is the packaged default, and ``hyperparameters`` (a tune
    stage's result: ``tune_op``'s JSON ``{field: value}`` or a ``best_params.json`` path; empty for none) is applied
    over the other settings; ``lora_target_modules`` is comma-separated (empty: detected from the architecture);
    ``strategy`` holds the :attr:`TrainConfig.STRATEGY_FIELDS` the step was given.

    Raises:
        ConfigError: A setting ``TrainConfig`` refuses, an unknown strategy field, or unusable hyper-parameters.
    """
    unknown = sorted(set(strategy) - set(TrainConfig.STRATEGY_FIELDS))
    if unknown:
        raise ConfigError(f"unknown training strategy settings {unknown}; known: {list(TrainConfig.STRATEGY_FIELDS)}")
    from textclf.tune.tune import apply_best_params

    overrides = {"base_model": base_model} if base_model else {}
    config = TrainConfig(
        method=method, epochs=float(epochs), batch_size=int(batch_size), learning_rate=float(learning_rate),
        max_length=int(max_length), checkpoint_steps=int(checkpoint_steps),
        early_stopping_patience=int(early_stopping_patience), seed=int(seed), lora_r=int(lora_r),
        lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout), lora_target_modules=lora_target_modules,
        **strategy, **overrides,
    )
    tuned = hyperparameters.strip()
    if tuned:
        config = apply_best_params(config, json.loads(tuned) if tuned.startswith("{") else tuned)
    return config
