"""Errors raised by the stages. Each message names the file, row or parameter at fault and what was expected."""

from __future__ import annotations


class TextclfError(Exception):
    """Base class of every error this package raises on purpose."""


class DataValidationError(TextclfError, ValueError):
    """Input data does not have the expected shape, encoding or labels."""


class ConfigError(TextclfError, ValueError):
    """A parameter value is out of range or inconsistent with another."""


class HardwareUnavailableError(TextclfError, RuntimeError):
    """A requested mode needs hardware (CUDA, TensorRT) that this machine does not have."""


class ParityError(TextclfError, RuntimeError):
    """An exported model does not reproduce the trained model within tolerance."""


class StorageError(TextclfError, RuntimeError):
    """An object-store or file operation failed; the message names the URI and the cause."""


class StoragePathError(StorageError, ValueError):
    """A URI or relative path is malformed, uses an unknown scheme, or tries to escape its prefix (``..``)."""


class BucketNotFoundError(StorageError):
    """The bucket named in an ``s3://`` or ``gs://`` URI does not exist."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """No object or file at the URI."""


class StorageAuthError(StorageError, PermissionError):
    """The store refused the credentials (unknown key, wrong secret, access denied)."""


class StorageUnavailableError(StorageError):
    """The store could not be reached, or kept failing with transient errors until the retries ran out."""


class ConditionalWriteError(StorageError):
    """A conditional write lost: the object already exists, or changed since it was read."""


class RegistryError(TextclfError, RuntimeError):
    """A model-registry operation was refused; the registry is unchanged."""


class ArtifactIntegrityError(RegistryError):
    """A registered artifact's files do not match the sha256 recorded when it was registered."""
