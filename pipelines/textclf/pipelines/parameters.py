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

from textclf.config import ExportConfig, IngestConfig, SplitConfig, TrainConfig, parse_text_columns
from textclf.gate import GateConfig

#: The typed configs whose fields are pipeline parameters of the same name; each validates its values.
PARAMETER_CONFIGS = (IngestConfig, SplitConfig, TrainConfig, ExportConfig, GateConfig)


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


def _config_values(config: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``config``'s fields among ``values``, in the config's types (as the components build them)."""
    found = {field.name: values[field.name] for field in dataclasses.fields(config) if field.name in values}
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
    for config in PARAMETER_CONFIGS:
        found = _config_values(config, values)
        if found:
            config(**found)  # each config raises ConfigError for a value it refuses
    return checked
