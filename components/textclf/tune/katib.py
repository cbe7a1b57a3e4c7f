"""The search of :mod:`textclf.tune.tune` for a cluster: a Katib ``Experiment`` (``kubeflow.org/v1beta1``) or a
Kubeflow Trainer ``OptimizationJob`` (``trainer.kubeflow.org/v1alpha1``), built from the same
:class:`~textclf.tune.space.SearchSpace` and reporting the same objective.

Every trial runs the component image (:data:`textclf.images.COMPONENT_IMAGE`) with ``textclf train-trial``: the
fixed TrainConfig flags of the search's base configuration, one ``--<field> ${trialParameters.<field>}`` pair per
searched parameter, and ``--splits-dir`` on the splits every trial reads (an object-store prefix, or a path on a
volume mounted into the trial). The command prints ``validation_accuracy=...`` and ``validation_loss=...``, the
lines Katib's ``StdOut`` metrics collector parses.

Differences the cluster APIs impose: Katib has TPE (``tpe``, its Hyperopt suggestion service) and median stopping
(``medianstop``) like the local search; the OptimizationJob API (v1alpha1) offers only ``random`` and ``grid``
search, so it uses ``random`` with the same seed, and no early stopping. Categorical values are strings in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textclf.config import TrainConfig
from textclf.errors import ConfigError
from textclf.images import COMPONENT_IMAGE
from textclf.tune.space import ParamKind, ParamRange, SearchSpace
from textclf.tune.tune import ADDITIONAL_METRICS, OBJECTIVE_DIRECTION, OBJECTIVE_METRIC, TuneConfig

#: Katib's default StdOut filter (``name=value`` anywhere on a line), written out so the contract is visible.
METRICS_FORMAT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
#: The trial container's name (Katib's ``primaryContainerName``).
TRIAL_CONTAINER = "training"
#: TrainConfig fields passed to every trial when they differ from TrainConfig's defaults (the searched ones are
#: trial parameters instead; ``base_model`` is passed when set).
FIXED_TRIAL_FIELDS = ("base_model", "method", "epochs", "batch_size", "learning_rate", "weight_decay",
                      "warmup_ratio", "max_length", "checkpoint_steps", "early_stopping_patience",
                      "lora_r", "lora_alpha", "lora_dropout", *TrainConfig.STRATEGY_FIELDS, "seed", "num_threads")


@dataclass(frozen=True)
class ClusterSearch:
    """Where and how a search runs on a cluster.

    Attributes:
        name: The Experiment's / OptimizationJob's name (a DNS label).
        namespace: Its namespace.
        splits_uri: The validate stage's output every trial reads (``s3://``, ``gs://`` or a mounted path).
        image: The trials' image.
        parallel_trials: Trials run at once.
        max_failed_trials: Failed trials before Katib fails the Experiment.
        cpu, memory: Each trial's resource requests (and memory limit).
        runtime: The Trainer ``ClusterTrainingRuntime`` an OptimizationJob's TrainJobs use.
        env: Extra environment of the trial container (e.g. ``AWS_ENDPOINT_URL`` for the splits' object store).
    """

    name: str = "textclf-tune"
    namespace: str = "kubeflow"
    splits_uri: str = ""
    image: str = COMPONENT_IMAGE
    parallel_trials: int = 1
    max_failed_trials: int = 3
    cpu: str = "2"
    memory: str = "8Gi"
    runtime: str = "torch-distributed"
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.name):
            raise ConfigError(f"ClusterSearch.name must be a DNS label (lower-case, digits, '-'), got {self.name!r}")
        if not self.splits_uri:
            raise ConfigError("ClusterSearch.splits_uri is required: the splits every trial trains on")
        if self.parallel_trials < 1 or self.max_failed_trials < 0:
            raise ConfigError("ClusterSearch.parallel_trials must be >= 1 and max_failed_trials >= 0")


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def trial_command(search: ClusterSearch, space: SearchSpace, base_config: TrainConfig | None = None,
                  placeholder: str = "${{trialParameters.{name}}}") -> list[str]:
    """``textclf train-trial ...`` of every trial: the base configuration's non-default fields, then one flag per
    searched parameter whose value is ``placeholder`` (Katib's ``${trialParameters.<name>}``)."""
    base_config = base_config or TrainConfig()
    defaults = TrainConfig(base_model=base_config.base_model)
    command = ["textclf", "train-trial", "--splits-dir", search.splits_uri]
    for name in FIXED_TRIAL_FIELDS:
        value = getattr(base_config, name)
        if name in space.names or (value == getattr(defaults, name) and name != "base_model"):
            continue
        if name == "base_model" and value == TrainConfig().base_model:
            continue  # the packaged model: the image has it at its own path
        command += [flag(name), str(value)]
    for name in space.names:
        command += [flag(name), placeholder.format(name=name)]
    return command


def _katib_parameter(p: ParamRange) -> dict[str, Any]:
    if p.param_kind is ParamKind.CATEGORICAL:
        return {"name": p.name, "parameterType": "categorical",
                "feasibleSpace": {"list": [str(choice) for choice in p.choices]}}
    space: dict[str, Any] = {"min": repr(p.low) if p.param_kind is ParamKind.FLOAT else str(int(p.low)),
                             "max": repr(p.high) if p.param_kind is ParamKind.FLOAT else str(int(p.high))}
    if p.log:
        space["distribution"] = "logUniform"
    return {"name": p.name, "parameterType": "double" if p.param_kind is ParamKind.FLOAT else "int",
            "feasibleSpace": space}


def _resources(search: ClusterSearch) -> dict[str, Any]:
    return {"requests": {"cpu": search.cpu, "memory": search.memory}, "limits": {"memory": search.memory}}


def katib_experiment(search: ClusterSearch, space: SearchSpace, config: TuneConfig | None = None,
                     base_config: TrainConfig | None = None) -> dict[str, Any]:
    """The Katib ``Experiment``: TPE (seeded), median stopping, ``config.n_trials`` trials, each a ``batch/v1``
    Job running :func:`trial_command` in the component image."""
    config = config or TuneConfig()
    container: dict[str, Any] = {
        "name": TRIAL_CONTAINER, "image": search.image, "command": trial_command(search, space, base_config),
        "resources": _resources(search),
    }
    if search.env:
        container["env"] = [{"name": name, "value": value} for name, value in search.env]
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": search.name, "namespace": search.namespace},
        "spec": {
            "objective": {
                "type": OBJECTIVE_DIRECTION,
                "objectiveMetricName": OBJECTIVE_METRIC,
                "additionalMetricNames": list(ADDITIONAL_METRICS),
                # The last value printed is the saved (best) checkpoint's, as the local objective.
                "metricStrategies": [{"name": name, "value": "latest"}
                                     for name in (OBJECTIVE_METRIC, *ADDITIONAL_METRICS)],
            },
            "algorithm": {"algorithmName": "tpe", "algorithmSettings": [
                {"name": "random_state", "value": str(config.seed)},
                {"name": "n_startup_trials", "value": str(config.startup_trials)},
            ]},
            "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
                {"name": "min_trials_required", "value": str(max(1, config.startup_trials))},
            ]},
            "maxTrialCount": config.n_trials,
            "parallelTrialCount": search.parallel_trials,
            "maxFailedTrialCount": search.max_failed_trials,
            "parameters": [_katib_parameter(p) for p in space.params],
            "metricsCollectorSpec": {
                "collector": {"kind": "StdOut"},
                "source": {"filter": {"metricsFormat": [METRICS_FORMAT]}},
            },
            "trialTemplate": {
                "primaryContainerName": TRIAL_CONTAINER,
                "trialParameters": [{"name": p.name, "description": f"TrainConfig.{p.name}", "reference": p.name}
                                    for p in space.params],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {"backoffLimit": 0, "template": {
                        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                        "spec": {"restartPolicy": "Never", "containers": [container]},
                    }},
                },
            },
        },
    }


