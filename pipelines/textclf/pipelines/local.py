"""Run a pipeline on this machine with the KFP local runner (no cluster).

``kfp.local.SubprocessRunner(use_venv=False)`` runs each lightweight component in a subprocess of this Python
environment, where this package is installed: the same component code that runs in the component image on a
cluster.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class LocalRun:
    """Where a local pipeline run put its artifacts, and the headline numbers read back from them."""

    run_dir: Path
    outputs: dict[str, str]
    artifacts: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def init_local_runner(pipeline_root: str | Path) -> None:
    """Point ``kfp.local`` at ``pipeline_root`` with ``SubprocessRunner(use_venv=False)`` in this environment.

    The runner starts components with ``python3 -m kfp.dsl.executor_main``: this interpreter's directory goes first
    on ``PATH`` (once) so they run where textclf is installed.
    """
    from kfp import local

    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)


def _run_dirs(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if p.is_dir()} if root.exists() else set()


def run_pipeline_locally(pipeline_func: Any, arguments: dict[str, Any], pipeline_root: str | Path) -> LocalRun:
    """Run ``pipeline_func`` with ``arguments`` under the KFP subprocess runner.

    Args:
        pipeline_func: A ``@dsl.pipeline`` function.
        arguments: Pipeline parameters.
        pipeline_root: Directory under which the runner writes one folder per run.

    Returns:
        The run's folder, its output artifact URIs and every file it wrote.
    """
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = _run_dirs(root)
    init_local_runner(root)
    started = time.perf_counter()
    task = pipeline_func(**arguments)
    seconds = time.perf_counter() - started
    new_dirs = sorted(_run_dirs(root) - before, key=lambda p: p.stat().st_mtime)
    run_dir = new_dirs[-1] if new_dirs else root
    outputs = {}
    for name, value in task.outputs.items():
        outputs[name] = getattr(value, "path", None) or getattr(value, "uri", None) or str(value)
    artifacts = sorted(p for p in run_dir.rglob("*") if p.is_file())
    return LocalRun(run_dir=run_dir, outputs=outputs, artifacts=artifacts, seconds=seconds)


#: Files of a training run worth pointing a person at: name -> path relative to the run folder.
TRAINING_ARTIFACTS = {
    "validation_report": "validate-split-op/report",
    "splits": "validate-split-op/splits",
    "model": "train-op/model",
    "evaluation_report_html": "evaluate-op/report",
    "evaluation": "evaluate-op/evaluation",
    "onnx_model": "export-op/onnx_model",
}


def run_training_locally(arguments: dict[str, Any], runs_dir: str | Path) -> dict[str, Any]:
    """Run the training pipeline locally and summarise it.

    Args:
        arguments: Pipeline parameters (``dataset_uri`` required).
        runs_dir: Folder for local runs; ``runs_dir/latest.json`` then points at this run.

    Returns:
        A summary: headline metrics, ONNX parity numbers, artifact paths, the run folder and the summary file.
    """
    from textclf.pipelines.training.pipeline import training_pipeline
    from textclf.provenance import read_json, write_json

    runs_dir = Path(runs_dir).resolve()
    run = run_pipeline_locally(training_pipeline, arguments, runs_dir / "pipeline_root")
    artifacts = {name: run.run_dir / rel for name, rel in TRAINING_ARTIFACTS.items()}
    missing = [name for name, path in artifacts.items() if not path.exists()]
    if missing:
        raise RuntimeError(f"local run {run.run_dir} finished without artifacts {missing}")
    evaluation = read_json(artifacts["evaluation"] / "metrics.json")
    export = read_json(artifacts["onnx_model"] / "export_metadata.json")
    training = read_json(artifacts["model"] / "textclf_metadata.json")["training"]
    test = evaluation["test"]
    summary = {
        "run_dir": str(run.run_dir),
        "pipeline_seconds": run.seconds,
        "arguments": arguments,
        "metrics": {
            "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "test_rows": test["rows"],
            "expected_calibration_error": test["expected_calibration_error"],
            "train_accuracy": evaluation["train_accuracy"],
            "validation_accuracy": evaluation["validation_accuracy"],
            "train_validation_gap": evaluation["train_validation_gap"],
            "overfitting": evaluation["overfitting"],
            "train_samples_per_second": training["train_samples_per_second"],
            "train_rows": training["train_rows"],
            "validation_rows": training["validation_rows"],
            "resumed_from_checkpoint": training["resumed_from"],
            "onnx_parity": export["parity"],
        },
        "artifacts": {name: str(path) for name, path in artifacts.items()},
    }
    register_output = run.run_dir / "register-op" / "executor_output.json"
    if register_output.is_file():  # the run was given a registry_uri
        summary["registered_version"] = read_json(register_output)["parameterValues"]["Output"]
    summary_file = run.run_dir / "summary.json"
    summary["summary_file"] = str(summary_file)
    write_json(summary_file, summary)
    write_json(runs_dir / "latest.json", summary)
    return summary
