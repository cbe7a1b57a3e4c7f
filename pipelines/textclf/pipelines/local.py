"""Run a pipeline on this machine with the KFP local runner (no cluster).

``kfp.local.SubprocessRunner(use_venv=False)`` runs each lightweight component in a subprocess of this Python
environment, where this package is installed: the same component code that runs in the component image on a
cluster. What a run produced is read from the pipeline's declared outputs, which ``kfp.local`` returns, not from the
runner's folder layout.

The runner's own output (every task's streamed log, its outputs, banners) goes to one log file per task in the run
folder (``<run>/logs/<task>.log``); the console gets a line per stage with its duration and the training progress
bar. A failing task's log tail is in the raised :class:`LocalRunError`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

#: Lines of a failing task's log shown on the console.
FAILURE_TAIL_LINES = 25
#: Log of the runner's lines that belong to no task (pipeline start and end, skipped conditions).
RUNNER_LOG = "runner.log"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp.local's own lines (kfp/local/task_dispatcher.py, orchestrator/*): they delimit the tasks.
_TASK_STARTED = re.compile(r"Executing task '([^']+)'")
_TASK_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_TASK_SKIPPED = re.compile(r"Skipping conditional task (\S+)")
_PIPELINE_FINISHED = re.compile(r"Pipeline '[^']+' finished with status")
# A tqdm bar as the Trainer draws it: " 45%|████▌     | 81/179 [01:02<01:15,  1.30it/s]".
_PROGRESS = re.compile(r"^\s*\d+%\|.*\|\s*(\d+)/(\d+) \[")


@dataclass(frozen=True)
class Stage:
    """One task of a local run: its task name (the folder and log name), display name, seconds and status."""

    task: str
    name: str
    seconds: float
    status: str


@dataclass
class LocalRun:
    """What a local pipeline run returned: its declared outputs, and where it ran.

    Attributes:
        run_dir: The runner's folder for this run.
        artifacts: Declared artifact outputs -> local path (the KFP metrics outputs are in ``metrics``).
        metrics: Declared ``Metrics`` outputs -> the scalars logged to them.
        values: Declared parameter outputs -> value.
        stages: The tasks that ran (or were skipped), in order.
        logs_dir: One ``<task>.log`` per task and :data:`RUNNER_LOG`.
        seconds: Wall time of the run.
    """

    run_dir: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    logs_dir: Path | None = None
    seconds: float = 0.0


class LocalRunError(RuntimeError):
    """A task of a local run failed: which one, where its whole log is, and the log's last lines."""

    def __init__(self, task: str, log_file: Path | None, tail: list[str], cause: str) -> None:
        self.task, self.log_file, self.tail = task, log_file, tail
        if log_file is None:  # no task had started: only the runner's own message is known
            super().__init__(f"the local run failed before any task: {_ANSI.sub('', cause)}")
            return
        shown = "\n".join(f"    {line}" for line in tail)
        super().__init__(f"task {task} failed; the last lines of its log:\n{shown}\n  whole log: {log_file}")


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


def task_display_names(pipeline_func: Any) -> dict[str, str]:
    """Task name (``train-op``, ``condition-1``) -> its display name (``train``, ``register-requested``), for every
    task of the pipeline, ``dsl.If`` / ``dsl.Else`` branches included."""
    spec = pipeline_func.pipeline_spec
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.WhichOneof("implementation") == "dag")]
    return {name: task.task_info.name or name for dag in dags for name, task in dag.tasks.items()}


