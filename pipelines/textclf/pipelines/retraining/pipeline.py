"""The ``retraining`` pipeline: current + newly labelled data -> validate (same leakage checks) -> train a candidate
-> evaluate it and the production model on the same held-out test set -> register the candidate -> promotion gate
(McNemar's test AND a minimum accuracy gain) -> ``dsl.If``: promote, ``dsl.Else``: archive with the gate's reason.

How a passed candidate is promoted is ``rollout_mode`` (a pipeline parameter, so one compiled YAML serves both):

* ``registry`` (the default: no cluster needed, what ``make loop`` and the local runner use): the registry's
  production pointer moves at once and the InferenceService for it is rendered as an artifact (``promote_op``).
* ``kserve``: the candidate runs as a KServe canary at ``canary_traffic_percent`` through the Kubernetes API
  (``rollout_op``, RBAC in ``manifests/rollout``); after the A/B window (the monitor's ``/v1/ab`` evidence,
  latency and error-rate guards) it is promoted to 100% or rolled back, and the registry's pointer follows what
  is served.

After a promotion (either mode) the drift reference is rebuilt for the promoted model (``drift_reference_op``).

Parameter defaults come from the typed configs (:mod:`textclf.config`, :class:`textclf.gate.GateConfig`,
:class:`textclf.rollout.RolloutConfig`, :class:`textclf.rollout.RolloutGuards`), as in the training pipeline, whose
model-building steps it reuses (:func:`textclf.pipelines.training.pipeline.add_model_steps`).
"""

from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

from textclf.config import EvaluateConfig, ExportConfig, IngestConfig, SplitConfig, TrainConfig
from textclf.evaluate.component import evaluate_production_op
from textclf.gate import GateConfig
from textclf.gate.component import gate_op
from textclf.monitor.component import drift_reference_op
from textclf.pipelines.training.pipeline import add_model_steps, bind, pipeline_parameters, train_component_for
from textclf.registry.component import archive_op, promote_op, register_op
from textclf.robustness import RegistrationLimits
from textclf.rollout import RolloutConfig, RolloutGuards
from textclf.rollout.component import rollout_op
from textclf.trainjob.config import DistributedConfig, TrainJobConfig

_INGEST, _SPLIT, _TRAIN, _EXPORT, _GATE = IngestConfig, SplitConfig, TrainConfig, ExportConfig, GateConfig
_ROLLOUT, _GUARDS = RolloutConfig(), RolloutGuards()
_EVALUATE, _LIMITS = EvaluateConfig, RegistrationLimits
_DISTRIBUTED, _TRAINJOB = DistributedConfig, TrainJobConfig

#: What a run hands back: the training pipeline's outputs, the registered candidate and the gate's decision.
RetrainingOutputs = NamedTuple(
    "RetrainingOutputs", splits=Dataset, validation_report=Markdown, model=Model, evaluation=Artifact,
    evaluation_report=HTML, metrics=Metrics, onnx_model=Model, parity=Metrics, registered_version=str,
    decision=Artifact, gate_metrics=Metrics,
)


