"""The hyper-parameter search space: which :class:`~textclf.config.TrainConfig` fields a search varies, over what
ranges. One definition feeds the local Optuna search (:mod:`textclf.tune.tune`) and the cluster's Katib
``Experiment`` / Trainer ``OptimizationJob`` (:mod:`textclf.tune.katib`), so both search the same space.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from textclf.config import TrainConfig
from textclf.errors import ConfigError


class ParamKind(str, enum.Enum):
    """How a parameter is sampled."""

    FLOAT = "float"  # uniform (or log-uniform) in [low, high]
    INT = "int"  # an integer in [low, high] (log-uniform if ``log``)
    CATEGORICAL = "categorical"  # one of ``choices``


#: TrainConfig fields a search may vary, with the kind of value each takes (others, e.g. ``base_model``, ``method``
#: or ``checkpoint_steps``, are fixed for a whole search).
TUNABLE_FIELDS: dict[str, ParamKind] = {
    "learning_rate": ParamKind.FLOAT,
    "epochs": ParamKind.FLOAT,
    "warmup_ratio": ParamKind.FLOAT,
    "weight_decay": ParamKind.FLOAT,
    "label_smoothing": ParamKind.FLOAT,
    "batch_size": ParamKind.INT,
    "lora_r": ParamKind.INT,
    "lora_alpha": ParamKind.INT,
    "lora_dropout": ParamKind.FLOAT,
    "max_length": ParamKind.INT,
}


@dataclass(frozen=True)
class ParamRange:
    """One searched parameter.

    Attributes:
        name: A :data:`TUNABLE_FIELDS` name (a TrainConfig field).
        kind: ``float``, ``int`` or ``categorical``; ``int`` and ``float`` must match the field's type (a
            categorical parameter may list either).
        low, high: The closed range of ``float`` and ``int`` parameters; ``low < high``.
        log: Sample on a log scale (``low > 0``).
        choices: The values of a ``categorical`` parameter (at least two, distinct).
    """

    name: str
    kind: str = ParamKind.FLOAT.value
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        where = f"search space parameter {self.name!r}"
        if self.name not in TUNABLE_FIELDS:
            raise ConfigError(f"unknown {where}: the tunable TrainConfig fields are {', '.join(TUNABLE_FIELDS)}")
        try:
            kind = ParamKind(self.kind)
        except ValueError:
            raise ConfigError(f"{where}: kind must be one of {', '.join(k.value for k in ParamKind)}, "
                              f"got {self.kind!r}") from None
        if kind is ParamKind.CATEGORICAL:
            if len(self.choices) < 2 or len(set(self.choices)) != len(self.choices):
                raise ConfigError(f"{where}: empty range: a categorical parameter needs at least two distinct "
                                  f"choices, got {list(self.choices)!r}")
            values = self.choices
        else:
            if kind is not TUNABLE_FIELDS[self.name] and TUNABLE_FIELDS[self.name] is ParamKind.INT:
                raise ConfigError(f"{where}: {self.name} is an integer field; use kind 'int' or 'categorical'")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       for v in (self.low, self.high)):
                raise ConfigError(f"{where}: low and high must be finite numbers, got {self.low!r}, {self.high!r}")
            if not self.low < self.high:
                raise ConfigError(f"{where}: empty range: low ({self.low}) must be below high ({self.high})")
            if kind is ParamKind.INT and (int(self.low) != self.low or int(self.high) != self.high):
                raise ConfigError(f"{where}: an int range needs integer bounds, got {self.low}, {self.high}")
            if self.log and self.low <= 0:
                raise ConfigError(f"{where}: a log-scale range needs low > 0, got {self.low}")
            values = (self.low, self.high)
        for value in values:  # every end of the range must make a valid TrainConfig
            try:
                TrainConfig(base_model="(search space check)", **{self.name: value})
            except (ConfigError, TypeError) as exc:
                raise ConfigError(f"{where}: value {value!r} is not a valid TrainConfig.{self.name}: {exc}") from None

    @property
    def param_kind(self) -> ParamKind:
        return ParamKind(self.kind)

    def to_dict(self) -> dict[str, Any]:
        if self.param_kind is ParamKind.CATEGORICAL:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.param_kind is ParamKind.INT:
            out["type"] = "int"
        if self.log:
            out["log"] = True
        return out

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> ParamRange:
        """From the JSON form: ``{"low": 1e-5, "high": 3e-4, "log": true}``, ``{"low": 1, "high": 4, "type":
        "int"}`` or ``{"choices": [16, 32]}``."""
        if not isinstance(spec, Mapping):
            raise ConfigError(f"search space parameter {name!r}: expected an object, got {spec!r}")
        known = {"low", "high", "log", "choices", "type"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"search space parameter {name!r}: unknown keys {unknown} (known: {sorted(known)})")
        if "choices" in spec:
            if not isinstance(spec["choices"], (list, tuple)):
                raise ConfigError(f"search space parameter {name!r}: choices must be a list, got {spec['choices']!r}")
            return cls(name, ParamKind.CATEGORICAL.value, choices=tuple(spec["choices"]))
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"search space parameter {name!r}: give low and high, or choices")
        kind = spec.get("type") or TUNABLE_FIELDS.get(name, ParamKind.FLOAT).value
        return cls(name, str(kind), low=spec["low"], high=spec["high"], log=bool(spec.get("log", False)))


@dataclass(frozen=True)
class SearchSpace:
    """The searched parameters; every other TrainConfig field keeps the search's base configuration.

    Attributes:
        params: One :class:`ParamRange` per searched field, names unique, at least one.
    """

    params: tuple[ParamRange, ...]

    def __post_init__(self) -> None:
        if not self.params:
            raise ConfigError("the search space is empty: give at least one parameter")
        names = [p.name for p in self.params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"search space lists {duplicates} more than once")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.to_dict() for p in self.params}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SearchSpace:
        """From the JSON form ``{name: range, ...}`` (see :meth:`ParamRange.from_dict`).

        Raises:
            ConfigError: Not an object, an unknown parameter, an empty range, or an end of a range that is no valid
                TrainConfig value.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a search space is a JSON object {{name: range}}, got {type(spec).__name__}")
        return cls(tuple(ParamRange.from_dict(str(name), value) for name, value in spec.items()))

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The TrainConfig overrides an Optuna ``trial`` draws from this space."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.param_kind is ParamKind.CATEGORICAL:
                out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
            elif p.param_kind is ParamKind.INT:
                out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                out[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
        return out


#: The default search (issue 15): learning rate, epochs, warm-up, weight decay, label smoothing and batch size, the
#: ranges around the full fine-tune's defaults (TrainConfig: lr 1e-4, 1 epoch, warm-up 0.06, decay 0.01, no
#: smoothing, batch 32).
DEFAULT_SEARCH_SPACE = SearchSpace((
    ParamRange("learning_rate", "float", 1e-5, 3e-4, log=True),
    ParamRange("epochs", "float", 1.0, 3.0),
    ParamRange("warmup_ratio", "float", 0.0, 0.2),
    ParamRange("weight_decay", "float", 0.0, 0.1),
    ParamRange("label_smoothing", "float", 0.0, 0.2),
    ParamRange("batch_size", "categorical", choices=(16, 32, 64)),
))


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """``config`` with ``overrides`` (TrainConfig field -> value, e.g. a trial's parameters) applied.

    Raises:
        ConfigError: An override names no tunable field, or gives a value TrainConfig refuses.
    """
    unknown = sorted(set(overrides) - set(TUNABLE_FIELDS))
    if unknown:
        raise ConfigError(f"unknown hyper-parameters {unknown}: the tunable TrainConfig fields are "
                          f"{', '.join(TUNABLE_FIELDS)}")
    typed = {name: int(value) if TUNABLE_FIELDS[name] is ParamKind.INT else float(value)
             for name, value in overrides.items()}
    try:
        return dataclasses.replace(config, **typed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hyper-parameters {dict(overrides)} do not make a valid TrainConfig: {exc}") from exc


def check_space(space: SearchSpace, base_config: TrainConfig) -> None:
    """Fail unless every end of every range of ``space`` makes a valid TrainConfig with ``base_config``'s other
    settings (called before any training).

    Raises:
        ConfigError: The first value refused.
    """
    for p in space.params:
        for value in p.choices or (p.low, p.high):
            apply_overrides(base_config, {p.name: value})
