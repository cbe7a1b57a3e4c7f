"""The export bundle as the serving side sees it: labels, max length, tokenizer, model version, temperature.

Reads only JSON and the tokenizer file; needs neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from textclf.serving.config import Precision
from textclf.provenance import read_json_object, sha256_file
from textclf.serving.contract import (
    CASCADE_FILE,
    CLASSICAL_METADATA_FILE,
    LABELS_FILE,
    METADATA_FILE,
    TEMPERATURE_KEY,
    TOKENIZER_FILE,
    temperature_problem,
)
from textclf.text import NORMALISATION_VERSION, TextProfile, text_profile_of


class BundleError(ValueError):
    """The export bundle is missing, incomplete or incompatible with this server."""


class BundleKind(str, Enum):
    """What a model directory holds, told by its marker file (:data:`BUNDLE_MARKERS`)."""

    #: The export stage's bundle: ONNX graphs, tokenizer (:class:`ExportBundle`).
    TRANSFORMER = "transformer"
    #: The classical stage's TF-IDF linear model (:mod:`textclf.serving.classical`).
    CLASSICAL = "classical"
    #: Two stages and a confidence threshold (:mod:`textclf.serving.cascade`).
    CASCADE = "cascade"


#: The file that marks each bundle kind, looked for in this order.
BUNDLE_MARKERS: dict[BundleKind, str] = {
    BundleKind.CASCADE: CASCADE_FILE,
    BundleKind.CLASSICAL: CLASSICAL_METADATA_FILE,
    BundleKind.TRANSFORMER: METADATA_FILE,
}


def bundle_kind(root: str | Path) -> BundleKind:
    """Which kind of bundle ``root`` is.

    Raises:
        BundleError: ``root`` is not a directory, or holds none of the marker files.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: model directory not found")
    for kind, marker in BUNDLE_MARKERS.items():
        if (root / marker).is_file():
            return kind
    raise BundleError(
        f"{root}: not a model bundle: none of {', '.join(BUNDLE_MARKERS.values())} found (an export bundle, a "
        "classical model or a cascade bundle)"
    )


@dataclass(frozen=True)
class ExportBundle:
    """What the predictor and the transformer read from an export bundle.

    Attributes:
        root: The bundle directory.
        labels: Class names in label-id order.
        max_length: Token limit the model was trained with; longer inputs are truncated.
        git_commit: Commit of the training code (``"unknown"`` when not recorded).
        file_sha256: ONNX file name -> sha256, as recorded by the export stage.
        temperature: Calibration temperature ``T`` from the metadata's ``temperature`` (fitted on the validation
            split): the served probabilities are ``softmax(logits / T)``; 1.0 when the bundle has none.
        text_profile: The text normalisation profile the model was trained with (metadata ``text_profile``;
            ``news`` when absent), applied to every request.
    """

    root: Path
    labels: tuple[str, ...]
    max_length: int
    git_commit: str
    file_sha256: dict[str, str]
    temperature: float = 1.0
    text_profile: TextProfile = TextProfile.NEWS

    def onnx_path(self, precision: Precision) -> Path:
        """Path of the ONNX model for ``precision``.

        Args:
            precision: fp32 or INT8.

        Returns:
            The model file inside the bundle.

        Raises:
            BundleError: The file is missing, or its sha256 is not the one the export stage recorded in
                ``export_metadata.json`` (a truncated, corrupted or swapped file is never loaded).
        """
        path = self.root / precision.onnx_file
        if not path.is_file():
            raise BundleError(
                f"{self.root}: {precision.onnx_file} not found (needed for --precision {precision.value})"
            )
        recorded = self.file_sha256.get(precision.onnx_file)
        if recorded:
            actual = sha256_file(path)
            if actual != recorded:
                raise BundleError(
                    f"{path}: sha256 {actual[:16]}... is not the {recorded[:16]}... recorded in {METADATA_FILE}; "
                    "the file is truncated, corrupted or not the exported one: download or re-export the bundle"
                )
        return path

    def model_version(self, precision: Precision) -> str:
        """A stable identifier of the served model: training commit and ONNX file hash.

        Args:
            precision: fp32 or INT8.

        Returns:
            ``"<git commit[:12]>-<sha256[:12]> of the ONNX file"``.
        """
        digest = self.file_sha256.get(precision.onnx_file, "unknown")
        return f"{self.git_commit[:12]}-{digest[:12]}"

    def load_tokenizer(self) -> Tokenizer:
        """The bundle's fast tokenizer, truncating to :attr:`max_length`, without padding.

        Returns:
            A ``tokenizers.Tokenizer``.
        """
        tokenizer = Tokenizer.from_file(str(self.root / TOKENIZER_FILE))
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.no_padding()
        return tokenizer


