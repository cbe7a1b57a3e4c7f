"""Loading whatever a model directory holds (transformer, classical or cascade bundle) as one served model.

:func:`load_served_model` tells the bundle's kind from its marker file (:func:`textclf.serving.bundle.bundle_kind`),
loads and warms up its models and returns a :class:`ServedModel`: its labels, its version and one ``score`` function
that the predictor's micro-batcher calls, and one ``explain`` function for ``:explain``
(:mod:`textclf.serving.explain`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textclf.serving.bundle import BundleError, BundleKind, bundle_kind, load_bundle
from textclf.serving.cascade import CascadeClassifier, ProbabilityModel, read_cascade_spec
from textclf.serving.config import Precision
from textclf.serving.contract import CASCADE_FILE, CASCADE_STAGE_DIRS
from textclf.serving.explain import CascadeExplainer, Explanation, OcclusionExplainer, occlusion_model_for
from textclf.serving.scores import ScoredText


@dataclass(frozen=True)
class ServedModel:
    """A loaded, warmed-up model of any bundle kind.

    Attributes:
        kind: The bundle's kind.
        labels: Class names in label-id order.
        model_version: Identifier of the served model (the request log and responses carry it).
        score: Raw texts in, one :class:`ScoredText` per text out (called in the batcher's worker thread).
        cascade: Whether answers carry the answering stage (a cascade bundle).
        stage: The one stage served (``--cascade-stage``), or None.
        explain: Raw texts and the most tokens per text in, one occlusion :class:`Explanation` per text out (called
            in the predictor's explanation thread); raises ``InvalidInput`` for a text over the limit. None: this
            model cannot explain.
    """

    kind: BundleKind
    labels: tuple[str, ...]
    model_version: str
    score: Callable[[list[str]], list[ScoredText]]
    cascade: bool = False
    stage: int | None = None
    explain: Callable[[list[str], int], list[Explanation]] | None = None


@dataclass(frozen=True)
class _Stage:
    labels: tuple[str, ...]
    model_version: str
    model: ProbabilityModel


def _load_single(
    root: Path, kind: BundleKind, precision: Precision, intra_op_threads: int, max_group_size: int, warmup: int
) -> _Stage:
    if kind is BundleKind.TRANSFORMER:
        from textclf.serving.engine import OnnxTextClassifier

        bundle = load_bundle(root)
        model = OnnxTextClassifier.from_bundle(bundle, precision, intra_op_threads, max_group_size, warmup)
        return _Stage(bundle.labels, bundle.model_version(precision), model)
    if kind is BundleKind.CLASSICAL:
        from textclf.serving.classical import ClassicalTextClassifier, load_classical_bundle

        classical = load_classical_bundle(root)
        return _Stage(classical.labels, classical.model_version, ClassicalTextClassifier.from_bundle(classical, warmup))
    raise BundleError(f"{root}: a cascade stage must be a transformer or classical bundle, not a {kind.value} bundle")


def _plain(stage: _Stage) -> Callable[[list[str]], list[ScoredText]]:
    def score(texts: list[str]) -> list[ScoredText]:
        return [ScoredText(row) for row in stage.model.probabilities(texts)]

    return score


def bundle_labels(root: str | Path) -> tuple[str, ...]:
    """The class names of the bundle at ``root``, of any kind, read from its JSON files alone (no model loaded).

    Raises:
        BundleError: Not a bundle, or its files are malformed.
    """
    root = Path(root)
    kind = bundle_kind(root)
    if kind is BundleKind.CASCADE:
        return read_cascade_spec(root).labels
    if kind is BundleKind.CLASSICAL:
        from textclf.serving.classical import load_classical_bundle

        return load_classical_bundle(root).labels
    return load_bundle(root).labels


def load_served_model(
    root: str | Path, precision: Precision, intra_op_threads: int, max_group_size: int, warmup_rounds: int,
    cascade_stage: int | None = None,
) -> ServedModel:
    """Load the bundle at ``root`` (a local directory) for serving.

    Args:
        root: Transformer, classical or cascade bundle.
        precision: ONNX precision of its transformer model(s).
        intra_op_threads: ONNX Runtime threads per run.
        max_group_size: Most texts per transformer run.
        warmup_rounds: Warm-up rounds per model before it is ready.
        cascade_stage: Serve only this stage (1 or 2) of a cascade bundle, as a stage of a KServe InferenceGraph;
            None serves the whole cascade (or a bundle of another kind).

    Returns:
        The served model.

    Raises:
        BundleError: The bundle is missing, malformed or incompatible; a cascade stage is missing, is itself a
            cascade, or has other labels than the cascade; ``cascade_stage`` is set for a bundle that is not a
            cascade, or is not 1 or 2.
    """
    root = Path(root)
    kind = bundle_kind(root)
    if kind is not BundleKind.CASCADE:
        if cascade_stage is not None:
            raise BundleError(f"{root}: --cascade-stage needs a cascade bundle ({CASCADE_FILE}), this is a "
                              f"{kind.value} bundle")
        stage = _load_single(root, kind, precision, intra_op_threads, max_group_size, warmup_rounds)
        return ServedModel(kind, stage.labels, stage.model_version, _plain(stage),
                           explain=OcclusionExplainer(occlusion_model_for(stage.model, max_group_size)))
    if cascade_stage not in (None, 1, 2):
        raise BundleError(f"--cascade-stage must be 1 or 2, got {cascade_stage!r}")
    spec = read_cascade_spec(root)
    stages = []
    for number, name in enumerate(CASCADE_STAGE_DIRS, start=1):
        directory = root / name
        try:
            stage_kind = bundle_kind(directory)
            if stage_kind is BundleKind.CASCADE:
                raise BundleError(f"{directory}: a cascade stage must be a transformer or classical bundle, not "
                                  "another cascade")
            loaded = _load_single(directory, stage_kind, precision, intra_op_threads, max_group_size, warmup_rounds)
        except BundleError as exc:
            raise BundleError(f"cascade stage {number}: {exc}") from exc
        if loaded.labels != spec.labels:
            raise BundleError(
                f"{root}: cascade stage {number} ({name}/) has labels {list(loaded.labels)}, the cascade "
                f"{list(spec.labels)}; both stages must classify into the same label set, in the same order"
            )
        stages.append(loaded)
    cascade = CascadeClassifier(stages[0].model, stages[1].model, spec)
    digest = hashlib.sha256((root / CASCADE_FILE).read_bytes())
    for stage in stages:
        digest.update(stage.model_version.encode("utf-8"))
    occlusions = [occlusion_model_for(stage.model, max_group_size) for stage in stages]
    if cascade_stage is None:
        return ServedModel(kind, spec.labels, f"cascade-{digest.hexdigest()[:12]}",
                           lambda texts: cascade.score(texts).rows(), cascade=True,
                           explain=CascadeExplainer(cascade, *occlusions))
    chosen = stages[cascade_stage - 1]
    return ServedModel(kind, spec.labels, chosen.model_version,
                       lambda texts: cascade.score_stage(cascade_stage, texts).rows(), cascade=True,
                       stage=cascade_stage, explain=OcclusionExplainer(occlusions[cascade_stage - 1], cascade_stage))
