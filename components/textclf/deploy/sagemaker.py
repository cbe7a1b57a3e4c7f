"""Amazon SageMaker real-time endpoints: package the export bundle as ``model.tar.gz`` (files at the archive root,
which SageMaker unpacks into ``/opt/ml/model``), upload it through :mod:`textclf.storage`, then create the model,
the endpoint configuration and the endpoint with boto3's ``sagemaker`` client.

Why boto3 and not the SageMaker Python SDK: sagemaker 3.x removed ``HuggingFaceModel``; its ``ModelBuilder`` is
built around the SDK's own inference containers and schema builders, needs the SDK's session/config machinery,
and wraps the three calls this module makes. boto3's client is a stable, explicit API (each request below is the
documented ``CreateModel`` / ``CreateEndpointConfig`` / ``CreateEndpoint`` body), honours ``endpoint_url`` (so it
runs against moto's SageMaker API in the tests) and needs nothing but boto3.

Resource names are content-addressed (``<endpoint>-<hash>``): deploying the same archive, image and settings again
re-uses the model and endpoint configuration, and an existing endpoint is switched to the new configuration with
``UpdateEndpoint`` (SageMaker's blue/green update). If a step fails, what this call created is deleted again.

Container contract: SageMaker starts the image with the argument ``serve`` and sends ``GET /ping`` and
``POST /invocations`` to port 8080; the model is in ``/opt/ml/model``. The ``TEXTCLF_SERVING_ARGS`` variable set
on the container holds the ``python -m textclf.serving`` arguments for that layout: on ``serve`` the server reads
them, and it answers ``/ping`` (readiness) and ``/invocations`` (V1 predict) as aliases of its KServe routes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shlex
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from textclf.errors import ConfigError, TextclfError
from textclf.provenance import atomic_file, sha256_file
from textclf.serving.config import SAGEMAKER_ARGS_ENV, ServingConfig

SAGEMAKER_ENDPOINT_URL_ENV = "SAGEMAKER_ENDPOINT_URL"
MODEL_ARCHIVE = "model.tar.gz"
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
SAGEMAKER_PORT = 8080
#: Container variable holding the serving arguments for SageMaker's layout (the server reads it on ``serve``).
SERVING_ARGS_ENV = SAGEMAKER_ARGS_ENV
MODEL_VERSION_TAG = "textclf-pipelines/model-version"
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
ROLE_ARN_PATTERN = re.compile(
    r"^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::[0-9]{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}$"
)
#: ``<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>(:<tag>|@sha256:<digest>)``: SageMaker pulls from ECR.
ECR_IMAGE_PATTERN = re.compile(
    r"^[0-9]{12}\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/[a-z0-9][a-z0-9._/-]*"
    r"(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$"
)
INSTANCE_TYPE_PATTERN = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
#: SageMaker resource names (at most 63 characters; the endpoint name leaves room for ``-<12 hex>``).
ENDPOINT_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,49}$")
#: Every IAM action :func:`deploy_sagemaker` needs (the tests run with exactly these, under moto's IAM checks).
REQUIRED_IAM_ACTIONS = (
    "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket",
    "sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
    "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig",
    "sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpoint",
    "sagemaker:AddTags", "iam:PassRole",
)


@dataclass(frozen=True)
class SageMakerConfig:
    """A SageMaker real-time endpoint serving one export bundle.

    Attributes:
        role_arn: Execution role SageMaker assumes to pull the image and read the archive
            (``arn:aws:iam::<account>:role/<name>``).
        image: The textclf serving image in ECR, in the endpoint's region.
        s3_prefix: ``s3://bucket/prefix`` receiving ``<sha256[:16]>/model.tar.gz``.
        endpoint_name: Endpoint name (at most 50 characters); models and configs are named ``<endpoint>-<hash>``.
        instance_type: Instance type of the production variant.
        initial_instance_count: Instances of the production variant.
        variant_name: Production variant name.
        region: AWS region; None: the image's region.
        endpoint_url: SageMaker API endpoint override (``$SAGEMAKER_ENDPOINT_URL``; moto in the tests).
        model_name: KServe model name the server is started with.
        precision: ``int8`` or ``fp32``.
        model_version: Registry version, recorded as a tag.
        environment: Extra container environment variables.
        tags: Tags on the model, endpoint configuration and endpoint.
        wait: Wait until the endpoint is ``InService``.
    """

    role_arn: str
    image: str
    s3_prefix: str
    endpoint_name: str = "textclf"
    instance_type: str = DEFAULT_INSTANCE_TYPE
    initial_instance_count: int = 1
    variant_name: str = "AllTraffic"
    region: str | None = None
    endpoint_url: str | None = None
    model_name: str = "textclf"
    precision: str = "int8"
    model_version: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    wait: bool = False

    def __post_init__(self) -> None:
        from textclf.serving.config import Precision

        if not ROLE_ARN_PATTERN.match(self.role_arn or ""):
            raise ConfigError(f"role_arn must be an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>), got "
                              f"{self.role_arn!r}")
        image = ECR_IMAGE_PATTERN.match(self.image or "")
        if not image:
            raise ConfigError(f"SageMaker pulls serving images from ECR: push the serving image to "
                              f"<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>, got {self.image!r}")
        if self.region and image.group("region") != self.region:
            raise ConfigError(f"the image is in {image.group('region')} but the endpoint in {self.region}: SageMaker "
                              f"needs the ECR image in the endpoint's region")
        check_s3_prefix(self.s3_prefix)
        if not ENDPOINT_NAME_PATTERN.match(self.endpoint_name or ""):
            raise ConfigError(f"endpoint_name must be 1-50 letters, digits or '-' (not at either end), got "
                              f"{self.endpoint_name!r}")
        if not INSTANCE_TYPE_PATTERN.match(self.instance_type or ""):
            raise ConfigError(f"instance_type must be a SageMaker instance type such as ml.m5.large, got "
                              f"{self.instance_type!r}")
        count = self.initial_instance_count
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"initial_instance_count must be an integer >= 1, got {count!r}")
        if self.precision not in {p.value for p in Precision}:
            raise ConfigError(f"precision must be one of {[p.value for p in Precision]}, got {self.precision!r}")
        if not re.match(r"^[a-zA-Z0-9][-a-zA-Z0-9_.]{0,62}$", self.model_name or ""):
            raise ConfigError(f"model_name must be letters, digits, '-', '_' or '.', got {self.model_name!r}")
        if self.endpoint_url is not None and not re.match(r"^https?://[^/\s]+", self.endpoint_url):
            raise ConfigError(f"endpoint_url must look like http(s)://host[:port], got {self.endpoint_url!r}")

    @property
    def effective_region(self) -> str:
        """``region``, else the image's region."""
        return self.region or ECR_IMAGE_PATTERN.match(self.image).group("region")


