"""The model registry: versioned copies of trained, evaluated and exported models under one storage prefix.

Layout below the registry root (any :class:`textclf.storage.Store` URI)::

    index.json                      statuses, the production pointer and its history (one object, updated by
                                    compare-and-swap)
    versions/v1.2.0/metadata.json   written once, create-if-absent (this claims the version number)
    versions/v1.2.0/model/...       the train-stage output
    versions/v1.2.0/onnx_model/...  the export bundle (what KServe serves)
    versions/v1.2.0/evaluation/...  the evaluate-stage output

Every index change is read-modify-write with a conditional write and a retry on conflict (optimistic
concurrency), so concurrent writers lose nothing; a refused request raises before anything is written.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from textclf.errors import ArtifactIntegrityError, ConditionalWriteError, ObjectNotFoundError, RegistryError
from textclf.provenance import atomic_directory, sha256_file
from textclf.registry.card import CARD_HTML, CARD_MARKDOWN, build_card
from textclf.registry.metadata import ARTIFACT_PARTS, ArtifactDirs, build_version_metadata
from textclf.registry.versions import Version, next_version, sort_versions
from textclf.storage import StorageUri, Store

T = TypeVar("T")

INDEX = "index.json"
VERSIONS = "versions"
METADATA = "metadata.json"
CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
#: Metrics copied into the index so ``list`` needs no metadata reads.
INDEX_METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class RegistryConfig:
    """Concurrency settings.

    Attributes:
        max_index_attempts: Read-modify-write attempts of one index change before giving up.
        conflict_backoff_s: Upper bound of the first random wait after a lost write (doubles, capped at 32x).
        max_version_probes: Versions tried upward when the next free version number is claimed concurrently.
    """

    max_index_attempts: int = 50
    conflict_backoff_s: float = 0.02
    max_version_probes: int = 100


def empty_index() -> dict[str, Any]:
    return {"schema": 1, "versions": {}, "production": None, "history": []}


def encode_index(index: dict[str, Any]) -> bytes:
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")


def production_stack(index: dict[str, Any]) -> list[str]:
    """The production versions in promotion order, replayed from the history (a rollback pops)."""
    stack: list[str] = []
    for event in index["history"]:
        if event["action"] == "promote":
            stack.append(event["version"])
        elif event["action"] == "rollback":
            while stack and stack[-1] != event["version"]:
                stack.pop()
    return stack


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


#: Stands for the version number in a card rendered before the version is claimed.
VERSION_TOKEN = "@@textclf-version@@"


class ModelRegistry:
    """Register, list, show, compare, promote, roll back, archive and fetch model versions."""

    def __init__(self, uri: str | StorageUri, storage_config: Any = None, config: RegistryConfig | None = None,
                 store: Store | None = None):
        """Args:
            uri: Registry root (``file://``, a path, ``s3://`` or ``gs://``).
            storage_config: Backend settings; default from the environment.
            config: Concurrency settings.
            store: An existing store for ``uri`` (shares its client); overrides ``uri`` and ``storage_config``.
        """
        self.store = store or Store(uri, config=storage_config)
        self.config = config or RegistryConfig()

    # -- reading ---------------------------------------------------------------------------------------------

    def index(self) -> dict[str, Any]:
        """The current index (an empty one for a new registry)."""
        try:
            return json.loads(self.store.read_bytes(INDEX))
        except ObjectNotFoundError:
            return empty_index()

    def list_versions(self) -> list[dict[str, Any]]:
        """One row per version in semantic-version order: version, status, registration time, headline metrics."""
        versions = self.index()["versions"]
        return [{"version": name, **versions[name]} for name in sort_versions(versions)]

    def metadata(self, version: str) -> dict[str, Any]:
        """The metadata recorded when ``version`` was registered.

        Raises:
            RegistryError: Not a semantic version, or not in the registry.
        """
        self._require_registered(self.index(), version)
        return json.loads(self.store.read_bytes(self._version_path(version, METADATA)))

    def card(self, version: str, html: bool = False) -> str:
        """The model card of ``version`` (Markdown, or the HTML page), written when it was registered.

        Raises:
            RegistryError: Not registered, or registered before cards existed.
        """
        self._require_registered(self.index(), version)
        name = CARD_HTML if html else CARD_MARKDOWN
        if not self.store.exists(self._version_path(version, name)):
            raise RegistryError(f"version {version} has no model card: it was registered before cards existed; "
                                "register its artifacts again to get one")
        return self.store.read_bytes(self._version_path(version, name)).decode("utf-8")

    def show(self, version: str) -> dict[str, Any]:
        """Index entry and metadata of ``version`` (see :meth:`metadata` for errors)."""
        entry = self._require_registered(self.index(), version)
        return {"version": version, **entry, "metadata": self.metadata(version)}

    def production_version(self) -> str | None:
        """The version in production, if any."""
        return self.index()["production"]

    def artifact_uri(self, version: str, part: str = "onnx_model") -> str:
        """The URI of one artifact folder of ``version`` (``onnx_model`` is what KServe's ``storageUri`` takes)."""
        self._require_registered(self.index(), version)
        return str(self.store.uri(self._version_path(version, part)))

    def compare(self, first: str, second: str) -> dict[str, Any]:
        """Metrics of two versions side by side, with ``second - first``.

        Raises:
            RegistryError: A version is unknown, or the two were scored on different test sets (not comparable).
        """
        a, b = self.metadata(first), self.metadata(second)
        if a["test_set_sha256"] != b["test_set_sha256"]:
            raise RegistryError(
                f"{first} and {second} were scored on different test sets ({a['test_set_sha256'][:12]}... vs "
                f"{b['test_set_sha256'][:12]}...): their metrics are not comparable"
            )
        names = sorted(set(a["metrics"]) | set(b["metrics"]))
        rows = {
            name: {first: a["metrics"].get(name), second: b["metrics"].get(name),
                   "delta": _difference(a["metrics"].get(name), b["metrics"].get(name))}
            for name in names
        }
        return {"versions": [first, second], "test_set_sha256": a["test_set_sha256"], "metrics": rows}

    # -- registering -----------------------------------------------------------------------------------------

    def register(self, dirs: ArtifactDirs, version: str = "", notes: str = "") -> str:
        """Copy the three artifact directories into the registry as a new ``candidate`` version.

        Args:
            dirs: Train, export and evaluate outputs of one run.
            version: ``vMAJOR.MINOR.PATCH``; empty picks the next free patch version.
            notes: Free text stored with the version.

        Returns:
            The registered version.

        Raises:
            RegistryError: ``version`` is not a semantic version or already exists, or the artifacts are
                incomplete or from different runs. Nothing is written.
        """
        if version:
            Version.parse(version)
        metadata = build_version_metadata(dirs, version, notes)  # validates everything before any write
        # The card, built before anything is written too; the version number is known once claimed.
        cards = build_card(dirs, {**metadata, "version": VERSION_TOKEN})
        claimed = self._claim_version(version, metadata)
        for name, directory in dirs.by_name().items():
            self.store.upload_tree(directory, self._version_path(claimed, name))
        for name, text in zip((CARD_MARKDOWN, CARD_HTML), cards, strict=True):
            self.store.write_bytes(self._version_path(claimed, name), text.replace(VERSION_TOKEN, claimed).encode())
        entry = {
            "status": CANDIDATE,
            "registered_at": utc_now(),
            "test_set_sha256": metadata["test_set_sha256"],
            **{name: metadata["metrics"].get(name) for name in INDEX_METRICS},
        }

        def add(index: dict[str, Any]) -> None:
            index["versions"][claimed] = entry

        self._update_index(add)
        return claimed

    def _claim_version(self, version: str, metadata: dict[str, Any]) -> str:
        """Create ``versions/<v>/metadata.json`` if absent, which reserves the version number.

        Raises:
            RegistryError: The requested version exists, or no free version was found.
        """
        if version:
            try:
                self._write_metadata_if_absent(version, metadata)
            except ConditionalWriteError:
                raise RegistryError(f"version {version} already exists in {self.store.root}") from None
            return version
        candidate = next_version(self.index()["versions"])
        for _ in range(self.config.max_version_probes):
            try:
                self._write_metadata_if_absent(str(candidate), metadata)
                return str(candidate)
            except ConditionalWriteError:
                candidate = candidate.next_patch()
        raise RegistryError(f"no free version found after {self.config.max_version_probes} tries")

    def _write_metadata_if_absent(self, version: str, metadata: dict[str, Any]) -> None:
        payload = json.dumps({**metadata, "version": version}, indent=2, sort_keys=True).encode("utf-8")
        self.store.write_conditional(self._version_path(version, METADATA), payload, None)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def promote(self, version: str, reason: str = "") -> dict[str, Any]:
        """Make ``version`` the production version; the previous one becomes a ``candidate`` again.

        Args:
            version: The version to promote.
            reason: Why (e.g. the promotion gate's decision); recorded in the history.

        Returns:
            ``{"production": version, "previous": <old production or None>}``.

        Raises:
            RegistryError: Unknown or archived version, or already in production. Nothing is changed.
        """
        def apply(index: dict[str, Any]) -> dict[str, Any]:
            entry = self._require_registered(index, version)
            if entry["status"] == ARCHIVED:
                raise RegistryError(f"{version} is archived and cannot be promoted")
            if entry["status"] == PRODUCTION:
                raise RegistryError(f"{version} is already in production")
            previous = index["production"]
            if previous:
                index["versions"][previous]["status"] = CANDIDATE
            entry["status"] = PRODUCTION
            index["production"] = version
            index["history"].append({"action": "promote", "version": version, "previous": previous, "at": utc_now(),
                                     **({"reason": reason} if reason else {})})
            return {"production": version, "previous": previous}

        return self._update_index(apply)

    def rollback(self) -> dict[str, Any]:
        """Put the previous production version back in production; the current one is archived.

        Returns:
            ``{"production": <restored version>, "rolled_back": <archived version>}``.

        Raises:
            RegistryError: Nothing in production, or no earlier production version that is not archived.
        """
        def apply(index: dict[str, Any]) -> dict[str, Any]:
            current = index["production"]
            if not current:
                raise RegistryError("no version is in production, so there is nothing to roll back")
            earlier = [v for v in production_stack(index)[:-1] if index["versions"][v]["status"] != ARCHIVED]
            if not earlier:
                raise RegistryError(f"{current} is in production and no earlier production version is left to "
                                    "roll back to")
            target = earlier[-1]
            index["versions"][current]["status"] = ARCHIVED
            index["versions"][target]["status"] = PRODUCTION
            index["production"] = target
            index["history"].append({"action": "rollback", "version": target, "previous": current, "at": utc_now()})
            return {"production": target, "rolled_back": current}

        return self._update_index(apply)

    def archive(self, version: str, reason: str = "") -> dict[str, Any]:
        """Mark a candidate ``archived`` (it can no longer be promoted or rolled back to).

        Args:
            version: The version to archive.
            reason: Why (e.g. the promotion gate's decision); recorded in the history and on the version's entry.

        Raises:
            RegistryError: Unknown version, already archived, or in production (promote another or roll back
                first).
        """
        def apply(index: dict[str, Any]) -> dict[str, Any]:
            entry = self._require_registered(index, version)
            if entry["status"] == PRODUCTION:
                raise RegistryError(f"{version} is in production: promote another version or roll back first")
            if entry["status"] == ARCHIVED:
                raise RegistryError(f"{version} is already archived")
            entry["status"] = ARCHIVED
            if reason:
                entry["archived_reason"] = reason
            index["history"].append({"action": "archive", "version": version, "at": utc_now(),
                                     **({"reason": reason} if reason else {})})
            return {"archived": version}

        return self._update_index(apply)

    # -- fetching --------------------------------------------------------------------------------------------

    def fetch(self, version: str, local_dir: str | Path, parts: tuple[str, ...] = ARTIFACT_PARTS) -> Path:
        """Download artifact folders of ``version`` and verify every file's sha256.

        Args:
            version: A registered version.
            local_dir: Directory to create (atomically: nothing is left there if verification fails).
            parts: Which folders to fetch (``onnx_model`` alone is what a model server needs).

        Returns:
            ``local_dir``, holding one sub-folder per part.

        Raises:
            RegistryError: Unknown version or part.
            ArtifactIntegrityError: A file is missing, unexpected, or its sha256 differs from the registered one.
        """
        expected = self.metadata(version)["artifacts"]
        wanted = {name: digest for name, digest in expected.items() if name.split("/", 1)[0] in parts}
        unknown = set(parts) - {name.split("/", 1)[0] for name in expected}
        if unknown:
            raise RegistryError(f"{version} has no artifact folder {sorted(unknown)}")
        base = self._version_path(version, "")
        with atomic_directory(local_dir) as staging:
            stored = {f"{part}/{name}" for part in parts for name in self.store.list(f"{base}/{part}")}
            self._check_file_sets(version, set(wanted), stored)
            for name, digest in sorted(wanted.items()):
                actual = sha256_file(self.store.download_file(f"{base}/{name}", staging / name))
                if actual != digest:
                    raise ArtifactIntegrityError(
                        f"{version}/{name}: sha256 {actual[:16]}... differs from the registered "
                        f"{digest[:16]}...: the stored artifact is corrupted or was modified"
                    )
        return Path(local_dir)

    @staticmethod
    def _check_file_sets(version: str, expected: set[str], stored: set[str]) -> None:
        """Raise :class:`ArtifactIntegrityError` unless the stored files are exactly the registered ones."""
        missing, extra = sorted(expected - stored), sorted(stored - expected)
        if missing or extra:
            raise ArtifactIntegrityError(
                f"{version}: stored files differ from the registered ones (missing {missing}, unexpected {extra})"
            )

    # -- internals -------------------------------------------------------------------------------------------

    @staticmethod
    def _version_path(version: str, name: str) -> str:
        return "/".join(part for part in (VERSIONS, version, name) if part)

    @staticmethod
    def _require_registered(index: dict[str, Any], version: str) -> dict[str, Any]:
        """The index entry of ``version``.

        Raises:
            RegistryError: Not a semantic version, or not registered.
        """
        Version.parse(version)
        if version not in index["versions"]:
            known = ", ".join(sort_versions(index["versions"])) or "none"
            raise RegistryError(f"version {version} is not in the registry (registered: {known})")
        return index["versions"][version]

    def _update_index(self, mutate: Callable[[dict[str, Any]], T]) -> T:
        """Read the index, apply ``mutate`` to it and write it back only if nobody changed it meanwhile;
        on a conflict, start over from the new index.

        Raises:
            RegistryError: ``mutate`` refused (nothing written), or the index kept changing for every attempt.
        """
        for attempt in range(self.config.max_index_attempts):
            try:
                current = self.store.read_versioned(INDEX)
                index, token = json.loads(current.data), current.token
            except ObjectNotFoundError:
                index, token = empty_index(), None
            result = mutate(index)
            try:
                self.store.write_conditional(INDEX, encode_index(index), token)
                return result
            except ConditionalWriteError:
                time.sleep(random.uniform(0, self.config.conflict_backoff_s * 2 ** min(attempt, 5)))
        raise RegistryError(
            f"{self.store.uri(INDEX)} changed under every one of {self.config.max_index_attempts} attempts; "
            "too many concurrent writers"
        )


def _difference(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else second - first
