"""Deployment targets: KServe manifests, Kubeflow Pipelines runs, Vertex AI (pipelines and endpoints) and Amazon
SageMaker endpoints.

Each target builds its requests as plain data first (checked offline, before anything is sent) and imports its
client library (kfp, google-cloud-aiplatform, boto3) only when it talks to the service.

* :mod:`textclf.deploy.kserve`: the InferenceService of an export bundle or of the registry's production version.
* :mod:`textclf.deploy.kubeflow`: upload a compiled pipeline and start a run with ``kfp.Client``.
* :mod:`textclf.deploy.vertex`: the same compiled YAML as an ``aiplatform.PipelineJob``; model upload + endpoint.
* :mod:`textclf.deploy.sagemaker`: ``model.tar.gz`` to S3, then model, endpoint config and endpoint (boto3).
"""

from textclf.deploy.kserve import (
    production_artifact_uri,
    render_inference_service,
    render_production_inference_service,
    write_manifest,
)
from textclf.deploy.kubeflow import KubeflowConfig, KubeflowRun, load_pipeline_package, submit_kubeflow_run
from textclf.deploy.sagemaker import (
    SageMakerConfig,
    SageMakerDeployment,
    build_sagemaker_requests,
    deploy_sagemaker,
    package_model_tar,
)
from textclf.deploy.vertex import (
    VertexModelConfig,
    VertexPipelineConfig,
    build_model_upload_request,
    build_pipeline_job,
    deploy_vertex_endpoint,
    submit_vertex_pipeline,
)

__all__ = [
    "KubeflowConfig", "KubeflowRun", "SageMakerConfig", "SageMakerDeployment", "VertexModelConfig",
    "VertexPipelineConfig", "build_model_upload_request", "build_pipeline_job", "build_sagemaker_requests",
    "deploy_sagemaker", "deploy_vertex_endpoint", "load_pipeline_package", "package_model_tar",
    "production_artifact_uri", "render_inference_service", "render_production_inference_service",
    "submit_kubeflow_run", "submit_vertex_pipeline", "write_manifest",
]
