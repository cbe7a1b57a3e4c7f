"""``textclf monitor``, ``textclf drift-check``, ``textclf drift-reference`` and ``textclf bench-drift``.

``components/cli.py`` calls :func:`add_monitor_commands` (and :func:`add_bench_drift_command`) on its subparsers.
Commands print JSON on stdout; a refused request raises a ``TextclfError`` subclass, which ``textclf.cli.main``
prints and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from textclf.errors import ConfigError
from textclf.monitor.config import DriftConfig

log = logging.getLogger(__name__)
DEFAULT_RUNS_DIR = Path("runs")


def config_from_args(args: argparse.Namespace) -> DriftConfig:
    """A :class:`DriftConfig` from the drift flags (unset flags keep the defaults)."""
    changes = {name: getattr(args, name) for name in (
        "window_size", "window_seconds", "min_window_size", "alpha", "cooldown_checks", "cooldown_seconds",
        "reference_size", "keep_reports", "seed", "accuracy_baseline", "accuracy_tolerance", "accuracy_alpha",
        "accuracy_window", "min_labelled",
    ) if getattr(args, name, None) is not None}
    if getattr(args, "signals", None):
        changes["signals"] = tuple(s.strip() for s in args.signals.split(",") if s.strip())
    return DriftConfig().replace(**changes)


def _add_drift_arguments(parser: argparse.ArgumentParser, windows: bool = True) -> None:
    d = DriftConfig
    if windows:
        parser.add_argument("--window-size", type=int, default=None, help=f"rows per check (default {d.window_size})")
        parser.add_argument("--window-seconds", type=float, default=None,
                            help=f"also close a window this long after its first request (default "
                                 f"{d.window_seconds:g}: off)")
    parser.add_argument("--min-window-size", type=int, default=None,
                        help=f"fewest rows a check accepts (default {d.min_window_size})")
    parser.add_argument("--alpha", type=float, default=None,
                        help=f"family-wise false-alarm rate, split over the signals (default {d.alpha})")
    parser.add_argument("--signals", default="", help="comma-separated subset of: " + ",".join(d.signals))


def retrain_parameters(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` flags as retraining-pipeline arguments, typed by the compiled YAML's parameter types.

    Raises:
        ConfigError: A flag without ``=``, an unknown parameter or a value of the wrong type.
    """
    from textclf.deploy.kubeflow import coerce_arguments, load_pipeline_package
    from textclf.trigger import retraining_package

    raw = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--retrain-param {pair!r}: expected KEY=VALUE")
        raw[key] = value
    return coerce_arguments(raw, load_pipeline_package(retraining_package()))


def resolve_trigger(spec: str, retrain_params: list[str] | None = None) -> Any:
    """The ``on_drift`` callable named by ``--trigger``: empty for none, ``log`` to only log,
    ``retrain:local|kubeflow|vertex`` to start the retraining pipeline with ``--retrain-param`` arguments (the
    backend configured from the environment: :func:`textclf.trigger.trigger_from_env`), or
    ``package.module:function`` (called with the :class:`~textclf.monitor.drift.DriftResult`).

    Raises:
        ConfigError: Unknown backend, bad retraining parameters, or a module or function that cannot be found or
            is not callable.
    """
    if not spec:
        return None
    if spec == "log":
        return lambda result: log.warning("DRIFT TRIGGER: %s", result.summary())
    if spec.startswith("retrain:"):
        from textclf.trigger import retrain_on_drift, trigger_from_env

        return retrain_on_drift(trigger_from_env(spec.partition(":")[2]), retrain_parameters(retrain_params or []))
    module_name, _, attribute = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"--trigger {spec!r}: cannot import it ({exc}); expected package.module:function") from exc
    if not callable(target):
        raise ConfigError(f"--trigger {spec!r} is not callable")
    return target


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))


def cmd_monitor(args: argparse.Namespace) -> int:
    from textclf.monitor.endpoints import monitor_routes
    from textclf.monitor.metrics import MetricsServer, MonitorMetrics
    from textclf.monitor.reference import load_reference
    from textclf.monitor.service import DriftMonitor

    config = config_from_args(args)
    metrics = MonitorMetrics()
    monitor = DriftMonitor(args.request_log, load_reference(args.reference), args.state_dir, config,
                           on_drift=resolve_trigger(args.trigger, args.retrain_param), metrics=metrics,
                           write_html=not args.no_html, reference_source=args.reference,
                           reference_check_seconds=args.reference_check_seconds)
    if not args.request_log and not args.metrics_port:
        raise ConfigError("give --request-log, or --metrics-port to receive KServe logger events (or both)")
    routes = monitor_routes(monitor.store, metrics, monitor.refresh_accuracy)
    server = MetricsServer(metrics, args.metrics_port, args.metrics_host, live=monitor.live, ready=monitor.ready,
                           routes=routes) if args.metrics_port else None
    try:
        if args.once:
            results = monitor.poll() or [monitor.flush()]
            print_json([r.to_dict() for r in results])
            return 0
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        log.info("monitoring %s every %.0f s (state in %s)", ", ".join(map(str, args.request_log)),
                 args.poll_seconds, args.state_dir)
        monitor.run_forever(args.poll_seconds, stop)
        return 0
    finally:
        if server is not None:
            server.close()


