"""The train step as a Kubeflow Trainer TrainJob: the objects against the Trainer 2.3 CRDs
(../shared/schemas/kubeflow-trainer/, trainer.kubeflow.org v1alpha1), and the component's client against a
stand-in of the Kubernetes API on 127.0.0.1 (tests/trainjob_fakes.py): exact create body, status transitions,
failure, a TrainJob that never starts, bad settings refused before any request."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json

from pathlib import Path

import jsonschema
import pytest
import yaml
from storage_servers import S3_REGION, make_s3_bucket, s3_server  # noqa: F401  (pytest fixture)
from test_manifests import MANIFESTS, REPO_ROOT, _strict, render
from textclf.config import TrainConfig
from textclf.errors import ConfigError
from textclf.images import COMPONENT_IMAGE, GPU_COMPONENT_IMAGE
from textclf.trainjob import DistributedConfig, TrainingFailedError, TrainJobConfig
from textclf.trainjob.kube import (
    build_trainjob,
    kube_api_client,
    run_trainjob,
    train_with_trainjob,
    trainjob_for_training,
    trainjob_name,
)
from textclf.trainjob.launch import worker_arguments
from trainjob_fakes import TrainJobCluster, condition, jobs_status

CRD_DIR = REPO_ROOT.parent / "shared" / "schemas" / "kubeflow-trainer"
CRD_FILES = {"TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
             "TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.yaml",
             "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.yaml"}
requires_crds = pytest.mark.skipif(not (CRD_DIR / CRD_FILES["TrainJob"]).is_file(),
                                   reason=f"Kubeflow Trainer CRDs not found at {CRD_DIR}")


@functools.cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    crd = yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text())
    assert crd["spec"]["group"] == "trainer.kubeflow.org" and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1" and v["served"]]
    return jsonschema.Draft4Validator(_strict(served["schema"]["openAPIV3Schema"]))


def trainer_errors(resource: dict) -> list[str]:
    assert resource["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in _validator(resource["kind"]).iter_errors(resource)]
    name = resource["metadata"]["name"]  # the CRD's CEL rules on the name (jsonschema does not run CEL)
    import re

    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        errors.append(f"metadata/name: {name!r} is not an RFC 1035 label of <= 63 characters")
    return errors


TRAIN = TrainConfig(base_model="s3://models/minilm", epochs=1.0, batch_size=32, checkpoint_steps=50)
JOB = TrainJobConfig(distributed=DistributedConfig(workers=4, num_nodes=2), namespace="ml", cpu="4",
                     memory="16Gi", start_timeout_seconds=30, poll_seconds=1)


def _body(name: str = "textclf-train-0001") -> dict:
    return trainjob_for_training(name, "s3://bucket/splits", TRAIN, "s3://bucket/model", JOB, "s3://bucket/ckpt")


# --- objects against the CRDs -----------------------------------------------------------------------------------


@requires_crds
def test_trainingruntime_manifest_matches_the_crd_and_runs_our_worker():
    (runtime,) = render(MANIFESTS / "trainer")
    assert runtime["kind"] == "TrainingRuntime"
    assert trainer_errors(runtime) == []
    assert runtime["metadata"]["name"] == JOB.runtime_name and runtime["metadata"]["namespace"] == "kubeflow"
    assert "torch" in runtime["spec"]["mlPolicy"]
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    (container,) = node["template"]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "node" and container["image"] == COMPONENT_IMAGE
    assert container["command"] == ["torchrun", "-m", "textclf.trainjob.worker"]


@requires_crds
def test_trainjob_body_is_exact_and_matches_the_crd():
    body = _body()
    assert trainer_errors(body) == []
    args = worker_arguments("s3://bucket/splits", TRAIN, "s3://bucket/model", "s3://bucket/ckpt", progress=False)
    assert body == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "textclf-train-0001", "namespace": "ml",
                     "labels": {"app.kubernetes.io/name": "textclf", "app.kubernetes.io/component": "train"}},
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                           "name": "textclf-torch-distributed"},
            "trainer": {
                "image": COMPONENT_IMAGE,
                "command": ["torchrun", "-m", "textclf.trainjob.worker", *args],
                "numNodes": 2,
                "numProcPerNode": 2,
                "resourcesPerNode": {"requests": {"cpu": "4", "memory": "16Gi"},
                                     "limits": {"cpu": "4", "memory": "16Gi"}},
            },
        },
    }
    assert json.loads(args[args.index("--config") + 1])["batch_size"] == 32  # the global batch
    gpu = build_trainjob("textclf-gpu", args, TrainJobConfig(gpus=1))
    assert gpu["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    assert trainer_errors(gpu) == []


@requires_crds
def test_generated_names_and_the_stand_in_statuses_match_the_crd():
    for _ in range(20):
        assert trainer_errors(_body(trainjob_name())) == []
    for status in filter(None, _complete_script() + _failed_script()):  # {}: the stand-in sends no status
        assert trainer_errors({**_body(), "status": status}) == []


# --- the client against the stand-in ----------------------------------------------------------------------------


def _complete_script() -> list[dict]:
    created = condition("Created", "JobsCreationSucceeded", "jobs are created")
    return [
        {},
        {"conditions": [created], "jobsStatus": jobs_status()},
        {"conditions": [created], "jobsStatus": jobs_status(active=2, ready=2)},
        {"conditions": [created, condition("Complete", "JobsCompleted", "jobs are completed")],
         "jobsStatus": jobs_status(succeeded=2)},
    ]


def _failed_script() -> list[dict]:
    created = condition("Created", "JobsCreationSucceeded", "jobs are created")
    return [
        {"conditions": [created], "jobsStatus": jobs_status(active=2)},
        {"conditions": [created, condition("Failed", "JobsFailed", "jobset failed: node-0 exit code 1")],
         "jobsStatus": jobs_status(failed=1)},
    ]


def _clock(step: float = 1.0):
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_run_trainjob_creates_the_exact_body_and_follows_the_status_to_complete():
    body = _body()
    with TrainJobCluster(_complete_script(), logs="step 1\nstep 2\nmodel written") as cluster:
        lines: list[str] = []
        outcome = run_trainjob(body, JOB, kube_api_client(cluster.url), clock=_clock(), sleep=lambda s: None,
                               echo=lines.append)
    assert cluster.created == [body]
    assert cluster.requests[0] == ("POST", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs")
    assert outcome.name == "textclf-train-0001"
    assert [state.split(" (")[0] for state in outcome.history] == [
        "no status yet", "Created=True", "Created=True", "Created=True"]
    assert "active=2 ready=2" in outcome.history[2] and "Complete=True" in outcome.history[3]
    assert "model written" in outcome.logs and "textclf-train-0001-node-0-0" in outcome.logs
    assert cluster.deleted == []
    assert any("created TrainJob ml/textclf-train-0001" in line for line in lines)


def test_a_failed_trainjob_raises_with_its_message_and_the_trainer_log():
    with (TrainJobCluster(_failed_script(), logs="rank1: RuntimeError: boom\nChildFailedError") as cluster,
          pytest.raises(TrainingFailedError, match=r"failed: JobsFailed: jobset failed: node-0 exit code 1") as err):
        run_trainjob(_body(), JOB, kube_api_client(cluster.url), clock=_clock(), sleep=lambda s: None)
    assert "ChildFailedError" in str(err.value) and "RuntimeError: boom" in str(err.value)


def test_a_trainjob_that_never_starts_times_out_with_a_clear_message_and_is_deleted():
    pending = {"conditions": [condition("Created", "JobsCreationSucceeded", "jobs are created")],
               "jobsStatus": jobs_status()}
    with (TrainJobCluster([pending]) as cluster,
          pytest.raises(TrainingFailedError, match=r"never started: no trainer pod ran within 30 s") as err):
        run_trainjob(_body(), JOB, kube_api_client(cluster.url), clock=_clock(5.0), sleep=lambda s: None)
    assert "TrainingRuntime 'textclf-torch-distributed' exists in ml" in str(err.value)
    assert "deleted" in str(err.value)
    assert cluster.deleted == [("ml", "textclf-train-0001")]


def test_an_unfinished_trainjob_times_out_after_timeout_seconds():
    running = {"jobsStatus": jobs_status(active=2, ready=2)}
    job = TrainJobConfig(start_timeout_seconds=30, timeout_seconds=60, poll_seconds=1)
    with (TrainJobCluster([running], logs="still training") as cluster,
          pytest.raises(TrainingFailedError, match=r"(?s)did not finish within 60 s .*still training")):
        run_trainjob(_body(), job, kube_api_client(cluster.url), clock=_clock(10.0), sleep=lambda s: None)
    assert cluster.deleted


def test_an_existing_name_is_refused_by_the_api():
    with TrainJobCluster(_complete_script()) as cluster:
        run_trainjob(_body(), JOB, kube_api_client(cluster.url), clock=_clock(), sleep=lambda s: None)
        with pytest.raises(TrainingFailedError, match="refused TrainJob ml/textclf-train-0001: 409"):
            run_trainjob(_body(), JOB, kube_api_client(cluster.url), clock=_clock(), sleep=lambda s: None)


def test_train_with_trainjob_fetches_the_model_and_returns_its_summary(tmp_path):
    def fetch(uri: str, local: str) -> None:
        assert uri == "s3://mlpipeline/v2/artifacts/run/train/model"
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "textclf_metadata.json").write_text(json.dumps(
            {"training": {"validation_accuracy": 0.9, "world_size": 4}}))

    with TrainJobCluster(_complete_script()) as cluster:
        summary = train_with_trainjob("minio://mlpipeline/v2/artifacts/run/validate/splits", TRAIN,
                                      "minio://mlpipeline/v2/artifacts/run/train/model", str(tmp_path / "model"),
                                      dataclasses.replace(JOB, poll_seconds=0.01), kube_api_client(cluster.url),
                                      fetch=fetch)
    assert summary["validation_accuracy"] == 0.9 and summary["trainjob"].startswith("textclf-train-")
    command = cluster.created[0]["spec"]["trainer"]["command"]
    assert command[command.index("--splits") + 1] == "s3://mlpipeline/v2/artifacts/run/validate/splits"


# --- bad settings, refused before any request -------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, -2])
def test_workers_below_one_is_refused(workers):
    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        TrainJobConfig(distributed=DistributedConfig(workers=workers))


def test_bad_settings_are_refused_before_the_api_is_called(tmp_path):
    with TrainJobCluster(_complete_script()) as cluster:
        api = kube_api_client(cluster.url)
        job3 = TrainJobConfig(distributed=DistributedConfig(workers=3))
        with pytest.raises(ConfigError, match="not divisible by the 3 training processes"):
            train_with_trainjob("s3://bucket/splits", TRAIN, "s3://bucket/model", str(tmp_path / "m"), job3, api)
        with pytest.raises(ConfigError, match="local path: a TrainJob's pods cannot read"):
            train_with_trainjob(str(tmp_path / "splits"), TRAIN, "s3://bucket/model", str(tmp_path / "m"), JOB, api)
        with pytest.raises(ConfigError, match="multiple of num_nodes"):
            DistributedConfig(workers=3, num_nodes=2)
        with pytest.raises(ConfigError, match="Kubernetes quantity"):
            TrainJobConfig(memory="lots")
    assert cluster.requests == []


def test_train_op_with_workers_above_one_runs_a_trainjob_and_returns_the_model_rank_zero_wrote(
        s3_server, tmp_path, monkeypatch):  # noqa: F811
    """The train component itself (its Python function, as the KFP launcher calls it) with workers=2: it creates
    the TrainJob on the stand-in API ($TEXTCLF_KUBE_HOST), follows it to Complete and downloads the model from
    the step's output URI on moto's S3 (where rank 0 uploads it; uploaded here by the test in its place)."""
    from textclf.storage import upload
    from textclf.train.component import train_op

    for name, value in {"AWS_ENDPOINT_URL": f"http://{s3_server.endpoint}", "AWS_ACCESS_KEY_ID": s3_server.access_key,
                        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_REGION": S3_REGION}.items():
        monkeypatch.setenv(name, value)
    bucket = make_s3_bucket(s3_server)
    rank_zero = tmp_path / "written_by_rank_0"
    rank_zero.mkdir()
    (rank_zero / "textclf_metadata.json").write_text(json.dumps(
        {"training": {"validation_accuracy": 0.875, "world_size": 2, "train_rows": 100}}))
    upload(rank_zero, f"s3://{bucket}/run/train/model")

    class LocalPath:  # the KFP launcher maps an artifact URI to a local path; here: the test's tmp_path
        def __init__(self, uri: str, path: Path):
            self.uri, self.path, self.metadata = uri, str(path), {}

    created = condition("Created", "JobsCreationSucceeded", "jobs are created")
    complete = {"conditions": [created, condition("Complete", "JobsCompleted", "jobs are completed")],
                "jobsStatus": jobs_status(succeeded=1)}
    model = LocalPath(f"minio://{bucket}/run/train/model", tmp_path / "model")
    board = LocalPath(f"minio://{bucket}/run/train/tensorboard", tmp_path / "tensorboard")
    with TrainJobCluster([complete], logs="rank 0: model uploaded") as cluster:
        monkeypatch.setenv("TEXTCLF_KUBE_HOST", cluster.url)
        accuracy = train_op.python_func(
            splits=LocalPath(f"minio://{bucket}/run/split/splits", tmp_path / "splits"), base_model="",
            method="full", epochs=1.0, batch_size=32, learning_rate=0.0, max_length=64, checkpoint_steps=50,
            early_stopping_patience=0, seed=13, checkpoint_root=f"s3://{bucket}/ckpt", model=model, tensorboard=board,
            workers=2, trainjob_namespace="ml", trainjob_memory="4Gi", trainjob_start_timeout_seconds=30.0)
    assert accuracy == 0.875
    assert model.metadata["world_size"] == 2 and model.metadata["trainjob"].startswith("textclf-train-")
    assert (tmp_path / "model" / "textclf_metadata.json").is_file()
    body = cluster.created[0]
    assert cluster.requests[0] == ("POST", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs")
    assert trainer_errors(body) == []
    trainer = body["spec"]["trainer"]
    assert trainer["numNodes"] == 1 and trainer["numProcPerNode"] == 2
    assert trainer["resourcesPerNode"]["limits"]["memory"] == "4Gi"
    assert trainer["image"] == COMPONENT_IMAGE
    assert TrainJobConfig(gpus=1).trainer_image == GPU_COMPONENT_IMAGE  # derived from the GPUs, unless given
    assert TrainJobConfig(gpus=1, image="registry/own:1").trainer_image == "registry/own:1"
    command = trainer["command"]
    assert command[command.index("--splits") + 1] == f"s3://{bucket}/run/split/splits"  # minio:// as the pods see it
    assert command[command.index("--output") + 1] == f"s3://{bucket}/run/train/model"


def test_train_op_refuses_workers_below_one_before_training(tmp_path):
    from textclf.train.component import train_op

    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        train_op.python_func(splits=None, base_model="", method="full", epochs=1.0, batch_size=32, learning_rate=0.0,
                             max_length=64, checkpoint_steps=50, early_stopping_patience=0, seed=13, checkpoint_root="",
                             model=None, tensorboard=None, workers=0)


def test_train_op_trainjob_defaults_are_the_typed_configs():
    """train_op's signature spells its TrainJob and LoRA defaults as literals (a KFP component's source runs alone in its
    container); they must be the typed configs'."""
    import inspect

    from textclf.train.component import train_op

    defaults = {name: p.default for name, p in inspect.signature(train_op.python_func).parameters.items()}
    job, distributed = TrainJobConfig(), DistributedConfig()
    assert defaults["workers"] == distributed.workers and defaults["num_nodes"] == distributed.num_nodes
    for field in ("namespace", "runtime_name", "cpu", "memory", "gpus", "start_timeout_seconds", "timeout_seconds"):
        assert defaults[f"trainjob_{field}"] == getattr(job, field), field
    train = TrainConfig()
    for field in ("lora_r", "lora_alpha", "lora_dropout", *TrainConfig.STRATEGY_FIELDS):
        assert defaults[field] == getattr(train, field), field
    assert TrainConfig(lora_target_modules=defaults["lora_target_modules"]).lora_target_modules == ()


