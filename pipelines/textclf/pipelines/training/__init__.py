"""The training pipeline and its compiled YAML (``training_pipeline.yaml``, ``training_pipeline_gpu.yaml``)."""
