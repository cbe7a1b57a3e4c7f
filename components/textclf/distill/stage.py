"""Distill stage: train a k-layer student on a teacher's stored logits and the labels, resumable.

Inputs: the validate stage's splits, the teacher's (or ensemble's) logits directory (``LOGITS_FILES["train"]``,
computed once by :mod:`textclf.ensemble.members` or the classical stage, so a killed student run resumes without
the teacher) and the model the student's layers come from (the fine-tuned teacher, or the base model:
``DistillConfig.init``). With ``alpha = 1`` no teacher logits are needed: the student trains on the labels alone,
the baseline that measures what distillation adds.

Output: a model directory in the train stage's layout (:func:`textclf.train.train.fit_and_save`), so evaluate,
export (ONNX + INT8 with the parity gate) and register treat the student like any fine-tuned model; its metadata
adds ``distillation`` (T, alpha, kept teacher layers, init, teacher logits' sha256).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from textclf.classical.classical import LOGITS_FILES
from textclf.config import DistillConfig, StudentInit, TrainConfig, TrainMethod
from textclf.distill.distill import TEACHER_LOGITS, DistillationCollator, build_student
from textclf.errors import ConfigError, DataValidationError
from textclf.storage import is_remote, localize
from textclf.train.train import TrainResult, encode_split, fit_and_save, read_splits, run_key

log = logging.getLogger(__name__)


def read_teacher_logits(teacher_logits_dir: str | Path, frame: pd.DataFrame, labels: list[str],
                        ) -> tuple[list[list[float]], str]:
    """The teacher's train-split logits, one vector per row of ``frame`` (joined on ``row``, in ``frame``'s order),
    and the sha256 of the file they were read from (the file is read once, for both).

    Raises:
        DataValidationError: The file is missing, lacks a ``logit_<label>`` column, or lacks rows of ``frame``.
    """
    import hashlib
    import io

    path = Path(teacher_logits_dir)
    path = path / LOGITS_FILES["train"] if path.is_dir() else path
    if not path.is_file():
        raise DataValidationError(
            f"teacher logits {path} not found: distillation (alpha < 1) needs the teacher's train-split logits "
            f"({LOGITS_FILES['train']}, written by the ensemble, transformer-logits or classical stage)"
        )
    content = path.read_bytes()
    teacher = pd.read_parquet(io.BytesIO(content))
    columns = [f"logit_{label}" for label in labels]
    missing_columns = [column for column in ["row", *columns] if column not in teacher.columns]
    if missing_columns:
        raise DataValidationError(f"teacher logits {path} lack columns {missing_columns}: other labels than {labels}?")
    if teacher["row"].duplicated().any():
        raise DataValidationError(f"teacher logits {path} repeat row ids")
    indexed = teacher.set_index("row")[columns]
    missing_rows = sorted(set(frame["row"]) - set(indexed.index))
    if missing_rows:
        raise DataValidationError(
            f"teacher logits {path} miss {len(missing_rows)} of the {len(frame)} train rows (first: "
            f"{missing_rows[:5]}): were they computed on these splits?"
        )
    values = indexed.loc[frame["row"].to_numpy()].to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        raise DataValidationError(f"teacher logits {path} hold non-finite values")
    return values.tolist(), hashlib.sha256(content).hexdigest()


def distill_student(
    split_dir: str | Path,
    teacher_logits_dir: str | Path | None,
    source_model: str | Path,
    distill: DistillConfig,
    train: TrainConfig,
    output_dir: str | Path,
    checkpoint_root: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the student and write it in the train stage's layout.

    Every input is checked before any weights are loaded: ``train.method`` must be ``full``, the teacher logits must
    cover every train row (unless ``distill.alpha == 1``), ``distill.student_layers`` must fit the source's layers.

    Args:
        split_dir: Output of the validate/split stage.
        teacher_logits_dir: Logits directory holding ``LOGITS_FILES["train"]``; ``None`` only with ``alpha == 1``.
        source_model: Where the student's weights come from: the fine-tuned teacher's directory (``init=teacher``)
            or the base model (``init=base``; a path, ``s3://`` / ``gs://`` prefix).
        distill: Temperature, alpha, student layers, init.
        train: Epochs, batch size, learning rate, max length, checkpointing, seed of the student's run.
        output_dir: The model directory to write (atomically).
        checkpoint_root: As for :func:`textclf.train.train_model`: a rerun with the same parameters, data and teacher
            logits resumes from the newest checkpoint.
        progress: Show a progress bar.

    Raises:
        ConfigError: Another method than ``full``, ``student_layers`` outside 1..(source layers), no teacher logits
            with ``alpha < 1``, or a source model that cannot be loaded.
        DataValidationError: Teacher logits missing rows or columns.
    """
    if train.train_method is not TrainMethod.FULL:
        raise ConfigError(f"a student is trained with method 'full', got {train.method!r}")
    split_dir = Path(split_dir)
    data = read_splits(split_dir)
    teacher: list[list[float]] | None = None
    teacher_sha = None
    if distill.alpha < 1:
        if teacher_logits_dir is None or not str(teacher_logits_dir):
            raise ConfigError(f"alpha={distill.alpha} < 1 distils from a teacher: teacher logits are required")
        teacher, teacher_sha = read_teacher_logits(teacher_logits_dir, data.train, data.labels)
    if is_remote(str(source_model)):
        with tempfile.TemporaryDirectory(prefix="textclf-student-source-") as scratch:
            local = localize(str(source_model), Path(scratch) / "source")
            return _distill(data, teacher, teacher_sha, str(source_model), str(local), distill, train,
                            Path(output_dir), checkpoint_root, progress)
    return _distill(data, teacher, teacher_sha, str(source_model), str(source_model), distill, train,
                    Path(output_dir), checkpoint_root, progress)


def _distill(data: Any, teacher: list[list[float]] | None, teacher_sha: str | None, source_model: str,
             local_source: str, distill: DistillConfig, train: TrainConfig, output_dir: Path,
             checkpoint_root: str | Path | None, progress: bool) -> TrainResult:
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, set_seed

    from textclf.distill.distill import DistillationTrainer

    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    set_seed(train.seed)
    student, kept = build_student(local_source, data.labels, distill)  # checks k against the source's layers
    try:
        tokenizer = AutoTokenizer.from_pretrained(local_source)
    except OSError as exc:
        raise ConfigError(f"cannot load the tokenizer of {source_model!r}: {exc}") from exc
    extra = {TEACHER_LOGITS: teacher} if teacher is not None else None
    train_data = encode_split(data.train, tokenizer, data.labels, train.max_length, extra, data.text_profile)
    validation_data = encode_split(data.validation, tokenizer, data.labels, train.max_length,
                                   profile=data.text_profile)
    parameters = {**dataclasses.asdict(distill), "kept_teacher_layers": kept, "teacher_logits_sha256": teacher_sha,
                  "source_model": source_model}
    key = run_key(dataclasses.replace(train, base_model=source_model), data.fingerprints, {"distill": parameters})
    log.info("student: %d of the source's layers %s, T=%s, alpha=%s, init=%s", len(kept), kept,
             distill.temperature, distill.alpha, StudentInit(distill.init).value)
    return fit_and_save(
        student, tokenizer, data, train_data, validation_data, dataclasses.replace(train, base_model=source_model),
        key, output_dir, checkpoint_root, progress,
        trainer_class=DistillationTrainer,
        trainer_kwargs={"temperature": distill.temperature, "alpha": distill.alpha},
        collator=DistillationCollator(DataCollatorWithPadding(tokenizer)),
        extra_metadata={"distillation": parameters},
    )