def check_s3_prefix(uri: str) -> str:
    """Refuse a destination that is not ``s3://bucket[/prefix]``.

    Raises:
        ConfigError: Another scheme, or no bucket.
    """
    if not re.match(r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?$", uri or ""):
        raise ConfigError(f"SageMaker reads models from S3: the destination must be s3://bucket[/prefix], got {uri!r}")
    return uri


# --- the model archive ------------------------------------------------------------------------------------------


def bundle_files(bundle_dir: str | os.PathLike[str], precision: str = "int8") -> list[str]:
    """The files of an export bundle (relative POSIX paths, sorted), after checking it is complete.

    Args:
        bundle_dir: The export stage's output (or a registry version's ``onnx_model`` folder).
        precision: The ONNX file for this precision must be there too.

    Raises:
        ConfigError: Not a directory, or a file the server needs is missing.
    """
    from textclf.serving.config import Precision
    from textclf.serving.contract import LABELS_FILE, METADATA_FILE, TOKENIZER_FILE

    root = Path(bundle_dir)
    if not root.is_dir():
        raise ConfigError(f"export bundle {root} is not a directory")
    files = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    needed = {Precision.FP32.onnx_file, Precision(precision).onnx_file, TOKENIZER_FILE, LABELS_FILE, METADATA_FILE}
    missing = sorted(needed - set(files))
    if missing:
        raise ConfigError(f"{root} is not a complete export bundle: missing {', '.join(missing)}")
    return files


def package_model_tar(onnx_bundle_dir: str | os.PathLike[str], out_path: str | os.PathLike[str],
                      precision: str = "int8") -> Path:
    """Write the bundle as a gzipped tar with its files at the archive root (SageMaker's ``model.tar.gz`` layout).

    The archive is byte-identical for identical files: sorted names, mtime 0, owner 0:0, mode 0644, and a gzip
    header without file name or time. It is written atomically.

    Args:
        onnx_bundle_dir: The export bundle (checked with :func:`bundle_files`).
        out_path: The archive to create.
        precision: See :func:`bundle_files`.

    Returns:
        ``out_path``.

    Raises:
        ConfigError: An incomplete bundle, or ``out_path`` inside it.
    """
    root = Path(onnx_bundle_dir)
    names = bundle_files(root, precision)
    out = Path(out_path)
    if out.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"{out} is inside the bundle {root}: write the archive elsewhere")
    with atomic_file(out) as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
            with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in names:
                    path = root / name
                    info = tarfile.TarInfo(name)
                    info.size = path.stat().st_size
                    info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
    return out


