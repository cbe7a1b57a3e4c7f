"""Experiment tracking of a training run: TensorBoard event files and, when a tracking server is configured, MLflow.

* **TensorBoard**: the Trainer's logs (loss, learning rate, validation loss and accuracy at every evaluation) as
  event files under ``tensorboard_dir`` (``transformers``' own ``TensorBoardCallback`` over
  ``torch.utils.tensorboard``). In a pipeline they are a KFP artifact; a Kubeflow ``Tensorboard`` resource (or
  ``tensorboard --logdir``) opens the artifact's URI.
* **MLflow**: with ``MLFLOW_TRACKING_URI`` set (or ``mlflow_tracking_uri`` given), one MLflow run per training:
  the parameters (the :class:`~textclf.config.TrainConfig`), every logged metric with its step, and after the model
  directory is written the model files as the run's artifacts (:func:`log_model`). A tracking server that does
  not answer is not a reason to lose a training run: the run goes on without MLflow, with a warning
  (:func:`tracking_callbacks` checks the server once, before training starts).
* **Searches**: :func:`start_parent_run` makes one MLflow run per Optuna study (found again by its tag when a killed
  search resumes); each trial's training is a child run of it (``mlflow.parentRunId``, which the MLflow UI nests)
  with the trial's parameters, curves, objective and state (:func:`finish_run`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The environment variable MLflow itself reads.
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"
#: The tag by which MLflow nests a run under another.
PARENT_RUN_TAG = "mlflow.parentRunId"
#: Seconds the reachability check of the tracking server waits.
MLFLOW_CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TrackingConfig:
    """Where a training run is tracked.

    Attributes:
        tensorboard_dir: Directory for TensorBoard event files; None: none written.
        mlflow_tracking_uri: MLflow tracking server (``http://...``, or a local ``sqlite:///`` / directory store);
            empty: ``$MLFLOW_TRACKING_URI``; both empty: no MLflow.
        experiment: MLflow experiment name.
        run_name: MLflow run name (empty: MLflow picks one).
        tags: MLflow run tags.
    """

    tensorboard_dir: Path | None = None
    mlflow_tracking_uri: str = ""
    experiment: str = "textclf"
    run_name: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or os.environ.get(MLFLOW_URI_ENV, "")


def mlflow_reachable(uri: str, timeout_s: float = MLFLOW_CHECK_TIMEOUT_S) -> str | None:
    """None if the MLflow server at ``uri`` answers (``GET /health``); else why not. A non-HTTP URI (a local store)
    is always reachable."""
    if not uri.startswith(("http://", "https://")):
        return None
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def _mlflow_callback(config: TrackingConfig, params: dict[str, Any]) -> Any:
    import mlflow
    from transformers import TrainerCallback

    class MlflowRun(TrainerCallback):
        """Starts the run at the beginning of training, logs every metric with its step; :func:`log_model` adds
        the model and ends it."""

        def __init__(self) -> None:
            self.mlflow_run_id: str | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero or self.mlflow_run_id is not None:
                return
            mlflow.set_tracking_uri(config.mlflow_uri)
            mlflow.set_experiment(config.experiment)
            run = mlflow.start_run(run_name=config.run_name or None, tags=config.tags or None)
            self.mlflow_run_id = run.info.run_id
            mlflow.log_params({k: v for k, v in params.items() if v is not None and v != ""})

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if self.mlflow_run_id is None or not logs:
                return
            numbers = _numbers(logs)
            if numbers:
                mlflow.log_metrics(numbers, step=state.global_step, run_id=self.mlflow_run_id)

    return MlflowRun()


def tracking_callbacks(config: TrackingConfig, params: dict[str, Any], parent_run_id: str = "") -> list[Any]:
    """The Trainer callbacks that track a run (pass them to ``train_model(..., callbacks=...)``).

    Args:
        config: Where to track.
        params: The run's parameters (logged to MLflow).
        parent_run_id: The MLflow run this one is a child of (:func:`start_parent_run`, which checked the server:
            no second check here).

    Returns:
        A TensorBoard callback when ``tensorboard_dir`` is set, an MLflow one when a tracking server is configured
        and answers; an unreachable server is logged as a warning and left out.
    """
    callbacks: list[Any] = []
    if config.tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        Path(config.tensorboard_dir).mkdir(parents=True, exist_ok=True)
        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(config.tensorboard_dir))))
    if parent_run_id:
        config = dataclasses.replace(config, tags={**config.tags, PARENT_RUN_TAG: parent_run_id})
        callbacks.append(_mlflow_callback(config, params))
    elif config.mlflow_uri:
        problem = mlflow_reachable(config.mlflow_uri)
        if problem is None:
            callbacks.append(_mlflow_callback(config, params))
        else:
            log.warning("MLflow tracking server %s does not answer (%s): training goes on without MLflow",
                        config.mlflow_uri, problem)
    return callbacks


def start_parent_run(config: TrackingConfig, name: str, key_tags: dict[str, str]) -> str | None:
    """The id of the MLflow run that groups other runs (an Optuna study's trials): the unfinished or finished run
    of ``config.experiment`` carrying all of ``key_tags`` (a resumed search finds its own), else a new one named
    ``name``. None when no tracking server is configured, or it does not answer (a warning)."""
    if not config.mlflow_uri:
        return None
    problem = mlflow_reachable(config.mlflow_uri)
    if problem is not None:
        log.warning("MLflow tracking server %s does not answer (%s): the search goes on without MLflow",
                    config.mlflow_uri, problem)
        return None
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=config.mlflow_uri)
    experiment = client.get_experiment_by_name(config.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(config.experiment)
    query = " and ".join(f"tags.{key} = '{value}'" for key, value in sorted(key_tags.items()))
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, run_name=name, tags={**config.tags, **key_tags}).info.run_id


def end_parent_run(config: TrackingConfig, run_id: str | None, metrics: dict[str, Any] | None = None,
                   tags: dict[str, Any] | None = None) -> None:
    """Log ``metrics`` and set ``tags`` (tags, not parameters: a resumed search may find another best) on the run of
    :func:`start_parent_run` and mark it finished. A failure to log is a warning."""
    if run_id is None:
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=config.mlflow_uri)
    try:
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, str(value))
        for key, value in _numbers(metrics or {}).items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:  # tracking must not fail a finished search
        log.warning("could not finish MLflow run %s: %s", run_id, exc)


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def finish_run(callbacks: list[Any], metrics: dict[str, Any] | None = None, model_dir: str | Path | None = None,
               status: str = "FINISHED", tags: dict[str, str] | None = None) -> str | None:
    """End the MLflow run of ``callbacks`` (the MLflow callback's, started when training began): log ``metrics``,
    ``tags`` and the ``model_dir`` files (as ``model/``), with ``status`` (``FINISHED``, ``KILLED`` for a pruned
    trial, ``FAILED``).

    Returns:
        The MLflow run id, or None when the run was not tracked by MLflow. A failure to log is a warning.
    """
    run = next((c for c in callbacks if getattr(c, "mlflow_run_id", None)), None)  # the MLflow callback, if it ran
    if run is None:
        return None
    import mlflow

    try:
        if metrics:
            mlflow.log_metrics(_numbers(metrics), run_id=run.mlflow_run_id)
        for key, value in (tags or {}).items():
            mlflow.MlflowClient().set_tag(run.mlflow_run_id, key, value)
        if model_dir is not None:
            mlflow.log_artifacts(str(model_dir), artifact_path="model", run_id=run.mlflow_run_id)
    except Exception as exc:  # tracking must not fail a finished training run
        log.warning("could not log to MLflow run %s: %s", run.mlflow_run_id, exc)
    finally:
        mlflow.end_run(status=status)
    return run.mlflow_run_id


def log_model(callbacks: list[Any], model_dir: str | Path, metrics: dict[str, Any] | None = None) -> str | None:
    """Log the written model directory (and final metrics) to the MLflow run of ``callbacks`` and end the run
    (:func:`finish_run`).

    Returns:
        The MLflow run id, or None when the run was not tracked by MLflow. A failure to log is a warning.
    """
    return finish_run(callbacks, metrics, model_dir=model_dir)
