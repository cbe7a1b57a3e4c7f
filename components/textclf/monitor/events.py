"""KServe's payload-logger CloudEvents, read into :class:`~textclf.serving.request_log.RequestRecord` objects.

What KServe's logger sends (the ``logger`` package of the kserve repository, ``pkg/logger/handler.go`` and
``worker.go``; the InferenceService's ``spec.predictor.logger`` with ``mode: all`` and ``url`` the monitor's
``/v1/events``): for every proxied request one CloudEvent of type :data:`REQUEST_EVENT` with the request body, and,
when the predictor answered HTTP 200, one of type :data:`RESPONSE_EVENT` with the response body, both with the same
id (the caller's ``Ce-Id`` header, else a new UUID) and the extensions ``inferenceservicename``, ``namespace``,
``component``, ``endpoint`` (``default`` or ``canary``: the record's A/B variant, :data:`ENDPOINT_VARIANTS`) and ``metadata`` (a JSON object of the headers named in
``logger.metadataHeaders``, each a list of values). The logger sends them in binary mode (``ce-*`` headers, the body
as is); structured mode (``application/cloudevents+json``) is read too. Parsing the envelope is the ``cloudevents``
SDK's job (:func:`cloudevents.http.from_http`).

Bodies: V1 (``{"instances": [...]}`` in, ``{"predictions": [...], "model_version", "request_id"}`` out) and V2 REST
JSON (``inputs`` with the BYTES ``text`` tensor in; ``outputs`` ``label``, ``probabilities`` and, for a cascade,
``stage`` out, with ``model_version`` and ``id``). A V2 response names no classes, so its probability columns are
read in the reference's label order (:func:`records_from_exchange`'s ``labels``). Binary-tensor V2 bodies are not
read (refused as malformed, and counted).

The prediction ids are the server's (the response's request id, with ``#<index>`` for several texts:
:func:`textclf.serving.contract.prediction_id`), so that ground truth fed back under the id the caller got in the
response joins; the event id stands in when the response carries none (another server behind the logger).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import cloudevents.exceptions
from cloudevents.http import from_http
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest

from textclf.errors import DataValidationError
from textclf.monitor.abtest import CONTROL, TREATMENT
from textclf.serving.codec import (
    V1_DEFER_FIELD,
    V1_REQUEST_ID_FIELD,
    V1_STAGE_FIELD,
    V2_LABEL_OUTPUT,
    V2_PROBABILITIES_OUTPUT,
    V2_STAGE_OUTPUT,
)
from textclf.serving.contract import USER_KEY_HEADER, prediction_id
from textclf.serving.inputs import InputLimits, texts_from_v1, texts_from_v2
from textclf.serving.request_log import RequestRecord

#: CloudEvent types of KServe's payload logger.
REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
#: The short names the store and the metrics use.
EVENT_KINDS = {REQUEST_EVENT: "request", RESPONSE_EVENT: "response"}
#: The ``endpoint`` extension -> the A/B variant: KServe's canary split sends ``canaryTrafficPercent`` of the
#: requests to the ``canary`` endpoint (the candidate), the rest to ``default`` (the model being replaced).
ENDPOINT_VARIANTS = {"default": CONTROL, "canary": TREATMENT}
#: Limits for reading logged requests: the server already enforced its own; these only bound the monitor's work.
EVENT_LIMITS = InputLimits(max_instances=10_000, max_text_bytes=1 << 20)


class MalformedEvent(DataValidationError):
    """A CloudEvent the monitor cannot read: ``reason`` says why (HTTP 400, counted as ``malformed``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LoggerEvent:
    """One CloudEvent of KServe's logger.

    Attributes:
        event_id: The CloudEvent id (request and response of one exchange share it).
        kind: ``request`` or ``response``.
        data: The logged body, decoded from JSON.
        time: The event's ``time`` attribute (ISO-8601), if set.
        inference_service: The ``inferenceservicename`` extension.
        endpoint: The ``endpoint`` extension: ``default`` or ``canary``.
        metadata: The ``metadata`` extension: logged request headers, lower-case name -> values.
    """

    event_id: str
    kind: str
    data: Any
    time: str | None = None
    inference_service: str = ""
    endpoint: str = ""
    metadata: Mapping[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> str:
        """The event as stored (:meth:`from_json` reads it back)."""
        return json.dumps({"event_id": self.event_id, "kind": self.kind, "data": self.data, "time": self.time,
                           "inference_service": self.inference_service, "endpoint": self.endpoint,
                           "metadata": dict(self.metadata)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> LoggerEvent:
        return cls(**json.loads(text))

    @property
    def user_id(self) -> str | None:
        """The caller's user key, when ``logger.metadataHeaders`` forwards :data:`USER_KEY_HEADER`."""
        values = self.metadata.get(USER_KEY_HEADER) or []
        return next((v.strip() for v in values if isinstance(v, str) and v.strip()), None)


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> LoggerEvent:
    """Read one HTTP-delivered CloudEvent (binary or structured mode).

    Raises:
        MalformedEvent: Not a CloudEvent, a type other than KServe's logger types, or a body that is not JSON.
    """
    try:
        event = from_http(dict(headers), body)
    except cloudevents.exceptions.GenericException as exc:
        raise MalformedEvent(f"not a CloudEvent: {exc}") from exc
    kind = EVENT_KINDS.get(event["type"])
    if kind is None:
        raise MalformedEvent(f"CloudEvent type {event['type']!r} is not one of KServe's logger types "
                             f"{sorted(EVENT_KINDS)}")
    data = event.data
    if isinstance(data, (bytes, bytearray)):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedEvent(f"{kind} event {event['id']}: body is not JSON (binary V2 tensors are not read): "
                                 f"{exc}") from exc
    if not isinstance(data, dict):
        raise MalformedEvent(f"{kind} event {event['id']}: body must be a JSON object, got {type(data).__name__}")
    return LoggerEvent(event_id=str(event["id"]), kind=kind, data=data, time=event.get("time"),
                       inference_service=str(event.get("inferenceservicename") or ""),
                       endpoint=str(event.get("endpoint") or ""), metadata=_metadata(event.get("metadata")))


def _metadata(value: Any) -> dict[str, list[str]]:
    if not value:
        return {}
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as exc:
        raise MalformedEvent(f"'metadata' extension is not JSON: {exc}") from exc
    if not isinstance(parsed, Mapping):
        raise MalformedEvent("'metadata' extension must be a JSON object of header lists")
    return {str(k).lower(): [str(v) for v in (vs if isinstance(vs, list) else [vs])] for k, vs in parsed.items()}


def request_texts(data: Mapping[str, Any]) -> list[str]:
    """The texts of a logged V1 or V2 (REST JSON) request body.

    Raises:
        MalformedEvent: Neither protocol's shape, or texts the server would refuse too.
    """
    try:
        if "instances" in data:
            return texts_from_v1(dict(data), EVENT_LIMITS)
        if "inputs" in data:
            return texts_from_v2(InferRequest.from_inference_request(InferenceRequest(**data), ""), EVENT_LIMITS)
    except (InvalidInput, ValueError, TypeError) as exc:
        raise MalformedEvent(f"request body: {exc}") from exc
    raise MalformedEvent('request body has neither "instances" (V1) nor "inputs" (V2)')


@dataclass(frozen=True)
class LoggedAnswer:
    """What a logged response says: per text the label, probabilities and stage; the model version; its id."""

    labels: list[str]
    probabilities: list[dict[str, float]]
    stages: list[int | None]
    model_version: str
    request_id: str | None


def response_answers(data: Mapping[str, Any], labels: Sequence[str]) -> LoggedAnswer:
    """Read a logged V1 or V2 (REST JSON) response body.

    Args:
        data: The body.
        labels: Class names in label-id order, for a V2 body's probability columns.

    Raises:
        MalformedEvent: Neither protocol's shape, or probabilities that do not fit ``labels``.
    """
    version = data.get("model_version") or ""
    if "predictions" in data:
        predictions = data["predictions"]
        if not isinstance(predictions, list) or not all(isinstance(p, Mapping) and isinstance(p.get("label"), str)
                                                        and isinstance(p.get("scores"), Mapping)
                                                        for p in predictions):
            raise MalformedEvent('response "predictions" must be a list of {"label", "scores"} objects')
        stages = [p.get(V1_STAGE_FIELD) for p in predictions]
        if any(p.get(V1_DEFER_FIELD) for p in predictions):
            stages = [None] * len(predictions)  # a cascade's stage 1 served alone: its deferred answers are not final
        return LoggedAnswer([p["label"] for p in predictions], [dict(p["scores"]) for p in predictions], stages,
                            str(version), data.get(V1_REQUEST_ID_FIELD))
    if "outputs" in data:
        outputs = {o.get("name"): o for o in data["outputs"] if isinstance(o, Mapping)}
        try:
            predicted = [str(x) for x in outputs[V2_LABEL_OUTPUT]["data"]]
            flat = [float(x) for x in outputs[V2_PROBABILITIES_OUTPUT]["data"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedEvent(f"V2 response needs the {V2_LABEL_OUTPUT!r} and {V2_PROBABILITIES_OUTPUT!r} "
                                 f"outputs ({exc})") from exc
        width = len(labels)
        if not width or len(flat) != width * len(predicted):
            raise MalformedEvent(f"V2 response has {len(flat)} probabilities for {len(predicted)} texts; the "
                                 f"reference has {width} labels")
        rows = [dict(zip(labels, flat[i * width:(i + 1) * width], strict=True)) for i in range(len(predicted))]
        stage_output = outputs.get(V2_STAGE_OUTPUT)
        stages = [int(s) for s in stage_output["data"]] if stage_output else [None] * len(predicted)
        return LoggedAnswer(predicted, rows, stages, str(version), data.get("id"))
    raise MalformedEvent('response body has neither "predictions" (V1) nor "outputs" (V2)')


def records_from_exchange(request: LoggerEvent, response: LoggerEvent, labels: Sequence[str]) -> list[RequestRecord]:
    """The request records of one logged exchange (its request and response events).

    Args:
        request: The request event.
        response: The response event (same id).
        labels: Class names in label-id order (for V2 responses).

    Raises:
        MalformedEvent: A body cannot be read, or the response answers a different number of texts.
    """
    texts = request_texts(request.data)
    answer = response_answers(response.data, labels)
    if len(answer.labels) != len(texts):
        raise MalformedEvent(f"exchange {request.event_id}: {len(texts)} texts in the request, "
                             f"{len(answer.labels)} answers in the response")
    request_id = str(answer.request_id or request.event_id)
    timestamp = request.time or response.time or datetime.now(timezone.utc).isoformat()
    user = request.user_id
    variant = ENDPOINT_VARIANTS.get(request.endpoint or response.endpoint)
    return [
        RequestRecord(timestamp=timestamp, text=text, label=label, probabilities=scores,
                      model_version=answer.model_version, request_id=prediction_id(request_id, i, len(texts)),
                      user_id=user, variant=variant, stage=stage)
        for i, (text, label, scores, stage) in enumerate(zip(texts, answer.labels, answer.probabilities,
                                                             answer.stages, strict=True))
    ]
