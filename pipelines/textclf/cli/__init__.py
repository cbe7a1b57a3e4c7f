"""``textclf`` command line: run the pipelines locally, compile them, serve the model, and benchmark.

Argument parsing lives here only; every command calls plain functions of the stages and pipelines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from textclf.config import SplitConfig, TrainConfig, TrainMethod
from textclf.errors import TextclfError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RUNS_DIR = Path("runs")


def default_dataset_uri() -> str:
    """``$TEXTCLF_DATASET_URI``, else ``../shared/datasets/ag_news`` beside the repository or the working directory."""
    if os.environ.get("TEXTCLF_DATASET_URI"):
        return os.environ["TEXTCLF_DATASET_URI"]
    for base in (Path.cwd(), REPO_ROOT):
        candidate = base.parent / "shared" / "datasets" / "ag_news"
        if candidate.is_dir():
            return str(candidate.resolve())
    return ""


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    train, split = TrainConfig, SplitConfig  # class attributes hold the defaults; no instance needed
    parser.add_argument("--dataset-uri", default=default_dataset_uri(),
                        help="directory with train/test files (default: ../shared/datasets/ag_news)")
    parser.add_argument("--dataset-format", default="auto", help="auto, ag_news, arxiv_cs or generic")
    parser.add_argument("--text-columns", default="text", help="generic format: comma-separated text columns")
    parser.add_argument("--label-column", default="label", help="generic format: label column")
    parser.add_argument("--method", default=train.method, choices=[m.value for m in TrainMethod])
    parser.add_argument("--base-model", default="", help="HF model directory or hub id (default: packaged MiniLM-L6)")
    parser.add_argument("--epochs", type=float, default=train.epochs)
    parser.add_argument("--batch-size", type=int, default=train.batch_size)
    parser.add_argument("--learning-rate", type=float, default=train.learning_rate, help="0: the method's default")
    parser.add_argument("--max-train-rows", type=int, default=6000, help="cap on train+validation rows (0: all)")
    parser.add_argument("--max-test-rows", type=int, default=split.max_test_rows, help="0: the whole test set")
    parser.add_argument("--validation-fraction", type=float, default=split.validation_fraction)
    parser.add_argument("--checkpoint-steps", type=int, default=train.checkpoint_steps)
    parser.add_argument("--seed", type=int, default=split.seed)
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                        help="where local runs, checkpoints and the latest-run pointer go (default: runs/)")
    parser.add_argument("--checkpoint-root", default="",
                        help="resumable checkpoints: a directory or s3:// / gs:// prefix (default: RUNS_DIR/checkpoints)")
    parser.add_argument("--registry-uri", default="",
                        help="also register the model there as a candidate (a path, s3:// or gs:// prefix)")


def pipeline_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline parameters from parsed flags, validated through the typed configs first."""
    if not args.dataset_uri:
        raise TextclfError("no dataset: pass --dataset-uri (../shared/datasets/ag_news was not found)")
    from textclf.ingest.ingest import SPLITS, find_split_file, remote_split_files, resolve_local_dir
    from textclf.storage import is_remote

    # Fail here, not deep inside the pipeline: the split files must be there (listing only for object stores).
    if is_remote(str(args.dataset_uri)):
        remote_split_files(str(args.dataset_uri))
    else:
        dataset_dir = resolve_local_dir(str(args.dataset_uri))
        for split in SPLITS:
            find_split_file(dataset_dir, split)
    SplitConfig(validation_fraction=args.validation_fraction, max_train_rows=args.max_train_rows,
                max_test_rows=args.max_test_rows, seed=args.seed)
    TrainConfig(base_model=args.base_model or "(packaged)", method=args.method, epochs=args.epochs,
                batch_size=args.batch_size, learning_rate=args.learning_rate,
                checkpoint_steps=args.checkpoint_steps, seed=args.seed)
    for uri in (args.checkpoint_root, args.registry_uri):
        if uri:
            is_remote(uri)  # a malformed URI or unknown scheme fails here
    if args.method == TrainMethod.QLORA.value:
        from textclf.train import check_hardware

        check_hardware(TrainMethod.QLORA)
    return {
        "dataset_uri": str(args.dataset_uri),
        "dataset_format": args.dataset_format,
        "text_columns": args.text_columns,
        "label_column": args.label_column,
        "method": args.method,
        "base_model": args.base_model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_train_rows": args.max_train_rows,
        "max_test_rows": args.max_test_rows,
        "validation_fraction": args.validation_fraction,
        "checkpoint_steps": args.checkpoint_steps,
        "checkpoint_root": args.checkpoint_root or str((args.runs_dir / "checkpoints").resolve()),
        "seed": args.seed,
        "registry_uri": args.registry_uri,
    }


