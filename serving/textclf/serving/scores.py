"""A served model's answers, one shape for every kind of model: probabilities and, for a cascade, the answering
stage and (stage 1 served alone) whether a text is deferred to stage 2. The cascade scores batches
(:class:`ScoredBatch`), the micro-batcher hands each request its rows (:class:`ScoredText`), the predictor stacks a
request's rows back into a :class:`ScoredBatch`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoredText:
    """One text's answer: probabilities ``[n_labels]``; for a cascade, the answering stage and (stage 1 served
    alone) whether it defers the text to stage 2."""

    probabilities: np.ndarray
    stage: int | None = None
    deferred: bool | None = None


@dataclass(frozen=True)
class ScoredBatch:
    """Answers of several texts, stacked: probabilities ``[n, k]``, stages ``[n]`` or None, deferred ``[n]`` or
    None."""

    probabilities: np.ndarray
    stages: np.ndarray | None = None
    deferred: np.ndarray | None = None

    @classmethod
    def stack(cls, rows: Sequence[ScoredText]) -> ScoredBatch:
        """The rows of one request, stacked."""
        stages = None if rows[0].stage is None else np.array([row.stage for row in rows], dtype=np.int64)
        deferred = None if rows[0].deferred is None else np.array([row.deferred for row in rows], dtype=bool)
        return cls(np.stack([row.probabilities for row in rows]), stages, deferred)

    def rows(self) -> list[ScoredText]:
        """One :class:`ScoredText` per text (the inverse of :meth:`stack`)."""
        n = len(self.probabilities)
        stages = [None] * n if self.stages is None else self.stages.tolist()
        deferred = [None] * n if self.deferred is None else self.deferred.tolist()
        return [ScoredText(row, stage, defer) for row, stage, defer in zip(self.probabilities, stages, deferred,
                                                                            strict=True)]
