"""What a registered version records, read from the artifacts the pipeline wrote: the train stage's
``textclf_metadata.json``, the export stage's ``export_metadata.json`` and the evaluate stage's ``metrics.json``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf.errors import RegistryError
from textclf.evaluate.evaluate import METRICS_FILE as EVALUATION_METRICS
from textclf.provenance import read_json_object, sha256_file
from textclf.serving.contract import METADATA_FILE as EXPORT_METADATA
from textclf.train.train import METADATA_FILE as MODEL_METADATA
#: Registry folder of each artifact, in the order they are registered.
ARTIFACT_PARTS = ("model", "onnx_model", "evaluation")


@dataclass(frozen=True)
class ArtifactDirs:
    """The three pipeline outputs a version is registered from.

    Attributes:
        model: Train-stage output (safetensors, tokenizer, ``labels.json``, ``textclf_metadata.json``).
        onnx_model: Export-stage output (``model.onnx``, ``model.int8.onnx``, ``export_metadata.json``...).
        evaluation: Evaluate-stage output directory (``metrics.json``, predictions...).
    """

    model: Path
    onnx_model: Path
    evaluation: Path

    def __post_init__(self) -> None:
        for name in ARTIFACT_PARTS:
            object.__setattr__(self, name, Path(getattr(self, name)))

    def by_name(self) -> dict[str, Path]:
        """Registry folder name -> local directory."""
        return {name: getattr(self, name) for name in ARTIFACT_PARTS}


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        RegistryError: The file is missing or not a JSON object.
    """
    return read_json_object(path, RegistryError)


def required(payload: Mapping[str, Any], dotted_key: str, source: Path) -> Any:
    """``payload[a][b]...`` for ``dotted_key`` ``"a.b..."``.

    Raises:
        RegistryError: A key is missing; names the file and the key.
    """
    value: Any = payload
    for key in dotted_key.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise RegistryError(f"{source}: missing {dotted_key!r}")
        value = value[key]
    return value


def file_hashes(dirs: ArtifactDirs) -> dict[str, str]:
    """sha256 of every file, keyed ``<folder>/<relative path>`` (e.g. ``onnx_model/model.onnx``).

    Raises:
        RegistryError: A directory is missing or empty.
    """
    hashes = {}
    for name, directory in dirs.by_name().items():
        if not directory.is_dir():
            raise RegistryError(f"{name} artifact {directory}: not a directory")
        files = sorted(path for path in directory.rglob("*") if path.is_file())
        if not files:
            raise RegistryError(f"{name} artifact {directory}: empty directory")
        for path in files:
            hashes[f"{name}/{path.relative_to(directory).as_posix()}"] = sha256_file(path)
    return hashes


def headline_metrics(metrics: Mapping[str, Any], source: Path) -> dict[str, float]:
    """The scalar metrics a registry compares: test accuracy, macro-F1, ECE, per-class F1 and the
    train/validation numbers."""
    test = required(metrics, "test", source)
    scalars = {
        "accuracy": required(test, "accuracy", source),
        "macro_f1": required(test, "macro_f1", source),
        "expected_calibration_error": test.get("expected_calibration_error"),
        "train_accuracy": metrics.get("train_accuracy"),
        "validation_accuracy": metrics.get("validation_accuracy"),
        "train_validation_gap": metrics.get("train_validation_gap"),
    }
    scalars.update({f"f1_{label}": values["f1"] for label, values in test.get("per_class", {}).items()})
    return {name: float(value) for name, value in scalars.items() if value is not None}


def check_same_run(model_meta: Mapping[str, Any], export_meta: Mapping[str, Any], metrics: Mapping[str, Any],
                   dirs: ArtifactDirs) -> None:
    """Refuse artifacts of different runs: the evaluation and the export must be of this model.

    Raises:
        RegistryError: The test-set fingerprints or the training run keys disagree.
    """
    model_source = dirs.model / MODEL_METADATA
    run_key = required(model_meta, "training.run_key", model_source)
    model_test_set = required(model_meta, "data.fingerprints.test_set_sha256", model_source)
    metrics_source = dirs.evaluation / EVALUATION_METRICS
    if required(metrics, "test_set_sha256", metrics_source) != model_test_set:
        raise RegistryError(f"{metrics_source}: scored another test set than the model's ({model_test_set})")
    if metrics.get("model_run_key", run_key) != run_key:
        raise RegistryError(f"{metrics_source}: evaluates run {metrics['model_run_key']}, not {run_key}")
    export_source = dirs.onnx_model / EXPORT_METADATA
    if required(export_meta, "source_model.training.run_key", export_source) != run_key:
        raise RegistryError(f"{export_source}: exported from another training run than {run_key}")


def build_version_metadata(dirs: ArtifactDirs, version: str, notes: str) -> dict[str, Any]:
    """The ``metadata.json`` of a new version (everything but nothing that needs the registry).

    Args:
        dirs: The three artifact directories.
        version: The version string.
        notes: Free text from the person registering.

    Returns:
        Created time, base model, dataset fingerprints and sizes, hyper-parameters, metrics, export parity, git
        commit, notes and the sha256 of every artifact file.

    Raises:
        RegistryError: A metadata file is missing or malformed, or the artifacts come from different runs.
    """
    model_source = dirs.model / MODEL_METADATA
    model_meta = read_json_file(model_source)
    export_meta = read_json_file(dirs.onnx_model / EXPORT_METADATA)
    metrics = read_json_file(dirs.evaluation / EVALUATION_METRICS)
    check_same_run(model_meta, export_meta, metrics, dirs)
    data = required(model_meta, "data", model_source)
    return {
        "version": version,
        "created_unix": time.time(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "notes": notes,
        "base_model": required(model_meta, "base_model", model_source),
        "labels": required(model_meta, "labels", model_source),
        "hyperparameters": required(model_meta, "params", model_source),
        "training_run_key": required(model_meta, "training.run_key", model_source),
        "git_commit": model_meta.get("git_commit", "unknown"),
        "dataset": {
            "uri": data.get("dataset_uri"),
            "format": data.get("dataset_format"),
            "rows": required(data, "rows", model_source),
            "fingerprints": required(data, "fingerprints", model_source),
        },
        "test_set_sha256": metrics["test_set_sha256"],
        "metrics": headline_metrics(metrics, dirs.evaluation / EVALUATION_METRICS),
        "test_rows": metrics["test"].get("rows"),
        "export": {key: export_meta.get(key) for key in ("parity", "sizes_bytes", "spec")},
        "artifacts": file_hashes(dirs),
    }