class TaskLogs(io.TextIOBase):
    """Stands in for stdout/stderr during a local run: sorts the runner's lines into one log file per task and
    shows a line per stage (with its duration), and each task's main progress bar, on ``console``."""

    def __init__(self, logs_dir: Path, console: TextIO, names: Mapping[str, str]) -> None:
        super().__init__()
        self.logs_dir, self.console, self.names = logs_dir, console, names
        self.started = time.monotonic()
        self.stages: list[Stage] = []
        self.task: str | None = None  # the task whose lines are arriving
        self.task_started = 0.0
        self.failed: str | None = None
        self._done: set[str] = set()
        self._pending = ""
        self._file = (logs_dir / RUNNER_LOG).open("a", encoding="utf-8")
        self._bar_total: int | None = None  # the current task's first (main) progress bar
        self._bar_shown = 0.0  # when the bar on the console's last line was drawn; 0: no bar there
        self._bar_width = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._pending:
            self._line(_ANSI.sub("", self._pending))
            self._pending = ""
        self._end_bar()
        super().close()  # flushes the current log file
        self._file.close()

    def log_file(self, task: str) -> Path:
        return self.logs_dir / f"{task}.log"

    # -- one line of the runner's output -------------------------------------------------------------------------

    def _line(self, line: str) -> None:
        if started := _TASK_STARTED.search(line):
            self._switch(self.log_file(started[1]))
            self.task, self.task_started, self._bar_total = started[1], time.monotonic(), None
            self._say(f"{self.display_name(self.task)} ...")
        elif (finished := _TASK_FINISHED.search(line)) and finished[1] == self.task:
            self._finish(self.task, finished[2])
        elif skipped := _TASK_SKIPPED.search(line):
            self._switch(self.logs_dir / RUNNER_LOG)
            self.task = None
            self.stages.append(Stage(skipped[1], self.display_name(skipped[1]), 0.0, "SKIPPED"))
            self._say(f"{self.display_name(skipped[1])} skipped (its condition is false)")
        elif _PIPELINE_FINISHED.search(line):
            self._switch(self.logs_dir / RUNNER_LOG)
            self.task = None
        elif self.task and (bar := _PROGRESS.match(line)):
            self._progress(line.strip(), int(bar[1]), int(bar[2]))
        self._file.write(line + "\n")
        if self.task in self._done and line and set(line) == {"-"}:  # the rule kfp.local draws after a task
            self._switch(self.logs_dir / RUNNER_LOG)
            self.task = None

    def fail(self) -> None:
        """The run stopped on an error: the task under way (kfp.local raises before logging its status) failed."""
        if self.task and self.failed is None:
            self._finish(self.task, "FAILURE")

    def display_name(self, task: str) -> str:
        return self.names.get(task, task)

    def _finish(self, task: str, status: str) -> None:
        seconds = time.monotonic() - self.task_started
        self.stages.append(Stage(task, self.display_name(task), round(seconds, 1), status))
        self._done.add(task)
        if status != "SUCCESS":
            self.failed = task
        self._say(f"{self.display_name(task)} {'done' if status == 'SUCCESS' else 'FAILED'} in {_duration(seconds)}")

    def _progress(self, bar: str, done: int, total: int) -> None:
        if self._bar_total is None:
            self._bar_total = total
        now = time.monotonic()
        # Only the task's first bar (the Trainer's; evaluation bars have other totals), at most twice a second.
        if total != self._bar_total or (done < total and now - self._bar_shown < 0.5):
            return
        self._bar_shown = now
        text = f"        {self.display_name(self.task or '')}  {bar}"
        self.console.write("\r" + text.ljust(self._bar_width))
        self.console.flush()
        self._bar_width = len(text)

    def _end_bar(self) -> None:
        if self._bar_shown:
            self.console.write("\n")
            self._bar_shown, self._bar_width = 0.0, 0

    def _say(self, text: str) -> None:
        self._end_bar()
        elapsed = int(time.monotonic() - self.started)
        self.console.write(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}\n")
        self.console.flush()

    def _switch(self, path: Path) -> None:
        if Path(self._file.name) != path:
            self._file.close()
            self._file = path.open("a", encoding="utf-8")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds) // 60} min {int(seconds) % 60:02d} s"


