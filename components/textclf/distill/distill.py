"""Distillation building blocks: the Hinton loss, encoder truncation to a k-layer student, and a Trainer.

Teacher signal: the distillation stage stores the teacher's (or ensemble's) **logits** once, as an artifact, and
the student run reads them back as a dataset column (:data:`TEACHER_LOGITS`). Logits rather than probabilities
softened at one temperature, so ``T`` can change (a sweep, a resumed run with another ``T``) without running the
teacher again: ``softmax(z / T)`` for any ``T`` is a function of the logits ``z``, whereas probabilities stored at
one temperature fix it. An ensemble that only has averaged probabilities ``p`` passes ``log(p)``: softmax is
invariant to adding a constant per row, so log-probabilities are logits of the same distribution.

Nothing here loads data or writes artifacts; the distill component (not yet written) does that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from textclf.config import DistillConfig
from textclf.errors import ConfigError

#: Dataset/batch key of the teacher's logits, one float vector (one entry per class) per example.
TEACHER_LOGITS = "teacher_logits"
#: ``<prefix>encoder.layer.<i>.<rest>`` in a BERT-style state dict (BERT, RoBERTa, MiniLM, ...).
_ENCODER_LAYER_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?encoder\.layer\.)(?P<index>\d+)\.(?P<rest>.+)$")


def check_loss_parameters(temperature: float, alpha: float) -> None:
    """Raise :class:`ConfigError` unless ``temperature`` is finite and > 0 and ``alpha`` is in [0, 1]."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"distillation temperature must be a finite number > 0, got {temperature!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ConfigError(f"distillation alpha must be a number in [0, 1], got {alpha!r}")


def distillation_loss(
    student_logits: Any, teacher_logits: Any, labels: Any, temperature: float, alpha: float
) -> Any:
    """``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

    Hinton et al. 2015: the ``T^2`` factor keeps the soft term's gradients on the same scale as the hard term's
    when ``T`` changes. Both terms are means over the batch (the KL is summed over classes, then averaged over
    rows; the cross-entropy averages over rows whose label is not -100).

    Args:
        student_logits: ``(batch, classes)`` float tensor, the student's raw logits (gradients flow through it).
        teacher_logits: ``(batch, classes)`` float tensor of the teacher's raw **logits** (not probabilities; or
            log-probabilities, equivalent up to a per-row constant). Softened here at ``temperature``; treated as
            constants (detached).
        labels: ``(batch,)`` integer class ids.
        temperature: ``T`` > 0, applied to both teacher and student in the KL term only.
        alpha: Weight on the cross-entropy, in [0, 1]; the KL term gets ``1 - alpha``.

    Returns:
        A scalar tensor. At ``alpha = 1`` exactly the cross-entropy; at ``alpha = 0`` exactly ``T^2`` times the KL.

    Raises:
        ConfigError: ``temperature`` or ``alpha`` out of range, or teacher and student shapes differ.
    """
    import torch.nn.functional as F

    check_loss_parameters(temperature, alpha)
    if tuple(student_logits.shape) != tuple(teacher_logits.shape) or student_logits.dim() != 2:
        raise ConfigError(
            f"teacher logits {tuple(teacher_logits.shape)} must match the student's (batch, classes) logits "
            f"{tuple(student_logits.shape)}: was the teacher trained on the same label map?"
        )
    teacher = teacher_logits.detach().to(student_logits.dtype)
    loss = student_logits.new_zeros(())
    if alpha > 0:
        loss = loss + alpha * F.cross_entropy(student_logits, labels)
    if alpha < 1:
        log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
        log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
        kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1).mean()
        loss = loss + (1 - alpha) * temperature**2 * kl
    return loss


