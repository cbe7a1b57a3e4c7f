"""TensorRT engine build stage (GPU nodes only)."""

from textclf.tensorrt.engine import (
    ENGINE_FILE,
    ENGINE_METADATA_FILE,
    TensorRTConfig,
    build_tensorrt_engine,
    check_tensorrt,
    profile_shapes,
)

__all__ = [
    "ENGINE_FILE",
    "ENGINE_METADATA_FILE",
    "TensorRTConfig",
    "build_tensorrt_engine",
    "check_tensorrt",
    "profile_shapes",
]
