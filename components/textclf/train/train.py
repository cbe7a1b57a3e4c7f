"""Train: fine-tune a Hugging Face sequence classifier (full, LoRA or QLoRA) with resumable checkpoints.

Output layout (a directory, written atomically): ``model.safetensors`` + ``config.json`` (LoRA adapters merged
into the base weights), the tokenizer files, ``labels.json`` and ``textclf_metadata.json`` (data fingerprints,
parameters, training history, package versions, git commit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from textclf.config import TrainConfig, TrainMethod
from textclf.errors import ConfigError, DataValidationError, HardwareUnavailableError
from textclf.provenance import atomic_directory, git_commit, package_versions, read_json, write_json
from textclf.serving.contract import INPUT_IDS, LABELS_FILE, ONNX_SPEC
from textclf.storage import Store, is_remote, local_path, localize
from textclf.text import NORMALISATION_VERSION, TEXT_PROFILE_KEY, TextProfile, normalise_text, text_profile_of
from textclf.train.checkpoints import CheckpointMirror
from textclf.validate.validate import REPORT_FILE as SPLIT_REPORT_FILE
from textclf.validate.validate import SPLIT_FILES

log = logging.getLogger(__name__)

#: Output: labels, base model, parameters, max length, normalisation version, data (source, rows, fingerprints),
#: training summary and history, package versions, git commit (the evaluate, export and registry stages read it).
METADATA_FILE = "textclf_metadata.json"


@dataclass(frozen=True)
class TrainResult:
    """The saved model directory and the training summary recorded in its metadata."""

    model_dir: Path
    summary: dict[str, Any]


def check_hardware(method: TrainMethod) -> None:
    """Fail at once when ``method`` needs hardware this machine lacks.

    Raises:
        HardwareUnavailableError: ``qlora`` without CUDA or without a working bitsandbytes.
    """
    if method is not TrainMethod.QLORA:
        return
    import torch

    if not torch.cuda.is_available():
        raise HardwareUnavailableError(
            "method 'qlora' needs a CUDA GPU: bitsandbytes 4-bit (NF4) quantisation of the base model runs only on "
            "CUDA, and torch.cuda.is_available() is False on this machine. Use method 'lora' (same adapters, "
            "full-precision base) on CPU, or run the training component on a GPU node with the GPU component image."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only on a GPU node without bitsandbytes
        raise HardwareUnavailableError(f"method 'qlora' needs bitsandbytes: {exc}") from exc


#: Settings added after run keys were first recorded, left out of the key while at these defaults, so that runs
#: started before they existed still resume their checkpoints.
KEY_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "label_smoothing": 0.0, "lora_target_modules": (), "precision": "fp32", "gradient_accumulation_steps": 1,
    "gradient_checkpointing": False, "class_weights": "none", "layerwise_lr_decay": 1.0, "adversarial": "none",
    "adversarial_epsilon": 1.0, "pgd_steps": 3, "curriculum": "none",
}


def run_key(config: TrainConfig, fingerprints: dict[str, str], extra: dict[str, Any] | None = None) -> str:
    """Identity of a training run: the same parameters on the same data resume the same checkpoints. ``extra``
    (e.g. the distillation parameters and the teacher's logits fingerprint) is part of the identity when given."""
    settings = {name: value for name, value in config.to_dict().items()
                if not (name in KEY_NEUTRAL_DEFAULTS and value == KEY_NEUTRAL_DEFAULTS[name])}
    payload_fields: dict[str, Any] = {"config": settings, "data": fingerprints}
    if extra:
        payload_fields["extra"] = extra
    payload = json.dumps(payload_fields, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class EncodedTexts:
    """Tokenised texts and label ids, as the list-of-dicts dataset the Trainer and its collator expect; ``extra``
    columns (e.g. a teacher's logits per example) are added to every item under their names."""

    def __init__(self, encodings: dict[str, list[list[int]]], label_ids: list[int],
                 extra: dict[str, list[Any]] | None = None):
        self.encodings = encodings
        self.label_ids = label_ids
        self.extra = dict(extra or {})
        for name, values in self.extra.items():
            if len(values) != len(label_ids):
                raise DataValidationError(f"column {name!r} has {len(values)} values for {len(label_ids)} examples")

    def __len__(self) -> int:
        return len(self.label_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = self.label_ids[index]
        for name, values in self.extra.items():
            item[name] = values[index]
        return item


def encode_split(frame: pd.DataFrame, tokenizer: Any, labels: list[str], max_length: int,
                 extra: dict[str, list[Any]] | None = None,
                 profile: TextProfile = TextProfile.NEWS) -> EncodedTexts:
    """Tokenised texts (normalised under ``profile``, the data's: :attr:`SplitData.text_profile`) and label ids."""
    label_to_id = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(frame["label"]) - set(label_to_id))
    if unknown:
        raise DataValidationError(f"labels {unknown} are not in the label map {labels}")
    texts = [normalise_text(text, profile) for text in frame["text"]]
    encodings = tokenizer(texts, truncation=True, max_length=max_length)
    # Exactly the exported graph's inputs (no token_type_ids): the model trains on the tensors serving feeds it.
    return EncodedTexts(
        {name: encodings[name] for name in ONNX_SPEC.inputs},
        [label_to_id[label] for label in frame["label"]],
        extra,
    )


def classifier_head_kwargs(labels: list[str]) -> dict[str, Any]:
    """``from_pretrained`` arguments that size the classification head and name its classes."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def load_base_model(config: TrainConfig, labels: list[str]) -> tuple[Any, Any]:
    """Load tokenizer and classifier from a local directory or hub id, wrapped for LoRA/QLoRA if asked."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs: dict[str, Any] = classifier_head_kwargs(labels)
    if config.train_method is TrainMethod.QLORA:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model)
        model = AutoModelForSequenceClassification.from_pretrained(config.base_model, **kwargs)
    except OSError as exc:
        raise ConfigError(
            f"cannot load base model {config.base_model!r}: {exc}. Pass a local Hugging Face model directory "
            "(config.json, weights, tokenizer) or a hub id reachable from this machine."
        ) from exc
    if config.train_method is TrainMethod.FULL:
        return tokenizer, model

    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    from textclf.train.lora import lora_target_modules

    targets = lora_target_modules(model, config.lora_target_modules)  # before any 4-bit preparation
    if config.train_method is TrainMethod.QLORA:
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout, target_modules=targets,
    )
    return tokenizer, get_peft_model(model, lora)


