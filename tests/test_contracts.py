"""One owner per contract: the export bundle's file names and ONNX tensors are defined once, in
:mod:`textclf.serving.contract`; the files stages pass each other are constants of the producing stage. Every other
module imports them, and the serving-side consumers (predictor feeds, Triton, TensorRT profile) use the spec."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from textclf.serving import contract
from textclf.serving.codec import pad
from textclf.serving.config import ONNX_FILES, Precision
from textclf.serving.contract import ONNX_SPEC, OnnxSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Contract value -> the module-level constants ("module:NAME") allowed to spell it; nothing else in the code may.
OWNERS = {
    "model.onnx": {
        "textclf.serving.contract:FP32_ONNX_FILE",
        # Triton's own convention (the onnxruntime backend's default file name), not the bundle's.
        "textclf.serving.triton:TRITON_ONNX_FILE",
    },
    "model.int8.onnx": {"textclf.serving.contract:INT8_ONNX_FILE"},
    "tokenizer.json": {"textclf.serving.contract:TOKENIZER_FILE"},
    "labels.json": {"textclf.serving.contract:LABELS_FILE"},
    "export_metadata.json": {"textclf.serving.contract:METADATA_FILE"},
    "input_ids": {"textclf.serving.contract:INPUT_IDS"},
    "attention_mask": {"textclf.serving.contract:ATTENTION_MASK"},
    "logits": {"textclf.serving.contract:LOGITS"},
    "ingest_report.json": {"textclf.ingest.ingest:REPORT_FILE"},
    "validation_report.json": {"textclf.validate.validate:REPORT_FILE"},
    "textclf_metadata.json": {"textclf.train.train:METADATA_FILE"},
    "metrics.json": {"textclf.evaluate.evaluate:METRICS_FILE"},
    "predictions.parquet": {"textclf.evaluate.evaluate:PREDICTIONS_FILE"},
    "parity_texts.parquet": {"textclf.evaluate.evaluate:PARITY_TEXTS_FILE"},
    "model.skops": {"textclf.serving.contract:CLASSICAL_MODEL_FILE"},
    "classical_metadata.json": {"textclf.serving.contract:CLASSICAL_METADATA_FILE"},
    "cascade.json": {"textclf.serving.contract:CASCADE_FILE"},
}


def spellings(path: Path, folder: str) -> list[tuple[str, str, int]]:
    """(value, owner key or "", line) of every string constant in ``path`` (a module under ``folder``/) that equals
    a contract value; the owner key is set when the constant is the right-hand side of a module-level
    ``NAME = "value"``."""
    tree = ast.parse(path.read_text(), str(path))
    module = ".".join(path.relative_to(REPO_ROOT / folder).with_suffix("").parts)
    defined = {
        id(node.value): f"{module}:{node.targets[0].id}"
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    return [
        (node.value, defined.get(id(node), ""), node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in OWNERS
    ]


def test_contract_values_are_spelled_only_by_their_owner():
    stray, owners_seen = [], set()
    for folder in ("serving", "components", "pipelines"):
        for path in sorted((REPO_ROOT / folder / "textclf").rglob("*.py")):
            for value, owner, line in spellings(path, folder):
                if owner in OWNERS[value]:
                    owners_seen.add(owner)
                else:
                    stray.append(f"{path.relative_to(REPO_ROOT)}:{line} spells {value!r}; import {OWNERS[value]}")
    assert stray == [], "\n".join(stray)
    assert owners_seen == set().union(*OWNERS.values())


def test_onnx_spec_is_consistent_and_read_only():
    assert ONNX_SPEC.inputs == (contract.INPUT_IDS, contract.ATTENTION_MASK)
    assert ONNX_SPEC.outputs == (contract.LOGITS,)
    assert set(ONNX_SPEC.dynamic_axes) == {*ONNX_SPEC.inputs, *ONNX_SPEC.outputs}
    with pytest.raises(TypeError):
        ONNX_SPEC.dynamic_axes[contract.LOGITS][1] = "labels"  # type: ignore[index]
    assert ONNX_SPEC.to_json() == {
        "inputs": {name: dict(ONNX_SPEC.dynamic_axes[name]) for name in ONNX_SPEC.inputs},
        "outputs": {contract.LOGITS: {0: "batch"}},
    }
    with pytest.raises(ValueError, match="dynamic_axes must name exactly"):
        OnnxSpec(inputs=("a",), outputs=("b",), dynamic_axes={"a": {0: "batch"}})
    with pytest.raises(ValueError, match="unique"):
        OnnxSpec(inputs=("a", "a"), outputs=("b",), dynamic_axes={"a": {}, "b": {}})


def test_serving_consumers_use_the_contract():
    """The predictor's feeds carry exactly the spec's inputs with its dtype; the precisions name the bundle's
    ONNX files; the TensorRT profile covers every input."""
    from textclf.tensorrt import TensorRTConfig, profile_shapes

    batch = pad([[101, 7, 102], [101, 102]])
    feeds = batch.feeds()
    assert tuple(feeds) == ONNX_SPEC.inputs
    assert {array.dtype for array in feeds.values()} == {np.dtype(ONNX_SPEC.input_dtype)}
    assert ONNX_FILES == {Precision.FP32: contract.FP32_ONNX_FILE, Precision.INT8: contract.INT8_ONNX_FILE}
    assert set(contract.REQUIRED_FILES) >= {*ONNX_FILES.values(), contract.TOKENIZER_FILE, contract.LABELS_FILE}
    assert tuple(profile_shapes(TensorRTConfig())) == ONNX_SPEC.inputs
