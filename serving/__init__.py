"""KServe predictor for textclf ONNX models (issue 3)."""
