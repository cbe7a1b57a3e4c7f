"""The train stage's per-process entry point: ``python -m textclf.trainjob.worker`` (under ``torchrun``, in a
Trainer ``TrainJob``, or alone). Every process runs :func:`textclf.train.train_model` with the same arguments;
the process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from textclf.errors import TextclfError


def config_from_json(text: str):
    """A :class:`~textclf.config.TrainConfig` from ``TrainConfig.to_dict()`` JSON (derived keys ignored)."""
    import dataclasses

    from textclf.config import TrainConfig

    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{key: value for key, value in json.loads(text).items() if key in fields})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m textclf.trainjob.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--splits", required=True, help="the validate/split stage's output directory")
    parser.add_argument("--output", required=True, help="the model directory to write (rank 0 writes it)")
    parser.add_argument("--config", required=True, help="TrainConfig as JSON (TrainConfig.to_dict())")
    parser.add_argument("--checkpoint-root", default="", help="resumable checkpoints (directory or s3:// / gs://)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_json(args.config)
        result = _train(args, config)
    except TextclfError as exc:
        print(f"textclf train (rank {rank}): error: {exc}", file=sys.stderr)
        return 2
    if rank == "0":
        print(json.dumps({"textclf_train_summary": result.summary}, default=str), flush=True)
    return 0


def _train(args: argparse.Namespace, config):
    """Train; ``s3://`` / ``gs://`` splits are downloaded first and a remote output is uploaded by rank 0 (a
    TrainJob's pods share no disk with the KFP step that launched them)."""
    import tempfile
    from pathlib import Path

    from textclf.storage import is_remote, localize, upload
    from textclf.train import train_model

    with tempfile.TemporaryDirectory(prefix="textclf-worker-") as scratch:
        splits = localize(args.splits, Path(scratch) / "splits") if is_remote(args.splits) else args.splits
        output = Path(scratch) / "model" if is_remote(args.output) else args.output
        result = train_model(splits, config, output, checkpoint_root=args.checkpoint_root or None,
                             progress=not args.no_progress)
        if is_remote(args.output) and os.environ.get("RANK", "0") == "0":
            upload(output, args.output)
    return result


if __name__ == "__main__":
    sys.exit(main())
