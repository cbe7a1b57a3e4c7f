"""Deployment to Vertex AI, offline: the ``PipelineJob`` and ``Model.upload`` request bodies are built by the real SDK
with ``AnonymousCredentials`` and inspected; nothing is sent to Google (``submit`` / ``upload`` are intercepted).
(tests/deploy_fakes.py sets ``NO_GCE_CHECK`` before google.auth loads.)"""

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from deploy_fakes import ARGUMENTS, TRAINING_YAML, compiled_spec, run_cli
from deploy_fakes import aws, aws_env, bucket, registry  # noqa: F401  (pytest fixtures)

from textclf.deploy.vertex import (
    VertexModelConfig,
    VertexPipelineConfig,
    build_endpoint_deploy_request,
    build_model_upload_request,
    build_pipeline_job,
    deploy_vertex_endpoint,
    submit_vertex_pipeline,
)
from textclf.errors import ConfigError, TextclfError

VERTEX_IMAGE = "europe-west4-docker.pkg.dev/textclf-prod/textclf/serving:0.1.0"


# --- Vertex AI --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anonymous():
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def vertex_pipeline_config(**changes: Any) -> VertexPipelineConfig:
    settings = dict(project="textclf-prod", location="europe-west4", pipeline_root="gs://textclf-pipelines/root",
                    pipeline_package=TRAINING_YAML,
                    arguments=ARGUMENTS, job_id="textclf-training-42", labels={"team": "nlp"},
                    service_account="pipelines@textclf-prod.iam.gserviceaccount.com",
                    network="projects/123456789/global/networks/textclf")
    settings.update(changes)
    return VertexPipelineConfig(**settings)


def test_vertex_pipeline_job_request(anonymous):
    job = build_pipeline_job(vertex_pipeline_config(), credentials=anonymous)
    body = job.to_dict()
    assert body["displayName"] == "textclf-training" and body["labels"] == {"team": "nlp"}
    assert body["pipelineSpec"] == compiled_spec()
    assert body["runtimeConfig"] == {"gcsOutputDirectory": "gs://textclf-pipelines/root",
                                     "parameterValues": ARGUMENTS}
    assert (job.job_id, job.project, job.location) == ("textclf-training-42", "textclf-prod", "europe-west4")
    assert job.credentials is anonymous


def test_vertex_pipeline_submit(anonymous, monkeypatch):
    from google.api_core import exceptions as google_exceptions
    from google.cloud import aiplatform

    calls = []

    def fake_submit(job, **kwargs):  # the real one would create the job (and a bucket) at Google
        calls.append(kwargs)
        job._gca_resource.name = f"projects/textclf-prod/locations/europe-west4/pipelineJobs/{job.job_id}"

    monkeypatch.setattr(aiplatform.PipelineJob, "submit", fake_submit)
    result = submit_vertex_pipeline(vertex_pipeline_config(), credentials=anonymous)
    assert calls == [{"service_account": "pipelines@textclf-prod.iam.gserviceaccount.com",
                      "network": "projects/123456789/global/networks/textclf"}]
    assert result.job_name.endswith("/pipelineJobs/textclf-training-42")
    assert "europe-west4/pipelines/runs/textclf-training-42?project=textclf-prod" in result.dashboard_url

    def refused(job, **kwargs):
        raise google_exceptions.PermissionDenied("aiplatform.pipelineJobs.create denied")

    monkeypatch.setattr(aiplatform.PipelineJob, "submit", refused)
    with pytest.raises(TextclfError, match="Vertex AI refused pipeline job textclf-training-42.*denied"):
        submit_vertex_pipeline(vertex_pipeline_config(), credentials=anonymous)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(pipeline_root="s3://bucket/root"), "pipeline_root must be a gs://bucket"),
        (dict(pipeline_root="/tmp/root"), "pipeline_root must be a gs://bucket"),
        (dict(project="Textclf Prod"), "project id"),
        (dict(location="europe"), "region such as us-central1"),
        (dict(service_account="pipelines@example.com"), "gserviceaccount.com"),
        (dict(network="textclf-vpc"), "projects/<project number>/global/networks"),
        (dict(job_id="Textclf_1"), "job_id"),
        (dict(arguments={"dataset_uri": "gs://d", "lr": 0.1}), "has no parameter lr"),
        (dict(arguments={}), "needs a value for dataset_uri"),
        (dict(pipeline_package=Path("/nonexistent.yaml")), "not found"),
    ],
)
def test_vertex_pipeline_bad_input(anonymous, changes, message):
    with pytest.raises(ConfigError, match=message):
        build_pipeline_job(vertex_pipeline_config(**changes), credentials=anonymous)


