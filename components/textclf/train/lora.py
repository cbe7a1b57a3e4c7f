"""Which modules LoRA adapts, for any architecture: the attention projections, found from the model's
``config.model_type`` or given by name.

Declared once as data (:data:`LORA_TARGETS`): our table for the encoder families this product fine-tunes (query, key
and value projections), then PEFT's own table (``peft.utils.constants``) for every other architecture it knows.
A name given explicitly must match at least one ``torch.nn.Linear`` of the model (PEFT's own matching: the module
name equals it or ends with ``.<name>``); otherwise the error lists the Linear names the model has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textclf.errors import ConfigError

#: ``config.model_type`` -> the attention projections LoRA adapts (query, key, value), per family.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "key", "value"),
    "roberta": ("query", "key", "value"),
    "xlm-roberta": ("query", "key", "value"),
    "electra": ("query", "key", "value"),
    "distilbert": ("q_lin", "k_lin", "v_lin"),
    "deberta-v2": ("query_proj", "key_proj", "value_proj"),
    "mpnet": ("q", "k", "v"),
    "llama": ("q_proj", "k_proj", "v_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj"),
}


def known_targets(model_type: str) -> tuple[str, ...] | None:
    """The attention projections of ``model_type`` (ours, else PEFT's table); None when neither knows it."""
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    found = PEFT_TARGETS.get(model_type)
    return tuple(found) if found else None


def linear_module_names(model: Any) -> list[str]:
    """The last name part of every ``torch.nn.Linear`` in ``model`` (what a target name is matched against),
    sorted, the classification head included."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear)})


def lora_target_modules(model: Any, given: Sequence[str] = ()) -> list[str]:
    """The module names LoRA adapts in ``model``: ``given`` if any, else the known projections of its
    ``config.model_type``.

    Raises:
        ConfigError: A given name matches no Linear module of the model, or the architecture has no known targets
            and none were given (both name the Linear modules the model has).
    """
    import torch

    linear = linear_module_names(model)
    full_names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    model_type = str(getattr(getattr(model, "config", None), "model_type", "") or "")
    if given:
        missing = [key for key in given if not any(name == key or name.endswith(f".{key}") for name in full_names)]
        if missing:
            raise ConfigError(f"lora_target_modules {missing} match no Linear module of this {model_type or 'model'} "
                              f"model; its Linear modules are named {linear}")
        return list(given)
    targets = known_targets(model_type)
    if targets is None:
        raise ConfigError(f"no known LoRA target modules for model_type {model_type!r}: pass lora_target_modules "
                          f"(comma-separated), e.g. its attention projections among the Linear modules {linear}")
    missing = [name for name in targets if name not in linear]
    if missing:  # a table entry that does not fit this model (a renamed module in another release)
        raise ConfigError(f"the known LoRA targets {list(targets)} of model_type {model_type!r} are not all in "
                          f"this model (missing {missing}); pass lora_target_modules from its Linear modules {linear}")
    return list(targets)
