"""Deployment targets, offline: every request is checked up to the network boundary, or sent to a real local server.

* KServe: rendered InferenceServices are validated against KServe's real CRD schema (helpers of test_manifests) and
  point at a real registry's production version on moto's S3 server.
* Kubeflow: ``kfp.Client`` talks to a small HTTP server on 127.0.0.1 that answers the KFP v2beta1 REST endpoints and
  records every request (headers, query, multipart upload, JSON bodies).
* Vertex AI: the ``PipelineJob`` and ``Model.upload`` request bodies are built by the real SDK with
  ``AnonymousCredentials`` and inspected; nothing is sent to Google (``submit`` / ``upload`` are intercepted).
* SageMaker: the archive is uploaded and the model, endpoint config and endpoint are created on moto's server with
  IAM authentication on, as a user holding exactly :data:`REQUIRED_IAM_ACTIONS`.
"""

import os

os.environ.setdefault("NO_GCE_CHECK", "true")  # before google.auth loads: never probe the GCE metadata server

import email.parser
import email.policy
import hashlib
import inspect
import io
import json
import tarfile
import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import yaml
from storage_servers import FAST_RETRY, HOST, S3_REGION, VENV_BIN, free_port, start, stop, unique_bucket
from test_manifests import MANIFESTS, crd_errors, requires_crds
from test_manifests import render as render_overlay
from test_registry import make_run

from textclf.deploy.kserve import (
    MODEL_VERSION_ANNOTATION,
    render_inference_service,
    render_production_inference_service,
    write_manifest,
)
from textclf.deploy.kubeflow import KubeflowConfig, load_pipeline_package, submit_kubeflow_run
from textclf.pipelines.compile import default_pipeline_package
from textclf.deploy.sagemaker import (
    REQUIRED_IAM_ACTIONS,
    SERVING_ARGS_ENV,
    SageMakerConfig,
    build_sagemaker_requests,
    deploy_sagemaker,
    package_model_tar,
)
from textclf.deploy.vertex import (
    VertexModelConfig,
    VertexPipelineConfig,
    build_endpoint_deploy_request,
    build_model_upload_request,
    build_pipeline_job,
    deploy_vertex_endpoint,
    submit_vertex_pipeline,
)
from textclf.errors import ConfigError, RegistryError, StorageAuthError, TextclfError
from textclf.registry import ModelRegistry
from textclf.storage import S3Config, Store

TRAINING_YAML = default_pipeline_package("training")
ROLE_ARN = "arn:aws:iam::123456789012:role/service-role/textclf-sagemaker-execution"
ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/textclf-serving:0.1.0"
VERTEX_IMAGE = "europe-west4-docker.pkg.dev/textclf-prod/textclf/serving:0.1.0"
ARGUMENTS = {"dataset_uri": "gs://textclf-data/ag_news", "epochs": 2.0, "batch_size": 16, "method": "lora"}


def run_cli(argv: list[str]) -> int:
    """The ``textclf`` command line, in process: exit code 0, or 2 with ``textclf: error: ...`` on stderr."""
    from textclf.cli import main

    return main(argv)


def compiled_spec(path: Path = TRAINING_YAML) -> dict[str, Any]:
    return next(yaml.safe_load_all(path.read_text()))


# --- a moto server with IAM users for the deploy tests ----------------------------------------------------------


@dataclass(frozen=True)
class Aws:
    """moto (S3 + SageMaker + IAM) with authentication enforced, and the access keys of its users."""

    url: str
    keys: dict[str, tuple[str, str]]

    def s3_config(self, user: str) -> S3Config:
        access, secret = self.keys[user]
        return S3Config(endpoint=self.url.removeprefix("http://"), secure=False, region=S3_REGION, access_key=access,
                        secret_key=secret, retry=FAST_RETRY)

    def sagemaker(self, user: str) -> Any:
        access, secret = self.keys[user]
        return boto3.client("sagemaker", endpoint_url=self.url, region_name=S3_REGION, aws_access_key_id=access,
                            aws_secret_access_key=secret)

    def environ(self, user: str) -> dict[str, str]:
        """What a shell on a machine with this user's credentials would export."""
        access, secret = self.keys[user]
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_REGION": S3_REGION, "SAGEMAKER_ENDPOINT_URL": self.url}


#: IAM users: an administrator (registry owner, listings), the deployer (exactly the documented actions), and one
#: without CreateEndpoint.
#: moto authorizes the storage layer's HEAD-bucket check as "s3:HeadBucket" (AWS does so with s3:ListBucket).
MOTO_ONLY_ACTIONS = ["s3:HeadBucket"]
IAM_USERS = {
    "admin": ["s3:*", "sagemaker:*"],
    "deployer": [*REQUIRED_IAM_ACTIONS, *MOTO_ONLY_ACTIONS],
    "no-create-endpoint": [a for a in [*REQUIRED_IAM_ACTIONS, *MOTO_ONLY_ACTIONS] if a != "sagemaker:CreateEndpoint"],
}


