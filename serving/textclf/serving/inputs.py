"""Request parsing and input limits shared by the predictor and the transformer.

Every client mistake raises :class:`kserve.errors.InvalidInput`, which KServe turns into HTTP 400 (gRPC
INVALID_ARGUMENT) with the message in ``{"error": ...}``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from textclf.serving.contract import CLOUDEVENT_ID_HEADER, REQUEST_ID_HEADER, USER_KEY_HEADER, prediction_id

#: Name of the V2 input tensor carrying the texts.
V2_TEXT_INPUT = "text"


class ValidatedInPreprocess:
    """Mixin for :class:`kserve.Model` subclasses whose ``preprocess`` parses and validates the request: KServe's
    ``validate`` step, which runs on what ``preprocess`` returned, then has nothing left to check."""

    def validate(self, payload: Any) -> Any:
        """Pass the parsed request through unchanged.

        Args:
            payload: What ``preprocess`` returned.

        Returns:
            ``payload`` unchanged.
        """
        return payload


class RequestKind(str, Enum):
    """Which protocol a request came in with; the response is formatted the same way."""

    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True)
class InputLimits:
    """Per-request limits.

    Attributes:
        max_instances: Most texts per request.
        max_text_bytes: Longest text in UTF-8 bytes.
    """

    max_instances: int
    max_text_bytes: int


@dataclass(frozen=True)
class ParsedRequest:
    """A validated request on its way from ``preprocess`` to ``predict``.

    Attributes:
        kind: Protocol the request came in with.
        texts: The request's texts, as received.
        request_id: The request's id (:func:`request_identity`), returned in the response and recorded with every
            prediction.
        user_id: The caller's user key (the :data:`~textclf.serving.contract.USER_KEY_HEADER` header), if sent.
        started: ``time.perf_counter()`` when the request was parsed: the start of its server-side latency.
    """

    kind: RequestKind
    texts: list[str]
    request_id: str = ""
    user_id: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def prediction_ids(self) -> list[str]:
        """The id of each text's prediction (:func:`~textclf.serving.contract.prediction_id`)."""
        return [prediction_id(self.request_id, index, len(self.texts)) for index in range(len(self.texts))]

    def latency_ms(self) -> float:
        """Milliseconds since the request was parsed."""
        return (time.perf_counter() - self.started) * 1000.0


def request_identity(headers: Mapping[str, str] | None, body_id: str | None = None) -> str:
    """The id a request is answered and recorded under: the V2 body's ``id`` when the caller sent one (the V2
    protocol echoes it), else the ``x-request-id`` header (set by Istio/Knative on every request in a cluster), else
    the ``ce-id`` header (the CloudEvent id KServe's payload logger would use), else a new UUID.

    Args:
        headers: Request headers (KServe passes them with lower-case names).
        body_id: The V2 request's ``id``, if any.
    """
    headers = headers or {}
    for candidate in (body_id, headers.get(REQUEST_ID_HEADER), headers.get(CLOUDEVENT_ID_HEADER)):
        if candidate and candidate.strip():
            return candidate.strip()
    return uuid.uuid4().hex


def user_key(headers: Mapping[str, str] | None) -> str | None:
    """The caller's user key header, stripped (``None`` when absent or blank)."""
    value = (headers or {}).get(USER_KEY_HEADER, "")
    return value.strip() or None


def check_texts(items: list[Any], limits: InputLimits) -> list[str]:
    """Validate the texts of one request.

    Args:
        items: The request's instances, already unwrapped (str, or bytes from V2 gRPC/binary tensors).
        limits: Per-request limits.

    Returns:
        The texts as ``str``.

    Raises:
        InvalidInput: Empty list, too many texts, a non-string item, invalid UTF-8, an empty or blank text, or a
            text over the byte limit; the message names the problem and the item's index.
    """
    if not items:
        raise InvalidInput("empty request: send at least one text")
    if len(items) > limits.max_instances:
        raise InvalidInput(f"too many instances: {len(items)} texts in one request, at most {limits.max_instances}")
    return [_check_text(index, item, limits.max_text_bytes) for index, item in enumerate(items)]


