"""Registry version strings: ``vMAJOR.MINOR.PATCH`` (semantic versioning, no pre-release or build suffix)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from textclf.errors import RegistryError

_SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
#: The version an empty registry hands out when none is asked for.
FIRST_VERSION = "v0.1.0"


@dataclass(frozen=True, order=True)
class Version:
    """A parsed ``vMAJOR.MINOR.PATCH``; compares numerically (``v0.10.0`` > ``v0.9.0``)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``vMAJOR.MINOR.PATCH``.

        Raises:
            RegistryError: Anything else (missing ``v``, leading zeros, suffixes, fewer or more parts).
        """
        match = _SEMVER.match(text)
        if not match:
            raise RegistryError(f"version {text!r} is not of the form vMAJOR.MINOR.PATCH (e.g. v1.4.0)")
        return cls(*(int(part) for part in match.groups()))

    def next_patch(self) -> Version:
        return Version(self.major, self.minor, self.patch + 1)

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def next_version(existing: Iterable[str]) -> Version:
    """The patch after the highest of ``existing``, or :data:`FIRST_VERSION` when there is none."""
    versions = [Version.parse(text) for text in existing]
    return max(versions).next_patch() if versions else Version.parse(FIRST_VERSION)


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Version strings in semantic-version order."""
    return sorted(versions, key=Version.parse)
