"""Compare: score several models of one run on the held-out test set, side by side.

The distillation pipeline trains a transformer teacher, a TF-IDF classical model, an ensemble of those two and a
distilled student (optionally a baseline transformer too); this stage, like the evaluate stage the only one that
reads the test split, scores each of them on the same test rows and writes one table. Each model is a
:class:`ModelToScore` (name, :class:`ModelKind`, directory):

- ``transformer``: the train or distill stage's layout (``config.json``, weights, tokenizer, ``labels.json``,
  ``textclf_metadata.json`` with ``max_length``); logits from :func:`textclf.evaluate.evaluate.predict_logits`.
- ``classical``: the classical stage's model directory; logits from :func:`textclf.classical.split_logits`.
- ``ensemble``: the ensemble stage's directory (``ensemble.json``). Its members are other entries of the same call,
  matched by the member names saved in the ensemble; both methods are scored, as rows ``<name>_vote`` and
  ``<name>_stack``. Its "logits" are the logs of its probabilities
  (:func:`textclf.ensemble.ensemble.apply_ensemble_logits`): softmax gives the probabilities back, so temperature
  scaling applies to them as to any model's logits.

Every model's validation and test logits are computed once. Per row: test accuracy and macro-F1
(:func:`textclf.evaluate.evaluate.classification_metrics`), the test expected calibration error before and after
temperature scaling with ``T`` fitted on the validation logits
(:func:`textclf.evaluate.calibration.calibration_summary`), ``T``, the test rows, the model's size on disk and, for
a transformer, its encoder layers. The stacking meta-learner was fitted on the same validation rows its ``T`` is
fitted on, so the stack row's ``T`` is fitted on in-sample predictions (there are no other non-test rows).

Every input is checked (names, kinds, files, labels, the ensembles' members, the settings) before anything is
loaded or scored. Output (a directory, written atomically): :data:`COMPARISON_FILE`, :data:`TABLE_FILE`,
:data:`REPORT_FILE` and every row's test logits under :data:`TEST_LOGITS_DIR`.
"""

from __future__ import annotations

import enum
import html
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from textclf.classical.classical import METADATA_FILE as CLASSICAL_METADATA_FILE
from textclf.classical.classical import MODEL_FILE as CLASSICAL_MODEL_FILE
from textclf.classical.classical import load_classical_model, logits_frame, split_logits
from textclf.config import EnsembleMethod, EvaluateConfig
from textclf.ensemble.ensemble import (
    ENSEMBLE_FILE,
    FittedEnsemble,
    apply_ensemble_logits,
    load_ensemble,
    member_from_frame,
)
from textclf.errors import ConfigError, DataValidationError
from textclf.evaluate.calibration import calibration_summary
from textclf.evaluate.evaluate import classification_metrics, predict_logits, softmax
from textclf.provenance import atomic_directory, read_json, write_json
from textclf.serving.contract import LABELS_FILE, TOKENIZER_FILE
from textclf.train.train import METADATA_FILE as TRANSFORMER_METADATA_FILE
from textclf.validate.validate import REPORT_FILE as SPLIT_REPORT_FILE
from textclf.validate.validate import SPLIT_FILES, read_split

log = logging.getLogger(__name__)

#: Output: every row (:class:`ComparisonRow` fields), the labels, the calibration bins and ``test_set_sha256``.
COMPARISON_FILE = "comparison.json"
#: Output: per row, its test logits and probabilities (``<row name>.parquet``, columns as
#: :func:`textclf.classical.classical.logits_frame`), kept so any member's or ensemble's test predictions can be
#: analysed without rerunning it.
TEST_LOGITS_DIR = "test_logits"
#: Output: one Markdown table, one row per scored model (ensembles: one per method).
TABLE_FILE = "comparison.md"
#: Output: the same table as a self-contained HTML page (the compare component publishes it).
REPORT_FILE = "report.html"
#: The splits every model is scored on: validation (where ``T`` is fitted) and test (what is reported).
SCORED_SPLITS = ("validation", "test")
#: The ensemble methods scored, each as its own row ``<name>_<method>``.
ENSEMBLE_METHODS = tuple(method.value for method in EnsembleMethod)
#: What a model's name may look like (it names table rows and, with a method suffix, ensemble rows).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: A transformer directory needs one of these weight files.
TRANSFORMER_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                       "pytorch_model.bin.index.json")
#: ... and one of these tokenizer files.
TRANSFORMER_TOKENIZER = (TOKENIZER_FILE, "tokenizer_config.json")


