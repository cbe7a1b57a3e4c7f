"""The monitor's prediction store: every prediction it has seen, the KServe logger events it has received, and the
ground truth fed back for them, in one SQLite database (``predictions.sqlite`` in the monitor's state directory).

Where predictions come from: the request log (file mode, one machine: :class:`textclf.monitor.tailer.LogTailer`
reads the lines, :meth:`PredictionStore.add_records` stores them) or KServe's payload logger (cluster mode:
:meth:`PredictionStore.add_event` stores each CloudEvent and, once both halves of an exchange are in, the
predictions they make, :func:`textclf.monitor.events.records_from_exchange`). The drift monitor reads its windows
from here (:meth:`PredictionStore.records_after`, by insertion sequence), whatever the source.

Exactly once: a prediction is keyed by its id (the record's ``request_id``; a record written without one is keyed
by the sha256 of its JSON line), an event by ``(id, kind)``; inserting an existing key is a no-op that reports a
duplicate. Each call is one transaction, committed before it returns (and before the HTTP endpoint answers), so a
monitor killed at any point loses nothing it acknowledged, and a replayed log line or re-sent event is not counted
twice. SQLite runs in WAL mode with ``synchronous=NORMAL``: durable across process crashes and restarts (what the
store is for), not across a power loss of the volume's host.

Ground truth (:meth:`PredictionStore.add_feedback`): one label per prediction id, which must name a stored
prediction and one of that prediction's classes; a second label for the same id is refused, not overwritten.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf.errors import DataValidationError
from textclf.monitor.events import LoggerEvent, MalformedEvent, records_from_exchange
from textclf.serving.request_log import RequestRecord

STORE_FILE = "predictions.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id TEXT NOT NULL UNIQUE,
    model_version TEXT NOT NULL,
    label TEXT NOT NULL,
    record TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event TEXT,
    received REAL NOT NULL,
    PRIMARY KEY (event_id, kind)
);
CREATE TABLE IF NOT EXISTS exchanges (
    event_id TEXT PRIMARY KEY,
    records INTEGER NOT NULL,
    error TEXT,
    joined REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id TEXT NOT NULL UNIQUE,
    true_label TEXT NOT NULL,
    received REAL NOT NULL
);
"""


class FeedbackError(DataValidationError):
    """A ground-truth label the store refuses; ``outcome`` is its metrics label, ``status`` its HTTP status."""

    outcome = "malformed"
    status = 400


class UnknownPrediction(FeedbackError):
    """No prediction has this id (yet: a label may arrive before its prediction's events; send it again later)."""

    outcome, status = "unknown_id", 404


class LabelOutsideSet(FeedbackError):
    """The label is not one of the prediction's classes."""

    outcome, status = "bad_label", 422


class DuplicateFeedback(FeedbackError):
    """The prediction already has a label."""

    outcome, status = "duplicate", 409


@dataclass(frozen=True)
class EventOutcome:
    """What storing one event did.

    Attributes:
        kind: ``request`` or ``response``.
        duplicate: The event was already stored (nothing changed).
        records: Predictions stored because this event completed its exchange.
        error: Why the completed exchange gave no predictions (its bodies cannot be read), if so.
    """

    kind: str
    duplicate: bool = False
    records: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Labelled:
    """A prediction with its ground truth."""

    prediction_id: str
    model_version: str
    label: str
    true_label: str

    @property
    def correct(self) -> bool:
        return self.label == self.true_label


def record_key(record: RequestRecord) -> str:
    """A prediction's key: its id, or for a record logged without one the sha256 of its JSON line."""
    return record.request_id or "sha256:" + hashlib.sha256(record.to_json().encode()).hexdigest()