def _check_text(index: int, item: Any, max_bytes: int) -> str:
    if isinstance(item, bytes):
        try:
            item = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"instance {index}: invalid UTF-8 at byte {exc.start}") from exc
    if not isinstance(item, str):
        raise InvalidInput(f"instance {index}: expected a string, got {type(item).__name__}")
    if not item.strip():
        raise InvalidInput(f"instance {index}: empty text")
    size = len(item.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise InvalidInput(f"instance {index}: text too long ({size} bytes, at most {max_bytes})")
    return item


def texts_from_v1(payload: Any, limits: InputLimits) -> list[str]:
    """Texts of a V1 request: ``{"instances": ["text", ...]}`` or ``{"instances": [{"text": "..."}, ...]}``.

    Args:
        payload: The decoded JSON body.
        limits: Per-request limits.

    Returns:
        The validated texts.

    Raises:
        InvalidInput: The body is not JSON, not an object with an ``instances`` list, or a text is invalid.
    """
    if isinstance(payload, bytes):
        payload = _json_body(payload)
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('expected a JSON object {"instances": ["text", ...]}')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, got {type(instances).__name__}')
    unwrapped = [item["text"] if isinstance(item, dict) and "text" in item else item for item in instances]
    return check_texts(unwrapped, limits)


def _json_body(body: bytes) -> Any:
    """Decode a body that KServe passed through undecoded (sent without a JSON content type, e.g. plain curl)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc


def texts_from_v2(request: InferRequest, limits: InputLimits) -> list[str]:
    """Texts of a V2 request: the BYTES input named ``text`` (shape ``[n]`` or ``[n, 1]``).

    Args:
        request: The decoded V2 request (REST JSON, REST binary or gRPC).
        limits: Per-request limits.

    Returns:
        The validated texts.

    Raises:
        InvalidInput: No ``text`` input, not BYTES, a shape that is not exactly the data's (a negative or
            missing size too), or a text is invalid.
    """
    text_input = request.get_input_by_name(V2_TEXT_INPUT)
    if text_input is None:
        names = [infer_input.name for infer_input in request.inputs]
        raise InvalidInput(f"missing input {V2_TEXT_INPUT!r} (BYTES); got inputs {names}")
    if text_input.datatype != "BYTES":
        raise InvalidInput(f"input {V2_TEXT_INPUT!r} must have datatype BYTES, got {text_input.datatype}")
    return check_texts(_flat_items(text_input), limits)


def _flat_items(text_input: InferInput) -> list[Any]:
    """The input's items in order, once its declared shape states exactly the shape of its data.

    Raises:
        InvalidInput: The data cannot take the shape, or the shape has a negative size: KServe's ``as_numpy`` is
            numpy's ``reshape``, which fills in one ``-1`` size instead of refusing it.
    """
    try:
        array = text_input.as_numpy()
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {V2_TEXT_INPUT!r}: data does not match shape {text_input.shape} ({exc})") from exc
    if list(array.shape) != list(text_input.shape):
        raise InvalidInput(f"input {V2_TEXT_INPUT!r}: data does not match shape {text_input.shape} (sizes must be "
                           f">= 0 and hold the {array.size} items sent)")
    return array.ravel().tolist()


def parse_request(payload: dict[str, Any] | InferRequest, limits: InputLimits,
                  headers: Mapping[str, str] | None = None) -> ParsedRequest:
    """Validate a V1 body or a V2 request.

    Args:
        payload: Decoded V1 JSON body, or V2 ``InferRequest`` (REST or gRPC).
        limits: Per-request limits.
        headers: Request headers (the request id and user key, :func:`request_identity` and :func:`user_key`).

    Returns:
        The parsed request.

    Raises:
        kserve.errors.InvalidInput: The request is malformed or breaks a limit.
    """
    if isinstance(payload, InferRequest):
        texts, kind, body_id = texts_from_v2(payload, limits), RequestKind.V2, payload.id
    else:
        texts, kind, body_id = texts_from_v1(payload, limits), RequestKind.V1, None
    return ParsedRequest(kind, texts, request_identity(headers, body_id), user_key(headers))
