"""KFP component: distill (thin wrapper around :func:`textclf.distill.stage.distill_student`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def distill_op(
    splits: Input[Dataset],
    teacher_logits: Input[Dataset],
    teacher: Input[Model],
    temperature: float,
    alpha: float,
    student_layers: int,
    student_init: str,
    base_model: str,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    max_length: int,
    checkpoint_steps: int,
    early_stopping_patience: int,
    seed: int,
    checkpoint_root: str,
    model: Output[Model],
) -> float:
    """Train a student with ``student_layers`` of the teacher's encoder layers on the teacher's stored logits.

    Loss: ``alpha * CE(labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))``. Defaults
    of ``temperature``, ``alpha``, ``student_layers`` and ``student_init`` are :class:`textclf.config.DistillConfig`'s;
    the training ones :class:`textclf.config.TrainConfig`'s. Every value is checked before any weights load.

    Args:
        splits: Output of the validate/split component.
        teacher_logits: A logits directory with ``train_logits.parquet`` (the ensemble component's
            ``teacher_logits``, or a transformer's logits); unused when ``alpha`` is 1.
        teacher: The fine-tuned teacher (its layers initialise the student when ``student_init`` is ``teacher``).
        temperature: Softening temperature ``T`` > 0 of the KL term.
        alpha: Weight on the cross-entropy with the labels, in [0, 1] (1: labels only).
        student_layers: Encoder layers the student keeps, evenly spaced, 1..(the teacher's layers).
        student_init: ``teacher`` (the fine-tuned teacher's weights) or ``base`` (the base model's).
        base_model: The base model for ``student_init=base``; empty for the packaged all-MiniLM-L6-v2.
        epochs: Passes over the training rows.
        batch_size: Examples per optimiser step.
        learning_rate: Peak learning rate; 0 picks the default.
        max_length: Token limit.
        checkpoint_steps: Checkpoint and validate every N steps.
        early_stopping_patience: Validations without improvement before stopping; 0 disables.
        seed: Seed for shuffling and dropout.
        checkpoint_root: Resumable checkpoints (a directory or ``s3://`` / ``gs://`` prefix); empty: no resume.
        model: Output directory in the train component's layout (weights, tokenizer, ``labels.json``,
            ``textclf_metadata.json`` with a ``distillation`` section), read by evaluate, export and register.

    Returns:
        The student's validation accuracy.
    """
    from textclf.config import DistillConfig, StudentInit, TrainConfig, default_base_model
    from textclf.distill.stage import distill_student

    distill = DistillConfig(temperature=float(temperature), alpha=float(alpha), student_layers=int(student_layers),
                            init=student_init)
    train = TrainConfig(
        epochs=float(epochs), batch_size=int(batch_size), learning_rate=float(learning_rate),
        max_length=int(max_length), checkpoint_steps=int(checkpoint_steps),
        early_stopping_patience=int(early_stopping_patience), seed=int(seed),
    )
    source = teacher.path if distill.student_init is StudentInit.TEACHER else (base_model or default_base_model())
    result = distill_student(splits.path, teacher_logits.path, source, distill, train, model.path,
                             checkpoint_root=checkpoint_root or None)
    model.metadata.update(
        {key: value for key, value in result.summary.items() if isinstance(value, (int, float, str, bool))}
    )
    model.metadata.update({"framework": "transformers", "student_layers": distill.student_layers,
                           "temperature": distill.temperature, "alpha": distill.alpha})
    return float(result.summary["validation_accuracy"])
