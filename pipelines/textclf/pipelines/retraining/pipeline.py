"""The ``retraining`` pipeline: current + newly labelled data -> validate (same leakage checks) -> train a candidate
-> evaluate it and the production model on the same held-out test set -> register the candidate -> promotion gate
(McNemar's test AND a minimum accuracy gain) -> ``dsl.If``: promote and render the InferenceService, ``dsl.Else``:
archive with the gate's reason.

Parameter defaults come from the typed configs (:mod:`textclf.config`, :class:`textclf.gate.GateConfig`), as in the
training pipeline, whose model-building steps it reuses (:func:`textclf.pipelines.training.pipeline.add_model_steps`).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

from textclf.config import ExportConfig, IngestConfig, SplitConfig, TrainConfig
from textclf.evaluate.component import evaluate_production_op
from textclf.gate import GateConfig
from textclf.gate.component import gate_op
from textclf.pipelines.training.pipeline import add_model_steps, pipeline_parameters, train_component_for
from textclf.registry.component import archive_op, promote_op, register_op

_INGEST, _SPLIT, _TRAIN, _EXPORT, _GATE = IngestConfig, SplitConfig, TrainConfig, ExportConfig, GateConfig

#: What a run hands back: the training pipeline's outputs, the registered candidate and the gate's decision.
RetrainingOutputs = NamedTuple(
    "RetrainingOutputs", splits=Dataset, validation_report=Markdown, model=Model, evaluation=Artifact,
    evaluation_report=HTML, metrics=Metrics, onnx_model=Model, parity=Metrics, registered_version=str,
    decision=Artifact, gate_metrics=Metrics,
)


@dsl.pipeline(
    name="textclf-retraining",
    description="Retrain on current + newly labelled data, compare the candidate with the production model on the "
    "same test set (McNemar + minimum gain) and promote it (registry + InferenceService) or archive it.",
)
def retraining_pipeline(
    dataset_uri: str,
    registry_uri: str,
    new_rows_uri: str = "",
    trigger_reason: str = "",
    dataset_format: str = _INGEST.dataset_format,
    text_columns: str = ",".join(_INGEST.text_columns),
    label_column: str = _INGEST.label_column,
    method: str = _TRAIN.method,
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
    alpha: float = _GATE.alpha,
    min_improvement: float = _GATE.min_improvement,
    inference_service_name: str = "textclf",
    canary_traffic_percent: int = -1,
) -> RetrainingOutputs:
    """Args: as the training pipeline, plus ``registry_uri`` (required: where production is read and the candidate
    registered), ``new_rows_uri`` (directory with a ``train`` file of newly labelled rows), ``trigger_reason``
    (recorded with the candidate), ``alpha`` / ``min_improvement`` (the gate: 0.005 = +0.5 points; 0.02 = the
    design's +2%), ``canary_traffic_percent`` (-1: all traffic to the promoted model)."""
    steps = add_model_steps(train_component_for(False), False, pipeline_parameters(locals()))
    production = evaluate_production_op(registry_uri=registry_uri, splits=steps.split.outputs["splits"])
    production.set_display_name("evaluate-production").set_memory_limit("8G").set_caching_options(False)
    register = register_op(
        model=steps.train.outputs["model"], onnx_model=steps.export.outputs["onnx_model"],
        evaluation=steps.evaluate.outputs["evaluation"], registry_uri=registry_uri, notes=trigger_reason,
    ).set_display_name("register-candidate").set_caching_options(False)
    gate = gate_op(
        candidate_evaluation=steps.evaluate.outputs["evaluation"],
        production_evaluation=production.outputs["evaluation"],
        has_production=production.outputs["Output"], alpha=alpha, min_improvement=min_improvement,
    ).set_display_name("promotion-gate").set_caching_options(False)
    with dsl.If(gate.outputs["Output"] == "promote", name="gate-promotes"):
        promote_op(
            registry_uri=registry_uri, version=register.output, decision=gate.outputs["decision"],
            inference_service_name=inference_service_name, canary_traffic_percent=canary_traffic_percent,
        ).set_display_name("promote").set_caching_options(False)
    with dsl.Else(name="gate-archives"):
        archive_op(
            registry_uri=registry_uri, version=register.output, decision=gate.outputs["decision"],
        ).set_display_name("archive").set_caching_options(False)
    return RetrainingOutputs(
        **steps.outputs(), registered_version=register.output, decision=gate.outputs["decision"],
        gate_metrics=gate.outputs["metrics"],
    )