class ModelKind(str, enum.Enum):
    """How a model is loaded and scored."""

    TRANSFORMER = "transformer"  # a Hugging Face sequence classifier (train or distill stage)
    CLASSICAL = "classical"  # the TF-IDF linear model (classical stage)
    ENSEMBLE = "ensemble"  # vote and stack over other entries' logits (ensemble stage)


@dataclass(frozen=True)
class ModelToScore:
    """One model to compare.

    Attributes:
        name: Unique within a call (matches ``[A-Za-z0-9][A-Za-z0-9_.-]*``); an ensemble's members are found by it.
        kind: A :class:`ModelKind` (or its value).
        path: The model's directory.

    Raises:
        ConfigError: A malformed name or an unknown kind.
    """

    name: str
    kind: ModelKind
    path: Path

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ConfigError(f"model name {self.name!r} must match {NAME_PATTERN.pattern}")
        try:
            kind = ModelKind(self.kind)
        except ValueError:
            raise ConfigError(
                f"model {self.name!r}: kind must be one of {[k.value for k in ModelKind]}, got {self.kind!r}"
            ) from None
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class ComparisonRow:
    """One row of the comparison: a model (an ensemble: one of its methods) on the test split.

    Attributes:
        name: The row's name: the model's, or ``<ensemble>_<method>``.
        model: The :class:`ModelToScore` name it came from.
        kind: ``transformer``, ``classical`` or ``ensemble``.
        method: ``vote`` or ``stack`` for an ensemble row, else None.
        members: An ensemble's member names (empty otherwise).
        accuracy: Test accuracy.
        macro_f1: Test macro-F1.
        expected_calibration_error: Test ECE of ``softmax(logits)``.
        expected_calibration_error_calibrated: Test ECE of ``softmax(logits / temperature)``.
        temperature: ``T`` fitted on the validation logits.
        test_nll: Test negative log-likelihood before temperature scaling.
        test_nll_calibrated: ... and after.
        test_rows: Test rows scored.
        validation_rows: Validation rows ``T`` was fitted on.
        size_bytes: Bytes of the files in the model's directory (an ensemble: ``ensemble.json`` only).
        total_size_bytes: ``size_bytes`` plus, for an ensemble, its members' (what serving it would take).
        encoder_layers: A transformer's ``num_hidden_layers`` (``config.json``); None otherwise.
    """

    name: str
    model: str
    kind: str
    method: str | None
    members: tuple[str, ...]
    accuracy: float
    macro_f1: float
    expected_calibration_error: float
    expected_calibration_error_calibrated: float
    temperature: float
    test_nll: float
    test_nll_calibrated: float
    test_rows: int
    validation_rows: int
    size_bytes: int
    total_size_bytes: int
    encoder_layers: int | None


@dataclass(frozen=True)
class ComparisonResult:
    """The output directory and the rows (also in :data:`COMPARISON_FILE`), in the order of the models given."""

    output_dir: Path
    rows: tuple[ComparisonRow, ...]
    test_set_sha256: str
    labels: tuple[str, ...] = field(default=())

    def row(self, name: str) -> ComparisonRow:
        """The row called ``name``.

        Raises:
            KeyError: No such row.
        """
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; rows: {[row.name for row in self.rows]}")


@dataclass(frozen=True)
class _Checked:
    """What :func:`check_inputs` found: the split labels and report, and each ensemble entry's loaded ensemble."""

    labels: list[str]
    split_report: dict[str, Any]
    ensembles: dict[str, FittedEnsemble]


def row_names(model: ModelToScore) -> list[str]:
    """The table rows ``model`` gives: its name, or ``<name>_vote`` and ``<name>_stack`` for an ensemble."""
    if model.kind is ModelKind.ENSEMBLE:
        return [f"{model.name}_{method}" for method in ENSEMBLE_METHODS]
    return [model.name]


