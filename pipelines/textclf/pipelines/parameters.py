"""A pipeline's parameters, read from the pipeline itself: names, types and defaults from its signature (the typed
configs' defaults), help text from the docstrings of the components each parameter feeds, and one check of a set of
values -- the one a Kubeflow submission goes through, then the typed configs' own validation.

``textclf run`` builds its flags from here, so a parameter added to a pipeline is a flag without further code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from textclf.config import (
    CascadeConfig,
    DistillConfig,
    EnsembleConfig,
    EvaluateConfig,
    ExportConfig,
    IngestConfig,
    SplitConfig,
    TrainConfig,
    parse_text_columns,
)
from textclf.gate import GateConfig
from textclf.robustness import RegistrationLimits
from textclf.rollout import RolloutConfig, RolloutGuards
from textclf.trainjob.config import DistributedConfig, TrainJobConfig

@dataclasses.dataclass(frozen=True)
class ConfigView:
    """Which pipeline parameters a typed config validates: its fields by name (``by_name``) and the parameters in
    ``renamed`` (pipeline parameter -> field), which take precedence."""

    config: type
    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    by_name: bool = True


#: The typed configs whose fields are pipeline parameters; each validates its values. A config may be checked in
#: more than one view: the distillation pipeline's teacher and student are both TrainConfigs. DistillConfig and
#: EnsembleConfig read only their explicitly named parameters (``alpha`` is also the gate's significance level).
PARAMETER_CONFIGS: tuple[ConfigView, ...] = (
    ConfigView(IngestConfig),
    ConfigView(SplitConfig),
    ConfigView(TrainConfig, {"teacher_epochs": "epochs"}),
    ConfigView(TrainConfig, {"student_epochs": "epochs", "student_learning_rate": "learning_rate"}),
    ConfigView(ExportConfig),
    ConfigView(EvaluateConfig, {"robustness_suites": "robustness_suites",
                                "robustness_max_rows": "robustness_max_rows"}, by_name=False),
    ConfigView(RegistrationLimits),
    ConfigView(GateConfig),
    ConfigView(DistillConfig, {"distill_temperature": "temperature", "distill_alpha": "alpha",
                               "student_layers": "student_layers", "student_init": "init"}, by_name=False),
    ConfigView(EnsembleConfig, {"ensemble_method": "method"}, by_name=False),
    ConfigView(CascadeConfig, {"cascade_accuracy_tolerance": "accuracy_tolerance", "cascade_confidence": "confidence",
                               "cascade_stage2_returns": "stage2_returns"}, by_name=False),
    ConfigView(RolloutConfig),
    ConfigView(DistributedConfig),
    ConfigView(TrainJobConfig, {"trainjob_namespace": "namespace", "trainjob_runtime_name": "runtime_name",
                                "trainjob_cpu": "cpu", "trainjob_memory": "memory", "trainjob_gpus": "gpus",
                                "trainjob_start_timeout_seconds": "start_timeout_seconds",
                                "trainjob_timeout_seconds": "timeout_seconds"}, by_name=False),
    ConfigView(RolloutGuards, {"ab_min_labelled": "min_labelled", "ab_alpha": "alpha",
                               "max_accuracy_drop": "max_accuracy_drop", "max_p99_latency_ratio": "max_p99_latency_ratio",
                               "max_error_rate": "max_error_rate"}, by_name=False),
)


def parameter_specs(pipeline_func: Any) -> dict[str, Any]:
    """Parameter name -> kfp ``InputSpec`` (``type``: ``String``, ``Integer``, ``Float``, ``Boolean``...;
    ``default``; ``optional``), in the order of the pipeline's signature."""
    return dict(pipeline_func.component_spec.inputs or {})


