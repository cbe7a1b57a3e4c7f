"""Export stage: ONNX fp32 + INT8 with a parity check against PyTorch."""

from textclf.export.export import ExportResult, export_model

__all__ = ["ExportResult", "export_model"]
