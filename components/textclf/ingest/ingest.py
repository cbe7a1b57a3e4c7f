"""Ingest: read a dataset URI into canonical parquet splits, with schema, encoding and label checks.

Output layout (a directory): ``train.parquet`` and ``test.parquet`` with columns ``row`` (1-based data row in the
source file, header excluded), ``text`` (raw text columns joined by a space) and ``label`` (class name);
``labels.json`` (class names in label-id order) and ``ingest_report.json``.
"""

from __future__ import annotations

import contextlib
import enum
import gzip
import io
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from textclf.config import IngestConfig
from textclf.errors import DataValidationError, StoragePathError
from textclf.provenance import sha256_file, write_json
from textclf.serving.contract import LABELS_FILE
from textclf.storage import Store, is_remote
from textclf.text import TEXT_PROFILE_KEY, TextProfile

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
#: Output name of the newly labelled training rows (``IngestConfig.new_rows_uri``), kept apart from ``train`` so the
#: validate stage reports them separately before merging.
NEW_ROWS = "new_rows"
SUFFIXES = (".csv.gz", ".csv", ".parquet")
#: Output file of each split (``new_rows`` only with ``IngestConfig.new_rows_uri``); the validate stage reads them.
SPLIT_FILES = {split: f"{split}.parquet" for split in (*SPLITS, NEW_ROWS)}
#: Output: dataset URI and format, labels, rows per split, the sha256 of every source file.
REPORT_FILE = "ingest_report.json"
#: Column of the ingest and split outputs holding a row's first text column (a title) when the format has several.
TITLE_COLUMN = "title"


class DatasetFormat(str, enum.Enum):
    """Known dataset layouts; ``auto`` picks one from the train file's header."""

    AUTO = "auto"
    AG_NEWS = "ag_news"
    ARXIV_CS = "arxiv_cs"
    GENERIC = "generic"


@dataclass(frozen=True)
class FormatSpec:
    """How a format's columns map to text and label.

    Attributes:
        text_columns: Columns joined by a space to form the text.
        label_column: The label column.
        label_names: Raw label value -> class name, in label-id order; ``None`` uses the sorted training labels.
        text_profile: How training and serving normalise its texts (:class:`textclf.text.TextProfile`).
    """

    text_columns: tuple[str, ...]
    label_column: str
    label_names: dict[str, str] | None = None
    text_profile: TextProfile = TextProfile.NEWS

    @property
    def columns(self) -> list[str]:
        return [self.label_column, *self.text_columns]


AG_NEWS_LABELS = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}

FORMAT_SPECS: dict[DatasetFormat, FormatSpec] = {
    DatasetFormat.AG_NEWS: FormatSpec(("title", "description"), "label", AG_NEWS_LABELS),
    DatasetFormat.ARXIV_CS: FormatSpec(("title", "abstract"), "label", None, TextProfile.ABSTRACT),
}

#: Header (in order) that identifies each named format in ``auto`` mode.
FORMAT_HEADERS = {
    ("label", "title", "description"): DatasetFormat.AG_NEWS,
    ("label", "title", "abstract"): DatasetFormat.ARXIV_CS,
}


@dataclass(frozen=True)
class IngestResult:
    """What ingest produced: the output directory, the resolved format and the class names."""

    output_dir: Path
    dataset_format: DatasetFormat
    labels: list[str]
    rows: dict[str, int]


def resolve_local_dir(dataset_uri: str) -> Path:
    """Turn a bare path or ``file://`` URI into an existing local directory.

    Raises:
        DataValidationError: Unsupported scheme, or the directory does not exist.
    """
    if not dataset_uri:
        raise DataValidationError("dataset_uri is empty: pass a directory holding train and test files")
    parsed = urlparse(dataset_uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else dataset_uri).expanduser()
    else:
        raise DataValidationError(
            f"dataset_uri {dataset_uri!r}: unsupported scheme {parsed.scheme!r} (supported: a path, file://, s3://, "
            "gs://)"
        )
    if not path.is_dir():
        raise DataValidationError(f"dataset directory not found: {path}")
    return path


def split_file_name(names: set[str], split: str, where: object) -> str:
    """The name of the ``split`` file among ``names`` (``.csv.gz``, ``.csv`` or ``.parquet``, in that order).

    Raises:
        DataValidationError: None of them is there (the message names ``where``).
    """
    for suffix in SUFFIXES:
        if f"{split}{suffix}" in names:
            return f"{split}{suffix}"
    tried = ", ".join(f"{split}{s}" for s in SUFFIXES)
    raise DataValidationError(f"missing {split} file in {where}: expected one of {tried}")


