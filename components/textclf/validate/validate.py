"""Validate and split: drop invalid rows, remove duplicates and train/test leakage, split train/validation.

Reads the ingest directory and writes ``train.parquet``, ``validation.parquet``, ``test.parquet``, ``labels.json``,
``validation_report.json`` and ``validation_report.md``. The test split is passed through untouched except for
unusable rows: it is only scored by the evaluate stage; this stage reads it solely to find leakage and to record its
fingerprint.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from textclf.config import SplitConfig
from textclf.errors import DataValidationError
from textclf.ingest.ingest import NEW_ROWS
from textclf.ingest.ingest import REPORT_FILE as INGEST_REPORT_FILE
from textclf.ingest.ingest import SPLIT_FILES as INGEST_SPLIT_FILES
from textclf.provenance import read_json, sha256_rows, write_json
from textclf.serving.contract import LABELS_FILE
from textclf.text import TEXT_PROFILE_KEY, dedup_key, normalise_text, text_profile_of

log = logging.getLogger(__name__)

#: Share of control / private-use / replacement characters above which a text counts as garbled.
GARBLED_CHAR_SHARE = 0.1
EXAMPLES = 5
#: Output file of each split; the train, evaluate and drift-reference stages read them.
SPLIT_FILES = {split: f"{split}.parquet" for split in ("train", "validation", "test")}


def read_split(split_dir: str | Path, split: str, labels: list[str]) -> tuple[pd.DataFrame, Any]:
    """One split of this stage's output as the later stages read it: its ``row``, ``text`` and ``label`` columns
    and the label ids (int64, index into ``labels``).

    Raises:
        DataValidationError: Unknown split, a missing or empty split file, or labels outside ``labels``.
    """
    import numpy as np

    if split not in SPLIT_FILES:
        raise DataValidationError(f"unknown split {split!r}: the validate stage writes {list(SPLIT_FILES)}")
    path = Path(split_dir) / SPLIT_FILES[split]
    if not path.is_file():
        raise DataValidationError(f"{path} not found; is {split_dir} the validate stage's output?")
    frame = pd.read_parquet(path, columns=["row", "text", "label"])
    if frame.empty:
        raise DataValidationError(f"{path}: no rows")
    label_to_id = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(frame["label"]) - set(label_to_id))
    if unknown:
        raise DataValidationError(f"{path}: labels {unknown} are not in the label map {labels}")
    return frame, frame["label"].map(label_to_id).to_numpy(dtype=np.int64)
#: Output: the report as JSON (fingerprints, rows, invalid rows, duplicates, leakage) and as Markdown.
REPORT_FILE = "validation_report.json"
REPORT_MARKDOWN_FILE = "validation_report.md"


@dataclass(frozen=True)
class SplitResult:
    """Where the splits are and the report that describes them."""

    output_dir: Path
    report: dict[str, Any]


def invalid_reason(text: str) -> str | None:
    """Why ``text`` cannot be used for training or evaluation, or ``None`` if it can."""
    clean = normalise_text(text)
    if not clean:
        return "empty"
    if "\ufffd" in clean:
        return "garbled (U+FFFD replacement character)"
    odd = sum(1 for ch in clean if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"))
    if odd / len(clean) > GARBLED_CHAR_SHARE:
        return "garbled (control or unassigned characters)"
    if not any(ch.isalnum() for ch in clean):
        return "garbled (no letters or digits)"
    return None


def drop_invalid(frame: pd.DataFrame, source: str, max_fraction: float) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Drop empty or garbled rows; fail if they are more than ``max_fraction`` of the file."""
    reasons = frame["text"].map(invalid_reason)
    bad = frame.loc[reasons.notna()].assign(reason=reasons[reasons.notna()])
    summary = {
        "dropped": len(bad),
        "by_reason": bad["reason"].value_counts().to_dict(),
        "rows": bad["row"].head(50).tolist(),
    }
    if len(bad) and len(bad) / len(frame) > max_fraction:
        first = bad.iloc[0]
        raise DataValidationError(
            f"{source}: {len(bad)} of {len(frame)} rows have unusable text (more than the allowed "
            f"{max_fraction:.1%}); first at data row {first['row']}: {first['reason']} text"
        )
    return frame.loc[reasons.isna()].reset_index(drop=True), summary


