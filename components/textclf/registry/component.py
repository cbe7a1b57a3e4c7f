"""KFP components over :class:`textclf.registry.ModelRegistry`: register a model, and carry out the promotion
gate's decision (promote and render the InferenceService, or archive with the reason)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register_op(
    model: Input[Model],
    onnx_model: Input[Model],
    evaluation: Input[Artifact],
    registry_uri: str,
    model_card: Output[Markdown],
    version: str = "",
    notes: str = "",
) -> str:
    """Copy a trained, evaluated and exported model into the model registry as a new ``candidate`` version.

    Args:
        model: Output of the train component (``textclf_metadata.json`` gives the base model, data fingerprints,
            hyper-parameters and git commit).
        onnx_model: Output of the export component (the bundle a model server loads).
        evaluation: Output directory of the evaluate component (``metrics.json`` gives the metrics).
        registry_uri: Registry root: ``s3://bucket/prefix``, ``gs://bucket/prefix`` or a path / ``file://`` URI.
            S3 settings come from the ``AWS_*`` / ``S3_*`` environment variables (a Kubernetes Secret).
        version: ``vMAJOR.MINOR.PATCH``; empty registers the next patch version.
        notes: Free text stored with the version.
        model_card: Output: the version's model card as Markdown (the Kubeflow UI shows it); the registry keeps
            it and its HTML page beside the version (``textclf registry card VERSION``).

    Returns:
        The registered version. The component fails (and registers nothing) if the version string is not a
        semantic version or already exists, or if the three artifacts come from different runs.
    """
    from textclf.registry import ArtifactDirs, ModelRegistry

    dirs = ArtifactDirs(model=model.path, onnx_model=onnx_model.path, evaluation=evaluation.path)
    registry = ModelRegistry(registry_uri)
    registered = registry.register(dirs, version=version, notes=notes)
    with open(model_card.path, "w", encoding="utf-8") as card:
        card.write(registry.card(registered))
    return registered


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def promote_op(
    registry_uri: str,
    version: str,
    decision: Input[Artifact],
    manifest: Output[Artifact],
    inference_service_name: str = "textclf",
    canary_traffic_percent: int = -1,
) -> str:
    """Make ``version`` the production model and render the KServe InferenceService that serves it.

    Args:
        registry_uri: Registry root (path, ``s3://`` or ``gs://``).
        version: The registered candidate.
        decision: The gate component's output (``decision.json``); its reason is recorded in the registry history.
        manifest: Output: the InferenceService YAML with ``storageUri`` = the version's ``onnx_model`` folder
            (``kubectl apply -f`` it next to ``manifests/base``). For a local registry, which KServe cannot read,
            the file says so instead and the artifact metadata has ``rendered: false``.
        inference_service_name: ``metadata.name`` of the InferenceService.
        canary_traffic_percent: Share (0-100) of the traffic for the new revision; -1 sends it all traffic.

    Returns:
        The previous production version ("" if none).
    """
    from pathlib import Path

    from textclf.deploy.kserve import render_inference_service, write_manifest
    from textclf.gate import read_decision
    from textclf.registry import ModelRegistry
    from textclf.storage import is_remote

    reason = read_decision(decision.path)["reason"]
    registry = ModelRegistry(registry_uri)
    result = registry.promote(version, reason=f"promotion gate: {reason}")
    storage_uri = registry.artifact_uri(version, "onnx_model").rstrip("/") + "/"
    if is_remote(storage_uri):
        rendered = render_inference_service(
            storage_uri, name=inference_service_name, model_version=version,
            canary_traffic_percent=None if int(canary_traffic_percent) == -1 else int(canary_traffic_percent),
        )
        write_manifest(rendered, manifest.path)
    else:
        Path(manifest.path).write_text(
            f"# {version} is in production in the local registry {registry_uri}; KServe cannot download from local "
            "disk, so no InferenceService was rendered. Serve it locally with:\n"
            f"#   textclf serve --model-dir {storage_uri}\n", encoding="utf-8",
        )
    manifest.metadata.update({"version": version, "storageUri": storage_uri, "rendered": is_remote(storage_uri)})
    print(f"promoted {version} (previous: {result['previous']}): {reason}")
    return result["previous"] or ""


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def archive_op(registry_uri: str, version: str, decision: Input[Artifact]) -> str:
    """Archive a candidate the promotion gate rejected, recording the gate's reason.

    Args:
        registry_uri: Registry root (path, ``s3://`` or ``gs://``).
        version: The registered candidate.
        decision: The gate component's output (``decision.json``).

    Returns:
        The recorded reason.
    """
    from textclf.gate import read_decision
    from textclf.registry import ModelRegistry

    reason = read_decision(decision.path)["reason"]
    ModelRegistry(registry_uri).archive(version, reason=f"promotion gate: {reason}")
    print(f"archived {version}: {reason}")
    return reason
