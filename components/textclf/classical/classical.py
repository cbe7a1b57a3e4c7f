"""Classical member: TF-IDF n-grams and a linear model (scikit-learn), saved with skops, never pickled.

Trained on the validate stage's train split and scored on its validation split (what an ensemble and a calibration
temperature are fitted on). The test split is not read here: the evaluate stage stays the only stage that reads and
scores it; :func:`split_logits` with ``split="test"`` is what it calls for this member (saved as
``LOGITS_FILES["test"]``; not wired into the evaluate stage yet). Output, two directories, each written atomically:

- the model (``model_dir``): :data:`MODEL_FILE`, the fitted scikit-learn ``Pipeline`` (text preprocessing, TF-IDF,
  the calibrated linear SVM or the logistic regression) in skops' format, which :func:`load_classical_model` reads
  with an explicit list of trusted types (nothing is unpickled); ``labels.json``; :data:`METADATA_FILE`
  (parameters, data fingerprints, training summary, the model file's sha256, package versions, git commit);
- the logits (``logits_dir``): ``LOGITS_FILES["validation"]`` and ``LOGITS_FILES["train"]``, per row ``row``,
  ``label``, ``logit_<label>`` and ``p_<label>`` (:func:`logits_frame`); the train file is what an ensemble teacher
  is distilled from.

The saved pipeline preprocesses every text with :func:`preprocess` (:func:`textclf.text.normalise_text`, the
normalisation training and serving apply, then lower case), so the loaded model sees text exactly as training did.
"""

from __future__ import annotations

import logging
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from textclf.config import ClassicalConfig, ClassicalModel
from textclf.errors import DataValidationError
from textclf.evaluate.calibration import fit_temperature
from textclf.evaluate.evaluate import softmax
from textclf.provenance import atomic_directory, git_commit, package_versions, read_json, sha256_file, write_json
from textclf.serving.bundle import BundleError
from textclf.serving.classical import PREPROCESSORS, TRUSTED_TYPES, classical_logits, load_classical_bundle
from textclf.serving.classical import preprocess  # noqa: F401  (files saved before the move name it here)
from textclf.text import TEXT_PROFILE_KEY, TextProfile, text_profile_of
from textclf.serving.contract import CLASSICAL_METADATA_FILE, CLASSICAL_MODEL_FILE, LABELS_FILE, TEMPERATURE_KEY
from textclf.text import NORMALISATION_VERSION
from textclf.validate.validate import REPORT_FILE as SPLIT_REPORT_FILE
from textclf.validate.validate import SPLIT_FILES, read_split

log = logging.getLogger(__name__)

#: Output: the fitted scikit-learn pipeline in skops' format (a zip of JSON and ``.npy`` arrays, deflated).
MODEL_FILE = CLASSICAL_MODEL_FILE
#: Output: labels, parameters, normalisation version, data fingerprints, training summary, ``model_sha256``,
#: trusted types, package versions, git commit, the calibration temperature fitted on the validation split.
METADATA_FILE = CLASSICAL_METADATA_FILE
#: A member's logits and probabilities per split (:func:`logits_frame`), the file names every member's logits
#: directory uses: the training stages write the train file (what a student is distilled on) and the validation file
#: (what an ensemble and a temperature are fitted on); only the evaluate/compare stage scores the test split.
LOGITS_FILES = {"train": "train_logits.parquet", "validation": "validation_logits.parquet",
                "test": "test_logits.parquet"}
#: Package versions recorded in the metadata.
RECORDED_PACKAGES = ("textclf-components", "scikit-learn", "skops", "scipy", "numpy", "pandas")


@dataclass(frozen=True)
class ClassicalResult:
    """Where the model and its validation and train logits were written, the training summary recorded in the
    metadata, and the fitted pipeline itself (as saved)."""

    model_dir: Path
    logits_dir: Path
    summary: dict[str, Any]
    model: Any


