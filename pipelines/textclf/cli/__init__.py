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

from textclf.config import EnsembleMethod, StudentInit, TrainConfig, TrainMethod
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


#: Pipeline parameters whose values are an enum's members: the parser offers only those.
PARAMETER_CHOICES = {"method": [m.value for m in TrainMethod], "ensemble_method": [m.value for m in EnsembleMethod],
                     "student_init": [m.value for m in StudentInit]}
#: How ``textclf run`` differs from the pipeline's defaults, shown in ``--help`` (applied in pipeline_arguments).
LOCAL_DEFAULTS_HELP = {
    "dataset_uri": "here: $TEXTCLF_DATASET_URI, else ../shared/datasets/ag_news when it exists",
    "checkpoint_root": "here, when empty: RUNS_DIR/checkpoints, so a rerun resumes",
}


def _boolean(text: str) -> bool:
    if text.strip().lower() in ("true", "1", "yes"):
        return True
    if text.strip().lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


#: kfp parameter type -> how a flag's text becomes a value of that type.
FLAG_TYPES = {"String": str, "Integer": int, "Float": float, "Boolean": _boolean}


def _add_pipeline_arguments(parser: argparse.ArgumentParser, pipeline_func: Any) -> None:
    """One flag per parameter of ``pipeline_func`` (``--max-train-rows`` for ``max_train_rows``), typed and defaulted
    as the pipeline declares it, with the help of the component input it feeds."""
    from textclf.pipelines.parameters import parameter_descriptions, parameter_specs

    descriptions = parameter_descriptions(pipeline_func)
    group = parser.add_argument_group(
        f"parameters of the {pipeline_func.name} pipeline", "every one can be set; defaults are the pipeline's"
    )
    for name, spec in parameter_specs(pipeline_func).items():
        if spec.type not in FLAG_TYPES:
            raise TypeError(f"pipeline parameter {name} has type {spec.type}, which has no flag type")
        default = spec.default if spec.optional else None
        notes = [LOCAL_DEFAULTS_HELP[name]] if name in LOCAL_DEFAULTS_HELP else []
        notes.append(f"default: {default!r}" if spec.optional else "the pipeline has no default")
        text = f"{descriptions.get(name, '')} ({'; '.join(notes)})".strip()
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=FLAG_TYPES[spec.type], default=default,
                           choices=PARAMETER_CHOICES.get(name), help=text.replace("%", "%%"))


def pipeline_arguments(args: argparse.Namespace, pipeline_func: Any) -> dict[str, Any]:
    """Every parameter of ``pipeline_func`` from the parsed flags, checked before any work: as a Kubeflow submission
    is (:func:`textclf.pipelines.parameters.check_pipeline_arguments`: names, types, the typed configs), then what a
    local run needs (the dataset's files, well-formed URIs, a GPU for QLoRA).

    Raises:
        TextclfError: A value is refused (exit 2).
    """
    from textclf.pipelines.parameters import check_pipeline_arguments, parameter_specs

    arguments = {name: getattr(args, name) for name in parameter_specs(pipeline_func)}
    arguments["dataset_uri"] = arguments["dataset_uri"] or default_dataset_uri()
    if not arguments["dataset_uri"]:
        raise TextclfError("no dataset: pass --dataset-uri (../shared/datasets/ag_news was not found)")
    arguments["checkpoint_root"] = arguments["checkpoint_root"] or str((args.runs_dir / "checkpoints").resolve())
    arguments = check_pipeline_arguments(pipeline_func, arguments)

    from textclf.ingest.ingest import SPLITS, find_split_file, remote_split_files, resolve_local_dir
    from textclf.storage import is_remote

    # Fail here, not deep inside the pipeline: the split files must be there (listing only for object stores).
    dataset_uri = str(arguments["dataset_uri"])
    if is_remote(dataset_uri):
        remote_split_files(dataset_uri)
    else:
        dataset_dir = resolve_local_dir(dataset_uri)
        for split in SPLITS:
            find_split_file(dataset_dir, split)
    for name in ("checkpoint_root", "registry_uri"):
        if arguments.get(name):
            is_remote(str(arguments[name]))  # a malformed URI or unknown scheme fails here
    if int(arguments.get("workers") or 1) > 1:  # the TrainJob's pods cannot reach a local run's artifacts
        raise TextclfError(
            f"workers={arguments['workers']} trains in a Kubeflow Trainer TrainJob, which needs the pipeline on a "
            "cluster (an s3:// or gs:// pipeline root the TrainJob's pods can reach); a local run trains in one "
            "process. For DDP on this machine: python -m textclf.trainjob --workers N (docs/distributed.md)")
    if arguments.get("method") == TrainMethod.QLORA.value:
        from textclf.train import check_hardware

        check_hardware(TrainMethod.QLORA)
    return arguments


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"
    return str(value)


