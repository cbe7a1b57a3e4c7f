"""``make bench-strategies``: one ablation row per training strategy (``TrainConfig.STRATEGY_FIELDS``), each the
plain recipe with that one option changed, trained on the same pilot rows (6,000 train + validation rows of AG
News, 1 epoch) and scored on the full test set, with its effect against the plain row as a **paired** difference
(the same test texts: the standard error of the mean of per-text correctness differences, far smaller than either
accuracy's own) and its training throughput. Resumable: a rerun with the same settings skips the rows already in
the JSON and resumes an interrupted row from its checkpoints.

Throughput target (issue 16): full fine-tuning of MiniLM-L6 at batch 32 >= 40 samples/s on 2 cores with bf16
autocast where the CPU has it, test accuracy within 0.3 points of fp32 on this pilot. A CPU without bf16 records
its flags and the row as not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from textclf.benchmarks.ddp_bench import _settings_key, default_dataset_uri, prepare_splits

BASELINE = "plain"
#: Row name -> the TrainConfig fields it changes from the plain recipe.
ROWS: dict[str, dict[str, Any]] = {
    BASELINE: {},
    "bf16": {"precision": "bf16"},
    "label_smoothing_0.1": {"label_smoothing": 0.1},
    "fgm": {"adversarial": "fgm"},
    "pgd_3": {"adversarial": "pgd", "pgd_steps": 3},
    "curriculum_length": {"curriculum": "length"},
    "class_weights_balanced": {"class_weights": "balanced"},
    "llrd_0.8": {"layerwise_lr_decay": 0.8},
    "grad_accumulation_4": {"gradient_accumulation_steps": 4},
    "grad_checkpointing": {"gradient_checkpointing": True},
}
TARGET_SAMPLES_PER_SECOND = 40.0
TARGET_BF16_POINTS = 0.3
TARGET_TRAIN_ROWS = 6000
#: Per row: 1/0 per test text (file order), what the paired differences are computed from.
CORRECT_FILE = "test_correct.json"


def paired_difference(correct: Any, baseline_correct: Any) -> dict[str, float]:
    """Accuracy difference (points) of two models on the same texts and its standard error: the mean and the
    standard error of the per-text differences of correctness (each -1, 0 or 1)."""
    import numpy as np

    a, b = np.asarray(correct, dtype=float), np.asarray(baseline_correct, dtype=float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"paired scores need the same >= 2 texts; got {a.shape} and {b.shape}")
    diff = a - b
    se = float(diff.std(ddof=1) / np.sqrt(diff.size))
    return {"points": 100 * float(diff.mean()), "standard_error_points": 100 * se,
            "ci95_points": [100 * (float(diff.mean()) - 1.96 * se), 100 * (float(diff.mean()) + 1.96 * se)],
            "texts": int(diff.size), "only_this_right": int((diff > 0).sum()),
            "only_plain_right": int((diff < 0).sum())}


def correctness_on_test(model_dir: Path, split_dir: Path, max_length: int) -> list[int]:
    """1/0 per test text (file order): the model's argmax equals the label."""
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
    return (np.argmax(logits, axis=-1) == ids).astype(int).tolist()


def measure_precision_throughput(split_dir: Path, work: Path, rows: int, rounds: int) -> dict[str, Any]:
    """Training samples/s of fp32 and bf16 on the first ``rows`` training rows' worth of steps, alternated for
    ``rounds`` rounds in one process (so a shared host's drift hits both alike), no validation inside; medians.
    bf16 is left out (with the reason) on a CPU without native bf16."""
    import shutil
    import statistics

    from textclf.config import TrainConfig
    from textclf.errors import HardwareUnavailableError
    from textclf.provenance import read_json
    from textclf.train import train_model
    from textclf.train.strategies import resolve_precision
    from textclf.validate.validate import REPORT_FILE

    train_rows = read_json(split_dir / REPORT_FILE)["rows_out"]["train"]
    precisions = ["fp32", "bf16"]
    try:
        resolve_precision("bf16")
    except HardwareUnavailableError as exc:
        precisions, skipped = ["fp32"], str(exc)
    else:
        skipped = None
    measured: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(rounds):
        for precision in precisions:
            config = TrainConfig(epochs=min(1.0, rows / train_rows), checkpoint_steps=100_000,
                                 early_stopping_patience=0, precision=precision)
            out = work / "throughput" / precision
            result = train_model(split_dir, config, out, progress=False)
            measured[precision].append(float(result.summary["train_samples_per_second"]))
            shutil.rmtree(out, ignore_errors=True)
    medians = {p: statistics.median(v) for p, v in measured.items()}
    return {"rows": rows, "rounds": rounds, "samples_per_second": measured, "median": medians,
            "bf16_speedup": medians["bf16"] / medians["fp32"] if "bf16" in medians else None,
            "bf16_not_run": skipped}


