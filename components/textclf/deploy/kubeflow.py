"""Submit a compiled pipeline to Kubeflow Pipelines: upload it (a new pipeline, or a new version of an existing
one) and start a run, with ``kfp.Client`` against the KFP v2beta1 REST API.

The compiled YAML is read and the run's arguments are checked against its root ``inputDefinitions`` (names,
required parameters, types) before the client is even created, so a bad request never reaches the cluster.
The helpers for reading a compiled pipeline are shared with :mod:`textclf.deploy.vertex`, which submits the same
YAML to Vertex AI Pipelines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from textclf.errors import ConfigError, TextclfError

KFP_HOST_ENV = "KFP_HOST"
KFP_TOKEN_ENV = "KFP_TOKEN"
DEFAULT_EXPERIMENT = "textclf"
#: Python types accepted for each KFP parameter type (an int is a valid NUMBER_DOUBLE; a bool is never a number).
PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "LIST": (list,),
    "STRUCT": (dict,),
}
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


# --- compiled pipelines -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline YAML and what a submission needs from it.

    Attributes:
        path: The YAML file.
        name: ``pipelineInfo.name``.
        parameters: The root ``inputDefinitions.parameters``: name -> ``{"parameterType", "isOptional",
            "defaultValue"}``.
        sha256: Hash of the file's bytes (names uploaded pipeline versions, so a re-upload is recognised).
    """

    path: Path
    name: str
    parameters: dict[str, dict[str, Any]]
    sha256: str

    def required(self) -> list[str]:
        """Parameters without a default that the run must set."""
        return sorted(name for name, spec in self.parameters.items()
                      if not spec.get("isOptional") and "defaultValue" not in spec)


def require_package(path: str | os.PathLike[str] | None) -> PipelinePackage:
    """The compiled pipeline at ``path``; the committed ones are ``textclf.pipelines.compile.default_pipeline_package``.

    Raises:
        ConfigError: No path, or not a compiled pipeline.
    """
    if path is None:
        raise ConfigError("no pipeline package: pass the compiled pipeline YAML to submit (`textclf compile` writes "
                          "the committed ones under pipelines/textclf/pipelines/)")
    return load_pipeline_package(path)


