"""Request log for drift monitoring: one JSON line per prediction, written off the request path.

The request path only puts a record on an in-memory queue (``logging.handlers.QueueHandler``); a background thread
(``QueueListener``) serialises it and appends it to a size-rotated file (``RotatingFileHandler``).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

_LOGGER_NAME = "textclf.serving.requests"


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueues the record as is; the JSON is built by the listener thread, not by the request."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _JsonLineFormatter(logging.Formatter):
    """Formats a record whose ``msg`` is a dict as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record.msg, ensure_ascii=False)


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
        file_handler.setFormatter(_JsonLineFormatter())
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(records, file_handler)
        self._logger = logging.Logger(_LOGGER_NAME, level=logging.INFO)
        self._logger.addHandler(_DeferredQueueHandler(records))
        self._listener.start()

    def record(self, texts: list[str], labels: list[str], probabilities: np.ndarray, label_names: tuple[str, ...],
               model_version: str) -> None:
        """Queue one line per prediction of a request.

        Args:
            texts: Request texts (as received).
            labels: Predicted class per text.
            probabilities: ``[n, n_labels]``.
            label_names: Class names in label-id order.
            model_version: Identifier of the served model.
        """
        timestamp = datetime.now(timezone.utc).isoformat()
        for text, label, row in zip(texts, labels, probabilities.tolist(), strict=True):
            self._logger.info({
                "timestamp": timestamp, "text": text, "label": label,
                "probabilities": dict(zip(label_names, row, strict=True)), "model_version": model_version,
            })

    def close(self) -> None:
        """Write every queued line, then stop the background thread and close the file."""
        self._listener.stop()
        for handler in self._listener.handlers:
            handler.close()
