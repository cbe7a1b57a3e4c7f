"""The classical member (TF-IDF + calibrated linear SVM or logistic regression) on the real 320/80/200-row AG News
slice: its skops file loads back with identical predictions, its logits artifacts, refused files and bad settings,
and the KFP component under kfp.local.

No ``from __future__ import annotations`` here: KFP reads the test pipeline's annotations as types."""

import json
import math
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from textclf.classical import classical_logits, load_classical_model, split_logits, train_classical
from textclf.classical.classical import LOGITS_FILES, METADATA_FILE, MODEL_FILE, TRUSTED_TYPES, build_pipeline
from textclf.config import ClassicalConfig
from textclf.errors import ConfigError, DataValidationError
from textclf.validate.validate import SPLIT_FILES


@pytest.fixture(scope="module")
def classical(small_splits, tmp_path_factory):
    """The default member trained on the slice: (model dir, logits dir, summary, fitted pipeline)."""
    work = tmp_path_factory.mktemp("classical")
    result = train_classical(small_splits, ClassicalConfig(), work / "model", work / "logits")
    return result.model_dir, result.logits_dir, result.summary, result.model


def label_names(model_dir: Path) -> list[str]:
    return json.loads((model_dir / "labels.json").read_text())["labels"]


def test_saved_model_loads_back_with_identical_predictions(classical, small_splits):
    model_dir, logits_dir, _, fitted = classical
    labels = label_names(model_dir)
    loaded = load_classical_model(model_dir)
    for split in ("validation", "test"):
        texts = pd.read_parquet(small_splits / SPLIT_FILES[split])["text"].tolist()
        logits = classical_logits(loaded, texts)
        assert np.array_equal(logits, classical_logits(fitted, texts)), split
        assert np.array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts)), split
        assert (loaded.predict(texts) == fitted.predict(texts)).all(), split
    saved = pd.read_parquet(logits_dir / LOGITS_FILES["validation"])
    assert saved.equals(split_logits(loaded, small_splits, "validation"))
    test = split_logits(loaded, small_splits, "test")  # what the evaluate stage calls for this member
    assert test["row"].tolist() == pd.read_parquet(small_splits / SPLIT_FILES["test"])["row"].tolist()
    np.testing.assert_allclose(test[[f"p_{label}" for label in labels]].to_numpy(),
                               fitted.predict_proba(pd.read_parquet(small_splits / SPLIT_FILES["test"])["text"]),
                               atol=1e-6)


