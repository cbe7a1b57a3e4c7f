"""Export stage: ONNX fp32 + INT8 with a parity check against PyTorch."""

from textclf.export.export import SEQUENCE_CLASSIFICATION, ExportResult, OnnxSpec, export_model

__all__ = ["SEQUENCE_CLASSIFICATION", "ExportResult", "OnnxSpec", "export_model"]
