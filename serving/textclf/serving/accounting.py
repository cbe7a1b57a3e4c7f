"""What every prediction request leaves behind, for the predictor and the Triton transformer alike: its outcome
counted (``textclf_requests_total``: ok, invalid_input, error), its server-side latency observed, the predicted
classes counted, one request-log line per prediction (request id, user key, latency, stage), and the request id in
the ``x-request-id`` response header.

:class:`PredictionAccounting` is a mixin for :class:`kserve.Model` subclasses: their ``preprocess`` calls
:meth:`PredictionAccounting.parse`, their ``predict`` runs inside :meth:`PredictionAccounting.failures_counted`, and
their ``postprocess`` calls :meth:`PredictionAccounting.account`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

from textclf.serving import metrics
from textclf.serving.codec import predicted_labels
from textclf.serving.config import ServingConfig
from textclf.serving.contract import REQUEST_ID_HEADER
from textclf.serving.inputs import InputLimits, ParsedRequest, parse_request
from textclf.serving.request_log import RequestLog


class PredictionAccounting:
    """Counting, timing and logging of prediction requests (see the module docstring).

    Expects ``self.name`` (the served model name, as on :class:`kserve.Model`), ``self.config`` (a
    :class:`ServingConfig`) and ``self.limits`` (:class:`InputLimits`); call :meth:`start_accounting` in ``load``
    and :meth:`stop_accounting` in ``stop``.
    """

    name: str
    config: ServingConfig
    limits: InputLimits
    _request_log: RequestLog | None = None

    def start_accounting(self) -> None:
        """Create the request counters of every outcome at 0 (so that the first error is a rate, not a new series)
        and open the request log of ``config.request_log`` (none when it is ``None``)."""
        metrics.init_requests(self.name)
        if self.config.request_log is not None and self._request_log is None:
            self._request_log = RequestLog(self.config.request_log, self.config.request_log_max_bytes,
                                           self.config.request_log_backups)

    def stop_accounting(self) -> None:
        """Write every queued line of the request log and close it."""
        if self._request_log is not None:
            self._request_log.close()
            self._request_log = None

    def parse(self, payload: dict[str, Any] | InferRequest, headers: Mapping[str, str] | None) -> ParsedRequest:
        """Validate the request (:func:`parse_request`), counting a refused one as ``invalid_input``.

        Raises:
            kserve.errors.InvalidInput: The request is malformed or breaks a limit (HTTP 400).
        """
        try:
            return parse_request(payload, self.limits, headers)
        except InvalidInput:
            metrics.observe_request(self.name, "invalid_input")
            raise

    @contextmanager
    def failures_counted(self) -> Iterator[None]:
        """Count an exception raised inside (the model or its backend failed) as an ``error`` request."""
        try:
            yield
        except Exception:
            metrics.observe_request(self.name, "error")
            raise

    def account(self, request: ParsedRequest, probabilities: np.ndarray, label_names: tuple[str, ...],
                model_version: str, stages: np.ndarray | None = None,
                response_headers: dict[str, str] | None = None) -> list[str]:
        """Record an answered request: outcome ``ok`` with its latency, the predicted classes and their confidence,
        a cascade's stages, one request-log line per prediction; set the ``x-request-id`` response header.

        Args:
            request: The parsed request.
            probabilities: ``[n, n_labels]``.
            label_names: Class names in label-id order.
            model_version: Identifier of the served model.
            stages: For a cascade, the answering stage per text.
            response_headers: The response's headers, when KServe passes them.

        Returns:
            The predicted class per text.
        """
        labels = predicted_labels(probabilities, label_names)
        latency_ms = request.latency_ms()
        metrics.observe_request(self.name, "ok", latency_ms / 1000.0)
        metrics.observe_predictions(self.name, labels, probabilities)
        if stages is not None:
            metrics.observe_stages(self.name, stages)
        if self._request_log is not None:
            self._request_log.record(request.texts, labels, probabilities, label_names, model_version, stages,
                                     request.prediction_ids(), request.user_id, round(latency_ms, 3))
        if response_headers is not None:
            response_headers[REQUEST_ID_HEADER] = request.request_id
        return labels
