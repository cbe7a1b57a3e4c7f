"""The reference sample every drift check compares a window with.

A reference is a sample of the production model's training data together with that model's own predictions on it
(predicted label and top-class probability), saved as ``reference.parquet`` (columns ``text``, ``label``,
``confidence``) plus ``reference.json`` (model version, labels, fingerprints of the sample and of the training
data). It is built once per production model, e.g. with ``textclf drift-reference`` or the ``drift_reference_op``
component, and rebuilt when a new model is promoted.

Which rows: the held-out **validation** split first, then rows of the **train** split up to the sample size. A
model is more confident on rows it was fitted on than on new text, so a reference made only of fitted rows would
show a (spurious) confidence drift against perfectly normal traffic; the validation rows have none of that bias.
(For the 1-epoch MiniLM model measured here the bias was negligible: mean confidence 0.905 on fitted rows vs 0.900 on
the test set, and no KS alarms at 5,000 rows; longer training widens the gap.)
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from textclf.errors import DataValidationError, ObjectNotFoundError
from textclf.provenance import atomic_directory, package_versions, read_json, sha256_rows, write_json
from textclf.text import NORMALISATION_VERSION, normalise_text
from textclf.validate.validate import REPORT_FILE as SPLIT_REPORT_FILE
from textclf.validate.validate import SPLIT_FILES

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.parquet"
META_FILE = "reference.json"
REFERENCE_COLUMNS = ("text", "label", "confidence")
#: Splits read by :func:`reference_from_splits`, in order of preference.
DEFAULT_SPLITS = ("validation", "train")
_WORD = re.compile(r"[^\W\d_]+")


def words(text: str, normalised: bool = False) -> list[str]:
    """Lower-cased runs of letters of the normalised text (the unit of the vocabulary and word descriptors).

    Args:
        text: Raw text, or already normalised text if ``normalised``.
        normalised: Skip :func:`textclf.text.normalise_text` (the caller has applied it).
    """
    return _WORD.findall((text if normalised else normalise_text(text)).casefold())


def document_frequency(texts: Sequence[str], normalised: bool = False) -> Counter[str]:
    """Word -> number of ``texts`` that contain it."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(set(words(text, normalised)))
    return counts


def text_descriptors(texts: Sequence[str], vocabulary: Counter[str], leave_one_out: bool = False,
                     normalised: bool = False) -> pd.DataFrame:
    """Numeric descriptors of each text, the inputs of the descriptor drift tests.

    Args:
        texts: Raw texts.
        vocabulary: Document frequencies of the reference texts (:func:`document_frequency`).
        leave_one_out: ``texts`` *are* the reference texts: a word counts as known only if another reference text
            has it (document frequency >= 2), so that the reference's own out-of-vocabulary share is not zero
            by construction but distributed as for a new text.
        normalised: ``texts`` are already normalised.

    Returns:
        Columns ``n_words`` (words in the normalised text), ``oov_share`` (share of those words missing from the
        reference vocabulary) and ``mean_word_length`` (characters per word), one row per text.
    """
    known_from = 2 if leave_one_out else 1
    n_words = np.zeros(len(texts))
    oov = np.zeros(len(texts))
    mean_len = np.zeros(len(texts))
    for i, text in enumerate(texts):
        tokens = words(text, normalised)
        if not tokens:
            continue
        n_words[i] = len(tokens)
        oov[i] = sum(vocabulary.get(token, 0) < known_from for token in tokens) / len(tokens)
        mean_len[i] = sum(map(len, tokens)) / len(tokens)
    return pd.DataFrame({"n_words": n_words, "oov_share": oov, "mean_word_length": mean_len})


@dataclass(frozen=True)
class Reference:
    """A reference sample: texts with the production model's predictions, and where they came from.

    Attributes:
        frame: Columns ``text`` (raw), ``label`` (predicted class name), ``confidence`` (top-class probability).
        labels: The model's class names in label-id order.
        meta: ``model_version``, ``fingerprint`` (sha256 of the sampled rows), ``source`` and more; see
            :func:`build_reference`.
    """

    frame: pd.DataFrame
    labels: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def model_version(self) -> str:
        return str(self.meta.get("model_version", "unknown"))

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", ""))

    @cached_property
    def vocabulary(self) -> Counter[str]:
        """Document frequency of every word of the reference texts."""
        return document_frequency(self.normalised_texts.tolist(), normalised=True)

    @cached_property
    def descriptors(self) -> pd.DataFrame:
        """:func:`text_descriptors` of the reference texts (leave-one-out vocabulary)."""
        return text_descriptors(self.normalised_texts.tolist(), self.vocabulary, leave_one_out=True, normalised=True)

    @cached_property
    def normalised_texts(self) -> pd.Series:
        """The reference texts as the model sees them (:func:`textclf.text.normalise_text`)."""
        return self.frame["text"].map(normalise_text)


