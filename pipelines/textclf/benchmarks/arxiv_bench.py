"""``make bench-arxiv``: the production run of seed 004 on the imbalanced 20-class arXiv CS abstracts.

Steps (each resumable: a rerun skips the finished ones and a cut-off training resumes its checkpoints):

1. **data**: ingest ``arxiv_cs`` (the ``abstract`` text profile: LaTeX and URLs cleaned in training and serving
   alike) and split it with a stated train-row cap (stratified, so every class keeps its share; the test set is the
   complete official 10,318 rows).
2. **lengths**: token counts of the cleaned train abstracts; ``max_length`` is the smallest multiple of 32 that
   covers ``length_coverage`` of them (at most 512).
3. **classical**: the TF-IDF + linear SVM baseline on the same rows.
4. **transformer**: MiniLM-L6 fine-tuned with balanced class weights (the cross-entropy weighted by inverse class
   frequency) at that ``max_length``.
5. **compare**: both scored on the test set side by side (accuracy, macro-F1, per-class F1, ECE) and the
   transformer's INT8 export timed for size.

Targets (issue 16): the transformer's macro-F1 above the TF-IDF baseline of the same run, model < 500 MB.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TARGET_MAX_MODEL_MB = 500.0


@dataclass(frozen=True)
class ArxivSettings:
    """What the run trains (recorded in the JSON; the work directory is named by them)."""

    dataset_uri: str
    max_train_rows: int = 20_000
    epochs: float = 2.0
    batch_size: int = 32
    class_weights: str = "balanced"
    length_coverage: float = 0.95
    precision: str = "fp32"
    seed: int = 42
    base_model: str = ""  # empty: the packaged MiniLM-L6

    def key(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def choose_max_length(lengths: list[int], coverage: float, multiple: int = 32, cap: int = 512) -> int:
    """The smallest multiple of ``multiple`` (at most ``cap``) that is at least the ``coverage`` quantile of
    ``lengths`` (token counts, special tokens included).

    Raises:
        ValueError: No lengths, or ``coverage`` outside (0, 1].
    """
    import numpy as np

    if not lengths or not 0 < coverage <= 1:
        raise ValueError(f"need token lengths and a coverage in (0, 1]; got {len(lengths)} lengths, {coverage}")
    quantile = float(np.quantile(np.asarray(lengths), coverage))
    return int(min(cap, max(multiple, multiple * math.ceil(quantile / multiple))))


def token_lengths(split_dir: Path, tokenizer_dir: str) -> list[int]:
    """Token counts (special tokens included, no truncation) of the train split's texts, normalised under the
    split's text profile as training normalises them."""
    import pandas as pd
    from textclf.provenance import read_json
    from textclf.serving.contract import INPUT_IDS
    from textclf.text import normalise_text, text_profile_of
    from textclf.validate.validate import REPORT_FILE, SPLIT_FILES
    from transformers import AutoTokenizer

    profile = text_profile_of(read_json(split_dir / REPORT_FILE))
    texts = [normalise_text(t, profile) for t in pd.read_parquet(split_dir / SPLIT_FILES["train"])["text"]]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return [len(ids) for ids in tokenizer(texts, truncation=False)[INPUT_IDS]]


