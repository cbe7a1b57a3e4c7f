"""The confidence cascade: a cheap stage 1 answers the texts it is sure of, stage 2 answers the rest.

One rule, used offline (the cascade component choosing the threshold on the validation split) and online (the
server): a text is answered by stage 1 when stage 1's calibrated top probability is at least the threshold
(:func:`stage1_answers`); otherwise stage 2 answers, returning its own probabilities or their average with
stage 1's (:class:`Stage2Returns`, :func:`combine`). The cascade bundle's :data:`~textclf.serving.contract.CASCADE_FILE`
is :class:`CascadeSpec`'s JSON; its stage directories (:data:`~textclf.serving.contract.CASCADE_STAGE_DIRS`) are
complete transformer or classical bundles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from textclf.serving.bundle import BundleError, read_bundle_json
from textclf.serving.contract import CASCADE_FILE, CASCADE_STAGE_DIRS
from textclf.serving.scores import ScoredBatch
from textclf.text import NORMALISATION_VERSION

#: :data:`CASCADE_FILE`'s format; a server refuses other versions.
CASCADE_FORMAT_VERSION = 1


class Stage2Returns(str, Enum):
    """What the cascade answers for a text stage 1 is not sure of."""

    #: Stage 2's own probabilities.
    STAGE2 = "stage2"
    #: The mean of stage 1's and stage 2's probabilities.
    AVERAGE = "average"


class ProbabilityModel(Protocol):
    """A loaded stage: raw texts in, calibrated probabilities ``[n, n_labels]`` out."""

    def probabilities(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class CascadeSpec:
    """The cascade bundle's :data:`CASCADE_FILE`.

    Attributes:
        threshold: Stage 1 answers a text when its top probability is ``>= threshold``; in (0, 1).
        stage2_returns: What is answered for the other texts.
        labels: Class names in label-id order (both stages must have exactly these).
        normalisation_version: The text normalisation both stages were trained with.
        selection: How the threshold was chosen and the validation numbers that justified it (recorded, not read).
        format_version: :data:`CASCADE_FORMAT_VERSION`.
    """

    threshold: float
    stage2_returns: Stage2Returns
    labels: tuple[str, ...]
    normalisation_version: str = NORMALISATION_VERSION
    selection: dict[str, Any] = field(default_factory=dict)
    format_version: int = CASCADE_FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as :data:`CASCADE_FILE`."""
        return {
            "format_version": self.format_version,
            "threshold": self.threshold,
            "stage2_returns": self.stage2_returns.value,
            "labels": list(self.labels),
            "normalisation_version": self.normalisation_version,
            "stages": list(CASCADE_STAGE_DIRS),
            "selection": self.selection,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any], source: Path | str) -> CascadeSpec:
        """Parse and check :data:`CASCADE_FILE`'s object.

        Raises:
            BundleError: A field is missing or out of range, naming it and ``source``.
        """
        version = payload.get("format_version")
        if version != CASCADE_FORMAT_VERSION:
            raise BundleError(f"{source}: format_version {version!r}, this server reads {CASCADE_FORMAT_VERSION}")
        threshold = payload.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
                or not 0.0 < threshold < 1.0:
            raise BundleError(f"{source}: 'threshold' must be a number in (0, 1), got {threshold!r}")
        try:
            returns = Stage2Returns(payload.get("stage2_returns"))
        except ValueError:
            raise BundleError(
                f"{source}: 'stage2_returns' must be one of {[r.value for r in Stage2Returns]}, "
                f"got {payload.get('stage2_returns')!r}"
            ) from None
        labels = payload.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
            raise BundleError(f"{source}: 'labels' must be a non-empty list of class names")
        selection = payload.get("selection") or {}
        return cls(
            threshold=float(threshold), stage2_returns=returns, labels=tuple(labels),
            normalisation_version=str(payload.get("normalisation_version")),
            selection=selection if isinstance(selection, dict) else {}, format_version=version,
        )


