"""Trigger backends: each starts one run of the compiled ``retraining`` pipeline with the given parameters.

- ``local``: runs the pipeline function in this process with ``kfp.local.SubprocessRunner`` (blocks until done).
- ``kubeflow``: ``kfp.Client().create_run_from_pipeline_package`` with the committed YAML
  (:func:`textclf.deploy.kubeflow.submit_kubeflow_run`; returns once the run is created).
- ``vertex``: ``aiplatform.PipelineJob(template_path=...)`` with the same YAML
  (:func:`textclf.deploy.vertex.submit_vertex_pipeline`; returns once the job is accepted).

Every backend checks the parameters against the compiled pipeline's inputs before anything runs or is sent.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from textclf.errors import ConfigError

log = logging.getLogger(__name__)

#: Name of the retraining pipeline in :data:`textclf.pipelines.compile.PIPELINES`.
RETRAINING_PIPELINE = "retraining"


def retraining_package() -> Path:
    """The committed compiled YAML of the retraining pipeline."""
    from textclf.pipelines.compile import default_pipeline_package

    return default_pipeline_package(RETRAINING_PIPELINE)


class TriggerBackend(str, enum.Enum):
    """Where a retraining run is started."""

    LOCAL = "local"
    KUBEFLOW = "kubeflow"
    VERTEX = "vertex"


@dataclass(frozen=True)
class RetrainRequest:
    """Why and with which parameters to retrain.

    Attributes:
        reason: Recorded with the candidate in the registry (``trigger_reason``), e.g. the drift decision.
        arguments: Retraining-pipeline parameters (``dataset_uri`` and ``registry_uri`` are required).
    """

    reason: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def pipeline_arguments(self) -> dict[str, Any]:
        """The parameters with ``trigger_reason`` set, checked against the compiled retraining pipeline.

        Raises:
            ConfigError: Unknown parameter, wrong type or a required one missing.
        """
        from textclf.deploy.kubeflow import check_arguments, load_pipeline_package

        arguments = {**self.arguments, "trigger_reason": self.reason[:1000]}
        return check_arguments(arguments, load_pipeline_package(retraining_package()))


@dataclass(frozen=True)
class TriggerResult:
    """What a trigger started: the backend, an id (local run folder, KFP run id, Vertex job name) and a link."""

    backend: TriggerBackend
    run_id: str
    url: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


class RetrainTrigger(Protocol):
    """Starts the retraining pipeline."""

    backend: TriggerBackend

    def fire(self, request: RetrainRequest) -> TriggerResult:
        """Start one retraining run for ``request``."""
        ...


@dataclass(frozen=True)
class LocalTrigger:
    """Runs the retraining pipeline on this machine under ``kfp.local`` (blocks until the run ends).

    Attributes:
        pipeline_root: Folder for the local runs.
    """

    pipeline_root: Path
    backend: TriggerBackend = TriggerBackend.LOCAL

    def fire(self, request: RetrainRequest) -> TriggerResult:
        from textclf.gate import read_decision
        from textclf.pipelines.local import run_pipeline_locally
        from textclf.pipelines.retraining.pipeline import retraining_pipeline

        arguments = request.pipeline_arguments()
        log.info("retraining locally: %s", request.reason)
        run = run_pipeline_locally(retraining_pipeline, arguments, self.pipeline_root)
        # From the pipeline's declared outputs: the gate's decision, the registered version, every artifact's path.
        details: dict[str, Any] = {
            "seconds": run.seconds, "decision": read_decision(run.artifacts["decision"]),
            "registered_version": run.values["registered_version"],
            "outputs": {name: str(path) for name, path in run.artifacts.items()}, "logs_dir": str(run.logs_dir),
        }
        return TriggerResult(self.backend, str(run.run_dir), url=run.run_dir.as_uri(), details=details)


@dataclass(frozen=True)
class KubeflowTrigger:
    """Creates a run of the compiled retraining pipeline on a Kubeflow Pipelines server.

    Attributes:
        config: Host, token, namespace, experiment (its ``pipeline_package`` and ``arguments`` are set per request).
    """

    config: Any  # textclf.deploy.kubeflow.KubeflowConfig
    backend: TriggerBackend = TriggerBackend.KUBEFLOW

    def fire(self, request: RetrainRequest) -> TriggerResult:
        from textclf.deploy.kubeflow import submit_kubeflow_run

        config = replace(self.config, pipeline_package=retraining_package(), arguments=request.pipeline_arguments())
        run = submit_kubeflow_run(config)
        return TriggerResult(self.backend, run.run_id, url=run.run_url,
                             details={"experiment_id": run.experiment_id, "pipeline_id": run.pipeline_id})


@dataclass(frozen=True)
class VertexTrigger:
    """Submits the compiled retraining pipeline as a Vertex AI PipelineJob.

    Attributes:
        config: Project, region, ``gs://`` pipeline root, service account (package and arguments set per request).
        credentials: ``google.auth`` credentials; None: Application Default Credentials.
    """

    config: Any  # textclf.deploy.vertex.VertexPipelineConfig
    credentials: Any = None
    backend: TriggerBackend = TriggerBackend.VERTEX

    def build_job(self, request: RetrainRequest) -> Any:
        """The PipelineJob this trigger would submit (nothing is sent)."""
        from textclf.deploy.vertex import build_pipeline_job

        return build_pipeline_job(self._config(request), self.credentials)

    def fire(self, request: RetrainRequest) -> TriggerResult:
        from textclf.deploy.vertex import submit_vertex_pipeline

        result = submit_vertex_pipeline(self._config(request), self.credentials)
        return TriggerResult(self.backend, result.job_name, url=result.dashboard_url)

    def _config(self, request: RetrainRequest) -> Any:
        return replace(self.config, pipeline_package=retraining_package(), arguments=request.pipeline_arguments())


#: Backend -> trigger class: a lookup table, as KServe does for its tasks.
TRIGGERS: Mapping[TriggerBackend, type] = {
    TriggerBackend.LOCAL: LocalTrigger,
    TriggerBackend.KUBEFLOW: KubeflowTrigger,
    TriggerBackend.VERTEX: VertexTrigger,
}


def _backend(backend: str | TriggerBackend) -> TriggerBackend:
    try:
        return TriggerBackend(backend)
    except ValueError:
        raise ConfigError(f"unknown trigger backend {backend!r}: expected one of "
                          f"{[b.value for b in TriggerBackend]}") from None


def make_trigger(backend: str | TriggerBackend, **settings: Any) -> RetrainTrigger:
    """A trigger for ``backend`` built from its settings (``pipeline_root`` for local; ``config`` — a
    ``KubeflowConfig`` or ``VertexPipelineConfig`` — for the others).

    Raises:
        ConfigError: Unknown backend or settings.
    """
    kind = _backend(backend)
    try:
        return TRIGGERS[kind](**settings)
    except TypeError as exc:
        raise ConfigError(f"{kind.value} trigger: {exc}") from None


#: Environment variables :func:`trigger_from_env` reads for the Vertex AI backend.
VERTEX_ENV = {"project": "VERTEX_PROJECT", "location": "VERTEX_LOCATION", "pipeline_root": "VERTEX_PIPELINE_ROOT",
              "service_account": "VERTEX_SERVICE_ACCOUNT"}


def trigger_from_env(backend: str | TriggerBackend, environ: Mapping[str, str] | None = None,
                     pipeline_root: str | Path = "runs/pipeline_root") -> RetrainTrigger:
    """A trigger configured the way a long-running service is: from its environment.

    - ``local``: runs under ``pipeline_root``.
    - ``kubeflow``: ``$KFP_HOST``, ``$KFP_TOKEN`` (in-cluster: the ml-pipeline service and a projected token).
    - ``vertex``: ``$VERTEX_PROJECT``, ``$VERTEX_LOCATION``, ``$VERTEX_PIPELINE_ROOT`` (gs://), optional
      ``$VERTEX_SERVICE_ACCOUNT``; credentials from Application Default Credentials.

    Raises:
        ConfigError: Unknown backend, or a required variable missing.
    """
    import os

    env = os.environ if environ is None else environ
    kind = _backend(backend)
    if kind is TriggerBackend.LOCAL:
        return LocalTrigger(Path(pipeline_root))
    if kind is TriggerBackend.KUBEFLOW:
        from textclf.deploy.kubeflow import KubeflowConfig

        return KubeflowTrigger(KubeflowConfig.from_env(env))  # refuses a missing $KFP_HOST
    from textclf.deploy.vertex import VertexPipelineConfig

    values = {field_name: env.get(variable, "").strip() for field_name, variable in VERTEX_ENV.items()}
    missing = [VERTEX_ENV[name] for name in ("project", "pipeline_root") if not values[name]]
    if missing:
        raise ConfigError(f"the vertex trigger needs ${' and $'.join(missing)}")
    values = {name: value for name, value in values.items() if value}
    return VertexTrigger(VertexPipelineConfig(**values))


def retrain_on_drift(trigger: RetrainTrigger, arguments: Mapping[str, Any]) -> Any:
    """The monitor's ``on_drift`` callback: start a retraining run whose reason is the drift check's summary.

    The parameters are checked now, so a monitor started with bad ones fails at start-up, not at the first drift.

    Args:
        trigger: Where the run starts.
        arguments: Retraining-pipeline parameters (``dataset_uri``, ``registry_uri``, ...).

    Returns:
        ``on_drift(result) -> TriggerResult``.

    Raises:
        ConfigError: Parameters that do not fit the compiled retraining pipeline.
    """
    RetrainRequest("drift", arguments).pipeline_arguments()

    def on_drift(result: Any) -> TriggerResult:
        fired = trigger.fire(RetrainRequest(f"drift: {result.summary()}", arguments))
        log.warning("retraining started on %s: %s %s", fired.backend.value, fired.run_id, fired.url)
        return fired

    return on_drift
