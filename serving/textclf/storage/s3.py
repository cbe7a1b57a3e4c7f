"""``s3://`` backend over the ``minio`` client: AWS S3, MinIO, Ceph RGW and moto all speak this API.

Retries are ours (tenacity, :class:`textclf.storage.config.RetryConfig`): the client's own urllib3 retries are
switched off so a failure is retried by exactly one policy, with a message that says how many tries were made.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import BinaryIO, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from textclf.errors import (
    BucketNotFoundError,
    ConditionalWriteError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    StoragePathError,
)
from textclf.storage.base import StorageBackend, VersionedBytes, call_with_retries, restart
from textclf.storage.config import S3Config
from textclf.storage.uri import Scheme, StorageUri

T = TypeVar("T")

#: S3 error codes worth another try.
TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling"})
#: S3 error codes meaning the credentials are wrong or lack permission.
AUTH_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "InvalidClientTokenId", "AuthorizationHeaderMalformed",
})
#: S3 error codes of a conditional write that lost (412, or 409 for a concurrent conditional write).
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
NOT_FOUND_KEY_CODES = frozenset({"NoSuchKey", "NoSuchObject"})


def is_certificate_error(exc: BaseException) -> bool:
    """A TLS handshake that failed because the server's certificate is not trusted (retrying will not help)."""
    return isinstance(exc, urllib3.exceptions.SSLError) and any(
        isinstance(arg, ssl.SSLCertVerificationError) for arg in exc.args
    )


def is_transient_s3_error(exc: BaseException) -> bool:
    """Connection errors, timeouts, HTTP 5xx and S3 throttling codes (not an untrusted TLS certificate)."""
    if is_certificate_error(exc):
        return False
    if isinstance(exc, (urllib3.exceptions.HTTPError, ServerError, ConnectionError)):
        return True
    if isinstance(exc, InvalidResponseError):  # a non-XML answer, e.g. a proxy's 502 page
        return int(getattr(exc, "_code", 0) or 0) >= 500
    return isinstance(exc, S3Error) and exc.code in TRANSIENT_CODES


def make_client(config: S3Config) -> Minio:
    """A ``Minio`` client with our timeouts and TLS settings and urllib3's own retries off."""
    http_client = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=config.retry.timeout_s, read=config.retry.timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED" if config.verify_ssl else "CERT_NONE",
        ca_certs=config.ca_bundle or os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=False,
    )
    return Minio(
        config.endpoint,
        access_key=config.access_key,
        secret_key=config.secret_key,
        session_token=config.session_token,
        secure=config.secure,
        region=config.region,
        http_client=http_client,
    )


