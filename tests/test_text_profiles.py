"""A dataset's text profile travels with its models: arXiv abstracts are cleaned of LaTeX and URLs (the
``abstract`` profile) in training, evaluation, the export's parity check and the served bundle alike, for the
transformer and the classical model; AG News keeps the ``news`` rules. Real arXiv rows, tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ARXIV_CS, write_csv_gz
from textclf.config import ClassicalConfig, ExportConfig, IngestConfig, SplitConfig, TrainConfig, default_base_model
from textclf.text import TextProfile, normalise_text

requires_arxiv = pytest.mark.skipif(not (ARXIV_CS / "test.csv.gz").is_file(), reason="arXiv CS set not found")
LATEX = r"We cut the cost to $O(n \log n)$ with \textbf{sparse} attention; code at https://github.com/x/y."


@pytest.fixture(scope="module")
def arxiv_splits(tmp_path_factory) -> Path:
    """240 train/validation and 60 test abstracts of the 4 largest classes."""
    from textclf.ingest import ingest_dataset
    from textclf.validate import validate_and_split

    work = tmp_path_factory.mktemp("arxiv")
    frame = pd.read_csv(ARXIV_CS / "test.csv.gz", dtype=str, keep_default_na=False, nrows=3000)
    frame = frame[frame["label"].isin(["cs.CV", "cs.CL", "cs.AI", "cs.LG"])]
    parts = [group.head(75) for _, group in frame.groupby("label")]
    chosen = pd.concat(parts).sample(frac=1.0, random_state=0)
    write_csv_gz(chosen.iloc[:240], work / "data" / "train.csv.gz")
    write_csv_gz(chosen.iloc[240:], work / "data" / "test.csv.gz")
    ingest_dataset(IngestConfig(dataset_uri=str(work / "data")), work / "ingest")
    validate_and_split(work / "ingest", SplitConfig(validation_fraction=0.2, seed=3), work / "splits")
    return work / "splits"


@requires_arxiv
def test_the_classical_model_saves_the_abstract_preprocessor_and_serves_with_it(arxiv_splits, tmp_path):
    from textclf.classical import train_classical
    from textclf.provenance import read_json
    from textclf.serving.classical import ClassicalTextClassifier, load_classical_bundle

    result = train_classical(arxiv_splits, ClassicalConfig(char_ngrams=False), tmp_path / "model",
                             tmp_path / "logits")
    assert read_json(tmp_path / "model" / "classical_metadata.json")["text_profile"] == "abstract"
    served = ClassicalTextClassifier.from_bundle(load_classical_bundle(tmp_path / "model"))
    raw, cleaned = served.probabilities([LATEX]), served.probabilities([normalise_text(LATEX, "abstract")])
    np.testing.assert_allclose(raw, cleaned, rtol=1e-6)  # the request is cleaned as the training rows were
    assert result.model.named_steps["features"].transformer_list[0][1].preprocessor.__name__ == "preprocess_abstract"


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT (random weights) with the packaged tokenizer, 512 positions."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    base = tmp_path_factory.mktemp("tiny_bert") / "base"
    config = BertConfig(vocab_size=30522, pad_token_id=0, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=4)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(default_base_model()).save_pretrained(base)
    return base


@requires_arxiv
def test_the_transformer_trains_evaluates_and_exports_under_the_abstract_profile(arxiv_splits, tmp_path,
                                                                                tiny_bert_dir):
    from textclf.export import export_model
    from textclf.provenance import read_json
    from textclf.serving.bundle import load_bundle
    from textclf.serving.config import Precision
    from textclf.serving.engine import OnnxTextClassifier
    from textclf.train import train_model

    train_model(arxiv_splits, TrainConfig(base_model=str(tiny_bert_dir), epochs=1, batch_size=16, max_length=64,
                                          checkpoint_steps=100, early_stopping_patience=0),
                tmp_path / "model", progress=False)
    assert read_json(tmp_path / "model" / "textclf_metadata.json")["text_profile"] == "abstract"
    parity = tmp_path / "parity.parquet"
    pd.DataFrame({"text": [LATEX, *pd.read_parquet(arxiv_splits / "test.parquet")["text"].head(15)]}).to_parquet(
        parity, index=False)
    exported = export_model(tmp_path / "model", parity, ExportConfig(min_int8_agreement=0.5), tmp_path / "onnx")
    assert exported.parity["passed"] and exported.parity["fp32_argmax_agreement"] == 1.0
    bundle = load_bundle(tmp_path / "onnx")
    assert bundle.text_profile is TextProfile.ABSTRACT
    served = OnnxTextClassifier.from_bundle(bundle, Precision.FP32, 1, 8, 0)
    np.testing.assert_allclose(served.probabilities([LATEX]),
                               served.probabilities([normalise_text(LATEX, "abstract")]), atol=1e-6)
    assert [e.tokens for e in served.encodings([LATEX])][0][:5] == ["[CLS]", "we", "cut", "the", "cost"]


def test_max_length_covers_the_stated_share_of_token_lengths():
    from textclf.benchmarks.arxiv_bench import choose_max_length

    lengths = list(range(1, 201))  # the 95% quantile is 190.05
    assert choose_max_length(lengths, 0.95) == 192
    assert choose_max_length([5, 6], 1.0) == 32  # at least one multiple
    assert choose_max_length([900, 1000], 0.5) == 512  # the model's limit
    with pytest.raises(ValueError, match="coverage in"):
        choose_max_length(lengths, 0.0)


@requires_arxiv
def test_bench_arxiv_runs_every_step_on_a_slice_and_resumes(tmp_path, tiny_bert_dir):
    from textclf.benchmarks.arxiv_bench import ArxivSettings, run_arxiv_benchmark

    data = tmp_path / "data"
    frame = pd.read_csv(ARXIV_CS / "test.csv.gz", dtype=str, keep_default_na=False, nrows=3000)
    frame = frame[frame["label"].isin(["cs.CV", "cs.CL", "cs.AI", "cs.RO"])]
    chosen = pd.concat([group.head(60) for _, group in frame.groupby("label")]).sample(frac=1.0, random_state=1)
    write_csv_gz(chosen.iloc[:200], data / "train.csv.gz")
    write_csv_gz(chosen.iloc[200:], data / "test.csv.gz")
    settings = ArxivSettings(dataset_uri=str(data), max_train_rows=0, epochs=1, base_model=str(tiny_bert_dir))
    result = run_arxiv_benchmark(settings, tmp_path / "bench.json", tmp_path / "work")
    steps = result["steps"]
    assert steps["data"]["text_profile"] == "abstract"
    assert steps["lengths"]["max_length"] % 32 == 0 and steps["lengths"]["quantiles"]["p95"] <= 512
    assert steps["transformer"]["config"]["class_weights"] == "balanced"
    assert steps["transformer"]["strategy"]["class_weights"]  # the weights computed from the train split
    metrics = steps["compare"]["metrics"]
    assert set(metrics) == {"transformer", "tfidf_svm"}
    assert set(metrics["transformer"]["per_class"]) == {"cs.AI", "cs.CL", "cs.CV", "cs.RO"}
    verdict = result["verdict"]
    assert verdict["model_dir_mb"] < 500 and verdict["meets"]["model_under_500mb"]
    assert verdict["meets"]["macro_f1_above_tfidf"] == (verdict["transformer_macro_f1"] > verdict["tfidf_macro_f1"])
    again = run_arxiv_benchmark(settings, tmp_path / "bench.json", tmp_path / "work")
    assert again["steps"]["transformer"]["step_wall_seconds"] == steps["transformer"]["step_wall_seconds"]
