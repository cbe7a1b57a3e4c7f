"""Distributed data-parallel training on this machine: 2 CPU processes (torchrun, gloo) against 1 process with the
same global batch, rank-0-only outputs, a killed rank failing the job cleanly, resume with another process count.

Tolerance: 2 processes match 1 process to within 0.02 in validation loss and 2 of 32 validation examples in
accuracy, not bit-exactly: each rank pads its half batch to its own longest text (different padded shapes, so
different float summation order), each rank draws its own dropout masks, and the gloo all-reduce sums the two
half-batch gradients in another order than one backward pass over the whole batch. The examples of every step are
the same (rank r takes the r-th half of the batch one process would take).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from textclf.config import TrainConfig
from textclf.errors import ConfigError
from textclf.provenance import read_json
from textclf.train.train import METADATA_FILE, per_process_batch_size
from textclf.trainjob import DistributedConfig, TrainingFailedError, train_distributed
from textclf.trainjob.launch import worker_arguments, worker_command

LOSS_TOLERANCE = 0.02
ACCURACY_TOLERANCE = 2 / 32 + 1e-9

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ddp_splits(small_splits, tmp_path_factory) -> Path:
    """The small split cut to 128 train and 32 validation rows (8 steps of 16 per epoch)."""
    out = tmp_path_factory.mktemp("ddp_splits") / "splits"
    shutil.copytree(small_splits, out)
    for name, rows in (("train.parquet", 128), ("validation.parquet", 32)):
        frame = pd.read_parquet(out / name)
        frame.sample(n=rows, random_state=0).sort_index().to_parquet(out / name)
    return out


def _config(**overrides) -> TrainConfig:
    settings = {"epochs": 1.0, "batch_size": 16, "learning_rate": 2e-4, "max_length": 48, "checkpoint_steps": 4,
                    "early_stopping_patience": 0}
    settings.update(overrides)
    return TrainConfig(**settings)


def test_two_processes_match_one_process_with_the_same_global_batch(ddp_splits, tmp_path):
    config = _config()
    single = train_distributed(ddp_splits, config, tmp_path / "one" / "model", DistributedConfig(workers=1),
                               progress=False)
    lines: list[str] = []
    double = train_distributed(ddp_splits, config, tmp_path / "two" / "model", DistributedConfig(workers=2),
                               progress=False, echo=lines.append)

    assert double.summary["world_size"] == 2 and double.summary["per_process_batch_size"] == 8
    assert double.summary["global_steps"] == single.summary["global_steps"] == 8
    assert double.summary["run_key"] == single.summary["run_key"]  # resumable with any number of processes
    assert abs(double.summary["validation_loss"] - single.summary["validation_loss"]) <= LOSS_TOLERANCE
    assert abs(double.summary["validation_accuracy"] - single.summary["validation_accuracy"]) <= ACCURACY_TOLERANCE
    # Rank 0 alone wrote the model directory (one summary line; no staging or checkpoint leftovers beside it).
    assert sum(line.startswith('{"textclf_train_summary"') for line in lines) == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["model"]
    metadata = read_json(tmp_path / "two" / "model" / METADATA_FILE)
    assert metadata["training"]["world_size"] == 2
    assert {"model.safetensors", "config.json", "labels.json"} <= {p.name for p in (tmp_path / "two" / "model").iterdir()}


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(child) for child in (task / "children").read_text().split()]
    return out


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return item[5:].decode()
    return None


def test_killing_one_rank_fails_the_job_cleanly_and_a_rerun_resumes_with_another_process_count(ddp_splits,
                                                                                                  tmp_path):
    config = _config(epochs=1.5, checkpoint_steps=2)  # 12 steps; the kill comes after the first checkpoint
    checkpoints = tmp_path / "checkpoints"
    output = tmp_path / "out" / "model"
    killed: list[int] = []

    def kill_rank_one_after_first_checkpoint(job) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and job.poll() is None:
                if any((path / "trainer_state.json").is_file() for path in checkpoints.glob("*/checkpoint-*")):
                    for child in _children(job.pid):
                        if _rank_of(child) == "1":
                            os.kill(child, signal.SIGKILL)
                            killed.append(child)
                            return
                time.sleep(0.2)

        threading.Thread(target=watch, daemon=True).start()

    with pytest.raises(TrainingFailedError, match=r"2 processes failed .*was not written"):
        train_distributed(ddp_splits, config, output, DistributedConfig(workers=2), checkpoint_root=checkpoints,
                          progress=False, on_start=kill_rank_one_after_first_checkpoint)
    assert killed, "rank 1 was never killed"
    assert not output.exists()
    assert not output.parent.exists() or not [p for p in output.parent.iterdir() if "staging" in p.name]

    resumed = train_distributed(ddp_splits, config, output, DistributedConfig(workers=1),
                                checkpoint_root=checkpoints, progress=False)
    assert resumed.summary["resumed_from"] is not None
    assert Path(resumed.summary["resumed_from"]).name.startswith("checkpoint-")
    assert resumed.summary["global_steps"] == 12
    assert read_json(output / METADATA_FILE)["training"]["resumed_from"] == resumed.summary["resumed_from"]


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_below_one_is_refused(workers):
    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        DistributedConfig(workers=workers)


def test_batch_not_divisible_by_workers_is_refused_before_any_process_starts(ddp_splits, tmp_path):
    with pytest.raises(ConfigError, match="not divisible by the 3 training processes"):
        train_distributed(ddp_splits, _config(batch_size=16), tmp_path / "model", DistributedConfig(workers=3))
    assert not (tmp_path / "model").exists()
    assert per_process_batch_size(32, 4) == 8


def test_train_model_under_torchrun_refuses_a_batch_the_world_size_does_not_divide(ddp_splits, tmp_path,
                                                                                    monkeypatch):
    from textclf.train import train_model

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="not divisible"):
        train_model(ddp_splits, _config(), tmp_path / "model")


def test_worker_command_is_torchrun_of_the_worker_module(tmp_path):
    args = worker_arguments("/splits", _config(), "/out/model", "s3://bucket/ckpt", progress=False)
    local = worker_command(DistributedConfig(workers=4, master_port=29500), args)
    assert local[1:8] == ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "4", "--rdzv-backend"]
    assert local[local.index("-m", 2):][:2] == ["-m", "textclf.trainjob.worker"]
    assert "127.0.0.1:29500" in local
    cluster = worker_command(DistributedConfig(workers=4, num_nodes=2), args, local=False)
    assert cluster[:3] == ["torchrun", "-m", "textclf.trainjob.worker"]
    assert args[-3:] == ["--checkpoint-root", "s3://bucket/ckpt", "--no-progress"]