def evenly_spaced_layers(n_layers: int, k: int) -> list[int]:
    """The ``k`` of ``n_layers`` encoder layers a student keeps: the top layer of each of ``k`` equal blocks.

    ``index_i = (i + 1) * n_layers // k - 1``: 6 -> 3 keeps ``[1, 3, 5]``, 12 -> 6 keeps ``[1, 3, ..., 11]``,
    ``k = n_layers`` keeps every layer, ``k = 1`` keeps only the top one. The teacher's last layer is always kept,
    so a teacher-initialised student's pooler and classification head still read the layer they were fine-tuned
    on. (The pilot's ``[0, 2, 4]``, the bottom of each block, remains available by passing it to
    :func:`truncate_encoder` directly; which is better is for the benchmark to measure, not assumed here.)

    Raises:
        ConfigError: ``n_layers`` < 1, or ``k`` not an integer in ``1..n_layers``.
    """
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise ConfigError(f"the teacher must have at least 1 encoder layer, got n_layers={n_layers!r}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n_layers:
        raise ConfigError(f"student_layers must be an integer in 1..{n_layers} (the teacher's layers), got {k!r}")
    return [(i + 1) * n_layers // k - 1 for i in range(k)]


def truncate_encoder(model: Any, keep: Sequence[int]) -> Any:
    """A new model of ``model``'s class with only the encoder layers ``keep`` (renumbered ``0..len(keep) - 1``).

    Every other weight (embeddings, pooler, classification head) is copied unchanged; ``model`` is not modified.
    The student is built from a copy of ``model.config`` with ``num_hidden_layers = len(keep)`` and loaded with a
    strict state dict, so it is an ordinary model of that class: ``save_pretrained`` / ``from_pretrained`` and the
    ONNX export treat it like any other. Works for BERT-style encoders whose state dict names layers
    ``...encoder.layer.<i>...`` (BERT, RoBERTa, MiniLM).

    Raises:
        ConfigError: ``keep`` empty, not strictly increasing, or naming a layer the model does not have; or the
            model has no ``encoder.layer.<i>`` weights.
    """
    import copy
    import itertools

    n_layers = int(model.config.num_hidden_layers)
    keep = [int(i) for i in keep]
    if not keep or any(b <= a for a, b in itertools.pairwise(keep)) or keep[0] < 0 or keep[-1] >= n_layers:
        raise ConfigError(
            f"layers to keep must be a non-empty, strictly increasing list of indices in 0..{n_layers - 1}, "
            f"got {keep}"
        )
    renumber = {old: new for new, old in enumerate(keep)}
    state: dict[str, Any] = {}
    seen_layers = False
    for key, tensor in model.state_dict().items():
        match = _ENCODER_LAYER_KEY.match(key)
        if match is None:
            state[key] = tensor
            continue
        seen_layers = True
        old = int(match["index"])
        if old in renumber:
            state[f"{match['prefix']}{renumber[old]}.{match['rest']}"] = tensor
    if not seen_layers:
        raise ConfigError(f"{type(model).__name__} has no 'encoder.layer.<i>' weights: not a BERT-style encoder")

    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    student = type(model)(config)
    student.load_state_dict({key: tensor.detach().clone() for key, tensor in state.items()}, strict=True)
    student.to(next(model.parameters()).device)
    student.train(model.training)
    return student


def build_student(source_model: str, labels: list[str], config: DistillConfig) -> tuple[Any, list[int]]:
    """Load ``source_model`` (the fine-tuned teacher's or the base model's directory, per ``config.init``) as a
    sequence classifier for ``labels`` and truncate it to ``config.student_layers`` evenly spaced layers.

    Returns:
        The student and the teacher-layer indices it kept (for the stage's metadata).

    Raises:
        ConfigError: ``config.student_layers`` exceeds the source's layers (checked from ``config.json`` before
            any weights are loaded), or the source cannot be loaded.
    """
    from textclf.train.train import classifier_head_kwargs
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        n_layers = int(AutoConfig.from_pretrained(source_model).num_hidden_layers)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the student's source model config {source_model!r}: {exc}") from exc
    keep = evenly_spaced_layers(n_layers, config.student_layers)
    model = AutoModelForSequenceClassification.from_pretrained(source_model, **classifier_head_kwargs(labels))
    return truncate_encoder(model, keep), keep


class DistillationCollator:
    """Pads the tokenised inputs with ``base`` (e.g. ``DataCollatorWithPadding``) and stacks each example's
    :data:`TEACHER_LOGITS` into one float32 ``(batch, classes)`` tensor; examples without the key (an evaluation
    split) pass through unchanged. All examples of a batch must agree on having it."""

    def __init__(self, base: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.base = base

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        with_teacher = [TEACHER_LOGITS in feature for feature in features]
        if not any(with_teacher):
            return self.base(features)
        if not all(with_teacher):
            raise ConfigError(f"only {sum(with_teacher)} of {len(features)} examples carry {TEACHER_LOGITS!r}")
        teacher = torch.tensor([list(map(float, f[TEACHER_LOGITS])) for f in features], dtype=torch.float32)
        batch = self.base([{k: v for k, v in f.items() if k != TEACHER_LOGITS} for f in features])
        batch[TEACHER_LOGITS] = teacher
        return batch


def _trainer_class() -> type:
    from transformers import Trainer

    class DistillationTrainer(Trainer):
        """``transformers.Trainer`` whose loss is :func:`distillation_loss` on the batch's :data:`TEACHER_LOGITS`.

        Use with :class:`DistillationCollator`. The column survives the Trainer's ``remove_unused_columns``
        (its collator wrapper drops keys that are not ``forward`` arguments) because it is added to the kept
        signature columns. Batches without teacher logits (an evaluation split) get plain cross-entropy, so
        ``eval_loss`` stays comparable between a distilled and a labels-only student. The loss is a batch mean;
        gradient accumulation divides it by the accumulation steps as for any mean loss.

        Args:
            temperature: ``T`` of the KL term.
            alpha: Weight on the cross-entropy.
            *args, **kwargs: As for ``transformers.Trainer``.

        Raises:
            ConfigError: ``temperature`` or ``alpha`` out of range (at construction, before any training).
        """

        def __init__(self, *args: Any, temperature: float, alpha: float, **kwargs: Any):
            check_loss_parameters(temperature, alpha)
            super().__init__(*args, **kwargs)
            self.temperature = float(temperature)
            self.alpha = float(alpha)
            # Our loss is a plain batch mean, not a sum normalised by ``num_items_in_batch``.
            self.model_accepts_loss_kwargs = False

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if TEACHER_LOGITS not in self._signature_columns:
                self._signature_columns.append(TEACHER_LOGITS)

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            import torch.nn.functional as F

            inputs = dict(inputs)
            teacher = inputs.pop(TEACHER_LOGITS, None)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits
            if teacher is None:
                loss = F.cross_entropy(logits, labels)
            else:
                loss = distillation_loss(logits, teacher.to(logits.device), labels, self.temperature, self.alpha)
            return (loss, outputs) if return_outputs else loss

    DistillationTrainer.__module__ = __name__
    DistillationTrainer.__qualname__ = "DistillationTrainer"
    return DistillationTrainer


def __getattr__(name: str) -> Any:
    """``DistillationTrainer`` is built on first use, so importing this module does not import transformers."""
    if name == "DistillationTrainer":
        cls = _trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
