"""Triton model repository generator: layout, config.pbtxt parsed back and checked against the ONNX graph.

tritonclient (whose wheel carries Triton's ``model_config_pb2``) is not a dependency of this project, so the
generated ``config.pbtxt`` is read back with the small protobuf text-format reader below, and every field name is
checked against the field names of Triton's ``ModelConfig`` messages (model_config.proto).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from textclf.serving.bundle import BundleError
from textclf.serving.config import Precision
from textclf.serving.contract import ONNX_SPEC
from textclf.serving.triton import InstanceKind, TritonConfig, main, render_config, write_triton_repository
from textclf.text import NORMALISATION_VERSION

LABELS = ["World", "Sports", "Business", "Sci/Tech"]

#: Field names of the model_config.proto messages the generator writes (Triton's ModelConfig and children).
PROTO_FIELDS: dict[str, set[str]] = {
    "ModelConfig": {"name", "backend", "max_batch_size", "default_model_filename", "input", "output",
                    "dynamic_batching", "instance_group", "optimization"},
    "ModelInput": {"name", "data_type", "dims"},
    "ModelOutput": {"name", "data_type", "dims", "label_filename"},
    "ModelDynamicBatching": {"preferred_batch_size", "max_queue_delay_microseconds"},
    "ModelInstanceGroup": {"count", "kind"},
    "ModelOptimizationPolicy": {"execution_accelerators"},
    "ExecutionAccelerators": {"gpu_execution_accelerator"},
    "Accelerator": {"name", "parameters"},
    "ParametersEntry": {"key", "value"},
}
#: Field -> message type of each message-typed field above.
MESSAGE_FIELDS = {
    "input": "ModelInput", "output": "ModelOutput", "dynamic_batching": "ModelDynamicBatching",
    "instance_group": "ModelInstanceGroup", "optimization": "ModelOptimizationPolicy",
    "execution_accelerators": "ExecutionAccelerators", "gpu_execution_accelerator": "Accelerator",
    "parameters": "ParametersEntry",
}

_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([-\w.]+)|([{}\[\]:,]))')


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        assert match, f"unexpected text at {pos}: {text[pos:pos + 20]!r}"
        tokens.append(next(group for group in match.groups() if group is not None))
        pos = match.end()
    return [*tokens, "<end>"]


class _TextFormat:
    """Protobuf text format reader: a message is ``{field: [values]}``, a value a scalar or a message."""

    def __init__(self, text: str):
        self.tokens, self.pos = _tokens(text), 0

    def take(self) -> str:
        self.pos += 1
        return self.tokens[self.pos - 1]

    def message(self, close: str) -> dict[str, list[Any]]:
        fields: dict[str, list[Any]] = {}
        while self.tokens[self.pos] != close:
            name = self.take()
            assert re.fullmatch(r"[a-z_]+", name), f"bad field name {name!r}"
            if self.tokens[self.pos] == ":":
                self.take()
            values = self.values() if self.tokens[self.pos] == "[" else [self.value()]
            fields.setdefault(name, []).extend(values)
        self.take()
        return fields

    def values(self) -> list[Any]:
        self.take()
        items = []
        while self.tokens[self.pos] != "]":
            items.append(self.value())
            if self.tokens[self.pos] == ",":
                self.take()
        self.take()
        return items

    def value(self) -> Any:
        token = self.take()
        if token == "{":
            return self.message("}")
        if token.startswith('"'):
            return json.loads(token)
        return int(token) if re.fullmatch(r"-?\d+", token) else token


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """``config.pbtxt`` as nested dicts; fails on a syntax error or a field Triton's ModelConfig does not have."""
    config = _TextFormat(text).message("<end>")
    _check_fields("ModelConfig", config)
    return config


def _check_fields(message_type: str, message: dict[str, list[Any]]) -> None:
    unknown = set(message) - PROTO_FIELDS[message_type]
    assert not unknown, f"{message_type} has no field(s) {unknown}"
    for name, values in message.items():
        for value in values:
            if isinstance(value, dict):
                _check_fields(MESSAGE_FIELDS[name], value)


