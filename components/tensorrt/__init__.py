"""TensorRT engine build stage (GPU nodes only)."""