def load_pipeline_package(path: str | os.PathLike[str]) -> PipelinePackage:
    """Read a compiled KFP v2 pipeline (YAML, first document: the PipelineSpec).

    Raises:
        ConfigError: The file is missing, not YAML, or not a compiled pipeline.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline package {path} not found (compile it with `textclf compile`)")
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"pipeline package {path} must be a compiled pipeline .yaml file")
    data = path.read_bytes()
    try:
        spec = next(iter(yaml.safe_load_all(data)), None)
    except yaml.YAMLError as exc:
        raise ConfigError(f"pipeline package {path} is not valid YAML: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("root"), dict) or "pipelineInfo" not in spec:
        raise ConfigError(f"{path} is not a compiled KFP pipeline (no root / pipelineInfo)")
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return PipelinePackage(path=path, name=str(spec["pipelineInfo"]["name"]), parameters=dict(parameters),
                           sha256=hashlib.sha256(data).hexdigest())


def _type_ok(value: Any, parameter_type: str) -> bool:
    allowed = PARAMETER_TYPES.get(parameter_type)
    if allowed is None:
        return True  # a type this module does not know: let the backend judge
    if isinstance(value, bool) and bool not in allowed:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, allowed)


def check_arguments(arguments: Any, package: PipelinePackage) -> dict[str, Any]:
    """Check run arguments against the pipeline's parameters, before anything is sent.

    Args:
        arguments: Parameter name -> value.
        package: The compiled pipeline.

    Returns:
        A plain dict copy of ``arguments``.

    Raises:
        ConfigError: Not a mapping, an unknown name, a required parameter missing, or a value of the wrong type.
    """
    if not isinstance(arguments, Mapping):
        raise ConfigError(f"pipeline arguments must be a mapping of parameter name to value, got "
                          f"{type(arguments).__name__}")
    unknown = sorted(str(name) for name in arguments if name not in package.parameters)
    if unknown:
        raise ConfigError(f"{package.path.name} has no parameter {', '.join(unknown)}: it takes "
                          f"{', '.join(sorted(package.parameters))}")
    missing = [name for name in package.required() if name not in arguments]
    if missing:
        raise ConfigError(f"{package.path.name} needs a value for {', '.join(missing)}")
    for name, value in arguments.items():
        parameter_type = package.parameters[name].get("parameterType", "")
        if not _type_ok(value, parameter_type):
            raise ConfigError(f"parameter {name} is {parameter_type}, got {value!r} ({type(value).__name__})")
    return dict(arguments)


def coerce_arguments(raw: Mapping[str, str], package: PipelinePackage) -> dict[str, Any]:
    """Turn ``NAME=VALUE`` strings (from a command line) into values of each parameter's declared type.

    ``STRING`` values are kept as they are; numbers, booleans (``true``/``false``), lists and structs are parsed
    as JSON. Unknown names are kept (as strings) for :func:`check_arguments` to report.

    Raises:
        ConfigError: A value does not parse as its parameter's type.
    """
    values: dict[str, Any] = {}
    for name, text in raw.items():
        parameter_type = package.parameters.get(name, {}).get("parameterType", "STRING")
        if parameter_type == "STRING":
            values[name] = text
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"parameter {name} is {parameter_type}: cannot parse {text!r}") from exc
        if parameter_type == "NUMBER_DOUBLE" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[name] = value
    return values


# --- submission -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeflowConfig:
    """Where and what to submit.

    Attributes:
        host: KFP API endpoint, ``http(s)://host[:port]`` (e.g. ``http://localhost:8080`` through
            ``kubectl port-forward svc/ml-pipeline-ui``, or the Kubeflow gateway ``https://kubeflow.example.com/
            pipeline``); :meth:`from_env` reads ``$KFP_HOST``.
        token: Bearer token sent as ``Authorization: Bearer ...`` (``$KFP_TOKEN``); None: no token (a
            port-forward, or kfp's own defaults).
        namespace: Kubeflow profile namespace (multi-user deployments); None for single-user.
        pipeline_package: Compiled pipeline YAML (required to submit).
        pipeline_name: Pipeline display name in KFP; empty: the package's ``pipelineInfo.name``.
        experiment_name: Experiment the run is filed under (created if missing).
        run_name: Run display name; empty: ``<pipeline name> <UTC time>``.
        arguments: Pipeline parameters (checked against the package's inputDefinitions).
        pipeline_root: Artifact root for this run (e.g. ``minio://mlpipeline/v2/artifacts``); None: the
            deployment's default.
        service_account: Kubernetes service account the run's pods use; None: the deployment's default.
        enable_caching: Override the compiled caching options; None keeps them.
        upload: Upload the package as a pipeline (or a new version of it) before starting the run.
    """

    host: str
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    pipeline_package: Path | None = None
    pipeline_name: str = ""
    experiment_name: str = DEFAULT_EXPERIMENT
    run_name: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    pipeline_root: str | None = None
    service_account: str | None = None
    enable_caching: bool | None = None
    upload: bool = True

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError(f"no Kubeflow Pipelines host: pass --host or set {KFP_HOST_ENV} "
                              f"(e.g. http://localhost:8080 through kubectl port-forward)")
        if not re.match(r"^https?://[^/\s]+", self.host):
            raise ConfigError(f"Kubeflow Pipelines host must look like http(s)://host[:port][/path], got "
                              f"{self.host!r}")
        if self.namespace is not None and not NAMESPACE_PATTERN.match(self.namespace):
            raise ConfigError(f"namespace must be a DNS-1123 label, got {self.namespace!r}")
        if not isinstance(self.arguments, Mapping):
            raise ConfigError(f"pipeline arguments must be a mapping of parameter name to value, got "
                              f"{type(self.arguments).__name__}")
        if not self.experiment_name.strip():
            raise ConfigError("experiment_name must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **values: Any) -> KubeflowConfig:
        """A config whose empty ``host`` / ``token`` come from ``$KFP_HOST`` / ``$KFP_TOKEN``.

        Args:
            environ: Variables to read; default ``os.environ``.
            **values: Fields (see the class).
        """
        env = os.environ if environ is None else environ
        values["host"] = values.get("host") or env.get(KFP_HOST_ENV, "").strip()
        values["token"] = values.get("token") or env.get(KFP_TOKEN_ENV, "").strip() or None
        return cls(**values)

    def package(self) -> PipelinePackage:
        """The compiled pipeline this config submits."""
        return require_package(self.pipeline_package)


@dataclass(frozen=True)
class KubeflowRun:
    """What a submission created.

    Attributes:
        pipeline_id: The uploaded (or existing) pipeline; None when ``upload`` was off.
        pipeline_version_id: The uploaded (or re-used) version; None for a pipeline created by this call (its
            first version is made by the server) or when ``upload`` was off.
        experiment_id: The run's experiment.
        run_id: The run.
        run_url: The run's page in the KFP UI.
    """

    pipeline_id: str | None
    pipeline_version_id: str | None
    experiment_id: str
    run_id: str
    run_url: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def kfp_errors(host: str, action: str) -> Iterator[None]:
    """Turn the KFP client's HTTP and connection errors into :class:`TextclfError` naming the host and action."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        body = (exc.body or b"")
        body = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        raise TextclfError(f"Kubeflow Pipelines at {host} refused to {action}: HTTP {exc.status} {exc.reason}: "
                           f"{body.strip()[:500]}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TextclfError(f"could not reach Kubeflow Pipelines at {host} to {action}: {exc}") from exc
    except ValueError as exc:  # the client's own checks (e.g. two experiments of the same name)
        raise TextclfError(f"Kubeflow Pipelines at {host}: cannot {action}: {exc}") from exc


def _display_name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def upload_pipeline(client: Any, package: PipelinePackage, pipeline_name: str,
                    namespace: str | None) -> tuple[str, str | None]:
    """Upload ``package`` as pipeline ``pipeline_name``, or as a new version when the pipeline exists.

    Versions are named ``<pipeline name>-<sha256[:12]>`` of the package: a package already uploaded is found and
    re-used instead of uploaded twice.

    Returns:
        (pipeline id, version id or None for a new pipeline's first version).
    """
    found = client.list_pipelines(filter=_display_name_filter(pipeline_name), namespace=namespace, page_size=2)
    pipelines = found.pipelines or []
    if len(pipelines) > 1:
        raise TextclfError(f"several pipelines are named {pipeline_name!r}: pass a unique --pipeline-name")
    if not pipelines:
        pipeline = client.upload_pipeline(str(package.path), pipeline_name=pipeline_name, namespace=namespace,
                                          description=f"{package.name} (sha256 {package.sha256[:12]})")
        return pipeline.pipeline_id, None
    pipeline_id = pipelines[0].pipeline_id
    version_name = f"{pipeline_name}-{package.sha256[:12]}"
    versions = client.list_pipeline_versions(pipeline_id, filter=_display_name_filter(version_name), page_size=1)
    if versions.pipeline_versions:
        return pipeline_id, versions.pipeline_versions[0].pipeline_version_id
    version = client.upload_pipeline_version(str(package.path), pipeline_version_name=version_name,
                                             pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def make_client(config: KubeflowConfig) -> Any:
    """A ``kfp.Client`` for ``config.host`` with the bearer token (and profile namespace) of ``config``."""
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(host=config.host, existing_token=config.token or None,
                          namespace=config.namespace or "kubeflow")


def submit_kubeflow_run(config: KubeflowConfig) -> KubeflowRun:
    """Upload the compiled pipeline (unless ``config.upload`` is off) and start a run of it.

    The package and the arguments are checked before any request. The upload is idempotent (content-named
    versions), so submitting again after a failed run creation re-uses it rather than leaving duplicates.

    Args:
        config: Host, credentials, package, experiment and arguments.

    Returns:
        The ids of the pipeline, version, experiment and run, and the run's URL.

    Raises:
        ConfigError: A missing or invalid package, or arguments that do not match its parameters.
        TextclfError: The server refused a request or could not be reached.
    """
    package = config.package()
    arguments = check_arguments(config.arguments, package)
    pipeline_name = config.pipeline_name or package.name
    run_name = config.run_name or f"{pipeline_name} {time.strftime('%Y-%m-%d %H-%M-%S', time.gmtime())}"
    # kfp prints "... details: <link>" lines on stdout; keep stdout for the command's JSON.
    with contextlib.redirect_stdout(sys.stderr):
        with kfp_errors(config.host, "connect"):
            client = make_client(config)
        pipeline_id = version_id = None
        if config.upload:
            with kfp_errors(config.host, f"upload pipeline {pipeline_name!r}"):
                pipeline_id, version_id = upload_pipeline(client, package, pipeline_name, config.namespace)
        with kfp_errors(config.host, f"start a run of {package.path.name}"):
            result = client.create_run_from_pipeline_package(
                str(package.path), arguments=arguments, run_name=run_name,
                experiment_name=config.experiment_name, namespace=config.namespace,
                pipeline_root=config.pipeline_root, enable_caching=config.enable_caching,
                service_account=config.service_account,
            )
    run = result.run_info
    return KubeflowRun(pipeline_id=pipeline_id, pipeline_version_id=version_id, experiment_id=run.experiment_id,
                       run_id=run.run_id, run_url=f"{config.host.rstrip('/')}/#/runs/details/{run.run_id}")