def upload_model_archive(archive: str | os.PathLike[str], s3_prefix: str,
                         storage_config: Any = None) -> tuple[str, bool]:
    """Upload the archive to ``<s3_prefix>/<sha256[:16]>/model.tar.gz`` unless it is already there.

    Args:
        archive: From :func:`package_model_tar`.
        s3_prefix: ``s3://bucket/prefix``.
        storage_config: An :class:`textclf.storage.S3Config`; default from the ``AWS_*`` / ``S3_*`` environment.

    Returns:
        (the object's URI, whether this call uploaded it).

    Raises:
        ConfigError: Not an s3:// prefix.
        StorageError: The upload failed (bucket missing, credentials refused, ...).
    """
    from textclf.storage import Store

    check_s3_prefix(s3_prefix)
    store = Store(s3_prefix, config=storage_config)
    relative = f"{sha256_file(archive)[:16]}/{MODEL_ARCHIVE}"
    if store.exists(relative):
        return str(store.uri(relative)), False
    store.upload_file(archive, relative)
    return str(store.uri(relative)), True


# --- the SageMaker requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SageMakerRequests:
    """The bodies of ``CreateModel``, ``CreateEndpointConfig`` and ``CreateEndpoint`` (boto3 keyword arguments)."""

    create_model: dict[str, Any]
    create_endpoint_config: dict[str, Any]
    create_endpoint: dict[str, Any]

    @property
    def model_name(self) -> str:
        return self.create_model["ModelName"]

    @property
    def endpoint_config_name(self) -> str:
        return self.create_endpoint_config["EndpointConfigName"]

    @property
    def endpoint_name(self) -> str:
        return self.create_endpoint["EndpointName"]


def serving_args(config: SageMakerConfig) -> str:
    """``python -m textclf.serving`` arguments for SageMaker's layout (model in /opt/ml/model, HTTP on 8080, no
    gRPC: SageMaker routes HTTP only), from :meth:`textclf.serving.config.ServingConfig.to_args`, shell-quoted as
    the server splits them."""
    server = ServingConfig(model_name=config.model_name, model_dir=SAGEMAKER_MODEL_DIR, precision=config.precision,
                           http_port=SAGEMAKER_PORT, enable_grpc=False)
    return shlex.join(server.to_args())


def _short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def build_sagemaker_requests(config: SageMakerConfig, model_data_url: str) -> SageMakerRequests:
    """The three request bodies for ``config`` and an uploaded archive (pure: nothing is sent).

    The model and endpoint-configuration names hash everything that defines them, so the same deployment gets the
    same names and a changed one new names.
    """
    environment = {SERVING_ARGS_ENV: serving_args(config), **dict(config.environment)}
    tags = dict(config.tags)
    if config.model_version:
        tags[MODEL_VERSION_TAG] = config.model_version
    tag_list = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]
    model_name = f"{config.endpoint_name}-{_short_hash(config.image, model_data_url, config.role_arn, environment)}"
    variant = {
        "VariantName": config.variant_name,
        "ModelName": model_name,
        "InstanceType": config.instance_type,
        "InitialInstanceCount": config.initial_instance_count,
        "InitialVariantWeight": 1.0,
    }
    config_name = f"{config.endpoint_name}-{_short_hash(variant)}"
    with_tags = {"Tags": tag_list} if tag_list else {}
    return SageMakerRequests(
        create_model={
            "ModelName": model_name,
            "ExecutionRoleArn": config.role_arn,
            "PrimaryContainer": {"Image": config.image, "Mode": "SingleModel", "ModelDataUrl": model_data_url,
                                 "Environment": environment},
            **with_tags,
        },
        create_endpoint_config={"EndpointConfigName": config_name, "ProductionVariants": [variant], **with_tags},
        create_endpoint={"EndpointName": config.endpoint_name, "EndpointConfigName": config_name, **with_tags},
    )


@dataclass(frozen=True)
class SageMakerDeployment:
    """What :func:`deploy_sagemaker` did.

    Attributes:
        endpoint_name: The endpoint.
        endpoint_config_name: Its (new) configuration.
        model_name: The model the configuration serves.
        model_data_url: The uploaded archive.
        action: ``created`` (new endpoint) or ``updated`` (existing endpoint switched to the new configuration).
        endpoint_status: Status reported after the call (``Creating``/``Updating``, or ``InService`` with ``wait``).
    """

    endpoint_name: str
    endpoint_config_name: str
    model_name: str
    model_data_url: str
    action: str
    endpoint_status: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_sagemaker_client(config: SageMakerConfig) -> Any:
    """boto3's ``sagemaker`` client for the config's region and endpoint URL (credentials: boto3's default chain).

    Raises:
        ConfigError: boto3 cannot build the client (no region, malformed endpoint URL).
    """
    import boto3
    from botocore.exceptions import BotoCoreError

    endpoint_url = config.endpoint_url or os.environ.get(SAGEMAKER_ENDPOINT_URL_ENV, "").strip() or None
    try:
        return boto3.client("sagemaker", region_name=config.effective_region, endpoint_url=endpoint_url)
    except (BotoCoreError, ValueError) as exc:
        raise ConfigError(f"cannot create the SageMaker client: {exc}") from exc