def cmd_feedback(args: argparse.Namespace) -> int:
    """Store every label of the file; print the counts by outcome and the refused ones (exit 1 if any)."""
    from textclf.monitor.abtest import read_labels
    from textclf.monitor.store import STORE_FILE, FeedbackError, PredictionStore

    store_path = args.state_dir / STORE_FILE
    if not store_path.is_file():
        raise ConfigError(f"{store_path} does not exist: --state-dir must be a monitor's state directory")
    labels, unreadable = read_labels(args.labels)
    store = PredictionStore(store_path)
    outcomes: dict[str, int] = {"accepted": 0, "malformed": unreadable}
    refused = []
    try:
        for request_id, true_label in labels.items():
            try:
                store.add_feedback(request_id, true_label)
                outcomes["accepted"] += 1
            except FeedbackError as exc:
                outcomes[exc.outcome] = outcomes.get(exc.outcome, 0) + 1
                refused.append({"request_id": request_id, "outcome": exc.outcome, "error": str(exc)})
    finally:
        store.close()
    print_json({"labels_file": str(args.labels), "outcomes": outcomes, "refused": refused[:100]})
    return 1 if refused or unreadable else 0


def cmd_drift_check(args: argparse.Namespace) -> int:
    from textclf.monitor.service import run_drift_check

    config = config_from_args(args)
    result = run_drift_check(args.request_log, args.reference, args.output, config, rows=args.rows,
                             write_html=not args.no_html)
    payload = result.to_dict()
    payload["output_dir"] = str(args.output)
    print_json(payload)
    return 1 if args.fail_on_drift and result.drift_detected else 0


def _latest(args: argparse.Namespace, name: str) -> Path:
    from textclf.cli import latest_artifact

    return latest_artifact(args.runs_dir, name)


def cmd_drift_reference(args: argparse.Namespace) -> int:
    from textclf.monitor.reference import publish_reference, reference_from_splits, test_accuracy_of

    config = config_from_args(args)
    splits_dir = args.splits_dir or _latest(args, "splits")
    onnx_dir = args.onnx_dir or _latest(args, "onnx_model")
    evaluation_dir = args.evaluation_dir or _latest(args, "evaluation")
    reference = reference_from_splits(splits_dir, onnx_dir, config.reference_size, config.seed,
                                      precision=args.precision)
    reference.meta["test_accuracy"] = test_accuracy_of(evaluation_dir)
    publish_reference(reference, str(args.output))
    print_json({"output": str(args.output), **{k: v for k, v in reference.meta.items() if k != "package_versions"}})
    return 0


def cmd_bench_drift(args: argparse.Namespace) -> int:
    from textclf.benchmarks.drift_bench import run_drift_benchmark

    result = run_drift_benchmark(
        output=args.output,
        onnx_dir=args.onnx_dir or _latest(args, "onnx_model"),
        splits_dir=args.splits_dir or _latest(args, "splits"),
        window_sizes=tuple(int(s) for s in args.window_sizes.split(",")),
        windows=args.windows,
        timing_rows=args.timing_rows,
        cache_dir=args.cache_dir,
    )
    print_json({k: result[k] for k in ("summary", "targets")})
    return 0


