"""Typed settings of every storage backend, with all defaults in one place.

Each backend reads its settings from the environment the way KServe's storage initializer does, so the same
Kubernetes Secret (and its ``serving.kserve.io/s3-*`` annotations) serves the pipeline stages, the registry and the
model server. Tests build the dataclasses directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from textclf.errors import ConfigError

#: Chunk size for streamed reads and writes (file copies, GCS resumable transfers, S3 downloads).
DEFAULT_CHUNK_SIZE = 8 << 20
#: S3 multipart part size; S3 refuses parts below 5 MiB (except the last).
DEFAULT_S3_PART_SIZE = 16 << 20
MIN_S3_PART_SIZE = 5 << 20
#: GCS resumable-upload chunks must be a multiple of 256 KiB.
GCS_CHUNK_QUANTUM = 256 << 10
#: Environment variable naming a mounted Kubernetes Secret directory (one file per key) with S3 credentials.
S3_SECRET_DIR_ENV = "TEXTCLF_S3_SECRET_DIR"
#: Keys read from the environment, or from files of the same name in the Secret directory.
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_FALSE_WORDS = ("0", "false", "no", "off")


def env_flag(value: str | None, default: bool) -> bool:
    """``"0"``/``"false"``/``"no"``/``"off"`` (any case) are false, any other value true, unset the default."""
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in _FALSE_WORDS


@dataclass(frozen=True)
class RetryConfig:
    """Retries of transient failures (connection refused or reset, timeouts, HTTP 429/5xx).

    Attributes:
        attempts: Tries in all, the first included.
        initial_backoff_s: Wait before the second try; doubles each time (with jitter).
        max_backoff_s: Upper bound of one wait.
        timeout_s: Connect and read timeout of one request.
    """

    attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be >= 1, got {self.attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ConfigError(
                f"need 0 <= initial_backoff_s <= max_backoff_s, got {self.initial_backoff_s}, {self.max_backoff_s}"
            )
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class FileConfig:
    """Local filesystem (``file://`` URIs and bare paths).

    Attributes:
        chunk_size: Bytes per read when copying a file.
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FileConfig:
        """The defaults; local files need no settings (the signature matches the other backends)."""
        return cls()


@dataclass(frozen=True)
class S3Config:
    """An S3-compatible endpoint (AWS S3, MinIO, Ceph, moto) reached with the ``minio`` client.

    Attributes:
        endpoint: ``host[:port]`` without scheme.
        secure: HTTPS (True) or plain HTTP.
        verify_ssl: Check the server certificate (only with ``secure``).
        ca_bundle: PEM file of CA certificates to trust; None uses ``SSL_CERT_FILE`` or certifi's bundle.
        region: Region; None lets the client ask the server.
        access_key: Access key id; None for anonymous access.
        secret_key: Secret access key.
        session_token: Temporary-credential session token, if any.
        part_size: Multipart part size for uploads (>= 5 MiB).
        chunk_size: Bytes per read when streaming a download.
        retry: Retries of transient failures.
    """

    endpoint: str = "s3.amazonaws.com"
    secure: bool = True
    verify_ssl: bool = True
    ca_bundle: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    part_size: int = DEFAULT_S3_PART_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    retry: RetryConfig = RetryConfig()

    def __post_init__(self) -> None:
        if not self.endpoint or "/" in self.endpoint:
            raise ConfigError(f"S3 endpoint must be host[:port] without scheme or path, got {self.endpoint!r}")
        if self.part_size < MIN_S3_PART_SIZE:
            raise ConfigError(f"S3 part_size must be >= {MIN_S3_PART_SIZE} bytes, got {self.part_size}")
        if bool(self.access_key) != bool(self.secret_key):
            raise ConfigError("S3 credentials need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or neither)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """Settings from the variables KServe's storage initializer reads.

        ``AWS_ENDPOINT_URL`` (``http(s)://host:port``, its scheme sets TLS) or ``S3_ENDPOINT`` (``host:port``,
        TLS from ``S3_USE_HTTPS``, default on), ``S3_VERIFY_SSL`` (default on), ``AWS_REGION`` (or
        ``AWS_DEFAULT_REGION``), ``AWS_CA_BUNDLE``, and the credentials ``AWS_ACCESS_KEY_ID`` /
        ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, each taken from the environment or else from a file of
        that name in the mounted Secret directory named by ``TEXTCLF_S3_SECRET_DIR``.

        Args:
            environ: Variables to read; default ``os.environ``.

        Returns:
            The settings.

        Raises:
            ConfigError: A malformed endpoint, or only one of the key id and the secret.
        """
        env = os.environ if environ is None else environ
        credentials = s3_credentials(env)
        endpoint, secure = s3_endpoint(env)
        return cls(
            endpoint=endpoint,
            secure=secure,
            verify_ssl=env_flag(env.get("S3_VERIFY_SSL"), True),
            ca_bundle=env.get("AWS_CA_BUNDLE") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            access_key=credentials.get("AWS_ACCESS_KEY_ID"),
            secret_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
            session_token=credentials.get("AWS_SESSION_TOKEN"),
        )


def s3_endpoint(env: Mapping[str, str]) -> tuple[str, bool]:
    """``(host[:port], secure)`` from ``AWS_ENDPOINT_URL``, else ``S3_ENDPOINT`` + ``S3_USE_HTTPS``, else AWS."""
    url = env.get("AWS_ENDPOINT_URL", "").strip()
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"AWS_ENDPOINT_URL must look like http(s)://host[:port], got {url!r}")
        return parsed.netloc, parsed.scheme == "https"
    secure = env_flag(env.get("S3_USE_HTTPS"), True)
    endpoint = env.get("S3_ENDPOINT", "").strip()
    if "://" in endpoint:  # tolerated: a URL where host:port was expected; its scheme wins
        parsed = urlparse(endpoint)
        return parsed.netloc, parsed.scheme == "https"
    return endpoint or S3Config.endpoint, secure


def s3_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """Credential values from the environment, falling back to files in the ``TEXTCLF_S3_SECRET_DIR`` directory.

    Raises:
        ConfigError: ``TEXTCLF_S3_SECRET_DIR`` is set but is not a directory.
    """
    found = {key: env[key] for key in S3_CREDENTIAL_KEYS if env.get(key)}
    secret_dir = env.get(S3_SECRET_DIR_ENV, "").strip()
    if secret_dir:
        directory = Path(secret_dir)
        if not directory.is_dir():
            raise ConfigError(f"{S3_SECRET_DIR_ENV}={secret_dir} is not a directory (a mounted Kubernetes Secret)")
        for key in S3_CREDENTIAL_KEYS:
            path = directory / key
            if key not in found and path.is_file():
                found[key] = path.read_text(encoding="utf-8").strip()
    return found


@dataclass(frozen=True)
class GcsConfig:
    """Google Cloud Storage through ``google-cloud-storage``.

    Attributes:
        project: Project id; None lets the client infer it from the credentials.
        endpoint: API endpoint override; ``STORAGE_EMULATOR_HOST`` when set (an emulator).
        credentials: A ``google.auth.credentials.Credentials``; None uses Application Default Credentials
            (anonymous when an emulator is set).
        chunk_size: Resumable-upload chunk size (a multiple of 256 KiB). The client sends objects up to 8 MiB in
            one request; downloads stream one GET.
        retry: Retries of transient failures.
    """

    project: str | None = None
    endpoint: str | None = None
    credentials: Any = field(default=None, repr=False)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    retry: RetryConfig = RetryConfig()

    def __post_init__(self) -> None:
        if self.chunk_size < GCS_CHUNK_QUANTUM or self.chunk_size % GCS_CHUNK_QUANTUM:
            raise ConfigError(f"GCS chunk_size must be a positive multiple of 256 KiB, got {self.chunk_size}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GcsConfig:
        """Settings from ``STORAGE_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT`` (credentials: ADC).

        Args:
            environ: Variables to read; default ``os.environ``.

        Returns:
            The settings.
        """
        env = os.environ if environ is None else environ
        return cls(project=env.get("GOOGLE_CLOUD_PROJECT") or None, endpoint=env.get("STORAGE_EMULATOR_HOST") or None)
