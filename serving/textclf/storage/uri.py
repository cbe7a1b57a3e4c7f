"""Storage URIs: ``file://`` (and bare paths), ``s3://bucket/key`` and ``gs://bucket/key``.

Relative paths joined onto a URI are checked here, once, for every backend: a ``..`` segment, an absolute path or a
backslash is refused, so nothing built from a listing or a user's argument can reach outside its prefix.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from textclf.errors import StoragePathError

#: S3 and GCS bucket names: lower-case letters, digits, dots, dashes (and underscores on GCS), 3-63 characters.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


class Scheme(str, enum.Enum):
    """URI schemes with a storage backend."""

    FILE = "file"
    S3 = "s3"
    GS = "gs"


def safe_relative_path(relative: str) -> str:
    """Normalise a relative path (``a//b/./c`` -> ``a/b/c``) and refuse any that could leave its prefix.

    Args:
        relative: ``/``-separated path; empty means the prefix itself.

    Returns:
        The normalised path (``""`` for the prefix itself).

    Raises:
        StoragePathError: An absolute path, a ``..`` segment, a backslash or a NUL character.
    """
    if relative.startswith("/"):
        raise StoragePathError(f"path {relative!r} is absolute; expected a path relative to the prefix")
    if "\\" in relative or "\x00" in relative:
        raise StoragePathError(f"path {relative!r} contains a backslash or NUL character")
    segments = [segment for segment in relative.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise StoragePathError(f"path {relative!r} tries to escape its prefix with '..'")
    return "/".join(segments)


@dataclass(frozen=True)
class StorageUri:
    """A parsed storage location.

    Attributes:
        scheme: The backend.
        bucket: Bucket name (``""`` for ``file``).
        path: Object key without a leading ``/`` (``s3``/``gs``; ``""`` is the bucket root), or the absolute
            filesystem path (``file``).
    """

    scheme: Scheme
    bucket: str
    path: str

    @classmethod
    def parse(cls, uri: str | os.PathLike[str] | StorageUri) -> StorageUri:
        """Parse ``file:///abs/path``, a bare (absolute or relative) path, ``s3://bucket/key`` or ``gs://bucket/key``.

        Args:
            uri: The URI or path.

        Returns:
            The parsed URI; a bare or relative path becomes an absolute ``file`` URI.

        Raises:
            StoragePathError: Unknown scheme, missing or invalid bucket name, or a ``..`` segment in a key.
        """
        if isinstance(uri, StorageUri):
            return uri
        text = os.fspath(uri)
        if "://" not in text:
            return cls(Scheme.FILE, "", os.path.abspath(text))
        parsed = urlparse(text)
        try:
            scheme = Scheme(parsed.scheme.lower())
        except ValueError:
            known = ", ".join(f"{s.value}://" for s in Scheme)
            raise StoragePathError(f"{text}: unsupported scheme {parsed.scheme!r}; expected one of {known}") from None
        if scheme is Scheme.FILE:
            if parsed.netloc not in ("", "localhost"):
                raise StoragePathError(f"{text}: file URIs take no host; write file:///absolute/path")
            return cls(Scheme.FILE, "", os.path.abspath(unquote(parsed.path) or "/"))
        if not _BUCKET_NAME.match(parsed.netloc):
            raise StoragePathError(f"{text}: {parsed.netloc!r} is not a valid bucket name")
        return cls(scheme, parsed.netloc, safe_relative_path(parsed.path.lstrip("/")))

    def join(self, relative: str) -> StorageUri:
        """The location ``relative`` below this one (checked by :func:`safe_relative_path`)."""
        tail = safe_relative_path(relative)
        if not tail:
            return self
        if self.scheme is Scheme.FILE:
            return StorageUri(self.scheme, "", os.path.join(self.path, tail))
        return StorageUri(self.scheme, self.bucket, f"{self.path}/{tail}" if self.path else tail)

    def relative_to(self, prefix: StorageUri) -> str:
        """This location's path below ``prefix``, checked so it cannot escape it.

        Raises:
            StoragePathError: This location is not below ``prefix``.
        """
        if self == prefix:
            return ""
        if (self.scheme, self.bucket) != (prefix.scheme, prefix.bucket):
            raise StoragePathError(f"{self} is not below {prefix}")
        base = prefix.path.rstrip("/")
        head = f"{base}/" if base else ""
        if self.scheme is Scheme.FILE and base == "":
            head = "/"
        if not self.path.startswith(head):
            raise StoragePathError(f"{self} is not below {prefix}")
        return safe_relative_path(self.path[len(head):])

    def __str__(self) -> str:
        if self.scheme is Scheme.FILE:
            return f"file://{self.path}"
        return f"{self.scheme.value}://{self.bucket}/{self.path}"