def drop_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keep the first of exact duplicate texts; drop every copy of a text that carries conflicting labels."""
    labels_per_text = frame.groupby("text")["label"].nunique()
    conflicting = set(labels_per_text[labels_per_text > 1].index)
    conflict_mask = frame["text"].isin(conflicting)
    kept = frame.loc[~conflict_mask]
    dup_mask = kept.duplicated(subset=["text"], keep="first")
    summary = {
        "exact_duplicates_removed": int(dup_mask.sum()),
        "conflicting_label_rows_removed": int(conflict_mask.sum()),
        "conflicting_rows": frame.loc[conflict_mask, "row"].head(50).tolist(),
    }
    return kept.loc[~dup_mask].reset_index(drop=True), summary


def remove_leakage(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Remove training rows whose text also appears in the test set, exactly or after normalisation."""
    exact = train["text"].isin(set(test["text"]))
    train_keys = train["text"].map(dedup_key)
    normalised = train_keys.isin(set(test["text"].map(dedup_key))) & ~exact
    leaked = exact | normalised
    examples = train.loc[leaked, ["row", "text"]].head(EXAMPLES).to_dict(orient="records")
    summary = {
        "exact": int(exact.sum()),
        "normalised": int(normalised.sum()),
        "removed_from_train": int(leaked.sum()),
        "examples": examples,
    }
    return train.loc[~leaked].reset_index(drop=True), summary


def stratified_cap(frame: pd.DataFrame, max_rows: int, seed: int, what: str) -> pd.DataFrame:
    """At most ``max_rows`` rows, drawn stratified by label (0 = no cap)."""
    if not max_rows or max_rows >= len(frame):
        return frame
    classes = frame["label"].nunique()
    if max_rows < classes:
        raise DataValidationError(f"{what} cap of {max_rows} rows is smaller than the {classes} classes")
    from sklearn.model_selection import train_test_split  # here: the stages that import SPLIT_FILES need no sklearn

    kept, _ = train_test_split(frame, train_size=max_rows, stratify=_stratify_column(frame, what), random_state=seed)
    return kept.sort_values("row").reset_index(drop=True)


def _stratify_column(frame: pd.DataFrame, what: str) -> pd.Series:
    counts = frame["label"].value_counts()
    if counts.min() < 2:
        raise DataValidationError(
            f"{what}: class {counts.idxmin()!r} has only {counts.min()} row(s); a stratified split needs at least 2"
        )
    return frame["label"]