def cmd_run(args: argparse.Namespace) -> int:
    from textclf.pipelines.local import run_training_locally

    arguments = pipeline_arguments(args)
    try:
        summary = run_training_locally(arguments, args.runs_dir)
    except RuntimeError as exc:  # the local runner reports a failed task this way; its log is printed above
        print(f"textclf: error: {exc} (the failing component's error is in the log above)", file=sys.stderr)
        return 1
    print(json.dumps(summary["metrics"], indent=2))
    print("\nArtifacts:")
    for name, path in summary["artifacts"].items():
        print(f"  {name:<22} {path}")
    if "registered_version" in summary:
        print(f"\nRegistered {summary['registered_version']} (candidate) in {arguments['registry_uri']}")
    print(f"\nRun folder: {summary['run_dir']}\nSummary:    {summary['summary_file']}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from textclf.pipelines.compile import compile_all, stale_pipelines

    if args.check:
        stale = stale_pipelines()
        for path, diff in stale.items():
            print(f"STALE {path}:\n{diff}\n", file=sys.stderr)
        if stale:
            print("committed pipeline YAML differs from a fresh compile: run `make compile`", file=sys.stderr)
            return 1
        print("all compiled pipelines are current")
        return 0
    for path in compile_all():
        print(f"wrote {path}")
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from textclf.benchmarks.train_bench import run_train_benchmark

    TrainConfig(base_model="(packaged)", epochs=args.epochs, batch_size=args.batch_size)  # bad values fail here
    result = run_train_benchmark(
        args.dataset_uri, args.output, args.runs_dir, args.throughput_rows, args.epochs, args.batch_size
    )
    print(json.dumps(result, indent=2))
    return 0


def latest_artifact(runs_dir: Path, name: str) -> Path:
    """An artifact of the newest local training run (``runs_dir/latest.json``).

    Raises:
        TextclfError: No local run yet, or the artifact is gone.
    """
    latest = runs_dir / "latest.json"
    if not latest.is_file():
        raise TextclfError(f"no local training run in {runs_dir}: run `make run` first, or pass the directory")
    from textclf.provenance import read_json

    path = Path(read_json(latest)["artifacts"][name])
    if not path.exists():
        raise TextclfError(f"{latest} points at {path}, which no longer exists: run `make run` again")
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    from textclf.serving.__main__ import main as serving_main

    serve_args = list(args.serve_args)
    if not any(arg.split("=")[0] == "--model-dir" for arg in serve_args):
        serve_args = ["--model-dir", str(latest_artifact(args.runs_dir, "onnx_model")), *serve_args]
    serving_main(serve_args)
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from textclf.benchmarks.serve_bench import run_serve_benchmark

    model_dir = args.model_dir or latest_artifact(args.runs_dir, "model")
    onnx_dir = args.onnx_dir or latest_artifact(args.runs_dir, "onnx_model")
    result = run_serve_benchmark(model_dir, onnx_dir, args.output, args.seconds)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textclf", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the training pipeline locally (kfp.local, no cluster)")
    _add_training_arguments(run)
    run.set_defaults(func=cmd_run)

    comp = commands.add_parser("compile", help="compile every pipeline to its committed YAML")
    comp.add_argument("--check", action="store_true", help="exit 1 if a committed YAML is stale")
    comp.set_defaults(func=cmd_compile)

    bench = commands.add_parser("bench-train", help="training throughput and full-data accuracy benchmark")
    bench.add_argument("--dataset-uri", default=default_dataset_uri())
    bench.add_argument("--output", type=Path, default=Path("runs/bench/bench_train.json"))
    bench.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR / "bench")
    bench.add_argument("--throughput-rows", type=int, default=960, help="rows per throughput measurement")
    bench.add_argument(
        "--epochs", type=float, default=TrainConfig.epochs,
        help="epochs of the full-data run (the accuracy target is for 1; another value never meets it)",
    )
    bench.add_argument(
        "--batch-size", type=int, default=TrainConfig.batch_size, help="batch size of the full-data run"
    )
    bench.set_defaults(func=cmd_bench_train)

    serve = commands.add_parser(
        "serve", allow_abbrev=False,
        help="serve the newest local export with KServe (other flags: python -m textclf.serving --help)",
        description="Serve the newest local export with KServe. Every flag not listed here (--model-dir, "
        "--precision, --http-port, ...) is passed, in order, to python -m textclf.serving.",
    )
    serve.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="where `textclf run` wrote latest.json")
    # The server's own flags are the leftovers of parse_known_args (see main): argparse.REMAINDER drops a leftover
    # list that starts with an unknown option.
    serve.set_defaults(func=cmd_serve, takes_server_flags=True)

    bench_serve = commands.add_parser("bench-serve", help="our KServe ONNX predictor vs a PyTorch baseline")
    bench_serve.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    bench_serve.add_argument("--model-dir", type=Path, default=None, help="train-stage model (default: latest run)")
    bench_serve.add_argument("--onnx-dir", type=Path, default=None, help="export bundle (default: latest run)")
    bench_serve.add_argument("--output", type=Path, default=Path("runs/bench/bench_serve.json"))
    bench_serve.add_argument("--seconds", type=float, default=20.0, help="load duration per concurrency level")
    bench_serve.set_defaults(func=cmd_bench_serve)

    from textclf.cli.deploy import add_deploy_commands
    from textclf.cli.gate import add_gate_commands
    from textclf.cli.registry import add_registry_commands

    from textclf.loop import add_loop_command
    from textclf.cli.monitor import add_bench_drift_command, add_monitor_commands

    add_registry_commands(commands)
    add_gate_commands(commands)
    add_deploy_commands(commands)
    add_monitor_commands(commands)
    add_bench_drift_command(commands)
    add_loop_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "takes_server_flags", False):
        args.serve_args = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except TextclfError as exc:
        print(f"textclf: error: {exc}", file=sys.stderr)
        return 2

