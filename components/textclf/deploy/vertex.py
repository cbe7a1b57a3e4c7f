"""Vertex AI: run the compiled pipeline YAML on Vertex AI Pipelines, and serve an export bundle on a Vertex AI
endpoint with the textclf serving image.

Everything up to the API call is built here and can be checked offline: :func:`build_pipeline_job` returns the
``aiplatform.PipelineJob`` whose ``to_dict()`` is the create request's body, and
:func:`build_model_upload_request` / :func:`build_endpoint_deploy_request` return the exact keyword arguments of
``aiplatform.Model.upload`` and ``Model.deploy``. Only :func:`submit_vertex_pipeline` and
:func:`deploy_vertex_endpoint` talk to Google.

The serving container contract on Vertex AI: it listens on ``AIP_HTTP_PORT`` (8080 here), answers the health
route with 200 once ready and the predict route with ``{"predictions": [...]}`` for ``{"instances": [...]}``, which
KServe's V1 protocol does at ``/v1/models/<name>:predict``. Vertex does not download the model into the container:
it sets ``AIP_STORAGE_URI`` (a gs:// copy of ``artifact_uri``), passed to the server as ``--model-dir``; the server
downloads a gs:// (or s3://) model directory itself through :mod:`textclf.storage` before loading it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from textclf.deploy.kubeflow import check_arguments, require_package
from textclf.errors import ConfigError, TextclfError

DEFAULT_LOCATION = "us-central1"
DEFAULT_MODEL_NAME = "textclf"
DEFAULT_MACHINE_TYPE = "n1-standard-4"
SERVING_PORT = 8080
HEALTH_ROUTE = "/v2/health/ready"
PROJECT_PATTERN = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
LOCATION_PATTERN = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
SERVICE_ACCOUNT_PATTERN = re.compile(r"^[a-z0-9][-a-z0-9._]*@[-a-z0-9.]+\.gserviceaccount\.com$")
NETWORK_PATTERN = re.compile(r"^projects/[0-9]+/global/networks/[-a-z0-9]+$")
#: Registries Vertex AI prediction pulls custom containers from: Artifact Registry and (legacy) Container Registry.
VERTEX_IMAGE_PATTERN = re.compile(r"^([a-z0-9-]+-docker\.pkg\.dev|([a-z]+\.)?gcr\.io)/[^\s]+$")
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")


def _check_common(project: str, location: str, service_account: str | None) -> None:
    if not PROJECT_PATTERN.match(project or ""):
        raise ConfigError(f"Google Cloud project id must be 6-30 lowercase letters, digits or '-' (e.g. "
                          f"my-project-123), got {project!r}: pass --project or set GOOGLE_CLOUD_PROJECT")
    if not LOCATION_PATTERN.match(location or ""):
        raise ConfigError(f"Vertex AI location must be a region such as us-central1, got {location!r}")
    if service_account is not None and not SERVICE_ACCOUNT_PATTERN.match(service_account):
        raise ConfigError(f"service account must be an e-mail ending in .gserviceaccount.com, got "
                          f"{service_account!r}")


def _check_gs(uri: str, what: str) -> None:
    if not re.match(r"^gs://[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](/.*)?$", uri or ""):
        raise ConfigError(f"{what} must be a gs://bucket[/prefix] URI (Vertex AI reads and writes Cloud Storage "
                          f"only), got {uri!r}")


# --- pipelines --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VertexPipelineConfig:
    """A Vertex AI Pipelines run of a compiled pipeline.

    Attributes:
        project: Google Cloud project id.
        pipeline_root: ``gs://bucket/prefix`` where the run's artifacts go (``runtimeConfig.gcsOutputDirectory``).
        location: Region of the run.
        pipeline_package: Compiled pipeline YAML (required to submit).
        display_name: Run display name; empty: the package's ``pipelineInfo.name``.
        job_id: Pipeline job id; None: ``<pipeline name>-<timestamp>``.
        arguments: Pipeline parameters (checked against the package's inputDefinitions).
        service_account: Service account the pipeline's steps run as; None: the project's Compute Engine default.
        network: VPC to peer with (``projects/<number>/global/networks/<name>``); None: no peering.
        enable_caching: Override the compiled caching options; None keeps them.
        labels: Labels on the pipeline job.
    """

    project: str
    pipeline_root: str
    location: str = DEFAULT_LOCATION
    pipeline_package: Path | None = None
    display_name: str = ""
    job_id: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    service_account: str | None = None
    network: str | None = None
    enable_caching: bool | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_common(self.project, self.location, self.service_account)
        _check_gs(self.pipeline_root, "pipeline_root")
        if self.network is not None and not NETWORK_PATTERN.match(self.network):
            raise ConfigError(f"network must look like projects/<project number>/global/networks/<name>, got "
                              f"{self.network!r}")
        if self.job_id is not None and not re.match(r"^[a-z][-a-z0-9]{0,127}$", self.job_id):
            raise ConfigError(f"job_id must be lowercase letters, digits and '-', starting with a letter, got "
                              f"{self.job_id!r}")
        if not isinstance(self.arguments, Mapping):
            raise ConfigError(f"pipeline arguments must be a mapping of parameter name to value, got "
                              f"{type(self.arguments).__name__}")


@dataclass(frozen=True)
class VertexPipelineResult:
    """A submitted pipeline job: its resource name and console link."""

    job_name: str
    dashboard_url: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_pipeline_job(config: VertexPipelineConfig, credentials: Any = None) -> Any:
    """The ``aiplatform.PipelineJob`` for ``config``, built offline (nothing is sent).

    Args:
        config: Project, region, pipeline root, package and arguments.
        credentials: ``google.auth`` credentials; None: Application Default Credentials.

    Returns:
        The job; ``job.to_dict()`` is the body of the create request (``pipelineSpec``, ``runtimeConfig``).

    Raises:
        ConfigError: An invalid package, or arguments that do not match its parameters.
    """
    package = require_package(config.pipeline_package)
    arguments = check_arguments(config.arguments, package)
    from google.cloud import aiplatform

    try:
        return aiplatform.PipelineJob(
            display_name=config.display_name or package.name,
            template_path=str(package.path),
            job_id=config.job_id,
            pipeline_root=config.pipeline_root,
            parameter_values=arguments,
            enable_caching=config.enable_caching,
            labels=dict(config.labels) or None,
            project=config.project,
            location=config.location,
            credentials=credentials,
        )
    except ValueError as exc:  # aiplatform's own checks: display name, labels, parameter types
        raise ConfigError(f"Vertex AI pipeline job for {package.path.name}: {exc}") from exc


def submit_vertex_pipeline(config: VertexPipelineConfig, credentials: Any = None) -> VertexPipelineResult:
    """Build the pipeline job and submit it (returns once Vertex AI accepted it; does not wait for the run).

    Raises:
        ConfigError: See :func:`build_pipeline_job`.
        TextclfError: Vertex AI refused the job or could not be reached.
    """
    job = build_pipeline_job(config, credentials)
    from google.api_core import exceptions as google_exceptions

    try:
        job.submit(service_account=config.service_account, network=config.network)
    except (google_exceptions.GoogleAPIError, RuntimeError) as exc:
        raise TextclfError(f"Vertex AI refused pipeline job {job.job_id} in {config.project}/{config.location}: "
                           f"{exc}") from exc
    return VertexPipelineResult(
        job_name=job.resource_name,
        dashboard_url=(f"https://console.cloud.google.com/vertex-ai/locations/{config.location}/pipelines/runs/"
                       f"{job.job_id}?project={config.project}"),
    )


# --- model serving ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VertexModelConfig:
    """A model upload (the export bundle in Cloud Storage + the serving image) and its endpoint deployment.

    Attributes:
        project: Google Cloud project id.
        artifact_uri: ``gs://`` folder holding the export bundle (a registry version's ``onnx_model``).
        image: The textclf serving image in Artifact Registry (``REGION-docker.pkg.dev/PROJECT/REPO/serving:TAG``).
        location: Region of the model and endpoint.
        display_name: Model display name.
        model_name: KServe model name, in the predict route ``/v1/models/<model_name>:predict``.
        precision: ``int8`` or ``fp32``.
        model_version: Registry version, recorded as the model's version description.
        endpoint: Existing endpoint (id or resource name) to deploy to; None: a new endpoint named
            ``endpoint_display_name``.
        endpoint_display_name: Display name of a new endpoint.
        machine_type: Compute Engine machine type of the serving nodes.
        min_replica_count: Nodes kept running.
        max_replica_count: Autoscaling ceiling.
        traffic_percentage: Share of the endpoint's traffic for the new deployment (100 on a new endpoint).
        service_account: Service account the serving container runs as; None: Vertex AI's default.
        labels: Labels on the model.
    """

    project: str
    artifact_uri: str
    image: str
    location: str = DEFAULT_LOCATION
    display_name: str = "textclf"
    model_name: str = DEFAULT_MODEL_NAME
    precision: str = "int8"
    model_version: str | None = None
    endpoint: str | None = None
    endpoint_display_name: str = "textclf"
    machine_type: str = DEFAULT_MACHINE_TYPE
    min_replica_count: int = 1
    max_replica_count: int = 2
    traffic_percentage: int = 100
    service_account: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from textclf.serving.config import Precision

        _check_common(self.project, self.location, self.service_account)
        _check_gs(self.artifact_uri, "artifact_uri")
        if not VERTEX_IMAGE_PATTERN.match(self.image or ""):
            raise ConfigError(f"Vertex AI pulls serving images from Artifact Registry "
                              f"(REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG) or gcr.io: push the serving image "
                              f"there, got {self.image!r}")
        if not MODEL_NAME_PATTERN.match(self.model_name or ""):
            raise ConfigError(f"model_name must be lowercase letters, digits, '-', '_' or '.', got "
                              f"{self.model_name!r}")
        if self.precision not in {p.value for p in Precision}:
            raise ConfigError(f"precision must be one of {[p.value for p in Precision]}, got {self.precision!r}")
        if not re.match(r"^[a-z][a-z0-9]*-[a-z0-9-]+$", self.machine_type or ""):
            raise ConfigError(f"machine_type must be a Compute Engine machine type such as n1-standard-4, got "
                              f"{self.machine_type!r}")
        counts = (self.min_replica_count, self.max_replica_count)
        if any(isinstance(c, bool) or not isinstance(c, int) for c in counts) or not 1 <= counts[0] <= counts[1]:
            raise ConfigError(f"replica counts need 1 <= min_replica_count <= max_replica_count, got "
                              f"min={self.min_replica_count!r}, max={self.max_replica_count!r}")
        traffic = self.traffic_percentage
        if isinstance(traffic, bool) or not isinstance(traffic, int) or not 0 <= traffic <= 100:
            raise ConfigError(f"traffic_percentage must be in [0, 100], got {self.traffic_percentage!r}")


@dataclass(frozen=True)
class ModelUploadRequest:
    """Keyword arguments of ``aiplatform.Model.upload`` (field names are the SDK's parameter names)."""

    display_name: str
    artifact_uri: str
    serving_container_image_uri: str
    serving_container_args: list[str]
    serving_container_predict_route: str
    serving_container_health_route: str
    serving_container_ports: list[int]
    version_description: str | None
    labels: dict[str, str] | None

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EndpointDeployRequest:
    """Keyword arguments of ``aiplatform.Model.deploy`` (besides ``endpoint``)."""

    deployed_model_display_name: str
    machine_type: str
    min_replica_count: int
    max_replica_count: int
    traffic_percentage: int
    service_account: str | None

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


def serving_container_args(model_name: str, precision: str) -> list[str]:
    """Arguments of ``python -m textclf.serving`` on Vertex AI, from
    :meth:`textclf.serving.config.ServingConfig.to_args`: the model folder is ``$(AIP_STORAGE_URI)`` (Vertex
    substitutes the variable), HTTP on port 8080, no gRPC (Vertex routes HTTP only)."""
    from textclf.serving.config import ServingConfig

    return ServingConfig(model_name=model_name, model_dir="$(AIP_STORAGE_URI)", precision=precision,
                         http_port=SERVING_PORT, enable_grpc=False).to_args()


def build_model_upload_request(config: VertexModelConfig) -> ModelUploadRequest:
    """The ``Model.upload`` request for ``config`` (pure: nothing is sent)."""
    return ModelUploadRequest(
        display_name=config.display_name,
        artifact_uri=config.artifact_uri.rstrip("/"),
        serving_container_image_uri=config.image,
        serving_container_args=serving_container_args(config.model_name, config.precision),
        serving_container_predict_route=f"/v1/models/{config.model_name}:predict",
        serving_container_health_route=HEALTH_ROUTE,
        serving_container_ports=[SERVING_PORT],
        version_description=f"textclf registry version {config.model_version}" if config.model_version else None,
        labels=dict(config.labels) or None,
    )


def build_endpoint_deploy_request(config: VertexModelConfig) -> EndpointDeployRequest:
    """The ``Model.deploy`` request for ``config`` (pure: nothing is sent)."""
    return EndpointDeployRequest(
        deployed_model_display_name=config.display_name,
        machine_type=config.machine_type,
        min_replica_count=config.min_replica_count,
        max_replica_count=config.max_replica_count,
        traffic_percentage=config.traffic_percentage,
        service_account=config.service_account,
    )


def deploy_vertex_endpoint(config: VertexModelConfig, credentials: Any = None) -> dict[str, Any]:
    """Upload the model (bundle + serving image) and deploy it to an endpoint.

    If the deployment fails, the model (and the endpoint) this call created are deleted again, so a failure
    leaves nothing behind.

    Args:
        config: The model, image, endpoint and machines.
        credentials: ``google.auth`` credentials; None: Application Default Credentials.

    Returns:
        ``{"model": <model resource name>, "endpoint": <endpoint resource name>}``.

    Raises:
        TextclfError: Vertex AI refused a request or could not be reached.
    """
    from google.api_core import exceptions as google_exceptions
    from google.cloud import aiplatform

    upload = build_model_upload_request(config)
    deploy = build_endpoint_deploy_request(config)
    where = dict(project=config.project, location=config.location, credentials=credentials)
    try:
        model = aiplatform.Model.upload(**upload.kwargs(), **where)
    except (google_exceptions.GoogleAPIError, RuntimeError) as exc:
        raise TextclfError(f"Vertex AI refused the model upload in {config.project}/{config.location}: {exc}") from exc
    created_endpoint = None
    try:
        if config.endpoint:
            endpoint = aiplatform.Endpoint(config.endpoint, **where)
        else:
            endpoint = created_endpoint = aiplatform.Endpoint.create(display_name=config.endpoint_display_name, **where)
        endpoint = model.deploy(endpoint=endpoint, **deploy.kwargs())
    except (google_exceptions.GoogleAPIError, RuntimeError, ValueError) as exc:
        for resource in (created_endpoint, model):  # undo what this call created
            if resource is not None:
                with contextlib.suppress(google_exceptions.GoogleAPIError, RuntimeError):
                    resource.delete()
        raise TextclfError(f"Vertex AI could not deploy {model.resource_name}: {exc} (the model upload"
                           f"{' and the new endpoint were' if created_endpoint else ' was'} deleted again)") from exc
    return {"model": model.resource_name, "endpoint": endpoint.resource_name}