def read_cascade_spec(root: str | Path) -> CascadeSpec:
    """The checked spec of the cascade bundle at ``root`` (its stage directories are checked by their loaders).

    Raises:
        BundleError: :data:`CASCADE_FILE` is missing or malformed, a stage directory is missing, or the cascade was
            built for another text normalisation than this server applies.
    """
    root = Path(root)
    spec = CascadeSpec.from_json(read_bundle_json(root / CASCADE_FILE), root / CASCADE_FILE)
    if spec.normalisation_version != NORMALISATION_VERSION:
        raise BundleError(
            f"{root}: cascade built for text normalisation version {spec.normalisation_version}, this server "
            f"applies version {NORMALISATION_VERSION}"
        )
    for number, name in enumerate(CASCADE_STAGE_DIRS, start=1):
        if not (root / name).is_dir():
            raise BundleError(f"{root}: stage {number} missing: no {name}/ directory in the cascade bundle")
    return spec


def stage1_answers(stage1_probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Which texts stage 1 answers: top probability ``>= threshold``. bool ``[n]``."""
    return stage1_probabilities.max(axis=-1) >= np.float32(threshold)


def combine(stage1_rows: np.ndarray, stage2_rows: np.ndarray, returns: Stage2Returns) -> np.ndarray:
    """The answer for texts stage 2 was asked about: its probabilities, or the mean with stage 1's (float32)."""
    if returns is Stage2Returns.AVERAGE:
        return ((stage1_rows.astype(np.float32) + stage2_rows.astype(np.float32)) / 2).astype(np.float32)
    return stage2_rows.astype(np.float32)


def cascade_probabilities(
    stage1: np.ndarray, stage2: np.ndarray, threshold: float, returns: Stage2Returns
) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's answers when both stages' probabilities are known for every text (offline).

    Args:
        stage1: Stage 1's probabilities ``[n, k]``.
        stage2: Stage 2's probabilities ``[n, k]``.
        threshold: Stage 1's confidence threshold.
        returns: What stage 2 answers.

    Returns:
        Probabilities ``[n, k]`` and the answering stage per text (int ``[n]``: 1 or 2), as the server answers.
    """
    by_stage1 = stage1_answers(stage1, threshold)
    answers = np.where(by_stage1[:, None], stage1.astype(np.float32), combine(stage1, stage2, returns))
    return answers.astype(np.float32), np.where(by_stage1, 1, 2)


class CascadeClassifier:
    """Runs stage 1 on the whole batch and stage 2 only on the texts stage 1 is not sure of.

    Args:
        stage1: Stage 1 (calibrated).
        stage2: Stage 2 (calibrated).
        spec: Threshold and what stage 2 returns.
    """

    def __init__(self, stage1: ProbabilityModel, stage2: ProbabilityModel, spec: CascadeSpec):
        self.stage1 = stage1
        self.stage2 = stage2
        self.spec = spec

    def score(self, texts: Sequence[str]) -> ScoredBatch:
        """The cascade's answers for ``texts`` (at least one); equal to :func:`cascade_probabilities` on the same
        stage outputs."""
        texts = list(texts)
        first = self.stage1.probabilities(texts).astype(np.float32)
        by_stage1 = stage1_answers(first, self.spec.threshold)
        answers = first.copy()
        deferred = np.flatnonzero(~by_stage1)
        if deferred.size:
            second = self.stage2.probabilities([texts[index] for index in deferred.tolist()])
            answers[deferred] = combine(first[deferred], second, self.spec.stage2_returns)
        return ScoredBatch(answers, np.where(by_stage1, 1, 2))

    def score_stage(self, stage: int, texts: Sequence[str]) -> ScoredBatch:
        """One stage alone (a stage of a KServe InferenceGraph): stage 1 also says which texts it defers.

        Args:
            stage: 1 or 2.
            texts: The texts.
        """
        texts = list(texts)
        if stage == 1:
            first = self.stage1.probabilities(texts).astype(np.float32)
            deferred = ~stage1_answers(first, self.spec.threshold)
            return ScoredBatch(first, np.ones(len(texts), dtype=np.int64), deferred)
        second = self.stage2.probabilities(texts).astype(np.float32)
        return ScoredBatch(second, np.full(len(texts), 2, dtype=np.int64))
