"""``file://`` backend: the local filesystem (or any mounted volume), with atomic renames for every write."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from textclf.errors import ConditionalWriteError, ObjectNotFoundError, StorageAuthError
from textclf.storage.base import StorageBackend, VersionedBytes, restart
from textclf.storage.config import FileConfig
from textclf.storage.uri import Scheme, StorageUri

#: Prefix of the temporary files a write creates beside its target; listings skip them.
TEMP_PREFIX = ".textclf-tmp-"


def content_token(data: bytes) -> str:
    """The version token of a local file: the sha256 of its content."""
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def translated_os_errors(uri: StorageUri) -> Iterator[None]:
    """Turn ``FileNotFoundError``/``PermissionError`` into the storage errors, naming the URI."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ObjectNotFoundError(f"{uri}: no such file ({exc.strerror})") from exc
    except IsADirectoryError as exc:
        raise ObjectNotFoundError(f"{uri}: is a directory, not a file") from exc
    except PermissionError as exc:
        raise StorageAuthError(f"{uri}: permission denied") from exc


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (released on exit, or by the kernel if the process dies)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class FileBackend(StorageBackend):
    """Local files. Writes go to a temporary file in the target's directory and are renamed (or hard-linked, for
    write-if-absent) into place, so readers never see a partial file."""

    scheme = Scheme.FILE

    def __init__(self, config: FileConfig | None = None):
        """Args:
            config: Chunk size; defaults from :class:`FileConfig`.
        """
        self.config = config or FileConfig()

    def read_into(self, uri: StorageUri, sink: BinaryIO) -> None:
        restart(sink)
        with translated_os_errors(uri), open(uri.path, "rb") as source:
            shutil.copyfileobj(source, sink, self.config.chunk_size)

    def write_from(self, uri: StorageUri, open_source: Callable[[], BinaryIO], size: int) -> None:
        with translated_os_errors(uri), open_source() as source:
            tmp = self._write_temporary(
                Path(uri.path), lambda sink: shutil.copyfileobj(source, sink, self.config.chunk_size)
            )
            try:
                os.replace(tmp, uri.path)
            except BaseException:
                os.unlink(tmp)
                raise

    def exists(self, uri: StorageUri) -> bool:
        return os.path.isfile(uri.path)

    def list_under(self, prefix: StorageUri) -> list[StorageUri]:
        root = Path(prefix.path)
        if not root.is_dir():
            return []
        found = [
            StorageUri(Scheme.FILE, "", str(path))
            for path in root.rglob("*")
            if path.is_file() and not path.name.startswith(TEMP_PREFIX)
        ]
        return sorted(found, key=lambda item: item.path)

    def delete(self, uri: StorageUri) -> None:
        with translated_os_errors(uri), contextlib.suppress(FileNotFoundError):
            os.unlink(uri.path)

    def read_versioned(self, uri: StorageUri) -> VersionedBytes:
        with translated_os_errors(uri):
            data = Path(uri.path).read_bytes()
        return VersionedBytes(data, content_token(data))

    def write_conditional(self, uri: StorageUri, data: bytes, expected_token: str | None) -> str:
        target = Path(uri.path)
        with translated_os_errors(uri):
            tmp = self._write_temporary(target, lambda sink: sink.write(data))
            try:
                if expected_token is None:
                    self._link_if_absent(tmp, target, uri)
                else:
                    self._replace_if_unchanged(tmp, target, expected_token, uri)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return content_token(data)

    @staticmethod
    def _link_if_absent(tmp: str, target: Path, uri: StorageUri) -> None:
        """``link(2)`` fails if the target exists: an atomic create-if-absent that never exposes partial data."""
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise ConditionalWriteError(f"{uri}: already exists (write-if-absent lost)") from None

    @staticmethod
    def _replace_if_unchanged(tmp: str, target: Path, expected_token: str, uri: StorageUri) -> None:
        """Under the directory lock: compare the current content's token, then rename over it."""
        with directory_lock(target.parent):
            try:
                current = content_token(target.read_bytes())
            except FileNotFoundError:
                raise ConditionalWriteError(f"{uri}: was deleted since it was read") from None
            if current != expected_token:
                raise ConditionalWriteError(f"{uri}: changed since it was read (compare-and-swap lost)")
            os.replace(tmp, target)

    @staticmethod
    def _write_temporary(target: Path, fill: Callable[[BinaryIO], object]) -> str:
        """A fsynced temporary file beside ``target`` filled by ``fill``; the caller renames or removes it."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as sink:
                fill(sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.chmod(tmp, 0o644)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp
