"""Container images the KFP components run in (built from the Dockerfiles in ``images/``).

Both images install this package, so a component body's ``from textclf... import ...`` works the same in the
image on a cluster and in this virtual environment under ``kfp.local.SubprocessRunner(use_venv=False)``.
"""

#: CPU image: torch (CPU build), transformers, peft, onnx, onnxruntime, kfp and this package.
COMPONENT_IMAGE = "ghcr.io/textclf-pipelines/components-cpu:0.1.0"
#: GPU image: CUDA torch, bitsandbytes and TensorRT on top of the same packages; used by QLoRA training.
GPU_COMPONENT_IMAGE = "ghcr.io/textclf-pipelines/components-gpu:0.1.0"
