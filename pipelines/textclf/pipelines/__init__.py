"""Pipelines built from the components, their compiled YAML (golden files) and the local runner."""
