"""Training strategies beyond a plain fine-tune, as :class:`~textclf.config.TrainConfig` options: mixed precision
(bf16 autocast on CPUs that run it natively), gradient accumulation and checkpointing (``TrainingArguments``), and a
``Trainer`` subclass for class-weighted cross-entropy, layer-wise learning-rate decay, FGM/PGD adversarial training
on the word embeddings and a length curriculum.

Every option at its neutral setting leaves training exactly as it was (tests check the loss, the optimiser groups,
the sampler and the saved weights), so runs recorded before an option existed resume their checkpoints.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf.config import Adversarial, ClassWeights, Curriculum, Precision, TrainConfig
from textclf.errors import ConfigError, HardwareUnavailableError

log = logging.getLogger(__name__)

#: ``/proc/cpuinfo`` flags of x86 CPUs with native bf16 arithmetic (AVX-512 BF16 dot products, AMX tiles).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: Batches per shuffled window of the length curriculum (neighbours in length, not in file order).
CURRICULUM_WINDOW_BATCHES = 50
#: PGD's step size is this times epsilon / steps (Madry et al. 2018's choice).
PGD_STEP_FACTOR = 2.5


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags (empty where ``/proc/cpuinfo`` is absent, e.g. not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(requested: str, cuda: bool | None = None, flags: set[str] | None = None) -> Precision:
    """What ``requested`` means on this machine: ``fp32``, ``bf16`` or ``fp16`` (``auto`` resolved).

    Raises:
        HardwareUnavailableError: ``fp16`` without a GPU, or ``bf16`` on a CPU without native bf16 (torch would
            emulate it, slower than fp32) or a GPU without it.
    """
    import torch

    precision = Precision(requested)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    gpu_bf16 = cuda and torch.cuda.is_bf16_supported()
    flags = cpu_flags() if flags is None else flags
    cpu_bf16 = bool(flags & set(BF16_CPU_FLAGS))
    if precision is Precision.AUTO:
        if cuda:
            return Precision.BF16 if gpu_bf16 else Precision.FP16
        return Precision.BF16 if cpu_bf16 else Precision.FP32
    if precision is Precision.FP16 and not cuda:
        raise HardwareUnavailableError(
            "precision 'fp16' needs a CUDA GPU (fp16 autocast with loss scaling); on a CPU use 'bf16' where the CPU "
            "has avx512_bf16 or amx_bf16, or 'auto'")
    if precision is Precision.BF16 and not (gpu_bf16 if cuda else cpu_bf16):
        where = "this GPU does not support bf16" if cuda else (
            f"this CPU has none of the flags {', '.join(BF16_CPU_FLAGS)} (lscpu), so torch would emulate bf16, "
            "slower than fp32")
        raise HardwareUnavailableError(f"precision 'bf16': {where}; use 'fp32' or 'auto' (bf16 where it is native)")
    return precision


def precision_arguments(precision: Precision) -> dict[str, bool]:
    """``TrainingArguments`` settings of a resolved precision (autocast; master weights stay fp32)."""
    return {"bf16": precision is Precision.BF16, "fp16": precision is Precision.FP16}


def balanced_class_weights(label_ids: Sequence[int], classes: int) -> list[float]:
    """``n / (classes * count)`` per class (scikit-learn's ``balanced``); a class absent from ``label_ids`` gets 0
    (it contributes no loss either way).

    Raises:
        ConfigError: ``label_ids`` is empty.
    """
    if not label_ids:
        raise ConfigError("class_weights 'balanced' needs training rows to count the classes")
    counts = [0] * classes
    for label in label_ids:
        counts[label] += 1
    return [len(label_ids) / (classes * count) if count else 0.0 for count in counts]


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")


def layer_depth(parameter_name: str, layers: int) -> int:
    """0 for the embeddings, ``i + 1`` for encoder layer ``i``, ``layers + 1`` for everything above (pooler, head)."""
    match = _LAYER_INDEX.search(parameter_name)
    if match:
        return min(int(match.group(1)), layers - 1) + 1
    if "embed" in parameter_name:
        return 0
    return layers + 1


def layerwise_lr_groups(model: Any, learning_rate: float, decay: float, weight_decay: float,
                        decay_parameter_names: set[str]) -> list[dict[str, Any]]:
    """Optimiser parameter groups: one per (depth, decayed or not), at ``learning_rate * decay ** (L + 1 - depth)``.

    Raises:
        ConfigError: The model's config has no ``num_hidden_layers`` to count the depth from.
    """
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    if not layers:
        raise ConfigError("layerwise_lr_decay needs the model's num_hidden_layers (config.json); this model has none")
    groups: dict[tuple[int, bool], list[Any]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault((layer_depth(name, layers), name in decay_parameter_names), []).append(parameter)
    return [{"params": params, "weight_decay": weight_decay if decayed else 0.0,
             "lr": learning_rate * decay ** (layers + 1 - depth)}
            for (depth, decayed), params in sorted(groups.items())]


class LengthCurriculumSampler:
    """Epoch 0: examples short to long (ties and windows of ``window`` examples shuffled, so batches mix texts of
    similar length); later epochs: a random permutation. Deterministic per ``(seed, epoch)``, so a resumed run skips
    exactly the batches it trained (the Trainer calls :meth:`set_epoch` before each epoch)."""

    def __init__(self, lengths: Sequence[int], window: int, seed: int):
        if window < 1:
            raise ConfigError(f"the curriculum window must be >= 1 example; got {window}")
        self.lengths = list(lengths)
        self.window = window
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self, epoch: int) -> list[int]:
        import torch

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        permutation = torch.randperm(len(self.lengths), generator=generator).tolist()
        if epoch > 0:
            return permutation
        by_length = sorted(permutation, key=lambda index: self.lengths[index])  # stable: ties stay shuffled
        windows = [by_length[start:start + self.window] for start in range(0, len(by_length), self.window)]
        out: list[int] = []
        for chunk in windows:
            out.extend(chunk[i] for i in torch.randperm(len(chunk), generator=generator).tolist())
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))


@dataclass(frozen=True)
class TrainStrategy:
    """What :func:`strategy_trainer_class`'s Trainer does beyond its base class (built by :func:`train_strategy`)."""

    class_weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    layerwise_lr_decay: float = 1.0
    adversarial: Adversarial = Adversarial.NONE
    adversarial_epsilon: float = 1.0
    pgd_steps: int = 3
    curriculum_lengths: tuple[int, ...] | None = None
    curriculum_window: int = 1
    seed: int = 42

    def describe(self) -> dict[str, Any]:
        """For the model's metadata: the settings that took effect (class weights as computed)."""
        return {"class_weights": list(self.class_weights) if self.class_weights else None,
                "layerwise_lr_decay": self.layerwise_lr_decay, "adversarial": self.adversarial.value,
                "adversarial_epsilon": self.adversarial_epsilon, "pgd_steps": self.pgd_steps,
                "curriculum": "length" if self.curriculum_lengths else "none"}


def train_strategy(config: TrainConfig, label_ids: Sequence[int], classes: int,
                   input_ids: Sequence[Sequence[int]]) -> TrainStrategy:
    """The Trainer-side strategy of ``config`` for these training rows (label ids, token ids)."""
    weights = None
    if ClassWeights(config.class_weights) is ClassWeights.BALANCED:
        weights = tuple(balanced_class_weights(label_ids, classes))
    lengths = tuple(map(len, input_ids)) if Curriculum(config.curriculum) is Curriculum.LENGTH else None
    return TrainStrategy(
        class_weights=weights, label_smoothing=config.label_smoothing, layerwise_lr_decay=config.layerwise_lr_decay,
        adversarial=config.adversarial_method, adversarial_epsilon=config.adversarial_epsilon,
        pgd_steps=config.pgd_steps, curriculum_lengths=lengths,
        curriculum_window=config.batch_size * CURRICULUM_WINDOW_BATCHES, seed=config.seed,
    )


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)  # DDP wraps the model


