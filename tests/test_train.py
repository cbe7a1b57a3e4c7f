"""Training: artifacts and metadata, LoRA merge, QLoRA's CPU refusal, and kill-then-resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from textclf.config import TrainConfig, TrainMethod
from textclf.errors import ConfigError, HardwareUnavailableError
from textclf.provenance import read_json
from textclf.train import train_model

pytestmark = pytest.mark.slow


def test_model_artifact_is_complete(tiny_model):
    names = {p.name for p in tiny_model.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "labels.json", "textclf_metadata.json"} <= names
    meta = read_json(tiny_model / "textclf_metadata.json")
    assert meta["labels"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(meta["data"]["fingerprints"]["test_set_sha256"]) == 64
    assert meta["params"]["method"] == "full"
    assert meta["params"]["effective_learning_rate"] == 2e-4
    assert meta["package_versions"]["torch"].startswith("2.13")
    assert meta["git_commit"]
    assert meta["training"]["train_rows"] == 320
    # 2 epochs of 10 steps; better than chance (0.25) on validation
    assert meta["training"]["global_steps"] == 20
    assert meta["training"]["validation_accuracy"] > 0.4
    assert any("eval_loss" in entry for entry in meta["history"])


def test_qlora_fails_at_once_on_cpu(small_splits, tmp_path):
    started = time.perf_counter()
    with pytest.raises(HardwareUnavailableError, match=r"method 'qlora' needs a CUDA GPU"):
        train_model(small_splits, TrainConfig(method="qlora"), tmp_path / "model")
    assert time.perf_counter() - started < 5  # before any data or model is loaded
    assert not (tmp_path / "model").exists()


def test_unknown_method_and_bad_base_model_are_clear_errors(small_splits, tmp_path):
    with pytest.raises(ConfigError, match=r"method must be one of full, lora, qlora; got 'adapter'"):
        TrainConfig(method="adapter")
    with pytest.raises(ConfigError, match=r"cannot load base model '.*no-such-model'"):
        train_model(small_splits, TrainConfig(base_model=str(tmp_path / "no-such-model")), tmp_path / "m")


def test_lora_adapters_are_merged_for_export(small_splits, tmp_path):
    config = TrainConfig(method=TrainMethod.LORA.value, epochs=0.25, checkpoint_steps=100, early_stopping_patience=0)
    result = train_model(small_splits, config, tmp_path / "model", progress=False)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert not [k for k in keys if "lora_" in k]
    assert any(k.startswith("bert.encoder.layer.0.attention.self.query") for k in keys)
    assert result.summary["method"] == "lora"
    assert read_json(tmp_path / "model" / "textclf_metadata.json")["params"]["effective_learning_rate"] == 1e-3


TRAIN_SCRIPT = """
import sys
from textclf.config import TrainConfig
from textclf.train import train_model
config = TrainConfig(epochs=1.0, batch_size=8, max_length=32, checkpoint_steps=10, early_stopping_patience=0, seed=11)
result = train_model(sys.argv[1], config, sys.argv[2], checkpoint_root=sys.argv[3], progress=False)
print("RESUMED_FROM", result.summary["resumed_from"])
"""


def _train_process(splits: Path, out: Path, checkpoints: Path) -> subprocess.Popen:
    """The training script in its own process group, its output in ``<out>.log`` (a pipe nobody reads while the
    run goes on would fill up and block it)."""
    log = open(f"{out}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, str(splits), str(out), str(checkpoints)],
        stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    log.close()
    return process


def _finish(process: subprocess.Popen, out: Path) -> str:
    process.wait(timeout=600)
    output = Path(f"{out}.log").read_text()
    assert process.returncode == 0, output[-3000:]
    return output


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_killed_training_resumes_from_its_checkpoint(small_splits, tmp_path):
    """Kill a run after its first checkpoint, rerun it, and get the same weights as an uninterrupted run."""
    checkpoints = tmp_path / "ckpt"
    killed = _train_process(small_splits, tmp_path / "model", checkpoints)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("*/checkpoint-10/trainer_state.json")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert killed.poll() is None, "training finished before it could be killed; " + (tmp_path / "model.log").read_text()[-2000:]
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "model").exists()  # nothing half-written

    # A checkpoint cut off mid-write (no trainer_state.json) must be skipped, not loaded.
    run_dir = next(checkpoints.iterdir())
    (run_dir / "checkpoint-35").mkdir()
    (run_dir / "checkpoint-35" / "model.safetensors").write_bytes(b"partial")

    output = _finish(_train_process(small_splits, tmp_path / "model", checkpoints), tmp_path / "model")
    resumed_line = [line for line in output.splitlines() if line.startswith("RESUMED_FROM")][0]
    assert "checkpoint-" in resumed_line and "checkpoint-35" not in resumed_line
    meta = read_json(tmp_path / "model" / "textclf_metadata.json")
    assert meta["training"]["global_steps"] == 40  # 320 rows / batch 8, the whole epoch

    _finish(_train_process(small_splits, tmp_path / "straight", tmp_path / "ckpt-straight"), tmp_path / "straight")
    resumed_weights, straight_weights = _weights(tmp_path / "model"), _weights(tmp_path / "straight")
    assert resumed_weights.keys() == straight_weights.keys()
    worst = max(float((resumed_weights[k] - straight_weights[k]).abs().max()) for k in resumed_weights)
    assert worst < 1e-4, f"resumed run diverged from the uninterrupted run by {worst}"