@pytest.fixture(scope="module")
def aws(tmp_path_factory) -> Aws:
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = tmp_path_factory.mktemp("moto-deploy") / "moto_server.log"
    process = start([str(VENV_BIN / "moto_server"), "-H", HOST, "-p", str(port)], f"{url}/moto-api/", log)
    try:
        iam = boto3.client("iam", endpoint_url=url, region_name=S3_REGION, aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        keys = {}
        for user, actions in IAM_USERS.items():
            iam.create_user(UserName=user)
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
            iam.put_user_policy(UserName=user, PolicyName="deploy", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        enforce = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(enforce, timeout=10).close()
        yield Aws(url, keys)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def bucket(aws) -> str:
    from textclf.storage.s3 import make_client

    name = unique_bucket()
    make_client(aws.s3_config("admin")).make_bucket(name, location=S3_REGION)
    return name


def make_bundle(root: Path) -> Path:
    """A small export bundle in the export stage's shape (fake ONNX bytes: nothing here loads the model)."""
    run = make_run(root, run_key="deploy-run")
    (run.onnx_model / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordPiece"}}))
    return run.onnx_model


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def registry(aws, bucket, tmp_path_factory) -> ModelRegistry:
    """A registry on moto's S3 with v0.1.0 in production (its onnx_model is a complete bundle)."""
    run = make_run(tmp_path_factory.mktemp("registry-run"), run_key="run-prod")
    (run.onnx_model / "tokenizer.json").write_text("{}")
    registry = ModelRegistry(f"s3://{bucket}/registry", storage_config=aws.s3_config("admin"))
    version = registry.register(run, notes="deploy tests")
    registry.promote(version)
    return registry


@pytest.fixture
def aws_env(aws, monkeypatch):
    """The deployer's credentials and endpoints in the environment (for the CLI and KFP component tests)."""
    for name, value in aws.environ("deployer").items():
        monkeypatch.setenv(name, value)
    return aws


# --- KServe -----------------------------------------------------------------------------------------------------


def committed(overlay: str) -> dict[str, Any]:
    (isvc,) = [r for r in render_overlay(MANIFESTS / "overlays" / overlay) if r["kind"] == "InferenceService"]
    return isvc


@requires_crds
def test_inference_service_is_the_committed_overlay_with_the_new_bundle():
    manifest = render_inference_service("s3://models/ag-news/v7/", model_version="v1.4.2")
    assert crd_errors(manifest) == []
    expected = committed("cpu")
    expected["spec"]["predictor"]["model"].update(storageUri="s3://models/ag-news/v7/", args=["--precision=int8"])
    expected["metadata"]["annotations"][MODEL_VERSION_ANNOTATION] = "v1.4.2"
    assert manifest == expected


@requires_crds
def test_canary_inference_service_matches_the_canary_overlay():
    manifest = render_inference_service("s3://textclf-models/ag-news/export/v2/", canary_traffic_percent=10)
    assert crd_errors(manifest) == []
    expected = committed("canary")
    expected["spec"]["predictor"]["model"]["args"] = ["--precision=int8"]
    assert manifest == expected


@requires_crds
def test_inference_service_options():
    manifest = render_inference_service("gs://bucket/bundle/", name="textclf-fp32", namespace="serving",
                                        precision="fp32", image="registry.example.com/textclf/serving:0.2.0",
                                        canary_traffic_percent=0)
    assert crd_errors(manifest) == []
    assert manifest["metadata"]["name"] == "textclf-fp32" and manifest["metadata"]["namespace"] == "serving"
    model = manifest["spec"]["predictor"]["model"]
    # KServe appends the InferenceService's args to the ServingRuntime's: this --precision comes last and wins.
    assert model["args"] == ["--precision=fp32"] and model["image"].endswith("serving:0.2.0")
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(storage_uri="/mnt/models/bundle"), "must be a URI"),
        (dict(storage_uri="file:///tmp/registry/v1/onnx_model"), "KServe pods cannot read this machine's files"),
        (dict(storage_uri="ftp://host/bundle"), "KServe cannot download"),
        (dict(name="TextClf"), "DNS-1035"),
        (dict(name="1textclf"), "DNS-1035"),
        (dict(namespace="Serving_NS"), "DNS-1123"),
        (dict(canary_traffic_percent=101), r"\[0, 100\]"),
        (dict(canary_traffic_percent=True), r"\[0, 100\]"),
        (dict(precision="fp16"), "precision must be one of"),
    ],
)
def test_inference_service_bad_input(kwargs, message):
    kwargs = {"storage_uri": "s3://bucket/bundle/", **kwargs}
    with pytest.raises(ConfigError, match=message):
        render_inference_service(kwargs.pop("storage_uri"), **kwargs)


