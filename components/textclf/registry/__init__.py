"""Model registry over the storage layer: semantic versions, statuses (candidate, production, archived), a
production pointer with history for rollback, and sha256-verified artifacts."""

from textclf.registry.metadata import ArtifactDirs, build_version_metadata
from textclf.registry.registry import ARCHIVED, CANDIDATE, PRODUCTION, ModelRegistry, RegistryConfig
from textclf.registry.versions import Version, next_version

__all__ = [
    "ARCHIVED", "CANDIDATE", "PRODUCTION", "ArtifactDirs", "ModelRegistry", "RegistryConfig", "Version",
    "build_version_metadata", "next_version",
]
