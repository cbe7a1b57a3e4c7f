"""The monitor's HTTP API (served by :class:`textclf.monitor.metrics.MetricsServer` next to ``/metrics``):

``POST /v1/events``
    KServe's payload logger (the InferenceService's ``spec.predictor.logger.url``): one CloudEvent per request,
    binary or structured mode (:mod:`textclf.monitor.events`). 200 ``{"kind", "duplicate", "records"}`` when stored
    (a re-sent event is a duplicate: 200, nothing changes); 400 for a body that is not a logger CloudEvent; 422 when
    the event completes an exchange whose bodies cannot be read (the events are kept, the error recorded). Counted
    in ``textclf_events_total{type, outcome}``.
``POST /v1/feedback``
    Ground truth: ``{"request_id", "true_label"}``, a JSON list of them, or JSON lines. One label: 200, or 400
    (malformed), 404 (unknown request id), 409 (already labelled), 422 (label outside the prediction's classes), with
    ``{"error"}``. Several: 200 ``{"accepted", "refused": [{"index", "request_id", "outcome", "error"}]}``. Counted
    in ``textclf_feedback_total{outcome}``.
``GET /v1/ab?control=<model version>&treatment=<model version>[&alpha=&min_labelled=&since=]``
    The A/B report (:func:`textclf.monitor.abtest.analyse_ab_log`) of the stored predictions of the two versions with
    their fed-back labels: the evidence the rollout step decides on. ``since`` (ISO-8601) keeps only predictions made
    at or after it (the canary's window: the control's earlier traffic does not count).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from textclf.errors import ConfigError, DataValidationError
from textclf.monitor.abtest import ABTestConfig, analyse_ab_log
from textclf.monitor.events import MalformedEvent, parse_cloudevent
from textclf.monitor.metrics import MonitorMetrics, RouteHandler
from textclf.monitor.store import FeedbackError, PredictionStore

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
FEEDBACK_PATH = "/v1/feedback"
AB_PATH = "/v1/ab"
#: Largest request body read (a logged request of many long texts fits; anything larger is refused).
MAX_BODY_BYTES = 32 << 20


def request_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers with lower-case, dash-separated names (``ce-id``, ``content-type``)."""
    headers = {key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items()
               if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers


def request_body(environ: Mapping[str, Any]) -> bytes:
    """The request body.

    Raises:
        DataValidationError: Larger than :data:`MAX_BODY_BYTES` or a bad Content-Length.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise DataValidationError(f"bad Content-Length {environ.get('CONTENT_LENGTH')!r}") from exc
    if length > MAX_BODY_BYTES:
        raise DataValidationError(f"body of {length} bytes, more than {MAX_BODY_BYTES}")
    return environ["wsgi.input"].read(length) if length > 0 else b""


def feedback_items(body: bytes) -> tuple[list[Any], bool]:
    """The labels of a feedback body and whether it held one (an object) or several (a list or JSON lines).

    Raises:
        DataValidationError: Not JSON, or JSON lines with a bad line.
    """
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        raise DataValidationError('empty body: expected {"request_id": ..., "true_label": ...}')
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()], False
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"body is neither JSON nor JSON lines: {exc}") from exc
    return (parsed, False) if isinstance(parsed, list) else ([parsed], True)


def monitor_routes(store: PredictionStore, metrics: MonitorMetrics,
                   on_feedback: Callable[[], None] | None = None) -> dict[tuple[str, str], RouteHandler]:
    """The API's routes over ``store``, counting into ``metrics``; ``on_feedback`` runs after labels are stored
    (the monitor refreshes its live-accuracy gauges)."""

    def events(environ: dict[str, Any]) -> tuple[int, Any]:
        headers = request_headers(environ)
        kind = "unknown"
        try:
            event = parse_cloudevent(headers, request_body(environ))
            kind = event.kind
            outcome = store.add_event(event)
        except (MalformedEvent, DataValidationError) as exc:
            metrics.events.labels(type=kind, outcome="malformed").inc()
            log.warning("refused a logger event (ce-id %s): %s", headers.get("ce-id"), exc)
            return 400, {"error": str(exc)}
        if outcome.error is not None:
            metrics.events.labels(type=kind, outcome="malformed").inc()
            log.warning("exchange %s cannot be read: %s", event.event_id, outcome.error)
            return 422, {"error": f"exchange {event.event_id}: {outcome.error}"}
        metrics.events.labels(type=kind, outcome="duplicate" if outcome.duplicate else "accepted").inc()
        return 200, {"kind": kind, "duplicate": outcome.duplicate, "records": outcome.records}

    def feedback(environ: dict[str, Any]) -> tuple[int, Any]:
        try:
            items, single = feedback_items(request_body(environ))
        except DataValidationError as exc:
            metrics.feedback.labels(outcome="malformed").inc()
            return 400, {"error": str(exc)}
        accepted, refused = 0, []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, Mapping):
                    raise FeedbackError(f'expected {{"request_id": ..., "true_label": ...}}, got {item!r:.80}')
                store.add_feedback(item.get("request_id"), item.get("true_label", item.get("label")))
            except FeedbackError as exc:
                metrics.feedback.labels(outcome=exc.outcome).inc()
                if single:
                    return exc.status, {"error": str(exc), "outcome": exc.outcome}
                refused.append({"index": index, "request_id": item.get("request_id") if isinstance(item, Mapping)
                                else None, "outcome": exc.outcome, "error": str(exc)})
            else:
                metrics.feedback.labels(outcome="accepted").inc()
                accepted += 1
        if accepted and on_feedback is not None:
            on_feedback()
        return 200, {"accepted": accepted, "refused": refused}

    def ab(environ: dict[str, Any]) -> tuple[int, Any]:
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        control, treatment = query.get("control", ""), query.get("treatment", "")
        if not control or not treatment or control == treatment:
            return 400, {"error": "give two different model versions: ?control=<version>&treatment=<version>"}
        try:
            config = ABTestConfig(control_version=control, treatment_version=treatment,
                                  alpha=float(query.get("alpha", ABTestConfig.alpha)),
                                  min_labelled=int(query.get("min_labelled", ABTestConfig.min_labelled)))
        except (ValueError, ConfigError) as exc:
            return 400, {"error": str(exc)}
        records = store.records_with_labels([control, treatment])
        if query.get("since"):
            try:
                since = datetime.fromisoformat(query["since"])
            except ValueError as exc:
                return 400, {"error": f"since={query['since']!r} is not an ISO-8601 time ({exc})"}
            since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
            records = [r for r in records if r.timestamp and r.moment() >= since]
        if not records:
            return 404, {"error": f"no stored predictions of model version {control!r} or {treatment!r}"}
        return 200, analyse_ab_log(records, config)

    return {("POST", EVENTS_PATH): events, ("POST", FEEDBACK_PATH): feedback, ("GET", AB_PATH): ab}