def _check_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in REFERENCE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(f"{where}: missing column(s) {missing}; expected {list(REFERENCE_COLUMNS)}")
    if frame.empty:
        raise DataValidationError(f"{where}: the reference is empty (0 rows); rebuild it from the training data")
    confidence = pd.to_numeric(frame["confidence"], errors="coerce")
    bad = confidence.isna() | (confidence < 0) | (confidence > 1)
    if bad.any():
        raise DataValidationError(
            f"{where}: {int(bad.sum())} row(s) have a confidence outside [0, 1], first at row {int(np.argmax(bad))}"
        )
    return pd.DataFrame({
        "text": frame["text"].astype(str).to_numpy(),
        "label": frame["label"].astype(str).to_numpy(),
        "confidence": confidence.astype(float).to_numpy(),
    })


def build_reference(texts: Sequence[str], probabilities: np.ndarray, labels: Sequence[str], model_version: str,
                    source: dict[str, Any] | None = None) -> Reference:
    """A reference from texts and the production model's class probabilities on them.

    Args:
        texts: Raw training texts (rows whose normalised text is empty are dropped).
        probabilities: ``[len(texts), len(labels)]`` class probabilities of the production model.
        labels: Class names in label-id order.
        model_version: Identifier of the production model, as the server logs it (``ExportBundle.model_version``).
        source: Where the texts came from (recorded in the metadata).

    Returns:
        The reference.

    Raises:
        DataValidationError: No texts, or shapes that do not match.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    labels = tuple(labels)
    if len(texts) == 0:
        raise DataValidationError("cannot build a reference from 0 texts")
    if probabilities.shape != (len(texts), len(labels)):
        raise DataValidationError(
            f"probabilities have shape {probabilities.shape}, expected ({len(texts)}, {len(labels)}) "
            "(one row per text, one column per label)"
        )
    frame = pd.DataFrame({
        "text": list(texts),
        "label": np.asarray(labels, dtype=object)[probabilities.argmax(axis=1)],
        "confidence": probabilities.max(axis=1),
    })
    keep = frame["text"].map(lambda t: bool(normalise_text(str(t))))
    frame = _check_frame(frame.loc[keep].reset_index(drop=True), "reference")
    meta = {
        "model_version": model_version,
        "labels": list(labels),
        "rows": len(frame),
        "dropped_empty_texts": int((~keep).sum()),
        "fingerprint": sha256_rows(frame["label"].tolist(), frame["text"].tolist()),
        "predicted_label_counts": frame["label"].value_counts().to_dict(),
        "mean_confidence": float(frame["confidence"].mean()),
        "normalisation_version": NORMALISATION_VERSION,
        "source": source or {},
        "created_unix": time.time(),
        "package_versions": package_versions(("textclf-pipelines", "evidently", "scikit-learn", "scipy", "pandas")),
    }
    return Reference(frame=frame, labels=labels, meta=meta)


def predict_with_bundle(onnx_dir: str | Path, texts: Sequence[str], precision: str = "int8",
                        threads: int = 0) -> tuple[np.ndarray, tuple[str, ...], str]:
    """Run the exported (serving) model over ``texts`` with ONNX Runtime, as the model server does.

    Args:
        onnx_dir: Export bundle (output of the export stage).
        texts: Raw texts.
        precision: ``int8`` (what the server runs by default) or ``fp32``.
        threads: ONNX Runtime intra-op threads; 0 uses every core.

    Returns:
        Probabilities ``[n, n_labels]``, the class names, and the model version string the server logs.
    """
    from textclf.serving.bundle import load_bundle
    from textclf.serving.config import Precision, default_intra_op_threads
    from textclf.serving.engine import OnnxTextClassifier

    bundle = load_bundle(onnx_dir)
    chosen = Precision(precision)
    # No warm-up: one pass over many texts, so first-run allocation is paid once either way.
    classifier = OnnxTextClassifier.from_bundle(
        bundle, chosen, threads or default_intra_op_threads(), max_group_size=64, warmup_rounds=0
    )
    probabilities = np.zeros((len(texts), len(bundle.labels)), dtype=np.float32)
    for start in range(0, len(texts), 512):
        chunk = list(texts[start:start + 512])
        if chunk:
            probabilities[start:start + len(chunk)] = classifier.probabilities(chunk)
    return probabilities, bundle.labels, bundle.model_version(chosen)


def sample_training_texts(splits_dir: str | Path, sample_size: int, seed: int,
                          splits: Sequence[str] = DEFAULT_SPLITS) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Texts for a reference from the validate stage's output: every row of the first split, then a random
    sample of the next, until ``sample_size`` rows.

    Args:
        splits_dir: Output of the validate/split stage (``train.parquet``, ``validation.parquet``, ...).
        sample_size: Rows wanted.
        seed: Sampling seed.
        splits: Split names in order of preference (keys of :data:`textclf.validate.validate.SPLIT_FILES`).

    Returns:
        The sampled rows (``text``, ``label`` = true label, ``split``) and a description of the source.

    Raises:
        DataValidationError: A split name the validate stage does not write, none of the split files exists or has
            a ``text`` column, or they are all empty.
    """
    splits_dir = Path(splits_dir)
    unknown = [name for name in splits if name not in SPLIT_FILES]
    if unknown:
        raise DataValidationError(f"unknown split(s) {unknown}: the validate stage writes {list(SPLIT_FILES)}")
    parts, taken = [], {}
    remaining = sample_size
    for offset, name in enumerate(splits):
        path = splits_dir / SPLIT_FILES[name]
        if remaining <= 0 or not path.is_file():
            continue
        frame = pd.read_parquet(path)
        if "text" not in frame.columns:
            raise DataValidationError(f"{path}: no 'text' column (columns: {list(frame.columns)})")
        if len(frame) > remaining:
            frame = frame.sample(n=remaining, random_state=seed + offset)
        frame = frame.assign(split=name)
        parts.append(frame[["text", "split"] + (["label"] if "label" in frame.columns else [])])
        taken[name] = len(frame)
        remaining -= len(frame)
    if not parts or sum(taken.values()) == 0:
        raise DataValidationError(
            f"{splits_dir}: no rows in any of {[SPLIT_FILES[s] for s in splits]}; pass the validate stage's output"
        )
    source: dict[str, Any] = {"splits_dir": str(splits_dir), "rows_per_split": taken, "seed": seed}
    report = splits_dir / SPLIT_REPORT_FILE
    if report.is_file():
        source["training_data_fingerprints"] = read_json(report).get("fingerprints", {})
    return pd.concat(parts, ignore_index=True), source


