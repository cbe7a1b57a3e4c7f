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
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.1,
    lora_target_modules: str = "",
    label_smoothing: float = 0.0,
    precision: str = "fp32",
    gradient_accumulation_steps: int = 1,
    gradient_checkpointing: bool = False,
    class_weights: str = "none",
    layerwise_lr_decay: float = 1.0,
    adversarial: str = "none",
    adversarial_epsilon: float = 1.0,
    pgd_steps: int = 3,
    curriculum: str = "none",
    workers: int = 1,
    num_nodes: int = 1,
    trainjob_namespace: str = "kubeflow",
    trainjob_runtime_name: str = "textclf-torch-distributed",
    trainjob_cpu: str = "2",
    trainjob_memory: str = "8Gi",
    trainjob_gpus: int = 0,
    trainjob_start_timeout_seconds: float = 600.0,
    trainjob_timeout_seconds: float = 0.0,
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
        lora_r: LoRA rank (``lora`` and ``qlora``).
        lora_alpha: LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``).
        lora_dropout: Dropout on the LoRA branch, in [0, 1).
        lora_target_modules: Comma-separated names of the Linear modules LoRA adapts (e.g. ``q_proj,v_proj``);
            empty: the attention projections of the base model's architecture (BERT, DistilBERT, RoBERTa,
            DeBERTa-v2, MPNet, Llama-style and every architecture PEFT knows; ``textclf.train.lora``). A name
            that matches no module, or an architecture with no known targets and none given, fails before
            training with the model's Linear module names.
        label_smoothing: Label-smoothing factor of the cross-entropy, in [0, 1).
        precision: ``fp32``, ``bf16`` (autocast; a CPU needs the ``avx512_bf16`` or ``amx_bf16`` flag, else the
            step fails at once naming them), ``fp16`` (GPU only) or ``auto`` (bf16 where native, fp16 on a GPU
            without it, else fp32). Master weights and the saved model stay fp32.
        gradient_accumulation_steps: Micro-batches per optimiser step (``batch_size`` stays the step's examples;
            less memory, same result).
        gradient_checkpointing: Recompute activations in the backward pass (less memory, more compute).
        class_weights: ``none`` or ``balanced`` (inverse class frequency of the train split) weights of the
            training cross-entropy.
        layerwise_lr_decay: Layer-wise learning-rate decay in (0, 1]: layer i of L trains at ``lr * decay ** (L -
            i)``, the embeddings at ``lr * decay ** (L + 1)``, the head at ``lr``; 1 disables.
        adversarial: ``none``, ``fgm`` or ``pgd`` adversarial training on the word embeddings (training only; the
            saved model is the plain one; needs method ``full``).
        adversarial_epsilon: L2 size of the adversarial perturbation of the embedding matrix.
        pgd_steps: Steps of ``pgd``.
        curriculum: ``none`` or ``length`` (the first epoch short to long).
        workers: DDP training processes in all. 1: this step trains in its own pod. More: this step creates a
            Kubeflow Trainer ``TrainJob`` (trainer.kubeflow.org/v1alpha1) on the TrainingRuntime
            ``trainjob_runtime_name`` (manifests/trainer/), running ``torchrun -m textclf.trainjob.worker`` on
            ``num_nodes`` pods, waits for ``Complete``, downloads the model rank 0 wrote to this step's output URI,
            prints the first trainer node's log, and fails with the TrainJob's message and log tail on ``Failed``.
            ``batch_size`` stays the global batch (a multiple of ``workers``); splits, output and
            ``checkpoint_root`` must be on an object store the pods reach (s3://, gs://, minio://). The step's
            service account needs create/get/delete on trainjobs and get/list on pods and pods/log; the API
            server comes from ``$TEXTCLF_KUBE_HOST``, else the in-cluster service account. The TrainJob's curves
            are not in ``tensorboard`` (the pods write none there).
        num_nodes: TrainJob pods the ``workers`` processes are spread over (``workers`` a multiple of it).
        trainjob_namespace: Namespace of the TrainJob and its TrainingRuntime.
        trainjob_runtime_name: The TrainingRuntime the TrainJob references.
        trainjob_cpu: CPU request and limit per TrainJob node (a Kubernetes quantity).
        trainjob_memory: Memory request and limit per TrainJob node (a Kubernetes quantity).
        trainjob_gpus: ``nvidia.com/gpu`` per TrainJob node (> 0: nccl and the GPU component image).
        trainjob_start_timeout_seconds: Fail (and delete the TrainJob) when no trainer pod runs after this long.
        trainjob_timeout_seconds: Fail (and delete it) when it has not finished after this long; 0: no limit.

    Returns:
        The validation accuracy of the saved (best) model.
    """
    from textclf.train import train_model
    from textclf.train.arguments import train_config_from_arguments
    from textclf.train.tracking import TrackingConfig, log_model, tracking_callbacks
    from textclf.trainjob.config import DistributedConfig, TrainJobConfig

    config = train_config_from_arguments(base_model, method, epochs, batch_size, learning_rate, max_length,
                                         checkpoint_steps, early_stopping_patience, seed, hyperparameters,
                                         lora_r, lora_alpha, lora_dropout, lora_target_modules,
                                         label_smoothing=label_smoothing, precision=precision,
                                         gradient_accumulation_steps=gradient_accumulation_steps,
                                         gradient_checkpointing=gradient_checkpointing, class_weights=class_weights,
                                         layerwise_lr_decay=layerwise_lr_decay, adversarial=adversarial,
                                         adversarial_epsilon=adversarial_epsilon, pgd_steps=pgd_steps,
                                         curriculum=curriculum)
    distributed = DistributedConfig(workers=int(workers), num_nodes=int(num_nodes))  # refuses workers < 1 now
    if distributed.workers > 1:
        from textclf.trainjob.kube import kube_api_client, train_with_trainjob

        job = TrainJobConfig(
            distributed=distributed, namespace=trainjob_namespace, runtime_name=trainjob_runtime_name,
            cpu=trainjob_cpu, memory=trainjob_memory, gpus=int(trainjob_gpus),
            start_timeout_seconds=float(trainjob_start_timeout_seconds),
            timeout_seconds=float(trainjob_timeout_seconds),
        )
        summary = train_with_trainjob(splits.uri, config, model.uri, model.path, job, kube_api_client(),
                                      checkpoint_root=checkpoint_root, echo=print)
    else:
        callbacks = tracking_callbacks(TrackingConfig(tensorboard_dir=tensorboard.path), config.to_dict())
        result = train_model(splits.path, config, model.path, checkpoint_root=checkpoint_root or None,
                             callbacks=callbacks)
        log_model(callbacks, model.path, {"validation_accuracy": result.summary["validation_accuracy"]})
        summary = result.summary
    tensorboard.metadata["logdir"] = tensorboard.uri
    model.metadata.update({key: value for key, value in summary.items() if isinstance(value, (int, float, str, bool))})
    model.metadata["framework"] = "transformers"
    return float(summary["validation_accuracy"])
