"""Shared fixtures: small slices of the real AG News data, and one small trained model reused by several tests."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "datasets"
AG_NEWS = Path(os.environ.get("TEXTCLF_AG_NEWS_DIR", SHARED / "ag_news"))
ARXIV_CS = SHARED / "arxiv_cs"
AG_NEWS_TEST_SHA256 = "e086d6962b059d09e2504fed2b09dabcd3b3cff9f3968e54ef4c4aefd0c21b5c"

requires_ag_news = pytest.mark.skipif(
    not (AG_NEWS / "train.csv.gz").is_file(), reason=f"AG News not found at {AG_NEWS} (../shared/datasets/ag_news)"
)


def read_ag_news(split: str) -> pd.DataFrame:
    return pd.read_csv(AG_NEWS / f"{split}.csv.gz", dtype=str, keep_default_na=False)


def stratified_head(frame: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """``per_class`` random rows of each label, in the file's original order."""
    parts = [group.sample(n=per_class, random_state=seed) for _, group in frame.groupby("label")]
    return pd.concat(parts).sort_index()


def write_csv_gz(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = frame.to_csv(index=False).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0))  # byte-identical for identical frames
    return path


@pytest.fixture(scope="session")
def ag_news_frames() -> dict[str, pd.DataFrame]:
    if not (AG_NEWS / "train.csv.gz").is_file():
        pytest.skip(f"AG News not found at {AG_NEWS}")
    return {"train": read_ag_news("train"), "test": read_ag_news("test")}


@pytest.fixture(scope="session")
def small_ag_news(ag_news_frames, tmp_path_factory) -> Path:
    """A real AG News slice in the original format: 100 train and 50 test rows per class."""
    root = tmp_path_factory.mktemp("ag_news_small")
    write_csv_gz(stratified_head(ag_news_frames["train"], 100), root / "train.csv.gz")
    write_csv_gz(stratified_head(ag_news_frames["test"], 50), root / "test.csv.gz")
    return root


@pytest.fixture(scope="session")
def small_splits(small_ag_news, tmp_path_factory) -> Path:
    """Ingested and split slice: 320 train, 80 validation, 200 test rows."""
    from textclf.config import IngestConfig, SplitConfig
    from textclf.ingest import ingest_dataset
    from textclf.validate import validate_and_split

    work = tmp_path_factory.mktemp("small_splits")
    ingest_dataset(IngestConfig(dataset_uri=str(small_ag_news)), work / "ingest")
    validate_and_split(work / "ingest", SplitConfig(validation_fraction=0.2, seed=7), work / "splits")
    return work / "splits"


@pytest.fixture(scope="session")
def tiny_model(small_splits, tmp_path_factory) -> Path:
    """MiniLM-L6 fine-tuned (full) for 2 epochs on the 320-row slice: small, but clearly better than chance."""
    from textclf.config import TrainConfig
    from textclf.train import train_model

    out = tmp_path_factory.mktemp("tiny_model") / "model"
    config = TrainConfig(epochs=2.0, learning_rate=2e-4, checkpoint_steps=10, early_stopping_patience=0)
    train_model(small_splits, config, out, progress=False)
    return out


@pytest.fixture(scope="session")
def exported_tiny_model(tiny_model, small_splits, tmp_path_factory) -> Path:
    """ONNX export bundle (model.onnx, model.int8.onnx, tokenizer.json, labels.json, export_metadata.json) of
    ``tiny_model``; what the serving predictor loads."""
    from textclf.config import EvaluateConfig, ExportConfig
    from textclf.evaluate import evaluate_model
    from textclf.export import export_model

    work = tmp_path_factory.mktemp("exported_tiny_model")
    evaluate_model(tiny_model, small_splits, EvaluateConfig(parity_rows=64), work / "eval")
    # The tiny model's logits are close together; the 99% INT8 threshold is checked on a real model elsewhere.
    export_model(tiny_model, work / "eval" / "parity_texts.parquet", ExportConfig(min_int8_agreement=0.9),
                 work / "onnx")
    return work / "onnx"