class S3Backend(StorageBackend):
    """Objects in S3-compatible buckets. Conditional writes use ``If-None-Match: *`` (create only if absent)
    and ``If-Match: <ETag>`` (compare-and-swap) on PutObject, which AWS S3, MinIO and moto evaluate atomically."""

    scheme = Scheme.S3

    def __init__(self, config: S3Config | None = None):
        """Args:
            config: Endpoint, credentials, TLS, part size and retries; default :meth:`S3Config.from_env`.
        """
        self.config = config or S3Config.from_env()
        self.client = make_client(self.config)

    def read_into(self, uri: StorageUri, sink: BinaryIO) -> None:
        def download() -> None:
            restart(sink)
            response = self.client.get_object(uri.bucket, uri.path)
            try:
                for chunk in response.stream(self.config.chunk_size):
                    sink.write(chunk)
            finally:
                response.close()
                response.release_conn()

        self._call(download, uri, "read")

    def write_from(self, uri: StorageUri, open_source: Callable[[], BinaryIO], size: int) -> None:
        def upload() -> None:
            with open_source() as source:
                self.client.put_object(
                    uri.bucket, uri.path, source, size, part_size=self.config.part_size, num_parallel_uploads=1
                )

        self._call(upload, uri, "write")

    def exists(self, uri: StorageUri) -> bool:
        try:
            self._call(lambda: self.client.stat_object(uri.bucket, uri.path), uri, "stat")
        except ObjectNotFoundError:
            # A HEAD request carries no error body, so a missing bucket also reads as a missing key: ask.
            self._require_bucket(uri)
            return False
        return True

    def list_under(self, prefix: StorageUri) -> list[StorageUri]:
        key_prefix = f"{prefix.path}/" if prefix.path else ""

        def names() -> list[str]:
            found = self.client.list_objects(prefix.bucket, prefix=key_prefix, recursive=True)
            return [item.object_name for item in found if not item.is_dir]

        return [StorageUri(Scheme.S3, prefix.bucket, name) for name in sorted(self._call(names, prefix, "list"))]

    def delete(self, uri: StorageUri) -> None:
        self._call(lambda: self.client.remove_object(uri.bucket, uri.path), uri, "delete")

    def read_versioned(self, uri: StorageUri) -> VersionedBytes:
        def fetch() -> VersionedBytes:
            response = self.client.get_object(uri.bucket, uri.path)
            try:
                return VersionedBytes(response.data, response.headers.get("etag", "").strip('"'))
            finally:
                response.close()
                response.release_conn()

        return self._call(fetch, uri, "read")

    def write_conditional(self, uri: StorageUri, data: bytes, expected_token: str | None) -> str:
        condition = {"If-None-Match": "*"} if expected_token is None else {"If-Match": f'"{expected_token}"'}
        headers = {"Content-Type": "application/octet-stream", **condition}
        # The public put_object() turns every header it does not know into x-amz-meta-* user metadata, so the
        # precondition goes through the client's single-request PutObject call.
        try:
            result = self._call(
                lambda: self.client._put_object(uri.bucket, uri.path, data, headers=headers), uri, "conditional write"
            )
        except ObjectNotFoundError as exc:  # If-Match on an object that is gone
            raise ConditionalWriteError(f"{uri}: was deleted since it was read") from exc
        return str(result.etag)

    def _require_bucket(self, uri: StorageUri) -> None:
        """Raise :class:`BucketNotFoundError` unless the bucket exists."""
        if not self._call(lambda: self.client.bucket_exists(uri.bucket), uri, "check bucket"):
            raise BucketNotFoundError(f"{uri}: bucket {uri.bucket!r} does not exist on {self.config.endpoint}")

    def _call(self, operation: Callable[[], T], uri: StorageUri, verb: str) -> T:
        """Run ``operation`` with retries and turn client errors into :class:`StorageError` subclasses."""
        what = f"S3 {verb} {uri} (endpoint {self.config.endpoint})"
        try:
            return call_with_retries(operation, self.config.retry, is_transient_s3_error, what)
        except S3Error as exc:
            raise self._translate(exc, uri, what) from exc
        except (InvalidResponseError, ServerError) as exc:
            raise StorageError(f"{what}: unexpected answer: {exc}") from exc
        except urllib3.exceptions.SSLError as exc:
            raise StorageError(
                f"{what}: the endpoint's TLS certificate is not trusted ({exc.args[0]}); trust its CA with "
                "AWS_CA_BUNDLE, or set S3_VERIFY_SSL=0"
            ) from exc
        except ValueError as exc:  # the client's own checks of bucket and object names
            raise StoragePathError(f"{what}: {exc}") from exc

    def _translate(self, exc: S3Error, uri: StorageUri, what: str) -> StorageError:
        """The storage error for an S3 error response."""
        if exc.code == "NoSuchBucket":
            return BucketNotFoundError(f"{what}: bucket {uri.bucket!r} does not exist")
        if exc.code in NOT_FOUND_KEY_CODES:
            return ObjectNotFoundError(f"{what}: no object {uri.path!r} in bucket {uri.bucket!r}")
        if exc.code in AUTH_CODES:
            return StorageAuthError(
                f"{what}: credentials refused ({exc.code}: {exc.message}); check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or the mounted Secret) and the key's permissions"
            )
        if exc.code in CONFLICT_CODES:
            return ConditionalWriteError(f"{what}: the object exists or changed since it was read ({exc.code})")
        return StorageError(f"{what}: {exc.code}: {exc.message}")
