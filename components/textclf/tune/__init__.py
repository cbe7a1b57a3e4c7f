"""Tune stage: an Optuna search over TrainConfig fields (local), and the same search as a Katib ``Experiment`` or a
Kubeflow Trainer ``OptimizationJob`` (cluster)."""

from textclf.tune.space import DEFAULT_SEARCH_SPACE, ParamRange, SearchSpace, apply_overrides
from textclf.tune.tune import (
    BEST_PARAMS_FILE,
    TuneConfig,
    TuneResult,
    apply_best_params,
    load_best_params,
    pruning_callback,
    run_search,
)

__all__ = [
    "BEST_PARAMS_FILE", "DEFAULT_SEARCH_SPACE", "ParamRange", "SearchSpace", "TuneConfig", "TuneResult",
    "apply_best_params", "apply_overrides", "load_best_params", "pruning_callback", "run_search",
]