# --- the worker's object-store paths (what a TrainJob pod does), against moto's S3 on 127.0.0.1 ----------------


@pytest.mark.parametrize("rank", ["0", "1"])
def test_worker_reads_remote_splits_and_rank_zero_uploads_the_model(rank, s3_server, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    import textclf.train
    from textclf.storage import Store, upload
    from textclf.train import TrainResult
    from textclf.trainjob import worker

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_server.endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", S3_REGION)
    monkeypatch.setenv("RANK", rank)
    bucket = make_s3_bucket(s3_server)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.parquet").write_bytes(b"rows")
    upload(tmp_path / "splits", f"s3://{bucket}/run/splits")
    seen = {}

    def fake_train_model(splits, config, output, checkpoint_root=None, progress=True):
        seen.update(splits=str(splits), batch_size=config.batch_size, checkpoint_root=checkpoint_root)
        assert (splits / "train.parquet").read_bytes() == b"rows"  # downloaded before training
        if rank == "0":
            output.mkdir(parents=True)
            (output / "textclf_metadata.json").write_text('{"training": {}}')
        return TrainResult(output, {"validation_accuracy": 0.5})

    monkeypatch.setattr(textclf.train, "train_model", fake_train_model)
    args = worker_arguments(f"s3://{bucket}/run/splits", TRAIN, f"s3://{bucket}/run/model", f"s3://{bucket}/ckpt",
                            progress=False)
    assert worker.main(args) == 0
    assert seen["batch_size"] == 32 and seen["checkpoint_root"] == f"s3://{bucket}/ckpt"
    assert Store(f"s3://{bucket}/run/model").exists("textclf_metadata.json") == (rank == "0")
