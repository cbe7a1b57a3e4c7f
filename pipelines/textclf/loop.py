"""``make loop``: the closed loop on one machine, scripted so a person can watch it.

1. Train v1 with the retraining pipeline (an empty registry, so the gate promotes it) on a small AG News slice.
2. Build the drift reference from v1's own validation/training rows and start the KServe server on the production
   bundle, logging every prediction to a JSON-lines request log.
3. Replay in-distribution traffic (AG News test texts): the monitor checks the window, no drift, no trigger.
4. Replay shifted traffic (arXiv CS abstracts mixed in, and a class-prior shift to Business + Sci/Tech): the monitor
   detects drift and its ``on_drift`` fires the local trigger, which runs the retraining pipeline with newly labelled
   rows; the gate promotes the candidate or archives it, and the registry shows the outcome.
5. Print the timeline; every HTML report (drift checks, evaluations, data validation) is copied to one folder.

Everything runs on 127.0.0.1 with the KFP local runner; sized to finish in well under 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from textclf.errors import ConfigError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class LoopConfig:
    """Sizes of the demo; every default is in this one place.

    Attributes:
        dataset_uri: AG News directory (``train.csv.gz``, ``test.csv.gz``).
        shift_dataset_uri: arXiv CS directory (its ``test.csv.gz`` abstracts are the out-of-domain traffic).
        runs_dir: Where the loop writes (replaced on every run).
        train_rows: Training + validation rows of v1 (stratified).
        test_rows: Test rows both models are scored on.
        new_rows: Newly labelled AG News training rows handed to the retraining run.
        window: Requests per traffic phase, and the monitor's window size.
        arxiv_share: Share of arXiv abstracts in the shifted traffic.
        shifted_classes: AG News classes the rest of the shifted traffic is drawn from.
        concurrency: Parallel clients replaying traffic.
        epochs: Training epochs of both models.
        seed: Seed for sampling.
    """

    dataset_uri: str = ""
    shift_dataset_uri: str = ""
    runs_dir: Path = Path("runs/loop")
    train_rows: int = 2000
    test_rows: int = 1000
    new_rows: int = 1000
    window: int = 500
    arxiv_share: float = 0.3
    shifted_classes: tuple[str, ...] = ("Business", "Sci/Tech")
    concurrency: int = 4
    epochs: float = 1.0
    seed: int = 7

    def __post_init__(self) -> None:
        for name in ("dataset_uri", "shift_dataset_uri"):
            if not (Path(getattr(self, name)) / "test.csv.gz").is_file():
                raise ConfigError(f"{name}: no test.csv.gz in {getattr(self, name)!r}")
        if not 0 < self.arxiv_share < 1:
            raise ConfigError(f"arxiv_share must be in (0, 1), got {self.arxiv_share}")


@dataclass
class Timeline:
    """What happened when, printed as it happens and saved as JSON."""

    started: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, what: str, **details: Any) -> None:
        elapsed = time.monotonic() - self.started
        self.events.append({"t_seconds": round(elapsed, 1), "event": what, **details})
        print(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {what}", flush=True)

    def render(self) -> str:
        return "\n".join(f"{e['t_seconds']:>7.1f}s  {e['event']}" for e in self.events)


def traffic(config: LoopConfig) -> tuple[list[str], list[str]]:
    """(in-distribution texts, shifted texts), ``config.window`` each, from test files only."""
    from textclf.ingest.ingest import read_split_texts

    test = read_split_texts(config.dataset_uri, "test").sample(frac=1.0, random_state=config.seed)
    iid = test["text"].iloc[: config.window].tolist()
    rest = test.iloc[config.window:]
    n_arxiv = round(config.window * config.arxiv_share)
    in_classes = rest[rest["label"].isin(config.shifted_classes)]["text"].iloc[: config.window - n_arxiv].tolist()
    arxiv = read_split_texts(config.shift_dataset_uri, "test")
    arxiv_texts = arxiv["text"].sample(n=n_arxiv, random_state=config.seed).tolist()
    shifted = pd.Series(in_classes + arxiv_texts).sample(frac=1.0, random_state=config.seed).tolist()
    return iid, shifted


def write_new_rows(config: LoopConfig, out_dir: Path) -> Path:
    """``config.new_rows`` AG News training rows in the original format: the "newly labelled" data."""
    train = pd.read_csv(Path(config.dataset_uri) / "train.csv.gz", dtype=str, keep_default_na=False)
    sample = train.sample(n=config.new_rows, random_state=config.seed + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample.to_csv(out_dir / "train.csv.gz", index=False)
    return out_dir


def replay(url: str, texts: list[str], concurrency: int) -> dict[str, Any]:
    """Send each text as a single-text V1 request; returns counts and the predicted-label distribution."""
    import httpx

    with httpx.Client(timeout=30) as client:
        def send(text: str) -> str:
            response = client.post(url, json={"instances": [text]})
            response.raise_for_status()
            return response.json()["predictions"][0]["label"]

        with ThreadPoolExecutor(concurrency) as pool:
            labels = list(pool.map(send, texts))
    return {"requests": len(labels), "predicted": pd.Series(labels).value_counts().to_dict()}


def collect_reports(runs_dir: Path, reports_dir: Path) -> list[Path]:
    """Copy every HTML/Markdown report of the loop into one folder (names prefixed with where they came from)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted(runs_dir.rglob("*")):
        if reports_dir in source.parents or not source.is_file():
            continue
        relative = source.relative_to(runs_dir).as_posix()
        if relative.startswith("registry/") or relative.endswith("evaluate-op/evaluation/report.html"):
            continue  # copies of reports collected from the pipeline runs
        if source.suffix == ".html" or relative.endswith(("evaluate-op/report", "validate-split-op/report")):
            name = relative.replace("/", "__") + ("" if source.suffix == ".html" else ".html")
            if relative.endswith("validate-split-op/report"):
                name = name[: -len(".html")] + ".md"
            shutil.copy(source, reports_dir / name)
            copied.append(reports_dir / name)
    return copied