@requires_crds
def test_production_inference_service_serves_the_registry_production_bundle(registry, aws):
    manifest = render_production_inference_service(str(registry.store.root), storage_config=aws.s3_config("admin"))
    assert crd_errors(manifest) == []
    storage_uri = manifest["spec"]["predictor"]["model"]["storageUri"]
    assert storage_uri == registry.artifact_uri("v0.1.0", "onnx_model") + "/"
    assert manifest["metadata"]["annotations"][MODEL_VERSION_ANNOTATION] == "v0.1.0"
    # What KServe's storage initializer will download is really there.
    listed = Store(storage_uri, config=aws.s3_config("admin")).list()
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "labels.json", "export_metadata.json"} <= set(listed)


def test_production_inference_service_needs_a_production_version(aws, bucket, tmp_path):
    with pytest.raises(RegistryError, match="has no production version: promote one first"):
        render_production_inference_service(f"s3://{bucket}/empty-registry", storage_config=aws.s3_config("admin"))
    run = make_run(tmp_path / "run")
    local = ModelRegistry(tmp_path / "registry")
    local.promote(local.register(run))
    with pytest.raises(ConfigError, match="KServe pods cannot read this machine's files"):
        render_production_inference_service(str(tmp_path / "registry"))


def test_write_manifest_is_atomic(tmp_path):
    path = tmp_path / "deploy" / "isvc.yaml"
    manifest = render_inference_service("s3://bucket/v1/")
    write_manifest(manifest, path)
    assert yaml.safe_load(path.read_text()) == manifest
    broken = {**manifest, "spec": object()}  # yaml cannot represent it: the write fails half-way
    with pytest.raises(yaml.representer.RepresenterError):
        write_manifest(broken, path)
    assert yaml.safe_load(path.read_text()) == manifest
    assert [p.name for p in path.parent.iterdir()] == ["isvc.yaml"]


