"""TensorRT engine stage: the fail-fast boundary on a machine without GPU/TensorRT, and its pure logic.

The engine build itself needs a CUDA GPU and NVIDIA's tensorrt wheels; neither exists on the development machine,
so the tests stop at the hardware check (as the QLoRA tests do) and exercise the profile and builder-config logic
against a recording stand-in for the tensorrt module.
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations as types.

import json
import os
import sys
from types import SimpleNamespace

import pytest
import yaml

from textclf.errors import ConfigError, HardwareUnavailableError
from textclf.tensorrt import TensorRTConfig, build_tensorrt_engine, check_tensorrt, profile_shapes
from textclf.tensorrt import engine as engine_module

requires_no_tensorrt_hardware = pytest.mark.skipif(
    engine_module.cuda_device_count() > 0 and engine_module.import_tensorrt()[0] is not None,
    reason="this machine has a CUDA GPU and TensorRT: the fail-fast path does not apply",
)


@requires_no_tensorrt_hardware
def test_stage_fails_at_once_before_reading_anything(tmp_path):
    missing = tmp_path / "no-such-bundle" / "model.onnx"  # would be a FileNotFoundError if it were read
    with pytest.raises(HardwareUnavailableError, match=r"needs a CUDA GPU and TensorRT: .*GPU node"):
        build_tensorrt_engine(missing, tmp_path / "engine")
    assert not (tmp_path / "engine").exists()


def test_message_names_every_missing_piece(monkeypatch):
    no_package = (None, "the 'tensorrt' Python package cannot be imported (x)")
    monkeypatch.setattr(engine_module, "import_tensorrt", lambda: no_package)
    monkeypatch.setattr(engine_module, "cuda_device_count", lambda: 0)
    with pytest.raises(HardwareUnavailableError, match=r"cannot be imported \(x\); no CUDA GPU is visible"):
        check_tensorrt()
    monkeypatch.setattr(engine_module, "cuda_device_count", lambda: 1)
    with pytest.raises(HardwareUnavailableError) as excinfo:
        check_tensorrt()
    assert "no CUDA GPU" not in str(excinfo.value) and "'tensorrt' Python package" in str(excinfo.value)


def test_old_tensorrt_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="8.6.1"))
    module, problem = engine_module.import_tensorrt()
    assert module is None and problem == "TensorRT >= 10 is needed, found 8.6.1"


def test_profile_shapes_follow_the_config():
    config = TensorRTConfig(min_batch=2, opt_batch=4, max_batch=16, min_sequence=8, opt_sequence=32, max_sequence=96)
    shapes = profile_shapes(config)
    assert list(shapes) == ["input_ids", "attention_mask"]
    assert shapes["input_ids"] == ((2, 8), (4, 32), (16, 96)) == shapes["attention_mask"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int8"}, r"precision must be one of \('fp16', 'fp32'\), got 'int8'"),
        ({"opt_batch": 64}, r"batch profile needs 1 <= min <= opt <= max, got 1, 64, 32"),
        ({"min_sequence": 0}, r"sequence profile needs 1 <= min <= opt <= max, got 0, 64, 128"),
        ({"workspace_bytes": 0}, r"workspace_bytes must be >= 1, got 0"),
    ],
)
def test_config_rejects_impossible_profiles(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TensorRTConfig(**kwargs)


class _Recorder:
    """Stands in for a TensorRT builder, builder config and optimisation profile; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, *args)) or self


def _fake_trt(version: str, with_fp16_flag: bool) -> SimpleNamespace:
    flags = SimpleNamespace(FP16="FP16") if with_fp16_flag else SimpleNamespace()
    return SimpleNamespace(__version__=version, BuilderFlag=flags, MemoryPoolType=SimpleNamespace(WORKSPACE="WS"))


def test_builder_config_sets_workspace_fp16_and_profile():
    builder = _Recorder()
    engine_module._builder_config(_fake_trt("10.13.0", True), builder, TensorRTConfig(workspace_bytes=1 << 20))
    calls = builder.calls
    assert ("set_memory_pool_limit", "WS", 1 << 20) in calls
    assert ("set_flag", "FP16") in calls
    assert ("set_shape", "input_ids", (1, 2), (8, 64), (32, 128)) in calls
    assert ("set_shape", "attention_mask", (1, 2), (8, 64), (32, 128)) in calls
    assert calls[-1][0] == "add_optimization_profile"


def test_fp16_on_tensorrt_11_says_what_to_do():
    with pytest.raises(ConfigError, match=r"TensorRT 11.4.0 removed .*ModelOpt AutoCast.*precision fp32"):
        engine_module._builder_config(_fake_trt("11.4.0", False), _Recorder(), TensorRTConfig())
    builder = _Recorder()
    engine_module._builder_config(_fake_trt("11.4.0", False), builder, TensorRTConfig(precision="fp32"))
    assert not any(call[0] == "set_flag" for call in builder.calls)


@requires_no_tensorrt_hardware
def test_component_fails_at_once_under_the_kfp_local_runner(tmp_path, capfd, monkeypatch):
    from kfp import dsl
    from kfp.local import config as local_config

    from textclf.pipelines.local import init_local_runner
    from textclf.tensorrt.component import tensorrt_engine_op

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "export_metadata.json").write_text(json.dumps({"max_length": 128}))

    @dsl.pipeline(name="tensorrt-fail-fast")
    def pipeline(bundle_uri: str):
        imported = dsl.importer(artifact_uri=bundle_uri, artifact_class=dsl.Model, reimport=False)
        tensorrt_engine_op(onnx_model=imported.output)

    # Restore PATH and whatever local configuration other tests set once this one is done.
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    monkeypatch.setattr(local_config.LocalExecutionConfig, "instance", local_config.LocalExecutionConfig.instance)
    init_local_runner(tmp_path / "root")
    with pytest.raises(RuntimeError, match=r"tensorrt-engine-op"):
        pipeline(bundle_uri=str(bundle))
    output = "".join(capfd.readouterr())
    assert "HardwareUnavailableError: the TensorRT engine build needs a CUDA GPU and TensorRT" in output
    assert not list((tmp_path / "root").rglob("model.plan"))


def test_component_compiles_for_the_gpu_image(tmp_path):
    from kfp import compiler

    from textclf.images import GPU_COMPONENT_IMAGE
    from textclf.tensorrt.component import tensorrt_engine_op

    package = tmp_path / "tensorrt_engine_op.yaml"
    compiler.Compiler().compile(tensorrt_engine_op, str(package))
    spec = yaml.safe_load(package.read_text())
    (executor,) = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == GPU_COMPONENT_IMAGE
    inputs = spec["root"]["inputDefinitions"]
    assert set(inputs["artifacts"]) == {"onnx_model"}
    assert inputs["parameters"]["precision"]["defaultValue"] == "fp16"