def vertex_model_config(**changes: Any) -> VertexModelConfig:
    settings = dict(project="textclf-prod", location="europe-west4", image=VERTEX_IMAGE, model_version="v1.4.2",
                    artifact_uri="gs://textclf-registry/versions/v1.4.2/onnx_model/", machine_type="n1-standard-2",
                    min_replica_count=1, max_replica_count=3,
                    service_account="serving@textclf-prod.iam.gserviceaccount.com")
    settings.update(changes)
    return VertexModelConfig(**settings)


def test_vertex_model_upload_request_built_by_the_sdk(anonymous, monkeypatch):
    """The real ``Model.upload`` turns our arguments into its UploadModelRequest; it is captured before sending."""
    from google.cloud import aiplatform

    upload = build_model_upload_request(vertex_model_config())
    assert upload.kwargs() == {
        "display_name": "textclf",
        "artifact_uri": "gs://textclf-registry/versions/v1.4.2/onnx_model",
        "serving_container_image_uri": VERTEX_IMAGE,
        "serving_container_args": ["--model-name=textclf", "--model-dir=$(AIP_STORAGE_URI)", "--precision=int8",
                                   "--http-port=8080", "--no-grpc"],
        "serving_container_predict_route": "/v1/models/textclf:predict",
        "serving_container_health_route": "/v2/health/ready",
        "serving_container_ports": [8080],
        "version_description": "textclf registry version v1.4.2",
        "labels": None,
    }

    class Captured(Exception):
        pass

    class FakeModelService:
        def upload_model(self, request, timeout=None):
            raise Captured(request)

    monkeypatch.setattr(aiplatform.Model, "_instantiate_client", classmethod(lambda cls, *a, **k: FakeModelService()))
    with pytest.raises(Captured) as captured:
        aiplatform.Model.upload(**upload.kwargs(), project="textclf-prod", location="europe-west4",
                                credentials=anonymous)
    request = captured.value.args[0]
    assert request.parent == "projects/textclf-prod/locations/europe-west4"
    model = request.model
    assert model.artifact_uri == "gs://textclf-registry/versions/v1.4.2/onnx_model"
    spec = model.container_spec
    assert spec.image_uri == VERTEX_IMAGE and list(spec.args) == upload.serving_container_args
    assert (spec.predict_route, spec.health_route) == ("/v1/models/textclf:predict", "/v2/health/ready")
    assert [port.container_port for port in spec.ports] == [8080]


