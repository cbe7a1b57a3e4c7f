"""Tune: an Optuna search (TPE sampler, median pruner) over :class:`~textclf.config.TrainConfig` fields.

Each trial fine-tunes with :func:`textclf.train.train_model` on the validate stage's splits; the validation split
is evaluated every ``checkpoint_steps`` and each evaluation is reported to the trial (at the training rows seen),
so the median pruner stops trials that trail the earlier ones after as many rows. The study lives in an RDB
storage (``sqlite:///study.db`` locally), so a killed search resumes where it stopped: finished trials are kept,
the trial that was running is retried with the same parameters.

The objective is the validation accuracy of the trial's saved (best) checkpoint, maximised; its validation loss is
recorded beside it. Accuracy rather than the loss because the loss the Trainer reports includes label smoothing,
one of the searched parameters: a trial with more smoothing has a higher loss at equal predictions, so losses of
different trials are not comparable.

Output (``best_params.json``, :data:`BEST_PARAMS_FILE`): the best trial's TrainConfig overrides (``params``), its
validation accuracy and loss, the study's name and storage, the trial counts and the search space; the training
side applies it with :func:`load_best_params` / :func:`apply_best_params`.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textclf.config import TrainConfig
from textclf.errors import ConfigError
from textclf.provenance import read_json, write_json
from textclf.tune.space import DEFAULT_SEARCH_SPACE, SearchSpace, apply_overrides, check_space

if TYPE_CHECKING:
    from textclf.train.tracking import TrackingConfig

log = logging.getLogger(__name__)

#: The best trial's parameters and scores (the stage's output artifact).
BEST_PARAMS_FILE = "best_params.json"
#: Every trial's parameters, state and scores.
TRIALS_FILE = "trials.json"
#: The objective's name, as the trials print it (``textclf train-trial``) and Katib collects it.
OBJECTIVE_METRIC = "validation_accuracy"
#: Recorded beside the objective.
ADDITIONAL_METRICS = ("validation_loss",)
#: What the objective metric's value is for (the study's direction).
OBJECTIVE_DIRECTION = "maximize"
#: The intermediate value the median pruner compares (reported at every validation evaluation).
INTERMEDIATE_METRIC = "eval_accuracy"


@dataclass(frozen=True)
class TuneConfig:
    """A hyper-parameter search.

    Attributes:
        n_trials: Trials the study holds when the search ends (a resumed search runs only the missing ones).
        study_name: The study's name in the storage; the same name in the same storage resumes it.
        storage: An Optuna RDB URL (``sqlite:///path/study.db``, ``postgresql://...``); empty: ``study.db`` in the
            output directory.
        seed: Seed of the TPE sampler (trials' training keeps the base TrainConfig's seed).
        startup_trials: Trials TPE samples at random before it models the space, and the median pruner's
            ``n_startup_trials`` (no pruning before that many trials have finished).
        pruner_warmup_evaluations: Validation evaluations of a trial before it can be pruned.
        enqueue_defaults: Make the first trial the base configuration's own values of the searched parameters, so
            the study measures the defaults the search must beat.
        timeout_seconds: Stop starting new trials after this long (0: no limit).
    """

    n_trials: int = 12
    study_name: str = "textclf-tune"
    storage: str = ""
    seed: int = 42
    startup_trials: int = 4
    pruner_warmup_evaluations: int = 1
    enqueue_defaults: bool = True
    timeout_seconds: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "n_trials": (isinstance(self.n_trials, int) and self.n_trials >= 1, "an integer >= 1"),
            "study_name": (bool(str(self.study_name).strip()), "a non-empty name"),
            "startup_trials": (self.startup_trials >= 0, "an integer >= 0"),
            "pruner_warmup_evaluations": (self.pruner_warmup_evaluations >= 0, "an integer >= 0"),
            "timeout_seconds": (self.timeout_seconds >= 0, "a number >= 0 (0: no limit)"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"TuneConfig.{name} must be {expected}, got {getattr(self, name)!r}")
        if self.storage and "://" not in self.storage:
            raise ConfigError(f"TuneConfig.storage must be an RDB URL such as sqlite:///study.db, got {self.storage!r}")

    def storage_url(self, output_dir: Path) -> str:
        return self.storage or f"sqlite:///{(output_dir / 'study.db').resolve()}"


@dataclass(frozen=True)
class TuneResult:
    """The search's output directory and what :data:`BEST_PARAMS_FILE` holds."""

    output_dir: Path
    best: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)


