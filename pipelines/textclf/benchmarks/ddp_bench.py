"""Distributed data-parallel benchmark: the train stage with 1 and with N processes (torchrun, gloo on CPU) on the
same AG News rows and the same global batch; test accuracy and wall time of each, and whether the N-process run is
within the target of the 1-process one. ``make bench-ddp``; resumable: a rerun with the same settings skips the
runs already in the JSON and resumes an interrupted run from its checkpoints.

Target (the full benchmark): 2 processes within 0.5 accuracy points of 1 process on a 6,000-row pilot
(``--train-rows 6000``, hours on 2 shared cores). A smaller ``--train-rows`` is a pilot of the pilot: it runs the
same code, but its accuracy gap says little (one test row is ``100 / test_rows`` points).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

#: Largest accepted |accuracy(N processes) - accuracy(1 process)|, in points, on the 6,000-row pilot.
TARGET_POINTS = 0.5
TARGET_TRAIN_ROWS = 6000


def default_dataset_uri() -> str:
    from textclf.cli import default_dataset_uri as cli_default

    return cli_default()


def _settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def prepare_splits(dataset_uri: str, train_rows: int, test_rows: int, work: Path) -> Path:
    """Ingest and split once per settings (``train_rows`` train + validation rows, ``test_rows`` test rows)."""
    from textclf.config import IngestConfig, SplitConfig
    from textclf.ingest import ingest_dataset
    from textclf.validate import validate_and_split

    split_dir = work / "splits"
    if (split_dir / "train.parquet").is_file():
        return split_dir
    ingest_dataset(IngestConfig(dataset_uri=dataset_uri), work / "ingest")
    validate_and_split(work / "ingest", SplitConfig(max_train_rows=train_rows, max_test_rows=test_rows,
                                                    validation_fraction=0.1, seed=7), split_dir)
    return split_dir


def test_accuracy(model_dir: Path, split_dir: Path, max_length: int) -> float:
    import numpy as np
    import pandas as pd
    from textclf.evaluate.evaluate import predict_logits
    from textclf.provenance import read_json
    from textclf.serving.contract import LABELS_FILE
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = read_json(model_dir / LABELS_FILE)["labels"]
    test = pd.read_parquet(split_dir / "test.parquet")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    logits = predict_logits(model, tokenizer, test["text"].tolist(), 64, max_length)
    ids = test["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    return float((np.argmax(logits, axis=-1) == ids).mean())


def run_ddp_benchmark(output: Path, work_dir: Path, dataset_uri: str, train_rows: int, test_rows: int,
                      workers: list[int], epochs: float, batch_size: int, max_length: int) -> dict[str, Any]:
    from textclf.config import TrainConfig
    from textclf.trainjob import DistributedConfig, train_distributed

    settings = {"dataset_uri": dataset_uri, "train_rows": train_rows, "test_rows": test_rows, "epochs": epochs,
                "batch_size": batch_size, "max_length": max_length, "method": "full", "backend": "gloo (CPU)"}
    key = _settings_key(settings)
    from textclf.train.train import per_process_batch_size

    for count in workers:  # every refusal before the first run starts
        DistributedConfig(workers=count)
        per_process_batch_size(batch_size, count)
    work = work_dir / key
    previous = json.loads(output.read_text()) if output.is_file() else {}
    runs: dict[str, Any] = previous.get("runs", {}) if previous.get("settings_key") == key else {}
    split_dir = prepare_splits(dataset_uri, train_rows, test_rows, work)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, max_length=max_length, checkpoint_steps=50,
                         early_stopping_patience=0)
    result: dict[str, Any] = {}
    for count in workers:
        if str(count) in runs:
            print(f"bench-ddp: {count} process(es): already measured, skipped", file=sys.stderr)
            continue
        model_dir = work / f"workers-{count}" / "model"
        started = time.perf_counter()
        trained = train_distributed(split_dir, config, model_dir, DistributedConfig(workers=count),
                                    checkpoint_root=work / f"workers-{count}" / "checkpoints", progress=False)
        wall = time.perf_counter() - started
        runs[str(count)] = {
            "workers": count,
            "per_process_batch_size": batch_size // count,
            "wall_seconds": wall,  # this invocation: includes process start-up; a resumed run counts only the rest
            "train_runtime_seconds": trained.summary.get("train_runtime_seconds"),
            "resumed_from": trained.summary.get("resumed_from"),
            "global_steps": trained.summary.get("global_steps"),
            "validation_accuracy": trained.summary.get("validation_accuracy"),
            "validation_loss": trained.summary.get("validation_loss"),
            "test_accuracy": test_accuracy(model_dir, split_dir, max_length),
        }
        result = _write(output, settings, key, runs, workers, train_rows)
    return result or _write(output, settings, key, runs, workers, train_rows)


def _write(output: Path, settings: dict[str, Any], key: str, runs: dict[str, Any], workers: list[int],
           train_rows: int) -> dict[str, Any]:
    from textclf.benchmarks.machine import machine_info

    comparisons = {}
    if "1" in runs:
        for count, run in runs.items():
            if count != "1":
                points = 100 * abs(run["test_accuracy"] - runs["1"]["test_accuracy"])
                comparisons[count] = {"test_accuracy_difference_points": points,
                                      "within_target": points <= TARGET_POINTS,
                                      "speedup": runs["1"]["wall_seconds"] / run["wall_seconds"]}
    result = {
        "benchmark": "ddp",
        "settings": settings,
        "settings_key": key,
        "workers": workers,
        "machine": machine_info(),
        "target": {"max_test_accuracy_difference_points": TARGET_POINTS, "train_rows": TARGET_TRAIN_ROWS,
                   "pilot_of_the_pilot": train_rows < TARGET_TRAIN_ROWS},
        "runs": runs,
        "comparisons": comparisons,
        "target_met": (bool(comparisons) and all(c["within_target"] for c in comparisons.values())
                       if train_rows >= TARGET_TRAIN_ROWS else None),
        "created_unix": time.time(),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(output)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textclf.benchmarks.ddp_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-uri", default=None, help="AG News (default: the shared copy)")
    parser.add_argument("--train-rows", type=int, default=TARGET_TRAIN_ROWS, help="train + validation rows")
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch (a multiple of every --workers)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--output", type=Path, default=Path("runs/bench/bench_ddp.json"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/ddp"))
    args = parser.parse_args(argv)
    from textclf.errors import TextclfError

    try:
        result = run_ddp_benchmark(args.output, args.work_dir, args.dataset_uri or default_dataset_uri(),
                                   args.train_rows, args.test_rows, args.workers, args.epochs, args.batch_size,
                                   args.max_length)
    except TextclfError as exc:
        print(f"bench-ddp: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: result[k] for k in ("settings", "runs", "comparisons", "target_met")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
