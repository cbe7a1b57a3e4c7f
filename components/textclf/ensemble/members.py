"""Member logits: a transformer's logits on the train and validation splits, and an ensemble's on any split.

Every member of an ensemble, and every teacher of a student, hands its signal on as a logits directory in one
layout (``LOGITS_FILES[split]`` of :mod:`textclf.classical.classical`, frames made by its ``logits_frame``:
``row``, ``label``, ``logit_<label>``, ``p_<label>``). The classical stage writes its own; a fine-tuned transformer's
come from :func:`write_transformer_logits`; an ensemble's, the log of its probabilities (softmax-invariant, so they
are logits of the same distribution), from :func:`write_ensemble_logits`. Computed once and stored as an artifact,
so a killed student run resumes without running its teacher again. The test split is not read here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from textclf.classical.classical import LOGITS_FILES, logits_frame
from textclf.errors import DataValidationError
from textclf.provenance import atomic_directory, read_json
from textclf.serving.contract import LABELS_FILE
from textclf.validate.validate import SPLIT_FILES

log = logging.getLogger(__name__)

#: The splits a training-side member writes logits for (never the test split).
TRAINING_SPLITS = ("train", "validation")


def _check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    bad = [split for split in splits if split not in TRAINING_SPLITS]
    if bad or not splits:
        raise DataValidationError(
            f"member logits are written for {list(TRAINING_SPLITS)} only (the test split is the evaluate stage's), "
            f"got {list(splits)}"
        )
    return tuple(splits)


def write_transformer_logits(
    model_dir: str | Path, split_dir: str | Path, output_dir: str | Path,
    splits: Sequence[str] = TRAINING_SPLITS, batch_size: int = 64,
) -> dict[str, int]:
    """Write a fine-tuned transformer's (train stage layout) logits on ``splits`` of the validate stage's output.

    Returns:
        Rows written per split.

    Raises:
        DataValidationError: A split other than train/validation, a missing split file, or a model whose labels
            differ from the splits'.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textclf.evaluate.evaluate import predict_logits
    from textclf.train.train import METADATA_FILE

    model_dir, split_dir = Path(model_dir), Path(split_dir)
    splits = _check_splits(splits)
    labels: list[str] = read_json(model_dir / LABELS_FILE)["labels"]
    split_labels: list[str] = read_json(split_dir / LABELS_FILE)["labels"]
    if labels != split_labels:
        raise DataValidationError(f"{model_dir} was trained on labels {labels}; the splits have {split_labels}")
    frames = {}
    for split in splits:
        path = split_dir / SPLIT_FILES[split]
        if not path.is_file():
            raise DataValidationError(f"{path} not found; is {split_dir} the validate stage's output?")
        frames[split] = pd.read_parquet(path, columns=["row", "text", "label"])
    from textclf.text import text_profile_of

    metadata = read_json(model_dir / METADATA_FILE)
    max_length, profile = int(metadata["max_length"]), text_profile_of(metadata)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with atomic_directory(output_dir) as staging:
        for split, frame in frames.items():
            logits = predict_logits(model, tokenizer, frame["text"].tolist(), batch_size, max_length, profile)
            logits_frame(frame, logits, labels).to_parquet(staging / LOGITS_FILES[split], index=False)
            log.info("%s logits of %s: %d rows", split, model_dir, len(frame))
    return {split: len(frame) for split, frame in frames.items()}


def ensemble_logits(ensemble_dir: str | Path, member_dirs: Mapping[str, str | Path], split: str,
                    method: str | None = None) -> pd.DataFrame:
    """The ensemble's logits frame (``log`` of its probabilities) on one split of its members' logits.

    Raises:
        DataValidationError: A member's logits for ``split`` missing, or members that do not match the ensemble.
    """
    from textclf.ensemble.ensemble import apply_ensemble_logits, load_ensemble, read_member_logits

    ensemble = load_ensemble(ensemble_dir)
    members = [read_member_logits(path, name, split) for name, path in member_dirs.items()]
    logits, aligned = apply_ensemble_logits(ensemble, members, method)
    logits = logits.astype(np.float32)
    classes = list(aligned.classes)
    frame = pd.DataFrame({"row": aligned.rows, "label": [classes[i] for i in aligned.label_ids]})
    return logits_frame(frame, logits, classes)


def write_ensemble_logits(ensemble_dir: str | Path, member_dirs: Mapping[str, str | Path], output_dir: str | Path,
                          splits: Sequence[str] = TRAINING_SPLITS, method: str | None = None) -> Path:
    """:func:`ensemble_logits` for each of ``splits``, written as a logits directory (atomically)."""
    splits = _check_splits(splits)
    frames = {split: ensemble_logits(ensemble_dir, member_dirs, split, method) for split in splits}
    with atomic_directory(output_dir) as staging:
        for split, frame in frames.items():
            frame.to_parquet(staging / LOGITS_FILES[split], index=False)
    return Path(output_dir)
