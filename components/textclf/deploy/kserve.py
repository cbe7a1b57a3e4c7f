"""KServe InferenceService manifests for the textclf ONNX predictor, rendered from the committed overlay.

The manifest is ``manifests/overlays/cpu/inferenceservice.yaml`` (the ``textclf-onnx`` ServingRuntime in
``manifests/base`` serves it) with a few fields patched: ``spec.predictor.model.storageUri``, the name and
namespace, an optional ``canaryTrafficPercent``, the precision (appended to the runtime's container args, which
KServe concatenates with the InferenceService's) and optionally the image. Nothing else is duplicated here, so the
manifest a deploy writes and the one ``kubectl apply -k manifests/overlays/cpu`` applies stay the same object.

The ServingRuntime must already be in the namespace (``kubectl -n <ns> apply -k manifests/base``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from textclf.errors import ConfigError, RegistryError
from textclf.provenance import atomic_file
from textclf.serving.config import ServingConfig

#: Directory holding ``base/`` and ``overlays/``; default: ``manifests/`` beside the ``components/`` folder.
MANIFESTS_DIR_ENV = "TEXTCLF_MANIFESTS_DIR"
INFERENCE_SERVICE_FILE = "overlays/cpu/inferenceservice.yaml"
SERVING_RUNTIME = "textclf-onnx"
#: Where KServe's storage initializer puts ``storageUri`` (the ServingRuntime's ``--model-dir``).
KSERVE_MODEL_DIR = "/mnt/models"
DEFAULT_NAME = "textclf"
DEFAULT_PRECISION = ServingConfig.__dataclass_fields__["precision"].default.value
#: Annotation recording which registry version the manifest serves.
MODEL_VERSION_ANNOTATION = "textclf-pipelines/model-version"
#: URI schemes KServe's storage initializer can download (``file://`` and bare paths are not among them).
KSERVE_STORAGE_SCHEMES = ("s3", "gs", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf")
#: InferenceService names: DNS-1035 labels (KServe derives Service and Route names from them).
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
#: Namespaces: DNS-1123 labels.
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def manifests_dir() -> Path:
    """The directory with the committed manifests (``$TEXTCLF_MANIFESTS_DIR``, else the repository's ``manifests/``).

    Raises:
        ConfigError: The overlay file is not there (an installed package without the repository checkout).
    """
    configured = os.environ.get(MANIFESTS_DIR_ENV, "").strip()
    root = Path(configured) if configured else Path(__file__).resolve().parents[3] / "manifests"
    if not (root / INFERENCE_SERVICE_FILE).is_file():
        raise ConfigError(
            f"{root / INFERENCE_SERVICE_FILE} not found: run from a checkout of textclf-pipelines or set "
            f"{MANIFESTS_DIR_ENV} to its manifests/ directory"
        )
    return root


def load_base_inference_service() -> dict[str, Any]:
    """The committed CPU overlay's InferenceService, as ``kubectl apply -k manifests/overlays/cpu`` creates it.

    Returns:
        A fresh dict (safe to modify).
    """
    return yaml.safe_load((manifests_dir() / INFERENCE_SERVICE_FILE).read_text(encoding="utf-8"))


def check_storage_uri(storage_uri: str) -> str:
    """Refuse a URI KServe cannot download.

    Args:
        storage_uri: The export bundle's location.

    Returns:
        ``storage_uri`` unchanged.

    Raises:
        ConfigError: Empty, a local path or ``file://`` URI, or an unknown scheme.
    """
    scheme, sep, rest = storage_uri.partition("://")
    if not sep or not rest.strip("/"):
        raise ConfigError(
            f"storageUri must be a URI such as s3://bucket/prefix/ or gs://bucket/prefix/, got {storage_uri!r}"
        )
    if scheme not in KSERVE_STORAGE_SCHEMES:
        hint = " (a local registry: KServe pods cannot read this machine's files)" if scheme == "file" else ""
        raise ConfigError(
            f"KServe cannot download {storage_uri!r}{hint}: use one of "
            f"{', '.join(s + '://' for s in KSERVE_STORAGE_SCHEMES)}"
        )
    return storage_uri


def render_inference_service(
    storage_uri: str,
    *,
    name: str = DEFAULT_NAME,
    namespace: str | None = None,
    canary_traffic_percent: int | None = None,
    precision: str = DEFAULT_PRECISION,
    model_version: str | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """The InferenceService serving the export bundle at ``storage_uri`` through the ``textclf-onnx`` runtime.

    Args:
        storage_uri: The export bundle (``model.onnx``, ``model.int8.onnx``, ``tokenizer.json``, ``labels.json``,
            ``export_metadata.json``), e.g. a registry version's ``onnx_model`` folder.
        name: InferenceService name (also the model name in ``/v1/models/{name}:predict``).
        namespace: Namespace to put in ``metadata``; None leaves it to ``kubectl -n``.
        canary_traffic_percent: Share of the traffic (0-100) for this revision while KServe keeps the previous one
            (Serverless mode); None routes everything to it.
        precision: ``int8`` or ``fp32``: which ONNX file the predictor runs.
        model_version: Registry version recorded in the ``textclf-pipelines/model-version`` annotation.
        image: Serving image overriding the runtime's (None: the ServingRuntime's image).

    Returns:
        The manifest as a dict (``write_manifest`` writes it as YAML).

    Raises:
        ConfigError: An invalid name, namespace, URI, traffic share or precision.
    """
    from textclf.serving.config import Precision, ServingConfig

    check_storage_uri(storage_uri)
    if not NAME_PATTERN.match(name or ""):
        raise ConfigError(
            f"InferenceService name must be a DNS-1035 label (lowercase letters, digits, '-', starting with a "
            f"letter, at most 63 characters), got {name!r}"
        )
    if namespace is not None and not NAMESPACE_PATTERN.match(namespace):
        raise ConfigError(f"namespace must be a DNS-1123 label, got {namespace!r}")
    if canary_traffic_percent is not None and (
        isinstance(canary_traffic_percent, bool) or not isinstance(canary_traffic_percent, int)
        or not 0 <= canary_traffic_percent <= 100
    ):
        raise ConfigError(f"canary_traffic_percent must be an integer in [0, 100], got {canary_traffic_percent!r}")
    if precision not in {p.value for p in Precision}:
        raise ConfigError(f"precision must be one of {[p.value for p in Precision]}, got {precision!r}")
    if image is not None and (not image or any(c.isspace() for c in image)):
        raise ConfigError(f"image must be an image reference such as registry/name:tag, got {image!r}")

    manifest = load_base_inference_service()
    metadata = {"name": name, **({"namespace": namespace} if namespace else {}),
                **{key: value for key, value in manifest["metadata"].items() if key not in ("name", "namespace")}}
    if model_version:
        metadata.setdefault("annotations", {})[MODEL_VERSION_ANNOTATION] = model_version
    manifest["metadata"] = metadata
    predictor = manifest["spec"]["predictor"]
    model = predictor["model"]
    if model.get("runtime") != SERVING_RUNTIME:
        raise ConfigError(f"{INFERENCE_SERVICE_FILE} no longer uses the {SERVING_RUNTIME} runtime: update deploy")
    model["storageUri"] = storage_uri
    # Appended to the runtime's args (KServe concatenates them): this --precision comes last and wins.
    model["args"] = ServingConfig(model_dir=KSERVE_MODEL_DIR, precision=precision).to_args(fields=("precision",))
    if image:
        model["image"] = image
    if canary_traffic_percent is None:
        predictor.pop("canaryTrafficPercent", None)
    else:
        predictor["canaryTrafficPercent"] = canary_traffic_percent
    return manifest


def production_artifact_uri(registry_uri: str, storage_config: Any = None) -> tuple[str, str]:
    """The registry's production version and the URI of its ``onnx_model`` folder (the export bundle).

    Args:
        registry_uri: Registry root.
        storage_config: Backend settings for the registry; default from the environment.

    Returns:
        (version, URI).

    Raises:
        RegistryError: The registry has no production version.
    """
    from textclf.registry import ModelRegistry

    registry = ModelRegistry(registry_uri, storage_config=storage_config)
    version = registry.production_version()
    if version is None:
        raise RegistryError(
            f"registry {registry_uri} has no production version: promote one first "
            f"(textclf registry --registry-uri {registry_uri} promote vX.Y.Z)"
        )
    return version, registry.artifact_uri(version, "onnx_model")


def render_production_inference_service(registry_uri: str, *, storage_config: Any = None,
                                        **options: Any) -> dict[str, Any]:
    """The InferenceService for the registry's production version (its ``onnx_model`` folder).

    Args:
        registry_uri: Registry root (``s3://`` or ``gs://``; a local registry is refused, KServe cannot read it).
        storage_config: Backend settings for the registry; default from the environment.
        **options: ``name``, ``namespace``, ``canary_traffic_percent``, ``precision``, ``image`` (see
            :func:`render_inference_service`).

    Returns:
        The manifest, annotated with the production version.

    Raises:
        RegistryError: The registry has no production version.
        ConfigError: See :func:`render_inference_service`.
    """
    version, uri = production_artifact_uri(registry_uri, storage_config)
    return render_inference_service(uri.rstrip("/") + "/", model_version=version, **options)


def manifest_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as YAML text (keys in the committed file's order)."""
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def write_manifest(manifest: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the manifest as YAML, atomically (a failure leaves ``path`` as it was).

    Args:
        manifest: From :func:`render_inference_service`.
        path: Destination file; parent directories are created.

    Returns:
        ``path``.
    """
    with atomic_file(path) as handle:
        handle.write(manifest_yaml(manifest).encode("utf-8"))
    return Path(path)