def _tail(path: Path, lines: int) -> list[str]:
    """The last non-blank ``lines`` of a task's log before kfp.local's closing status line."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if _TASK_FINISHED.search(line):
            break
        if line.strip():
            kept.append(line)
    return kept[-lines:]


@contextlib.contextmanager
def _captured(sink: TaskLogs) -> Iterator[None]:
    """stdout, stderr and the root logger (where kfp.local logs between tasks) into ``sink`` for the block."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(min(level, logging.INFO))  # kfp.local's between-task lines are INFO
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _run_dirs(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.exists() else set()


def run_pipeline_locally(pipeline_func: Any, arguments: Mapping[str, Any], pipeline_root: str | Path,
                         console: TextIO | None = None) -> LocalRun:
    """Run ``pipeline_func`` with ``arguments`` under the KFP subprocess runner.

    Args:
        pipeline_func: A ``@dsl.pipeline`` function with declared outputs.
        arguments: Pipeline parameters.
        pipeline_root: Directory under which the runner writes one folder per run.
        console: Where the stage lines and the progress bar go; default: ``sys.stdout`` at the call.

    Returns:
        The run's declared outputs, its folder, its stages and where their logs are (``<run>/logs``).

    Raises:
        LocalRunError: A task failed (the message has its log's tail and the log's path).
    """
    from kfp import dsl

    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = _run_dirs(root)
    init_local_runner(root)
    staging = Path(tempfile.mkdtemp(prefix=".logs-", dir=root))  # the run folder is named by kfp once it starts
    sink = TaskLogs(staging, console or sys.stdout, task_display_names(pipeline_func))
    started = time.perf_counter()
    task, failure = None, None
    try:
        with _captured(sink):
            task = pipeline_func(**arguments)
    except RuntimeError as exc:  # kfp.local raises this when a task fails (raise_on_error)
        failure = exc
        sink.fail()
    finally:
        sink.close()
        new_dirs = sorted(_run_dirs(root) - before, key=lambda p: p.stat().st_mtime)
        run_dir = new_dirs[-1] if new_dirs else None
        # The logs go into the run folder; with none (nothing started), beside the runs, no longer hidden.
        logs_dir = run_dir / "logs" if run_dir else staging.with_name(staging.name.lstrip("."))
        shutil.move(staging, logs_dir)
    if failure is not None:
        failed = sink.failed or "(no task)"
        log_file = logs_dir / f"{failed}.log"
        raise LocalRunError(sink.display_name(failed), log_file if log_file.is_file() else None,
                            _tail(log_file, FAILURE_TAIL_LINES), str(failure)) from failure
    run_dir = run_dir or root
    run = LocalRun(run_dir=run_dir, stages=sink.stages, logs_dir=logs_dir, seconds=time.perf_counter() - started)
    returned = task.outputs if task is not None else {}
    for name in (pipeline_func.component_spec.outputs or {}):  # in the pipeline's order
        value = returned[name]
        if isinstance(value, dsl.Metrics):
            run.metrics[name] = dict(value.metadata)
        elif isinstance(value, dsl.Artifact):
            run.artifacts[name] = Path(value.path)
        else:
            run.values[name] = value
    return run


def registered_versions(registry_uri: str, known: set[str], run_key: str) -> list[str]:
    """Versions in the registry at ``registry_uri`` not in ``known`` whose model is training run ``run_key``: what
    the training pipeline's conditional register step added (a task under ``dsl.If`` cannot be a pipeline output)."""
    from textclf.registry import ModelRegistry

    registry = ModelRegistry(registry_uri)
    added = [row["version"] for row in registry.list_versions() if row["version"] not in known]
    return [version for version in added if registry.metadata(version).get("training_run_key") == run_key]


def run_training_locally(arguments: Mapping[str, Any], runs_dir: str | Path,
                         console: TextIO | None = None) -> dict[str, Any]:
    """Run the training pipeline locally and summarise it from its declared outputs.

    Args:
        arguments: Pipeline parameters (``dataset_uri`` required).
        runs_dir: Folder for local runs; ``runs_dir/latest.json`` then points at this run.
        console: Where the stage lines and the progress bar go (default ``sys.stdout``).

    Returns:
        A summary: headline metrics, ONNX parity numbers, artifact paths, stage times, the run folder, its logs and
        the summary file.

    Raises:
        LocalRunError: A task failed.
    """
    from textclf.pipelines.training.pipeline import training_pipeline

    return _run_and_summarise(training_pipeline, arguments, runs_dir, console)


def run_distillation_locally(arguments: Mapping[str, Any], runs_dir: str | Path,
                             console: TextIO | None = None) -> dict[str, Any]:
    """Run the distillation pipeline locally; summarised like a training run (the student is the run's model, what
    ``textclf serve`` then serves), plus every model's test row from the compare task under ``comparison`` and the
    cascade bundle (``textclf serve --model-dir`` it) with its validation numbers under ``cascade``.

    Args, Returns and Raises: as for :func:`run_training_locally`.
    """
    from textclf.compare.compare import COMPARISON_FILE
    from textclf.pipelines.distillation.pipeline import distillation_pipeline
    from textclf.provenance import read_json
    from textclf.serving.contract import CASCADE_FILE

    def comparison(artifacts: Mapping[str, Path]) -> dict[str, Any]:
        rows = read_json(artifacts["comparison"] / COMPARISON_FILE)["rows"]
        spec = read_json(artifacts["cascade"] / CASCADE_FILE)
        chosen = spec["selection"]["chosen"]
        return {
            "comparison": {row["name"]: {key: row[key] for key in COMPARISON_SUMMARY_KEYS} for row in rows},
            "cascade": {"path": str(artifacts["cascade"]), "threshold": spec["threshold"],
                        "validation_stage2_share": chosen["stage2_share"],
                        "validation_accuracy": chosen["accuracy"]},
        }

    return _run_and_summarise(distillation_pipeline, arguments, runs_dir, console, comparison)


#: The numbers of each compare row that a distillation run's summary (and ``textclf run``'s table) shows.
COMPARISON_SUMMARY_KEYS = ("accuracy", "macro_f1", "expected_calibration_error",
                           "expected_calibration_error_calibrated", "temperature", "size_bytes")


def _run_and_summarise(pipeline_func: Any, arguments: Mapping[str, Any], runs_dir: str | Path,
                       console: TextIO | None, extra_metrics: Any = None) -> dict[str, Any]:
    """Run a pipeline whose outputs include ``model``, ``evaluation`` and ``onnx_model`` and write its summary."""
    from textclf.evaluate.evaluate import METRICS_FILE
    from textclf.provenance import read_json, write_json
    from textclf.serving.contract import METADATA_FILE as EXPORT_METADATA_FILE
    from textclf.train.train import METADATA_FILE as MODEL_METADATA_FILE

    runs_dir = Path(runs_dir).resolve()
    registry_uri = str(arguments.get("registry_uri", ""))
    known: set[str] = set()
    if registry_uri:
        from textclf.registry import ModelRegistry

        known = {row["version"] for row in ModelRegistry(registry_uri).list_versions()}
    run = run_pipeline_locally(pipeline_func, arguments, runs_dir / "pipeline_root", console)
    artifacts = run.artifacts
    evaluation = read_json(artifacts["evaluation"] / METRICS_FILE)
    export = read_json(artifacts["onnx_model"] / EXPORT_METADATA_FILE)
    training = read_json(artifacts["model"] / MODEL_METADATA_FILE)["training"]
    test = evaluation["test"]
    metrics = {
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
    }
    if "calibration" in evaluation:
        metrics["temperature"] = evaluation["calibration"]["temperature"]
        metrics["expected_calibration_error_calibrated"] = evaluation["calibration"]["test_ece_after"]
    if extra_metrics is not None:
        metrics.update(extra_metrics(artifacts))
    summary = {
        "pipeline": pipeline_func.name,
        "run_dir": str(run.run_dir),
        "pipeline_seconds": run.seconds,
        "arguments": dict(arguments),
        "metrics": metrics,
        "artifacts": {name: str(path) for name, path in artifacts.items()},
        "stages": [{"task": s.task, "name": s.name, "seconds": s.seconds, "status": s.status} for s in run.stages],
        "logs_dir": str(run.logs_dir),
    }
    if registry_uri:
        versions = registered_versions(registry_uri, known, training["run_key"])
        if versions:
            summary["registered_version"] = versions[-1]
    summary_file = run.run_dir / "summary.json"
    summary["summary_file"] = str(summary_file)
    write_json(summary_file, summary)
    write_json(runs_dir / "latest.json", summary)
    return summary
