"""The distill stage on real data (a k-layer student of the tiny fine-tuned teacher, its ONNX export, a rerun that
resumes), its refusals before any weights load, the distillation pipeline's parameter checks and CLI, and an
end-to-end local run of the distillation pipeline."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import stratified_head, write_csv_gz
from textclf.classical.classical import LOGITS_FILES
from textclf.config import DistillConfig, EnsembleConfig, ExportConfig, TrainConfig
from textclf.errors import ConfigError, DataValidationError
from textclf.provenance import read_json, sha256_file

#: The student runs: 320 train rows / batch 32 = 10 steps an epoch, a checkpoint every 5.
STUDENT_TRAIN = TrainConfig(epochs=1.0, learning_rate=2e-4, checkpoint_steps=5, early_stopping_patience=0, seed=3)


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def teacher_logits(tiny_model, small_splits, tmp_path_factory) -> Path:
    """The tiny teacher's logits on the train and validation splits."""
    from textclf.ensemble.members import write_transformer_logits

    out = tmp_path_factory.mktemp("teacher_logits") / "logits"
    assert write_transformer_logits(tiny_model, small_splits, out) == {"train": 320, "validation": 80}
    return out


@pytest.fixture(scope="module")
def student(small_splits, teacher_logits, tiny_model, tmp_path_factory):
    """A k=2 student of the tiny teacher, distilled for one epoch on its logits (checkpoints kept for a rerun)."""
    from textclf.distill.stage import distill_student

    root = tmp_path_factory.mktemp("student")
    result = distill_student(small_splits, teacher_logits, tiny_model, DistillConfig(student_layers=2),
                             STUDENT_TRAIN, root / "model", checkpoint_root=root / "ckpt", progress=False)
    return result, root


def test_student_keeps_evenly_spaced_teacher_layers_and_records_its_teacher(student, teacher_logits, tiny_model):
    from textclf.distill import evenly_spaced_layers

    result, _ = student
    assert read_json(result.model_dir / "config.json")["num_hidden_layers"] == 2
    meta = read_json(result.model_dir / "textclf_metadata.json")
    distillation = meta["distillation"]
    assert distillation["kept_teacher_layers"] == evenly_spaced_layers(6, 2) == [2, 5]
    assert distillation["teacher_logits_sha256"] == sha256_file(teacher_logits / LOGITS_FILES["train"])
    assert (distillation["temperature"], distillation["alpha"], distillation["init"]) == (2.0, 0.5, "teacher")
    assert distillation["source_model"] == str(tiny_model)
    assert meta["labels"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert meta["training"]["train_rows"] == 320 and meta["training"]["global_steps"] == 10
    assert meta["training"]["resumed_from"] is None
    assert read_json(result.model_dir / "labels.json")["labels"] == meta["labels"]


def test_student_exports_to_onnx_within_the_parity_gate(student, small_splits, tmp_path):
    from textclf.export import export_model

    result, _ = student
    parity_texts = tmp_path / "parity_texts.parquet"
    pd.read_parquet(small_splits / "test.parquet", columns=["text"]).head(48).to_parquet(parity_texts, index=False)
    exported = export_model(result.model_dir, parity_texts, ExportConfig(min_int8_agreement=0.9), tmp_path / "onnx")
    assert exported.parity["passed"] is True and exported.parity["texts"] == 48
    assert exported.parity["fp32_max_abs_logit_diff"] <= 1e-3
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "labels.json", "export_metadata.json"} <= {
        path.name for path in (tmp_path / "onnx").iterdir()}


def test_rerun_with_the_same_checkpoint_root_resumes(student, small_splits, teacher_logits, tiny_model):
    """The finished run's last checkpoint is picked up: no step is trained again, the same weights come out."""
    from textclf.distill.stage import distill_student

    first, root = student
    rerun = distill_student(small_splits, teacher_logits, tiny_model, DistillConfig(student_layers=2),
                            STUDENT_TRAIN, root / "rerun", checkpoint_root=root / "ckpt", progress=False)
    assert rerun.summary["resumed_from"] is not None and rerun.summary["resumed_from"].endswith("checkpoint-10")
    assert rerun.summary["run_key"] == first.summary["run_key"]
    assert rerun.summary["global_steps"] == 10
    first_weights, rerun_weights = _weights(first.model_dir), _weights(rerun.model_dir)
    assert first_weights.keys() == rerun_weights.keys()
    assert max(float((first_weights[k] - rerun_weights[k]).abs().max()) for k in first_weights) < 1e-6


def test_labels_only_student_needs_no_teacher_logits(small_splits, tiny_model, tmp_path):
    from textclf.distill.stage import distill_student

    train = TrainConfig(epochs=0.5, learning_rate=2e-4, checkpoint_steps=5, early_stopping_patience=0, seed=3)
    result = distill_student(small_splits, None, tiny_model, DistillConfig(alpha=1.0, student_layers=1), train,
                             tmp_path / "model", progress=False)
    meta = read_json(result.model_dir / "textclf_metadata.json")
    assert meta["distillation"]["teacher_logits_sha256"] is None
    assert meta["distillation"]["alpha"] == 1.0 and meta["distillation"]["kept_teacher_layers"] == [5]
    assert read_json(result.model_dir / "config.json")["num_hidden_layers"] == 1
    assert meta["training"]["global_steps"] == 5