@functools.cache
def strategy_trainer_class(base: type) -> type:
    """``base`` (``transformers.Trainer`` or a subclass with its own loss, e.g. distillation) with the strategies
    of a :class:`TrainStrategy` passed as ``strategy=``. Its loss is a per-batch mean divided by the accumulation
    steps (``model_accepts_loss_kwargs`` off), so ``k`` micro-batches of ``b`` make the step of one batch of
    ``k * b``. Class weights reweight ``transformers.Trainer``'s cross-entropy only (a subclass's own loss refuses
    them)."""
    from transformers import Trainer

    class StrategyTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, strategy: TrainStrategy, **kwargs: Any):
            if strategy.class_weights is not None and base is not Trainer:
                raise ConfigError(f"class_weights reweights the train stage's cross-entropy; {base.__name__} has "
                                  "its own loss and does not take them")
            super().__init__(*args, **kwargs)
            self.strategy = strategy
            self.model_accepts_loss_kwargs = False
            self._class_weights = None

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if self.strategy.class_weights is None or not model.training:  # validation loss stays unweighted
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            import torch
            import torch.nn.functional as F

            inputs = dict(inputs)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            if self._class_weights is None:
                self._class_weights = torch.tensor(self.strategy.class_weights, dtype=torch.float32)
            loss = F.cross_entropy(outputs.logits.float(), labels, weight=self._class_weights.to(labels.device),
                                   label_smoothing=self.strategy.label_smoothing)
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self, model: Any = None) -> Any:
            decay = self.strategy.layerwise_lr_decay
            if self.optimizer is None and decay < 1:
                opt_model = self.model if model is None else model
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                groups = layerwise_lr_groups(opt_model, self.args.learning_rate, decay, self.args.weight_decay,
                                             set(self.get_decay_parameter_names(opt_model)))
                self.optimizer = optimizer_cls(groups, **kwargs)
            return super().create_optimizer(model)

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            lengths = self.strategy.curriculum_lengths
            if lengths is None:
                return super()._get_train_sampler(train_dataset)
            return LengthCurriculumSampler(lengths, self.strategy.curriculum_window, self.strategy.seed)

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self.strategy.adversarial is not Adversarial.NONE:
                self._adversarial_step(model, inputs)
            return loss

        def _adversarial_backward(self, model: Any, inputs: dict[str, Any]) -> None:
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, self._prepare_inputs(inputs))
            self.accelerator.backward(loss / self.current_gradient_accumulation_steps)

        def _adversarial_step(self, model: Any, inputs: dict[str, Any]) -> None:
            """Add the loss gradient at perturbed word embeddings (FGM: one step of epsilon along the gradient;
            PGD: projected steps), then put the embeddings back: only the gradients change."""
            import torch

            embedding = _unwrap(model).get_input_embeddings().weight
            if embedding.grad is None:
                raise ConfigError("adversarial training perturbs the word embeddings along their gradient, and they "
                                  "have none (frozen, as with method 'lora'); use method 'full'")
            epsilon, steps = self.strategy.adversarial_epsilon, self.strategy.pgd_steps
            original = embedding.data.clone()

            def step_along_gradient(size: float) -> bool:
                norm = torch.linalg.vector_norm(embedding.grad)
                if not torch.isfinite(norm) or norm == 0:
                    return False
                embedding.data.add_(embedding.grad, alpha=float(size / norm))
                return True

            try:
                if self.strategy.adversarial is Adversarial.FGM:
                    if step_along_gradient(epsilon):
                        self._adversarial_backward(model, inputs)
                    return
                clean = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
                for step in range(steps):
                    if not step_along_gradient(PGD_STEP_FACTOR * epsilon / steps):
                        break
                    delta = embedding.data - original
                    norm = float(torch.linalg.vector_norm(delta))
                    if norm > epsilon:
                        embedding.data.copy_(original + delta * (epsilon / norm))
                    if step < steps - 1:
                        model.zero_grad(set_to_none=False)
                    else:  # the last perturbed loss adds its gradient to the clean one
                        for name, p in model.named_parameters():
                            if name in clean:
                                p.grad.copy_(clean[name])
                    self._adversarial_backward(model, inputs)
                else:
                    return
                for name, p in model.named_parameters():  # a zero gradient stopped the steps early
                    if name in clean:
                        p.grad.copy_(clean[name])
            finally:
                embedding.data.copy_(original)

    StrategyTrainer.__qualname__ = StrategyTrainer.__name__ = f"Strategy{base.__name__}"
    StrategyTrainer.__module__ = __name__
    return StrategyTrainer
