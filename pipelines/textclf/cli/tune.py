"""``textclf tune`` (an Optuna search, locally), ``textclf train-trial`` (one trial's training, as a Katib or Trainer
trial runs it) and ``textclf tune-manifest`` (the same search as a Katib ``Experiment`` or a Trainer
``OptimizationJob``). ``textclf.cli.build_parser`` calls :func:`add_tune_commands` on its subparsers.

Bad input (an unknown search-space parameter, an empty range, a value TrainConfig refuses) raises ``ConfigError``
before any training; ``textclf.cli.main`` prints it and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from textclf.config import TrainConfig, TrainMethod

#: TrainConfig fields ``train-trial`` and ``tune`` take as flags (``--learning-rate`` for ``learning_rate``).
TRAIN_FLAG_FIELDS = ("base_model", "method", "epochs", "batch_size", "learning_rate", "weight_decay", "warmup_ratio",
                     "max_length", "checkpoint_steps", "early_stopping_patience", "lora_r", "lora_alpha",
                     "lora_dropout", *TrainConfig.STRATEGY_FIELDS, "seed", "num_threads")


def add_train_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :data:`TRAIN_FLAG_FIELDS` field, typed as the field; unset flags keep TrainConfig's default."""
    group = parser.add_argument_group("training (TrainConfig fields; unset: TrainConfig's default)")
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name in TRAIN_FLAG_FIELDS:
        kind = {"int": int, "float": float}.get(str(types[name]), str)
        default = None if name == "base_model" else getattr(TrainConfig, name)
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                           choices=[m.value for m in TrainMethod] if name == "method" else None,
                           help=f"default: {'the packaged MiniLM-L6' if default is None else default!r}")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the flags set (checked: bad values raise ConfigError)."""
    return TrainConfig(**{name: getattr(args, name) for name in TRAIN_FLAG_FIELDS if getattr(args, name) is not None})


def _search_space(text: str | None) -> Any:
    from textclf.errors import ConfigError
    from textclf.tune import DEFAULT_SEARCH_SPACE, SearchSpace

    if not text:
        return DEFAULT_SEARCH_SPACE
    path = Path(text)
    try:
        spec = json.loads(path.read_text(encoding="utf-8") if path.is_file() else text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--search-space is neither a JSON file nor JSON: {exc}") from None
    return SearchSpace.from_dict(spec)


def _splits(args: argparse.Namespace, work_dir: Path) -> Path:
    """The splits to search on: ``--splits-dir``, or ``--dataset-uri`` ingested and split with ``--max-train-rows``
    into ``work_dir/splits`` (reused when already there)."""
    if args.splits_dir:
        return args.splits_dir
    from textclf.cli import default_dataset_uri
    from textclf.config import IngestConfig, SplitConfig
    from textclf.errors import ConfigError
    from textclf.ingest import ingest_dataset
    from textclf.validate import validate_and_split
    from textclf.validate.validate import REPORT_FILE

    dataset_uri = args.dataset_uri or default_dataset_uri()
    if not dataset_uri:
        raise ConfigError("no data: pass --splits-dir or --dataset-uri (../shared/datasets/ag_news was not found)")
    split_config = SplitConfig(max_train_rows=args.max_train_rows, validation_fraction=args.validation_fraction)
    splits = work_dir / "splits"
    if not (splits / REPORT_FILE).is_file():  # a finished split (reused on a rerun)
        ingest_dataset(IngestConfig(dataset_uri=dataset_uri), work_dir / "ingest")
        validate_and_split(work_dir / "ingest", split_config, splits)
    return splits


def cmd_tune(args: argparse.Namespace) -> int:
    from textclf.tune import BEST_PARAMS_FILE, TuneConfig, run_search
    from textclf.tune.space import check_space

    space = _search_space(args.search_space)  # bad input fails here, before any data is read
    base = train_config_from_args(args)
    config = TuneConfig(n_trials=args.trials, study_name=args.study_name, storage=args.storage, seed=args.tune_seed,
                        startup_trials=args.startup_trials, pruner_warmup_evaluations=args.pruner_warmup_evaluations,
                        timeout_seconds=args.timeout_seconds)
    check_space(space, base)  # before any data is read or model trained
    splits = _splits(args, args.output)
    result = run_search(splits, args.output, config, base, space)
    print(json.dumps({key: result.best[key] for key in ("params", "trial_number", "validation_accuracy",
                                                        "validation_loss", "defaults_trial", "trials", "study_name",
                                                        "storage")}, indent=2, default=str))
    print(f"best parameters: {result.output_dir / BEST_PARAMS_FILE}", file=sys.stderr)
    return 0


def print_metrics(summary: dict[str, Any], out: Any = None) -> None:
    """``name=value`` lines of the objective and the additional metrics (Katib's StdOut metrics collector format)."""
    from textclf.tune.tune import ADDITIONAL_METRICS, OBJECTIVE_METRIC

    out = out or sys.stdout
    for name in (OBJECTIVE_METRIC, *ADDITIONAL_METRICS):
        print(f"{name}={float(summary[name]):.6g}", file=out, flush=True)


def cmd_train_trial(args: argparse.Namespace) -> int:
    from textclf.storage import is_remote, localize
    from textclf.train import train_model
    from textclf.tune import apply_best_params

    config = train_config_from_args(args)
    if args.hyperparameters:
        config = apply_best_params(config, args.hyperparameters)
    with tempfile.TemporaryDirectory(prefix="textclf-trial-") as scratch:
        splits = str(args.splits_dir)
        split_dir = localize(splits, Path(scratch) / "splits") if is_remote(splits) else Path(splits)
        output = args.output or Path(scratch) / "model"
        result = train_model(split_dir, config, output, checkpoint_root=args.checkpoint_root, progress=False)
    print_metrics(result.summary)
    return 0


def cmd_tune_manifest(args: argparse.Namespace) -> int:
    import yaml
    from textclf.tune import TuneConfig
    from textclf.tune.katib import ClusterSearch, katib_experiment, optimization_job

    space = _search_space(args.search_space)
    base = train_config_from_args(args)
    search = ClusterSearch(name=args.name, namespace=args.namespace, splits_uri=args.splits_uri,
                           parallel_trials=args.parallel_trials)
    config = TuneConfig(n_trials=args.trials, seed=args.tune_seed)
    build = katib_experiment if args.kind == "Experiment" else optimization_job
    text = yaml.safe_dump(build(search, space, config, base), sort_keys=False)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_bench_tune(args: argparse.Namespace) -> int:
    from textclf.benchmarks.tune_bench import TuneBenchSettings, run_tune_benchmark
    from textclf.cli import default_dataset_uri

    settings = TuneBenchSettings(  # bad values fail here, before any work
        dataset_uri=args.dataset_uri or default_dataset_uri(), max_train_rows=args.max_train_rows,
        validation_fraction=args.validation_fraction, max_test_rows=args.max_test_rows, n_trials=args.trials,
        checkpoint_steps=args.checkpoint_steps, max_length=args.max_length, tune_seed=args.tune_seed,
        startup_trials=args.startup_trials, pruner_warmup_evaluations=args.pruner_warmup_evaluations,
        precision=args.precision,
        search_space=_search_space_text(args.search_space))
    result = run_tune_benchmark(settings, args.output, args.work_dir)
    print(json.dumps({key: result[key] for key in ("settings", "search", "validation", "meets_target")},
                     indent=2, default=str))
    print(json.dumps({"test": {name: {k: v for k, v in result["test"][name].items() if k != "params"}
                               for name in ("defaults", "tuned")}, "test_gain": result["test"]["gain"]}, indent=2))
    print(f"written: {args.output}", file=sys.stderr)
    return 0


def _search_space_text(text: str | None) -> str:
    """``--search-space`` as JSON text (a file's content, or the text itself); empty: the default space."""
    if not text:
        return ""
    path = Path(text)
    return path.read_text(encoding="utf-8") if path.is_file() else text


def add_pruner_flags(parser: Any) -> None:
    """``--startup-trials`` and ``--pruner-warmup-evaluations`` (TuneConfig's defaults)."""
    from textclf.tune import TuneConfig

    parser.add_argument("--startup-trials", type=int, default=TuneConfig.startup_trials,
                        help="random trials before TPE models the space; no pruning before as many finished")
    parser.add_argument("--pruner-warmup-evaluations", type=int, default=TuneConfig.pruner_warmup_evaluations,
                        help="validation evaluations (checkpoint steps at the smallest batch) before a trial can be "
                        "pruned; about one epoch's lets long schedules past their slow start")


def add_bench_tune_command(subparsers: Any) -> None:
    """Add ``bench-tune`` (``make bench-tune``)."""
    from textclf.benchmarks.tune_bench import TuneBenchSettings
    from textclf.config import Precision

    bench = subparsers.add_parser(
        "bench-tune", help="Optuna search vs the defaults: validation and full-test-set accuracy (hours; resumes)",
        description="Search 12 trials on 6,000 AG News rows (trial 0: the defaults), retrain the defaults and the "
        "best parameters, score both on the whole test set. The study is in SQLite under --work-dir: a killed "
        "run resumes.")
    bench.add_argument("--dataset-uri", default="", help="default: ../shared/datasets/ag_news")
    bench.add_argument("--max-train-rows", type=int, default=TuneBenchSettings.max_train_rows)
    bench.add_argument("--validation-fraction", type=float, default=TuneBenchSettings.validation_fraction)
    bench.add_argument("--max-test-rows", type=int, default=TuneBenchSettings.max_test_rows,
                       help="0: the whole test set (the target)")
    bench.add_argument("--trials", type=int, default=TuneBenchSettings.n_trials)
    bench.add_argument("--checkpoint-steps", type=int, default=TuneBenchSettings.checkpoint_steps)
    bench.add_argument("--max-length", type=int, default=TuneBenchSettings.max_length)
    bench.add_argument("--tune-seed", type=int, default=TuneBenchSettings.tune_seed)
    add_pruner_flags(bench)
    bench.add_argument("--precision", default=TuneBenchSettings.precision, choices=[p.value for p in Precision],
                       help="of every trial and both retrained models (bf16: autocast, needs avx512_bf16/amx_bf16)")
    bench.add_argument("--search-space", default=None, help="JSON (file or inline); default: the default space")
    bench.add_argument("--output", type=Path, default=Path("runs/bench/bench_tune.json"))
    bench.add_argument("--work-dir", type=Path, default=Path("runs/bench/tune"),
                       help="splits, study.db, models; one folder per settings hash (what a rerun resumes)")
    bench.set_defaults(func=cmd_bench_tune)


def add_tune_commands(subparsers: Any) -> None:
    """Add ``tune``, ``train-trial``, ``tune-manifest`` and ``bench-tune``."""
    from textclf.config import SplitConfig
    from textclf.tune import TuneConfig

    defaults = TuneConfig()
    space_help = ("JSON (a file or inline) {name: {low, high[, log][, type: int]} | {choices: [...]}}; default: "
                  "learning_rate, epochs, warmup_ratio, weight_decay, label_smoothing, batch_size")

    tune = subparsers.add_parser(
        "tune", help="Optuna search (TPE, median pruning) over TrainConfig fields; resumes from its storage",
        description="Search hyper-parameters locally: each trial fine-tunes on the splits and reports every "
        "validation evaluation to a median pruner. The study is kept in --storage (default: OUTPUT/study.db): "
        "rerun the same command after a kill and it continues. Writes OUTPUT/best_params.json.")
    data = tune.add_argument_group("data (--splits-dir, or a dataset with a row cap)")
    data.add_argument("--splits-dir", type=Path, default=None, help="the validate/split stage's output")
    data.add_argument("--dataset-uri", default="", help="default: ../shared/datasets/ag_news")
    data.add_argument("--max-train-rows", type=int, default=6000, help="row cap (0: every row; default 6000)")
    data.add_argument("--validation-fraction", type=float, default=SplitConfig.validation_fraction)
    tune.add_argument("--trials", type=int, default=defaults.n_trials, help=f"default {defaults.n_trials}")
    tune.add_argument("--storage", default=defaults.storage, help="Optuna RDB URL (default: sqlite:///OUTPUT/study.db)")
    tune.add_argument("--study-name", default=defaults.study_name)
    tune.add_argument("--tune-seed", type=int, default=defaults.seed, help="TPE sampler seed")
    add_pruner_flags(tune)
    tune.add_argument("--timeout-seconds", type=float, default=defaults.timeout_seconds)
    tune.add_argument("--search-space", default=None, help=space_help)
    tune.add_argument("--output", type=Path, default=Path("runs/tune"), help="default: runs/tune")
    add_train_config_flags(tune)
    tune.set_defaults(func=cmd_tune)

    trial = subparsers.add_parser(
        "train-trial", help="train once and print validation_accuracy=... / validation_loss=... (a search's trial)",
        description="Fine-tune on the splits with the given TrainConfig flags (and --hyperparameters, a tune "
        "stage's best_params.json, applied on top) and print the objective lines Katib's StdOut collector reads.")
    trial.add_argument("--splits-dir", required=True, help="the validate/split output: a path, s3:// or gs://")
    trial.add_argument("--hyperparameters", type=Path, default=None, help="best_params.json of a search")
    trial.add_argument("--output", type=Path, default=None, help="keep the model here (default: discarded)")
    trial.add_argument("--checkpoint-root", default=None, help="resumable checkpoints (default: none)")
    add_train_config_flags(trial)
    trial.set_defaults(func=cmd_train_trial)

    manifest = subparsers.add_parser(
        "tune-manifest", help="the search as a Katib Experiment or a Kubeflow Trainer OptimizationJob (YAML)")
    manifest.add_argument("--kind", choices=("Experiment", "OptimizationJob"), default="Experiment")
    manifest.add_argument("--name", default="textclf-tune")
    manifest.add_argument("--namespace", default="kubeflow")
    manifest.add_argument("--splits-uri", required=True, help="the splits every trial reads (s3://, gs:// or a path "
                          "on a volume)")
    manifest.add_argument("--trials", type=int, default=defaults.n_trials)
    manifest.add_argument("--parallel-trials", type=int, default=1)
    manifest.add_argument("--tune-seed", type=int, default=defaults.seed)
    manifest.add_argument("--search-space", default=None, help=space_help)
    manifest.add_argument("--output", type=Path, default=None, help="default: stdout")
    add_train_config_flags(manifest)
    manifest.set_defaults(func=cmd_tune_manifest)
    add_bench_tune_command(subparsers)
