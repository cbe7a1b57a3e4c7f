"""The serving request log: its one record schema (:class:`RequestRecord`) and its writer (:class:`RequestLog`).

Every line of the log is one JSON object, :meth:`RequestRecord.to_json`; every reader (the drift monitor's tailer,
the A/B analysis, a window given to the drift detector as records) parses a line with
:meth:`RequestRecord.from_json` and decides what to do with a line that is not a record (:class:`MalformedLine`:
not JSON, or not an object) or breaks the schema (:class:`InvalidRecord`), both :class:`RequestRecordError`.

The writer: the request path only puts the prediction on an in-memory queue (``logging.handlers.QueueHandler``); a
background thread (``QueueListener``) builds the record, serialises it and appends it to a size-rotated file
(``RotatingFileHandler``: ``path``, ``path.1``, ``path.2``, ...).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import queue
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from textclf.errors import DataValidationError

_LOGGER_NAME = "textclf.serving.requests"


class RequestRecordError(DataValidationError):
    """A request-log line that is not a valid :class:`RequestRecord`; ``reason`` says why (for counted skips)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class MalformedLine(RequestRecordError):
    """The line is not JSON, or not a JSON object."""


class InvalidRecord(RequestRecordError):
    """A JSON object that breaks the record schema, or lacks a field its reader needs."""


@dataclass(frozen=True)
class ShadowPrediction:
    """The prediction of another model version on the same request (shadow mode)."""

    model_version: str
    label: str


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One prediction, as one JSON line of the request log.

    :class:`RequestLog` (and the monitor, from KServe's logger events) writes the first five fields, the prediction's
    ``request_id``, ``latency_ms``, ``user_id`` when the caller sent a user key, and ``stage`` for a cascade. The
    others (``variant``, ``true_label``, ``shadow``) are optional, written by whatever routes or labels the traffic. On reading (:meth:`from_dict`), unknown
    fields are ignored, an absent or ``null`` optional field is ``None``, and a present field must have its type:

    Attributes:
        timestamp: When the prediction was made, ISO-8601 (UTC when written by :class:`RequestLog`); kept as
            written, parsed by :meth:`moment`.
        text: The request text as received.
        label: The predicted class: a non-empty string, the only required field.
        probabilities: ``{class: probability}``, each in [0, 1] (``{}`` reads as ``None``).
        model_version: Identifier of the model that served the request (``""`` when absent).
        request_id: The prediction's id (:func:`textclf.serving.contract.prediction_id`: the request id, with
            ``#<index>`` for a request of several texts); joins delayed ground truth (a string; a JSON integer is kept
            as its string; ``""`` is ``None``).
        user_id: The key hashed into a variant (as ``request_id``).
        variant: ``"control"``, ``"treatment"``, ... (``""`` is ``None``).
        latency_ms: Server-side latency of the request, a finite number >= 0.
        true_label: Ground truth when already known (``""`` is ``None``).
        shadow: Predictions of other versions on the same request (one ``{"model_version", "label"}`` object or a
            list of them).
        stage: For a cascade, the stage that answered (an integer >= 1: 1 the cheap stage, 2 the transformer).

    Construct it directly only from values already of these types (the writer does); :meth:`from_dict` and
    :meth:`from_json` validate.
    """

    timestamp: str | None = None
    text: str | None = None
    label: str
    probabilities: Mapping[str, float] | None = None
    model_version: str = ""
    request_id: str | None = None
    user_id: str | None = None
    variant: str | None = None
    latency_ms: float | None = None
    true_label: str | None = None
    shadow: tuple[ShadowPrediction, ...] = ()
    stage: int | None = None

    # --- reading ---

    @classmethod
    def from_json(cls, line: str | bytes) -> RequestRecord:
        """Parse one log line.

        Raises:
            MalformedLine: Not JSON, or not a JSON object.
            InvalidRecord: A field is missing or has the wrong type (see the class docstring).
        """
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MalformedLine(f"not JSON ({exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise MalformedLine(f"not JSON ({exc})") from exc
        return cls.from_dict(payload)

    @classmethod
    def from_dict(cls, payload: Any) -> RequestRecord:
        """A record from a parsed JSON object (see :meth:`from_json` for the errors)."""
        if not isinstance(payload, Mapping):
            raise MalformedLine("not a JSON object")
        label = payload.get("label")
        if not isinstance(label, str) or not label:
            raise InvalidRecord("missing 'label'")
        model_version = payload.get("model_version")
        return cls(
            timestamp=_optional(payload, "timestamp", str),
            text=_optional(payload, "text", str),
            label=label,
            probabilities=_probabilities(payload.get("probabilities")),
            model_version="" if model_version is None else _typed("model_version", model_version, str),
            request_id=_key(payload, "request_id"),
            user_id=_key(payload, "user_id"),
            variant=_optional(payload, "variant", str) or None,
            latency_ms=_latency(payload.get("latency_ms")),
            true_label=_optional(payload, "true_label", str) or None,
            shadow=_shadow(payload.get("shadow")),
            stage=_stage(payload.get("stage")),
        )

    def require(self, *names: str) -> RequestRecord:
        """This record, if it has every field in ``names`` (not ``None``, not empty or blank).

        Raises:
            InvalidRecord: One is missing, naming it.
        """
        for name in names:
            value = getattr(self, name)
            if value is None or value == () or (isinstance(value, str) and not value.strip()):
                raise InvalidRecord(f"missing or empty {name!r}")
        return self

    def moment(self) -> datetime:
        """:attr:`timestamp` as an aware datetime (a timestamp without a zone is UTC).

        Raises:
            InvalidRecord: No timestamp, or not ISO-8601.
        """
        try:
            moment = datetime.fromisoformat(str(self.require("timestamp").timestamp))
        except ValueError as exc:
            raise InvalidRecord(f"bad 'timestamp' {self.timestamp!r}") from exc
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)

    @property
    def confidence(self) -> float:
        """The top-class probability.

        Raises:
            InvalidRecord: The record has no probabilities.
        """
        return max(self.require("probabilities").probabilities.values())  # type: ignore[union-attr]

    # --- writing ---

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of :meth:`to_json`: every field that is set, in declaration order."""
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None or value == ():
                continue
            if field.name == "shadow":
                value = [{"model_version": s.model_version, "label": s.label} for s in value]
            elif field.name == "probabilities":
                value = dict(value)
            out[field.name] = value
        return out

    def to_json(self) -> str:
        """One log line (without the newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


def _typed(name: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidRecord(f"{name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional(payload: Mapping[str, Any], name: str, kind: type) -> Any:
    value = payload.get(name)
    return None if value is None else _typed(name, value, kind)


def _key(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _optional(payload, name, str) or None


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRecord(f"{name!r} must be a finite number, got {value!r}")
    return float(value)


def _probabilities(value: Any) -> dict[str, float] | None:
    if value is None or value == {}:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRecord(f"'probabilities' must be an object, got {type(value).__name__}")
    out = {str(name): _number("probabilities", p) for name, p in value.items()}
    outside = [p for p in out.values() if not 0.0 <= p <= 1.0]
    if outside:
        raise InvalidRecord(f"probability {outside[0]} outside [0, 1]")
    return out


def _latency(value: Any) -> float | None:
    if value is None:
        return None
    latency = _number("latency_ms", value)
    if latency < 0:
        raise InvalidRecord(f"'latency_ms' must be >= 0, got {latency}")
    return latency


def _stage(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRecord(f"'stage' must be an integer >= 1, got {value!r}")
    return value


def _shadow(value: Any) -> tuple[ShadowPrediction, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
        raise InvalidRecord("'shadow' must be an object or a list of objects")
    shadows = []
    for item in items:
        version, label = item.get("model_version"), item.get("label")
        if not isinstance(version, str) or not version or not isinstance(label, str) or not label:
            raise InvalidRecord("a 'shadow' prediction needs a 'model_version' and a 'label'")
        shadows.append(ShadowPrediction(version, label))
    return tuple(shadows)


# --- the writer ---------------------------------------------------------------------------------------------------


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueues the log record as is; the request record is built by the listener thread, not by the request."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _RequestRecordFormatter(logging.Formatter):
    """Formats a log record whose ``msg`` holds :class:`RequestRecord`'s fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        (timestamp, text, label, probabilities, label_names, model_version, stage, request_id, user_id,
         latency_ms) = record.msg
        return RequestRecord(timestamp=timestamp, text=text, label=label,
                             probabilities=dict(zip(label_names, probabilities, strict=True)),
                             model_version=model_version, request_id=request_id, user_id=user_id,
                             latency_ms=latency_ms, stage=stage).to_json()


