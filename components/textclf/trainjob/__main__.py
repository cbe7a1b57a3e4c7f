"""``python -m textclf.trainjob``: the train stage on this machine with ``--workers`` DDP processes (torchrun,
gloo on CPU); ``--workers 1`` trains in this process. TrainConfig fields are set with ``--set name=value``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from textclf.config import TrainConfig
from textclf.errors import ConfigError, TextclfError
from textclf.trainjob.config import DistributedConfig
from textclf.trainjob.launch import train_distributed


def train_config(pairs: list[str]) -> TrainConfig:
    """A TrainConfig from ``name=value`` pairs (values parsed as JSON when they parse, else strings)."""
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in fields:
            raise ConfigError(f"--set takes name=value with name one of {sorted(fields)}; got {pair!r}")
        try:
            settings[name] = json.loads(value)
        except json.JSONDecodeError:
            settings[name] = value
    return TrainConfig(**settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textclf.trainjob", description=__doc__.splitlines()[0])
    parser.add_argument("--splits", required=True, help="the validate/split stage's output directory")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--workers", type=int, default=DistributedConfig.workers, help="DDP processes (>= 1)")
    parser.add_argument("--checkpoint-root", default="", help="resumable checkpoints (a rerun resumes, any N)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a TrainConfig field")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train_distributed(args.splits, train_config(args.set), args.output,
                                   DistributedConfig(workers=args.workers), checkpoint_root=args.checkpoint_root or None)
    except TextclfError as exc:
        print(f"textclf.trainjob: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
