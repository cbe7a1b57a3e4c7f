"""The ``training`` pipeline: ingest -> validate/split -> train -> evaluate -> export [-> register].

Parameter defaults come from the typed configs in :mod:`textclf.config`. ``build_training_pipeline(gpu=True)``
gives the variant whose train step runs on a GPU node in the GPU image (needed for ``method=qlora``).
"""


from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Model

from textclf.config import ExportConfig, IngestConfig, SplitConfig, TrainConfig, TrainMethod
from textclf.evaluate.component import evaluate_op
from textclf.export.component import export_op
from textclf.images import GPU_COMPONENT_IMAGE
from textclf.ingest.component import ingest_op
from textclf.registry.component import register_op
from textclf.train.component import train_op
from textclf.validate.component import validate_split_op

# The config classes' attributes hold their field defaults: the pipeline's parameter defaults are the same values.
_INGEST, _SPLIT, _TRAIN, _EXPORT = IngestConfig, SplitConfig, TrainConfig, ExportConfig

TrainingOutputs = NamedTuple("TrainingOutputs", model=Model, onnx_model=Model, metrics=Metrics)


def build_training_pipeline(gpu: bool = False) -> Any:
    """Return the training pipeline function (CPU, or with the train step on one NVIDIA GPU)."""
    train_component = (
        dsl.component(base_image=GPU_COMPONENT_IMAGE, install_kfp_package=False)(train_op.python_func)
        if gpu
        else train_op
    )

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
        registry_uri: str = "",
        registry_notes: str = "",
    ) -> TrainingOutputs:
        """Args: see the components; ``dataset_uri`` (a path, ``s3://`` or ``gs://`` prefix) is required,
        ``base_model`` empty means the packaged all-MiniLM-L6-v2, ``checkpoint_root`` a persistent path or object-store
        prefix that lets a rerun resume training, ``registry_uri`` non-empty registers the exported model there as a
        new ``candidate`` version."""
        ingest = ingest_op(
            dataset_uri=dataset_uri, dataset_format=dataset_format, text_columns=text_columns,
            label_column=label_column,
        ).set_display_name("ingest")
        ingest.set_caching_options(False)  # the data behind a URI can change; always re-read it
        split = validate_split_op(
            dataset=ingest.outputs["dataset"], validation_fraction=validation_fraction,
            max_train_rows=max_train_rows, max_test_rows=max_test_rows, max_invalid_fraction=max_invalid_fraction,
            seed=seed,
        ).set_display_name("validate-split")
        train = train_component(
            splits=split.outputs["splits"], base_model=base_model, method=method, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, max_length=max_length,
            checkpoint_steps=checkpoint_steps, early_stopping_patience=early_stopping_patience, seed=seed,
            checkpoint_root=checkpoint_root,
        ).set_display_name("train")
        train.set_cpu_request("2").set_memory_request("8G").set_memory_limit("16G")
        if gpu:
            train.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        evaluate = evaluate_op(model=train.outputs["model"], splits=split.outputs["splits"])
        evaluate.set_display_name("evaluate").set_memory_limit("8G")
        export = export_op(model=train.outputs["model"], evaluation=evaluate.outputs["evaluation"], opset=opset)
        export.set_display_name("export").set_memory_limit("8G")
        with dsl.If(registry_uri != "", name="register-requested"):
            register_op(
                model=train.outputs["model"], onnx_model=export.outputs["onnx_model"],
                evaluation=evaluate.outputs["evaluation"], registry_uri=registry_uri, notes=registry_notes,
            ).set_display_name("register").set_caching_options(False)
        return TrainingOutputs(
            model=train.outputs["model"], onnx_model=export.outputs["onnx_model"], metrics=evaluate.outputs["metrics"]
        )

    return training_pipeline


training_pipeline = build_training_pipeline(gpu=False)
training_pipeline_gpu = build_training_pipeline(gpu=True)