class RequestLog:
    """Appends predictions to a JSON-lines file from a background thread.

    Args:
        path: The log file (parent directories are created).
        max_bytes: Size at which the file is rotated (``path.1``, ``path.2``, ...).
        backups: Rotated files kept.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        file_handler.setFormatter(_RequestRecordFormatter())
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(records, file_handler)
        self._logger = logging.Logger(_LOGGER_NAME, level=logging.INFO)
        self._logger.addHandler(_DeferredQueueHandler(records))
        self._listener.start()

    def record(self, texts: list[str], labels: list[str], probabilities: np.ndarray, label_names: tuple[str, ...],
               model_version: str, stages: np.ndarray | None = None, prediction_ids: list[str] | None = None,
               user_id: str | None = None, latency_ms: float | None = None) -> None:
        """Queue one line per prediction of a request.

        Args:
            texts: Request texts (as received).
            labels: Predicted class per text.
            probabilities: ``[n, n_labels]``.
            label_names: Class names in label-id order.
            model_version: Identifier of the served model.
            stages: For a cascade, the answering stage per text; None otherwise.
            prediction_ids: Each prediction's id (``request_id`` of its line); None writes none.
            user_id: The caller's user key, if sent.
            latency_ms: The request's server-side latency (every line of the request gets it).
        """
        timestamp = datetime.now(timezone.utc).isoformat()
        stage_list = [None] * len(texts) if stages is None else stages.tolist()
        id_list = [None] * len(texts) if prediction_ids is None else prediction_ids
        for text, label, row, stage, prediction_id in zip(texts, labels, probabilities.tolist(), stage_list, id_list,
                                                          strict=True):
            self._logger.info((timestamp, text, label, row, label_names, model_version, stage, prediction_id,
                               user_id, latency_ms))

    def close(self) -> None:
        """Write every queued line, then stop the background thread and close the file."""
        self._listener.stop()
        for handler in self._listener.handlers:
            handler.close()
