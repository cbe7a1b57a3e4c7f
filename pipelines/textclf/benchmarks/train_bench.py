"""``make bench-train``: training throughput (full and LoRA) and full-data accuracy of the local pipeline.

1. Throughput: ``full`` and ``lora`` each train on the same ``throughput_rows`` AG News rows (no validation
   passes inside the timed loop); samples/s is the Trainer's own count over its training wall time.
2. Accuracy: the training pipeline runs locally (kfp.local) on every training row with the default (``full``)
   method and is scored on the complete 7,600-row test set; its ONNX export and parity check run too. The target
   (issue 2) is for one epoch at any batch size; ``epochs`` and ``batch_size`` can be changed to measure what another
   setting reaches, and such a run never counts as meeting the target.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from textclf.config import IngestConfig, SplitConfig, TrainConfig, TrainMethod
from textclf.ingest import ingest_dataset
from textclf.benchmarks.machine import machine_info
from textclf.provenance import git_commit, package_versions, write_json
from textclf.train import train_model
from textclf.validate import validate_and_split


def measure_throughput(dataset_uri: str, rows: int, methods: tuple[TrainMethod, ...]) -> dict[str, Any]:
    """Samples/s of each method on the same ``rows`` training rows, default batch size, one epoch."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="textclf-bench-") as tmp:
        work = Path(tmp)
        ingest_dataset(IngestConfig(dataset_uri=dataset_uri), work / "ingest")
        # validation_fraction is the smallest allowed; validation is not run inside the timed loop.
        validate_and_split(work / "ingest", SplitConfig(max_train_rows=rows, validation_fraction=0.05), work / "split")
        for method in methods:
            config = TrainConfig(method=method.value, epochs=1.0, checkpoint_steps=100_000, early_stopping_patience=0)
            started = time.perf_counter()
            result = train_model(work / "split", config, work / f"model-{method.value}", progress=False)
            results[method.value] = {
                "train_rows": result.summary["train_rows"],
                "train_samples_per_second": result.summary["train_samples_per_second"],
                "train_runtime_seconds": result.summary["train_runtime_seconds"],
                "stage_wall_seconds": time.perf_counter() - started,
                "learning_rate": config.effective_learning_rate,
                "batch_size": config.batch_size,
            }
    return results


#: Issue 2's target: full-test-set accuracy after one epoch on every training row.
ACCURACY_TARGET = 0.925
TARGET_EPOCHS = 1.0
TFIDF_LINEAR_SVM_BASELINE_ACCURACY = 0.912


def meets_accuracy_target(test_accuracy: float, epochs: float) -> bool:
    """Whether a full-data run meets the target: the accuracy, reached in the target's number of epochs."""
    return epochs == TARGET_EPOCHS and test_accuracy >= ACCURACY_TARGET


def run_train_benchmark(
    dataset_uri: str,
    output: Path,
    runs_dir: Path,
    throughput_rows: int,
    epochs: float = TARGET_EPOCHS,
    batch_size: int = TrainConfig.batch_size,
) -> dict[str, Any]:
    """Run both parts and write the JSON to ``output``.

    Args:
        dataset_uri: AG News dataset directory or object-store prefix.
        output: The JSON file written.
        runs_dir: Where the local pipeline run and its resumable checkpoints go.
        throughput_rows: Training rows per throughput measurement.
        epochs: Epochs of the full-data run (the target is for 1).
        batch_size: Batch size of the full-data run (throughput is always measured at the default).

    Returns:
        What was written to ``output``.
    """
    from textclf.pipelines.local import run_training_locally

    epochs, batch_size = float(epochs), int(batch_size)
    started = time.perf_counter()
    throughput = measure_throughput(dataset_uri, throughput_rows, (TrainMethod.FULL, TrainMethod.LORA))
    arguments = {
        "dataset_uri": dataset_uri,
        "method": TrainMethod.FULL.value,
        "epochs": epochs,
        "batch_size": batch_size,
        "max_train_rows": 0,
        "max_test_rows": 0,
        "checkpoint_steps": 200,
        "checkpoint_root": str((runs_dir / "checkpoints").resolve()),
    }
    run_started = time.perf_counter()
    summary = run_training_locally(arguments, runs_dir)
    metrics = summary["metrics"]
    result = {
        "benchmark": "bench-train",
        "machine": machine_info(),
        "throughput": throughput,
        "full_data_run": {
            "method": TrainMethod.FULL.value,
            "epochs": epochs,
            "batch_size": batch_size,
            "train_rows": metrics["train_rows"],
            "validation_rows_held_out": metrics["validation_rows"],
            "test_rows": metrics["test_rows"],
            "test_accuracy": metrics["test_accuracy"],
            "test_macro_f1": metrics["test_macro_f1"],
            "expected_calibration_error": metrics["expected_calibration_error"],
            "train_samples_per_second": metrics["train_samples_per_second"],
            "resumed_from_checkpoint": metrics["resumed_from_checkpoint"],
            "pipeline_wall_seconds": time.perf_counter() - run_started,
            "onnx_parity": metrics["onnx_parity"],
            "run_dir": summary["run_dir"],
        },
        "targets": {
            "test_accuracy": ACCURACY_TARGET,
            "epochs": TARGET_EPOCHS,
            "tfidf_linear_svm_baseline_accuracy": TFIDF_LINEAR_SVM_BASELINE_ACCURACY,
        },
        "total_wall_seconds": time.perf_counter() - started,
        "git_commit": git_commit(),
        "package_versions": package_versions(),
    }
    result["full_data_run"]["meets_accuracy_target"] = meets_accuracy_target(metrics["test_accuracy"], epochs)
    write_json(output, result)
    return result
