"""Properties of the input parsers, over hypothesis-generated input: whatever arrives, the V1 and V2 parsers return
valid texts or raise :class:`kserve.errors.InvalidInput` (HTTP 400) and nothing else, and a request-log line is a
record or a :class:`RequestRecordError` (a counted skip). The same strategies drive the live-server fuzzing
(tests/test_fuzz.py)."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from textclf.benchmarks.fuzz import JSON, TEXTS, V1_BODIES
from textclf.serving.inputs import InputLimits, texts_from_v1, texts_from_v2
from textclf.serving.request_log import RequestRecord, RequestRecordError

LIMITS = InputLimits(max_instances=4, max_text_bytes=64)
EXAMPLES = settings(max_examples=300, deadline=None)


def assert_valid(texts: list[str]) -> None:
    assert 1 <= len(texts) <= LIMITS.max_instances
    for text in texts:
        assert isinstance(text, str) and text.strip()
        assert len(text.encode("utf-8", "surrogatepass")) <= LIMITS.max_text_bytes


@EXAMPLES
@given(payload=JSON | V1_BODIES, raw=st.booleans())
def test_v1_parser_returns_valid_texts_or_raises_invalid_input(payload, raw):
    body = json.dumps(payload).encode("utf-8", "surrogatepass") if raw else payload
    try:
        texts = texts_from_v1(body, LIMITS)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert_valid(texts)


@EXAMPLES
@given(texts=st.lists(st.text(min_size=1, max_size=16).filter(str.strip), min_size=1, max_size=4),
       wrapped=st.booleans())
def test_v1_parser_keeps_valid_texts_as_sent(texts, wrapped):
    instances = [{"text": text} for text in texts] if wrapped else texts
    assert texts_from_v1({"instances": instances}, LIMITS) == texts


@EXAMPLES
@given(shape=st.lists(st.integers(-3, 6), max_size=3), datatype=st.sampled_from(["BYTES", "INT64", "FP32"]),
       data=st.lists(TEXTS | st.binary(max_size=24) | st.integers(), max_size=6))
def test_v2_parser_returns_valid_texts_or_raises_invalid_input(shape, datatype, data):
    try:
        request = InferRequest("textclf", [InferInput("text", shape, datatype, data)], request_id="r1")
    except Exception:  # noqa: BLE001 - KServe's own constructor refused it: not our parser's input
        return
    try:
        texts = texts_from_v2(request, LIMITS)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert_valid(texts)


#: Near-valid records: every field present with a right or a wrong type.
RECORDS = st.fixed_dictionaries({
    "timestamp": st.sampled_from(["2026-12-03T10:00:00+00:00", "yesterday", ""]) | JSON,
    "text": TEXTS | JSON, "label": TEXTS | JSON,
    "probabilities": st.dictionaries(TEXTS, st.floats(allow_nan=True), max_size=4) | JSON,
    "model_version": TEXTS | JSON, "latency_ms": st.floats(allow_nan=True) | JSON,
})


def encoded(value) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


@EXAMPLES
@given(line=st.binary(max_size=200) | JSON.map(encoded) | RECORDS.map(encoded))
def test_a_request_log_line_is_a_record_or_a_counted_skip(line):
    try:
        record = RequestRecord.from_json(line)
    except RequestRecordError as exc:
        assert exc.reason
        return
    assert record.label