def add_monitor_commands(subparsers: Any) -> None:
    """Add ``monitor`` (long-running), ``drift-check`` (one-shot) and ``drift-reference``.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
    """
    d = DriftConfig
    monitor = subparsers.add_parser("monitor", help="long-running drift monitor of the serving request log")
    monitor.add_argument("--request-log", type=Path, action="append", default=[],
                         help="request log file (rotated copies .1, .2 are followed) or directory of *.jsonl logs; "
                              "repeat for several; none when predictions arrive only as KServe logger events "
                              "(POST /v1/events on --metrics-port)")
    monitor.add_argument("--reference", required=True, help="reference directory or s3:// / gs:// URI")
    monitor.add_argument("--state-dir", type=Path, required=True, help="state.json and checks/ (results, reports)")
    _add_drift_arguments(monitor)
    monitor.add_argument("--cooldown-checks", type=int, default=None,
                         help=f"checks after a trigger that cannot trigger (default {d.cooldown_checks})")
    monitor.add_argument("--cooldown-seconds", type=float, default=None,
                         help=f"seconds after a trigger that cannot trigger (default {d.cooldown_seconds:g})")
    monitor.add_argument("--keep-reports", type=int, default=None,
                         help=f"HTML reports kept (default {d.keep_reports}; 0: all)")
    monitor.add_argument("--poll-seconds", type=float, default=10.0, help="how often the log is read (default 10)")
    monitor.add_argument("--reference-check-seconds", type=float, default=60.0,
                         help="how often --reference is re-read; a new fingerprint (the retraining pipeline publishes "
                              "a promoted model's reference there) is loaded without a restart (default 60)")
    monitor.add_argument("--metrics-port", type=int, default=0,
                         help="serve /metrics, /healthz/{live,ready} and the API (POST /v1/events for KServe's "
                              "logger, POST /v1/feedback for ground truth, GET /v1/ab) on this port (default 0: off)")
    monitor.add_argument("--accuracy-baseline", type=float, default=None,
                         help="accuracy the production model is held to once labels are fed back (default: the "
                              "reference's test_accuracy; none: no accuracy signal)")
    monitor.add_argument("--accuracy-tolerance", type=float, default=None,
                         help=f"drop below the baseline tolerated (default {d.accuracy_tolerance})")
    monitor.add_argument("--accuracy-alpha", type=float, default=None,
                         help=f"significance of the accuracy-drop test (default {d.accuracy_alpha})")
    monitor.add_argument("--accuracy-window", type=int, default=None,
                         help=f"latest labels the live accuracy uses (default {d.accuracy_window})")
    monitor.add_argument("--min-labelled", type=int, default=None,
                         help=f"labels needed before accuracy is tested (default {d.min_labelled})")
    monitor.add_argument("--metrics-host", default="0.0.0.0")
    monitor.add_argument("--once", action="store_true",
                         help="read what is new, run the checks due (at least one), print them and exit")
    monitor.add_argument("--trigger", default="",
                         help="on drift (outside the cooldown): '' nothing, 'log', 'retrain:local|kubeflow|vertex' "
                              "(the retraining pipeline; backend settings from the environment: KFP_HOST, "
                              "VERTEX_PROJECT, ...), or package.module:function")
    monitor.add_argument("--retrain-param", action="append", default=[], metavar="KEY=VALUE",
                         help="retraining-pipeline argument for --trigger retrain:... (repeatable; dataset_uri and "
                              "registry_uri are required)")
    monitor.add_argument("--no-html", action="store_true", help="write JSON results only")
    monitor.set_defaults(func=cmd_monitor)

    check = subparsers.add_parser("drift-check", help="one drift check of the latest requests (no state)")
    check.add_argument("--request-log", type=Path, action="append", required=True,
                       help="request log file or directory (repeatable)")
    check.add_argument("--reference", required=True, help="reference directory or s3:// / gs:// URI")
    check.add_argument("--output", type=Path, required=True, help="directory for drift_result.json/.html")
    check.add_argument("--rows", type=int, default=0, help="check the last N requests (default: --window-size)")
    _add_drift_arguments(check)
    check.add_argument("--no-html", action="store_true")
    check.add_argument("--fail-on-drift", action="store_true", help="exit with status 1 if drift is detected")
    check.set_defaults(func=cmd_drift_check)

    feedback = subparsers.add_parser("feedback", help="import ground-truth labels into a monitor's prediction store")
    feedback.add_argument("labels", type=Path, help="JSON lines {request_id, true_label}, a CSV with those columns, "
                                                    "or a JSON object {request_id: label}")
    feedback.add_argument("--state-dir", type=Path, required=True, help="the monitor's --state-dir")
    feedback.set_defaults(func=cmd_feedback)

    reference = subparsers.add_parser("drift-reference",
                                      help="build a model's drift reference from its training data")
    reference.add_argument("--splits-dir", type=Path, default=None, help="validate-stage output (default: latest run)")
    reference.add_argument("--onnx-dir", type=Path, default=None, help="export bundle (default: latest run)")
    reference.add_argument("--evaluation-dir", type=Path, default=None,
                           help="evaluate-stage output of the same model: its test accuracy becomes the monitor's "
                                "accuracy baseline (default: latest run)")
    reference.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    reference.add_argument("--output", required=True,
                           help="directory, or s3:// / gs:// URI (a running monitor's --reference follows it)")
    reference.add_argument("--reference-size", type=int, default=None,
                           help=f"rows (default {d.reference_size})")
    reference.add_argument("--seed", type=int, default=None, help=f"default {d.seed}")
    reference.add_argument("--precision", default="int8", choices=["int8", "fp32"],
                           help="the precision the server runs (default int8)")
    reference.set_defaults(func=cmd_drift_reference)


def add_bench_drift_command(subparsers: Any) -> None:
    """Add ``bench-drift`` (detection / false-alarm rates and seconds per check; see
    :func:`textclf.benchmarks.drift_bench.run_drift_benchmark`)."""
    bench = subparsers.add_parser("bench-drift", help="drift detection and false-alarm rates, seconds per check")
    bench.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    bench.add_argument("--onnx-dir", type=Path, default=None, help="export bundle (default: latest run)")
    bench.add_argument("--splits-dir", type=Path, default=None, help="its training splits (default: latest run)")
    bench.add_argument("--output", type=Path, default=Path("runs/bench/bench_drift.json"))
    bench.add_argument("--window-sizes", default="200,500,1000")
    bench.add_argument("--windows", type=int, default=50, help="windows per size and scenario")
    bench.add_argument("--timing-rows", type=int, default=5000)
    bench.add_argument("--cache-dir", type=Path, default=Path("runs/bench/drift_cache"),
                       help="model predictions of the window pools and the reference are cached here")
    bench.set_defaults(func=cmd_bench_drift)