def per_model_metrics(compare_dir: Path, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support of every compared model, from the test
    logits the compare stage kept."""
    import pandas as pd
    from textclf.compare.compare import TEST_LOGITS_DIR
    from textclf.evaluate.evaluate import classification_metrics

    out = {}
    for path in sorted((compare_dir / TEST_LOGITS_DIR).glob("*.parquet")):
        frame = pd.read_parquet(path)
        probabilities = frame[[f"p_{label}" for label in labels]].to_numpy()
        ids = frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
        metrics = classification_metrics(ids, probabilities, labels, bins=15)
        metrics.pop("confusion_matrix")
        out[path.stem] = metrics
    return out


def run_arxiv_benchmark(settings: ArxivSettings, output: Path, work_root: Path) -> dict[str, Any]:
    from textclf.benchmarks.machine import machine_info
    from textclf.benchmarks.quality_bench import Steps
    from textclf.classical import train_classical
    from textclf.compare.compare import ModelKind, ModelToScore, compare_models
    from textclf.config import ClassicalConfig, EvaluateConfig, ExportConfig, IngestConfig, SplitConfig, TrainConfig
    from textclf.evaluate.evaluate import PARITY_TEXTS_FILE
    from textclf.export import export_model
    from textclf.ingest import ingest_dataset
    from textclf.provenance import git_commit, package_versions, read_json
    from textclf.serving.contract import INT8_ONNX_FILE, LABELS_FILE
    from textclf.train import train_model
    from textclf.validate import validate_and_split
    from textclf.validate.validate import REPORT_FILE as SPLIT_REPORT_FILE

    TrainConfig(class_weights=settings.class_weights, precision=settings.precision, batch_size=settings.batch_size,
                epochs=settings.epochs)  # bad settings fail before any work
    work = Path(work_root) / settings.key()
    work.mkdir(parents=True, exist_ok=True)
    splits = work / "splits"
    steps = Steps(Path(output), {"benchmark": "arxiv", "settings": asdict(settings), "work_dir": str(work),
                                 "machine": machine_info(), "git_commit": git_commit(),
                                 "package_versions": package_versions(),
                                 "targets": {"macro_f1_above_tfidf": True, "max_model_mb": TARGET_MAX_MODEL_MB}})

    def data() -> dict[str, Any]:
        if not splits.is_dir():
            ingest_dataset(IngestConfig(dataset_uri=settings.dataset_uri), work / "ingest")
            validate_and_split(work / "ingest", SplitConfig(max_train_rows=settings.max_train_rows,
                                                            validation_fraction=0.05, seed=settings.seed), splits)
        report = read_json(splits / SPLIT_REPORT_FILE)
        return {"rows": report["rows_out"], "text_profile": report["text_profile"],
                "fingerprints": report["fingerprints"]}

    steps.run("data", data)

    def lengths() -> dict[str, Any]:
        import numpy as np

        counts = token_lengths(splits, settings.base_model or TrainConfig().base_model)
        quantiles = {f"p{q}": float(np.quantile(counts, q / 100)) for q in (50, 90, 95, 99)}
        return {"max_length": choose_max_length(counts, settings.length_coverage), "quantiles": quantiles,
                "texts": len(counts), "coverage": settings.length_coverage}

    max_length = steps.run("lengths", lengths)["max_length"]
    steps.run("classical", lambda: {"summary": train_classical(splits, ClassicalConfig(seed=settings.seed),
                                                                work / "classical",
                                                                work / "classical_logits").summary})
    base = {"base_model": settings.base_model} if settings.base_model else {}
    config = TrainConfig(**base, epochs=settings.epochs, batch_size=settings.batch_size, max_length=max_length,
                         class_weights=settings.class_weights, precision=settings.precision, seed=settings.seed,
                         checkpoint_steps=200)

    def transformer() -> dict[str, Any]:
        result = train_model(splits, config, work / "transformer", checkpoint_root=work / "checkpoints",
                             progress=False)
        return {"config": config.to_dict(), **result.summary}

    steps.run("transformer", transformer)

    def compare() -> dict[str, Any]:
        models = [ModelToScore("transformer", ModelKind.TRANSFORMER, work / "transformer"),
                  ModelToScore("tfidf_svm", ModelKind.CLASSICAL, work / "classical")]
        result = compare_models(splits, models, EvaluateConfig(), work / "compare")
        labels = read_json(splits / LABELS_FILE)["labels"]
        return {"rows": {row.name: asdict(row) for row in result.rows},
                "metrics": per_model_metrics(work / "compare", labels), "test_set_sha256": result.test_set_sha256}

    compared = steps.run("compare", compare)

    def export() -> dict[str, Any]:
        import pandas as pd

        parity = work / PARITY_TEXTS_FILE
        if not parity.is_file():
            test = pd.read_parquet(splits / "test.parquet")
            test.sample(n=min(256, len(test)), random_state=0)[["text"]].to_parquet(parity, index=False)
        exported = export_model(work / "transformer", parity, ExportConfig(), work / "transformer_onnx",
                                temperature=compared["rows"]["transformer"]["temperature"])
        return {"parity": exported.parity, "int8_bytes": (work / "transformer_onnx" / INT8_ONNX_FILE).stat().st_size}

    exported = steps.run("export", export)
    metrics = compared["metrics"]
    transformer_f1, baseline_f1 = metrics["transformer"]["macro_f1"], metrics["tfidf_svm"]["macro_f1"]
    size_mb = compared["rows"]["transformer"]["size_bytes"] / 1e6
    steps.state["verdict"] = {
        "transformer_macro_f1": transformer_f1, "tfidf_macro_f1": baseline_f1,
        "transformer_accuracy": metrics["transformer"]["accuracy"], "tfidf_accuracy": metrics["tfidf_svm"]["accuracy"],
        "model_dir_mb": size_mb, "int8_onnx_mb": exported["int8_bytes"] / 1e6,
        "meets": {"macro_f1_above_tfidf": transformer_f1 > baseline_f1, "model_under_500mb": size_mb < 500},
    }
    steps.save()
    return steps.state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textclf.benchmarks.arxiv_bench",
                                     description=__doc__.splitlines()[0])
    defaults = ArxivSettings(dataset_uri="")
    parser.add_argument("--dataset-uri", default=None, help="arXiv CS (default: the shared copy)")
    parser.add_argument("--max-train-rows", type=int, default=defaults.max_train_rows,
                        help="train + validation rows (stratified); 0: all 93,181")
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--class-weights", default=defaults.class_weights, choices=["none", "balanced"])
    parser.add_argument("--length-coverage", type=float, default=defaults.length_coverage)
    parser.add_argument("--precision", default=defaults.precision, choices=["fp32", "bf16", "auto"])
    parser.add_argument("--output", type=Path, default=Path("runs/bench/bench_arxiv.json"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/arxiv"))
    args = parser.parse_args(argv)
    from textclf.cli import shared_dataset_uri
    from textclf.errors import TextclfError

    uri = args.dataset_uri or shared_dataset_uri("arxiv_cs")
    settings = ArxivSettings(dataset_uri=uri, max_train_rows=args.max_train_rows, epochs=args.epochs,
                             class_weights=args.class_weights, length_coverage=args.length_coverage,
                             precision=args.precision)
    try:
        result = run_arxiv_benchmark(settings, args.output, args.work_dir)
    except TextclfError as exc:
        print(f"bench-arxiv: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result["verdict"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