def reference_from_splits(splits_dir: str | Path, onnx_dir: str | Path, sample_size: int, seed: int,
                          splits: Sequence[str] = DEFAULT_SPLITS, precision: str = "int8") -> Reference:
    """Build the reference of a production model from its training data (see the module docstring).

    Args:
        splits_dir: Output of the validate/split stage the model was trained on.
        onnx_dir: The model's export bundle (what the server runs).
        sample_size: Reference rows (``DriftConfig.reference_size``).
        seed: Sampling seed.
        splits: Splits to draw from, in order of preference.
        precision: The precision the server runs (the logged probabilities come from it).

    Returns:
        The reference (not yet saved; see :func:`save_reference`).
    """
    rows, source = sample_training_texts(splits_dir, sample_size, seed, splits)
    started = time.perf_counter()
    probabilities, labels, model_version = predict_with_bundle(onnx_dir, rows["text"].tolist(), precision)
    source.update({"onnx_dir": str(onnx_dir), "precision": precision,
                   "prediction_seconds": round(time.perf_counter() - started, 2)})
    log.info("predicted %d reference rows in %.1f s", len(rows), source["prediction_seconds"])
    return build_reference(rows["text"].tolist(), probabilities, labels, model_version, source)


def save_reference(reference: Reference, output_dir: str | Path) -> Path:
    """Write ``reference.parquet`` and ``reference.json`` to ``output_dir`` (replaced atomically).

    Returns:
        ``output_dir``.
    """
    output_dir = Path(output_dir)
    with atomic_directory(output_dir) as staging:
        reference.frame.to_parquet(staging / REFERENCE_FILE, index=False)
        write_json(staging / META_FILE, {**reference.meta, "labels": list(reference.labels)})
    return output_dir