def test_validation_logits_and_summary(classical, small_splits):
    model_dir, logits_dir, summary, _ = classical
    labels = label_names(model_dir)
    assert sorted(path.name for path in logits_dir.iterdir()) == sorted(
        [LOGITS_FILES["validation"], LOGITS_FILES["train"]]), "no test logits"
    train = pd.read_parquet(logits_dir / LOGITS_FILES["train"])
    assert train["row"].tolist() == pd.read_parquet(small_splits / SPLIT_FILES["train"])["row"].tolist()
    validation = pd.read_parquet(logits_dir / LOGITS_FILES["validation"])
    assert validation["row"].tolist() == pd.read_parquet(small_splits / SPLIT_FILES["validation"])["row"].tolist()
    assert len(validation) == summary["validation_rows"] == 80 and "test_rows" not in summary
    probabilities = validation[[f"p_{label}" for label in labels]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    accuracy = float(np.mean(np.array(predicted) == validation["label"].to_numpy()))
    assert math.isclose(accuracy, summary["validation_accuracy"])
    assert accuracy > 0.6, "four classes: chance is 0.25"
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    assert metadata["labels"] == labels and metadata["model"] == "tfidf-linear_svm"
    assert metadata["params"]["c"] == 0.0 and metadata["params"]["effective_c"] == 0.3
    assert metadata["training"]["converged"] and set(metadata["training"]["features"]) == {"word", "char"}
    assert metadata["package_versions"]["skops"] != "not installed"


def test_training_never_reads_the_test_split(classical, small_splits, tmp_path):
    no_test = shutil.copytree(small_splits, tmp_path / "no_test")
    (no_test / SPLIT_FILES["test"]).unlink()
    result = train_classical(no_test, ClassicalConfig(), tmp_path / "model", tmp_path / "logits")
    texts = pd.read_parquet(small_splits / SPLIT_FILES["validation"])["text"].tolist()
    assert np.array_equal(classical_logits(result.model, texts), classical_logits(classical[3], texts))
    with pytest.raises(DataValidationError, match="test.parquet not found"):
        split_logits(result.model, no_test, "test")
    with pytest.raises(DataValidationError, match="unknown split 'dev'"):
        split_logits(result.model, no_test, "dev")


def test_the_model_file_is_skops_not_pickle_and_trusts_only_what_is_listed(classical):
    import skops.io as sio

    model_dir = classical[0]
    with zipfile.ZipFile(model_dir / MODEL_FILE) as archive:
        names = archive.namelist()
    assert "schema.json" in names and all(n == "schema.json" or n.endswith(".npy") for n in names), names
    # A news model holds the news preprocessor (an abstracts model holds preprocess_abstract instead).
    assert sio.get_untrusted_types(file=model_dir / MODEL_FILE) == [
        name for name in TRUSTED_TYPES if not name.endswith("preprocess_abstract")]


def test_a_changed_or_foreign_model_file_is_refused(classical, small_splits, tmp_path):
    import skops.io as sio
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from textclf.provenance import sha256_file
    from textclf.text import dedup_key

    model_dir = classical[0]
    changed = shutil.copytree(model_dir, tmp_path / "changed")
    with open(changed / MODEL_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataValidationError, match="differs from the .* recorded at training"):
        load_classical_model(changed)

    # A file that holds a function outside TRUSTED_TYPES, with a matching recorded sha256.
    foreign = shutil.copytree(model_dir, tmp_path / "foreign")
    frame = pd.read_parquet(small_splits / SPLIT_FILES["train"])
    other = make_pipeline(TfidfVectorizer(preprocessor=dedup_key), LogisticRegression())
    sio.dump(other.fit(frame["text"].tolist(), frame["label"].tolist()), foreign / MODEL_FILE)
    metadata = json.loads((foreign / METADATA_FILE).read_text())
    (foreign / METADATA_FILE).write_text(json.dumps({**metadata, "model_sha256": sha256_file(foreign / MODEL_FILE)}))
    with pytest.raises(DataValidationError, match=r"refused to load: .*textclf\.text\.dedup_key"):
        load_classical_model(foreign)

    with pytest.raises(DataValidationError, match="not a classical model"):
        load_classical_model(tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "svm"}, r"ClassicalConfig\.model must be one of linear_svm, logistic_regression; got 'svm'"),
        ({"c": -1.0}, r"ClassicalConfig\.c must be a finite number > 0, or 0 for the model's default, got -1\.0"),
        ({"c": float("nan")}, r"ClassicalConfig\.c must be a finite number > 0, or 0 .*, got nan"),
        ({"c": float("inf")}, r"ClassicalConfig\.c must be a finite number > 0, or 0 .*, got inf"),
        ({"calibration_folds": 1}, r"ClassicalConfig\.calibration_folds must be an integer >= 2, got 1"),
        ({"word_ngram_max": 0}, r"ClassicalConfig\.word_ngram_max must be an integer >= 1, got 0"),
        ({"min_df": 0}, r"ClassicalConfig\.min_df must be an integer >= 1"),
        ({"char_ngram_min": 4, "char_ngram_max": 3}, r"ClassicalConfig\.char_ngram_max must be >= char_ngram_min, 4"),
        ({"max_iter": 0}, r"ClassicalConfig\.max_iter must be an integer >= 1"),
    ],
)
def test_bad_settings_fail_with_a_clear_error_before_any_training(settings, message):
    with pytest.raises(ConfigError, match=message):
        ClassicalConfig(**settings)


def test_bad_splits_fail_before_fitting_and_write_nothing(small_splits, tmp_path):
    one_class_short = shutil.copytree(small_splits, tmp_path / "short")
    train = pd.read_parquet(small_splits / SPLIT_FILES["train"])
    train[train["label"] != "Sports"].to_parquet(one_class_short / SPLIT_FILES["train"], index=False)
    with pytest.raises(DataValidationError, match=r"no training rows for classes \['Sports'\]"):
        train_classical(one_class_short, ClassicalConfig(), tmp_path / "m1", tmp_path / "l1")

    unknown = shutil.copytree(small_splits, tmp_path / "unknown")
    validation = pd.read_parquet(small_splits / SPLIT_FILES["validation"])
    validation.assign(label=["Weather"] + validation["label"].tolist()[1:]).to_parquet(
        unknown / SPLIT_FILES["validation"], index=False
    )
    with pytest.raises(DataValidationError, match=r"labels \['Weather'\] are not in the label map"):
        train_classical(unknown, ClassicalConfig(), tmp_path / "m2", tmp_path / "l2")

    empty = shutil.copytree(small_splits, tmp_path / "empty")
    validation.iloc[:0].to_parquet(empty / SPLIT_FILES["validation"], index=False)
    with pytest.raises(DataValidationError, match="validation.parquet: no rows"):
        train_classical(empty, ClassicalConfig(), tmp_path / "m3", tmp_path / "l3")

    no_train = shutil.copytree(small_splits, tmp_path / "no_train")
    (no_train / SPLIT_FILES["train"]).unlink()
    with pytest.raises(DataValidationError, match="train.parquet not found"):
        train_classical(no_train, ClassicalConfig(), tmp_path / "m4", tmp_path / "l4")
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(("m", "l", "."))]