def find_split_file(directory: Path, split: str) -> Path:
    """The ``split`` file in ``directory`` (``.csv.gz``, ``.csv`` or ``.parquet``)."""
    names = {path.name for path in directory.iterdir() if path.is_file()} if directory.is_dir() else set()
    return directory / split_file_name(names, split, directory)


def remote_split_files(dataset_uri: str, splits: tuple[str, ...] = SPLITS) -> dict[str, str]:
    """Split name -> object name of a dataset prefix in an object store (listing only, nothing downloaded).

    Raises:
        DataValidationError: A split file is missing.
        StorageError: The bucket is missing or the credentials are refused.
    """
    names = set(Store(dataset_uri).list())
    return {split: split_file_name(names, split, dataset_uri) for split in splits}


@contextmanager
def dataset_directory(dataset_uri: str, splits: tuple[str, ...] = SPLITS) -> Iterator[Path]:
    """A local directory with the dataset's split files: the directory itself for a path or ``file://`` URI; for
    ``s3://`` / ``gs://`` the ``splits`` files downloaded into a temporary directory, removed on exit.

    Raises:
        DataValidationError: Empty or malformed URI, missing directory or split file.
        StorageError: Object-store errors (missing bucket, refused credentials).
    """
    if not dataset_uri:
        raise DataValidationError("dataset_uri is empty: pass a directory holding train and test files")
    try:
        remote = is_remote(dataset_uri)
    except StoragePathError as exc:
        raise DataValidationError(f"dataset_uri {dataset_uri!r}: {exc}") from None
    if not remote:
        yield resolve_local_dir(dataset_uri)
        return
    files = remote_split_files(dataset_uri, splits)
    store = Store(dataset_uri)
    with tempfile.TemporaryDirectory(prefix="textclf-dataset-") as scratch:
        for name in files.values():
            store.download_file(name, Path(scratch) / name)
        log.info("downloaded %s from %s", sorted(files.values()), dataset_uri)
        yield Path(scratch)


