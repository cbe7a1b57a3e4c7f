"""The distillation pipeline and its compiled YAML (``distillation_pipeline.yaml``)."""