class PredictionStore:
    """See the module docstring.

    Args:
        path: The database file (created with its tables).
        labels: Class names in label-id order (the reference's), for V2 responses, which name none.
        clock: Time source (Unix seconds), for tests.
    """

    def __init__(self, path: str | Path, labels: Sequence[str] = (), clock: Any = time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.labels = tuple(labels)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed on success, rolled back on an exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- predictions ---

    def _insert(self, db: sqlite3.Connection, records: Iterable[RequestRecord], source: str) -> int:
        added = 0
        for record in records:
            cursor = db.execute(
                "INSERT OR IGNORE INTO predictions (prediction_id, model_version, label, record, source) "
                "VALUES (?, ?, ?, ?, ?)",
                (record_key(record), record.model_version, record.label, record.to_json(), source),
            )
            added += cursor.rowcount
        return added

    def add_records(self, records: Iterable[RequestRecord], source: str = "log") -> int:
        """Store predictions (from the request log); returns how many were new (the others were stored before)."""
        with self._lock, self._transaction() as db:
            return self._insert(db, records, source)

    def records_after(self, seq: int, limit: int = 100_000) -> list[tuple[int, RequestRecord]]:
        """Predictions stored after sequence number ``seq``, oldest first, with their sequence numbers."""
        with self._lock:
            rows = self._db.execute("SELECT seq, record FROM predictions WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (seq, limit)).fetchall()
        return [(number, RequestRecord.from_json(line)) for number, line in rows]

    def prediction_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])

    # --- events ---

    def add_event(self, event: LoggerEvent) -> EventOutcome:
        """Store one logger event; when its exchange's other half is already in, store the exchange's predictions
        too (same transaction).

        Returns:
            What happened (a re-sent event is a duplicate and changes nothing).
        """
        other = "response" if event.kind == "request" else "request"
        with self._lock, self._transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO events (event_id, kind, event, received) VALUES (?, ?, ?, ?)",
                                (event.event_id, event.kind, event.to_json(), self.clock()))
            if cursor.rowcount == 0:
                return EventOutcome(event.kind, duplicate=True)
            row = db.execute("SELECT event FROM events WHERE event_id = ? AND kind = ?",
                             (event.event_id, other)).fetchone()
            if row is None:
                return EventOutcome(event.kind)
            halves = {event.kind: event, other: LoggerEvent.from_json(row[0])}
            try:
                records = records_from_exchange(halves["request"], halves["response"], self.labels)
            except MalformedEvent as exc:
                db.execute("INSERT OR REPLACE INTO exchanges VALUES (?, 0, ?, ?)",
                           (event.event_id, exc.reason, self.clock()))
                return EventOutcome(event.kind, error=exc.reason)
            added = self._insert(db, records, f"event:{halves['request'].inference_service}")
            db.execute("INSERT OR REPLACE INTO exchanges VALUES (?, ?, NULL, ?)", (event.event_id, added, self.clock()))
            db.execute("UPDATE events SET event = NULL WHERE event_id = ?", (event.event_id,))  # bodies: not needed
            return EventOutcome(event.kind, records=added)

    def unjoined_events(self) -> int:
        """Events still waiting for the other half of their exchange."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events WHERE event IS NOT NULL").fetchone()[0])

    # --- ground truth ---

    def add_feedback(self, prediction_id: Any, true_label: Any) -> Labelled:
        """Store the ground truth of one prediction.

        Raises:
            FeedbackError: ``prediction_id`` or ``true_label`` is not a non-empty string.
            UnknownPrediction: No stored prediction has this id.
            LabelOutsideSet: The label is not one of the prediction's classes.
            DuplicateFeedback: The prediction already has a label.
        """
        for name, value in (("request_id", prediction_id), ("true_label", true_label)):
            if not isinstance(value, str) or not value.strip():
                raise FeedbackError(f"{name!r} must be a non-empty string, got {value!r}")
        with self._lock, self._transaction() as db:
            row = db.execute("SELECT model_version, label, record FROM predictions WHERE prediction_id = ?",
                             (prediction_id,)).fetchone()
            if row is None:
                raise UnknownPrediction(f"no prediction with request_id {prediction_id!r} (a request of several "
                                        "texts has one id per text: '<request id>#<index>')")
            version, label, line = row
            classes = sorted((RequestRecord.from_json(line).probabilities or {}).keys()) or sorted(self.labels)
            if classes and true_label not in classes:
                raise LabelOutsideSet(f"true_label {true_label!r} is not one of the model's classes {classes}")
            cursor = db.execute("INSERT OR IGNORE INTO feedback (prediction_id, true_label, received) VALUES (?, ?, ?)",
                                (prediction_id, true_label, self.clock()))
            if cursor.rowcount == 0:
                existing = db.execute("SELECT true_label FROM feedback WHERE prediction_id = ?",
                                      (prediction_id,)).fetchone()[0]
                raise DuplicateFeedback(f"request_id {prediction_id!r} already has the label {existing!r}; "
                                        "labels are not overwritten")
            return Labelled(prediction_id, version, label, true_label)

    def labelled(self, model_version: str | None = None, last: int = 0) -> list[Labelled]:
        """Labelled predictions, oldest label first: of one model version (None: all), the ``last`` most recent
        labels only (0: all)."""
        query = ("SELECT f.prediction_id, p.model_version, p.label, f.true_label FROM feedback f "
                 "JOIN predictions p ON p.prediction_id = f.prediction_id")
        params: list[Any] = []
        if model_version is not None:
            query += " WHERE p.model_version = ?"
            params.append(model_version)
        query += " ORDER BY f.seq DESC"
        if last:
            query += " LIMIT ?"
            params.append(last)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [Labelled(*row) for row in reversed(rows)]

    def live_accuracy(self, last: int) -> dict[str, tuple[int, int]]:
        """Per model version, ``(correct, labelled)`` over its ``last`` most recent labels."""
        with self._lock:
            versions = [v for (v,) in self._db.execute(
                "SELECT DISTINCT p.model_version FROM feedback f JOIN predictions p "
                "ON p.prediction_id = f.prediction_id").fetchall()]
        out = {}
        for version in versions:
            rows = self.labelled(version, last)
            out[version] = (sum(r.correct for r in rows), len(rows))
        return out

    def records_with_labels(self, model_versions: Sequence[str] = ()) -> list[RequestRecord]:
        """Stored predictions (of the given model versions; all when empty) with their ground truth as
        ``true_label``, oldest first: the input of :func:`textclf.monitor.abtest.analyse_ab_log`."""
        query = ("SELECT p.record, f.true_label FROM predictions p LEFT JOIN feedback f "
                 "ON f.prediction_id = p.prediction_id")
        params: list[Any] = list(model_versions)
        if model_versions:
            query += f" WHERE p.model_version IN ({','.join('?' * len(model_versions))})"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY p.seq", params).fetchall()
        out = []
        for line, true_label in rows:
            payload = json.loads(line)
            if true_label is not None:
                payload["true_label"] = true_label
            out.append(RequestRecord.from_dict(payload))
        return out
