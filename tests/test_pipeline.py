"""Compiled pipeline YAML (golden files, IR validity) and an end-to-end local run with the KFP local runner."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import stratified_head, write_csv_gz
from local_runner_pipelines import echo_pipeline, failing_pipeline
from textclf.pipelines.compile import PIPELINES, stale_pipelines
from textclf.provenance import read_json


def test_committed_pipeline_yaml_is_current():
    stale = stale_pipelines()
    assert stale == {}, "run `make compile`:\n" + "\n".join(f"{k}:\n{v}" for k, v in stale.items())


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_compiled_yaml_is_valid_ir_and_loads_back(pipeline):
    from google.protobuf import json_format
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2

    documents = list(yaml.safe_load_all(pipeline.path.read_text()))
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    model_steps = {"ingest-op", "validate-split-op", "train-op", "evaluate-op", "export-op", "registration-gate-op"}
    expected = {  # top-level tasks; condition-N are the dsl.If / dsl.Else branches
        "training": model_steps | {"condition-1"},
        "training-gpu": model_steps | {"condition-1"},
        "retraining": model_steps | {"evaluate-production-op", "register-op", "gate-op", "condition-branches-1"},
        "distillation": model_steps | {"transformer-logits-op", "train-classical-op", "ensemble-op", "distill-op",
                                       "compare-models-op", "cascade-op", "condition-1"},
    }[pipeline.name]
    assert spec.pipeline_info.name == f"textclf-{pipeline.name}"
    assert set(spec.root.dag.tasks) == expected
    loaded = components.load_component_from_file(str(pipeline.path))
    inputs = loaded.component_spec.inputs
    assert "dataset_uri" in inputs and not inputs["dataset_uri"].optional  # required
    optional = {
        "distillation": ("teacher_epochs", "student_epochs", "student_layers", "distill_temperature", "distill_alpha",
                         "ensemble_method", "student_init", "batch_size", "learning_rate", "max_train_rows", "seed"),
    }.get(pipeline.name, ("method", "epochs", "batch_size", "learning_rate", "max_train_rows", "seed"))
    for name in optional:
        assert inputs[name].optional, name
    # Nothing machine-specific leaks into the YAML.
    assert "/work/" not in pipeline.path.read_text() and "site-packages" not in pipeline.path.read_text()


@pytest.mark.parametrize("pipeline", PIPELINES[:3], ids=lambda p: p.name)
def test_the_distributed_parameters_reach_the_train_step(pipeline):
    """workers > 1 makes the train step a Kubeflow Trainer TrainJob (train_op; tests/test_trainjob.py): one step,
    no dsl.If / dsl.OneOf, since KFP 2.17's local runner cannot pass a OneOf artifact downstream."""
    spec = yaml.safe_load(pipeline.path.read_text())
    train = spec["root"]["dag"]["tasks"]["train-op"]["inputs"]["parameters"]
    names = ("workers", "num_nodes", "trainjob_namespace", "trainjob_runtime_name", "trainjob_cpu", "trainjob_memory",
             "trainjob_gpus", "trainjob_start_timeout_seconds", "trainjob_timeout_seconds")
    for name in names:
        assert train[name] == {"componentInputParameter": name}, name
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["workers"]["defaultValue"] == 1
    assert defaults["trainjob_runtime_name"]["defaultValue"] == "textclf-torch-distributed"
    assert defaults["trainjob_gpus"]["defaultValue"] == (1 if pipeline.name == "training-gpu" else 0)


@pytest.mark.parametrize("pipeline", PIPELINES[:3], ids=lambda p: p.name)
def test_the_training_strategies_reach_the_train_step_with_the_typed_defaults(pipeline):
    from textclf.config import TrainConfig

    spec = yaml.safe_load(pipeline.path.read_text())
    train = spec["root"]["dag"]["tasks"]["train-op"]["inputs"]["parameters"]
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    for name in TrainConfig.STRATEGY_FIELDS:
        assert train[name] == {"componentInputParameter": name}, name
        assert defaults[name]["defaultValue"] == getattr(TrainConfig(), name), name


@pytest.mark.parametrize(("arguments", "message"), [
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"workers": 3, "num_nodes": 2}, r"workers \(3\) must be a multiple of num_nodes \(2\)"),
    ({"workers": 2, "trainjob_memory": "8 GB"}, "memory must be a Kubernetes quantity"),
    ({"workers": 2, "trainjob_namespace": "Kubeflow_NS"}, "namespace must be a DNS label"),
    ({"workers": 2, "trainjob_start_timeout_seconds": 0.0}, "start_timeout_seconds must be > 0"),
])
def test_bad_distributed_parameters_are_refused_before_the_run(arguments, message):
    from textclf.errors import ConfigError
    from textclf.pipelines.parameters import check_pipeline_arguments
    from textclf.pipelines.training.pipeline import training_pipeline

    with pytest.raises(ConfigError, match=message):
        check_pipeline_arguments(training_pipeline, {"dataset_uri": "data", **arguments})


def test_gpu_variant_requests_a_gpu_for_training():
    gpu = yaml.safe_load((PIPELINES[1].path).read_text())
    train_executor = gpu["deploymentSpec"]["executors"]["exec-train-op"]["container"]
    assert train_executor["resources"]["accelerator"]["resourceCount"] == "1"
    assert "components-gpu" in train_executor["image"]
    assert gpu["root"]["inputDefinitions"]["parameters"]["method"]["defaultValue"] == "qlora"