def run_loop(config: LoopConfig) -> dict[str, Any]:
    """Run the demo (see the module docstring) and return its summary (also ``runs_dir/loop_summary.json``)."""
    from textclf.benchmarks.serve_bench import ServerSpec, running_server
    from textclf.monitor import DriftConfig, DriftMonitor, reference_from_splits, save_reference
    from textclf.provenance import write_json
    from textclf.registry import ModelRegistry
    from textclf.trigger import RetrainRequest, check_data_growth, make_trigger

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per replayed request otherwise
    runs = config.runs_dir.resolve()
    if runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True)
    timeline = Timeline()
    registry_uri = str(runs / "registry")
    registry = ModelRegistry(registry_uri)
    trigger = make_trigger("local", pipeline_root=runs / "pipeline_root")
    base_arguments = {
        "dataset_uri": str(Path(config.dataset_uri).resolve()), "registry_uri": registry_uri,
        "max_train_rows": config.train_rows, "max_test_rows": config.test_rows, "epochs": config.epochs,
        "seed": config.seed, "checkpoint_root": str(runs / "checkpoints"),
    }

    logs = runs / "logs"
    logs.mkdir()

    def fire(request: Any, log_name: str) -> Any:
        """Run the retraining pipeline with the runner's per-task output in a log file, not on the console."""
        with (logs / log_name).open("w", encoding="utf-8") as output, contextlib.redirect_stdout(output):
            return trigger.fire(request)

    timeline.add(f"training v1 on {config.train_rows:,} AG News rows (retraining pipeline, empty registry; "
                 f"log: {logs / 'retraining-v1.log'})")
    first = fire(RetrainRequest("initial model", base_arguments), "retraining-v1.log")
    v1 = registry.production_version()
    timeline.add(f"v1 = {v1}: {first.details['decision']['reason']}", run=first.run_id)

    outputs = first.details["outputs"]  # the retraining pipeline's declared outputs
    reference = reference_from_splits(outputs["splits"], outputs["onnx_model"],
                                      sample_size=DriftConfig.reference_size, seed=config.seed)
    save_reference(reference, runs / "monitor" / "reference")
    timeline.add(f"drift reference built: {len(reference.frame):,} rows of v1's own data with v1's predictions")

    new_rows_dir = write_new_rows(config, runs / "new_rows")
    growth = check_data_growth(str(new_rows_dir), registry_uri)
    timeline.add(f"newly labelled rows waiting: {growth.reason}")

    fired: list[Any] = []

    def on_drift(result: Any) -> None:
        timeline.add(f"DRIFT -> retraining: {result.summary()}")
        request = RetrainRequest(f"{result.summary()}; {growth.reason}",
                                 {**base_arguments, "new_rows_uri": str(new_rows_dir),
                                  "max_train_rows": config.train_rows + config.new_rows})
        timeline.add(f"retraining with {config.new_rows:,} newly labelled rows (log: {logs / 'retraining-v2.log'})")
        fired.append(fire(request, "retraining-v2.log"))

    request_log = runs / "serving" / "requests.jsonl"
    spec = ServerSpec("textclf", (sys.executable, "-m", "textclf.serving", "--model-dir",
                                  registry.artifact_uri(v1, "onnx_model"), "--model-name", "textclf",
                                  "--http-port", "{port}", "--no-grpc", "--request-log", str(request_log)))
    monitor_config = DriftConfig(window_size=config.window, min_window_size=min(config.window, 200))
    iid, shifted = traffic(config)
    checks = []
    with running_server(spec, runs / "serving" / "server.log") as url:
        timeline.add(f"KServe server ready on {url.rsplit('/v1', 1)[0]} serving {v1}")
        monitor = DriftMonitor(request_log, reference, runs / "monitor", monitor_config, on_drift=on_drift)
        for phase, texts in (("in-distribution AG News test traffic", iid),
                             (f"shifted traffic ({config.arxiv_share:.0%} arXiv abstracts, rest "
                              f"{' + '.join(config.shifted_classes)} only)", shifted)):
            sent = replay(url, texts, config.concurrency)
            timeline.add(f"replayed {sent['requests']} requests of {phase}; predicted {sent['predicted']}")
            for _ in range(50):  # the request log is written off the request path: wait for the last lines
                results = monitor.poll()
                if results:
                    break
                time.sleep(0.2)
            for result in results:
                checks.append(result.to_dict())
                if not result.triggered:  # a triggered check was announced by on_drift already
                    timeline.add(f"monitor check: {result.summary()}")
    if fired:
        decision = fired[0].details["decision"]
        timeline.add(f"gate: {decision['decision'].upper()}: {decision['reason']}", run=fired[0].run_id)
    else:
        timeline.add("no retraining was triggered")
    versions = registry.list_versions()
    timeline.add("registry: " + "; ".join(f"{row['version']} {row['status']} (accuracy {row.get('accuracy', 0):.4f})"
                                           for row in versions))
    reports = collect_reports(runs, runs / "reports")
    timeline.add(f"{len(reports)} reports in {runs / 'reports'}")
    summary = {
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()},
        "timeline": timeline.events,
        "checks": checks,
        "retraining_runs": [first.run_id, *(f.run_id for f in fired)],
        "registry": versions,
        "reports": [str(path) for path in reports],
    }
    write_json(runs / "loop_summary.json", summary)
    (runs / "timeline.txt").write_text(timeline.render() + "\n", encoding="utf-8")
    print("\nTimeline\n" + timeline.render())
    print(f"\nSummary: {runs / 'loop_summary.json'}\nReports: {runs / 'reports'}")
    return summary


def add_loop_command(subparsers: Any) -> None:
    """Add ``textclf loop`` (what ``make loop`` runs)."""
    from textclf.cli import REPO_ROOT, default_dataset_uri

    loop = subparsers.add_parser("loop", help="the closed loop, scripted: train, serve, drift, retrain, gate")
    loop.add_argument("--dataset-uri", default=default_dataset_uri(), help="AG News directory")
    loop.add_argument("--shift-dataset-uri", default=str(REPO_ROOT.parent / "shared" / "datasets" / "arxiv_cs"),
                      help="arXiv CS directory (out-of-domain traffic)")
    loop.add_argument("--runs-dir", type=Path, default=LoopConfig.runs_dir, help="replaced on every run")
    loop.set_defaults(func=cmd_loop)


def cmd_loop(args: Any) -> int:
    run_loop(LoopConfig(dataset_uri=args.dataset_uri, shift_dataset_uri=args.shift_dataset_uri,
                        runs_dir=args.runs_dir))
    return 0
