"""A storage prefix (``file:///runs/x``, ``s3://bucket/models``, ``gs://bucket/registry``) and what stages, the
registry and the model server do with it: read/write bytes, files and directory trees, list, check, and write
conditionally."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from textclf.errors import ObjectNotFoundError, StoragePathError
from textclf.provenance import atomic_directory
from textclf.storage.base import StorageBackend, VersionedBytes
from textclf.storage.config import FileConfig, GcsConfig, S3Config
from textclf.storage.uri import Scheme, StorageUri, safe_relative_path

#: Backend class (``module:Class``, imported on first use, so an image serving from S3 needs no GCS client) and
#: config class of each scheme: a KServe-style lookup table.
BACKENDS: Mapping[Scheme, tuple[str, Any]] = {
    Scheme.FILE: ("textclf.storage.file:FileBackend", FileConfig),
    Scheme.S3: ("textclf.storage.s3:S3Backend", S3Config),
    Scheme.GS: ("textclf.storage.gcs:GcsBackend", GcsConfig),
}


def backend_for(scheme: Scheme, config: Any = None) -> StorageBackend:
    """A backend for ``scheme`` built from ``config``, or from the environment when ``config`` is None.

    Raises:
        ConfigError: The environment holds malformed settings.
        StoragePathError: ``config`` is of another backend's type.
    """
    class_path, config_class = BACKENDS[scheme]
    if config is None:
        config = config_class.from_env()
    elif not isinstance(config, config_class):
        raise StoragePathError(f"{scheme.value}:// needs a {config_class.__name__}, got {type(config).__name__}")
    module_name, class_name = class_path.split(":")
    backend_class: type[StorageBackend] = getattr(importlib.import_module(module_name), class_name)
    return backend_class(config)


def join_relative(*parts: str) -> str:
    """``/``-join the non-empty parts of a relative path."""
    return "/".join(part for part in parts if part)


class Store:
    """A prefix in one backend. Every method takes a path relative to the prefix; a path with ``..``, an
    absolute path or a backslash raises :class:`StoragePathError` before any I/O.

    Errors are :class:`textclf.errors.StorageError` subclasses (see :class:`StorageBackend`).
    """

    def __init__(self, uri: str | os.PathLike[str] | StorageUri, backend: StorageBackend | None = None,
                 config: Any = None):
        """Args:
            uri: The prefix.
            backend: A backend to share (one client, one connection pool); default: built for the URI's scheme.
            config: Settings for a new backend (FileConfig, S3Config or GcsConfig); default: from the environment.

        Raises:
            StoragePathError: A malformed URI, or a backend of another scheme.
        """
        self.root = StorageUri.parse(uri)
        self.backend = backend or backend_for(self.root.scheme, config)
        if self.backend.scheme is not self.root.scheme:
            raise StoragePathError(f"{self.root}: a {self.backend.scheme.value}:// backend cannot serve this URI")

    def uri(self, relative: str = "") -> StorageUri:
        """The absolute URI of ``relative``."""
        return self.root.join(relative)

    def child(self, relative: str) -> Store:
        """A store for the prefix ``relative`` below this one, sharing the backend."""
        return Store(self.uri(relative), backend=self.backend)

    def read_bytes(self, relative: str) -> bytes:
        """The whole object at ``relative``."""
        return self.backend.read_bytes(self.uri(relative))

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Store ``data`` at ``relative``, replacing any object there."""
        self.backend.write_bytes(self.uri(relative), data)

    def exists(self, relative: str) -> bool:
        """Whether an object is at ``relative``."""
        return self.backend.exists(self.uri(relative))

    def list(self, relative: str = "") -> list[str]:
        """Paths (relative to ``relative``) of every object below it, recursive and sorted; checked so none
        can escape it."""
        prefix = self.uri(relative)
        return [item.relative_to(prefix) for item in self.backend.list_under(prefix)]

    def delete(self, relative: str) -> None:
        """Remove the object at ``relative`` (no error if absent)."""
        self.backend.delete(self.uri(relative))

    def upload_file(self, local_path: str | os.PathLike[str], relative: str) -> None:
        """Stream a local file to ``relative``."""
        self.backend.upload_file(local_path, self.uri(relative))

    def download_file(self, relative: str, local_path: str | os.PathLike[str]) -> Path:
        """Stream the object at ``relative`` to ``local_path`` (renamed into place when complete)."""
        return self.backend.download_file(self.uri(relative), local_path)

    def upload_tree(self, local_dir: str | os.PathLike[str], relative: str = "",
                    on_file: Callable[[str, Path], None] | None = None) -> list[str]:
        """Upload every file below ``local_dir`` to the prefix ``relative``, keeping the layout.

        Args:
            local_dir: Directory to upload.
            relative: Destination prefix below this store.
            on_file: Called with (path relative to ``local_dir``, local file) before each upload.

        Returns:
            The uploaded files' paths relative to ``local_dir``, sorted.

        Raises:
            ObjectNotFoundError: ``local_dir`` is not a directory.
        """
        self.uri(relative)  # refuse a bad destination before reading anything
        source = Path(local_dir)
        if not source.is_dir():
            raise ObjectNotFoundError(f"{source}: not a directory")
        names = sorted(path.relative_to(source).as_posix() for path in source.rglob("*") if path.is_file())
        for name in names:
            if on_file:
                on_file(name, source / name)
            self.upload_file(source / name, join_relative(relative, name))
        return names

    def download_tree(self, relative: str, local_dir: str | os.PathLike[str]) -> list[str]:
        """Download every object below ``relative`` into ``local_dir`` (created atomically: a failure leaves
        ``local_dir`` as it was).

        Returns:
            The downloaded paths relative to ``local_dir``, sorted.

        Raises:
            ObjectNotFoundError: No object below ``relative``.
        """
        names = self.list(relative)
        if not names:
            raise ObjectNotFoundError(f"{self.uri(relative)}: no objects below this prefix")
        with atomic_directory(local_dir) as staging:
            for name in names:
                self.download_file(join_relative(relative, name), staging / safe_relative_path(name))
        return names

    def read_versioned(self, relative: str) -> VersionedBytes:
        """The object's bytes and the token :meth:`write_conditional` compares against."""
        return self.backend.read_versioned(self.uri(relative))

    def write_conditional(self, relative: str, data: bytes, expected_token: str | None) -> str:
        """Write only if absent (``expected_token=None``) or unchanged since read; returns the new token.

        Raises:
            ConditionalWriteError: Another writer got there first; nothing was written.
        """
        return self.backend.write_conditional(self.uri(relative), data, expected_token)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"


