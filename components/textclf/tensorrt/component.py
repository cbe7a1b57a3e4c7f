"""KFP component: TensorRT engine (thin wrapper around :func:`textclf.tensorrt.build_tensorrt_engine`)."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from textclf.images import GPU_COMPONENT_IMAGE


@dsl.component(base_image=GPU_COMPONENT_IMAGE, install_kfp_package=False)
def tensorrt_engine_op(
    onnx_model: Input[Model],
    engine: Output[Model],
    precision: str = "fp16",
    opt_batch: int = 8,
    max_batch: int = 32,
    opt_sequence: int = 64,
    workspace_mb: int = 1024,
) -> str:
    """Build a TensorRT engine from the exported fp32 ONNX model. Needs a GPU node: give the task an accelerator
    (``task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)``); without a CUDA GPU or TensorRT it
    fails at once with ``HardwareUnavailableError``, before reading its input.

    Args:
        onnx_model: Output of the export component (its ``model.onnx`` is built; its ``export_metadata.json``
            gives the maximum sequence length).
        engine: Output directory: ``model.plan`` and ``engine_metadata.json``.
        precision: ``fp16`` (TensorRT 10.x builder flag) or ``fp32``.
        opt_batch: Batch size the kernels are tuned for (profile minimum 1).
        max_batch: Largest batch the engine accepts.
        opt_sequence: Sequence length the kernels are tuned for (profile minimum 2, maximum the model's max length).
        workspace_mb: Builder workspace limit in MiB.

    Returns:
        The TensorRT version that built the engine.
    """
    import os

    from textclf.serving.contract import FP32_ONNX_FILE
    from textclf.tensorrt import TensorRTConfig, build_tensorrt_engine, check_tensorrt
    from textclf.tensorrt.engine import max_length_of_bundle

    trt = check_tensorrt()
    config = TensorRTConfig(
        precision=precision, opt_batch=int(opt_batch), max_batch=int(max_batch), opt_sequence=int(opt_sequence),
        max_sequence=max_length_of_bundle(onnx_model.path), workspace_bytes=int(workspace_mb) << 20,
    )
    build_tensorrt_engine(os.path.join(onnx_model.path, FP32_ONNX_FILE), engine.path, config)
    engine.metadata.update({"format": "tensorrt_plan", "precision": precision, "tensorrt": str(trt.__version__)})
    return str(trt.__version__)
