"""The interface every storage backend implements, and the retry loop they share."""

from __future__ import annotations

import abc
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, TypeVar

import tenacity

from textclf.errors import StorageUnavailableError
from textclf.provenance import atomic_file
from textclf.storage.config import RetryConfig
from textclf.storage.uri import Scheme, StorageUri

T = TypeVar("T")


@dataclass(frozen=True)
class VersionedBytes:
    """An object's bytes and the version token a later compare-and-swap must name.

    Attributes:
        data: The object's content.
        token: Opaque version: the sha256 of the content (file), the ETag (S3) or the generation (GCS).
    """

    data: bytes
    token: str


def call_with_retries(
    operation: Callable[[], T], retry: RetryConfig, is_transient: Callable[[BaseException], bool], what: str
) -> T:
    """Run ``operation``, retrying transient failures with exponential backoff and jitter (tenacity).

    Args:
        operation: The call; it must be safe to repeat (it re-opens any stream it reads).
        retry: Attempts and backoff.
        is_transient: Whether an exception is worth another try.
        what: The operation and URI, for the error message.

    Returns:
        What ``operation`` returned.

    Raises:
        StorageUnavailableError: Every attempt failed with a transient error.
        Exception: A non-transient error, as raised by ``operation``, at its first occurrence.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retry.attempts),
        wait=tenacity.wait_exponential_jitter(initial=retry.initial_backoff_s, max=retry.max_backoff_s),
        retry=tenacity.retry_if_exception(is_transient),
        reraise=True,
    )
    try:
        return retrying(operation)
    except Exception as exc:
        if is_transient(exc):
            raise StorageUnavailableError(
                f"{what}: still failing after {retry.attempts} attempts: {type(exc).__name__}: {exc}"
            ) from exc
        raise


class StorageBackend(abc.ABC):
    """Operations on single objects of one scheme; URIs are absolute. Use :class:`textclf.storage.Store` for
    prefix-relative paths, files and directory trees.

    Every method raises a :class:`textclf.errors.StorageError` subclass: ``ObjectNotFoundError``,
    ``BucketNotFoundError``, ``StorageAuthError``, ``StorageUnavailableError`` (retries exhausted) or
    ``ConditionalWriteError``.
    """

    scheme: ClassVar[Scheme]

    @abc.abstractmethod
    def read_into(self, uri: StorageUri, sink: BinaryIO) -> None:
        """Stream the object's bytes into ``sink`` chunk by chunk (``sink`` must support ``seek``/``truncate``
        so that a retry can start over)."""

    @abc.abstractmethod
    def write_from(self, uri: StorageUri, open_source: Callable[[], BinaryIO], size: int) -> None:
        """Store ``size`` bytes read chunk by chunk from the stream ``open_source()`` returns (called once per
        attempt), replacing any object at ``uri``."""

    @abc.abstractmethod
    def exists(self, uri: StorageUri) -> bool:
        """Whether an object (a regular file for ``file``) is at ``uri``."""

    @abc.abstractmethod
    def list_under(self, prefix: StorageUri) -> list[StorageUri]:
        """Every object below ``prefix`` treated as a directory (recursive), sorted."""

    @abc.abstractmethod
    def delete(self, uri: StorageUri) -> None:
        """Remove the object; no error if it is absent."""

    @abc.abstractmethod
    def read_versioned(self, uri: StorageUri) -> VersionedBytes:
        """The object's bytes with its version token."""

    @abc.abstractmethod
    def write_conditional(self, uri: StorageUri, data: bytes, expected_token: str | None) -> str:
        """Write ``data`` only if the object is absent (``expected_token=None``) or still has the version
        ``expected_token``; atomic on the server.

        Returns:
            The new version token.

        Raises:
            ConditionalWriteError: The condition did not hold; nothing was written.
        """

    def read_bytes(self, uri: StorageUri) -> bytes:
        """The whole object (for small objects: metadata, indexes)."""
        buffer = io.BytesIO()
        self.read_into(uri, buffer)
        return buffer.getvalue()

    def write_bytes(self, uri: StorageUri, data: bytes) -> None:
        """Store ``data`` at ``uri``, replacing any object there."""
        self.write_from(uri, lambda: io.BytesIO(data), len(data))

    def upload_file(self, local_path: str | os.PathLike[str], uri: StorageUri) -> None:
        """Stream a local file to ``uri`` (chunked; the file is never read into memory whole)."""
        path = Path(local_path)
        self.write_from(uri, lambda: open(path, "rb"), path.stat().st_size)

    def download_file(self, uri: StorageUri, local_path: str | os.PathLike[str]) -> Path:
        """Stream the object to ``local_path`` through a temporary file renamed into place, so a failed
        download leaves nothing half-written.

        Returns:
            ``local_path``.
        """
        target = Path(local_path)
        with atomic_file(target) as sink:
            self.read_into(uri, sink)
        return target


def restart(sink: BinaryIO) -> None:
    """Empty a sink before a (re)try writes into it."""
    sink.seek(0)
    sink.truncate()
