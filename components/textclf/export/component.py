"""KFP component: export (thin wrapper around :func:`textclf.export.export_model`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def export_op(
    model: Input[Model],
    evaluation: Input[Artifact],
    opset: int,
    min_int8_agreement: float,
    onnx_model: Output[Model],
    parity: Output[Metrics],
) -> float:
    """Export to ONNX fp32 and dynamic INT8 and check both against PyTorch on real test texts.

    The served probabilities are calibrated: the bundle's ``export_metadata.json`` records the temperature ``T``
    the evaluate component fitted on the validation split (its ``metrics.json``), and the server returns
    ``softmax(logits / T)``. An evaluation without a temperature gives a bundle that serves ``softmax(logits)``.

    Args:
        model: Output of the train component.
        evaluation: Output of the evaluate component (its ``parity_texts.parquet`` holds 256 test texts, its
            ``metrics.json`` the calibration temperature).
        opset: ONNX opset (>= 17).
        min_int8_agreement: The INT8 gate: least share of test texts on which INT8 and PyTorch agree (0.99).
        onnx_model: Output directory: ``model.onnx``, ``model.int8.onnx``, tokenizer, ``labels.json``,
            ``export_metadata.json``; the serving predictor loads it. Its metadata records ``temperature`` when set.
        parity: Parity numbers: fp32 max |logit difference| and INT8 argmax agreement with PyTorch.

    Returns:
        The INT8 argmax agreement with PyTorch. The component fails (and writes nothing) if fp32 differs by more
        than 1e-3 or INT8 agrees on fewer than ``min_int8_agreement`` of the texts, or if the evaluation's
        ``metrics.json`` is missing or holds a temperature that is not a finite number > 0.
    """
    import os

    from textclf.config import ExportConfig
    from textclf.evaluate.evaluate import PARITY_TEXTS_FILE, evaluation_temperature
    from textclf.export import export_model
    from textclf.serving.contract import FP32_ONNX_FILE, INT8_ONNX_FILE

    config = ExportConfig(opset=int(opset), min_int8_agreement=float(min_int8_agreement))
    temperature = evaluation_temperature(evaluation.path)
    result = export_model(model.path, os.path.join(evaluation.path, PARITY_TEXTS_FILE), config, onnx_model.path,
                          temperature=temperature)
    for name in ("fp32_max_abs_logit_diff", "int8_max_abs_logit_diff", "int8_argmax_agreement"):
        parity.log_metric(name, float(result.parity[name]))
        onnx_model.metadata[name] = float(result.parity[name])
    onnx_model.metadata.update({"format": "onnx", "opset": int(opset), "files": [FP32_ONNX_FILE, INT8_ONNX_FILE],
                                "int8_recipe": result.parity["int8_recipe"]})
    if temperature is not None:
        onnx_model.metadata["temperature"] = float(temperature)
    return float(result.parity["int8_argmax_agreement"])