def download(uri: str | StorageUri, local_path: str | os.PathLike[str], config: Any = None) -> Path:
    """Fetch an object or a whole prefix to local disk (what a model server does with a ``storageUri``).

    Args:
        uri: An object, or a prefix whose objects are all fetched.
        local_path: The file (for an object) or directory (for a prefix) to create.
        config: Backend settings; default from the environment.

    Returns:
        ``local_path``.

    Raises:
        ObjectNotFoundError: Neither an object nor a non-empty prefix is at ``uri``.
    """
    parsed = StorageUri.parse(uri)
    store = Store(parsed, config=config)
    if parsed.path and store.backend.exists(parsed):
        store.download_file("", local_path)
    else:
        store.download_tree("", local_path)
    return Path(local_path)


def upload(local_path: str | os.PathLike[str], uri: str | StorageUri, config: Any = None) -> list[str]:
    """Send a local file or directory tree to ``uri``.

    Returns:
        The uploaded files, relative to ``local_path`` (``[""]`` for a single file).

    Raises:
        ObjectNotFoundError: ``local_path`` does not exist.
    """
    source = Path(local_path)
    store = Store(uri, config=config)
    if source.is_file():
        store.upload_file(source, "")
        return [""]
    return store.upload_tree(source)


def is_remote(uri: str | os.PathLike[str] | StorageUri) -> bool:
    """Whether ``uri`` names an object store (``s3://``, ``gs://``) rather than local disk."""
    return StorageUri.parse(uri).scheme is not Scheme.FILE


def local_path(uri: str | os.PathLike[str] | StorageUri) -> Path:
    """The local path of a bare path or ``file://`` URI.

    Raises:
        StoragePathError: ``uri`` names an object store.
    """
    parsed = StorageUri.parse(uri)
    if parsed.scheme is not Scheme.FILE:
        raise StoragePathError(f"{parsed} is not on local disk")
    return Path(parsed.path)


def localize(uri: str | os.PathLike[str] | StorageUri, scratch_dir: str | os.PathLike[str], config: Any = None) -> Path:
    """A local directory (or file) holding what ``uri`` names: the path itself for local URIs, else a download of
    the object or prefix into ``scratch_dir`` (which must not exist yet; the caller removes it).

    Raises:
        StoragePathError: A malformed URI.
        ObjectNotFoundError: Nothing at a remote ``uri``.
    """
    if not is_remote(uri):
        return local_path(uri)
    return download(uri, scratch_dir, config=config)