def run_strategy_benchmark(output: Path, work_dir: Path, dataset_uri: str, train_rows: int, test_rows: int,
                           rows: list[str], epochs: float = 1.0, throughput_rows: int = 0,
                           throughput_rounds: int = 2) -> dict[str, Any]:
    from textclf.config import TrainConfig
    from textclf.errors import ConfigError, HardwareUnavailableError
    from textclf.train import train_model
    from textclf.train.strategies import BF16_CPU_FLAGS, cpu_flags, resolve_precision

    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise ConfigError(f"unknown rows {unknown}; known: {list(ROWS)}")
    rows = [BASELINE, *[row for row in rows if row != BASELINE]]  # every effect is against the plain row
    base = {"epochs": epochs, "checkpoint_steps": 50, "early_stopping_patience": 0}
    configs = {row: TrainConfig(**base, **ROWS[row]) for row in rows}  # bad settings fail before any work
    settings = {"dataset_uri": dataset_uri, "train_rows": train_rows, "test_rows": test_rows, **base}
    key = _settings_key(settings)
    work = work_dir / key
    previous = json.loads(output.read_text()) if output.is_file() else {}
    done: dict[str, Any] = previous.get("rows", {}) if previous.get("settings_key") == key else {}
    split_dir = prepare_splits(dataset_uri, train_rows, test_rows, work)
    for row in rows:
        if row in done:
            print(f"bench-strategies: {row}: already measured, skipped", file=sys.stderr)
            continue
        config = configs[row]
        try:
            resolve_precision(config.precision)
        except HardwareUnavailableError as exc:
            flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", *BF16_CPU_FLAGS})
            done[row] = {"changes": ROWS[row], "not_run": str(exc), "cpu_flags": flags}
            _write(output, settings, key, done, work)
            continue
        started = time.perf_counter()
        trained = train_model(split_dir, config, work / row / "model", checkpoint_root=work / row / "checkpoints",
                              progress=False)
        correct = correctness_on_test(work / row / "model", split_dir, config.max_length)
        (work / row / CORRECT_FILE).write_text(json.dumps(correct))
        done[row] = {
            "changes": ROWS[row],
            "precision": trained.summary.get("precision"),
            "test_accuracy": sum(correct) / len(correct),
            "validation_accuracy": trained.summary["validation_accuracy"],
            "validation_loss": trained.summary["validation_loss"],
            "train_samples_per_second": trained.summary["train_samples_per_second"],
            "train_runtime_seconds": trained.summary["train_runtime_seconds"],
            "resumed_from": trained.summary["resumed_from"],
            "wall_seconds": time.perf_counter() - started,
        }
        _write(output, settings, key, done, work)
    if throughput_rows and "throughput" not in done:
        done["throughput"] = measure_precision_throughput(split_dir, work, throughput_rows, throughput_rounds)
    return _write(output, settings, key, done, work)


def _write(output: Path, settings: dict[str, Any], key: str, done: dict[str, Any], work: Path) -> dict[str, Any]:
    """The JSON: every row, each measured row's paired effect against the plain row, the bf16 target."""
    from textclf.benchmarks.machine import machine_info
    from textclf.provenance import write_json

    def correct(row: str) -> list[int]:
        return json.loads((work / row / CORRECT_FILE).read_text())

    plain = done.get(BASELINE, {})
    effects = {}
    if "test_accuracy" in plain:
        for row, result in done.items():
            if row not in (BASELINE, "throughput") and "test_accuracy" in result:
                effects[row] = {**paired_difference(correct(row), correct(BASELINE)),
                                "samples_per_second_ratio": (result["train_samples_per_second"]
                                                             / plain["train_samples_per_second"])}
    bf16 = done.get("bf16", {})
    target = None
    if "bf16" in effects:
        points = effects["bf16"]["points"]
        # The target's speed is the bf16 row's (a whole pilot epoch); the interleaved short runs give the ratio.
        throughput = (done.get("throughput") or {}).get("median") or {}
        target = {"bf16_samples_per_second": bf16["train_samples_per_second"],
                  "fp32_samples_per_second_row": plain["train_samples_per_second"],
                  "interleaved_samples_per_second": throughput or None,
                  "bf16_speedup_interleaved": (throughput["bf16"] / throughput["fp32"]
                                               if {"bf16", "fp32"} <= set(throughput) else None),
                  "bf16_minus_fp32_points": points,
                  "met": (settings["train_rows"] >= TARGET_TRAIN_ROWS
                          and bf16["train_samples_per_second"] >= TARGET_SAMPLES_PER_SECOND
                          and abs(points) <= TARGET_BF16_POINTS)}
    result = {"benchmark": "strategies", "settings": settings, "settings_key": key, "work_dir": str(work),
              "machine": machine_info(), "rows": done, "effects_vs_plain": effects,
              "targets": {"samples_per_second": TARGET_SAMPLES_PER_SECOND, "bf16_max_points": TARGET_BF16_POINTS,
                          "train_rows": TARGET_TRAIN_ROWS},
              "bf16_target": target, "created_unix": time.time()}
    write_json(output, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textclf.benchmarks.strategy_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-uri", default=None, help="AG News (default: the shared copy)")
    parser.add_argument("--train-rows", type=int, default=TARGET_TRAIN_ROWS, help="train + validation rows")
    parser.add_argument("--test-rows", type=int, default=0, help="0: the whole test set")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS),
                        help="rows to measure (the plain row always runs first)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--throughput-rows", type=int, default=960,
                        help="also time fp32 and bf16 alternately on this many rows (0: not)")
    parser.add_argument("--throughput-rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("runs/bench/bench_strategies.json"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/strategies"))
    args = parser.parse_args(argv)
    from textclf.errors import TextclfError

    try:
        result = run_strategy_benchmark(args.output, args.work_dir, args.dataset_uri or default_dataset_uri(),
                                        args.train_rows, args.test_rows, args.rows, args.epochs,
                                        args.throughput_rows, args.throughput_rounds)
    except TextclfError as exc:
        print(f"bench-strategies: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: result[k] for k in ("rows", "effects_vs_plain", "bf16_target")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