def pruning_callback(trial: Any, metric: str = INTERMEDIATE_METRIC, rows_per_step: int = 1) -> Any:
    """A ``transformers.TrainerCallback`` that reports ``metrics[metric]`` of every validation evaluation to the
    Optuna ``trial`` and raises ``optuna.TrialPruned`` when the trial's pruner says so.

    The step reported is the global step times ``rows_per_step`` (the trial's batch size): the training rows seen,
    so that the median pruner compares trials of different batch sizes after the same amount of data (it compares
    values reported at equal steps)."""
    import optuna
    from transformers import TrainerCallback

    class OptunaPruningCallback(TrainerCallback):
        def __init__(self) -> None:
            self.reported_steps: set[int] = set()

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, float] | None = None,
                        **kwargs: Any) -> None:
            # The final evaluation after training repeats the last step's: reported once.
            step = int(state.global_step) * rows_per_step
            if not metrics or metric not in metrics or step in self.reported_steps:
                return
            self.reported_steps.add(step)
            trial.report(float(metrics[metric]), step=step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {state.global_step} ({step} rows): "
                                         f"{metric}={metrics[metric]:.4f}")

    return OptunaPruningCallback()


#: ``(split_dir, config, output_dir, callbacks) -> summary``: trains one trial (tests replace it).
TrialTrainer = Callable[[Path, TrainConfig, Path, list[Any]], dict[str, Any]]


def _train_trial(split_dir: Path, config: TrainConfig, output_dir: Path, callbacks: list[Any]) -> dict[str, Any]:
    from textclf.train import train_model

    return train_model(split_dir, config, output_dir, checkpoint_root=None, progress=False,
                       callbacks=callbacks).summary


def create_study(config: TuneConfig, storage: str, rows_per_evaluation: int = 1) -> Any:
    """The study (created, or loaded if it exists): TPE sampler, median pruner, maximising the objective.
    ``rows_per_evaluation`` (the fewest training rows between two validation evaluations of any trial) turns the
    pruner's warm-up from evaluations into the rows seen that :func:`pruning_callback` reports as steps."""
    import optuna

    # The pruner skips steps (rows seen) below the warm-up: the first evaluations of the trial with the smallest
    # batch, and at least as many rows of the others.
    warmup_steps = config.pruner_warmup_evaluations * rows_per_evaluation + 1 if config.pruner_warmup_evaluations else 0
    pruner = optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials, n_warmup_steps=warmup_steps)

    def sampler(trials_so_far: int) -> Any:
        # The sampler's random numbers restart with every process: offset by the trials already in the study, a
        # resumed search does not draw the random startup trials of the first process again.
        return optuna.samplers.TPESampler(seed=config.seed + trials_so_far, n_startup_trials=config.startup_trials)

    study = optuna.create_study(study_name=config.study_name, storage=storage, sampler=sampler(0), pruner=pruner,
                                direction=OBJECTIVE_DIRECTION, load_if_exists=True)
    if study.trials:
        study = optuna.load_study(study_name=config.study_name, storage=storage, sampler=sampler(len(study.trials)),
                                  pruner=pruner)
    return study


def _retry_interrupted(study: Any) -> int:
    """Trials left RUNNING by a killed search are marked failed and their parameters queued again; how many."""
    import optuna

    interrupted = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in interrupted:
        log.warning("trial %d was interrupted: marked failed, its parameters run again", trial.number)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return len(interrupted)


