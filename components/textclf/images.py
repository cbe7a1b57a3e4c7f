"""Container images the KFP components run in (built from the Dockerfiles in ``images/``).

Both images install the three distributions (serving/, components/, pipelines/), so a component body's
``from textclf... import ...`` works the same in the image on a cluster and in this virtual environment under
``kfp.local.SubprocessRunner(use_venv=False)``. The tag is the installed textclf-components version, so a release
of the package and the images it runs in share one number.
"""

from importlib.metadata import version

#: The images' tag: this distribution's version.
IMAGE_TAG = version("textclf-components")
#: CPU image: torch (CPU build), transformers, peft, onnx, onnxruntime, kfp and this package.
COMPONENT_IMAGE = f"ghcr.io/textclf-pipelines/components-cpu:{IMAGE_TAG}"
#: GPU image: CUDA torch, bitsandbytes and TensorRT on top of the same packages; used by QLoRA training.
GPU_COMPONENT_IMAGE = f"ghcr.io/textclf-pipelines/components-gpu:{IMAGE_TAG}"