def _table(rows: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(name, text) rows of the scalars of a flat or nested mapping; nested keys are dotted, lists left out."""
    out = []
    for name, value in rows.items():
        if isinstance(value, dict):
            out += _table(value, f"{prefix}{name}.")
        elif not isinstance(value, (list, tuple)):
            out.append((f"{prefix}{name}", _cell(value)))
    return out


def print_run_summary(summary: dict[str, Any], out: Any = None) -> None:
    """The artifact paths, the run folder and its logs, then the metrics table (what ``make run`` ends with; lists,
    such as the INT8 attempts, are in the summary file)."""
    out = out or sys.stdout
    print("\nArtifacts", file=out)
    for name, path in summary["artifacts"].items():
        print(f"  {name:<20} {path}", file=out)
    if "registered_version" in summary:
        print(f"\nRegistered {summary['registered_version']} (candidate) in {summary['arguments']['registry_uri']}",
              file=out)
    print(f"\nRun folder  {summary['run_dir']}\nTask logs   {summary['logs_dir']}\nSummary     "
          f"{summary['summary_file']}", file=out)
    rows = _table(summary["metrics"])
    width = max(len(name) for name, _ in rows)
    print(f"\n{'metric':<{width}}  value\n{'-' * width}  {'-' * max(len(text) for _, text in rows)}", file=out)
    for name, text in rows:
        print(f"{name:<{width}}  {text}", file=out)


#: ``textclf run --pipeline NAME``: the pipelines that run locally, with the function that runs and summarises one.
LOCAL_PIPELINES = {"training": "run_training_locally", "distillation": "run_distillation_locally"}
DEFAULT_LOCAL_PIPELINE = "training"


def local_pipeline(name: str) -> Any:
    """The pipeline function ``textclf run --pipeline name`` runs."""
    if name == "distillation":
        from textclf.pipelines.distillation.pipeline import distillation_pipeline

        return distillation_pipeline
    from textclf.pipelines.training.pipeline import training_pipeline

    return training_pipeline


def cmd_run(args: argparse.Namespace) -> int:
    from textclf.pipelines import local
    from textclf.pipelines.parameters import parameter_specs

    pipeline_func = local_pipeline(args.pipeline)
    arguments = pipeline_arguments(args, pipeline_func)
    specs = parameter_specs(pipeline_func)
    changed = [f"{name}={value}" for name, value in arguments.items()
               if name != "dataset_uri" and (not specs[name].optional or value != specs[name].default)]
    print(f"{pipeline_func.name} on {arguments['dataset_uri']}\n  parameters set: {', '.join(changed) or 'none'} "
          f"(the others: the pipeline's defaults)\n  runs: {args.runs_dir.resolve()}", flush=True)
    try:
        summary = getattr(local, LOCAL_PIPELINES[args.pipeline])(arguments, args.runs_dir)
    except local.LocalRunError as exc:
        print(f"textclf: error: {exc}", file=sys.stderr)
        return 1
    print_run_summary(summary)
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


def shared_dataset_uri(name: str) -> str:
    """``../shared/datasets/<name>`` beside the working directory or the repository; empty when neither has it."""
    for base in (Path.cwd(), REPO_ROOT):
        candidate = base.parent / "shared" / "datasets" / name
        if candidate.is_dir():
            return str(candidate.resolve())
    return ""


def default_quality_dataset_uri() -> str:
    """``../shared/datasets/ag_news_64k`` (the quality targets' data), else the default dataset."""
    return shared_dataset_uri("ag_news_64k") or default_dataset_uri()


def cmd_bench_quality(args: argparse.Namespace) -> int:
    from textclf.benchmarks.quality_bench import QualitySettings, markdown, run_quality_benchmark

    settings = QualitySettings(  # bad values fail here, before any work
        dataset_uri=args.dataset_uri, max_train_rows=args.max_train_rows, teacher_epochs=args.teacher_epochs,
        extra_teacher_seeds=tuple(args.extra_teacher_seeds),
        student_epochs=args.student_epochs, student_layers=tuple(args.student_layers),
        distill_temperature=args.distill_temperature, distill_alpha=args.distill_alpha,
        student_init=args.student_init, ensemble_method=args.ensemble_method, ablations=args.ablations,
        precision=args.precision,
    )
    result = run_quality_benchmark(settings, args.output, args.work_dir)
    print(markdown(result))
    return 0


def cmd_cascade(args: argparse.Namespace) -> int:
    from textclf.cascade import build_cascade
    from textclf.config import CascadeConfig
    from textclf.serving.config import Precision

    config = CascadeConfig(accuracy_tolerance=args.accuracy_tolerance, confidence=args.confidence,
                           stage2_returns=args.stage2_returns, threshold=args.threshold)  # bad values fail here, before any work
    result = build_cascade(args.stage1, args.stage2, args.splits, config, args.output, Precision(args.precision))
    print(json.dumps({"output": str(result.output_dir), "threshold": result.spec.threshold,
                      "selection": result.spec.selection}, indent=2))
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
    from textclf.benchmarks.serve_bench import BenchModels, run_serve_benchmark

    models = BenchModels(
        model_dir=args.model_dir or latest_artifact(args.runs_dir, "model"),
        onnx_dir=args.onnx_dir or latest_artifact(args.runs_dir, "onnx_model"),
        student_dir=args.student_onnx_dir, cascade_dirs=tuple(args.cascade_dir),
    )
    result = run_serve_benchmark(models, args.output, args.seconds, accuracy_texts=args.accuracy_texts)
    print(json.dumps(result, indent=2))
    return 0


def build_parser(with_pipeline_flags: bool = True, pipeline: str = DEFAULT_LOCAL_PIPELINE) -> argparse.ArgumentParser:
    """The parser; ``with_pipeline_flags=False`` leaves out ``run``'s pipeline flags, which import the pipeline
    (kfp and every component: about 2 s), for the other commands; ``pipeline`` is the one whose flags ``run`` gets
    (``--pipeline``, read from the command line before the parser is built)."""
    parser = argparse.ArgumentParser(prog="textclf", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a pipeline locally (kfp.local, no cluster); default: training",
                              description="Run a pipeline locally (kfp.local, no cluster); every parameter of the "
                              "chosen pipeline is a flag (see `textclf run --pipeline distillation --help`). The "
                              "console shows the stages, the training progress and the metrics; each task's log is in "
                              "the run folder (logs/).")
    run.add_argument("--pipeline", choices=sorted(LOCAL_PIPELINES), default=DEFAULT_LOCAL_PIPELINE,
                     help="training: one fine-tune (make run); distillation: teacher + TF-IDF -> ensemble -> "
                     "k-layer student, every model compared (default: training)")
    run.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                     help="where local runs, checkpoints and the latest-run pointer go (default: runs/)")
    if with_pipeline_flags:
        _add_pipeline_arguments(run, local_pipeline(pipeline))
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

    from textclf.config import DistillConfig, EnsembleConfig
    from textclf.config import Precision as TrainPrecision

    quality = commands.add_parser(
        "bench-quality", help="every model of the distillation pipeline side by side (hours on 2 cores; resumes)",
        description="Train the TF-IDF model, a teacher, their ensemble, distilled and labels-only students and the "
        "1-epoch baseline, score all on the test set, time their INT8 models. Resumes after a kill.")
    quality.add_argument("--dataset-uri", default=default_quality_dataset_uri())
    quality.add_argument("--max-train-rows", type=int, default=0, help="0: every row (the pilot: 6000)")
    quality.add_argument("--teacher-epochs", type=float, default=2.0)
    quality.add_argument("--extra-teacher-seeds", type=int, nargs="*", default=[],
                         help="more ensemble members: the teacher's recipe with these seeds")
    quality.add_argument("--student-epochs", type=float, default=2.0)
    quality.add_argument("--student-layers", type=int, nargs="+", default=[DistillConfig.student_layers])
    quality.add_argument("--distill-temperature", type=float, default=DistillConfig.temperature)
    quality.add_argument("--distill-alpha", type=float, default=DistillConfig.alpha)
    quality.add_argument("--student-init", choices=[m.value for m in StudentInit], default=DistillConfig.init)
    quality.add_argument("--ensemble-method", choices=[m.value for m in EnsembleMethod], default=EnsembleConfig.method)
    quality.add_argument("--precision", default=TrainConfig.precision, choices=[p.value for p in TrainPrecision],
                         help="of every transformer trained (bf16: autocast, needs avx512_bf16/amx_bf16)")
    quality.add_argument("--no-ablations", dest="ablations", action="store_false",
                         help="train only the rows the targets are measured on (no 1-epoch baseline, no "
                         "labels-only students)")
    quality.add_argument("--output", type=Path, default=Path("runs/bench/bench_quality.json"),
                         help="the JSON; the Markdown table goes beside it (.md)")
    quality.add_argument("--work-dir", type=Path, default=Path("runs/bench/quality"),
                         help="models and checkpoints, one folder per settings hash (what a rerun resumes)")
    quality.set_defaults(func=cmd_bench_quality)

    from textclf.config import CascadeConfig
    from textclf.serving.cascade import Stage2Returns

    cascade_defaults = CascadeConfig()
    cascade = commands.add_parser(
        "cascade", help="build a cascade bundle from two served models (threshold chosen on the validation split)")
    cascade.add_argument("--stage1", type=Path, required=True, help="classical model dir or small export bundle")
    cascade.add_argument("--stage2", type=Path, required=True, help="the transformer's export bundle")
    cascade.add_argument("--splits", type=Path, required=True, help="the validate/split stage's output")
    cascade.add_argument("--output", type=Path, required=True, help="directory to create")
    cascade.add_argument("--accuracy-tolerance", type=float, default=cascade_defaults.accuracy_tolerance)
    cascade.add_argument("--confidence", type=float, default=cascade_defaults.confidence,
                         help="one-sided confidence of the bound on the validation accuracy loss (0.5: none)")
    cascade.add_argument("--stage2-returns", choices=[r.value for r in Stage2Returns],
                         default=cascade_defaults.stage2_returns)
    cascade.add_argument("--threshold", type=float, default=cascade_defaults.threshold,
                         help="0 chooses it on validation")
    cascade.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    cascade.set_defaults(func=cmd_cascade)

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
    bench_serve.add_argument("--student-onnx-dir", type=Path, default=None,
                             help="a distilled student's export bundle, served and measured against the targets")
    bench_serve.add_argument("--cascade-dir", type=Path, action="append", default=[],
                             help="a cascade bundle (textclf cascade / the cascade component), served and measured "
                             "against the targets; repeatable")
    bench_serve.add_argument("--accuracy-texts", type=int, default=2000,
                             help="test texts sent once each to every server for its served accuracy (0: skip)")
    bench_serve.set_defaults(func=cmd_bench_serve)

    from textclf.cli.deploy import add_deploy_commands
    from textclf.cli.gate import add_gate_commands
    from textclf.cli.registry import add_registry_commands
    from textclf.cli.tune import add_tune_commands

    from textclf.loop import add_loop_command
    from textclf.cli.monitor import add_bench_drift_command, add_monitor_commands

    add_registry_commands(commands)
    add_gate_commands(commands)
    add_deploy_commands(commands)
    add_monitor_commands(commands)
    add_bench_drift_command(commands)
    add_loop_command(commands)
    add_tune_commands(commands)
    return parser


def _chosen_pipeline(argv: list[str]) -> str:
    """The value of ``--pipeline`` (``--pipeline X`` or ``--pipeline=X``) in ``argv``, if it names a local pipeline
    (otherwise the parser reports it)."""
    for index, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--pipeline=") else (
            argv[index + 1] if arg == "--pipeline" and index + 1 < len(argv) else None)
        if value in LOCAL_PIPELINES:
            return value
    return DEFAULT_LOCAL_PIPELINE


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(with_pipeline_flags=command == "run", pipeline=_chosen_pipeline(argv))
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

