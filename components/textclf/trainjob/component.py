"""KFP component: the train step as a Kubeflow Trainer ``TrainJob`` (thin wrapper around
:func:`textclf.trainjob.kube.train_with_trainjob`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def trainjob_op(
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
    workers: int,
    num_nodes: int,
    namespace: str,
    runtime_name: str,
    cpu: str,
    memory: str,
    gpus: int,
    start_timeout_seconds: float,
    timeout_seconds: float,
    model: Output[Model],
    hyperparameters: str = "",
) -> float:
    """Fine-tune like ``train_op``, with ``workers`` DDP processes in a Kubeflow Trainer TrainJob.

    Creates a trainer.kubeflow.org/v1alpha1 TrainJob on the TrainingRuntime ``runtime_name`` (manifests/trainer/)
    running ``torchrun -m textclf.trainjob.worker`` on ``num_nodes`` pods (``workers / num_nodes`` processes
    each), waits for ``Complete``, prints the first trainer node's log, and fails with the TrainJob's message and
    log tail on ``Failed``. The step's service account needs create/get/delete on trainjobs and get/list on pods
    and pods/log in ``namespace``.

    Args:
        splits: Output of the validate/split component (on the pipeline root's s3:// / gs:// / minio:// store).
        base_model ... checkpoint_root: As ``train_op``; ``batch_size`` is the global batch (a multiple of
            ``workers``); ``checkpoint_root`` must be reachable from the pods (s3:// or gs://) to resume.
        workers: DDP processes in all (>= 1).
        num_nodes: Pods the processes are spread over (``workers`` a multiple of it).
        namespace: Namespace of the TrainJob and its TrainingRuntime.
        runtime_name: The TrainingRuntime (``textclf-torch-distributed``).
        cpu, memory, gpus: Requests and limits per node (gpus > 0: nccl).
        start_timeout_seconds: Fail (and delete the TrainJob) when no trainer pod runs after this long.
        timeout_seconds: Fail (and delete it) when it has not finished after this long; 0: no limit.
        model: Output directory, as ``train_op``'s.
        hyperparameters: A tune stage's result applied over the settings, as ``train_op``'s.

    Returns:
        The validation accuracy of the saved (best) model.
    """
    from textclf.train.arguments import train_config_from_arguments
    from textclf.trainjob.config import DistributedConfig, TrainJobConfig
    from textclf.trainjob.kube import kube_api_client, train_with_trainjob

    config = train_config_from_arguments(base_model, method, epochs, batch_size, learning_rate, max_length,
                                         checkpoint_steps, early_stopping_patience, seed, hyperparameters)
    job = TrainJobConfig(
        distributed=DistributedConfig(workers=int(workers), num_nodes=int(num_nodes)), namespace=namespace,
        runtime_name=runtime_name, cpu=cpu, memory=memory, gpus=int(gpus),
        start_timeout_seconds=float(start_timeout_seconds), timeout_seconds=float(timeout_seconds),
    )
    summary = train_with_trainjob(splits.uri, config, model.uri, model.path, job,
                                  kube_api_client(),
                                  checkpoint_root=checkpoint_root, echo=print)
    model.metadata.update({key: value for key, value in summary.items() if isinstance(value, (int, float, str, bool))})
    model.metadata["framework"] = "transformers"
    return float(summary["validation_accuracy"])