def build_pipeline(config: ClassicalConfig, profile: TextProfile = TextProfile.NEWS) -> Any:
    """The unfitted scikit-learn pipeline of ``config``: word (and optionally character) TF-IDF, then a linear SVM
    with sigmoid-calibrated probabilities (``CalibratedClassifierCV``: ``calibration_folds`` folds of the training
    rows fit the calibration, then one SVM is refitted on all of them) or a multinomial logistic regression (L-BFGS).

    Returns:
        ``Pipeline([("features", FeatureUnion([("word", ...), ("char", ...)?])), ("classifier", ...)])``.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    shared = {"preprocessor": PREPROCESSORS[profile], "min_df": config.min_df, "sublinear_tf": config.sublinear_tf,
              "dtype": np.float32}
    vectorisers = [("word", TfidfVectorizer(ngram_range=(1, config.word_ngram_max), **shared))]
    if config.char_ngrams:
        vectorisers.append(
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(config.char_ngram_min, config.char_ngram_max),
                                     **shared))
        )
    if config.classical_model is ClassicalModel.LINEAR_SVM:
        svm = LinearSVC(C=config.effective_c, max_iter=config.max_iter, random_state=config.seed)
        classifier = CalibratedClassifierCV(svm, method="sigmoid", cv=config.calibration_folds, ensemble=False)
    else:
        classifier = LogisticRegression(C=config.effective_c, max_iter=config.max_iter)
    return Pipeline([("features", FeatureUnion(vectorisers)), ("classifier", classifier)])


def solver_iterations(model: Any) -> int:
    """Iterations the fitted linear model's solver ran (the refitted SVM's, for the calibrated SVM)."""
    classifier = model.named_steps["classifier"]
    if hasattr(classifier, "calibrated_classifiers_"):
        classifier = classifier.calibrated_classifiers_[0].estimator
    return int(np.max(classifier.n_iter_))


def logits_frame(frame: pd.DataFrame, logits: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """One split's logits artifact: ``row`` and ``label`` (of ``frame``), ``logit_<label>`` and ``p_<label>``.

    Args:
        frame: The split's rows (``row``: the source file's data row, the key other members join on; ``label``).
        logits: ``[len(frame), n_labels]``.
        labels: Class names in label-id order.

    Returns:
        The frame, rows in split order; ``p_<label>`` is ``softmax(logits)``.
    """
    probabilities = softmax(logits.astype(np.float64)).astype(np.float32)
    columns: dict[str, Any] = {"row": frame["row"].to_numpy(), "label": frame["label"].to_numpy()}
    columns.update({f"logit_{label}": logits[:, i] for i, label in enumerate(labels)})
    columns.update({f"p_{label}": probabilities[:, i] for i, label in enumerate(labels)})
    return pd.DataFrame(columns)


def split_logits(model: Any, split_dir: str | Path, split: str) -> pd.DataFrame:
    """The logits artifact (:func:`logits_frame`) of a fitted classical model on one split of the validate stage.

    Args:
        model: From :func:`train_classical` or :func:`load_classical_model`.
        split_dir: Output of the validate/split stage.
        split: ``validation`` (written by :func:`train_classical`) or ``test`` (for the evaluate stage only).

    Returns:
        The frame, rows in split order.

    Raises:
        DataValidationError: Unknown split, a missing or empty split file, or labels outside the label map.
    """
    split_dir = Path(split_dir)
    labels: list[str] = read_json(split_dir / LABELS_FILE)["labels"]
    frame, _ = read_split(split_dir, split, labels)
    return logits_frame(frame, classical_logits(model, frame["text"].tolist()), labels)


def train_classical(
    split_dir: str | Path, config: ClassicalConfig, model_dir: str | Path, logits_dir: str | Path
) -> ClassicalResult:
    """Fit the TF-IDF linear model on the train split; write it, and its validation and train logits.

    Every input is checked before anything is fitted (the configuration already checked itself when built). The
    test split is not read.

    Args:
        split_dir: Output of the validate/split stage (``train.parquet``, ``validation.parquet``, ``labels.json``,
            ``validation_report.json``).
        config: Features and regularisation.
        model_dir: Directory to create for the model (see the module docstring).
        logits_dir: Directory to create for the validation and train logits.

    Returns:
        Both directories, the training summary and the fitted pipeline.

    Raises:
        DataValidationError: A split file is missing or empty, a label is outside the label map, or a class has
            no training rows.
    """
    from sklearn.metrics import log_loss

    split_dir = Path(split_dir)
    labels: list[str] = read_json(split_dir / LABELS_FILE)["labels"]
    split_report = read_json(split_dir / SPLIT_REPORT_FILE)
    train, train_ids = read_split(split_dir, "train", labels)
    validation, validation_ids = read_split(split_dir, "validation", labels)
    missing = [label for i, label in enumerate(labels) if not (train_ids == i).any()]
    if missing:
        raise DataValidationError(f"{split_dir / SPLIT_FILES['train']}: no training rows for classes {missing}")

    profile = text_profile_of(split_report)
    model = build_pipeline(config, profile)
    started = time.perf_counter()
    model.fit(train["text"].tolist(), train_ids)
    fit_seconds = time.perf_counter() - started
    iterations = solver_iterations(model)
    if iterations >= config.max_iter:
        log.warning("%s stopped at max_iter=%d before converging", config.model, config.max_iter)

    validation_logits = classical_logits(model, validation["text"].tolist())
    validation_probabilities = softmax(validation_logits.astype(np.float64))
    summary = {
        "train_rows": len(train),
        "validation_rows": len(validation),
        "features": {name: len(vectoriser.vocabulary_)
                     for name, vectoriser in model.named_steps["features"].transformer_list},
        "iterations": iterations,
        "converged": iterations < config.max_iter,
        "fit_seconds": fit_seconds,
        "validation_accuracy": float((validation_logits.argmax(-1) == validation_ids).mean()),
        "validation_log_loss": float(
            log_loss(validation_ids, validation_probabilities, labels=list(range(len(labels))))
        ),
        # What the server divides the logits by (recorded as the bundle's temperature): fitted here, on the same
        # validation rows the evaluate stage fits a transformer's on.
        "temperature": fit_temperature(validation_logits, validation_ids),
    }

    import skops.io as sio

    with atomic_directory(model_dir) as model_staging, atomic_directory(logits_dir) as logits_staging:
        sio.dump(model, model_staging / MODEL_FILE, compression=zipfile.ZIP_DEFLATED)
        write_json(model_staging / LABELS_FILE, {"labels": labels})
        write_json(
            model_staging / METADATA_FILE,
            {
                "labels": labels,
                "model": f"tfidf-{config.model}",
                "params": {**asdict(config), "effective_c": config.effective_c},
                "normalisation_version": NORMALISATION_VERSION,
                TEXT_PROFILE_KEY: profile.value,
                "data": {
                    "dataset_uri": split_report["dataset_uri"],
                    "dataset_format": split_report["dataset_format"],
                    "rows": split_report["rows_out"],
                    "fingerprints": split_report["fingerprints"],
                },
                "training": summary,
                "model_file": MODEL_FILE,
                "model_sha256": sha256_file(model_staging / MODEL_FILE),
                TEMPERATURE_KEY: summary["temperature"],
                "trusted_types": list(TRUSTED_TYPES),
                "package_versions": package_versions(RECORDED_PACKAGES),
                "git_commit": git_commit(),
                "created_unix": time.time(),
            },
        )
        logits_frame(validation, validation_logits, labels).to_parquet(
            logits_staging / LOGITS_FILES["validation"], index=False
        )
        logits_frame(train, classical_logits(model, train["text"].tolist()), labels).to_parquet(
            logits_staging / LOGITS_FILES["train"], index=False
        )
    log.info("classical model written to %s: validation accuracy %.4f, %s features, %.1f s fit",
             model_dir, summary["validation_accuracy"], summary["features"], fit_seconds)
    return ClassicalResult(Path(model_dir), Path(logits_dir), summary, model)


def load_classical_model(model_dir: str | Path) -> Any:
    """Load a model written by :func:`train_classical` as the server does
    (:func:`textclf.serving.classical.load_classical_bundle`): trusting only skops' defaults and
    :data:`~textclf.serving.classical.TRUSTED_TYPES`.

    Args:
        model_dir: The model directory.

    Returns:
        The fitted scikit-learn pipeline (score texts with :func:`classical_logits`).

    Raises:
        DataValidationError: The directory or a file is missing, the model file's sha256 differs from the one
            recorded at training, the model was trained with another text normalisation, or the file holds a type
            outside the trusted ones.
    """
    try:
        return load_classical_bundle(model_dir).load_model()
    except BundleError as exc:
        raise DataValidationError(str(exc)) from exc
