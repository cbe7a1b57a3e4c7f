"""The ``training`` pipeline: ingest -> validate/split -> train -> evaluate (with error analysis and robustness
suites) -> export -> registration gate [-> register, when the gate passes].

Parameter defaults come from the typed configs in :mod:`textclf.config`. ``build_training_pipeline(gpu=True)``
gives the variant whose train step runs on a GPU node in the GPU image (needed for ``method=qlora``).
"""


from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model
from kfp.dsl.pipeline_channel import PipelineParameterChannel

from textclf.config import EvaluateConfig, ExportConfig, IngestConfig, SplitConfig, TrainConfig, TrainMethod
from textclf.evaluate.component import evaluate_op
from textclf.export.component import export_op
from textclf.images import GPU_COMPONENT_IMAGE
from textclf.ingest.component import ingest_op
from textclf.registry.component import register_op
from textclf.robustness import RegistrationLimits
from textclf.robustness.component import registration_gate_op
from textclf.train.component import train_op
from textclf.trainjob.config import DistributedConfig, TrainJobConfig
from textclf.validate.component import validate_split_op

# The config classes' attributes hold their field defaults: the pipeline's parameter defaults are the same values.
_INGEST, _SPLIT, _TRAIN, _EXPORT = IngestConfig, SplitConfig, TrainConfig, ExportConfig
_EVALUATE, _LIMITS = EvaluateConfig, RegistrationLimits
_DISTRIBUTED, _TRAINJOB = DistributedConfig, TrainJobConfig

#: What a run hands back (``kfp.local`` returns these; the KFP UI lists them as the run's outputs).
TrainingOutputs = NamedTuple(
    "TrainingOutputs", splits=Dataset, validation_report=Markdown, model=Model, evaluation=Artifact,
    evaluation_report=HTML, metrics=Metrics, onnx_model=Model, parity=Metrics,
)


@dataclass(frozen=True)
class ModelSteps:
    """The tasks :func:`add_model_steps` adds to a pipeline."""

    ingest: Any
    split: Any
    train: Any
    evaluate: Any
    export: Any
    registration_gate: Any

    def outputs(self) -> dict[str, Any]:
        """The artifacts of these steps that a pipeline returns (the model-building part of its outputs)."""
        return {
            "splits": self.split.outputs["splits"], "validation_report": self.split.outputs["report"],
            "model": self.train.outputs["model"], "evaluation": self.evaluate.outputs["evaluation"],
            "evaluation_report": self.evaluate.outputs["report"], "metrics": self.evaluate.outputs["metrics"],
            "onnx_model": self.export.outputs["onnx_model"], "parity": self.export.outputs["parity"],
        }