@pytest.fixture(scope="module")
def local_run(ag_news_frames, tmp_path_factory):
    """The training pipeline run by kfp.local on 1,200 real train rows (2 epochs) and 256 test rows."""
    from textclf.pipelines.local import run_training_locally

    root = tmp_path_factory.mktemp("e2e")
    write_csv_gz(stratified_head(ag_news_frames["train"], 300, seed=5), root / "data" / "train.csv.gz")
    write_csv_gz(stratified_head(ag_news_frames["test"], 64, seed=5), root / "data" / "test.csv.gz")
    arguments = {
        "dataset_uri": str(root / "data"),
        "epochs": 2.0,
        "learning_rate": 2e-4,
        "validation_fraction": 0.2,
        "checkpoint_steps": 30,
        "checkpoint_root": str(root / "runs" / "checkpoints"),
        "seed": 3,
    }
    return run_training_locally(arguments, root / "runs")


@pytest.mark.slow
def test_local_pipeline_run_end_to_end(local_run):
    for name, path in local_run["artifacts"].items():
        assert Path(path).exists(), name
    metrics = local_run["metrics"]
    assert metrics["test_rows"] == 256
    assert metrics["train_rows"] == 960
    assert metrics["test_accuracy"] > 0.6  # chance is 0.25
    assert 0 < metrics["test_macro_f1"] <= 1
    parity = metrics["onnx_parity"]
    assert parity["texts"] == 256 and parity["passed"] is True
    assert parity["fp32_max_abs_logit_diff"] <= 1e-3
    assert parity["int8_argmax_agreement"] >= 0.99
    onnx_dir = Path(local_run["artifacts"]["onnx_model"])
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "labels.json"} <= {p.name for p in onnx_dir.iterdir()}
    model_meta = read_json(Path(local_run["artifacts"]["model"]) / "textclf_metadata.json")
    split_report = read_json(Path(local_run["artifacts"]["splits"]) / "validation_report.json")
    assert model_meta["data"]["fingerprints"]["test_set_sha256"] == split_report["fingerprints"]["test_set_sha256"]
    latest = read_json(Path(local_run["summary_file"]).parents[2] / "latest.json")
    assert latest["run_dir"] == local_run["run_dir"]


@pytest.mark.slow
def test_local_run_records_kfp_metrics_and_confusion_matrix(local_run):
    run_dir = Path(local_run["run_dir"])
    executor_output = json.loads((run_dir / "evaluate-op" / "executor_output.json").read_text())
    artifacts = executor_output["artifacts"]
    scalar = artifacts["metrics"]["artifacts"][0]["metadata"]
    assert scalar["accuracy"] == pytest.approx(local_run["metrics"]["test_accuracy"])
    matrix = artifacts["confusion_matrix"]["artifacts"][0]["metadata"]["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["World", "Sports", "Business", "Sci/Tech"]
    assert sum(sum(row["row"]) for row in matrix["rows"]) == 256
    html = (run_dir / "evaluate-op" / "report").read_text()
    assert "<img" in html
    predictions = pd.read_parquet(Path(local_run["artifacts"]["evaluation"]) / "predictions.parquet")
    assert len(predictions) == 256


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_pipelines_declare_the_outputs_a_local_run_reads(pipeline):
    outputs = pipeline.function().component_spec.outputs
    model_outputs = {"splits", "validation_report", "model", "evaluation", "evaluation_report", "metrics",
                     "onnx_model", "parity"}
    assert model_outputs <= set(outputs)
    if pipeline.name == "retraining":
        assert {"registered_version", "decision", "gate_metrics"} <= set(outputs)


def test_local_run_returns_declared_outputs_and_keeps_task_logs_off_the_console(tmp_path):
    from textclf.pipelines.local import run_pipeline_locally

    console = io.StringIO()
    run = run_pipeline_locally(echo_pipeline, {"text": "hello"}, tmp_path / "root", console=console)
    assert run.values == {"Output": "hello"}
    assert [(stage.task, stage.name, stage.status) for stage in run.stages] == [("echo-op", "echo", "SUCCESS")]
    assert run.logs_dir == run.run_dir / "logs"
    assert "echo says hello" in (run.logs_dir / "echo-op.log").read_text()
    shown = console.getvalue()
    assert "echo says hello" not in shown and "echo done in" in shown
    assert len(shown.splitlines()) == 2  # "echo ..." and "echo done in ..."


def test_a_failing_task_reports_the_tail_of_its_log_and_where_the_log_is(tmp_path):
    from textclf.pipelines.local import FAILURE_TAIL_LINES, LocalRunError, run_pipeline_locally

    console = io.StringIO()
    with pytest.raises(LocalRunError) as caught:
        run_pipeline_locally(failing_pipeline, {"text": "hi"}, tmp_path / "root", console=console)
    error = caught.value
    assert error.task == "fail"
    assert error.log_file is not None and error.log_file.name == "fail-op.log"
    assert error.log_file.parent.name == "logs" and error.log_file.parent.parent.parent == tmp_path / "root"
    assert len(error.tail) == FAILURE_TAIL_LINES and any("ValueError: boom: hi" in line for line in error.tail)
    assert str(error.log_file) in str(error)
    assert "line 0" in error.log_file.read_text()  # the whole log is kept
    assert "fail FAILED in" in console.getvalue() and "line 39" not in console.getvalue()