def _labels_of(path: Path, source: str) -> list[str]:
    try:
        labels = read_json(path)["labels"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataValidationError(f"{source}: cannot read the label list from {path}: {exc!r}") from exc
    if not isinstance(labels, list) or len(labels) < 2:
        raise DataValidationError(f"{source}: {path} must list at least 2 labels, got {labels!r}")
    return [str(label) for label in labels]


def _require_files(model: ModelToScore, required: Sequence[str], any_of: Sequence[Sequence[str]] = ()) -> None:
    if not model.path.is_dir():
        raise DataValidationError(f"model {model.name!r} ({model.kind.value}): {model.path} is not a directory")
    missing = [name for name in required if not (model.path / name).is_file()]
    missing += [" or ".join(group) for group in any_of if not any((model.path / name).is_file() for name in group)]
    if missing:
        raise DataValidationError(
            f"model {model.name!r} ({model.kind.value}): {model.path} lacks {missing}; is it a {model.kind.value} "
            "model directory?"
        )


def _check_model(model: ModelToScore, labels: list[str]) -> FittedEnsemble | None:
    """Check one entry's files and labels against the split's; an ensemble's file is loaded (a small JSON)."""
    source = f"model {model.name!r} ({model.kind.value})"
    if model.kind is ModelKind.TRANSFORMER:
        _require_files(model, ("config.json", LABELS_FILE, TRANSFORMER_METADATA_FILE),
                       (TRANSFORMER_WEIGHTS, TRANSFORMER_TOKENIZER))
        metadata = read_json(model.path / TRANSFORMER_METADATA_FILE)
        max_length = metadata.get("max_length") if isinstance(metadata, dict) else None
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise DataValidationError(
                f"{source}: {TRANSFORMER_METADATA_FILE} needs an integer max_length >= 1, got {max_length!r}"
            )
        found = _labels_of(model.path / LABELS_FILE, source)
    elif model.kind is ModelKind.CLASSICAL:
        _require_files(model, (CLASSICAL_MODEL_FILE, CLASSICAL_METADATA_FILE, LABELS_FILE))
        found = _labels_of(model.path / LABELS_FILE, source)
    else:
        _require_files(model, (ENSEMBLE_FILE,))
        ensemble = load_ensemble(model.path)
        found = list(ensemble.classes)
    if found != labels:
        raise DataValidationError(f"{source}: labels {found} differ from the splits' {labels} (same order expected)")
    return ensemble if model.kind is ModelKind.ENSEMBLE else None


def check_inputs(split_dir: str | Path, models: Sequence[ModelToScore], config: EvaluateConfig) -> _Checked:
    """Check everything :func:`compare_models` needs, loading nothing heavy and scoring nothing.

    Raises:
        ConfigError: No models, an entry that is not a :class:`ModelToScore`, repeated model or row names, or a
            batch size or calibration bins below 1.
        DataValidationError: A split file missing, a model directory lacking its files, a model's labels other than
            the splits', or an ensemble member that is not a transformer or classical entry of the call.
    """
    models = list(models)
    if not models:
        raise ConfigError("no models to compare: give at least one ModelToScore")
    strays = [entry for entry in models if not isinstance(entry, ModelToScore)]
    if strays:
        raise ConfigError(f"models must be ModelToScore entries, got {strays[0]!r}")
    names = [model.name for model in models]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"model names must be distinct; repeated: {repeated}")
    rows = [row for model in models for row in row_names(model)]
    clashing = sorted({row for row in rows if rows.count(row) > 1})
    if clashing:
        raise ConfigError(f"row names must be distinct (an ensemble gives <name>_vote and <name>_stack); "
                          f"repeated: {clashing}")
    for setting in ("batch_size", "calibration_bins"):
        value = getattr(config, setting)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"EvaluateConfig.{setting} must be an integer >= 1, got {value!r}")

    split_dir = Path(split_dir)
    needed = [SPLIT_FILES["validation"], SPLIT_FILES["test"], LABELS_FILE, SPLIT_REPORT_FILE]
    missing = [name for name in needed if not (split_dir / name).is_file()]
    if missing:
        raise DataValidationError(f"{split_dir} lacks {missing}; is it the validate stage's output?")
    labels = _labels_of(split_dir / LABELS_FILE, str(split_dir))
    split_report = read_json(split_dir / SPLIT_REPORT_FILE)
    if not isinstance(split_report.get("fingerprints", {}).get("test_set_sha256"), str):
        raise DataValidationError(f"{split_dir / SPLIT_REPORT_FILE}: no fingerprints.test_set_sha256")

    ensembles = {}
    for model in models:
        ensemble = _check_model(model, labels)
        if ensemble is not None:
            ensembles[model.name] = ensemble
    scorable = {model.name: model.kind for model in models if model.kind is not ModelKind.ENSEMBLE}
    for name, ensemble in ensembles.items():
        absent = [member for member in ensemble.members if member not in scorable]
        if absent:
            raise DataValidationError(
                f"ensemble {name!r}: members {absent} are not among the transformer or classical models given "
                f"({sorted(scorable)}); its members are {list(ensemble.members)}, each must be given under that name"
            )
    return _Checked(labels, split_report, ensembles)


def directory_size(path: str | Path) -> int:
    """Bytes of every file below ``path`` (links not followed)."""
    return sum(item.stat().st_size for item in Path(path).rglob("*") if item.is_file() and not item.is_symlink())