def merge_adapters(model: Any, config: TrainConfig, labels: list[str]) -> Any:
    """Fold LoRA adapters into full-precision base weights, so export sees a plain transformer."""
    if config.train_method is TrainMethod.LORA:
        return model.merge_and_unload()
    # QLoRA: the trained base is 4-bit; merge the adapters into a full-precision copy of the base instead.
    import tempfile

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(config.base_model, **classifier_head_kwargs(labels))
    with tempfile.TemporaryDirectory(prefix="textclf-adapter-") as adapter_dir:
        model.save_pretrained(adapter_dir)
        return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


#: Written last by the Trainer when it saves a checkpoint; a checkpoint without it was cut off mid-write.
CHECKPOINT_COMPLETE_MARKER = "trainer_state.json"


def world_size_from_env() -> int:
    """Processes in this training job: ``WORLD_SIZE`` as torchrun (or a Trainer ``TrainJob``) sets it; 1 otherwise."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE must be an integer; got {os.environ.get('WORLD_SIZE')!r}") from exc


def per_process_batch_size(batch_size: int, world_size: int) -> int:
    """Examples per process and step so that ``world_size`` processes together take ``batch_size`` (the global
    batch, the same optimiser step as one process).

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``world_size`` (checked before anything is loaded).
    """
    if world_size < 1:
        raise ConfigError(f"the number of training processes must be >= 1; got {world_size}")
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by the {world_size} training processes: each process takes "
            f"batch_size / processes examples per step (the global batch stays batch_size); choose a batch_size "
            f"that is a multiple of {world_size}"
        )
    return batch_size // world_size


def last_complete_checkpoint(checkpoint_dir: Path, remove_incomplete: bool = True) -> str | None:
    """Newest checkpoint that was fully written; incomplete ones (a kill during saving) are deleted when
    ``remove_incomplete`` (only one process of a distributed job deletes; the others just skip them)."""
    import re
    import shutil

    numbered = []
    for path in checkpoint_dir.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            numbered.append((int(match.group(1)), path))
    for _, path in sorted(numbered, reverse=True):
        if (path / CHECKPOINT_COMPLETE_MARKER).is_file():
            return str(path)
        if remove_incomplete:
            log.warning("removing incomplete checkpoint %s (no %s)", path, CHECKPOINT_COMPLETE_MARKER)
            shutil.rmtree(path, ignore_errors=True)
    return None


def _accuracy(eval_prediction: Any) -> dict[str, float]:
    import numpy as np

    logits, label_ids = eval_prediction.predictions, eval_prediction.label_ids
    return {"accuracy": float((np.argmax(logits, axis=-1) == label_ids).mean())}


def train_model(
    split_dir: str | Path,
    config: TrainConfig,
    output_dir: str | Path,
    checkpoint_root: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Fine-tune ``config.base_model`` on the train split, early-stopping on the validation split.

    Args:
        split_dir: Output directory of the validate/split stage (``train.parquet``, ``validation.parquet``,
            ``labels.json``, ``validation_report.json``).
        config: Hyper-parameters and method.
        output_dir: Where the model directory is written (atomically).
        checkpoint_root: Where resumable checkpoints go: a directory, or an ``s3://`` / ``gs://`` prefix that every
            complete checkpoint is mirrored to. A run with the same parameters and data resumes from the newest
            checkpoint under ``checkpoint_root/<run key>``; ``None`` keeps checkpoints in a temporary directory
            next to ``output_dir`` (no resume across runs).
        progress: Show a progress bar with ETA.
        callbacks: Extra ``transformers.TrainerCallback`` objects (e.g. a hyper-parameter search's pruning hook,
            which sees every validation evaluation).

    Distributed data-parallel: run unchanged under ``torchrun`` (or a Trainer ``TrainJob``); every process calls
    this, ``config.batch_size`` stays the global batch (``batch_size / WORLD_SIZE`` per process), only rank 0
    writes the model directory, the metadata and checkpoint uploads, and a rerun resumes the same checkpoints with
    any number of processes (the run key does not depend on it). Other ranks return the same summary once rank 0
    has written the directory.

    Returns:
        The model directory and a training summary.

    Raises:
        HardwareUnavailableError: ``qlora`` on a machine without CUDA (raised before anything is loaded).
        ConfigError: The base model cannot be loaded, or ``batch_size`` is not a multiple of ``WORLD_SIZE``.
    """
    check_hardware(config.train_method)
    per_process_batch_size(config.batch_size, world_size_from_env())
    if not is_remote(config.base_model):
        return _train(Path(split_dir), config, config.base_model, Path(output_dir), checkpoint_root, progress,
                      callbacks)
    with tempfile.TemporaryDirectory(prefix="textclf-base-model-") as scratch:
        local_base_model = localize(config.base_model, Path(scratch) / "base_model")
        return _train(Path(split_dir), config, str(local_base_model), Path(output_dir), checkpoint_root, progress,
                      callbacks)