def split_validation(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    n_val = max(round(len(frame) * fraction), frame["label"].nunique())
    train, val = train_test_split(
        frame, test_size=n_val, stratify=_stratify_column(frame, "train/validation split"), random_state=seed
    )
    return train.sort_values("row").reset_index(drop=True), val.sort_values("row").reset_index(drop=True)


def class_counts(frame: pd.DataFrame, labels: list[str]) -> dict[str, int]:
    counts = frame["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in labels}


def validate_and_split(ingest_dir: str | Path, config: SplitConfig, output_dir: str | Path) -> SplitResult:
    """Clean the ingested data and write train/validation/test splits.

    Args:
        ingest_dir: Output directory of the ingest stage.
        config: Split fraction, caps, invalid-row tolerance and seed.
        output_dir: Directory to create.

    Returns:
        The output directory and the report (also written as JSON and Markdown).

    Raises:
        DataValidationError: Too many unusable rows, or a class too small to stratify.
    """
    ingest_dir = Path(ingest_dir)
    ingest_report = read_json(ingest_dir / INGEST_REPORT_FILE)
    labels: list[str] = read_json(ingest_dir / LABELS_FILE)["labels"]
    sources = {s: ingest_report["source_files"][s]["uri"] for s in ("train", "test")}
    train = pd.read_parquet(ingest_dir / INGEST_SPLIT_FILES["train"])
    test = pd.read_parquet(ingest_dir / INGEST_SPLIT_FILES["test"])
    rows_in = {"train": len(train), "test": len(test)}

    train, invalid_train = drop_invalid(train, sources["train"], config.max_invalid_fraction)
    test, invalid_test = drop_invalid(test, sources["test"], config.max_invalid_fraction)
    invalid = {"train": invalid_train, "test": invalid_test}
    new_rows_file = ingest_dir / INGEST_SPLIT_FILES[NEW_ROWS]
    if new_rows_file.is_file():  # newly labelled rows join the training rows before de-duplication and leakage checks
        new_rows = pd.read_parquet(new_rows_file)
        rows_in[NEW_ROWS] = len(new_rows)
        new_source = ingest_report["source_files"][NEW_ROWS]["uri"]
        new_rows, invalid[NEW_ROWS] = drop_invalid(new_rows, new_source, config.max_invalid_fraction)
        train = pd.concat([train.assign(source="current"), new_rows.assign(source="new")], ignore_index=True)
    train, duplicates = drop_duplicates(train)
    test_duplicates = int(test.duplicated(subset=["text"]).sum())
    train, leakage = remove_leakage(train, test)
    missing = [label for label in labels if label not in set(train["label"])]
    if missing:
        raise DataValidationError(f"{sources['train']}: no usable training rows for class(es) {missing}")

    train = stratified_cap(train, config.max_train_rows, config.seed, "max_train_rows")
    test = stratified_cap(test, config.max_test_rows, config.seed, "max_test_rows")
    train, validation = split_validation(train, config.validation_fraction, config.seed)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": train, "validation": validation, "test": test}
    for name, frame in splits.items():
        frame.to_parquet(out / SPLIT_FILES[name], index=False)
    write_json(out / LABELS_FILE, {"labels": labels})

    report = {
        "dataset_uri": ingest_report["dataset_uri"],
        "dataset_format": ingest_report["dataset_format"],
        TEXT_PROFILE_KEY: text_profile_of(ingest_report).value,
        "labels": labels,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "rows_in": rows_in,
        "invalid_rows": invalid,
        "duplicates": {"train": duplicates, "test_exact_duplicates_kept": test_duplicates},
        "leakage": leakage,
        "rows_out": {name: len(frame) for name, frame in splits.items()},
        "class_counts": {name: class_counts(frame, labels) for name, frame in splits.items()},
        "new_rows_used": (
            {name: int((frame["source"] == "new").sum()) for name, frame in splits.items() if name != "test"}
            if "source" in train else None
        ),
        "fingerprints": {
            "test_file_sha256": ingest_report["source_files"]["test"]["sha256"],
            "train_file_sha256": ingest_report["source_files"]["train"]["sha256"],
            **({"new_rows_file_sha256": ingest_report["source_files"][NEW_ROWS]["sha256"]}
               if NEW_ROWS in ingest_report["source_files"] else {}),
            "test_set_sha256": sha256_rows(test["label"].tolist(), test["text"].tolist()),
            "train_set_sha256": sha256_rows(train["label"].tolist(), train["text"].tolist()),
            "validation_set_sha256": sha256_rows(validation["label"].tolist(), validation["text"].tolist()),
        },
    }
    write_json(out / REPORT_FILE, report)
    (out / REPORT_MARKDOWN_FILE).write_text(render_markdown(report), encoding="utf-8")
    log.info("splits: %s; leakage removed: %d", report["rows_out"], leakage["removed_from_train"])
    return SplitResult(out, report)


def render_markdown(report: dict[str, Any]) -> str:
    """Human-readable summary of a validation report."""
    lines = [
        f"# Data validation: {report['dataset_uri']}",
        "",
        f"Format `{report['dataset_format']}`; classes: {', '.join(report['labels'])}.",
        "",
        "| split | rows |",
        "| --- | --- |",
        *[f"| {name} | {count:,} |" for name, count in report["rows_out"].items()],
        "",
        f"- Rows read: train {report['rows_in']['train']:,}, test {report['rows_in']['test']:,}"
        + (f", newly labelled {report['rows_in'][NEW_ROWS]:,} (used: train {report['new_rows_used']['train']:,}, "
           f"validation {report['new_rows_used']['validation']:,})." if report["new_rows_used"] else "."),
        f"- Unusable rows dropped: train {report['invalid_rows']['train']['dropped']}, "
        f"test {report['invalid_rows']['test']['dropped']}.",
        f"- Exact duplicates removed from train: {report['duplicates']['train']['exact_duplicates_removed']}; "
        f"rows with conflicting labels removed: {report['duplicates']['train']['conflicting_label_rows_removed']}.",
        f"- Train/test leakage removed from train: {report['leakage']['removed_from_train']} "
        f"(exact {report['leakage']['exact']}, after normalisation {report['leakage']['normalised']}).",
        f"- Test set sha256: `{report['fingerprints']['test_set_sha256']}` "
        f"(file `{report['fingerprints']['test_file_sha256']}`).",
        "",
    ]
    return "\n".join(lines)
