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