@pytest.mark.parametrize("model_type", ["linear_svm", "logistic_regression"])
def test_two_class_logits_give_the_model_probabilities(model_type):
    texts = ["stocks fell sharply", "the team scored a goal", "markets rallied", "a late winner in the match"] * 3
    model = build_pipeline(ClassicalConfig(model=model_type, min_df=1)).fit(texts, [0, 1, 0, 1] * 3)
    logits = classical_logits(model, texts)
    assert logits.shape == (12, 2)
    if model_type == "logistic_regression":
        assert not logits[:, 0].any(), "[0, decision value]"
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(shifted / shifted.sum(axis=1, keepdims=True), model.predict_proba(texts), atol=1e-6)


@pytest.mark.parametrize("char_ngrams", [True, False])
@pytest.mark.parametrize("model_type", ["linear_svm", "logistic_regression"])
def test_direct_scoring_path_equals_the_pipelines_own_outputs(model_type, char_ngrams):
    """classical_logits runs the vectorisers and the classifier itself (no FeatureUnion dispatch, no per-call
    validation): the numbers must be the Pipeline's, to the bit."""
    from textclf.serving.classical import PROBABILITY_FLOOR

    texts = ["stocks fell sharply", "the team scored a goal", "markets rallied", "a late winner in the match",
             "new chip from intel", "elections in europe"] * 3
    model = build_pipeline(ClassicalConfig(model=model_type, min_df=1, char_ngrams=char_ngrams))
    model.fit(texts, [0, 1, 0, 1, 2, 3] * 3)
    if model_type == "logistic_regression":
        expected = model.decision_function(texts).astype(np.float32)
    else:
        expected = np.log(np.maximum(model.predict_proba(texts), PROBABILITY_FLOOR)).astype(np.float32)
    assert np.array_equal(classical_logits(model, texts), expected)
    assert np.array_equal(classical_logits(model, texts[:1]), expected[:1])


def test_component_under_kfp_local(small_splits, tmp_path, monkeypatch):
    """``train_classical_op`` in a kfp.local subprocess, on the other path: word n-grams, logistic regression."""
    from kfp import dsl
    from kfp.dsl import Dataset

    from textclf.classical.component import train_classical_op
    from textclf.pipelines.local import init_local_runner

    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # restored after the test

    @dsl.pipeline(name="classical-test")
    def classical_pipeline(splits_uri: str) -> float:
        splits = dsl.importer(artifact_uri=splits_uri, artifact_class=Dataset, reimport=False)
        task = train_classical_op(
            splits=splits.output, model_type="logistic_regression", word_ngram_max=2, char_ngrams=False,
            char_ngram_min=2, char_ngram_max=5, min_df=2, sublinear_tf=True, c=0.0, max_iter=1000,
            calibration_folds=3, seed=42,
        )
        return task.outputs["Output"]

    root = tmp_path / "pipeline_root"
    init_local_runner(root)
    accuracy = classical_pipeline(splits_uri=str(small_splits)).output
    (metadata_file,) = root.rglob(METADATA_FILE)
    metadata = json.loads(metadata_file.read_text())
    assert math.isclose(accuracy, metadata["training"]["validation_accuracy"])
    assert set(metadata["training"]["features"]) == {"word"} and metadata["params"]["effective_c"] == 3.0
    assert metadata["model"] == "tfidf-logistic_regression"
    (validation_logits,) = root.rglob(LOGITS_FILES["validation"])
    loaded = load_classical_model(metadata_file.parent)
    assert pd.read_parquet(validation_logits).equals(split_logits(loaded, small_splits, "validation"))