def _not_found(exc: Any) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in ("ValidationException", "ResourceNotFound") and "Could not find" in error.get(
        "Message", "")


def _exists(describe: Any, **name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        describe(**name)
        return True
    except ClientError as exc:
        if _not_found(exc):
            return False
        raise


def deploy_sagemaker(config: SageMakerConfig, bundle_dir: str | os.PathLike[str], *, storage_config: Any = None,
                     client: Any = None) -> SageMakerDeployment:
    """Package, upload and deploy an export bundle to a SageMaker real-time endpoint.

    Order: check the config and the bundle, build the archive, upload it (skipped when the same archive is there),
    create the model and the endpoint configuration (re-used when they exist), then create the endpoint or update
    it to the new configuration. If a SageMaker call fails, the model, configuration and archive this call created
    are deleted again.

    Args:
        config: Role, image, destination and endpoint settings.
        bundle_dir: The export bundle.
        storage_config: S3 settings for the upload; default from the environment.
        client: A boto3 ``sagemaker`` client; default: :func:`make_sagemaker_client`.

    Returns:
        What was created or updated.

    Raises:
        ConfigError: An incomplete bundle or an invalid setting (nothing was uploaded or created).
        StorageError: The archive upload failed (nothing was created).
        TextclfError: SageMaker refused a request or could not be reached.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bundle_files(bundle_dir, config.precision)
    client = client or make_sagemaker_client(config)
    with tempfile.TemporaryDirectory(prefix="textclf-sagemaker-") as tmp:
        archive = package_model_tar(bundle_dir, Path(tmp) / MODEL_ARCHIVE, config.precision)
        model_data_url, uploaded = upload_model_archive(archive, config.s3_prefix, storage_config)
    requests = build_sagemaker_requests(config, model_data_url)
    created: list[tuple[str, str]] = []
    try:
        if not _exists(client.describe_model, ModelName=requests.model_name):
            client.create_model(**requests.create_model)
            created.append(("model", requests.model_name))
        if not _exists(client.describe_endpoint_config, EndpointConfigName=requests.endpoint_config_name):
            client.create_endpoint_config(**requests.create_endpoint_config)
            created.append(("endpoint_config", requests.endpoint_config_name))
        if _exists(client.describe_endpoint, EndpointName=requests.endpoint_name):
            client.update_endpoint(EndpointName=requests.endpoint_name,
                                   EndpointConfigName=requests.endpoint_config_name)
            action = "updated"
        else:
            client.create_endpoint(**requests.create_endpoint)
            action = "created"
    except (ClientError, BotoCoreError) as exc:
        _roll_back(client, created, model_data_url if uploaded else None, storage_config)
        undone = ", ".join(f"{kind} {name}" for kind, name in created) or "nothing"
        raise TextclfError(f"SageMaker refused to deploy endpoint {requests.endpoint_name} in "
                           f"{config.effective_region}: {exc} (deleted again: {undone}"
                           f"{', the uploaded archive' if uploaded else ''})") from exc
    try:
        if config.wait:
            client.get_waiter("endpoint_in_service").wait(EndpointName=requests.endpoint_name)
        status = client.describe_endpoint(EndpointName=requests.endpoint_name)["EndpointStatus"]
    except (ClientError, BotoCoreError) as exc:
        raise TextclfError(f"endpoint {requests.endpoint_name} was {action} but did not become InService: {exc} "
                           f"(see aws sagemaker describe-endpoint --endpoint-name {requests.endpoint_name})") from exc
    return SageMakerDeployment(endpoint_name=requests.endpoint_name,
                               endpoint_config_name=requests.endpoint_config_name, model_name=requests.model_name,
                               model_data_url=model_data_url, action=action, endpoint_status=status)


def _roll_back(client: Any, created: list[tuple[str, str]], archive_uri: str | None, storage_config: Any) -> None:
    """Delete what a failed deploy created, newest first; failures here are ignored (the error being raised
    matters more)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from textclf.errors import StorageError
    from textclf.storage import Store

    for kind, name in reversed(created):
        try:
            if kind == "endpoint_config":
                client.delete_endpoint_config(EndpointConfigName=name)
            else:
                client.delete_model(ModelName=name)
        except (ClientError, BotoCoreError):
            pass
    if archive_uri:
        try:
            Store(archive_uri.rsplit("/", 1)[0], config=storage_config).delete(MODEL_ARCHIVE)
        except StorageError:
            pass
