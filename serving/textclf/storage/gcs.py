"""``gs://`` backend over ``google-cloud-storage`` (honours ``STORAGE_EMULATOR_HOST``).

The client's own retries are switched off (``retry=None`` on every call) so tenacity applies the one policy of
:class:`textclf.storage.config.RetryConfig`. Conditional writes use ``if_generation_match`` (0 = only if absent),
which GCS evaluates atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, TypeVar

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage

from textclf.errors import (
    BucketNotFoundError,
    ConditionalWriteError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
)
from textclf.storage.base import StorageBackend, VersionedBytes, call_with_retries, restart
from textclf.storage.config import GcsConfig
from textclf.storage.uri import Scheme, StorageUri

T = TypeVar("T")

#: Failures worth another try: throttling, server errors, dropped or refused connections, timeouts.
TRANSIENT_ERRORS = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    auth_exceptions.TransportError,
    ConnectionError,
)


def is_transient_gcs_error(exc: BaseException) -> bool:
    """Throttling, HTTP 5xx, connection errors and timeouts."""
    return isinstance(exc, TRANSIENT_ERRORS)


def make_client(config: GcsConfig) -> storage.Client:
    """A ``storage.Client`` for the configured project, credentials and endpoint (an emulator when set)."""
    client_options = {"api_endpoint": config.endpoint} if config.endpoint else None
    return storage.Client(project=config.project, credentials=config.credentials, client_options=client_options)


class GcsBackend(StorageBackend):
    """Objects in Google Cloud Storage buckets."""

    scheme = Scheme.GS

    def __init__(self, config: GcsConfig | None = None):
        """Args:
            config: Project, credentials, endpoint, chunk size and retries; default :meth:`GcsConfig.from_env`.
        """
        self.config = config or GcsConfig.from_env()
        self.client = make_client(self.config)

    def _blob(self, uri: StorageUri, chunk_size: int | None = None) -> storage.Blob:
        return self.client.bucket(uri.bucket).blob(uri.path, chunk_size=chunk_size)

    def read_into(self, uri: StorageUri, sink: BinaryIO) -> None:
        def download() -> None:
            restart(sink)
            # One GET whose body the client copies to ``sink`` piece by piece: streamed without range requests.
            self._blob(uri).download_to_file(sink, retry=None)

        self._call(download, uri, "read")

    def write_from(self, uri: StorageUri, open_source: Callable[[], BinaryIO], size: int) -> None:
        def upload() -> None:
            with open_source() as source:
                # A chunk size makes it a resumable upload sent chunk by chunk.
                self._blob(uri, self.config.chunk_size).upload_from_file(source, size=size, retry=None)

        self._call(upload, uri, "write")

    def exists(self, uri: StorageUri) -> bool:
        if self._call(lambda: self._blob(uri).exists(retry=None), uri, "stat"):
            return True
        self._require_bucket(uri)
        return False

    def list_under(self, prefix: StorageUri) -> list[StorageUri]:
        key_prefix = f"{prefix.path}/" if prefix.path else ""

        def names() -> list[str]:
            return [blob.name for blob in self.client.list_blobs(prefix.bucket, prefix=key_prefix, retry=None)]

        return [StorageUri(Scheme.GS, prefix.bucket, name) for name in sorted(self._call(names, prefix, "list"))]

    def delete(self, uri: StorageUri) -> None:
        try:
            self._call(lambda: self._blob(uri).delete(retry=None), uri, "delete")
        except ObjectNotFoundError:
            return

    def read_versioned(self, uri: StorageUri) -> VersionedBytes:
        def fetch() -> VersionedBytes:
            blob = self.client.bucket(uri.bucket).get_blob(uri.path, retry=None)
            if blob is None:
                raise api_exceptions.NotFound(f"no object {uri.path}")
            data = blob.download_as_bytes(if_generation_match=blob.generation, retry=None)
            return VersionedBytes(data, str(blob.generation))

        return self._call(fetch, uri, "read")

    def write_conditional(self, uri: StorageUri, data: bytes, expected_token: str | None) -> str:
        blob = self._blob(uri)
        generation = 0 if expected_token is None else int(expected_token)
        self._call(
            lambda: blob.upload_from_string(data, if_generation_match=generation, retry=None), uri, "conditional write"
        )
        return str(blob.generation)

    def _require_bucket(self, uri: StorageUri) -> None:
        """Raise :class:`BucketNotFoundError` unless the bucket exists."""
        if self._call(lambda: self.client.lookup_bucket(uri.bucket, retry=None), uri, "check bucket") is None:
            raise BucketNotFoundError(f"{uri}: bucket {uri.bucket!r} does not exist")

    def _call(self, operation: Callable[[], T], uri: StorageUri, verb: str) -> T:
        """Run ``operation`` with retries and turn client errors into :class:`StorageError` subclasses."""
        what = f"GCS {verb} {uri}"
        try:
            return call_with_retries(operation, self.config.retry, is_transient_gcs_error, what)
        except api_exceptions.NotFound as exc:
            raise self._not_found(uri, what) from exc
        except api_exceptions.PreconditionFailed as exc:
            raise ConditionalWriteError(f"{what}: the object exists or changed since it was read") from exc
        except (api_exceptions.Unauthorized, api_exceptions.Forbidden, auth_exceptions.GoogleAuthError) as exc:
            raise StorageAuthError(f"{what}: credentials refused: {exc}") from exc
        except api_exceptions.GoogleAPICallError as exc:
            raise StorageError(f"{what}: {exc}") from exc

    def _not_found(self, uri: StorageUri, what: str) -> StorageError:
        """A 404 names neither bucket nor object: look the bucket up to say which is missing."""
        if self.client.lookup_bucket(uri.bucket, retry=None) is None:
            return BucketNotFoundError(f"{what}: bucket {uri.bucket!r} does not exist")
        return ObjectNotFoundError(f"{what}: no object {uri.path!r} in bucket {uri.bucket!r}")
