"""The ``distillation`` pipeline: ingest -> validate/split -> teacher transformer + TF-IDF classical model ->
ensemble (soft vote or stacking, fitted on validation) -> distill a k-layer student on the ensemble's logits ->
evaluate the student (temperature fitted on validation, ECE before/after) -> compare every model on the test set
side by side -> export the student (ONNX + INT8 with the parity gate, the temperature in its metadata) -> a
confidence cascade of the TF-IDF model (stage 1) and the exported student (stage 2), its threshold chosen on
validation [-> register].

Calibration is not a task of its own: the evaluate and compare tasks fit each model's temperature on its
validation logits (the test set only reports the ECE before and after), and export carries the student's into the
bundle the server loads. Parameter defaults come from the typed configs (:mod:`textclf.config`), as in the training
pipeline, whose ingest and split steps it reuses.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

from textclf.cascade.component import cascade_op
from textclf.classical.component import train_classical_op
from textclf.compare.component import compare_models_op
from textclf.config import (
    CascadeConfig,
    ClassicalConfig,
    DistillConfig,
    EnsembleConfig,
    EvaluateConfig,
    ExportConfig,
    IngestConfig,
    SplitConfig,
    TrainConfig,
    TrainMethod,
)
from textclf.distill.component import distill_op
from textclf.ensemble.component import ensemble_op, transformer_logits_op
from textclf.evaluate.component import evaluate_op
from textclf.export.component import export_op
from textclf.pipelines.training.pipeline import (
    add_data_steps,
    add_gated_registration,
    add_registration_gate,
    bind,
    pipeline_parameters,
)
from textclf.robustness import RegistrationLimits
from textclf.train.component import train_op

_INGEST, _SPLIT, _TRAIN, _EXPORT, _DISTILL, _ENSEMBLE, _CASCADE = (
    IngestConfig, SplitConfig, TrainConfig, ExportConfig, DistillConfig, EnsembleConfig, CascadeConfig,
)
#: The classical member's settings: ClassicalConfig's defaults (not pipeline parameters).
_CLASSICAL = ClassicalConfig()
#: Teacher epochs by default: one more pass than a single fine-tune, so the teacher is stronger than the baseline.
DEFAULT_TEACHER_EPOCHS = 2.0
#: Student epochs by default.
DEFAULT_STUDENT_EPOCHS = 2.0
#: Names of the ensemble's members (the compare component matches them to its inputs).
TEACHER_MEMBER, CLASSICAL_MEMBER = "teacher", "classical"

#: What a run hands back (``kfp.local`` returns these; the KFP UI lists them as the run's outputs).
DistillationOutputs = NamedTuple(
    "DistillationOutputs", splits=Dataset, validation_report=Markdown, teacher=Model, classical=Model,
    ensemble=Model, model=Model, evaluation=Artifact, evaluation_report=HTML, metrics=Metrics, comparison=Artifact,
    comparison_report=HTML, onnx_model=Model, parity=Metrics, cascade=Model, cascade_metrics=Metrics,
)


@dsl.pipeline(
    name="textclf-distillation",
    description="Train a transformer teacher and a TF-IDF model, ensemble them on validation, distill the ensemble "
    "into a k-layer student, calibrate and compare every model on the test set, export the student to ONNX.",
)
def distillation_pipeline(
    dataset_uri: str,
    dataset_format: str = _INGEST.dataset_format,
    text_columns: str = ",".join(_INGEST.text_columns),
    label_column: str = _INGEST.label_column,
    base_model: str = "",
    max_length: int = _TRAIN.max_length,
    max_train_rows: int = _SPLIT.max_train_rows,
    max_test_rows: int = _SPLIT.max_test_rows,
    validation_fraction: float = _SPLIT.validation_fraction,
    max_invalid_fraction: float = _SPLIT.max_invalid_fraction,
    batch_size: int = _TRAIN.batch_size,
    learning_rate: float = _TRAIN.learning_rate,
    teacher_epochs: float = DEFAULT_TEACHER_EPOCHS,
    ensemble_method: str = _ENSEMBLE.method,
    distill_temperature: float = _DISTILL.temperature,
    distill_alpha: float = _DISTILL.alpha,
    student_layers: int = _DISTILL.student_layers,
    student_init: str = _DISTILL.init,
    student_epochs: float = DEFAULT_STUDENT_EPOCHS,
    student_learning_rate: float = _TRAIN.learning_rate,
    checkpoint_steps: int = _TRAIN.checkpoint_steps,
    early_stopping_patience: int = _TRAIN.early_stopping_patience,
    checkpoint_root: str = "",
    seed: int = _SPLIT.seed,
    opset: int = _EXPORT.opset,
    min_int8_agreement: float = _EXPORT.min_int8_agreement,
    robustness_suites: str = EvaluateConfig.robustness_suites,
    robustness_max_rows: int = EvaluateConfig.robustness_max_rows,
    min_accuracy: float = RegistrationLimits.min_accuracy,
    max_robustness_drop: float = RegistrationLimits.max_robustness_drop,
    max_model_mb: float = RegistrationLimits.max_model_mb,
    cascade_accuracy_tolerance: float = _CASCADE.accuracy_tolerance,
    cascade_confidence: float = _CASCADE.confidence,
    cascade_stage2_returns: str = _CASCADE.stage2_returns,
    registry_uri: str = "",
    registry_notes: str = "",
) -> DistillationOutputs:
    """Args: see the components; ``dataset_uri`` is required; ``teacher_epochs`` and ``learning_rate`` are the
    teacher's, ``student_epochs`` and ``student_learning_rate`` the student's (0: the default rate),
    ``distill_temperature`` and ``distill_alpha`` the distillation loss's ``T`` and weight on the labels;
    ``ensemble_method`` (``vote`` or ``stack``) is what the student is distilled from; ``cascade_*`` choose the
    TF-IDF -> student cascade's threshold on validation (:class:`textclf.config.CascadeConfig`); ``registry_uri``
    non-empty registers the exported student there as a new ``candidate`` version when the registration gate
    passes (``min_accuracy``, ``max_robustness_drop``, ``max_model_mb``; see the training pipeline)."""
    parameters = pipeline_parameters(locals())
    _, split = add_data_steps(parameters)
    splits = split.outputs["splits"]

    teacher = bind(train_op, parameters, splits=splits, method=TrainMethod.FULL.value, epochs=teacher_epochs)
    teacher.set_display_name("train-teacher").set_cpu_request("2").set_memory_request("8G").set_memory_limit("16G")
    teacher_logits = transformer_logits_op(model=teacher.outputs["model"], splits=splits,
                                           batch_size=EvaluateConfig.batch_size)
    teacher_logits.set_display_name("teacher-logits").set_memory_limit("8G")
    classical = train_classical_op(
        splits=splits, model_type=_CLASSICAL.model, word_ngram_max=_CLASSICAL.word_ngram_max,
        char_ngrams=_CLASSICAL.char_ngrams, char_ngram_min=_CLASSICAL.char_ngram_min,
        char_ngram_max=_CLASSICAL.char_ngram_max, min_df=_CLASSICAL.min_df, sublinear_tf=_CLASSICAL.sublinear_tf,
        c=_CLASSICAL.c, max_iter=_CLASSICAL.max_iter, calibration_folds=_CLASSICAL.calibration_folds, seed=seed,
    ).set_display_name("train-classical").set_memory_limit("8G")
    ensemble = ensemble_op(
        member_a=teacher_logits.outputs["member_logits"], member_b=classical.outputs["member_logits"],
        method=ensemble_method, stack_c=_ENSEMBLE.stack_c, stack_max_iter=_ENSEMBLE.stack_max_iter, cv_folds=_ENSEMBLE.cv_folds, seed=seed,
        member_a_name=TEACHER_MEMBER, member_b_name=CLASSICAL_MEMBER,
    ).set_display_name("ensemble")
    student = bind(
        distill_op, parameters, splits=splits, teacher_logits=ensemble.outputs["teacher_logits"],
        teacher=teacher.outputs["model"], epochs=student_epochs, learning_rate=student_learning_rate,
        temperature=distill_temperature, alpha=distill_alpha,
    )
    student.set_display_name("distill-student").set_cpu_request("2").set_memory_request("8G").set_memory_limit("16G")
    evaluate = bind(evaluate_op, parameters, model=student.outputs["model"], splits=splits)
    evaluate.set_display_name("evaluate-student").set_memory_limit("8G")
    compare = compare_models_op(
        splits=splits, teacher=teacher.outputs["model"], classical=classical.outputs["model"],
        ensemble=ensemble.outputs["ensemble"], student=student.outputs["model"],
    ).set_display_name("compare-models").set_memory_limit("8G")
    export = bind(export_op, parameters, model=student.outputs["model"], evaluation=evaluate.outputs["evaluation"])
    export.set_display_name("export-student").set_memory_limit("8G")
    cascade = cascade_op(
        stage1=classical.outputs["model"], stage2=export.outputs["onnx_model"], splits=splits,
        accuracy_tolerance=cascade_accuracy_tolerance, confidence=cascade_confidence,
        stage2_returns=cascade_stage2_returns, threshold=_CASCADE.threshold, precision="int8",
    ).set_display_name("cascade").set_memory_limit("8G")
    gate = add_registration_gate(parameters, evaluate, export)
    add_gated_registration(student.outputs["model"], evaluate, export, gate, registry_uri, registry_notes)
    return DistillationOutputs(
        splits=splits, validation_report=split.outputs["report"], teacher=teacher.outputs["model"],
        classical=classical.outputs["model"], ensemble=ensemble.outputs["ensemble"], model=student.outputs["model"],
        evaluation=evaluate.outputs["evaluation"], evaluation_report=evaluate.outputs["report"],
        metrics=evaluate.outputs["metrics"], comparison=compare.outputs["comparison"],
        comparison_report=compare.outputs["report"], onnx_model=export.outputs["onnx_model"],
        parity=export.outputs["parity"], cascade=cascade.outputs["cascade"],
        cascade_metrics=cascade.outputs["metrics"],
    )