def pipeline_parameters(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters, by name, of the ``@dsl.pipeline`` function whose ``locals()`` is ``scope``: while the function
    is being compiled they are pipeline channels (a closure's variables, also in ``locals()``, are not)."""
    return {name: value for name, value in scope.items() if isinstance(value, PipelineParameterChannel)}


def bind(component: Any, parameters: Mapping[str, Any], **wired: Any) -> Any:
    """A task of ``component``: each of its inputs named like a pipeline parameter gets that parameter, the
    ``wired`` ones (upstream outputs, or another parameter for an input of the same name) are passed as given, the
    rest keep the component's defaults."""
    inputs = component.component_spec.inputs or {}
    return component(**{name: value for name, value in parameters.items() if name in inputs and name not in wired},
                     **wired)


def add_data_steps(parameters: Mapping[str, Any]) -> tuple[Any, Any]:
    """Add ingest -> validate/split to the pipeline being defined; the ingest and split tasks. Every pipeline of
    this package reads its data this way."""
    ingest = bind(ingest_op, parameters).set_display_name("ingest")
    ingest.set_caching_options(False)  # the data behind a URI can change; always re-read it
    split = bind(validate_split_op, parameters, dataset=ingest.outputs["dataset"]).set_display_name("validate-split")
    return ingest, split


def add_model_steps(train_component: Any, gpu: bool, parameters: Mapping[str, Any]) -> ModelSteps:
    """Add ingest -> validate/split -> train -> evaluate -> export to the pipeline being defined (called inside a
    ``@dsl.pipeline`` function with its :func:`pipeline_parameters`). The components' input names are the pipeline's
    parameter names. Shared by the training and retraining pipelines, so both build a model the same way."""
    ingest, split = add_data_steps(parameters)
    train = bind(train_component, parameters, splits=split.outputs["splits"]).set_display_name("train")
    train.set_cpu_request("2").set_memory_request("8G").set_memory_limit("16G")
    if gpu:
        train.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    evaluate = bind(evaluate_op, parameters, model=train.outputs["model"], splits=split.outputs["splits"])
    evaluate.set_display_name("evaluate").set_memory_limit("8G")
    export = bind(export_op, parameters, model=train.outputs["model"], evaluation=evaluate.outputs["evaluation"])
    export.set_display_name("export").set_memory_limit("8G")
    return ModelSteps(ingest, split, train, evaluate, export, add_registration_gate(parameters, evaluate, export))


def add_registration_gate(parameters: Mapping[str, Any], evaluate: Any, export: Any) -> Any:
    """Add the registration gate over an evaluate and an export task (its limits are the pipeline's parameters)."""
    return bind(registration_gate_op, parameters, evaluation=evaluate.outputs["evaluation"],
                onnx_model=export.outputs["onnx_model"]).set_display_name("registration-gate")


def add_gated_registration(model: Any, evaluate: Any, export: Any, gate: Any, registry_uri: Any, notes: Any) -> None:
    """Register ``model`` (with its evaluation and export) as a new candidate when a registry is given and the
    registration gate passed; otherwise the gate's ``reasons`` output says why nothing was registered."""
    with dsl.If(registry_uri != "", name="register-requested"):
        with dsl.If(gate.outputs["passed"] == True, name="registration-gate-passed"):  # noqa: E712 - a KFP condition
            register_op(model=model, onnx_model=export.outputs["onnx_model"],
                        evaluation=evaluate.outputs["evaluation"], registry_uri=registry_uri, notes=notes,
                        ).set_display_name("register").set_caching_options(False)


def train_component_for(gpu: bool) -> Any:
    """The train component: as is, or in the GPU image (needed for ``method=qlora``)."""
    if gpu:
        return dsl.component(base_image=GPU_COMPONENT_IMAGE, install_kfp_package=False)(train_op.python_func)
    return train_op


def build_training_pipeline(gpu: bool = False) -> Any:
    """Return the training pipeline function (CPU, or with the train step on one NVIDIA GPU)."""
    train_component = train_component_for(gpu)

    @dsl.pipeline(
        name="textclf-training-gpu" if gpu else "textclf-training",
        description="Fine-tune a transformer text classifier (full, LoRA or QLoRA), evaluate it on the held-out "
        "test set and export it to ONNX fp32 + INT8 with a parity check.",
    )
    def training_pipeline(
        dataset_uri: str,
        dataset_format: str = _INGEST.dataset_format,
        text_columns: str = ",".join(_INGEST.text_columns),
        label_column: str = _INGEST.label_column,
        method: str = TrainMethod.QLORA.value if gpu else _TRAIN.method,
        base_model: str = "",
        epochs: float = _TRAIN.epochs,
        batch_size: int = _TRAIN.batch_size,
        learning_rate: float = _TRAIN.learning_rate,
        max_length: int = _TRAIN.max_length,
        max_train_rows: int = _SPLIT.max_train_rows,
        max_test_rows: int = _SPLIT.max_test_rows,
        validation_fraction: float = _SPLIT.validation_fraction,
        max_invalid_fraction: float = _SPLIT.max_invalid_fraction,
        checkpoint_steps: int = _TRAIN.checkpoint_steps,
        early_stopping_patience: int = _TRAIN.early_stopping_patience,
        checkpoint_root: str = "",
        seed: int = _SPLIT.seed,
        opset: int = _EXPORT.opset,
        min_int8_agreement: float = _EXPORT.min_int8_agreement,
        robustness_suites: str = _EVALUATE.robustness_suites,
        robustness_max_rows: int = _EVALUATE.robustness_max_rows,
        min_accuracy: float = _LIMITS.min_accuracy,
        max_robustness_drop: float = _LIMITS.max_robustness_drop,
        max_model_mb: float = _LIMITS.max_model_mb,
        registry_uri: str = "",
        registry_notes: str = "",
        hyperparameters: str = "",
        lora_r: int = _TRAIN.lora_r,
        lora_alpha: int = _TRAIN.lora_alpha,
        lora_dropout: float = _TRAIN.lora_dropout,
        lora_target_modules: str = "",
        label_smoothing: float = _TRAIN.label_smoothing,
        precision: str = _TRAIN.precision,
        gradient_accumulation_steps: int = _TRAIN.gradient_accumulation_steps,
        gradient_checkpointing: bool = _TRAIN.gradient_checkpointing,
        class_weights: str = _TRAIN.class_weights,
        layerwise_lr_decay: float = _TRAIN.layerwise_lr_decay,
        adversarial: str = _TRAIN.adversarial,
        adversarial_epsilon: float = _TRAIN.adversarial_epsilon,
        pgd_steps: int = _TRAIN.pgd_steps,
        curriculum: str = _TRAIN.curriculum,
        workers: int = _DISTRIBUTED.workers,
        num_nodes: int = _DISTRIBUTED.num_nodes,
        trainjob_namespace: str = _TRAINJOB.namespace,
        trainjob_runtime_name: str = _TRAINJOB.runtime_name,
        trainjob_cpu: str = _TRAINJOB.cpu,
        trainjob_memory: str = _TRAINJOB.memory,
        trainjob_gpus: int = 1 if gpu else _TRAINJOB.gpus,
        trainjob_start_timeout_seconds: float = _TRAINJOB.start_timeout_seconds,
        trainjob_timeout_seconds: float = _TRAINJOB.timeout_seconds,
    ) -> TrainingOutputs:
        """Args: see the components; ``dataset_uri`` (a path, ``s3://`` or ``gs://`` prefix) is required,
        ``base_model`` empty means the packaged all-MiniLM-L6-v2, ``checkpoint_root`` a persistent path or object-store
        prefix that lets a rerun resume training, ``registry_uri`` non-empty registers the exported model there as a
        new ``candidate`` version when the registration gate passes (``min_accuracy``, ``max_robustness_drop`` in
        points, ``max_model_mb`` of the INT8 model; 0 = off; its ``reasons`` say why not), ``robustness_suites`` /
        ``robustness_max_rows`` what the evaluate step's robustness suites score (``none``: no suites),
        ``hyperparameters`` a tune stage's result (``tune_op``'s JSON or a
        ``best_params.json`` path) applied over the train settings, ``workers`` > 1 trains in a Kubeflow Trainer
        TrainJob of that many DDP processes on ``num_nodes`` pods (the ``trainjob_*`` parameters: its namespace,
        TrainingRuntime, per-node resources and timeouts; see ``train_op``), and the training strategies
        (``label_smoothing``, ``precision``, ``gradient_accumulation_steps``, ``gradient_checkpointing``,
        ``class_weights``, ``layerwise_lr_decay``, ``adversarial``, ``adversarial_epsilon``, ``pgd_steps``,
        ``curriculum``; see ``train_op``) go to the train step."""
        steps = add_model_steps(train_component, gpu, pipeline_parameters(locals()))
        add_gated_registration(steps.train.outputs["model"], steps.evaluate, steps.export, steps.registration_gate,
                               registry_uri, registry_notes)
        # The registered version cannot be an output: a task inside dsl.If gives one only through dsl.OneOf, which
        # needs a dsl.Else branch; the local runner reads it from the registry instead.
        return TrainingOutputs(**steps.outputs())

    return training_pipeline


training_pipeline = build_training_pipeline(gpu=False)
training_pipeline_gpu = build_training_pipeline(gpu=True)
