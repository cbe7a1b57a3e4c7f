"""Triton Inference Server model repository from an export bundle.

Writes ``<repo>/<model_name>/config.pbtxt`` and ``<repo>/<model_name>/1/model.onnx`` (plus ``labels.txt`` for
Triton's classification extension). Triton's ``onnxruntime`` backend runs the exported graph; on a GPU it can hand
the graph to TensorRT through ONNX Runtime's TensorRT execution provider (the ``optimization`` block).

The KServe transformer (``textclf.serving`` with ``--predictor-host``) tokenises texts and calls this model over
the V2 protocol, so the config declares exactly the tensors of the export spec
(:data:`textclf.serving.contract.ONNX_SPEC`): ``input_ids`` and ``attention_mask`` (INT64, ``[batch, sequence]``) in,
``logits`` (FP32, ``[batch, n_labels]``) out.

Needs neither torch nor transformers (the serving image has neither). Command line:
``python -m textclf.serving.triton --bundle-dir DIR --repo-dir DIR [--precision fp32] [--no-tensorrt] ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from textclf.provenance import sha256_file
from textclf.serving.bundle import BundleError, ExportBundle, load_bundle
from textclf.serving.config import Precision
from textclf.serving.contract import METADATA_FILE, ONNX_SPEC

CONFIG_FILE = "config.pbtxt"
LABELS_TXT = "labels.txt"
#: The model file in the version directory: the onnxruntime backend's default name, a Triton convention independent
#: of the bundle's file names (either precision's graph is copied to it; ``default_model_filename`` names it too).
TRITON_ONNX_FILE = "model.onnx"
#: numpy element type (:attr:`~textclf.serving.contract.OnnxSpec.input_dtype`, ``output_dtype``) -> Triton data type.
TRITON_DATA_TYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}


class InstanceKind(str, Enum):
    """Where Triton runs the model's instances."""

    GPU = "KIND_GPU"
    CPU = "KIND_CPU"