# --- refusals, each before any weights load ---------------------------------------------------------------------


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any classifier's weights are loaded."""
    import transformers

    def fail(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad input was refused")

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", fail)
    return fail


@pytest.fixture
def no_student(monkeypatch, no_weights):
    """Fail the test if the student is built at all."""
    monkeypatch.setattr("textclf.distill.stage.build_student", no_weights)


def _edited_logits(teacher_logits: Path, tmp_path: Path, edit) -> Path:
    out = tmp_path / "edited"
    shutil.copytree(teacher_logits, out)
    path = out / LOGITS_FILES["train"]
    edit(pd.read_parquet(path)).to_parquet(path, index=False)
    return out


def test_alpha_below_1_without_teacher_logits_is_refused(no_student, small_splits, tiny_model, tmp_path):
    from textclf.distill.stage import distill_student

    with pytest.raises(ConfigError, match="teacher logits are required"):
        distill_student(small_splits, None, tiny_model, DistillConfig(alpha=0.5), STUDENT_TRAIN, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_teacher_logits_missing_train_rows_are_refused(no_student, small_splits, teacher_logits, tiny_model,
                                                       tmp_path):
    from textclf.distill.stage import distill_student

    edited = _edited_logits(teacher_logits, tmp_path, lambda frame: frame.iloc[5:])
    with pytest.raises(DataValidationError, match="miss 5 of the 320 train rows"):
        distill_student(small_splits, edited, tiny_model, DistillConfig(), STUDENT_TRAIN, tmp_path / "m")


def test_teacher_logits_with_other_labels_are_refused(no_student, small_splits, teacher_logits, tiny_model,
                                                      tmp_path):
    from textclf.distill.stage import distill_student

    edited = _edited_logits(teacher_logits, tmp_path, lambda frame: frame.rename(columns={"logit_World": "logit_X"}))
    with pytest.raises(DataValidationError, match=r"lack columns \['logit_World'\]"):
        distill_student(small_splits, edited, tiny_model, DistillConfig(), STUDENT_TRAIN, tmp_path / "m")


def test_a_lora_student_is_refused(no_student, small_splits, teacher_logits, tiny_model, tmp_path):
    from textclf.distill.stage import distill_student

    lora = TrainConfig(method="lora", epochs=1.0)
    with pytest.raises(ConfigError, match="method 'full'"):
        distill_student(small_splits, teacher_logits, tiny_model, DistillConfig(), lora, tmp_path / "m")


def test_more_student_layers_than_the_teacher_has_are_refused(no_weights, small_splits, teacher_logits, tiny_model,
                                                              tmp_path):
    from textclf.distill.stage import distill_student

    with pytest.raises(ConfigError, match=r"student_layers must be an integer in 1\.\.6"):
        distill_student(small_splits, teacher_logits, tiny_model, DistillConfig(student_layers=7), STUDENT_TRAIN,
                        tmp_path / "m", checkpoint_root=tmp_path / "ckpt")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("field", "value"), [("temperature", 0), ("temperature", float("inf")), ("alpha", 1.5),
                                              ("alpha", -0.1), ("student_layers", 0), ("init", "x")])
def test_bad_distill_config_values_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=f"DistillConfig.{field}"):
        DistillConfig(**{field: value})


def test_member_logits_are_never_written_for_the_test_split(no_weights, tiny_model, small_splits, tmp_path):
    from textclf.ensemble.members import write_transformer_logits

    with pytest.raises(DataValidationError, match="train', 'validation'] only"):
        write_transformer_logits(tiny_model, small_splits, tmp_path / "logits", splits=("test",))
    assert not (tmp_path / "logits").exists()


def test_an_ensemble_of_one_member_is_refused(teacher_logits, tmp_path):
    from textclf.ensemble.ensemble import fit_ensemble_dirs

    with pytest.raises(DataValidationError, match="at least 2 members"):
        fit_ensemble_dirs({"teacher": teacher_logits}, EnsembleConfig(), tmp_path / "ensemble")
    assert not (tmp_path / "ensemble").exists()


# --- pipeline parameters and CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("distill_alpha", 1.5, "DistillConfig.alpha"),
        ("distill_temperature", 0.0, "DistillConfig.temperature"),
        ("student_layers", 7, r"student_layers must be an integer in 1\.\.6"),
        ("student_layers", 0, "DistillConfig.student_layers"),
        ("ensemble_method", "bogus", "bogus"),
        ("student_init", "x", "DistillConfig.init"),
    ],
)
def test_distillation_pipeline_refuses_bad_values(name, value, message):
    from textclf.pipelines.distillation.pipeline import distillation_pipeline
    from textclf.pipelines.parameters import check_pipeline_arguments

    with pytest.raises(ConfigError, match=message):
        check_pipeline_arguments(distillation_pipeline, {"dataset_uri": "/data", name: value})


