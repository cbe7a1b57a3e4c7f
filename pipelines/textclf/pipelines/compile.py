"""Compile every pipeline to YAML, or check that the committed YAML matches a fresh compile."""

from __future__ import annotations

import difflib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import compiler

from textclf.errors import ConfigError

PIPELINES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class CompiledPipeline:
    """A pipeline function and the committed YAML file it compiles to."""

    name: str
    relative_path: str

    @property
    def path(self) -> Path:
        return PIPELINES_DIR / self.relative_path

    def function(self) -> Any:
        from textclf.pipelines.distillation import pipeline as distillation
        from textclf.pipelines.retraining import pipeline as retraining
        from textclf.pipelines.training import pipeline as training

        return {
            "training": training.training_pipeline,
            "training-gpu": training.training_pipeline_gpu,
            "retraining": retraining.retraining_pipeline,
            "distillation": distillation.distillation_pipeline,
        }[self.name]


PIPELINES = (
    CompiledPipeline("training", "training/training_pipeline.yaml"),
    CompiledPipeline("training-gpu", "training/training_pipeline_gpu.yaml"),
    CompiledPipeline("retraining", "retraining/retraining_pipeline.yaml"),
    CompiledPipeline("distillation", "distillation/distillation_pipeline.yaml"),
)


DEFAULT_PIPELINE = "training"


def default_pipeline_package(name: str = DEFAULT_PIPELINE) -> Path:
    """The committed compiled YAML of a pipeline of this package (``training``, ``training-gpu``, ...).

    Raises:
        ConfigError: No pipeline of that name.
    """
    by_name = {pipeline.name: pipeline.path for pipeline in PIPELINES}
    if name not in by_name:
        raise ConfigError(f"unknown pipeline {name!r}: expected one of {sorted(by_name)}")
    return by_name[name]


def compile_pipeline(pipeline: CompiledPipeline, path: Path) -> None:
    compiler.Compiler().compile(pipeline_func=pipeline.function(), package_path=str(path))


def compile_all() -> list[Path]:
    """Regenerate every committed pipeline YAML."""
    written = []
    for pipeline in PIPELINES:
        compile_pipeline(pipeline, pipeline.path)
        written.append(pipeline.path)
    return written


def stale_pipelines() -> dict[str, str]:
    """Pipelines whose committed YAML differs from a fresh compile, with a unified diff (or 'missing')."""
    stale = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pipeline in PIPELINES:
            fresh = Path(tmp) / pipeline.path.name
            compile_pipeline(pipeline, fresh)
            if not pipeline.path.exists():
                stale[pipeline.relative_path] = "missing"
                continue
            old, new = pipeline.path.read_text(), fresh.read_text()
            if old != new:
                diff = difflib.unified_diff(
                    old.splitlines(), new.splitlines(), "committed", "fresh compile", lineterm="", n=1
                )
                stale[pipeline.relative_path] = "\n".join(list(diff)[:40])
    return stale
