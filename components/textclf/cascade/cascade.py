"""Cascade stage: two served models and a confidence threshold chosen on the validation split, as one bundle.

Stage 1 (a classical bundle or a small transformer's export bundle) answers the texts whose calibrated top
probability is at least the threshold; stage 2 (a transformer's export bundle) answers the rest
(:mod:`textclf.serving.cascade`, the rule the server applies). Both stages score the validation split here through
the server's own loader (:func:`textclf.serving.models.load_served_model`: same normalisation, tokenizer, ONNX
precision, temperatures), so the numbers recorded are the served model's. The threshold is the one with the lowest
stage-2 share whose validation accuracy is within ``accuracy_tolerance`` of stage 2 alone
(:func:`choose_threshold`), unless the configuration fixes it.

Output, written atomically: :data:`~textclf.serving.contract.CASCADE_FILE` (threshold, what stage 2 returns,
labels, the selection and its validation numbers) and the two stage bundles, copied into
:data:`~textclf.serving.contract.CASCADE_STAGE_DIRS`. The test split is not read.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textclf.config import CascadeConfig
from textclf.errors import DataValidationError
from textclf.provenance import atomic_directory, git_commit, read_json, write_json
from textclf.serving.bundle import BundleError, BundleKind, bundle_kind
from textclf.serving.cascade import CascadeSpec, Stage2Returns, cascade_probabilities, combine, read_cascade_spec
from textclf.serving.config import Precision
from textclf.serving.contract import CASCADE_FILE, CASCADE_STAGE_DIRS, LABELS_FILE
from textclf.serving.models import load_served_model
from textclf.validate.validate import read_split

log = logging.getLogger(__name__)

#: Thresholds reported in the selection's table (besides the chosen one), to show the trade-off.
REPORTED_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


@dataclass(frozen=True)
class CascadeResult:
    """Where the bundle was written and its spec (with the selection record)."""

    output_dir: Path
    spec: CascadeSpec


def score_stage(bundle_dir: str | Path, texts: list[str], precision: Precision, batch_size: int,
                ) -> tuple[tuple[str, ...], np.ndarray]:
    """A bundle's labels and calibrated probabilities of ``texts``, computed as the server computes them.

    Args:
        bundle_dir: A transformer or classical bundle.
        texts: Raw texts.
        precision: ONNX precision of a transformer bundle.
        batch_size: Texts per run.

    Returns:
        The labels and float32 ``[len(texts), n_labels]``.

    Raises:
        textclf.serving.bundle.BundleError: The bundle does not load.
    """
    served = load_served_model(bundle_dir, precision, intra_op_threads=_threads(), max_group_size=batch_size,
                               warmup_rounds=0)
    rows = []
    for start in range(0, len(texts), batch_size):
        rows.extend(scored.probabilities for scored in served.score(texts[start:start + batch_size]))
    return served.labels, np.stack(rows).astype(np.float32)


def _threads() -> int:
    from textclf.serving.config import default_intra_op_threads

    return default_intra_op_threads()


def _summary(stage1: np.ndarray, stage2: np.ndarray, ids: np.ndarray, threshold: float,
             returns: Stage2Returns, z: float = 0.0) -> dict[str, float]:
    """The cascade at ``threshold`` on these rows: stage-2 share, accuracy, the accuracy loss against stage 2 alone
    and its upper confidence bound (``z`` standard errors above)."""
    answers, stages = cascade_probabilities(stage1, stage2, threshold, returns)
    by_stage1 = stages == 1
    correct = answers.argmax(-1) == ids
    differences = (stage2.argmax(-1) == ids).astype(np.float64) - correct
    spread = float(differences.std(ddof=1)) if len(ids) > 1 else 0.0
    return {
        "threshold": float(threshold),
        "stage2_share": float((~by_stage1).mean()),
        "accuracy": float(correct.mean()),
        "stage1_part_accuracy": float(correct[by_stage1].mean()) if by_stage1.any() else float("nan"),
        "accuracy_loss": float(differences.mean()),
        "accuracy_loss_upper_bound": float(differences.mean() + z * spread / np.sqrt(len(ids))),
    }


def choose_threshold(stage1: np.ndarray, stage2: np.ndarray, ids: np.ndarray, config: CascadeConfig,
                     ) -> tuple[float, dict[str, Any]]:
    """The cascade's threshold on validation rows, and the numbers that justify it.

    Candidates are the distinct stage-1 confidences in (0, 1) (a threshold between two of them changes nothing).
    For each, the cascade answers as the server does (:func:`textclf.serving.cascade.cascade_probabilities`), and
    its accuracy loss against stage 2 alone is the mean of the paired per-row differences ``d_i = [stage 2 right] -
    [cascade right]`` (non-zero only where stage 1 answers, or where an average differs from stage 2). The chosen
    threshold has the lowest stage-2 share whose **upper confidence bound** on that loss, ``mean(d) + z *
    sd(d) / sqrt(n)`` with ``z`` the one-sided normal quantile of ``config.confidence``, is at most
    ``config.accuracy_tolerance``: a small validation split cannot hand stage 1 texts on a difference of a few
    rows. ``confidence = 0.5`` (``z = 0``) compares the point estimates. A fixed ``config.threshold`` is used as
    given.

    Args:
        stage1: Stage 1's validation probabilities ``[n, k]``.
        stage2: Stage 2's ``[n, k]``.
        ids: True label ids ``[n]``.
        config: Tolerance, confidence, what stage 2 returns, an optional fixed threshold.

    Returns:
        The threshold and the selection record: rule, the stage accuracies alone, the chosen point (with its loss
        and the bound), a table at :data:`REPORTED_THRESHOLDS`.

    Raises:
        DataValidationError: No rows, or shapes that do not match.
    """
    from scipy.stats import norm

    if len(ids) == 0 or stage1.shape != stage2.shape or stage1.shape[0] != len(ids):
        raise DataValidationError(
            f"cascade: stage probabilities {stage1.shape} and {stage2.shape} and {len(ids)} labels do not match"
        )
    returns = Stage2Returns(config.stage2_returns)
    z = float(norm.ppf(config.confidence))
    n = len(ids)
    stage2_accuracy = float((stage2.argmax(-1) == ids).mean())
    if config.threshold:
        threshold = float(config.threshold)
        rule = "fixed by the configuration"
    else:
        # Texts sorted by stage-1 confidence, most confident first: a threshold equal to the i-th confidence lets
        # stage 1 answer the first i+1 (ties together), so every candidate's differences are cumulative sums.
        confidence = stage1.max(-1).astype(np.float32)
        order = np.argsort(-confidence, kind="stable")
        right2 = (stage2.argmax(-1) == ids)[order].astype(np.float64)
        answered_diff = right2 - (stage1.argmax(-1) == ids)[order]           # d_i where stage 1 answers
        other_diff = right2 - (combine(stage1, stage2, returns).argmax(-1) == ids)[order]  # d_i elsewhere
        sorted_confidence = confidence[order]
        last = np.flatnonzero(np.r_[sorted_confidence[1:] != sorted_confidence[:-1], True])
        total = np.cumsum(answered_diff)[last] + (other_diff.sum() - np.cumsum(other_diff)[last])
        squares = np.cumsum(answered_diff ** 2)[last] + ((other_diff ** 2).sum() - np.cumsum(other_diff ** 2)[last])
        loss = total / n
        variance = np.maximum(squares / n - loss ** 2, 0.0) * n / max(n - 1, 1)
        bound = loss + z * np.sqrt(variance / n)
        candidates = sorted_confidence[last]
        usable = (candidates > 0) & (candidates < 1) & (bound <= config.accuracy_tolerance + 1e-12)
        if usable.any():
            best = int(np.flatnonzero(usable)[np.argmax((last + 1)[usable])])
            threshold = float(candidates[best])
            rule = (f"lowest stage-2 share whose {config.confidence:g} upper confidence bound on the validation "
                    f"accuracy loss against stage 2 alone is <= {config.accuracy_tolerance:g}")
        else:
            threshold = float(np.nextafter(np.float32(min(float(confidence.max()), 1.0 - 1e-6)), np.float32(1)))
            rule = "no threshold keeps the accuracy within the tolerance: stage 2 answers (nearly) everything"
            log.warning("cascade: %s", rule)
    chosen = _summary(stage1, stage2, ids, threshold, returns, z)
    selection = {
        "rule": rule,
        "accuracy_tolerance": config.accuracy_tolerance,
        "confidence": config.confidence,
        "validation_rows": int(n),
        "stage1_accuracy": float((stage1.argmax(-1) == ids).mean()),
        "stage2_accuracy": stage2_accuracy,
        "chosen": chosen,
        "table": [_summary(stage1, stage2, ids, value, returns, z) for value in REPORTED_THRESHOLDS],
    }
    return threshold, selection


def _check_stage(path: Path, number: int) -> BundleKind:
    try:
        kind = bundle_kind(path)
    except BundleError as exc:
        raise DataValidationError(f"cascade stage {number}: {exc}") from exc
    if kind is BundleKind.CASCADE:
        raise DataValidationError(f"cascade stage {number}: {path} is itself a cascade bundle")
    return kind


def build_cascade(
    stage1_dir: str | Path, stage2_dir: str | Path, split_dir: str | Path, config: CascadeConfig,
    output_dir: str | Path, precision: Precision = Precision.INT8,
) -> CascadeResult:
    """Score the validation split with both stages, choose the threshold, write the cascade bundle.

    Args:
        stage1_dir: The cheap stage: a classical bundle (the classical stage's model) or an export bundle.
        stage2_dir: The transformer's export bundle.
        split_dir: Output of the validate/split stage (only its validation split and labels are read).
        config: How the threshold is chosen.
        output_dir: Directory to create for the bundle.
        precision: The ONNX precision the server will run (the validation numbers are measured with it).

    Returns:
        The bundle's location and spec.

    Raises:
        DataValidationError: A stage is missing, is not a transformer or classical bundle, fails to load, or the
            stages' labels differ from each other or from the split's.
    """
    stage1_dir, stage2_dir, split_dir = Path(stage1_dir), Path(stage2_dir), Path(split_dir)
    kinds = [_check_stage(stage1_dir, 1), _check_stage(stage2_dir, 2)]
    labels: list[str] = read_json(split_dir / LABELS_FILE)["labels"]
    frame, ids = read_split(split_dir, "validation", labels)
    texts = frame["text"].tolist()
    probabilities = []
    for number, directory in ((1, stage1_dir), (2, stage2_dir)):
        try:
            served_labels, scored = score_stage(directory, texts, precision, config.batch_size)
        except BundleError as exc:
            raise DataValidationError(f"cascade stage {number}: {exc}") from exc
        if list(served_labels) != labels:
            raise DataValidationError(
                f"cascade stage {number}: {directory} has labels {list(served_labels)}, the split {labels}; "
                "both stages must classify into the split's label set, in its order"
            )
        probabilities.append(scored)
    threshold, selection = choose_threshold(probabilities[0], probabilities[1], np.asarray(ids), config)
    selection.update({"precision": precision.value, "stage_kinds": [kind.value for kind in kinds],
                      "config": asdict(config), "git_commit": git_commit()})
    spec = CascadeSpec(threshold=threshold, stage2_returns=Stage2Returns(config.stage2_returns),
                       labels=tuple(labels), selection=selection)
    with atomic_directory(output_dir) as staging:
        for directory, name in zip((stage1_dir, stage2_dir), CASCADE_STAGE_DIRS, strict=True):
            shutil.copytree(directory, staging / name)
        write_json(staging / CASCADE_FILE, spec.to_json())
    chosen = selection["chosen"]
    log.info("cascade written to %s: threshold %.4f, stage 2 answers %.1f%% of validation, accuracy %.4f "
             "(stage 2 alone %.4f)", output_dir, threshold, 100 * chosen["stage2_share"], chosen["accuracy"],
             selection["stage2_accuracy"])
    return CascadeResult(Path(output_dir), read_cascade_spec(output_dir))
