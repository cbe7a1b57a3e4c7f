"""The ``textclf`` command line: clear errors (exit 2) for bad input, and the compile check."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import requires_ag_news


def textclf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textclf.cli", *args], capture_output=True, text=True, timeout=300)


def test_missing_dataset_directory(tmp_path):
    result = textclf("run", "--dataset-uri", str(tmp_path / "missing"), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert "textclf: error: dataset directory not found" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_train_file(tmp_path):
    (tmp_path / "data").mkdir()
    result = textclf("run", "--dataset-uri", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert "missing train file" in result.stderr


@requires_ag_news
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "qlora"], "method 'qlora' needs a CUDA GPU"),
        (["--epochs", "0"], "invalid epochs: 0.0"),
        (["--validation-fraction", "0.7"], "validation_fraction must be in (0, 0.5)"),
        (["--max-train-rows", "-5"], "max_train_rows must be >= 0"),
    ],
)
def test_bad_parameters_fail_before_any_work(tmp_path, flags, message):
    result = textclf("run", *flags, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_unknown_method_is_rejected_by_the_parser():
    result = textclf("run", "--method", "adapter")
    assert result.returncode == 2
    assert "invalid choice: 'adapter'" in result.stderr


def test_compile_check_passes_on_committed_yaml():
    result = textclf("compile", "--check")
    assert result.returncode == 0, result.stderr
    assert "all compiled pipelines are current" in result.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--epochs", "0"], "invalid epochs: 0.0"), (["--batch-size", "0"], "invalid batch_size: 0")],
)
def test_bench_train_rejects_bad_settings_before_any_work(tmp_path, flags, message):
    output = tmp_path / "bench_train.json"
    result = textclf("bench-train", *flags, "--output", str(output), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not output.exists() and not (tmp_path / "runs").exists()


def test_bench_train_target_counts_only_one_epoch_runs():
    from textclf.benchmarks.train_bench import ACCURACY_TARGET, meets_accuracy_target

    assert meets_accuracy_target(ACCURACY_TARGET, 1.0)
    assert not meets_accuracy_target(ACCURACY_TARGET - 1e-4, 1.0)
    assert not meets_accuracy_target(0.99, 2.0)  # more epochs than the target allows never count


def test_serve_passes_the_servers_own_flags_through(tmp_path):
    """`textclf serve --model-dir DIR --precision fp32` reaches the server's parser (it names the missing directory)
    instead of stopping at textclf's: the README's `make serve SERVE_ARGS=...` depends on it."""
    missing = tmp_path / "no-bundle"
    result = textclf("serve", "--model-dir", str(missing), "--precision", "fp32", "--http-port", "0")
    assert result.returncode == 2, result.stderr
    assert "unrecognized arguments" not in result.stderr
    assert f"{missing}: model directory not found" in result.stderr


def test_serve_flags_after_runs_dir_still_reach_the_server(tmp_path):
    result = textclf("serve", "--runs-dir", str(tmp_path / "runs"), "--precision", "fp32")
    assert result.returncode == 2
    assert f"no local training run in {tmp_path / 'runs'}" in result.stderr


def test_other_commands_still_reject_unknown_flags(tmp_path):
    result = textclf("compile", "--precision", "fp32")
    assert result.returncode == 2
    assert "unrecognized arguments: --precision fp32" in result.stderr


def test_every_pipeline_parameter_is_a_run_flag_with_the_pipelines_default():
    from textclf.cli import build_parser
    from textclf.pipelines.parameters import parameter_specs
    from textclf.pipelines.training.pipeline import training_pipeline

    args = build_parser().parse_args(["run"])
    for name, spec in parameter_specs(training_pipeline).items():
        assert hasattr(args, name), name
        if spec.optional:
            assert getattr(args, name) == spec.default, name
    assert args.max_train_rows == 0  # the pipeline's default; `make run` sizes itself in the Makefile's RUN_SIZE
    assert build_parser().parse_args(["run", "--early-stopping-patience", "0"]).early_stopping_patience == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--opset", "16"], "opset must be >= 17"),  # once a pipeline-only parameter: now a flag, checked first
        (["--max-invalid-fraction", "1.5"], "max_invalid_fraction must be in [0, 1)"),
        (["--epochs", "one"], "argument --epochs: invalid float value: 'one'"),
    ],
)
def test_every_flag_is_checked_before_any_work(tmp_path, flags, message):
    result = textclf("run", "--dataset-uri", str(tmp_path), *flags, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()
