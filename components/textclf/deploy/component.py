"""KFP component: render the KServe InferenceService of the registry's production version (thin wrapper around
:func:`textclf.deploy.kserve.render_production_inference_service`)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def render_inference_service_op(
    registry_uri: str,
    manifest: Output[Artifact],
    name: str = "textclf",
    namespace: str = "",
    canary_traffic_percent: int = -1,
    precision: str = "int8",
) -> str:
    """Write the InferenceService manifest (YAML) serving the registry's production version.

    The manifest is the committed ``manifests/overlays/cpu`` InferenceService with ``storageUri`` set to the
    production version's ``onnx_model`` folder; apply it with ``kubectl apply -f`` next to ``manifests/base``
    (the ``textclf-onnx`` ServingRuntime).

    Args:
        registry_uri: Registry root: ``s3://bucket/prefix`` or ``gs://bucket/prefix`` (KServe cannot download from
            a local registry). S3 settings come from the ``AWS_*`` / ``S3_*`` environment variables.
        manifest: Output: the manifest file (``manifest.path``), annotated with the production version.
        name: InferenceService name (DNS-1035 label).
        namespace: Namespace written into the manifest; empty leaves it to ``kubectl -n``.
        canary_traffic_percent: Share (0-100) of the traffic for the new revision; -1 sends it all traffic.
        precision: ``int8`` or ``fp32``.

    Returns:
        The production version the manifest serves. The component fails (and writes nothing) if the registry has
        no production version or a setting is invalid.
    """
    from textclf.deploy.kserve import MODEL_VERSION_ANNOTATION, render_production_inference_service, write_manifest

    rendered = render_production_inference_service(
        registry_uri, name=name, namespace=namespace or None,
        canary_traffic_percent=None if canary_traffic_percent == -1 else canary_traffic_percent, precision=precision,
    )
    write_manifest(rendered, manifest.path)
    manifest.metadata["storageUri"] = rendered["spec"]["predictor"]["model"]["storageUri"]
    return rendered["metadata"]["annotations"][MODEL_VERSION_ANNOTATION]