def test_kserve_cli(registry, aws_env, tmp_path, capsys):
    registry_uri = str(registry.store.root)
    assert run_cli(["deploy", "--registry-uri", registry_uri, "kserve", "--namespace", "serving"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["metadata"]["namespace"] == "serving"
    assert manifest["spec"]["predictor"]["model"]["storageUri"].endswith("/versions/v0.1.0/onnx_model/")

    out = tmp_path / "isvc.yaml"
    assert run_cli(["deploy", "kserve", "--storage-uri", "s3://b/v2/", "--model-version", "v2.0.0",
                    "--canary-traffic-percent", "25", "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"manifest": str(out), "storageUri": "s3://b/v2/", "model_version": "v2.0.0"}
    assert yaml.safe_load(out.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 25

    assert run_cli(["deploy", "kserve"]) == 2
    assert "nothing to serve" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task that uses custom")  # kfp.local, as intended
def test_render_component_under_kfp_local(registry, aws_env, tmp_path, monkeypatch):
    from kfp import dsl

    from textclf.deploy.component import render_inference_service_op
    from textclf.pipelines.local import init_local_runner

    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # restored after the test

    @dsl.pipeline(name="render-isvc-test")
    def render_pipeline(registry_uri: str) -> str:
        return render_inference_service_op(registry_uri=registry_uri, namespace="serving",
                                           canary_traffic_percent=20).outputs["Output"]

    init_local_runner(tmp_path / "pipeline_root")
    task = render_pipeline(registry_uri=str(registry.store.root))
    assert task.output == "v0.1.0"
    (manifest_file,) = (tmp_path / "pipeline_root").rglob("manifest")
    manifest = yaml.safe_load(manifest_file.read_text())
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert manifest["spec"]["predictor"]["model"]["storageUri"].endswith("/versions/v0.1.0/onnx_model/")


# --- Kubeflow Pipelines -----------------------------------------------------------------------------------------


@dataclass
class Recorded:
    """One request the fake KFP server received (header names lowercased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def files(self) -> dict[str, bytes]:
        """The parts of a multipart/form-data body, by field name."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in message.iter_parts()}


@dataclass
class FakeKfpState:
    requests: list[Recorded] = field(default_factory=list)
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)


def _named(items: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    (predicate,) = json.loads(query["filter"])["predicates"]
    assert predicate["key"] == "display_name" and predicate["operation"] in ("EQUALS", 1)  # enum name or number
    return [item for item in items if item["display_name"] == predicate["stringValue"]]


def answer(state: FakeKfpState, request: Recorded) -> tuple[int, dict[str, Any]]:
    """The KFP API server's answer to the requests kfp.Client 2.17 sends for an upload and a run."""
    route = (request.method, request.path)
    if request.path in state.fail:
        return state.fail[request.path], {"error": "injected failure", "code": 13, "message": "injected failure"}
    if route == ("GET", "/apis/v2beta1/healthz"):
        return 200, {"multi_user": False}
    if route == ("GET", "/apis/v2beta1/pipelines"):
        found = _named(state.pipelines, request.query)
        return 200, {"pipelines": found, "total_size": len(found)} if found else {}
    if route == ("POST", "/apis/v2beta1/pipelines/upload"):
        state.uploads.append(request.files()["uploadfile"])
        pipeline = {"pipeline_id": f"pipeline-{len(state.pipelines) + 1}", "display_name": request.query["name"],
                    "namespace": request.query.get("namespace")}
        state.pipelines.append(pipeline)
        return 200, pipeline
    if request.method == "GET" and request.path.endswith("/versions"):
        pipeline_id = request.path.split("/")[-2]
        found = [v for v in _named(state.versions, request.query) if v["pipeline_id"] == pipeline_id]
        return 200, {"pipeline_versions": found, "total_size": len(found)} if found else {}
    if route == ("POST", "/apis/v2beta1/pipelines/upload_version"):
        state.uploads.append(request.files()["uploadfile"])
        version = {"pipeline_id": request.query["pipelineid"], "display_name": request.query["name"],
                   "pipeline_version_id": f"version-{len(state.versions) + 1}"}
        state.versions.append(version)
        return 200, version
    if route == ("GET", "/apis/v2beta1/experiments"):
        found = _named(state.experiments, request.query)
        return 200, {"experiments": found, "total_size": len(found)} if found else {}
    if route == ("POST", "/apis/v2beta1/experiments"):
        experiment = {**request.json(), "experiment_id": f"experiment-{len(state.experiments) + 1}"}
        state.experiments.append(experiment)
        return 200, experiment
    if route == ("POST", "/apis/v2beta1/runs"):
        run = request.json()
        return 200, {"run_id": "run-1", "experiment_id": run["experiment_id"], "display_name": run["display_name"],
                     "state": "PENDING"}
    return 404, {"error": f"no route {route}", "code": 5, "message": "not found"}


class KfpHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def handle_any(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Recorded(method, url.path, {k: v[0] for k, v in parse_qs(url.query).items()},
                           {name.lower(): value for name, value in self.headers.items()}, body)
        state: FakeKfpState = self.server.state  # type: ignore[attr-defined]
        state.requests.append(request)
        status, payload = answer(state, request)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def kfp_server():
    server = ThreadingHTTPServer((HOST, 0), KfpHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def kfp(kfp_server, monkeypatch, tmp_path) -> tuple[str, FakeKfpState]:
    """(host, fresh server state); kfp's local context file is redirected so this machine's is not read."""
    from kfp.client import client as kfp_client

    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    kfp_server.state = FakeKfpState()
    return f"http://{HOST}:{kfp_server.server_port}", kfp_server.state


def test_kubeflow_uploads_the_pipeline_and_starts_a_run(kfp):
    host, state = kfp
    config = KubeflowConfig(pipeline_package=TRAINING_YAML, host=host, token="s3cret-token", namespace="team-a", arguments=ARGUMENTS,
                            run_name="nightly", pipeline_root="minio://mlpipeline/v2/artifacts",
                            service_account="pipeline-runner", enable_caching=False)
    run = submit_kubeflow_run(config)

    assert [(r.method, r.path) for r in state.requests] == [
        ("GET", "/apis/v2beta1/pipelines"),
        ("POST", "/apis/v2beta1/pipelines/upload"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
    ]
    assert all(r.headers["authorization"] == "Bearer s3cret-token" for r in state.requests)
    upload = state.requests[1]
    sha = load_pipeline_package(TRAINING_YAML).sha256
    assert upload.query == {"name": "textclf-training", "namespace": "team-a",
                            "description": f"textclf-training (sha256 {sha[:12]})"}
    assert state.uploads == [TRAINING_YAML.read_bytes()]
    assert state.requests[3].json() == {"display_name": "textclf", "namespace": "team-a"}

    body = state.requests[4].json()
    expected_spec = compiled_spec()
    for task in expected_spec["root"]["dag"]["tasks"].values():  # enable_caching=False is applied to every task
        task["cachingOptions"] = {}
    assert body["pipeline_spec"] == expected_spec
    assert body["runtime_config"] == {"parameters": ARGUMENTS, "pipeline_root": "minio://mlpipeline/v2/artifacts"}
    assert (body["display_name"], body["experiment_id"], body["service_account"]) == (
        "nightly", "experiment-1", "pipeline-runner")
    assert run.to_dict() == {"pipeline_id": "pipeline-1", "pipeline_version_id": None,
                             "experiment_id": "experiment-1", "run_id": "run-1",
                             "run_url": f"{host}/#/runs/details/run-1"}


def test_kubeflow_uploads_a_new_version_once(kfp, tmp_path):
    host, state = kfp
    config = KubeflowConfig(pipeline_package=TRAINING_YAML, host=host, arguments={"dataset_uri": "gs://d"})
    submit_kubeflow_run(config)
    changed = tmp_path / "training_pipeline.yaml"
    changed.write_text(TRAINING_YAML.read_text() + "# changed\n")
    changed_config = KubeflowConfig(host=host, pipeline_package=changed, arguments={"dataset_uri": "gs://d"})
    first = submit_kubeflow_run(changed_config)
    again = submit_kubeflow_run(changed_config)

    assert state.requests[0].path == "/apis/v2beta1/healthz"  # single-user: no namespace given
    assert all("authorization" not in r.headers for r in state.requests)  # no token: none sent
    uploads = [r for r in state.requests if r.path.startswith("/apis/v2beta1/pipelines/upload")]
    assert [r.path for r in uploads] == ["/apis/v2beta1/pipelines/upload", "/apis/v2beta1/pipelines/upload_version"]
    sha = hashlib.sha256(changed.read_bytes()).hexdigest()
    assert uploads[1].query == {"name": f"textclf-training-{sha[:12]}", "pipelineid": "pipeline-1"}
    assert state.uploads[1] == changed.read_bytes()
    assert first.pipeline_version_id == again.pipeline_version_id == "version-1"
    assert len(state.experiments) == 1  # created once, then found


def test_kubeflow_host_and_token_from_the_environment(kfp, monkeypatch):
    host, state = kfp
    monkeypatch.setenv("KFP_HOST", host)
    monkeypatch.setenv("KFP_TOKEN", "env-token")
    run = submit_kubeflow_run(KubeflowConfig.from_env(pipeline_package=TRAINING_YAML, arguments={"dataset_uri": "gs://d"}, upload=False))
    assert [r.path for r in state.requests][-1] == "/apis/v2beta1/runs" and run.pipeline_id is None
    assert {r.headers["authorization"] for r in state.requests} == {"Bearer env-token"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(host=""), "no Kubeflow Pipelines host: pass --host or set KFP_HOST"),
        (dict(host="kfp.example.com"), r"must look like http\(s\)://"),
        (dict(pipeline_package=Path("/nonexistent/pipeline.yaml")), "not found"),
        (dict(pipeline_package=MANIFESTS / "base" / "kustomization.yaml"), "not a compiled KFP pipeline"),
        (dict(arguments=[("dataset_uri", "gs://d")]), "must be a mapping"),
        (dict(arguments={"dataset_uri": "gs://d", "epoch": 3}), "has no parameter epoch"),
        (dict(arguments={"epochs": 3}), "needs a value for dataset_uri"),
        (dict(arguments={"dataset_uri": "gs://d", "batch_size": 8.5}), "batch_size is NUMBER_INTEGER"),
        (dict(arguments={"dataset_uri": "gs://d", "epochs": "two"}), "epochs is NUMBER_DOUBLE"),
        (dict(arguments={"dataset_uri": "gs://d", "seed": True}), "seed is NUMBER_INTEGER"),
        (dict(namespace="Team A"), "DNS-1123"),
    ],
)
def test_kubeflow_bad_input_is_refused_before_any_request(kfp, changes, message):
    host, state = kfp
    settings = {"host": host, "pipeline_package": TRAINING_YAML, "arguments": {"dataset_uri": "gs://d"}, **changes}
    with pytest.raises(ConfigError, match=message):
        submit_kubeflow_run(KubeflowConfig(**settings))
    assert state.requests == []


def test_kubeflow_server_errors_are_reported(kfp):
    host, state = kfp
    state.fail["/apis/v2beta1/runs"] = 500
    with pytest.raises(TextclfError, match=r"refused to start a run of training_pipeline.yaml: HTTP 500"):
        submit_kubeflow_run(KubeflowConfig(pipeline_package=TRAINING_YAML, host=host, arguments={"dataset_uri": "gs://d"}))
    port = free_port()  # nothing listens there
    with pytest.raises(TextclfError, match="could not reach Kubeflow Pipelines"):
        submit_kubeflow_run(KubeflowConfig(pipeline_package=TRAINING_YAML, host=f"http://{HOST}:{port}", namespace="team-a",
                                           arguments={"dataset_uri": "gs://d"}))


def test_kubeflow_cli(kfp, capsys):
    host, state = kfp
    argv = ["deploy", "kubeflow", "--host", host, "--token", "cli-token", "--namespace", "team-a",
            "--param", "dataset_uri=gs://data/ag_news", "--param", "epochs=3", "--param", "batch_size=8",
            "--param", "method=full", "--experiment", "nightly", "--caching", "off"]
    assert run_cli(argv) == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds only the JSON (kfp's links go to stderr)
    assert result["run_id"] == "run-1" and result["pipeline_id"] == "pipeline-1"
    parameters = state.requests[-1].json()["runtime_config"]["parameters"]
    assert parameters == {"dataset_uri": "gs://data/ag_news", "epochs": 3.0, "batch_size": 8, "method": "full"}
    assert isinstance(parameters["batch_size"], int) and isinstance(parameters["epochs"], float)

    assert run_cli(["deploy", "kubeflow", "--host", host, "--param", "epochs"]) == 2
    assert "--param takes NAME=VALUE" in capsys.readouterr().err
    assert run_cli(["deploy", "kubeflow", "--host", host, "--param", "dataset_uri=x", "--param", "epochs=2x"]) == 2
    assert "epochs is NUMBER_DOUBLE: cannot parse '2x'" in capsys.readouterr().err
    assert run_cli(["deploy", "kubeflow", "--host", host, "--pipeline", "nope", "--param", "dataset_uri=x"]) == 2
    assert "unknown pipeline 'nope'" in capsys.readouterr().err
    assert len(state.requests) == 5


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


# --- SageMaker --------------------------------------------------------------------------------------------------


def sagemaker_config(bucket: str, **changes: Any) -> SageMakerConfig:
    settings = dict(role_arn=ROLE_ARN, image=ECR_IMAGE, s3_prefix=f"s3://{bucket}/sagemaker", region=S3_REGION,
                    model_version="v0.1.0")
    settings.update(changes)
    return SageMakerConfig(**settings)


def test_model_archive_has_the_files_at_its_root_and_is_deterministic(bundle, tmp_path):
    first = package_model_tar(bundle, tmp_path / "a" / "model.tar.gz")
    for path in bundle.iterdir():
        os.utime(path, (1e9, 1e9))
    second = package_model_tar(bundle, tmp_path / "b" / "model.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(p.name for p in bundle.iterdir())
        assert all(m.isfile() and m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)
        assert tar.extractfile("model.onnx").read() == (bundle / "model.onnx").read_bytes()


def test_model_archive_bad_input(bundle, tmp_path):
    with pytest.raises(ConfigError, match="is not a directory"):
        package_model_tar(tmp_path / "missing", tmp_path / "model.tar.gz")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("model.int8.onnx", "tokenizer.json", "labels.json", "export_metadata.json"):
        (partial / name).write_bytes((bundle / name).read_bytes())
    with pytest.raises(ConfigError, match="not a complete export bundle: missing model.onnx"):
        package_model_tar(partial, tmp_path / "model.tar.gz")
    with pytest.raises(ConfigError, match="inside the bundle"):
        package_model_tar(bundle, bundle / "model.tar.gz")
    assert not (tmp_path / "model.tar.gz").exists() and not (bundle / "model.tar.gz").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(role_arn="textclf-sagemaker-execution"), "IAM role ARN"),
        (dict(role_arn="arn:aws:iam::1234:role/x"), "IAM role ARN"),
        (dict(role_arn="arn:aws:iam::123456789012:user/deployer"), "IAM role ARN"),
        (dict(image="ghcr.io/textclf-pipelines/serving:0.1.0"), "pulls serving images from ECR"),
        (dict(region="eu-west-1"), "image is in us-east-1 but the endpoint in eu-west-1"),
        (dict(s3_prefix="gs://bucket/models"), "destination must be s3://bucket"),
        (dict(s3_prefix="/tmp/models"), "destination must be s3://bucket"),
        (dict(endpoint_name="textclf_prod"), "endpoint_name"),
        (dict(instance_type="m5.large"), "instance type"),
        (dict(initial_instance_count=0), "initial_instance_count"),
        (dict(precision="int4"), "precision must be one of"),
    ],
)
def test_sagemaker_bad_config(changes, message):
    with pytest.raises(ConfigError, match=message):
        sagemaker_config("bucket", **changes)


def test_sagemaker_requests(bucket):
    config = sagemaker_config(bucket, environment={"OMP_NUM_THREADS": "2"})
    requests = build_sagemaker_requests(config, f"s3://{bucket}/sagemaker/abc/model.tar.gz")
    container = requests.create_model["PrimaryContainer"]
    assert container == {
        "Image": ECR_IMAGE, "Mode": "SingleModel", "ModelDataUrl": f"s3://{bucket}/sagemaker/abc/model.tar.gz",
        "Environment": {SERVING_ARGS_ENV: "--model-name=textclf --model-dir=/opt/ml/model --precision=int8 "
                                          "--http-port=8080 --no-grpc", "OMP_NUM_THREADS": "2"}}
    assert requests.create_model["ExecutionRoleArn"] == ROLE_ARN
    assert requests.create_endpoint_config["ProductionVariants"] == [{
        "VariantName": "AllTraffic", "ModelName": requests.model_name, "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1, "InitialVariantWeight": 1.0}]
    assert requests.create_endpoint["EndpointConfigName"] == requests.endpoint_config_name
    assert requests.create_model["Tags"] == [{"Key": "textclf-pipelines/model-version", "Value": "v0.1.0"}]
    assert build_sagemaker_requests(config, f"s3://{bucket}/sagemaker/abc/model.tar.gz") == requests
    other = build_sagemaker_requests(sagemaker_config(bucket, environment={"OMP_NUM_THREADS": "2"},
                                                      instance_type="ml.c5.xlarge"),
                                     f"s3://{bucket}/sagemaker/abc/model.tar.gz")
    assert other.model_name == requests.model_name and other.endpoint_config_name != requests.endpoint_config_name


def test_sagemaker_deploy_on_moto(aws, bucket, bundle, tmp_path):
    """Package, upload and create model, endpoint config and endpoint as the deployer (exactly the documented IAM
    actions, enforced by moto)."""
    client = aws.sagemaker("deployer")
    config = sagemaker_config(bucket, endpoint_name="textclf-moto", instance_type="ml.c5.xlarge",
                              initial_instance_count=2, wait=True)
    deployment = deploy_sagemaker(config, bundle, storage_config=aws.s3_config("deployer"), client=client)
    assert (deployment.action, deployment.endpoint_status) == ("created", "InService")

    endpoint = client.describe_endpoint(EndpointName="textclf-moto")
    assert endpoint["EndpointConfigName"] == deployment.endpoint_config_name
    endpoint_config = client.describe_endpoint_config(EndpointConfigName=deployment.endpoint_config_name)
    (variant,) = endpoint_config["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        deployment.model_name, "ml.c5.xlarge", 2)
    model = client.describe_model(ModelName=deployment.model_name)
    assert model["ExecutionRoleArn"] == ROLE_ARN
    assert model["PrimaryContainer"]["Image"] == ECR_IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == deployment.model_data_url
    assert model["PrimaryContainer"]["Environment"][SERVING_ARGS_ENV].startswith("--model-name=textclf ")

    # The object SageMaker will unpack into /opt/ml/model is byte-for-byte the local archive.
    local = package_model_tar(bundle, tmp_path / "model.tar.gz")
    prefix, name = deployment.model_data_url.rsplit("/", 1)
    uploaded = Store(prefix, config=aws.s3_config("admin")).read_bytes(name)
    assert uploaded == local.read_bytes()
    assert deployment.model_data_url.endswith(f"/{hashlib.sha256(uploaded).hexdigest()[:16]}/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(uploaded)) as tar:
        assert "model.onnx" in tar.getnames() and "tokenizer.json" in tar.getnames()


def test_sagemaker_failure_rolls_back(aws, bucket, tmp_path):
    """CreateEndpoint is denied: the model, endpoint config and archive created before it are deleted again."""
    bundle = make_bundle(tmp_path / "other")  # different random ONNX bytes: a new archive and model
    client = aws.sagemaker("no-create-endpoint")
    config = sagemaker_config(bucket, endpoint_name="textclf-denied")
    with pytest.raises(TextclfError, match=r"(?s)not authorized to perform: sagemaker:CreateEndpoint.*deleted again: "
                                           r"model textclf-denied-\w+, endpoint_config textclf-denied-\w+, "
                                           r"the uploaded archive"):
        deploy_sagemaker(config, bundle, storage_config=aws.s3_config("no-create-endpoint"), client=client)
    admin = aws.sagemaker("admin")
    assert not [m for m in boto3_list(admin, "models") if m.startswith("textclf-denied")]
    assert not [c for c in boto3_list(admin, "endpoint_configs") if c.startswith("textclf-denied")]
    digest = hashlib.sha256(package_model_tar(bundle, tmp_path / "model.tar.gz").read_bytes()).hexdigest()
    assert not Store(f"s3://{bucket}/sagemaker", config=aws.s3_config("admin")).exists(f"{digest[:16]}/model.tar.gz")


def boto3_list(client: Any, kind: str) -> list[str]:
    """Names of every SageMaker model or endpoint config (the admin's client: the deployer may not list)."""
    if kind == "models":
        return [m["ModelName"] for m in client.list_models()["Models"]]
    return [c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]]


def test_sagemaker_updates_an_existing_endpoint(aws, bucket, bundle, tmp_path):
    """An existing endpoint is switched to the new configuration with UpdateEndpoint (moto has no UpdateEndpoint:
    the SageMaker calls are checked with botocore's Stubber, offline; the archive still goes to moto's S3)."""
    from botocore.stub import Stubber

    client = boto3.client("sagemaker", region_name=S3_REGION, aws_access_key_id="x", aws_secret_access_key="y")
    config = sagemaker_config(bucket, endpoint_name="textclf-live", precision="fp32")
    digest = hashlib.sha256(package_model_tar(bundle, tmp_path / "model.tar.gz").read_bytes()).hexdigest()
    expected = build_sagemaker_requests(config, f"s3://{bucket}/sagemaker/{digest[:16]}/model.tar.gz")
    live = {"EndpointName": "textclf-live"}
    with Stubber(client) as stub:
        stub.add_response("describe_model", {"ModelName": expected.model_name, "CreationTime": 0,
                                             "ModelArn": f"arn:aws:sagemaker:us-east-1:1:model/{expected.model_name}"},
                          {"ModelName": expected.model_name})
        stub.add_client_error("describe_endpoint_config", "ValidationException",
                              'Could not find endpoint configuration "arn:..."',
                              expected_params={"EndpointConfigName": expected.endpoint_config_name})
        stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:ec/x"},
                          expected.create_endpoint_config)
        stub.add_response("describe_endpoint", endpoint_description("InService"), live)
        stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/textclf-live"},
                          {**live, "EndpointConfigName": expected.endpoint_config_name})
        stub.add_response("describe_endpoint", endpoint_description("Updating"), live)
        deployment = deploy_sagemaker(config, bundle, storage_config=aws.s3_config("deployer"), client=client)
        stub.assert_no_pending_responses()
    assert (deployment.action, deployment.endpoint_status) == ("updated", "Updating")
    assert deployment.endpoint_config_name == expected.endpoint_config_name
    assert "--precision=fp32" in expected.create_model["PrimaryContainer"]["Environment"][SERVING_ARGS_ENV]


def endpoint_description(status: str) -> dict[str, Any]:
    return {"EndpointName": "textclf-live", "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/textclf-live",
            "EndpointConfigName": "old", "EndpointStatus": status, "CreationTime": 0, "LastModifiedTime": 0}


def test_sagemaker_bad_credentials_and_bundle(aws, bucket, bundle, tmp_path):
    client = aws.sagemaker("deployer")
    bad = S3Config(endpoint=aws.url.removeprefix("http://"), secure=False, region=S3_REGION,
                   access_key=aws.keys["deployer"][0], secret_key="wrong", retry=FAST_RETRY)
    with pytest.raises(StorageAuthError):  # refused by S3 before any SageMaker call
        deploy_sagemaker(sagemaker_config(bucket, endpoint_name="textclf-badkey"), bundle, storage_config=bad,
                         client=client)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="not a complete export bundle: missing .*model.onnx"):
        deploy_sagemaker(sagemaker_config(bucket, endpoint_name="textclf-empty"), empty,
                         storage_config=aws.s3_config("deployer"), client=client)
    assert not [m for m in boto3_list(aws.sagemaker("admin"), "models")
                if m.startswith(("textclf-badkey", "textclf-empty"))]


def test_sagemaker_cli_deploys_the_production_version(registry, aws_env, bucket, capsys):
    argv = ["deploy", "--registry-uri", str(registry.store.root), "sagemaker", "--role-arn", ROLE_ARN,
            "--image", ECR_IMAGE, "--s3-prefix", f"s3://{bucket}/cli", "--endpoint-name", "textclf-cli", "--wait"]
    assert run_cli(argv) == 0
    deployment = json.loads(capsys.readouterr().out)
    assert deployment["action"] == "created" and deployment["endpoint_status"] == "InService"
    model = aws_env.sagemaker("deployer").describe_model(ModelName=deployment["model_name"])
    assert model["PrimaryContainer"]["ModelDataUrl"].startswith(f"s3://{bucket}/cli/")
    tags = aws_env.sagemaker("admin").list_tags(ResourceArn=model["ModelArn"])["Tags"]
    assert {"Key": "textclf-pipelines/model-version", "Value": "v0.1.0"} in tags

    assert run_cli(["deploy", "sagemaker", "--role-arn", "admin", "--image", ECR_IMAGE, "--s3-prefix",
                    f"s3://{bucket}/cli", "--bundle-dir", "/nonexistent"]) == 2
    assert "role_arn must be an IAM role ARN" in capsys.readouterr().err