def test_vertex_deploy_endpoint(anonymous, monkeypatch):
    from google.api_core import exceptions as google_exceptions
    from google.cloud import aiplatform

    events = []

    class FakeResource:
        def __init__(self, kind: str, fail: bool = False):
            self.kind, self.fail = kind, fail
            self.resource_name = f"projects/1/locations/europe-west4/{kind}s/7"

        def deploy(self, **kwargs):
            events.append(("deploy", kwargs))
            if self.fail:
                raise google_exceptions.FailedPrecondition("quota exceeded")
            return kwargs["endpoint"]

        def delete(self):
            events.append(("delete", self.kind))

    def fake_upload(**kwargs):
        events.append(("upload", kwargs))
        return FakeResource("model", fail=fake_upload.fail)

    fake_upload.fail = False
    monkeypatch.setattr(aiplatform.Model, "upload", fake_upload)
    monkeypatch.setattr(aiplatform.Endpoint, "create", lambda **kwargs: events.append(("create", kwargs))
                        or FakeResource("endpoint"))
    config = vertex_model_config()
    assert deploy_vertex_endpoint(config, credentials=anonymous) == {
        "model": "projects/1/locations/europe-west4/models/7",
        "endpoint": "projects/1/locations/europe-west4/endpoints/7"}
    (_, upload), (_, create), (_, deploy) = events
    assert upload == {**build_model_upload_request(config).kwargs(), "project": "textclf-prod",
                      "location": "europe-west4", "credentials": anonymous}
    assert create["display_name"] == "textclf"
    deploy.pop("endpoint")
    assert deploy == build_endpoint_deploy_request(config).kwargs() == {
        "deployed_model_display_name": "textclf", "machine_type": "n1-standard-2", "min_replica_count": 1,
        "max_replica_count": 3, "traffic_percentage": 100,
        "service_account": "serving@textclf-prod.iam.gserviceaccount.com"}
    assert inspect.signature(aiplatform.Model.deploy).bind(None, endpoint=None, **deploy)  # real parameter names

    events.clear()
    fake_upload.fail = True
    with pytest.raises(TextclfError, match="could not deploy .*quota exceeded.*deleted again"):
        deploy_vertex_endpoint(config, credentials=anonymous)
    assert [e for e in events if e[0] == "delete"] == [("delete", "endpoint"), ("delete", "model")]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(artifact_uri="s3://bucket/onnx_model"), "artifact_uri must be a gs://bucket"),
        (dict(image="ghcr.io/textclf-pipelines/serving:0.1.0"), "Artifact Registry"),
        (dict(min_replica_count=3, max_replica_count=2), "min_replica_count <= max_replica_count"),
        (dict(precision="bf16"), "precision must be one of"),
        (dict(machine_type="big"), "machine type"),
        (dict(traffic_percentage=120), r"\[0, 100\]"),
        (dict(traffic_percentage="all"), r"\[0, 100\]"),
    ],
)
def test_vertex_model_bad_input(changes, message):
    with pytest.raises(ConfigError, match=message):
        vertex_model_config(**changes)


def test_vertex_cli_dry_runs(registry, aws_env, capsys):
    argv = ["deploy", "vertex-pipeline", "--project", "textclf-prod", "--pipeline-root", "gs://textclf-runs/root",
            "--param", "dataset_uri=gs://textclf-data/ag_news", "--param", "max_train_rows=600", "--dry-run"]
    assert run_cli(argv) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["parent"] == "projects/textclf-prod/locations/us-central1"
    assert request["pipeline_job"]["runtimeConfig"]["parameterValues"] == {"dataset_uri": "gs://textclf-data/ag_news",
                                                                           "max_train_rows": 600}

    argv = ["deploy", "vertex-model", "--project", "textclf-prod", "--image", VERTEX_IMAGE,
            "--artifact-uri", "gs://textclf-registry/v3/onnx_model", "--model-version", "v3.0.0", "--dry-run"]
    assert run_cli(argv) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["model_upload"]["artifact_uri"] == "gs://textclf-registry/v3/onnx_model"
    assert request["endpoint"] == {"create": "textclf"} and request["model_deploy"]["machine_type"] == "n1-standard-4"

    # The production version lives on S3 here: Vertex AI cannot read it.
    argv = ["deploy", "--registry-uri", str(registry.store.root), "vertex-model", "--project", "textclf-prod",
            "--image", VERTEX_IMAGE, "--dry-run"]
    assert run_cli(argv) == 2
    assert "artifact_uri must be a gs://bucket" in capsys.readouterr().err
