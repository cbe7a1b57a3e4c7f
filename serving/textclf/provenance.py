"""Provenance helpers: content hashes, package versions, git commit, and atomic directory writes."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

#: Distributions whose versions are recorded in every artifact's metadata.
TRACKED_PACKAGES = (
    "textclf-serving", "textclf-components", "textclf-pipelines", "torch", "transformers", "peft", "tokenizers", "onnx",
    "onnxruntime", "kfp", "scikit-learn", "pandas", "numpy",
)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_rows(labels: Sequence[str], texts: Sequence[str]) -> str:
    """Order-sensitive sha256 of (label, text) rows: a fingerprint independent of the file format."""
    digest = hashlib.sha256()
    for label, text in zip(labels, texts, strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def package_versions(names: Sequence[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"not installed"`` for the missing ones)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(repo_dir: str | os.PathLike[str] | None = None) -> str:
    """The current git commit of ``repo_dir`` (default: this source tree), ``TEXTCLF_GIT_COMMIT`` if set
    (component images bake it in), else ``"unknown"``."""
    if os.environ.get("TEXTCLF_GIT_COMMIT"):
        return os.environ["TEXTCLF_GIT_COMMIT"]
    where = Path(repo_dir) if repo_dir else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary handle on a temporary file beside ``path`` that is renamed over ``path`` (mode 0644) only if
    the block finishes; otherwise it is removed, and ``path`` is as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as handle:
            yield handle
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON atomically (see :func:`atomic_file`)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_file(path) as handle:
        handle.write(text.encode("utf-8"))


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_json_object(path: str | os.PathLike[str], error: type[Exception],
                     source: str = "this directory the right pipeline output") -> dict:
    """The JSON object in ``path``; ``error`` (e.g. the caller's ``TextclfError`` subclass), with a message naming
    the file, when it is missing, not UTF-8 JSON or not an object. ``source`` completes "not found; is ...?"."""
    try:
        payload = read_json(path)
    except FileNotFoundError:
        raise error(f"{path}: not found; is {source}?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise error(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging directory that replaces ``final_dir`` only if the block finishes.

    A crash or kill inside the block leaves ``final_dir`` as it was (or absent): never half-written.
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it 0700; readers (a serving container) may be another user
    try:
        yield staging
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, trash / final.name)
            os.replace(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