def test_accuracy_of(evaluation_dir: str | Path) -> float:
    """The test accuracy recorded by the evaluate stage (``metrics.json``: ``test.accuracy``): the accuracy the
    monitor holds the model to once ground truth is fed back (``meta["test_accuracy"]``).

    Raises:
        DataValidationError: No readable ``metrics.json`` with a test accuracy in ``evaluation_dir``.
    """
    from textclf.evaluate.evaluate import METRICS_FILE

    path = Path(evaluation_dir) / METRICS_FILE
    try:
        accuracy = float(read_json(path)["test"]["accuracy"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise DataValidationError(f"{path}: no test accuracy ({exc!r}); expected the evaluate stage's output") from exc
    return accuracy


def publish_reference(reference: Reference, uri: str) -> str:
    """Put the reference where a running monitor reads it (its ``--reference``): a local directory is replaced
    atomically; on ``s3://`` / ``gs://`` the parquet goes first and ``reference.json`` last, so a monitor that
    watches ``reference.json`` (:func:`reference_fingerprint_at`) sees the change only once the data is there.

    Returns:
        ``uri``.
    """
    import tempfile

    from textclf.storage import Store, is_remote, local_path

    if not is_remote(uri):
        save_reference(reference, local_path(uri))
        return uri
    with tempfile.TemporaryDirectory(prefix="textclf-reference-") as scratch:
        local = save_reference(reference, Path(scratch) / "reference")
        store = Store(uri)
        store.upload_file(local / REFERENCE_FILE, REFERENCE_FILE)
        store.upload_file(local / META_FILE, META_FILE)
    return uri


def reference_fingerprint_at(uri: str | Path) -> str:
    """The fingerprint in the ``reference.json`` at ``uri`` (a path or a storage URI), without reading the data.

    Raises:
        ObjectNotFoundError: No ``reference.json`` there.
        DataValidationError: It is not JSON.
    """
    from textclf.storage import Store, is_remote, local_path

    try:
        raw = Store(str(uri)).read_bytes(META_FILE) if is_remote(str(uri)) else (local_path(uri) / META_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise ObjectNotFoundError(f"{uri}: no {META_FILE}") from exc
    try:
        return str(json.loads(raw).get("fingerprint", ""))
    except json.JSONDecodeError as exc:
        raise DataValidationError(f"{uri}/{META_FILE}: not JSON ({exc})") from exc


def load_reference(uri: str | Path, scratch_dir: str | Path | None = None) -> Reference:
    """Read a reference saved by :func:`save_reference`.

    Args:
        uri: The reference directory: a path, ``file://``, ``s3://`` or ``gs://`` URI.
        scratch_dir: Where a remote reference is downloaded (must not exist; default: a temporary directory).

    Returns:
        The reference.

    Raises:
        ObjectNotFoundError: No reference at ``uri``.
        DataValidationError: The files are incomplete, empty or malformed.
    """
    from textclf.storage import localize

    if scratch_dir is None:
        import tempfile

        scratch_dir = Path(tempfile.mkdtemp(prefix="textclf-reference-")) / "reference"
    root = localize(str(uri), scratch_dir)
    data, meta_path = root / REFERENCE_FILE, root / META_FILE
    if not root.is_dir() or not data.is_file():
        raise ObjectNotFoundError(
            f"{uri}: no drift reference here (expected {REFERENCE_FILE} and {META_FILE}); build one with "
            "`textclf drift-reference --splits-dir ... --onnx-dir ... --output ...`"
        )
    if not meta_path.is_file():
        raise DataValidationError(f"{uri}: {META_FILE} is missing next to {REFERENCE_FILE}")
    try:
        frame = pd.read_parquet(data)
    except Exception as exc:  # pyarrow raises several unrelated types for a broken file
        raise DataValidationError(f"{data}: not a readable parquet file ({exc})") from exc
    meta = read_json(meta_path)
    frame = _check_frame(frame, str(data))
    labels = tuple(meta.get("labels") or sorted(frame["label"].unique()))
    return Reference(frame=frame, labels=labels, meta=meta)
