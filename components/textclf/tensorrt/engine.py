"""TensorRT engine build: a serialized engine (``model.plan``) from the exported fp32 ONNX model.

Runs only on a GPU node with TensorRT (the GPU component image). Anywhere else :func:`check_tensorrt` fails at once
with :class:`~textclf.errors.HardwareUnavailableError`, before any file is read.

The engine is built for one optimisation profile: batch and sequence length each get a minimum, an optimum (the
shape TensorRT tunes its kernels for) and a maximum (the sequence maximum is the model's ``max_length``).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from textclf.errors import ConfigError, HardwareUnavailableError
from textclf.provenance import atomic_directory, sha256_file, write_json
from textclf.serving.contract import FP32_ONNX_FILE, INT8_ONNX_FILE, METADATA_FILE, ONNX_SPEC

log = logging.getLogger(__name__)

ENGINE_FILE = "model.plan"
ENGINE_METADATA_FILE = "engine_metadata.json"
PRECISIONS = ("fp16", "fp32")
#: Oldest TensorRT whose networks are always explicit-batch (``create_network()`` without flags).
MIN_TENSORRT_MAJOR = 10
#: An input shape, ``(batch, sequence)``.
Shape = tuple[int, int]


@dataclass(frozen=True)
class TensorRTConfig:
    """Engine build settings; every default in one place.

    Attributes:
        precision: ``fp16`` (builder FP16 flag; TensorRT 10.x) or ``fp32``.
        min_batch: Smallest batch the engine accepts.
        opt_batch: Batch size the kernels are tuned for.
        max_batch: Largest batch the engine accepts.
        min_sequence: Shortest token sequence (``[CLS] [SEP]`` is 2 tokens).
        opt_sequence: Sequence length the kernels are tuned for.
        max_sequence: Longest token sequence; the model's ``max_length``.
        workspace_bytes: Builder workspace memory pool limit.
    """

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    min_sequence: int = 2
    opt_sequence: int = 64
    max_sequence: int = 128
    workspace_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        """Reject settings no engine can be built with.

        Raises:
            ConfigError: Unknown precision, a non-positive size, or min <= opt <= max violated.
        """
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.workspace_bytes < 1:
            raise ConfigError(f"workspace_bytes must be >= 1, got {self.workspace_bytes}")
        for axis in ("batch", "sequence"):
            low, opt, high = (getattr(self, f"{bound}_{axis}") for bound in ("min", "opt", "max"))
            if not 1 <= low <= opt <= high:
                raise ConfigError(f"{axis} profile needs 1 <= min <= opt <= max, got {low}, {opt}, {high}")


def profile_shapes(config: TensorRTConfig) -> dict[str, tuple[Shape, Shape, Shape]]:
    """The optimisation profile: for every input, its (min, opt, max) ``[batch, sequence]`` shapes.

    Args:
        config: Build settings.

    Returns:
        Input name -> (min shape, opt shape, max shape).
    """
    shapes = (
        (config.min_batch, config.min_sequence),
        (config.opt_batch, config.opt_sequence),
        (config.max_batch, config.max_sequence),
    )
    return {name: shapes for name in ONNX_SPEC.inputs}  # every input of the export spec is [batch, sequence]


def cuda_device_count() -> int:
    """CUDA devices visible through the driver API (``libcuda``), without torch or any CUDA Python package.

    Returns:
        The device count; 0 when the driver library is missing or ``cuInit`` fails (no GPU, no driver).
    """
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def import_tensorrt() -> tuple[Any | None, str | None]:
    """Import the ``tensorrt`` module.

    Returns:
        ``(module, None)``, or ``(None, reason)`` when it is not installed, cannot load its libraries or is older
        than TensorRT 10.
    """
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        return None, f"the 'tensorrt' Python package cannot be imported ({exc})"
    major = int(str(tensorrt.__version__).split(".")[0])
    if major < MIN_TENSORRT_MAJOR:
        return None, f"TensorRT >= {MIN_TENSORRT_MAJOR} is needed, found {tensorrt.__version__}"
    return tensorrt, None


def check_tensorrt() -> Any:
    """Fail at once unless this machine can build a TensorRT engine: a CUDA GPU and an importable TensorRT.

    Returns:
        The ``tensorrt`` module.

    Raises:
        HardwareUnavailableError: No CUDA GPU and/or no usable TensorRT; the message names every missing piece.
    """
    trt, problem = import_tensorrt()
    problems = [] if problem is None else [problem]
    if cuda_device_count() == 0:
        problems.append("no CUDA GPU is visible (libcuda.so.1 missing, or the driver reports no device)")
    if problems:
        raise HardwareUnavailableError(
            f"the TensorRT engine build needs a CUDA GPU and TensorRT: {'; '.join(problems)}. Run the tensorrt "
            f"component on a GPU node (give the task nvidia.com/gpu) in the GPU component image "
            f"(ghcr.io/textclf-pipelines/components-gpu, which installs tensorrt from NVIDIA's wheels); on CPU serve "
            f"{FP32_ONNX_FILE} / {INT8_ONNX_FILE} with the ONNX predictor instead."
        )
    return trt


def _parse_onnx(trt: Any, builder: Any, onnx_path: Path, logger: Any) -> Any:
    """A network definition parsed from ``onnx_path``.

    Raises:
        ConfigError: The ONNX parser rejects the model (its errors are in the message).
    """
    network = builder.create_network()
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors}")
    return network


def _builder_config(trt: Any, builder: Any, config: TensorRTConfig) -> Any:
    """Builder configuration: workspace limit, precision flag and the optimisation profile.

    Raises:
        ConfigError: ``fp16`` requested on TensorRT 11+, which removed the FP16 builder flag (weak typing).
    """
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    if config.precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ConfigError(
                f"precision fp16 needs the FP16 builder flag, which TensorRT {trt.__version__} removed (11.x builds "
                "strongly typed networks only): convert the ONNX model to fp16 first (NVIDIA ModelOpt AutoCast), or "
                "build with precision fp32, or use TensorRT 10.x"
            )
        builder_config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_shapes(config).items():
        profile.set_shape(name, low, opt, high)
    builder_config.add_optimization_profile(profile)
    return builder_config


def build_tensorrt_engine(
    onnx_path: str | os.PathLike[str], output_dir: str | os.PathLike[str], config: TensorRTConfig = TensorRTConfig()
) -> Path:
    """Build a serialized TensorRT engine from an ONNX model.

    Args:
        onnx_path: The export stage's fp32 ``model.onnx``.
        output_dir: Directory to write (atomically): ``model.plan`` and ``engine_metadata.json`` (profile,
            precision, TensorRT version, sha256 of the source ONNX and of the engine).
        config: Build settings.

    Returns:
        ``output_dir``.

    Raises:
        HardwareUnavailableError: No CUDA GPU or no TensorRT (checked first, before anything is read).
        FileNotFoundError: ``onnx_path`` does not exist.
        ConfigError: The ONNX parser rejects the model, fp16 is unavailable, or the build fails.
    """
    trt = check_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX model not found")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _parse_onnx(trt, builder, onnx_path, logger)
    serialized = builder.build_serialized_network(network, _builder_config(trt, builder, config))
    if serialized is None:
        raise ConfigError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    with atomic_directory(output_dir) as staging:
        (staging / ENGINE_FILE).write_bytes(bytes(serialized))
        write_json(staging / ENGINE_METADATA_FILE, {
            "config": asdict(config),
            "profile": {name: [list(shape) for shape in shapes] for name, shapes in profile_shapes(config).items()},
            "tensorrt_version": str(trt.__version__),
            "source_onnx_sha256": sha256_file(onnx_path),
            "engine_sha256": sha256_file(staging / ENGINE_FILE),
        })
    log.info("TensorRT engine written to %s", output_dir)
    return Path(output_dir)


def max_length_of_bundle(bundle_dir: str | os.PathLike[str]) -> int:
    """The token limit the exported model was trained with (``max_length`` in ``export_metadata.json``).

    Args:
        bundle_dir: The export stage's output directory.

    Returns:
        The maximum sequence length.
    """
    with open(Path(bundle_dir) / METADATA_FILE, encoding="utf-8") as handle:
        return int(json.load(handle)["max_length"])
