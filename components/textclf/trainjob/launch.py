"""Local launcher of the distributed train stage: ``torchrun --nproc-per-node N -m textclf.trainjob.worker``
(gloo on CPU, nccl on CUDA) with the same arguments the Trainer ``TrainJob`` passes on a cluster."""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from textclf.config import TrainConfig
from textclf.errors import ConfigError, TextclfError
from textclf.ports import free_port
from textclf.trainjob.config import DistributedConfig

log = logging.getLogger(__name__)

#: The per-process entry point (a module, so ``torchrun -m`` and ``python -m`` both run it).
WORKER_MODULE = "textclf.trainjob.worker"


class TrainingFailedError(TextclfError, RuntimeError):
    """A distributed training job (local torchrun or a TrainJob) failed or timed out."""


def worker_arguments(split_dir: str | Path, config: TrainConfig, output_dir: str | Path,
                     checkpoint_root: str | Path | None = None, progress: bool = True) -> list[str]:
    """The worker's arguments: the same on every process, locally and in a TrainJob."""
    settings = {key: value for key, value in config.to_dict().items() if key != "effective_learning_rate"}
    args = ["--splits", str(split_dir), "--output", str(output_dir),
            "--config", json.dumps(settings, sort_keys=True)]
    if checkpoint_root:
        args += ["--checkpoint-root", str(checkpoint_root)]
    if not progress:
        args.append("--no-progress")
    return args


def worker_command(distributed: DistributedConfig, worker_args: list[str], *, local: bool = True,
                   python: str = sys.executable) -> list[str]:
    """``torchrun`` running the worker module. ``local``: one node on this machine (``--standalone``, a free
    rendezvous port); otherwise torchrun reads nodes, node rank and master from the ``PET_*`` variables that the
    Trainer controller sets (so the TrainJob's ``numNodes``/``numProcPerNode`` are the only source)."""
    if local:
        launcher = [python, "-m", "torch.distributed.run", "--nnodes", "1",
                    "--nproc-per-node", str(distributed.procs_per_node)]
        port = distributed.master_port or free_port()
        launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--max-restarts", "0"]
    else:
        launcher = ["torchrun"]
    return [*launcher, "-m", WORKER_MODULE, *worker_args]


def check_distributed(config: TrainConfig, distributed: DistributedConfig) -> None:
    """The checks that need nothing loaded: run before any process starts.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``workers``.
        HardwareUnavailableError: ``qlora`` without CUDA.
    """
    from textclf.train import check_hardware
    from textclf.train.train import per_process_batch_size

    per_process_batch_size(config.batch_size, distributed.workers)
    check_hardware(config.train_method)


def train_distributed(
    split_dir: str | Path,
    config: TrainConfig,
    output_dir: str | Path,
    distributed: DistributedConfig,
    checkpoint_root: str | Path | None = None,
    progress: bool = True,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    echo: Callable[[str], None] | None = None,
):
    """Train with ``distributed.workers`` data-parallel processes on this machine (1: in this process, exactly
    :func:`textclf.train.train_model`). The global batch is ``config.batch_size`` whatever the number of
    processes; rank 0 writes ``output_dir`` (atomically: a failed job leaves it as it was); a rerun resumes the
    checkpoints under ``checkpoint_root`` with any number of processes.

    Args:
        on_start: Called with the ``torchrun`` process once it is started (tests use it to kill a rank).
        echo: Receives each output line of the job (default: the log at INFO; rank 0's progress bar included).

    Raises:
        ConfigError: ``workers`` < 1 or ``batch_size`` not divisible by ``workers`` (before any process starts).
        TrainingFailedError: A process failed (torchrun then stops the others); the message has the job's last
            output lines.
    """
    from textclf.train import TrainResult, train_model
    from textclf.train.train import METADATA_FILE

    if not isinstance(distributed, DistributedConfig):
        raise ConfigError(f"distributed must be a DistributedConfig; got {distributed!r}")
    if distributed.num_nodes != 1:
        raise ConfigError(f"a local launch runs on one node; got num_nodes={distributed.num_nodes} (use a TrainJob)")
    check_distributed(config, distributed)
    if not (Path(split_dir) / "train.parquet").is_file():
        raise ConfigError(f"{split_dir} is not a validate/split output (no train.parquet)")
    if distributed.workers == 1:
        return train_model(split_dir, config, output_dir, checkpoint_root=checkpoint_root, progress=progress)

    command = worker_command(distributed, worker_arguments(split_dir, config, output_dir, checkpoint_root,
                                                           progress))
    log.info("launching %d training processes: %s", distributed.workers, " ".join(command[:12]) + " ...")
    tail: collections.deque[str] = collections.deque(maxlen=40)
    summary = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as job:
        if on_start is not None:
            on_start(job)
        assert job.stdout is not None
        for line in job.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if line.startswith('{"textclf_train_summary"'):
                summary = json.loads(line)["textclf_train_summary"]
            (echo or log.info)(line)
        code = job.wait()
    if code != 0:
        last = "\n".join(tail)
        raise TrainingFailedError(
            f"distributed training with {distributed.workers} processes failed (torchrun exit code {code}; a failed "
            f"or killed process stops the whole group, and {output_dir} was not written). Rerun to resume from the "
            f"newest complete checkpoint. Last output:\n{last}"
        )
    if summary is None:
        from textclf.provenance import read_json

        summary = read_json(Path(output_dir) / METADATA_FILE)["training"]
    return TrainResult(Path(output_dir), summary)
