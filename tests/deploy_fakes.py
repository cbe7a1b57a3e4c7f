"""Shared fakes and fixtures of the deployment-target tests (tests/test_deploy_*.py): a moto server (S3 + SageMaker +
IAM) with IAM users, a registry on it with a production version, a small export bundle, and a fake of the Kubeflow
Pipelines v2beta1 REST API on 127.0.0.1 that records every request (headers, query, multipart upload, JSON bodies).

Import the fixtures into a test module with ``from deploy_fakes import ...`` (as with storage_servers). The servers
run once per importing test module and are stopped at its end; no test sends traffic anywhere but 127.0.0.1.
"""

import os

os.environ.setdefault("NO_GCE_CHECK", "true")  # before google.auth loads: never probe the GCE metadata server

import email.parser
import email.policy
import json
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
from test_registry import make_run

from textclf.deploy.sagemaker import REQUIRED_IAM_ACTIONS
from textclf.pipelines.compile import default_pipeline_package
from textclf.registry import ModelRegistry
from textclf.storage import S3Config

TRAINING_YAML = default_pipeline_package("training")
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