def _decode_utf8(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 4]
        raise DataValidationError(
            f"{path}: not valid UTF-8 at line {line} (byte offset {exc.start}, bytes {bad!r}); "
            "re-encode the file as UTF-8"
        ) from None


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (optionally gzip-compressed) or parquet file with every column as ``str``.

    Raises:
        DataValidationError: The file is not valid gzip, UTF-8, CSV or parquet.
    """
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise DataValidationError(f"{path}: cannot read parquet: {exc}") from exc
        return frame.astype(str).where(frame.notna(), "")
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataValidationError(f"{path}: not a valid gzip file ({exc})") from None
    text = _decode_utf8(path, raw)
    if not text.strip():
        raise DataValidationError(f"{path}: file is empty (expected a header row and data rows)")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataValidationError(f"{path}: malformed CSV: {exc}") from None


def detect_format(columns: list[str], requested: DatasetFormat) -> DatasetFormat:
    if requested is not DatasetFormat.AUTO:
        return requested
    return FORMAT_HEADERS.get(tuple(c.strip().lower() for c in columns), DatasetFormat.GENERIC)


def format_spec(dataset_format: DatasetFormat, config: IngestConfig) -> FormatSpec:
    if dataset_format is DatasetFormat.GENERIC:
        if not config.text_columns:
            raise DataValidationError("generic format needs at least one text column")
        return FormatSpec(tuple(config.text_columns), config.label_column, None)
    return FORMAT_SPECS[dataset_format]


def check_columns(path: Path, frame: pd.DataFrame, spec: FormatSpec, dataset_format: DatasetFormat) -> None:
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{path}: wrong header: missing column(s) {missing}; expected {spec.columns} "
            f"(format {dataset_format.value}), found {list(frame.columns)}"
        )


def to_canonical(path: Path, frame: pd.DataFrame, spec: FormatSpec) -> pd.DataFrame:
    """Join the text columns and keep the raw label, with the 1-based source row number; with more than one text
    column, the first (a title) is also kept as :data:`TITLE_COLUMN` (robustness suites score it alone)."""
    texts = frame[list(spec.text_columns)].apply(lambda col: col.str.strip())
    joined = texts.iloc[:, 0]
    for name in spec.text_columns[1:]:
        joined = joined.str.cat(texts[name], sep=" ").str.strip()
    columns = {"row": range(1, len(frame) + 1), "text": joined.values,
               "label": frame[spec.label_column].str.strip().values}
    if len(spec.text_columns) > 1:
        columns[TITLE_COLUMN] = texts.iloc[:, 0].values
    return pd.DataFrame(columns)


def map_labels(path: Path, frame: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """Replace raw label values by class names; unknown values raise, naming the row."""
    known = frame["label"].isin(names.keys())
    if not known.all():
        bad = frame.loc[~known].iloc[0]
        count = int((~known).sum())
        raise DataValidationError(
            f"{path}: unknown label {bad['label']!r} at data row {bad['row']} ({count} row(s) in all); "
            f"expected one of {sorted(names)}"
        )
    return frame.assign(label=frame["label"].map(names))


def read_split_texts(directory: str | Path, split: str,
                     dataset_format: DatasetFormat = DatasetFormat.AUTO) -> pd.DataFrame:
    """One split file as ingest reads it, for tools that need texts without running the stage (benchmarks, the
    ``make loop`` traffic): columns ``row``, ``text`` (the text columns joined) and ``label`` (the class name for
    formats that name their classes, such as AG News; the raw label otherwise).

    Raises:
        DataValidationError: A missing file, bad encoding, wrong header or unknown label.
    """
    path = find_split_file(Path(directory), split)
    raw = read_table(path)
    resolved = detect_format(list(raw.columns), dataset_format)
    spec = format_spec(resolved, IngestConfig())
    check_columns(path, raw, spec, resolved)
    frame = to_canonical(path, raw, spec)
    return map_labels(path, frame, spec.label_names) if spec.label_names is not None else frame


def ingest_dataset(config: IngestConfig, output_dir: str | Path) -> IngestResult:
    """Read ``config.dataset_uri`` and write canonical train/test parquet files to ``output_dir``.

    Args:
        config: Dataset location, format and (for generic data) column names.
        output_dir: Directory to create.

    Returns:
        The resolved format, class names and row counts.

    Raises:
        DataValidationError: Missing directory or file, bad encoding, wrong header, unknown or empty labels.
        StorageError: An ``s3://`` / ``gs://`` dataset could not be read (missing bucket, refused credentials).
    """
    with contextlib.ExitStack() as stack:  # remote downloads are removed on exit
        directory = stack.enter_context(dataset_directory(config.dataset_uri))
        new_rows_dir = None
        if config.new_rows_uri:
            new_rows_dir = stack.enter_context(dataset_directory(config.new_rows_uri, splits=("train",)))
        return _ingest_directory(config, directory, new_rows_dir, output_dir)


def _ingest_directory(config: IngestConfig, directory: Path, new_rows_dir: Path | None,
                      output_dir: str | Path) -> IngestResult:
    try:
        requested = DatasetFormat(config.dataset_format)
    except ValueError:
        valid = ", ".join(f.value for f in DatasetFormat)
        raise DataValidationError(f"dataset_format must be one of {valid}; got {config.dataset_format!r}") from None

    paths = {split: find_split_file(directory, split) for split in SPLITS}
    if new_rows_dir is not None:
        paths[NEW_ROWS] = find_split_file(new_rows_dir, "train")
    raw = {split: read_table(path) for split, path in paths.items()}
    dataset_format = detect_format(list(raw["train"].columns), requested)
    spec = format_spec(dataset_format, config)

    frames: dict[str, pd.DataFrame] = {}
    for split, path in paths.items():
        check_columns(path, raw[split], spec, dataset_format)
        frame = to_canonical(path, raw[split], spec)
        if frame.empty:
            raise DataValidationError(f"{path}: no data rows (only a header)")
        empty_label = frame["label"] == ""
        if empty_label.any():
            row = int(frame.loc[empty_label, "row"].iloc[0])
            raise DataValidationError(f"{path}: empty label at data row {row} (column {spec.label_column!r})")
        frames[split] = frame

    if spec.label_names is not None:
        names = spec.label_names
    else:
        names = {label: label for label in sorted(frames["train"]["label"].unique())}
    for split, path in paths.items():
        frames[split] = map_labels(path, frames[split], names)
    labels = list(names.values())

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        frame.to_parquet(out / SPLIT_FILES[split], index=False)
    write_json(out / LABELS_FILE, {"labels": labels})
    rows = {split: len(frame) for split, frame in frames.items()}
    write_json(
        out / REPORT_FILE,
        {
            "dataset_uri": config.dataset_uri,
            "new_rows_uri": config.new_rows_uri,
            "dataset_format": dataset_format.value,
            "text_columns": list(spec.text_columns),
            TEXT_PROFILE_KEY: spec.text_profile.value,
            "label_column": spec.label_column,
            "labels": labels,
            "rows": rows,
            "source_files": {
                s: {"uri": f"{(config.new_rows_uri if s == NEW_ROWS else config.dataset_uri).rstrip('/')}/{p.name}",
                    "sha256": sha256_file(p)}
                for s, p in paths.items()
            },
        },
    )
    log.info("ingested %s (%s): %s", config.dataset_uri, dataset_format.value, rows)
    return IngestResult(out, dataset_format, labels, rows)
