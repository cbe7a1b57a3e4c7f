"""KFP component: tune (thin wrapper around :func:`textclf.tune.run_search`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def tune_op(
    splits: Input[Dataset],
    best_params: Output[Artifact],
    n_trials: int,
    study_name: str,
    storage: str,
    search_space: str,
    base_model: str,
    method: str,
    max_length: int,
    checkpoint_steps: int,
    seed: int,
    tune_seed: int,
) -> str:
    """Search hyper-parameters with Optuna (TPE sampler, median pruner on every validation evaluation). No input
    has a default here: a pipeline passes TuneConfig's and TrainConfig's (``textclf.config``, ``textclf.tune``).

    Args:
        splits: Output of the validate/split component.
        best_params: Output directory: ``best_params.json`` (the best trial's TrainConfig overrides under
            ``params``, its validation accuracy and loss, the defaults trial, the study's name and storage, the
            trial counts, the search space) and ``trials.json`` (every trial).
        n_trials: Trials the study holds at the end; a resumed study runs only the missing ones.
        study_name: The study's name in ``storage``.
        storage: Optuna RDB URL (``postgresql://...``, or ``sqlite:///`` on a persistent volume) that lets a rerun
            resume the search; empty: a SQLite file inside ``best_params`` (no resume across runs).
        search_space: JSON ``{field: {low, high[, log][, type]} | {choices: [...]}}``; empty: the default space
            (learning rate, epochs, warm-up, weight decay, label smoothing, batch size).
        base_model: As the train component's; empty: the packaged all-MiniLM-L6-v2.
        method: ``full``, ``lora`` or ``qlora``.
        max_length: Token limit of every trial.
        checkpoint_steps: Validate (and report to the pruner) every N steps.
        seed: Training seed of every trial.
        tune_seed: Seed of the TPE sampler.

    Returns:
        The best trial's TrainConfig overrides as a JSON object (``textclf train-trial --hyperparameters`` and
        :func:`textclf.tune.apply_best_params` take the file). Bad search spaces fail before any training.
    """
    import json

    from textclf.config import TrainConfig
    from textclf.tune import DEFAULT_SEARCH_SPACE, SearchSpace, TuneConfig, run_search

    space = SearchSpace.from_dict(json.loads(search_space)) if search_space else DEFAULT_SEARCH_SPACE
    overrides = {"base_model": base_model} if base_model else {}
    base = TrainConfig(method=method, max_length=int(max_length), checkpoint_steps=int(checkpoint_steps),
                       seed=int(seed), **overrides)
    config = TuneConfig(n_trials=int(n_trials), study_name=study_name, storage=storage, seed=int(tune_seed))
    result = run_search(splits.path, best_params.path, config, base, space)
    best_params.metadata.update({"validation_accuracy": result.best["validation_accuracy"],
                                 "trial_number": result.best["trial_number"], "study_name": study_name})
    return json.dumps(result.best["params"], sort_keys=True)
