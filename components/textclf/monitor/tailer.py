"""Following the rotated serving request log, resumably, and turning its lines into window rows.

The log (written by :class:`textclf.serving.request_log.RequestLog`, one :class:`RequestRecord` JSON line per
prediction) rotates as ``path``, ``path.1``, ``path.2``, ... A :class:`LogPosition` per log (inode, byte offset and a
hash of the file's first line, so that rotation and inode reuse are recognised) says how far it has been consumed;
:class:`LogTailer` reads what was appended since and keeps the positions for the caller to persist.

Reading rules: only complete lines are consumed (a line still being written is read on the next read); rotated
files are read oldest first; a line that is not a record (:meth:`RequestRecord.from_json` fails) or lacks what a
window row needs (``text``, ``probabilities``, an ISO-8601 ``timestamp``) is skipped and counted. Several logs (one
per predictor replica) are read when the paths name several files or a directory (every ``*.jsonl`` in it).

A window row is the compact form the monitor keeps in its state file: ``{"ts": ISO timestamp, "t": Unix seconds,
"x": text, "l": label, "c": confidence, "v": model version}`` (:func:`window_row`, :func:`rows_to_window`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from textclf.errors import ObjectNotFoundError
from textclf.serving.request_log import RequestRecord, RequestRecordError

log = logging.getLogger(__name__)

#: Malformed lines logged individually per read (the rest are only counted).
MALFORMED_EXAMPLES = 3


# --- reading the rotated log ------------------------------------------------------------------------------------


@dataclass
class LogPosition:
    """How far a log has been consumed: the file (inode, hash of its first line) and the byte offset in it."""

    inode: int
    offset: int
    head: str = ""


def rotated_files(base: Path) -> list[Path]:
    """``base``, ``base.1``, ``base.2``, ... that exist, newest first (RotatingFileHandler's naming)."""
    files = [base] if base.is_file() else []
    index = 1
    while (candidate := base.with_name(f"{base.name}.{index}")).is_file():
        files.append(candidate)
        index += 1
    return files


def _head_hash(handle: Any) -> str:
    handle.seek(0)
    first = handle.readline(1 << 16)
    return hashlib.sha256(first).hexdigest()[:16] if first.endswith(b"\n") else ""


def read_new_lines(base: Path, position: LogPosition | None) -> tuple[list[bytes], LogPosition | None]:
    """Complete lines appended to a rotated log since ``position``, oldest first.

    Args:
        base: The log file (rotated copies are ``base.1``, ``base.2``, ...).
        position: Where the last read stopped (None: read everything there is).

    Returns:
        The new lines (without newlines) and the new position.
    """
    files = rotated_files(base)
    if not files:
        return [], position
    oldest_first = list(reversed(files))
    try:
        inodes = [os.stat(path).st_ino for path in oldest_first]
    except FileNotFoundError:  # rotating right now: the next poll sees the new files
        return [], position
    start, offset = 0, 0
    if position is not None:
        for index, path in enumerate(oldest_first):
            if inodes[index] != position.inode:
                continue
            try:
                with open(path, "rb") as handle:
                    same = not position.head or position.offset == 0 or _head_hash(handle) == position.head
            except FileNotFoundError:  # rotated away while listing
                continue
            if same:
                start, offset = index, position.offset
                break
        else:
            log.warning("%s: the file last read (inode %d) was rotated away; reading every rotated file from the "
                        "start (rows logged while the monitor was down for several rotations may be lost)",
                        base, position.inode)
    lines: list[bytes] = []
    for index in range(start, len(oldest_first)):
        path = oldest_first[index]
        newest = index == len(oldest_first) - 1
        try:
            handle = open(path, "rb")
        except FileNotFoundError:  # rotated between listing and opening: the next poll picks it up
            break
        with handle:
            inode = os.fstat(handle.fileno()).st_ino
            if inode != inodes[index]:  # rotated between listing and opening: stop, the next poll re-lists
                break
            head = _head_hash(handle)
            size = os.fstat(handle.fileno()).st_size
            if offset > size:  # truncated or replaced in place
                log.warning("%s: shorter (%d bytes) than the saved offset %d; reading it from the start",
                            path, size, offset)
                offset = 0
            handle.seek(offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        if not newest and end < len(data):
            end = len(data)  # a rotated file is final: its unterminated tail is a (probably broken) last line
        lines.extend(line for line in data[:end].splitlines() if line.strip())
        position = LogPosition(inode=inode, offset=offset + end, head=head or _first_line_hash(data, offset))
        offset = 0
    return lines, position


def _first_line_hash(data: bytes, offset: int) -> str:
    if offset != 0:
        return ""
    newline = data.find(b"\n")
    return hashlib.sha256(data[:newline + 1]).hexdigest()[:16] if newline >= 0 else ""


def log_files(paths: Sequence[str | Path]) -> list[Path]:
    """The base log files named by ``paths``: files as given, directories expanded to their ``*.jsonl`` files.

    Raises:
        ObjectNotFoundError: None of them exists yet (neither the file nor a rotated copy).
    """
    bases: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            bases += sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(".jsonl"))
        else:
            bases.append(path)
    existing = [base for base in bases if rotated_files(base)]
    if not existing:
        named = ", ".join(str(p) for p in paths)
        raise ObjectNotFoundError(
            f"request log not found: {named} (no such file, rotated copy or *.jsonl file); is the model server "
            "writing its request log (--request-log) to this path?"
        )
    return existing


# --- window rows ------------------------------------------------------------------------------------------------


def window_row(record: RequestRecord) -> dict[str, Any]:
    """The compact window row of a request record (see the module docstring).

    Raises:
        InvalidRecord: The record has no text, probabilities or ISO-8601 timestamp.
    """
    moment = record.require("text", "probabilities").moment()
    return {"ts": moment.isoformat(), "t": moment.timestamp(), "x": record.text, "l": record.label,
            "c": record.confidence, "v": record.model_version}


def rows_to_window(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Window rows (:func:`window_row`) as the DataFrame :meth:`DriftDetector.check` takes."""
    rows = list(rows)
    return pd.DataFrame({
        "text": [r["x"] for r in rows], "label": [r["l"] for r in rows], "confidence": [r["c"] for r in rows],
        "timestamp": [r["ts"] for r in rows], "model_version": [r["v"] for r in rows],
    })


# --- the tailer -------------------------------------------------------------------------------------------------


@dataclass
class TailRead:
    """What one :meth:`LogTailer.read` found: the valid window rows and their records, oldest first, and the lines
    skipped."""

    rows: list[dict[str, Any]]
    malformed: int
    records: list[RequestRecord] = field(default_factory=list)


class LogTailer:
    """Follows request logs from saved positions.

    Args:
        paths: Log file(s) or a directory of ``*.jsonl`` logs.
        positions: Where earlier reads stopped, by log file (:meth:`positions_state` of an earlier tailer).
    """

    def __init__(self, paths: str | Path | Sequence[str | Path],
                 positions: Mapping[str, Mapping[str, Any]] | None = None):
        self.paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self.positions = {name: LogPosition(**saved) for name, saved in (positions or {}).items()}

    def read(self) -> TailRead:
        """The window rows of every complete line appended since the last read; advances the positions.

        Raises:
            ObjectNotFoundError: No log at the paths.
        """
        rows, records, malformed, examples = [], [], 0, 0
        for base in log_files(self.paths):
            lines, position = read_new_lines(base, self.positions.get(str(base)))
            for line in lines:
                try:
                    record = RequestRecord.from_json(line)
                    rows.append(window_row(record))
                    records.append(record)
                except RequestRecordError as exc:
                    malformed += 1
                    if examples < MALFORMED_EXAMPLES:
                        log.warning("%s: skipping malformed line (%s): %.120r", base, exc.reason, line)
                        examples += 1
            if position is not None:
                self.positions[str(base)] = position
        return TailRead(rows, malformed, records)

    def positions_state(self) -> dict[str, dict[str, Any]]:
        """The positions as JSON-ready dicts (for the monitor's state file)."""
        return {name: asdict(position) for name, position in self.positions.items()}


def read_request_log(paths: str | Path | Sequence[str | Path]) -> tuple[list[dict[str, Any]], int]:
    """Every valid window row of the request log(s), oldest file first (for one-shot checks).

    Returns:
        The rows (see :func:`window_row`) and the number of malformed lines skipped.

    Raises:
        ObjectNotFoundError: No log at ``paths``.
    """
    found = LogTailer(paths).read()
    return found.rows, found.malformed
