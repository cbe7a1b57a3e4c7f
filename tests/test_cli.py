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