@dsl.pipeline(
    name="textclf-retraining",
    description="Retrain on current + newly labelled data, compare the candidate with the production model on the "
    "same test set (McNemar + minimum gain) and promote it (registry + InferenceService, or a KServe canary with an "
    "A/B window, then promote or roll back) or archive it.",
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
    robustness_suites: str = _EVALUATE.robustness_suites,
    robustness_max_rows: int = _EVALUATE.robustness_max_rows,
    min_accuracy: float = _LIMITS.min_accuracy,
    max_robustness_drop: float = _LIMITS.max_robustness_drop,
    max_model_mb: float = _LIMITS.max_model_mb,
    alpha: float = _GATE.alpha,
    min_improvement: float = _GATE.min_improvement,
    inference_service_name: str = "textclf",
    rollout_mode: str = _ROLLOUT.rollout_mode,
    monitor_url: str = "",
    reference_uri: str = "",
    namespace: str = "",
    prometheus_url: str = "",
    registry_serving_uri: str = "",
    canary_traffic_percent: int = _ROLLOUT.canary_traffic_percent,
    ab_window_seconds: int = _ROLLOUT.ab_window_seconds,
    ab_poll_seconds: int = _ROLLOUT.ab_poll_seconds,
    ab_min_labelled: int = _GUARDS.min_labelled,
    ab_alpha: float = _GUARDS.alpha,
    max_accuracy_drop: float = _GUARDS.max_accuracy_drop,
    max_p99_latency_ratio: float = _GUARDS.max_p99_latency_ratio,
    max_error_rate: float = _GUARDS.max_error_rate,
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
    trainjob_gpus: int = _TRAINJOB.gpus,
    trainjob_start_timeout_seconds: float = _TRAINJOB.start_timeout_seconds,
    trainjob_timeout_seconds: float = _TRAINJOB.timeout_seconds,
) -> RetrainingOutputs:
    """Args: as the training pipeline, plus ``registry_uri`` (required: where production is read and the candidate
    registered), ``new_rows_uri`` (directory with a ``train`` file of newly labelled rows), ``trigger_reason``
    (recorded with the candidate), ``alpha`` / ``min_improvement`` (the gate: 0.005 = +0.5 points; 0.02 = the
    design's +2%), the registration gate's limits (``min_accuracy``, ``max_robustness_drop``, ``max_model_mb``; a
    candidate that misses one is registered and archived with the reason, so the registry records why it did not
    ship), ``rollout_mode`` (``registry``: promote in the registry at once; ``kserve``: canary on the
    cluster, see the module docstring), the canary's settings (used with ``kserve`` only; see ``rollout_op``) and
    ``reference_uri`` (where the promoted model's drift reference is also published: the running monitor's
    ``--reference``, which it follows; empty: only the pipeline artifact)."""
    parameters = pipeline_parameters(locals())
    steps = add_model_steps(train_component_for(False), False, parameters)
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
        registration_passed=steps.registration_gate.outputs["passed"],
        registration_reasons=steps.registration_gate.outputs["reasons"],
    ).set_display_name("promotion-gate").set_caching_options(False)
    def drift_reference(promoted: Any) -> None:
        """The drift reference of the promoted model (the monitor compares live traffic with it)."""
        drift_reference_op(splits=steps.split.outputs["splits"], onnx_model=steps.export.outputs["onnx_model"],
                           evaluation=steps.evaluate.outputs["evaluation"], publish_uri=reference_uri,
                           ).after(promoted).set_display_name("drift-reference").set_memory_limit("8G")

    with dsl.If(gate.outputs["Output"] == "promote", name="gate-promotes"):
        with dsl.If(rollout_mode == "kserve", name="canary-rollout"):
            rollout = bind(rollout_op, parameters, version=register.outputs["Output"],
                           decision=gate.outputs["decision"])
            rollout.set_display_name("canary-rollout").set_caching_options(False)
            with dsl.If(rollout.outputs["Output"] == "promote", name="canary-promoted"):
                drift_reference(rollout)
        with dsl.Else(name="registry-promote"):
            # The pointer moves at once, so the rendered InferenceService sends all traffic to the new model (a canary
            # manifest would make the pointer name a model that serves only part of it).
            promote = promote_op(
                registry_uri=registry_uri, version=register.outputs["Output"], decision=gate.outputs["decision"],
                inference_service_name=inference_service_name,
            ).set_display_name("promote").set_caching_options(False)
            drift_reference(promote)
    with dsl.Else(name="gate-archives"):
        archive_op(
            registry_uri=registry_uri, version=register.outputs["Output"], decision=gate.outputs["decision"],
        ).set_display_name("archive").set_caching_options(False)
    return RetrainingOutputs(
        **steps.outputs(), registered_version=register.outputs["Output"], decision=gate.outputs["decision"],
        gate_metrics=gate.outputs["metrics"],
    )