def _encoder_layers(model_dir: Path) -> int | None:
    value = read_json(model_dir / "config.json").get("num_hidden_layers")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _logits_of(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    return frame[[f"logit_{label}" for label in labels]].to_numpy(dtype=np.float64)


def _score_member(model: ModelToScore, split_dir: Path, splits: dict[str, pd.DataFrame], labels: list[str],
                  config: EvaluateConfig) -> dict[str, pd.DataFrame]:
    """A transformer's or classical model's logits frames (``logits_frame``'s layout) on validation and test."""
    if model.kind is ModelKind.CLASSICAL:
        fitted = load_classical_model(model.path)
        return {split: split_logits(fitted, split_dir, split) for split in SCORED_SPLITS}
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textclf.text import text_profile_of

    metadata = read_json(model.path / TRANSFORMER_METADATA_FILE)
    max_length, profile = int(metadata["max_length"]), text_profile_of(metadata)
    tokenizer = AutoTokenizer.from_pretrained(model.path)
    network = AutoModelForSequenceClassification.from_pretrained(model.path)
    if int(network.config.num_labels) != len(labels):
        raise DataValidationError(
            f"model {model.name!r}: {network.config.num_labels} output classes, the splits have {len(labels)}"
        )
    frames = {}
    for split, frame in splits.items():
        logits = predict_logits(network, tokenizer, frame["text"].tolist(), config.batch_size, max_length, profile)
        frames[split] = logits_frame(frame, logits, labels)
    del network
    return frames


def _row(name: str, model: ModelToScore, method: str | None, members: tuple[str, ...], logits: dict[str, np.ndarray],
         label_ids: dict[str, np.ndarray], labels: list[str], config: EvaluateConfig, size: int, total: int
         ) -> ComparisonRow:
    bins = config.calibration_bins
    test = classification_metrics(label_ids["test"], softmax(logits["test"]), labels, bins)
    calibration = calibration_summary(logits["validation"], label_ids["validation"], logits["test"],
                                      label_ids["test"], bins)
    row = ComparisonRow(
        name=name, model=model.name, kind=model.kind.value, method=method, members=members,
        accuracy=test["accuracy"], macro_f1=test["macro_f1"],
        expected_calibration_error=float(calibration["test_ece_before"]),
        expected_calibration_error_calibrated=float(calibration["test_ece_after"]),
        temperature=float(calibration["temperature"]),
        test_nll=float(calibration["test_nll_before"]), test_nll_calibrated=float(calibration["test_nll_after"]),
        test_rows=int(test["rows"]), validation_rows=int(calibration["validation_rows"]),
        size_bytes=size, total_size_bytes=total,
        encoder_layers=_encoder_layers(model.path) if model.kind is ModelKind.TRANSFORMER else None,
    )
    log.info("%s: test accuracy %.4f, macro-F1 %.4f, ECE %.4f -> %.4f (T = %.3f)", name, row.accuracy,
             row.macro_f1, row.expected_calibration_error, row.expected_calibration_error_calibrated, row.temperature)
    return row


def human_size(size: int) -> str:
    """``size`` bytes as B, KiB, MiB or GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


#: Table columns: heading and how a row's cell is written.
_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("model", lambda r: r.name),
    ("kind", lambda r: r.kind + (f" ({r.method})" if r.method else "")),
    ("accuracy", lambda r: f"{r.accuracy:.4f}"),
    ("macro-F1", lambda r: f"{r.macro_f1:.4f}"),
    ("ECE", lambda r: f"{r.expected_calibration_error:.4f}"),
    ("ECE after T", lambda r: f"{r.expected_calibration_error_calibrated:.4f}"),
    ("T", lambda r: f"{r.temperature:.3f}"),
    ("test rows", lambda r: str(r.test_rows)),
    ("size on disk", lambda r: human_size(r.total_size_bytes)),
    ("encoder layers", lambda r: "" if r.encoder_layers is None else str(r.encoder_layers)),
)


def render_markdown(rows: Sequence[ComparisonRow]) -> str:
    """One Markdown table, one row per :class:`ComparisonRow` (an ensemble's size includes its members')."""
    lines = ["| " + " | ".join(heading for heading, _ in _COLUMNS) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(_COLUMNS))) + "|"]
    lines += ["| " + " | ".join(cell(row) for _, cell in _COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_html(rows: Sequence[ComparisonRow], test_set_sha256: str, bins: int) -> str:
    """The same table as a self-contained HTML page (the KFP UI shows it as an HTML artifact)."""
    head = "".join(f"<th>{html.escape(heading)}</th>" for heading, _ in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(row))}</td>" for _, cell in _COLUMNS) + "</tr>"
                   for row in rows)
    test_rows = rows[0].test_rows if rows else 0
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>textclf model comparison</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse}}td:nth-child(n+3){{text-align:right}}</style></head><body>
<h1>Model comparison</h1>
<p>Test set sha256 <code>{html.escape(test_set_sha256)}</code> ({test_rows:,} rows). ECE: expected calibration error
({bins} equal-width bins) on the test set, before and after dividing the logits by the temperature T fitted on the
validation set. An ensemble's size on disk includes its members'.</p>
<table><tr>{head}</tr>{body}</table>
</body></html>
"""


def compare_models(
    split_dir: str | Path, models: Sequence[ModelToScore], config: EvaluateConfig, output_dir: str | Path
) -> ComparisonResult:
    """Score every model on the validation and test splits and write the comparison table.

    Args:
        split_dir: Output of the validate/split stage.
        models: At least one, distinct names; an ensemble's members must be transformer or classical entries
            named as in the ensemble.
        config: ``batch_size`` (transformer forward passes) and ``calibration_bins``.
        output_dir: Directory to create (atomically): :data:`COMPARISON_FILE`, :data:`TABLE_FILE`,
            :data:`REPORT_FILE`.

    Returns:
        The output directory and the rows, in the order of ``models`` (an ensemble's: vote, then stack).

    Raises:
        ConfigError, DataValidationError: See :func:`check_inputs` (raised before anything is scored); a
            DataValidationError also for a split with no rows or labels outside the label map, or a model whose
            files do not load (e.g. a classical model's sha256 mismatch).
    """
    models = list(models)
    checked = check_inputs(split_dir, models, config)
    split_dir, out, labels = Path(split_dir), Path(output_dir), checked.labels
    splits, label_ids = {}, {}
    for split in SCORED_SPLITS:
        splits[split], label_ids[split] = read_split(split_dir, split, labels)

    frames = {model.name: _score_member(model, split_dir, splits, labels, config)
              for model in models if model.kind is not ModelKind.ENSEMBLE}
    sizes = {model.name: directory_size(model.path) for model in models}
    rows: list[ComparisonRow] = []
    test_logits: dict[str, np.ndarray] = {}
    for model in models:
        if model.kind is not ModelKind.ENSEMBLE:
            logits = {split: _logits_of(frame, labels) for split, frame in frames[model.name].items()}
            test_logits[model.name] = logits["test"]
            rows.append(_row(model.name, model, None, (), logits, label_ids, labels, config,
                             sizes[model.name], sizes[model.name]))
            continue
        ensemble = checked.ensembles[model.name]
        total = sizes[model.name] + sum(sizes[member] for member in ensemble.members)
        for method in ENSEMBLE_METHODS:
            logits = {}
            for split in SCORED_SPLITS:
                members = [member_from_frame(frames[member][split], member) for member in ensemble.members]
                logits[split], aligned = apply_ensemble_logits(ensemble, members, method)
                if not np.array_equal(aligned.label_ids, label_ids[split]):  # members are in split order
                    raise DataValidationError(f"ensemble {model.name!r}: members' {split} rows out of split order")
            test_logits[f"{model.name}_{method}"] = logits["test"]
            rows.append(_row(f"{model.name}_{method}", model, method, tuple(ensemble.members), logits, label_ids,
                             labels, config, sizes[model.name], total))

    test_set_sha256 = checked.split_report["fingerprints"]["test_set_sha256"]
    payload = {
        "rows": [asdict(row) for row in rows],
        "models": [{"name": model.name, "kind": model.kind.value} for model in models],
        "labels": labels,
        "calibration_bins": config.calibration_bins,
        "test_set_sha256": test_set_sha256,
    }
    with atomic_directory(out) as staging:
        write_json(staging / COMPARISON_FILE, payload)
        (staging / TEST_LOGITS_DIR).mkdir()
        for name, values in test_logits.items():
            logits_frame(splits["test"], values.astype(np.float32), labels).to_parquet(
                staging / TEST_LOGITS_DIR / f"{name}.parquet", index=False)
        (staging / TABLE_FILE).write_text(render_markdown(rows), encoding="utf-8")
        (staging / REPORT_FILE).write_text(render_html(rows, test_set_sha256, config.calibration_bins),
                                           encoding="utf-8")
    return ComparisonResult(out, tuple(rows), test_set_sha256, tuple(labels))