@dataclass(frozen=True)
class SplitData:
    """The validate stage's output as the training stages read it."""

    labels: list[str]
    report: dict[str, Any]
    train: pd.DataFrame
    validation: pd.DataFrame

    @property
    def fingerprints(self) -> dict[str, str]:
        return self.report["fingerprints"]

    @property
    def text_profile(self) -> TextProfile:
        """How the data's texts are normalised (the split report's; ``news`` for splits made before profiles)."""
        return text_profile_of(self.report)


def read_splits(split_dir: Path) -> SplitData:
    """Labels, split report and the train and validation frames of the validate stage's output."""
    return SplitData(
        labels=read_json(split_dir / LABELS_FILE)["labels"],
        report=read_json(split_dir / SPLIT_REPORT_FILE),
        train=pd.read_parquet(split_dir / SPLIT_FILES["train"]),
        validation=pd.read_parquet(split_dir / SPLIT_FILES["validation"]),
    )


def _train(
    split_dir: Path,
    config: TrainConfig,
    local_base_model: str,
    output_dir: Path,
    checkpoint_root: str | Path | None,
    progress: bool,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """:func:`train_model` once the base model is on local disk (``local_base_model``; ``config.base_model`` is
    what the metadata and the run key record)."""
    import dataclasses

    import torch
    from transformers import set_seed

    load_config = dataclasses.replace(config, base_model=local_base_model)
    data = read_splits(split_dir)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed)
    tokenizer, model = load_base_model(load_config, data.labels)
    train_data = encode_split(data.train, tokenizer, data.labels, config.max_length, profile=data.text_profile)
    validation_data = encode_split(data.validation, tokenizer, data.labels, config.max_length,
                                   profile=data.text_profile)

    def finalise(trained: Any) -> Any:
        return trained if config.train_method is TrainMethod.FULL else merge_adapters(trained, load_config,
                                                                                        data.labels)

    return fit_and_save(
        model, tokenizer, data, train_data, validation_data, config, run_key(config, data.fingerprints),
        output_dir, checkpoint_root, progress, finalise=finalise, extra_callbacks=callbacks,
    )