@dataclass(frozen=True)
class TritonConfig:
    """Everything the generated model configuration depends on; every default in one place.

    Attributes:
        model_name: Model directory name, and the name clients (the KServe transformer) call.
        version: Model version directory.
        precision: Which ONNX file of the bundle Triton serves. TensorRT needs ``fp32``: the INT8 model is
            dynamically quantised (``DynamicQuantizeLinear``/``MatMulInteger``), which TensorRT does not run.
        max_batch_size: Largest batch Triton forms (the batch dimension is implicit in the tensor dims).
        preferred_batch_sizes: Batch sizes the dynamic batcher tries to form.
        max_queue_delay_microseconds: Longest a request waits in the queue for others to join its batch.
        instance_kind: GPU or CPU instances.
        instance_count: Model instances (per GPU for ``KIND_GPU``).
        tensorrt: Add ONNX Runtime's TensorRT execution accelerator (GPU only).
        tensorrt_precision_mode: ``FP16`` or ``FP32`` engines built by the TensorRT execution provider.
        tensorrt_max_workspace_size_bytes: TensorRT builder workspace.
    """

    model_name: str = "textclf"
    version: int = 1
    precision: Precision = Precision.FP32
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_microseconds: int = 2000
    instance_kind: InstanceKind = InstanceKind.GPU
    instance_count: int = 1
    tensorrt: bool = True
    tensorrt_precision_mode: str = "FP16"
    tensorrt_max_workspace_size_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        """Reject combinations Triton or TensorRT would refuse at load time.

        Raises:
            ValueError: A size is out of range, a preferred batch size exceeds ``max_batch_size``, or TensorRT is
                requested on CPU instances, with the INT8 model or with an unknown precision mode.
        """
        for name in ("version", "max_batch_size", "instance_count", "tensorrt_max_workspace_size_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue_delay_microseconds < 0:
            raise ValueError(f"max_queue_delay_microseconds must be >= 0, got {self.max_queue_delay_microseconds}")
        if not self.model_name or "/" in self.model_name:
            raise ValueError(f"model_name must be a non-empty directory name, got {self.model_name!r}")
        too_big = [size for size in self.preferred_batch_sizes if not 1 <= size <= self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} outside 1..max_batch_size ({self.max_batch_size})")
        if self.tensorrt:
            self._check_tensorrt()

    def _check_tensorrt(self) -> None:
        if self.instance_kind is not InstanceKind.GPU:
            raise ValueError("the TensorRT accelerator needs instance_kind KIND_GPU")
        if self.precision is not Precision.FP32:
            raise ValueError(
                "the TensorRT accelerator needs precision fp32: the INT8 model is dynamically quantised "
                "(DynamicQuantizeLinear/MatMulInteger), which TensorRT does not run; TensorRT's FP16 mode gives "
                "the reduced precision instead"
            )
        if self.tensorrt_precision_mode not in ("FP16", "FP32"):
            raise ValueError(f"tensorrt_precision_mode must be FP16 or FP32, got {self.tensorrt_precision_mode!r}")


def _block(name: str, lines: list[str]) -> list[str]:
    """A text-format message field: ``name {`` + indented ``lines`` + ``}``."""
    return [f"{name} {{", *(f"  {line}" for line in lines), "}"]


def _tensor(name: str, data_type: str, dims: list[int], extra: tuple[str, ...] = ()) -> list[str]:
    """One ``input``/``output`` entry (without its enclosing braces)."""
    return [f'name: "{name}"', f"data_type: {data_type}", f"dims: [ {', '.join(str(d) for d in dims)} ]", *extra]


def _list_of_blocks(field: str, blocks: list[list[str]]) -> list[str]:
    """A repeated message field written as ``field [ {...}, {...} ]``."""
    lines = [f"{field} ["]
    for index, block in enumerate(blocks):
        closing = "}," if index < len(blocks) - 1 else "}"
        lines += ["  {", *(f"    {line}" for line in block), f"  {closing}"]
    return [*lines, "]"]


def _tensorrt_lines(config: TritonConfig) -> list[str]:
    """The ``optimization`` block that enables ONNX Runtime's TensorRT execution provider."""
    parameters = {
        "precision_mode": config.tensorrt_precision_mode,
        "max_workspace_size_bytes": str(config.tensorrt_max_workspace_size_bytes),
    }
    accelerator = ['name: "tensorrt"']
    for key, value in parameters.items():
        accelerator += _block("parameters", [f'key: "{key}"', f'value: "{value}"'])
    return _block(
        "optimization", _block("execution_accelerators", _list_of_blocks("gpu_execution_accelerator", [accelerator]))
    )


def _instance_group(config: TritonConfig) -> list[str]:
    """The one ``instance_group`` entry: how many instances, on GPU or CPU."""
    return [f"count: {config.instance_count}", f"kind: {config.instance_kind.value}"]


def render_config(config: TritonConfig, n_labels: int) -> str:
    """The model's ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``), deterministically.

    Args:
        config: Repository settings.
        n_labels: Classes, i.e. the ``logits`` width.

    Returns:
        The file's text, ending in a newline.
    """
    # dims leave out the batch axis (implicit with max_batch_size): inputs [sequence], the output [n_labels].
    inputs = [_tensor(name, TRITON_DATA_TYPES[ONNX_SPEC.input_dtype], [-1]) for name in ONNX_SPEC.inputs]
    (logits,) = ONNX_SPEC.outputs
    output = _tensor(
        logits, TRITON_DATA_TYPES[ONNX_SPEC.output_dtype], [n_labels], (f'label_filename: "{LABELS_TXT}"',)
    )
    lines = [
        f'name: "{config.model_name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {config.max_batch_size}",
        f'default_model_filename: "{TRITON_ONNX_FILE}"',
        *_list_of_blocks("input", inputs),
        *_list_of_blocks("output", [output]),
        *_block("dynamic_batching", [
            f"preferred_batch_size: [ {', '.join(str(size) for size in config.preferred_batch_sizes)} ]",
            f"max_queue_delay_microseconds: {config.max_queue_delay_microseconds}",
        ]),
        *_list_of_blocks("instance_group", [_instance_group(config)]),
    ]
    if config.tensorrt:
        lines += _tensorrt_lines(config)
    return "\n".join(lines) + "\n"


def _checked_onnx(bundle: ExportBundle, precision: Precision) -> Path:
    """The bundle's ONNX file for ``precision``; Triton copies it, so its hash must be recorded and must match.

    Raises:
        BundleError: The file is missing, has no recorded hash, or its bytes differ from the recorded hash
            (the check itself is :meth:`ExportBundle.onnx_path`'s).
    """
    if not bundle.file_sha256.get(precision.onnx_file):
        raise BundleError(f"{bundle.root / METADATA_FILE}: no sha256 recorded for {precision.onnx_file}")
    return bundle.onnx_path(precision)


def _check_spec(bundle_dir: Path, spec: dict) -> None:
    """Fail unless the export spec declares exactly the tensors the generated config names (in any order:
    Triton matches tensors by name).

    Raises:
        BundleError: Different input or output names.
    """
    inputs, outputs = sorted(spec.get("inputs", {})), sorted(spec.get("outputs", {}))
    expected_inputs, expected_outputs = sorted(ONNX_SPEC.inputs), sorted(ONNX_SPEC.outputs)
    if inputs != expected_inputs or outputs != expected_outputs:
        raise BundleError(
            f"{bundle_dir / METADATA_FILE}: spec has inputs {inputs} and outputs {outputs}, expected "
            f"{expected_inputs} and {expected_outputs}"
        )


def _read_spec(bundle_dir: Path) -> dict:
    """The ``spec`` entry of the bundle's export metadata (tensor names and dynamic axes)."""
    return json.loads((bundle_dir / METADATA_FILE).read_text(encoding="utf-8")).get("spec", {})


def _replace_dir(staging: Path, final: Path) -> None:
    """Move ``staging`` to ``final``, replacing a previous ``final`` (rename, so never half-written)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)


def write_triton_repository(
    bundle_dir: str | os.PathLike[str], repo_dir: str | os.PathLike[str], config: TritonConfig = TritonConfig()
) -> Path:
    """Write a Triton model repository for the export bundle in ``bundle_dir``.

    The model directory is built beside its final place and renamed into it, so a killed run leaves the previous
    model (or none), never a half-written one; other models in ``repo_dir`` are left alone.

    Args:
        bundle_dir: The export stage's output (``model.onnx``, ``model.int8.onnx``, ``labels.json``,
            ``export_metadata.json``, ``tokenizer.json``).
        repo_dir: The model repository (``tritonserver --model-repository``, KServe's ``storageUri``).
        config: Model settings.

    Returns:
        The model's directory, ``<repo_dir>/<model_name>``.

    Raises:
        BundleError: The bundle is incomplete, its spec names other tensors, or the ONNX file does not match its
            recorded hash.
    """
    bundle = load_bundle(bundle_dir)
    _check_spec(bundle.root, _read_spec(bundle.root))
    onnx_path = _checked_onnx(bundle, config.precision)
    repo = Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    final = repo / config.model_name
    staging = Path(tempfile.mkdtemp(prefix=f".{config.model_name}.", dir=repo))
    try:
        (staging / str(config.version)).mkdir()
        shutil.copyfile(onnx_path, staging / str(config.version) / TRITON_ONNX_FILE)
        (staging / LABELS_TXT).write_text("".join(f"{label}\n" for label in bundle.labels), encoding="utf-8")
        (staging / CONFIG_FILE).write_text(render_config(config, len(bundle.labels)), encoding="utf-8")
        staging.chmod(0o755)
        _replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; defaults come from :class:`TritonConfig`.

    Returns:
        The parser.
    """
    defaults = TritonConfig()
    parser = argparse.ArgumentParser(
        prog="python -m textclf.serving.triton", description="Write a Triton model repository from an export bundle.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--bundle-dir", type=Path, required=True, help="export bundle directory")
    parser.add_argument("--repo-dir", type=Path, required=True, help="Triton model repository to write into")
    parser.add_argument("--model-name", default=defaults.model_name)
    parser.add_argument("--precision", choices=[p.value for p in Precision], default=defaults.precision.value)
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--preferred-batch-sizes", type=int, nargs="+", default=list(defaults.preferred_batch_sizes))
    parser.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_microseconds)
    parser.add_argument(
        "--instance-kind", choices=[k.value for k in InstanceKind], default=defaults.instance_kind.value
    )
    parser.add_argument("--instance-count", type=int, default=defaults.instance_count)
    parser.add_argument("--no-tensorrt", dest="tensorrt", action="store_false", help="no TensorRT accelerator")
    parser.add_argument("--tensorrt-precision-mode", choices=("FP16", "FP32"), default=defaults.tensorrt_precision_mode)
    parser.add_argument("--tensorrt-workspace-bytes", type=int, default=defaults.tensorrt_max_workspace_size_bytes)
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Entry point of ``python -m textclf.serving.triton``; prints the model directory.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The model directory written.

    Raises:
        SystemExit: Code 2 with a message for unusable arguments or an unusable bundle.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = TritonConfig(
            model_name=args.model_name, precision=Precision(args.precision), max_batch_size=args.max_batch_size,
            preferred_batch_sizes=tuple(args.preferred_batch_sizes),
            max_queue_delay_microseconds=args.max_queue_delay_us, instance_kind=InstanceKind(args.instance_kind),
            instance_count=args.instance_count, tensorrt=args.tensorrt,
            tensorrt_precision_mode=args.tensorrt_precision_mode,
            tensorrt_max_workspace_size_bytes=args.tensorrt_workspace_bytes,
        )
        model_dir = write_triton_repository(args.bundle_dir, args.repo_dir, config)
    except ValueError as exc:  # BundleError is a ValueError too
        parser.error(str(exc))
    print(model_dir)
    return model_dir


if __name__ == "__main__":
    main()
