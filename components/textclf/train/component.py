"""KFP component: train (thin wrapper around :func:`textclf.train.train_model`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train_op(
    splits: Input[Dataset],
    base_model: str,
    method: str,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    max_length: int,
    checkpoint_steps: int,
    early_stopping_patience: int,
    seed: int,
    checkpoint_root: str,
    model: Output[Model],
    tensorboard: Output[Artifact],
    hyperparameters: str = "",
) -> float:
    """Fine-tune a transformer classifier (``full``, ``lora`` merged for export, or ``qlora`` on CUDA).

    Args:
        splits: Output of the validate/split component.
        base_model: Hugging Face model directory (path, ``s3://`` or ``gs://`` prefix) or hub id; empty for the
            packaged all-MiniLM-L6-v2.
        method: ``full``, ``lora`` or ``qlora``.
        epochs: Passes over the training rows (fractions allowed).
        batch_size: Examples per optimiser step.
        learning_rate: Peak learning rate; 0 picks the method's default.
        max_length: Token limit (padding is dynamic per batch).
        checkpoint_steps: Checkpoint and validate every N steps.
        early_stopping_patience: Validations without improvement before stopping; 0 disables.
        seed: Seed for initialisation, shuffling and dropout.
        checkpoint_root: Where resumable checkpoints go: a directory (a persistent volume on a cluster) or an
            ``s3://`` / ``gs://`` prefix that each complete checkpoint is mirrored to; a rerun with the same
            parameters and data resumes from the newest one. Empty: no resume across runs.
        model: Output directory: safetensors weights, tokenizer, ``labels.json``, ``textclf_metadata.json``.
        tensorboard: Output directory: the run's TensorBoard event files (loss, learning rate, validation loss and
            accuracy); open its URI with a Kubeflow ``Tensorboard`` or ``tensorboard --logdir``. With
            ``MLFLOW_TRACKING_URI`` set in the step's environment the run is also logged to MLflow (parameters,
            metrics, the model); an unreachable server is a warning (:mod:`textclf.train.tracking`).
        hyperparameters: A tune stage's result applied over the settings above: ``tune_op``'s returned JSON
            (``{field: value}``), a ``best_params.json`` path, or empty for none.

    Returns:
        The validation accuracy of the saved (best) model.
    """
    from textclf.train import train_model
    from textclf.train.arguments import train_config_from_arguments
    from textclf.train.tracking import TrackingConfig, log_model, tracking_callbacks

    config = train_config_from_arguments(base_model, method, epochs, batch_size, learning_rate, max_length,
                                         checkpoint_steps, early_stopping_patience, seed, hyperparameters)
    callbacks = tracking_callbacks(TrackingConfig(tensorboard_dir=tensorboard.path),
                                   config.to_dict())
    result = train_model(splits.path, config, model.path, checkpoint_root=checkpoint_root or None,
                         callbacks=callbacks)
    log_model(callbacks, model.path, {"validation_accuracy": result.summary["validation_accuracy"]})
    tensorboard.metadata["logdir"] = tensorboard.uri
    model.metadata.update(
        {key: value for key, value in result.summary.items() if isinstance(value, (int, float, str, bool))}
    )
    model.metadata["framework"] = "transformers"
    return float(result.summary["validation_accuracy"])
