"""Deployment to Kubeflow Pipelines, offline: ``kfp.Client`` talks to a small HTTP server on 127.0.0.1 that answers
the KFP v2beta1 REST endpoints and records every request (headers, query, multipart upload, JSON bodies; the fake is
in tests/deploy_fakes.py)."""

import hashlib
import json
from pathlib import Path

import pytest
from deploy_fakes import ARGUMENTS, TRAINING_YAML, compiled_spec, run_cli
from deploy_fakes import kfp, kfp_server  # noqa: F401  (pytest fixtures)
from storage_servers import HOST, free_port
from test_manifests import MANIFESTS

from textclf.deploy.kubeflow import KubeflowConfig, load_pipeline_package, submit_kubeflow_run
from textclf.errors import ConfigError, TextclfError

# --- Kubeflow Pipelines -----------------------------------------------------------------------------------------


def test_kubeflow_uploads_the_pipeline_and_starts_a_run(kfp):
    host, state = kfp
    config = KubeflowConfig(pipeline_package=TRAINING_YAML, host=host, token="s3cret-token", namespace="team-a",
                            arguments=ARGUMENTS, run_name="nightly", pipeline_root="minio://mlpipeline/v2/artifacts",
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
    run = submit_kubeflow_run(KubeflowConfig.from_env(pipeline_package=TRAINING_YAML,
                                                      arguments={"dataset_uri": "gs://d"}, upload=False))
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
        submit_kubeflow_run(KubeflowConfig(pipeline_package=TRAINING_YAML, host=host,
                                           arguments={"dataset_uri": "gs://d"}))
    port = free_port()  # nothing listens there
    with pytest.raises(TextclfError, match="could not reach Kubeflow Pipelines"):
        submit_kubeflow_run(KubeflowConfig(pipeline_package=TRAINING_YAML, host=f"http://{HOST}:{port}",
                                           namespace="team-a", arguments={"dataset_uri": "gs://d"}))


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
