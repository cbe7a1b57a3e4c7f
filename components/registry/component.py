"""KFP component: register (thin wrapper around :meth:`textclf.registry.ModelRegistry.register`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register_op(
    model: Input[Model],
    onnx_model: Input[Model],
    evaluation: Input[Artifact],
    registry_uri: str,
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

    Returns:
        The registered version. The component fails (and registers nothing) if the version string is not a
        semantic version or already exists, or if the three artifacts come from different runs.
    """
    from textclf.registry import ArtifactDirs, ModelRegistry

    dirs = ArtifactDirs(model=model.path, onnx_model=onnx_model.path, evaluation=evaluation.path)
    return ModelRegistry(registry_uri).register(dirs, version=version, notes=notes)