def parameter_descriptions(pipeline_func: Any) -> dict[str, str]:
    """Parameter name -> the description of the component input it is wired to (the first one, in task order),
    following it into ``dsl.If`` / ``dsl.Else`` sub-DAGs; parameters with no documented input are left out."""
    spec = pipeline_func.pipeline_spec
    found: dict[str, str] = {}

    def walk(dag: Any, sources: Mapping[str, str]) -> None:  # sources: this DAG's input name -> pipeline parameter
        for task_name in sorted(dag.tasks):
            task = dag.tasks[task_name]
            component = spec.components[task.component_ref.name]
            wired = {name: sources[value.component_input_parameter] for name, value in task.inputs.parameters.items()
                     if value.component_input_parameter in sources}
            if component.WhichOneof("implementation") == "dag":
                walk(component.dag, wired)
                continue
            for name, parameter in wired.items():
                description = component.input_definitions.parameters[name].description
                if description and parameter not in found:
                    found[parameter] = " ".join(description.split())

    walk(spec.root.dag, {name: name for name in spec.root.input_definitions.parameters})
    return found


def pipeline_package(pipeline_func: Any) -> Any:
    """``pipeline_func``'s parameters as the :class:`textclf.deploy.kubeflow.PipelinePackage` a submission reads,
    from its in-memory ``PipelineSpec`` (the dict a compile writes as YAML), so checking a local run compiles
    nothing and writes no file."""
    from google.protobuf import json_format

    from textclf.deploy.kubeflow import PipelinePackage

    spec = json_format.MessageToDict(pipeline_func.pipeline_spec)
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return PipelinePackage(path=Path(f"{pipeline_func.name}.yaml"), name=spec["pipelineInfo"]["name"],
                           parameters=dict(parameters), sha256="")


def _config_values(view: ConfigView, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``view.config``'s fields among ``values`` (see :class:`ConfigView`), in the config's types (as
    the components build them)."""
    fields = {field.name for field in dataclasses.fields(view.config)}
    found = {name: values[name] for name in fields if name in values} if view.by_name else {}
    found.update({field: values[name] for name, field in view.renamed.items() if name in values and field in fields})
    if "text_columns" in found:  # a comma-separated string in the pipeline, a tuple in IngestConfig
        found["text_columns"] = parse_text_columns(found["text_columns"])
    if not found.get("base_model", True):  # empty: the packaged model (TrainConfig's default)
        del found["base_model"]
    return found


def check_pipeline_arguments(pipeline_func: Any, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Check a run's values before any work: against the compiled pipeline's parameters
    (:func:`textclf.deploy.kubeflow.check_arguments`, as for a Kubeflow submission: names, required ones, types),
    then through the typed configs, with the pipeline's defaults for the values not given.

    Returns:
        A plain dict copy of ``arguments``.

    Raises:
        ConfigError: Unknown name, missing required parameter, wrong type, or a value a config refuses.
    """
    from textclf.deploy.kubeflow import check_arguments

    checked = check_arguments(arguments, pipeline_package(pipeline_func))
    values = {name: spec.default for name, spec in parameter_specs(pipeline_func).items() if spec.optional}
    values.update(checked)
    for view in PARAMETER_CONFIGS:
        found = _config_values(view, values)
        if found:
            view.config(**found)  # each config raises ConfigError for a value it refuses
    if "student_layers" in values:
        check_student_layers(str(values.get("base_model") or ""), values["student_layers"])
    return checked


def check_student_layers(base_model: str, student_layers: int) -> None:
    """Fail before any training when a student would keep more encoder layers than the teacher has: the teacher
    is a fine-tune of ``base_model`` (empty: the packaged model), whose ``config.json`` is read when it is a local
    directory (a remote one is checked by the distill task itself, before it loads weights).

    Raises:
        ConfigError: ``student_layers`` outside 1..(the base model's layers), or an unreadable ``config.json``.
    """
    from textclf.config import default_base_model
    from textclf.distill import evenly_spaced_layers
    from textclf.errors import ConfigError
    from textclf.provenance import read_json
    from textclf.storage import is_remote

    base_model = base_model or default_base_model()
    config_file = Path(base_model) / "config.json"
    if is_remote(base_model) or not config_file.is_file():
        return
    try:
        layers = int(read_json(config_file)["num_hidden_layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read num_hidden_layers from {config_file}: {exc!r}") from exc
    evenly_spaced_layers(layers, student_layers)