def fit_and_save(
    model: Any,
    tokenizer: Any,
    data: SplitData,
    train_data: EncodedTexts,
    validation_data: EncodedTexts,
    config: TrainConfig,
    key: str,
    output_dir: Path,
    checkpoint_root: str | Path | None,
    progress: bool,
    *,
    trainer_class: Any = None,
    trainer_kwargs: dict[str, Any] | None = None,
    collator: Any = None,
    finalise: Any = None,
    extra_metadata: dict[str, Any] | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Run the Trainer with resumable checkpoints under ``checkpoint_root/<key>`` and write the model directory
    (atomically) in this stage's layout. Shared by the train and distill stages, so a student is saved, resumed and
    described exactly like a fine-tuned model and the evaluate, export and register stages read it unchanged.

    Args:
        model, tokenizer: The model to train and its tokenizer.
        data: The splits (labels, report).
        train_data, validation_data: Encoded splits.
        config: Hyper-parameters (epochs, batch size, learning rate, checkpointing, early stopping, seed).
        key: The run's identity (:func:`run_key`): the checkpoint directory's name.
        output_dir: The model directory to write.
        checkpoint_root: See :func:`train_model`.
        progress: Show a progress bar.
        trainer_class: ``transformers.Trainer`` or a subclass (default ``Trainer``).
        trainer_kwargs: Extra constructor arguments of ``trainer_class``.
        collator: Batch collator (default: ``DataCollatorWithPadding(tokenizer)``).
        finalise: Applied to the trained model before saving (e.g. merging LoRA adapters).
        extra_metadata: Added at the top level of :data:`METADATA_FILE`.
        extra_callbacks: Added to the Trainer's callbacks (see :func:`train_model`).
    """
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments

    from textclf.train.strategies import (
        precision_arguments,
        resolve_precision,
        strategy_trainer_class,
        train_strategy,
    )

    labels, split_report, fingerprints = data.labels, data.report, data.fingerprints
    world_size = world_size_from_env()
    per_process_batch = per_process_batch_size(config.batch_size, world_size)
    accumulation = config.gradient_accumulation_steps
    if per_process_batch % accumulation:
        raise ConfigError(
            f"batch_size {config.batch_size} over {world_size} process(es) gives {per_process_batch} examples per "
            f"process, not divisible by gradient_accumulation_steps {accumulation}; choose a batch_size that is a "
            f"multiple of {world_size * accumulation}")
    precision = resolve_precision(config.precision)  # refuses bf16/fp16 the hardware cannot run, before training
    strategy = train_strategy(config, train_data.label_ids, len(labels), train_data.encodings[INPUT_IDS])
    mirror = None
    scratch_checkpoints = checkpoint_root is None or is_remote(str(checkpoint_root))
    if scratch_checkpoints:
        checkpoint_dir = output_dir.parent / f".{output_dir.name}.checkpoints"
    else:
        checkpoint_dir = local_path(str(checkpoint_root)) / key
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    distributed = world_size > 1
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.epochs,
        # The global batch is config.batch_size whatever the number of processes (DDP averages the gradients) and
        # the accumulation steps (each micro-batch's mean loss is divided by them).
        per_device_train_batch_size=per_process_batch // accumulation,
        gradient_accumulation_steps=accumulation,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        **precision_arguments(precision),
        per_device_eval_batch_size=max(config.batch_size, 64),
        learning_rate=config.effective_learning_rate,
        weight_decay=config.weight_decay,
        label_smoothing_factor=config.label_smoothing,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=config.checkpoint_steps,
        save_strategy="steps",
        save_steps=config.checkpoint_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=max(1, min(50, config.checkpoint_steps)),
        train_sampling_strategy="group_by_length",
        seed=config.seed,
        data_seed=config.seed,
        report_to=[],
        disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        # gloo on CPU, nccl on CUDA; None (no process group) in a single process.
        ddp_backend=("nccl" if torch.cuda.is_available() else "gloo") if distributed else None,
        # Parameters a frozen head or a LoRA base leaves without gradients would otherwise stall DDP's reducer.
        ddp_find_unused_parameters=distributed and config.train_method is not TrainMethod.FULL,
        # Our losses are per-example means: the Trainer's token averaging across devices would multiply them by the
        # number of processes (a sequence classifier's loss ignores num_items_in_batch); DDP's gradient averaging
        # alone gives the global batch's mean. No effect in one process.
        average_tokens_across_devices=False,
    )
    is_main = args.process_index == 0  # initialises the process group under torchrun
    is_node_main = args.local_process_index == 0
    # The first process of each node restores the mirror (each node has its own disk) and removes cut-off
    # checkpoints before the node's other processes look; every process then resumes the same checkpoint.
    with args.main_process_first(local=True, desc="checkpoint restore"):
        if is_node_main and checkpoint_root is not None and is_remote(str(checkpoint_root)):
            mirror = CheckpointMirror(Store(str(checkpoint_root)).child(key), checkpoint_dir,
                                      CHECKPOINT_COMPLETE_MARKER)
            mirror.restore()
        resume_from = last_complete_checkpoint(checkpoint_dir, remove_incomplete=is_node_main)
    if not is_main:
        mirror = None  # rank 0 alone saves checkpoints, so it alone uploads them
    if resume_from:
        log.info("resuming from checkpoint %s (%d process(es))", resume_from, world_size)

    callbacks = [EarlyStoppingCallback(config.early_stopping_patience)] if config.early_stopping_patience else []
    if mirror is not None:  # rank 0 only: the uploads of each complete checkpoint
        callbacks.append(mirror.callback())
    callbacks.extend(extra_callbacks)
    trainer = strategy_trainer_class(trainer_class or Trainer)(
        model=model,
        strategy=strategy,
        args=args,
        train_dataset=train_data,
        eval_dataset=validation_data,
        data_collator=collator or DataCollatorWithPadding(tokenizer),
        compute_metrics=_accuracy,
        callbacks=callbacks,
        **(trainer_kwargs or {}),
    )
    started = time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=resume_from)
    wall_seconds = time.perf_counter() - started
    final_eval = trainer.evaluate()
    history = [entry for entry in trainer.state.log_history if "eval_loss" in entry or "loss" in entry]
    summary = {
        "run_key": key,
        "method": config.method,
        "resumed_from": resume_from,
        "global_steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "early_stopped": trainer.state.global_step < trainer.state.max_steps,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_rows": len(train_data),
        "validation_rows": len(validation_data),
        "train_loss": outcome.training_loss,
        "train_samples_per_second": outcome.metrics.get("train_samples_per_second"),
        "train_runtime_seconds": outcome.metrics.get("train_runtime"),
        "wall_seconds_this_process": wall_seconds,
        "validation_loss": final_eval["eval_loss"],
        "validation_accuracy": final_eval["eval_accuracy"],
        "world_size": world_size,
        "per_process_batch_size": per_process_batch,
        "micro_batch_size": per_process_batch // accumulation,
        "precision": precision.value,
        "strategy": strategy.describe(),
    }
    if not is_main:
        # Rank 0 writes the model directory; the others wait for it, so the job ends when the model is in place.
        _barrier()
        return TrainResult(output_dir, summary)

    model = trainer.model
    with atomic_directory(output_dir) as staging:
        if finalise is not None:
            model = finalise(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / LABELS_FILE, {"labels": labels})
        write_json(
            staging / METADATA_FILE,
            {
                "labels": labels,
                "base_model": config.base_model,
                "params": config.to_dict(),
                "max_length": config.max_length,
                "normalisation_version": NORMALISATION_VERSION,
                TEXT_PROFILE_KEY: data.text_profile.value,
                "data": {
                    "dataset_uri": split_report["dataset_uri"],
                    "dataset_format": split_report["dataset_format"],
                    "rows": split_report["rows_out"],
                    "fingerprints": fingerprints,
                },
                "training": summary,
                "history": history,
                **(extra_metadata or {}),
                "package_versions": package_versions(),
                "git_commit": git_commit(),
                "created_unix": time.time(),
            },
        )
    log.info("model written to %s (%s)", output_dir, json.dumps(summary, default=str))
    if scratch_checkpoints:
        import shutil

        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if distributed:
        _barrier()
    return TrainResult(output_dir, summary)


def _barrier() -> None:
    """Wait for every process of the job (no-op outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