def test_distillation_pipeline_defaults_pass_and_the_gate_alpha_is_not_a_distill_alpha():
    from textclf.pipelines.distillation.pipeline import distillation_pipeline
    from textclf.pipelines.parameters import check_pipeline_arguments
    from textclf.pipelines.retraining.pipeline import retraining_pipeline

    assert check_pipeline_arguments(distillation_pipeline, {"dataset_uri": "/data"}) == {"dataset_uri": "/data"}
    arguments = {"dataset_uri": "/data", "registry_uri": "/registry", "alpha": 0.05}
    assert check_pipeline_arguments(retraining_pipeline, arguments) == arguments


def test_cli_help_lists_the_distillation_flags(capsys):
    from textclf.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["run", "--pipeline", "distillation", "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for flag in ("--teacher-epochs", "--student-layers", "--distill-temperature", "--distill-alpha",
                 "--ensemble-method", "--student-init", "--student-epochs"):
        assert flag in shown, flag


def test_cli_refuses_too_many_student_layers_before_any_work(small_ag_news, tmp_path, capsys):
    from textclf.cli import main

    started = time.perf_counter()
    code = main(["run", "--pipeline", "distillation", "--dataset-uri", str(small_ag_news), "--student-layers", "7",
                 "--runs-dir", str(tmp_path / "runs")])
    seconds = time.perf_counter() - started
    assert code == 2
    error = capsys.readouterr().err
    assert "textclf: error:" in error and "student_layers" in error
    assert not (tmp_path / "runs").exists()
    assert seconds < 60, seconds  # parsing and checks only (no training), even on a busy machine


# --- end to end ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distillation_run(ag_news_frames, tmp_path_factory):
    """The distillation pipeline run by kfp.local on 240 real train rows (192 train / 48 validation), 128 test."""
    from textclf.pipelines.local import run_distillation_locally

    root = tmp_path_factory.mktemp("distillation_e2e")
    write_csv_gz(stratified_head(ag_news_frames["train"], 60, seed=5), root / "data" / "train.csv.gz")
    write_csv_gz(stratified_head(ag_news_frames["test"], 32, seed=5), root / "data" / "test.csv.gz")
    arguments = {
        "dataset_uri": str(root / "data"),
        "teacher_epochs": 2.0,
        "student_epochs": 1.0,
        "learning_rate": 2e-4,
        "student_learning_rate": 2e-4,
        "validation_fraction": 0.2,
        "checkpoint_steps": 20,
        "student_layers": 3,
        "min_int8_agreement": 0.9,  # the tiny models' logits are close together
        "checkpoint_root": str(root / "runs" / "checkpoints"),
        "seed": 3,
    }
    started = time.perf_counter()
    summary = run_distillation_locally(arguments, root / "runs")
    print(f"\ndistillation pipeline end to end: {time.perf_counter() - started:.1f} s")
    return summary


@pytest.mark.slow
def test_distillation_pipeline_runs_end_to_end(distillation_run):
    artifacts = distillation_run["artifacts"]
    for name in ("splits", "teacher", "classical", "ensemble", "model", "evaluation", "comparison", "onnx_model",
                 "cascade"):
        assert name in artifacts, name
    for name, path in artifacts.items():
        assert Path(path).exists(), name
    metrics = distillation_run["metrics"]
    assert metrics["test_rows"] == 128
    assert metrics["train_rows"] == 192 and metrics["validation_rows"] == 48
    comparison = metrics["comparison"]
    assert set(comparison) == {"teacher", "classical", "ensemble_vote", "ensemble_stack", "student"}
    for name, row in comparison.items():
        assert 0.25 < row["accuracy"] <= 1, (name, row)
    assert comparison["student"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["onnx_parity"]["passed"] is True
    cascade = metrics["cascade"]
    assert 0 < cascade["threshold"] < 1 and 0 <= cascade["validation_stage2_share"] <= 1
    from textclf.serving.config import Precision
    from textclf.serving.models import load_served_model

    served = load_served_model(cascade["path"], Precision.INT8, 1, 8, 0)  # the cascade bundle loads as served
    assert served.cascade and [answer.stage in (1, 2) for answer in served.score(["stocks fell"])] == [True]

    model_dir, onnx_dir = Path(artifacts["model"]), Path(artifacts["onnx_model"])
    assert read_json(model_dir / "config.json")["num_hidden_layers"] == 3
    assert read_json(model_dir / "textclf_metadata.json")["distillation"]["kept_teacher_layers"] == [1, 3, 5]
    evaluation = json.loads((Path(artifacts["evaluation"]) / "metrics.json").read_text())
    temperature = evaluation["calibration"]["temperature"]
    assert read_json(onnx_dir / "export_metadata.json")["temperature"] == pytest.approx(temperature)
    assert metrics["temperature"] == pytest.approx(temperature)