def _toy_onnx(path: Path, n_labels: int) -> None:
    """A graph with the export spec's interface: int64 [batch, sequence] x2 -> float logits [batch, n_labels]."""
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask")]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_labels])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, n_labels], [0.5] * n_labels)
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked"], ["summed"], keepdims=1),
        helper.make_node("Cast", ["summed"], ["summed_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["summed_f", "w"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "toy", inputs, [output], initializer=[weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


@pytest.fixture
def bundle(tmp_path) -> Path:
    """An export bundle as the export stage writes it, with small stand-in ONNX graphs."""
    root = tmp_path / "bundle"
    root.mkdir()
    for name in ("model.onnx", "model.int8.onnx"):
        _toy_onnx(root / name, len(LABELS))
    (root / "tokenizer.json").write_text("{}")
    (root / "labels.json").write_text(json.dumps({"labels": LABELS}))
    files = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in ("model.onnx", "model.int8.onnx")}
    spec = {"inputs": {"input_ids": {"0": "batch", "1": "sequence"}, "attention_mask": {"0": "batch", "1": "sequence"}},
            "outputs": {"logits": {"0": "batch"}}, "opset": 18}
    metadata = {"max_length": 128, "labels": LABELS, "spec": spec, "files": files,
                "normalisation_version": NORMALISATION_VERSION}
    # The export stage writes JSON with sorted keys: the spec lists attention_mask before input_ids.
    (root / "export_metadata.json").write_text(json.dumps(metadata, sort_keys=True))
    return root


def test_repository_layout_and_config(bundle, tmp_path):
    model_dir = write_triton_repository(bundle, tmp_path / "repo")
    assert model_dir == tmp_path / "repo" / "textclf"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "labels.txt"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == (bundle / "model.onnx").read_bytes()
    assert (model_dir / "labels.txt").read_text().splitlines() == LABELS
    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert config["name"] == ["textclf"] and config["backend"] == ["onnxruntime"]
    assert config["max_batch_size"] == [32]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        (["input_ids"], ["TYPE_INT64"], [-1]), (["attention_mask"], ["TYPE_INT64"], [-1])]
    assert config["output"] == [{"name": ["logits"], "data_type": ["TYPE_FP32"], "dims": [4],
                                 "label_filename": ["labels.txt"]}]
    assert config["dynamic_batching"] == [{"preferred_batch_size": [8, 16, 32],
                                           "max_queue_delay_microseconds": [2000]}]
    assert config["instance_group"] == [{"count": [1], "kind": ["KIND_GPU"]}]
    accelerator = config["optimization"][0]["execution_accelerators"][0]["gpu_execution_accelerator"]
    assert accelerator == [{"name": ["tensorrt"], "parameters": [
        {"key": ["precision_mode"], "value": ["FP16"]},
        {"key": ["max_workspace_size_bytes"], "value": [str(1 << 30)]},
    ]}]


def test_config_declares_the_contract_tensors():
    """The generator's tensors are the export spec's (textclf.serving.contract.ONNX_SPEC), names and types."""
    config = parse_pbtxt(render_config(TritonConfig(), n_labels=4))
    assert [t["name"] for t in config["input"]] == [[name] for name in ONNX_SPEC.inputs]
    assert [t["name"] for t in config["output"]] == [[name] for name in ONNX_SPEC.outputs]
    assert ONNX_SPEC.input_dtype == "int64" and {t["data_type"][0] for t in config["input"]} == {"TYPE_INT64"}
    assert ONNX_SPEC.output_dtype == "float32" and config["output"][0]["data_type"] == ["TYPE_FP32"]


def test_config_matches_the_onnx_graph(bundle, tmp_path):
    """Triton loads the model only if the config's tensors match the graph's (batch axis implicit)."""
    model_dir = write_triton_repository(bundle, tmp_path / "repo")
    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    graph = onnx.load(model_dir / "1" / "model.onnx").graph
    triton_types = {TensorProto.INT64: "TYPE_INT64", TensorProto.FLOAT: "TYPE_FP32"}

    def described(tensors) -> list[tuple[str, str, list[int]]]:
        return [(t.name, triton_types[t.type.tensor_type.elem_type],
                 [d.dim_value or -1 for d in t.type.tensor_type.shape.dim][1:]) for t in tensors]

    declared = [(t["name"][0], t["data_type"][0], t["dims"]) for t in config["input"] + config["output"]]
    assert declared == described(graph.input) + described(graph.output)