def _trainer_search_space(p: ParamRange) -> dict[str, Any]:
    if p.param_kind is ParamKind.CATEGORICAL:
        return {"categorical": {"choices": [str(choice) for choice in p.choices]}}
    number_type = "Float" if p.param_kind is ParamKind.FLOAT else "Int"
    bounds = {"min": repr(p.low) if number_type == "Float" else str(int(p.low)),
              "max": repr(p.high) if number_type == "Float" else str(int(p.high)), "type": number_type}
    return {"logUniform" if p.log else "uniform": bounds}


def optimization_job(search: ClusterSearch, space: SearchSpace, config: TuneConfig | None = None,
                     base_config: TrainConfig | None = None) -> dict[str, Any]:
    """The Trainer ``OptimizationJob``: random search with the TPE's seed (the API has no TPE), ``config.n_trials``
    trials, each a TrainJob of ``search.runtime`` running :func:`trial_command` in the component image."""
    config = config or TuneConfig()
    if config.n_trials > 100 or search.parallel_trials > 100:
        raise ConfigError("an OptimizationJob runs at most 100 trials (numTrials, parallelTrials <= 100)")
    trainer: dict[str, Any] = {
        "image": search.image, "command": trial_command(search, space, base_config), "numNodes": 1,
        "resourcesPerNode": _resources(search),
    }
    if search.env:
        trainer["env"] = [{"name": name, "value": value} for name, value in search.env]
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "OptimizationJob",
        "metadata": {"name": search.name, "namespace": search.namespace},
        "spec": {
            "objectives": [{"metric": OBJECTIVE_METRIC, "direction": OBJECTIVE_DIRECTION.capitalize()}],
            "parameters": [{"name": p.name, "searchSpace": _trainer_search_space(p)} for p in space.params],
            "searchAlgorithm": {"random": {"seed": config.seed}},
            "numTrials": config.n_trials,
            "parallelTrials": search.parallel_trials,
            "trainJobTemplate": {"spec": {"runtimeRef": {"name": search.runtime}, "trainer": trainer}},
        },
    }
