"""ONNX export: interface (names, opset, dynamic axes), parity with PyTorch, refusal when parity fails, and the
evaluate stage's calibration temperature carried into the bundle's metadata."""

from __future__ import annotations

import numpy as np
import pytest

from textclf.config import EvaluateConfig, ExportConfig
from textclf.errors import ConfigError, ParityError
from textclf.evaluate import evaluate_model
from textclf.evaluate.evaluate import evaluation_temperature
from textclf.export import export_model
from textclf.provenance import read_json, sha256_file
from textclf.serving.contract import FP32_ONNX_FILE, INT8_ONNX_FILE, METADATA_FILE, ONNX_SPEC, TEMPERATURE_KEY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluation(tiny_model, small_splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    evaluate_model(tiny_model, small_splits, EvaluateConfig(parity_rows=128), out)
    return out


@pytest.fixture(scope="module")
def parity_texts(evaluation):
    return evaluation / "parity_texts.parquet"


@pytest.fixture(scope="module")
def exported(tiny_model, evaluation, parity_texts, tmp_path_factory):
    """What ``export_op`` does: the evaluation's validation-fitted temperature goes into the bundle."""
    # The tiny model's logits are close together, so INT8 may flip a borderline text; the 99% acceptance
    # threshold is checked on a real model by the end-to-end pipeline test.
    out = tmp_path_factory.mktemp("export") / "onnx"
    return export_model(tiny_model, parity_texts, ExportConfig(min_int8_agreement=0.95), out,
                        temperature=evaluation_temperature(evaluation))


def test_bundle_carries_the_evaluation_temperature(exported, evaluation):
    temperature = read_json(evaluation / "metrics.json")["calibration"]["temperature"]
    assert temperature > 0 and evaluation_temperature(evaluation) == temperature
    assert read_json(exported.output_dir / METADATA_FILE)[TEMPERATURE_KEY] == temperature


def test_onnx_interface(exported):
    import onnx

    model = onnx.load(str(exported.output_dir / "model.onnx"))
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for tensor in inputs.values():
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [o.name for o in model.graph.output] == ["logits"]


def test_exported_graphs_have_the_contract_tensors(exported):
    """Both ONNX files take and return exactly ONNX_SPEC's tensors, with its dynamic axes and element types, and the
    bundle's metadata records the same spec."""
    import onnx

    elem_types = {"int64": onnx.TensorProto.INT64, "float32": onnx.TensorProto.FLOAT}
    for name in (FP32_ONNX_FILE, INT8_ONNX_FILE):
        graph = onnx.load(str(exported.output_dir / name)).graph
        assert tuple(i.name for i in graph.input) == ONNX_SPEC.inputs, name
        assert tuple(o.name for o in graph.output) == ONNX_SPEC.outputs, name
        for tensor in (*graph.input, *graph.output):
            dims = tensor.type.tensor_type.shape.dim
            named = {axis: dim.dim_param for axis, dim in enumerate(dims) if dim.dim_param}
            assert named == dict(ONNX_SPEC.dynamic_axes[tensor.name]), (name, tensor.name)
        assert {i.type.tensor_type.elem_type for i in graph.input} == {elem_types[ONNX_SPEC.input_dtype]}
        assert {o.type.tensor_type.elem_type for o in graph.output} == {elem_types[ONNX_SPEC.output_dtype]}
    spec = read_json(exported.output_dir / METADATA_FILE)["spec"]
    as_json = {part: {t: {str(a): d for a, d in axes.items()} for t, axes in tensors.items()}
               for part, tensors in ONNX_SPEC.to_json().items()}
    assert {part: spec[part] for part in ("inputs", "outputs")} == as_json


def test_parity_numbers_are_recorded_and_within_tolerance(exported):
    parity = exported.parity
    assert parity["texts"] == 128
    assert parity["fp32_max_abs_logit_diff"] <= 1e-3
    assert parity["int8_argmax_agreement"] >= 0.95
    meta = read_json(exported.output_dir / "export_metadata.json")
    assert meta["parity"] == parity
    assert meta["files"]["model.int8.onnx"] == sha256_file(exported.output_dir / "model.int8.onnx")
    assert meta["sizes_bytes"]["model.int8.onnx"] < 0.8 * meta["sizes_bytes"]["model.onnx"]


def test_int8_model_is_fused_and_quantised(exported):
    """The CPU serving model: ONNX Runtime's fused BERT operators, with INT8 attention and MatMul weights; the
    fp32 model keeps standard operators only (what Triton's TensorRT path parses)."""
    import onnx

    int8_ops = {node.op_type for node in onnx.load(str(exported.output_dir / "model.int8.onnx")).graph.node}
    assert {"QAttention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu"} <= int8_ops
    assert "MatMulInteger" in int8_ops and "Attention" not in int8_ops
    fp32 = onnx.load(str(exported.output_dir / "model.onnx"))
    assert {op.domain for op in fp32.opset_import} <= {"", "ai.onnx"}
    meta = read_json(exported.output_dir / "export_metadata.json")
    assert meta["int8"]["fused_operators"]["Attention"] == 6  # one per MiniLM-L6 layer
    recipe = meta["int8"]["recipe"]
    assert recipe["name"] == exported.parity["int8_recipe"] == exported.parity["int8_attempts"][-1]["recipe"]
    assert exported.parity["int8_attempts"][-1]["int8_argmax_agreement"] == exported.parity["int8_argmax_agreement"]


def test_int8_recipes_are_tried_fastest_first_until_one_passes():
    from textclf.export.export import INT8_RECIPES, first_passing

    fastest, second, most_precise = INT8_RECIPES
    agreement = {fastest.name: 0.98, second.name: 0.995, most_precise.name: 1.0}
    chosen, attempts = first_passing(INT8_RECIPES, lambda recipe: agreement[recipe.name], 0.99)
    assert chosen is second
    assert attempts == [{"recipe": fastest.name, "int8_argmax_agreement": 0.98},
                        {"recipe": second.name, "int8_argmax_agreement": 0.995}]
    chosen, attempts = first_passing(INT8_RECIPES, lambda recipe: 1.0, 0.99)
    assert chosen is fastest and len(attempts) == 1
    assert first_passing(INT8_RECIPES, lambda recipe: 0.5, 0.99)[0] is None


def test_fp32_down_projection_recipe_keeps_them_fp32(tmp_path, exported, tiny_model):
    """Each recipe keeps what it says fp32: one MatMul per layer (the FFN down-projection), then the attention too."""
    import onnx

    from textclf.export.export import INT8_RECIPES, optimize_for_cpu, quantize_int8
    from transformers import AutoConfig

    fused = tmp_path / "fused.onnx"
    optimize_for_cpu(exported.output_dir / "model.onnx", fused, AutoConfig.from_pretrained(tiny_model))
    fp32_ops = []
    for recipe in INT8_RECIPES:
        quantize_int8(fused, tmp_path / f"{recipe.name}.onnx", recipe)
        ops = [node.op_type for node in onnx.load(str(tmp_path / f"{recipe.name}.onnx")).graph.node]
        fp32_ops.append((ops.count("MatMul"), ops.count("Attention"), ops.count("QAttention")))
    assert fp32_ops[1][0] - fp32_ops[0][0] == 6  # six down-projections
    assert [attention for _, attention, _ in fp32_ops] == [0, 0, 6]
    assert [quantised for _, _, quantised in fp32_ops] == [6, 6, 0]


def test_export_dir_is_servable_without_torch(exported):
    """What serving needs: onnxruntime + tokenizers only, batch and sequence sizes free."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(exported.output_dir / "tokenizer.json"))
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(["Stocks rally on Wall Street", "Sox win the pennant in extra innings"])
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(str(exported.output_dir / name), providers=["CPUExecutionProvider"])
        (logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        assert logits.shape == (2, 4)
    assert read_json(exported.output_dir / "labels.json")["labels"][1] == "Sports"


def test_failed_parity_writes_nothing(tiny_model, parity_texts, tmp_path):
    with pytest.raises(ParityError, match=r"INT8 argmax agreement .* \(required 101%\)"):
        export_model(tiny_model, parity_texts, ExportConfig(min_int8_agreement=1.01), tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    assert not list(tmp_path.glob(".onnx.staging-*"))


def test_opset_below_17_is_rejected():
    with pytest.raises(ConfigError, match="opset must be >= 17"):
        ExportConfig(opset=13)