def test_cpu_int8_without_tensorrt(bundle, tmp_path):
    config = TritonConfig(model_name="agnews", precision=Precision.INT8, instance_kind=InstanceKind.CPU,
                          instance_count=2, tensorrt=False, max_batch_size=8, preferred_batch_sizes=(4, 8))
    model_dir = write_triton_repository(bundle, tmp_path / "repo", config)
    parsed = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert parsed["name"] == ["agnews"] and "optimization" not in parsed
    assert parsed["instance_group"] == [{"count": [2], "kind": ["KIND_CPU"]}]
    assert (model_dir / "1" / "model.onnx").read_bytes() == (bundle / "model.int8.onnx").read_bytes()


def test_rendering_is_deterministic_and_rewrites_replace(bundle, tmp_path):
    assert render_config(TritonConfig(), 4) == render_config(TritonConfig(), 4)
    first = (write_triton_repository(bundle, tmp_path / "repo") / "config.pbtxt").read_bytes()
    (tmp_path / "repo" / "textclf" / "stale.txt").write_text("from an earlier run")
    model_dir = write_triton_repository(bundle, tmp_path / "repo")
    assert (model_dir / "config.pbtxt").read_bytes() == first
    assert not (model_dir / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["textclf"]  # no staging left behind


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instance_kind": InstanceKind.CPU}, r"TensorRT accelerator needs instance_kind KIND_GPU"),
        ({"precision": Precision.INT8}, r"TensorRT accelerator needs precision fp32: .*dynamically quantised"),
        ({"tensorrt_precision_mode": "INT8"}, r"tensorrt_precision_mode must be FP16 or FP32"),
        ({"preferred_batch_sizes": (8, 64)}, r"preferred_batch_sizes \[64\] outside 1..max_batch_size \(32\)"),
        ({"max_batch_size": 0}, r"max_batch_size must be >= 1"),
        ({"model_name": "a/b"}, r"model_name must be a non-empty directory name"),
    ],
)
def test_config_rejects_what_triton_would_refuse(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TritonConfig(**kwargs)


def test_corrupted_onnx_is_refused(bundle, tmp_path):
    with open(bundle / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"model.onnx: sha256 .* is not the .* recorded in export_metadata.json"):
        write_triton_repository(bundle, tmp_path / "repo")
    assert not (tmp_path / "repo" / "textclf").exists()


def test_other_tensor_names_are_refused(bundle, tmp_path):
    metadata = json.loads((bundle / "export_metadata.json").read_text())
    metadata["spec"]["inputs"] = {"input_ids": {"0": "batch", "1": "sequence"}}
    (bundle / "export_metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=r"spec has inputs \['input_ids'\] and outputs \['logits'\]"):
        write_triton_repository(bundle, tmp_path / "repo")


def test_parser_catches_unknown_fields():
    with pytest.raises(AssertionError, match=r"ModelInput has no field\(s\) \{'dim'\}"):
        parse_pbtxt('name: "m"\ninput [ { name: "x" dim: [ 1 ] } ]\n')


def test_generator_imports_neither_torch_nor_transformers():
    code = ("import sys, textclf.serving.triton; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_command_line(bundle, tmp_path, capsys):
    model_dir = main(["--bundle-dir", str(bundle), "--repo-dir", str(tmp_path / "repo"), "--instance-kind", "KIND_CPU",
                      "--no-tensorrt", "--precision", "int8", "--preferred-batch-sizes", "4", "8"])
    assert capsys.readouterr().out.strip() == str(model_dir)
    parsed = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert parsed["instance_group"][0]["kind"] == ["KIND_CPU"] and "optimization" not in parsed
    assert parsed["dynamic_batching"][0]["preferred_batch_size"] == [4, 8]
    with pytest.raises(SystemExit):
        main(["--bundle-dir", str(bundle), "--repo-dir", str(tmp_path / "repo"), "--instance-kind", "KIND_CPU"])
    assert "TensorRT accelerator needs instance_kind KIND_GPU" in capsys.readouterr().err