def trial_records(study: Any) -> list[dict[str, Any]]:
    """Every trial of ``study``: number, state, parameters, objective, user attributes, intermediate values."""
    return [
        {"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
         "user_attrs": t.user_attrs, "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
         "duration_seconds": t.duration.total_seconds() if t.duration else None}
        for t in study.get_trials(deepcopy=False)
    ]


def run_search(
    split_dir: str | Path,
    output_dir: str | Path,
    config: TuneConfig | None = None,
    base_config: TrainConfig | None = None,
    space: SearchSpace = DEFAULT_SEARCH_SPACE,
    train_trial: TrialTrainer | None = None,
    tracking: TrackingConfig | None = None,
) -> TuneResult:
    """Search ``space`` around ``base_config`` and write :data:`BEST_PARAMS_FILE` and :data:`TRIALS_FILE`.

    Args:
        split_dir: Output of the validate/split stage.
        output_dir: Where the results (and, with an empty ``config.storage``, the study's SQLite file) go.
        config: Trials, study name and storage, sampler seed, pruner settings.
        base_config: Every TrainConfig field the space does not vary (default: TrainConfig's defaults).
        space: The searched parameters.
        train_trial: Trains one trial (default: :func:`textclf.train.train_model` in a scratch directory).
        tracking: A :class:`textclf.train.tracking.TrackingConfig` (default: one that reads
            ``$MLFLOW_TRACKING_URI``). With a tracking server, the study is an MLflow run (found again on resume)
            and each trial a child run of it: parameters, curves, objective, state (pruned trials end ``KILLED``),
            and the best trial's result on the study's run when the search ends. An unreachable server is a
            warning; the search goes on untracked.

    Returns:
        The output directory, the best trial's record and every trial's.

    Raises:
        ConfigError: The space and the base configuration do not make a valid TrainConfig (before any training).
    """
    config = config or TuneConfig()
    import optuna

    split_dir, output_dir = Path(split_dir), Path(output_dir)
    base_config = base_config or TrainConfig()
    defaults = {name: getattr(base_config, name) for name in space.names}
    if "learning_rate" in defaults:
        defaults["learning_rate"] = base_config.effective_learning_rate
    check_space(space, base_config)  # before any training
    output_dir.mkdir(parents=True, exist_ok=True)
    storage = config.storage_url(output_dir)
    batch_sizes = [p.choices or (p.low,) for p in space.params if p.name == "batch_size"]
    smallest_batch = int(min(batch_sizes[0])) if batch_sizes else base_config.batch_size
    study = create_study(config, storage, base_config.checkpoint_steps * smallest_batch)
    retried = _retry_interrupted(study)
    if config.enqueue_defaults and not study.trials:
        study.enqueue_trial(defaults, user_attrs={"defaults": True})
    trainer = train_trial or _train_trial
    from textclf.train.tracking import TrackingConfig, end_parent_run, finish_run, start_parent_run, tracking_callbacks

    tracking = tracking or TrackingConfig()
    study_tags = {"optuna_study": config.study_name}
    parent_run = start_parent_run(tracking, config.study_name, {**study_tags, "optuna_role": "study"})

    def objective(trial: optuna.Trial) -> float:
        overrides = space.suggest(trial)
        trial_config = apply_overrides(base_config, overrides)
        log.info("trial %d: %s", trial.number, overrides)
        callbacks = [pruning_callback(trial, rows_per_step=trial_config.batch_size)]
        if parent_run is not None:
            trial_tracking = dataclasses.replace(tracking, run_name=f"{config.study_name}-trial-{trial.number}",
                                                 tags={**tracking.tags, **study_tags, "optuna_role": "trial",
                                                       "optuna_trial": str(trial.number)})
            callbacks += tracking_callbacks(trial_tracking, trial_config.to_dict(), parent_run_id=parent_run)
        state, metrics = "FAILED", {}
        try:
            with tempfile.TemporaryDirectory(prefix=f"textclf-trial-{trial.number}-") as scratch:
                summary = trainer(split_dir, trial_config, Path(scratch) / "model", callbacks)
            for name in ADDITIONAL_METRICS:
                trial.set_user_attr(name, float(summary[name]))
            trial.set_user_attr("global_steps", summary.get("global_steps"))
            state, metrics = "COMPLETE", {OBJECTIVE_METRIC: summary[OBJECTIVE_METRIC]}
            return float(summary[OBJECTIVE_METRIC])
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            finish_run(callbacks, metrics, status={"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED"),
                       tags={"optuna_state": state})

    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=done_states))
    remaining = max(0, config.n_trials - done)
    log.info("study %s in %s: %d trials done, %d to run (%d interrupted, retried)", config.study_name, storage,
             done, remaining, retried)
    started = time.perf_counter()
    if remaining:
        # A failed trial (an exception other than pruning) stops the search: a broken configuration should be
        # seen, not averaged over.
        study.optimize(objective, n_trials=remaining, timeout=config.timeout_seconds or None,
                       gc_after_trial=True)
    trials = trial_records(study)
    completed = [t for t in study.get_trials(deepcopy=False) if t.state is optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise ConfigError(f"study {config.study_name!r} has no completed trial (all pruned or failed)")
    best_trial = study.best_trial
    defaults_trial = next((t for t in completed if t.user_attrs.get("defaults")), None)
    best = {
        "params": dict(best_trial.params),
        "trial_number": best_trial.number,
        OBJECTIVE_METRIC: best_trial.value,
        **{name: best_trial.user_attrs.get(name) for name in ADDITIONAL_METRICS},
        "objective": {"metric": OBJECTIVE_METRIC, "direction": OBJECTIVE_DIRECTION},
        "defaults_trial": None if defaults_trial is None else {
            "trial_number": defaults_trial.number, "params": dict(defaults_trial.params),
            OBJECTIVE_METRIC: defaults_trial.value,
            **{name: defaults_trial.user_attrs.get(name) for name in ADDITIONAL_METRICS},
        },
        "study_name": config.study_name,
        "storage": storage,
        "trials": {state: sum(1 for t in trials if t["state"] == state)
                   for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")},
        "search_space": space.to_dict(),
        "base_config": {k: v for k, v in base_config.to_dict().items() if k != "base_model"},
        "tune_config": dataclasses.asdict(config),
        "wall_seconds_this_process": time.perf_counter() - started,
    }
    write_json(output_dir / TRIALS_FILE, {"trials": trials})
    write_json(output_dir / BEST_PARAMS_FILE, best)
    end_parent_run(tracking, parent_run, {f"best_{OBJECTIVE_METRIC}": best_trial.value, "best_trial": best_trial.number,
                                          **{f"trials_{k.lower()}": v for k, v in best["trials"].items()}},
                   {f"best_{k}": v for k, v in best["params"].items()})
    log.info("best trial %d: %s=%.4f %s", best_trial.number, OBJECTIVE_METRIC, best_trial.value, best["params"])
    return TuneResult(output_dir, best, trials)


def load_best_params(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The TrainConfig overrides of a :data:`BEST_PARAMS_FILE`: a path to it (or to the directory holding it), its
    parsed content, or a plain ``{field: value}`` mapping.

    Raises:
        ConfigError: No such file, or no ``params`` object in it.
    """
    if isinstance(source, Mapping):
        payload: Any = dict(source)
    else:
        path = Path(source)
        if path.is_dir():
            path = path / BEST_PARAMS_FILE
        if not path.is_file():
            raise ConfigError(f"no hyper-parameters file at {path} (the tune stage writes {BEST_PARAMS_FILE})")
        payload = read_json(path)
    params = payload.get("params", payload) if isinstance(payload, dict) else None
    if not isinstance(params, dict):
        raise ConfigError(f"hyper-parameters must be a JSON object of TrainConfig fields, got {params!r}")
    return params


def apply_best_params(config: TrainConfig, source: str | Path | Mapping[str, Any]) -> TrainConfig:
    """``config`` with the tuned parameters of ``source`` (see :func:`load_best_params`) applied."""
    return apply_overrides(config, load_best_params(source))