def read_bundle_json(path: Path) -> dict[str, Any]:
    """A bundle's JSON object file; :class:`BundleError` naming the file when it is missing, not JSON or not an
    object."""
    return read_json_object(path, BundleError, "this a model bundle")


def checked_labels(labels: Any, path: Path) -> tuple[str, ...]:
    """A bundle's class names, in label-id order.

    Raises:
        BundleError: Not a non-empty list of strings, naming ``path``.
    """
    if not labels or not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise BundleError(f"{path}: expected {{\"labels\": [names...]}}")
    return tuple(labels)


def check_normalisation(metadata: dict[str, Any], root: Path, remedy: str) -> None:
    """Refuse a bundle trained with another text normalisation than this server applies.

    Raises:
        BundleError: The metadata's ``normalisation_version`` differs, naming both versions and ``remedy``.
    """
    version = str(metadata.get("normalisation_version"))
    if version != NORMALISATION_VERSION:
        raise BundleError(
            f"{root}: model was trained with text normalisation version {version}, this server applies version "
            f"{NORMALISATION_VERSION}; {remedy} or serve it with the matching textclf release"
        )


def checked_text_profile(metadata: dict[str, Any], root: Path) -> TextProfile:
    """A bundle's text profile (``news`` when it names none).

    Raises:
        BundleError: An unknown profile, naming the known ones.
    """
    try:
        return text_profile_of(metadata)
    except ValueError as exc:
        raise BundleError(f"{root}: {exc}; re-export the model with this textclf release") from None


def metadata_temperature(metadata: dict[str, Any], path: Path) -> float:
    """A bundle metadata's calibration temperature (:data:`TEMPERATURE_KEY`); 1.0 when it has none.

    Raises:
        BundleError: The value is not a finite number > 0.
    """
    if TEMPERATURE_KEY not in metadata:
        return 1.0
    value = metadata[TEMPERATURE_KEY]
    problem = temperature_problem(value)
    if problem:
        raise BundleError(
            f"{path}: {TEMPERATURE_KEY!r} {problem} (the calibration temperature T of softmax(logits / T)); "
            "re-export the model, or remove the key to serve it uncalibrated"
        )
    return float(value)


def load_bundle(root: str | Path) -> ExportBundle:
    """Read and check an export bundle's metadata, labels and tokenizer file.

    Args:
        root: The export stage's output directory.

    Returns:
        The bundle description.

    Raises:
        BundleError: The directory or a required file is missing, the bundle was trained with a different text
            normalisation than this server applies, or its temperature is not a finite number > 0.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: model directory not found")
    metadata = read_bundle_json(root / METADATA_FILE)
    labels = read_bundle_json(root / LABELS_FILE).get("labels")
    if not (root / TOKENIZER_FILE).is_file():
        raise BundleError(f"{root}: {TOKENIZER_FILE} not found")
    labels = checked_labels(labels, root / LABELS_FILE)
    check_normalisation(metadata, root, "re-train/export the model")
    return ExportBundle(
        root=root,
        labels=labels,
        max_length=int(metadata["max_length"]),
        git_commit=str(metadata.get("source_model", {}).get("git_commit") or "unknown"),
        file_sha256=dict(metadata.get("files", {})),
        temperature=metadata_temperature(metadata, root / METADATA_FILE),
        text_profile=checked_text_profile(metadata, root),
    )


def fetch_bundle(model_uri: str, cache_dir: str | Path) -> Path:
    """A local copy of the export bundle at ``model_uri``.

    A path or ``file://`` URI is returned as it is; an ``s3://`` / ``gs://`` prefix is downloaded (through
    :mod:`textclf.storage`, settings from the environment: ``AWS_*`` / ``S3_*``, ``STORAGE_EMULATOR_HOST``) into
    ``cache_dir/<sha256 of the URI>``, atomically, once: a restarted server reuses the download.

    Args:
        model_uri: Bundle location.
        cache_dir: Where downloads go.

    Returns:
        The local bundle directory (not yet checked: see :func:`load_bundle`).

    Raises:
        BundleError: A malformed URI, or nothing at a remote URI, or an unreadable store.
    """
    import hashlib

    from textclf.errors import StorageError
    from textclf.storage import download, is_remote, local_path

    try:
        if not is_remote(model_uri):
            return local_path(model_uri)
        target = Path(cache_dir) / hashlib.sha256(model_uri.encode("utf-8")).hexdigest()[:16]
        if not target.is_dir():  # download() creates it atomically: present means complete
            download(model_uri, target)
        return target
    except StorageError as exc:
        raise BundleError(f"cannot fetch the model bundle {model_uri}: {exc}") from exc
