"""KServe predictor: unit tests (batcher, input validation, encoding, formatting, request log, transformer, CLI)
and, marked slow, the real server in a subprocess on loopback ports (V1/V2 REST, V2 gRPC, bad input, metrics,
request log)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from conftest import read_ag_news, requires_ag_news
from textclf.ports import LOOPBACK, free_port
from textclf.serving.batcher import MicroBatcher
from textclf.serving.bundle import BundleError, load_bundle
from textclf.serving.codec import length_groups, pad, softmax, v1_response, v2_response
from textclf.serving.config import Precision, ServingConfig
from textclf.serving.inputs import InputLimits, RequestKind, parse_request, texts_from_v1, texts_from_v2
from textclf.serving.request_log import InvalidRecord, MalformedLine, RequestLog, RequestRecord
from textclf.text import NORMALISATION_VERSION, normalise_text

LABELS = ("World", "Sports", "Business", "Sci/Tech")
LIMITS = InputLimits(max_instances=4, max_text_bytes=64)


# ---------------------------------------------------------------------------------------------------- micro-batcher


class RecordingProcess:
    """A batch function that records the batches it was given and returns each item doubled."""

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list[int]] = []
        self.delay_s = delay_s

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        time.sleep(self.delay_s)
        return [2 * item for item in items]


def run_requests(batcher: MicroBatcher, requests: list[list[int]], stagger_s: float = 0.0) -> list[list[int]]:
    """Submit requests concurrently (optionally staggered) and return their results in request order."""

    async def submit(index: int, items: list[int]) -> list[int]:
        await asyncio.sleep(index * stagger_s)
        return await batcher.submit(items)

    async def main() -> list[list[int]]:
        try:
            return await asyncio.gather(*(submit(i, items) for i, items in enumerate(requests)))
        finally:
            batcher.close()

    return asyncio.run(main())


def test_batcher_answers_each_request_with_its_own_results_in_order():
    process = RecordingProcess()
    requests = [[i, i + 100, i + 200][: 1 + i % 3] for i in range(20)]
    results = run_requests(MicroBatcher(process, max_batch_size=8, max_wait_ms=20), requests)
    assert results == [[2 * item for item in items] for items in requests]
    assert len(process.batches) < len(requests), "concurrent requests should share batches"


def test_batcher_never_exceeds_max_batch_size_and_never_splits_a_request():
    process = RecordingProcess(delay_s=0.005)
    requests = [[i] * (1 + i % 3) for i in range(30)] + [list(range(12))]
    results = run_requests(MicroBatcher(process, max_batch_size=5, max_wait_ms=50), requests)
    assert results == [[2 * item for item in items] for items in requests]
    sizes = [len(batch) for batch in process.batches]
    assert sizes.count(12) == 1 and all(size <= 5 for size in sizes if size != 12), sizes
    assert sum(sizes) == sum(len(items) for items in requests)


def test_batcher_waits_at_most_max_wait_for_more_requests():
    process = RecordingProcess()
    started = time.perf_counter()
    run_requests(MicroBatcher(process, max_batch_size=64, max_wait_ms=30), [[1]])
    assert time.perf_counter() - started < 1.0
    assert process.batches == [[1]]

    together = RecordingProcess()
    run_requests(MicroBatcher(together, max_batch_size=64, max_wait_ms=200), [[1], [2], [3]], stagger_s=0.01)
    assert together.batches == [[1, 2, 3]], "requests within the wait window share one batch"

    apart = RecordingProcess()
    run_requests(MicroBatcher(apart, max_batch_size=64, max_wait_ms=5), [[1], [2]], stagger_s=0.3)
    assert apart.batches == [[1], [2]], "a request after the window starts a new batch"


def test_batcher_hands_a_failure_to_the_batch_and_keeps_serving():
    def process(items: list[int]) -> list[int]:
        if -1 in items:
            raise RuntimeError("model failed")
        return items

    async def main() -> tuple[BaseException | None, list[int]]:
        batcher = MicroBatcher(process, max_batch_size=4, max_wait_ms=0)
        try:
            failure = None
            try:
                await batcher.submit([-1])
            except RuntimeError as exc:
                failure = exc
            return failure, await batcher.submit([7])
        finally:
            batcher.close()

    failure, later = asyncio.run(main())
    assert str(failure) == "model failed" and later == [7]


# ------------------------------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"instances": []}, "empty request"),
        ({"instances": [""]}, "instance 0: empty text"),
        ({"instances": ["ok", "   "]}, "instance 1: empty text"),
        ({"instances": ["ok", 3]}, "instance 1: expected a string, got int"),
        ({"instances": [{"txt": "x"}]}, "instance 0: expected a string, got dict"),
        ({"instances": [None]}, "expected a string, got NoneType"),
        ({"instances": ["a"] * 5}, "too many instances: 5 texts in one request, at most 4"),
        ({"instances": ["x" * 65]}, "text too long (65 bytes, at most 64)"),
        ({"instances": ["é" * 33]}, "text too long (66 bytes, at most 64)"),
        ({"instances": "a text"}, '"instances" must be a list'),
        ({"inputs": []}, 'expected a JSON object {"instances"'),
        (["a text"], 'expected a JSON object {"instances"'),
        (b"not json", "request body is not valid JSON"),
        (b'{"instances": ["from curl"]', "request body is not valid JSON"),
    ],
)
def test_v1_bad_input_is_rejected_with_a_message_naming_the_problem(payload, message):
    with pytest.raises(InvalidInput) as excinfo:
        texts_from_v1(payload, LIMITS)
    assert message in str(excinfo.value)


def test_v1_accepts_strings_and_text_objects():
    assert texts_from_v1({"instances": ["a", {"text": "b"}]}, LIMITS) == ["a", "b"]
    assert texts_from_v1({"instances": ["x" * 64]}, LIMITS) == ["x" * 64]
    assert texts_from_v1(b'{"instances": ["sent without a JSON content type"]}', LIMITS) == [
        "sent without a JSON content type"]


def v2_request(data: list, datatype: str = "BYTES", name: str = "text", shape: list[int] | None = None) -> InferRequest:
    return InferRequest("textclf", [InferInput(name, shape or [len(data)], datatype, data)], request_id="r1")


def test_v2_texts_from_json_strings_and_grpc_bytes():
    assert texts_from_v2(v2_request(["a", "b"]), LIMITS) == ["a", "b"]
    assert texts_from_v2(v2_request([b"caf\xc3\xa9"]), LIMITS) == ["café"]
    assert texts_from_v2(v2_request(["a", "b"], shape=[2, 1]), LIMITS) == ["a", "b"]
    parsed = parse_request(v2_request(["a"]), LIMITS)
    assert parsed.kind is RequestKind.V2 and parsed.request_id == "r1"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (v2_request([b"\xff\xfe"]), "instance 0: invalid UTF-8 at byte 0"),
        (v2_request(["a"], name="texts"), "missing input 'text'"),
        (v2_request([1, 2], datatype="INT64"), "must have datatype BYTES, got INT64"),
        (v2_request(["a", "b"], shape=[3]), "data does not match shape [3]"),
        (v2_request(["a", "b"], shape=[-1]), "data does not match shape [-1]"),
        (v2_request(["a", "b"], shape=[2, -1]), "data does not match shape [2, -1]"),
        (v2_request(["a", "b"], shape=[-2, -1]), "data does not match shape [-2, -1]"),
        (v2_request([]), "empty request"),
        (v2_request([""]), "instance 0: empty text"),
    ],
)
def test_v2_bad_input_is_rejected(request_, message):
    with pytest.raises(InvalidInput) as excinfo:
        texts_from_v2(request_, LIMITS)
    assert message in str(excinfo.value)


# ------------------------------------------------------------------------------------------ encoding and formatting


def test_length_groups_sort_by_length_and_respect_size_and_ratio():
    lengths = [10, 30, 12, 11, 50, 9, 31]
    groups = length_groups(lengths, max_group_size=3)
    assert sorted(index for group in groups for index in group) == list(range(len(lengths)))
    assert all(len(group) <= 3 for group in groups)
    for group in groups:
        group_lengths = [lengths[index] for index in group]
        assert group_lengths == sorted(group_lengths) and max(group_lengths) <= 1.5 * min(group_lengths)
    assert groups[0] == [5, 0, 3]


def test_pad_masks_the_padding():
    batch = pad([[101, 7, 102], [101, 102]])
    assert batch.input_ids.dtype == np.int64 and batch.input_ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_v1_and_v2_responses_carry_labels_and_probabilities():
    probabilities = softmax(np.array([[0.1, 2.0, 0.3, -1.0], [3.0, 0.0, 0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    v1 = v1_response(probabilities, LABELS, "abc-123")
    assert v1["model_version"] == "abc-123"
    assert [(p["label"], p["label_id"]) for p in v1["predictions"]] == [("Sports", 1), ("World", 0)]
    assert list(v1["predictions"][0]["scores"]) == list(LABELS)
    rest, _ = v2_response(probabilities, LABELS, "textclf", "abc-123", "r1").to_rest()
    outputs = {output["name"]: output for output in rest["outputs"]}
    assert outputs["label"]["data"] == ["Sports", "World"] and outputs["label"]["datatype"] == "BYTES"
    assert outputs["probabilities"]["shape"] == [2, 4] and outputs["probabilities"]["datatype"] == "FP32"
    assert rest["id"] == "r1" and rest["model_version"] == "abc-123"


# -------------------------------------------------------------------------------- bundle, config, CLI, request log


def write_fake_bundle(root: Path, normalisation_version: str = NORMALISATION_VERSION) -> Path:
    """A bundle without ONNX files: a small WordLevel tokenizer, labels and metadata (enough for the transformer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "stocks": 4, "fell": 5, "goal": 6, "scored": 7}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    root.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(root / "tokenizer.json"))
    (root / "labels.json").write_text(json.dumps({"labels": list(LABELS)}))
    (root / "export_metadata.json").write_text(json.dumps({
        "max_length": 5, "normalisation_version": normalisation_version, "labels": list(LABELS),
        "source_model": {"git_commit": "0123456789abcdef"}, "files": {"model.int8.onnx": "f" * 64},
    }))
    return root


def test_bundle_metadata_and_model_version(tmp_path):
    bundle = load_bundle(write_fake_bundle(tmp_path / "bundle"))
    assert bundle.labels == LABELS and bundle.max_length == 5
    assert bundle.model_version(Precision.INT8) == "0123456789ab-ffffffffffff"
    assert Precision("int8").onnx_file == "model.int8.onnx" and Precision.FP32.onnx_file == "model.onnx"
    with pytest.raises(BundleError, match="model.int8.onnx not found"):
        bundle.onnx_path(Precision.INT8)
    ids = bundle.load_tokenizer().encode("stocks fell goal scored stocks fell").ids
    assert ids == [2, 4, 5, 6, 3], "truncated to max_length, special tokens kept"


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_a_damaged_model_file_is_refused_by_its_sha256_at_load(exported_tiny_model, tmp_path, damage):
    """The export stage records each ONNX file's sha256; the server refuses to load a file that does not match."""
    import shutil

    root = tmp_path / "bundle"
    shutil.copytree(exported_tiny_model, root)
    assert load_bundle(root).onnx_path(Precision.INT8).is_file()  # intact: accepted
    model = root / Precision.INT8.onnx_file
    data = bytearray(model.read_bytes())
    if damage == "truncated":
        data = data[: len(data) - 100]
    else:
        data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 .* is not the .* recorded in export_metadata.json"):
        load_bundle(root).onnx_path(Precision.INT8)
    assert load_bundle(root).onnx_path(Precision.FP32).is_file()  # the other file is still intact


def test_bundle_text_profile_is_read_and_applied_to_requests(tmp_path):
    from textclf.serving.codec import tokenise
    from textclf.text import TextProfile

    root = write_fake_bundle(tmp_path / "bundle")
    assert load_bundle(root).text_profile is TextProfile.NEWS  # bundles before profiles
    metadata = json.loads((root / "export_metadata.json").read_text())
    (root / "export_metadata.json").write_text(json.dumps({**metadata, "text_profile": "abstract"}))
    bundle = load_bundle(root)
    assert bundle.text_profile is TextProfile.ABSTRACT
    tokenizer = bundle.load_tokenizer()
    raw = [r"\textbf{stocks} fell"]
    assert tokenise(tokenizer, raw, bundle.text_profile) == [[2, 4, 5, 3]]
    assert tokenise(tokenizer, raw) == [[2, 1, 1, 4, 3]]  # news rules: "textbf", "{" unknown, "fell" cut off
    (root / "export_metadata.json").write_text(json.dumps({**metadata, "text_profile": "tweets"}))
    with pytest.raises(BundleError, match="unknown text profile 'tweets'"):
        load_bundle(root)


def test_bundle_with_another_normalisation_version_is_refused(tmp_path):
    with pytest.raises(BundleError, match="text normalisation version 0, this server applies version"):
        load_bundle(write_fake_bundle(tmp_path / "bundle", normalisation_version="0"))


def test_cli_rejects_unusable_arguments_with_exit_code_2(tmp_path, capsys, monkeypatch):
    from textclf.serving import server
    from textclf.serving.__main__ import config_from_args, main

    def no_server(*_args):
        raise AssertionError("the bundle loaded: the server would start")

    monkeypatch.setattr(server, "build_model_server", no_server)
    cases = [
        (["--model-dir", str(tmp_path / "missing")], "model directory not found"),
        (["--model-dir", str(write_fake_bundle(tmp_path / "b"))], "model.int8.onnx not found"),
        (["--model-dir", str(tmp_path / "b"), "--max-batch-size", "0"], "max_batch_size must be >= 1"),
        (["--model-dir", str(tmp_path / "b"), "--precision", "fp16"], "invalid choice"),
        (["--model-dir", str(tmp_path)], "not a model bundle: none of cascade.json, classical_metadata.json, "
                                         "export_metadata.json found"),
        (["--model-dir", str(tmp_path / "b"), "--cascade-stage", "1"], "--cascade-stage needs a cascade bundle"),
        (["--model-dir", str(tmp_path / "b"), "--cascade-stage", "3"], "invalid choice"),
        (["--model-dir", str(tmp_path / "b"), "--cascade-stage", "1", "--predictor-host", "t:8001"],
         "cannot be combined with predictor_host"),
        (["--model-dir", str(tmp_path / "b"), "--predictor-host", "t:8001", "--workers", "4"], "--workers must be 1"),
    ]
    for argv, message in cases:  # main: the bundle is checked by the model's load, after parsing
        with pytest.raises(SystemExit) as excinfo:
            main(argv)
        assert excinfo.value.code == 2
        assert message in capsys.readouterr().err
    config = config_from_args(["--model-dir", str(tmp_path / "b"), "--predictor-host", "triton:8001"])
    assert config.predictor_host == "triton:8001" and config.precision is Precision.INT8
    # The arguments KServe appends to a transformer container (underscore spelling, --workers).
    config = config_from_args(["--model-dir", str(tmp_path / "b"), "--model_name", "textclf", "--predictor_host",
                               "triton.ns:80", "--http_port", "8080", "--workers", "1"])
    assert (config.model_name, config.predictor_host, config.http_port) == ("textclf", "triton.ns:80", 8080)


def test_arguments_are_parsed_without_reading_the_bundle_and_load_fetches_it_once(tmp_path, monkeypatch):
    from textclf.serving import transformer
    from textclf.serving.__main__ import config_from_args

    config = config_from_args(["--model-dir", "s3://no-such-bucket/bundle/", "--predictor-host", "triton:8001"])
    assert config.model_dir == "s3://no-such-bucket/bundle/", "a URI stays a URI; nothing is downloaded yet"
    fetched = []
    bundle = write_fake_bundle(tmp_path / "bundle")
    monkeypatch.setattr(transformer, "fetch_bundle", lambda uri, cache_dir: fetched.append((uri, cache_dir)) or bundle)
    model = transformer.TritonTextTransformer(config)
    assert model.load() and model.bundle.labels == LABELS
    assert fetched == [("s3://no-such-bucket/bundle/", config.model_cache_dir)]


def test_to_args_parses_back_to_an_equal_config(tmp_path):
    """``ServingConfig.to_args`` (what every deploy target passes) and the server's parser agree, field by field."""
    from dataclasses import fields

    from textclf.serving.__main__ import config_from_args
    from textclf.serving.config import SERVER_FLAGS

    assert set(SERVER_FLAGS) == {field.name for field in fields(ServingConfig)}
    default = ServingConfig(model_dir="s3://bucket/bundle/")
    changed = ServingConfig(
        model_dir=tmp_path / "bundle dir", model_cache_dir=tmp_path / "cache", model_name="ag-news", precision="fp32",
        http_port=9000, grpc_port=9001, enable_grpc=False, max_batch_size=8, max_wait_ms=2.5, max_instances=10,
        max_text_bytes=100, max_explain_instances=3, max_explain_tokens=16,
        intra_op_threads=default.intra_op_threads + 1, warmup_batches=0,
        request_log=tmp_path / "requests.jsonl", request_log_max_bytes=1000, request_log_backups=0,
        predictor_host="triton:8001", predictor_protocol="v2",
    )
    stage = ServingConfig(model_dir="/mnt/models", cascade_stage=2)
    for config in (default, changed, stage, ServingConfig(model_dir="/mnt/models", predictor_host="triton:8001")):
        assert config_from_args(config.to_args()) == config
    assert default.to_args() == ["--model-name=textclf", "--model-dir=s3://bucket/bundle/", "--precision=int8",
                                 "--http-port=8080"]
    # cascade_stage is the one field not set in `changed` (a stage is served in-process, never through Triton)
    assert len(changed.to_args()) == len(SERVER_FLAGS) - 1, "every field not at its default is stated"
    assert "--cascade-stage=2" in stage.to_args()
    assert default.to_args(fields=("precision", "http_port")) == ["--precision=int8", "--http-port=8080"]
    with pytest.raises(ValueError, match="not ServingConfig fields: \\['port'\\]"):
        default.to_args(fields=("precision", "port"))


def test_kserve_flags_reach_the_model_server(monkeypatch):
    """KServe's own flags (here from ``$TEXTCLF_SERVING_ARGS``, not ``sys.argv``) configure ``kserve.ModelServer``,
    the transformer's predictor client and the options KServe reads from ``kserve.model_server.args``."""
    import argparse

    import kserve.model_server
    from kserve import context

    from textclf.serving.__main__ import build_parser, parse_command_line, resolve_argv
    from textclf.serving.server import build_model_server

    monkeypatch.setattr(kserve.model_server, "args", argparse.Namespace(**vars(kserve.model_server.args)))
    previous = context.get_predictor_config()
    monkeypatch.setenv("TEXTCLF_SERVING_ARGS", (
        "--model-dir=s3://b/bundle/ --predictor_host=triton:8001 --predictor_protocol=v2 --predictor_use_ssl=true "
        "--predictor_request_timeout_seconds=30 --predictor_request_retries=2 --enable_predictor_health_check "
        "--http_port=9000 --enable_grpc=false --max_threads=7 --timeout-keep-alive=5 --configure_logging=false "
        "--grpc_max_send_message_length=1234 --enable_latency_logging=true"))
    config, options = parse_command_line(build_parser(), resolve_argv(["serve"]))
    assert (config.http_port, config.enable_grpc, config.predictor_protocol) == (9000, False, "v2")
    try:
        model_server = build_model_server(config, options)
        predictor = context.get_predictor_config()
    finally:
        context.set_predictor_config(previous)
    assert (model_server.http_port, model_server.enable_grpc, model_server.max_threads) == (9000, False, 7)
    assert (model_server.timeout_keep_alive, model_server.enable_latency_logging) == (5, True)
    assert (predictor.predictor_host, predictor.predictor_protocol, predictor.predictor_use_ssl) == (
        "triton:8001", "v2", True)
    assert (predictor.predictor_request_timeout_seconds, predictor.predictor_request_retries,
            predictor.predictor_health_check) == (30, 2, True)
    assert kserve.model_server.args.grpc_max_send_message_length == 1234
    assert kserve.model_server.args.configure_logging is False
    # KServe's parser keeps its own defaults: this server's are set on a copy.
    assert kserve.model_server.parser.parse_args([]).model_name == "model"
    assert build_parser().parse_args(["--model-dir", "x"]).enable_latency_logging is False


def test_request_log_writes_json_lines_and_rotates(tmp_path):
    path = tmp_path / "logs" / "requests.jsonl"
    log = RequestLog(path, max_bytes=600, backups=2)
    probabilities = softmax(np.zeros((2, 4), dtype=np.float32))
    for _ in range(5):
        log.record(["first text", "second"], ["World", "World"], probabilities, LABELS, "v1")
    log.close()
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    line = json.loads(path.read_text().splitlines()[-1])
    assert set(line) == {"timestamp", "text", "label", "probabilities", "model_version"}
    assert line["probabilities"] == {label: 0.25 for label in LABELS} and line["timestamp"].endswith("+00:00")


def test_request_record_is_the_log_schema_for_writer_and_readers(tmp_path):
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, max_bytes=1 << 20, backups=1)
    log.record(["Stocks fell"], ["Business"], softmax(np.array([[0.0, 0.0, 2.0, 0.0]], dtype=np.float32)), LABELS, "v1")
    log.close()
    (line,) = path.read_text(encoding="utf-8").splitlines()
    record = RequestRecord.from_json(line)
    assert (record.text, record.label, record.model_version) == ("Stocks fell", "Business", "v1")
    assert record.confidence == max(record.probabilities.values()) and record.moment().tzinfo is not None
    assert RequestRecord.from_json(record.to_json()) == record and record.to_json() == line
    ab = RequestRecord.from_dict({"label": "World", "model_version": "v2", "user_id": 7, "variant": "",
                                  "shadow": {"model_version": "v1", "label": "Sports"}, "unknown": [1]})
    assert (ab.user_id, ab.variant, ab.shadow[0].label) == ("7", None, "Sports")
    for bad in ("{not json", "[1, 2]"):
        with pytest.raises(MalformedLine):
            RequestRecord.from_json(bad)
    for bad in ({"text": "x"}, {"label": "World", "probabilities": {"World": 1.5}}, {"label": "World", "text": 3},
                {"label": "World", "latency_ms": -1}):
        with pytest.raises(InvalidRecord):
            RequestRecord.from_dict(bad)
    with pytest.raises(InvalidRecord, match="missing or empty 'text'"):
        RequestRecord.from_dict({"label": "World", "text": " "}).require("text")
    with pytest.raises(InvalidRecord, match="bad 'timestamp'"):
        RequestRecord.from_dict({"label": "World", "timestamp": "yesterday"}).moment()


# ---------------------------------------------------------------------------------------------------- transformer


def test_transformer_tokenises_for_triton_and_formats_triton_logits(tmp_path):
    from textclf.serving.transformer import TritonResult, TritonTextTransformer

    config = ServingConfig(model_dir=write_fake_bundle(tmp_path / "bundle"), predictor_host="triton:8001")
    transformer = TritonTextTransformer(config)
    assert transformer.load()

    async def roundtrip(payload):
        request = await transformer.preprocess(payload)
        logits = np.array([[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]], dtype=np.float32)
        triton = InferResponse("r1", "textclf", [InferOutput("logits", [2, 4], "FP32", logits.ravel().tolist())],
                               model_version="1")
        return request, await transformer.postprocess(TritonResult(request.request, triton))

    request, v1 = asyncio.run(roundtrip({"instances": ["goal scored", {"text": "Stocks   fell"}]}))
    feeds = {tensor.name: tensor for tensor in request.infer_request.inputs}
    assert feeds["input_ids"].datatype == "INT64"
    assert feeds["input_ids"].as_numpy().tolist() == [[2, 6, 7, 3], [2, 1, 5, 3]], "normalised, [UNK] for 'Stocks'"
    assert feeds["attention_mask"].as_numpy().tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert [p["label"] for p in v1["predictions"]] == ["Sports", "Business"] and v1["model_version"] == "1"

    _, v2 = asyncio.run(roundtrip(v2_request([b"goal", b"stocks fell"])))
    assert isinstance(v2, InferResponse) and v2.get_output_by_name("label").data == ["Sports", "Business"]
    with pytest.raises(InvalidInput, match="empty request"):
        asyncio.run(transformer.preprocess({"instances": []}))


# ------------------------------------------------------------------------------------------ the server (slow, real)


@dataclass
class RunningServer:
    process: subprocess.Popen
    http: str
    grpc_port: int
    model_dir: Path
    request_log: Path

    def logged(self) -> list[str]:
        """The request log's complete lines: the server writes it asynchronously, so a read may end mid-line."""
        text = self.request_log.read_text()
        return text[:text.rfind("\n") + 1].splitlines()


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def wait_until_ready(process: subprocess.Popen, url: str, log_path: Path, seconds: float = 120) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if the process exits or time runs out."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"server exited with {process.returncode}:\n{log_path.read_text()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready within {seconds} s:\n{log_path.read_text()}"
        time.sleep(0.3)


@contextlib.contextmanager
def running_server(model_dir: Path, work: Path, extra_args: tuple[str, ...] = (),
                   module: str = "textclf.serving") -> Iterator[RunningServer]:
    """``python -m <module>`` (default: our server) on ``model_dir`` (INT8, model name ``textclf``, a request log in
    ``work``, then ``extra_args``) on free loopback ports, ready; stopped on exit."""
    http_port, grpc_port = free_port(), free_port()
    request_log = work / "requests.jsonl"
    command = [
        sys.executable, "-m", module, "--model-dir", str(model_dir), "--model-name", "textclf",
        "--precision", "int8", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--max-batch-size", "16", "--max-wait-ms", "5", "--max-instances", "8", "--max-text-bytes", "2048",
        "--request-log", str(request_log), *extra_args,
    ]
    output = (work / "server.log").open("wb")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    running = RunningServer(process, f"http://{LOOPBACK}:{http_port}", grpc_port, model_dir, request_log)
    try:
        wait_until_ready(process, f"{running.http}/v2/health/ready", work / "server.log")
        yield running
    finally:
        stop_process(process)
        output.close()


@pytest.fixture(scope="module")
def server(exported_tiny_model, tmp_path_factory) -> Iterator[RunningServer]:
    with running_server(exported_tiny_model, tmp_path_factory.mktemp("serving")) as running:
        yield running


@pytest.fixture(scope="module")
def ag_news_texts() -> list[str]:
    """16 real AG News test texts (title and description joined by a space, as ingest does)."""
    frame = read_ag_news("test").iloc[:16]
    return (frame["title"] + " " + frame["description"]).tolist()


def offline_probabilities(
    model_dir: Path, texts: list[str], onnx_file: str = "model.int8.onnx", temperature: float = 1.0
) -> np.ndarray:
    """Probabilities ``softmax(logits / temperature)`` from onnxruntime + tokenizers directly, one text at a time
    (no server code)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    metadata = json.loads((model_dir / "export_metadata.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=metadata["max_length"])
    tokenizer.no_padding()
    session = ort.InferenceSession(str(model_dir / onnx_file), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(normalise_text(text)).ids], dtype=np.int64)
        logits = session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0] / temperature
        rows.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
    return np.stack(rows)


def v1_predict(server: RunningServer, instances) -> dict:
    import httpx

    response = httpx.post(f"{server.http}/v1/models/textclf:predict", json={"instances": instances}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def v2_infer_body(texts: list[str]) -> dict:
    return {"id": "req-1", "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


@pytest.mark.slow
@requires_ag_news
def test_v1_predictions_equal_offline_onnx_runtime(server, ag_news_texts):
    labels = json.loads((server.model_dir / "labels.json").read_text())["labels"]
    expected = offline_probabilities(server.model_dir, ag_news_texts)
    for text, row in zip(ag_news_texts[:8], expected[:8], strict=True):
        prediction = v1_predict(server, [text])["predictions"][0]
        np.testing.assert_allclose([prediction["scores"][label] for label in labels], row, atol=1e-5)
        assert prediction["label"] == labels[int(row.argmax())] and prediction["label_id"] == int(row.argmax())
    body = v1_predict(server, [{"text": text} for text in ag_news_texts[8:]])
    scores = np.array([[p["scores"][label] for label in labels] for p in body["predictions"]])
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(scores, expected[8:], atol=0.02)  # batched: INT8 activation scales see the batch
    metadata = json.loads((server.model_dir / "export_metadata.json").read_text())
    assert body["model_version"] == (
        f"{metadata['source_model']['git_commit'][:12]}-{metadata['files']['model.int8.onnx'][:12]}"
    )


@pytest.mark.slow
@requires_ag_news
def test_v2_rest_returns_labels_and_probabilities(server, ag_news_texts):
    import httpx

    texts = ag_news_texts[:4]
    response = httpx.post(f"{server.http}/v2/models/textclf/infer", json=v2_infer_body(texts), timeout=30)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["probabilities"]["datatype"] == "FP32"
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    assert probabilities.shape == (4, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert outputs["label"]["data"] == [p["label"] for p in v1_predict(server, texts)["predictions"]]


@pytest.mark.slow
@requires_ag_news
def test_v2_grpc_with_kserve_client(server, ag_news_texts):
    import grpc
    from kserve import InferenceGRPCClient

    texts = ag_news_texts[:3]

    async def call(data: list[bytes]) -> InferResponse:
        client = InferenceGRPCClient(url=f"{LOOPBACK}:{server.grpc_port}", timeout=30, retries=2)
        try:
            return await client.infer(v2_request(data))
        finally:
            await client.close()

    response = asyncio.run(call([text.encode("utf-8") for text in texts]))
    labels = [label.decode() if isinstance(label, bytes) else label
              for label in response.get_output_by_name("label").as_numpy().tolist()]
    probabilities = response.get_output_by_name("probabilities").as_numpy()
    assert probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert labels == [p["label"] for p in v1_predict(server, texts)["predictions"]]
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        asyncio.run(call([b"fine", b"\xff\xfe broken"]))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "instance 1: invalid UTF-8" in excinfo.value.details()


@pytest.mark.slow
def test_model_control_is_off_over_rest_and_grpc(server):
    """One request must not take the served model away while the pod still reports ready."""
    import grpc
    import httpx
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    for action in ("load", "unload"):
        answer = httpx.post(f"{server.http}/v2/repository/models/textclf/{action}", timeout=30)
        assert answer.status_code == 400
        assert f"model control is disabled on this server: cannot {action} 'textclf'" in answer.json()["error"]
    with grpc.insecure_channel(f"{LOOPBACK}:{server.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as excinfo:
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="textclf"), timeout=30)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.ModelReady(pb.ModelReadyRequest(name="textclf"), timeout=30).ready
    assert httpx.get(f"{server.http}/v2/models/textclf/ready", timeout=30).json()["ready"]
    assert v1_predict(server, ["Stocks fell on Monday"])["predictions"][0]["label"]


@pytest.mark.slow
@requires_ag_news
def test_fp32_predictor_is_ready_only_after_load_and_matches_offline(exported_tiny_model, ag_news_texts):
    from textclf.serving.predictor import TextClassifierPredictor

    predictor = TextClassifierPredictor(
        ServingConfig(model_dir=exported_tiny_model, precision=Precision.FP32, warmup_batches=1)
    )
    assert not predictor.ready
    assert predictor.load() and predictor.ready

    async def predict(texts: list[str]) -> dict:
        scored = await predictor.predict(await predictor.preprocess({"instances": texts}))
        return await predictor.postprocess(scored)

    try:
        body = asyncio.run(predict(ag_news_texts[:4]))
    finally:
        predictor.stop()
    labels = predictor.served.labels
    scores = np.array([[p["scores"][label] for label in labels] for p in body["predictions"]])
    np.testing.assert_allclose(scores, offline_probabilities(exported_tiny_model, ag_news_texts[:4], "model.onnx"),
                               atol=1e-4)
    assert body["model_version"].endswith(load_bundle(exported_tiny_model).file_sha256["model.onnx"][:12])
    assert all("stage" not in prediction for prediction in body["predictions"]), "only a cascade names stages"


BAD_HTTP_REQUESTS = [
    ("v1", b'{"instances": []}', "empty request"),
    ("v1", b'{"instances": [""]}', "instance 0: empty text"),
    ("v1", b'{"instances": ["ok", 42]}', "instance 1: expected a string, got int"),
    ("v1", b'{"instances": [{"text": null}]}', "instance 0: expected a string, got NoneType"),
    ("v1", b'{"instances": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}', "too many instances: 9"),
    ("v1", json.dumps({"instances": ["x" * 2049]}).encode(), "text too long (2049 bytes, at most 2048)"),
    ("v1", b'{"instances": ["unterminated', "Unrecognized request format"),
    ("v1", b'{"instances": ["caf\xff"]}', "Unrecognized request format"),
    ("v1", b'{"text": "no instances"}', 'expected a JSON object {"instances"'),
    ("v2", json.dumps(v2_infer_body([])).encode(), "empty request"),
    ("v2", json.dumps(v2_infer_body(["ok", ""])).encode(), "instance 1: empty text"),
    ("v2", json.dumps(v2_infer_body(["x"] * 9)).encode(), "too many instances: 9"),
    ("v2", json.dumps({"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}).encode(),
     "missing input 'text'"),
    ("v2", json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "INT64", "data": [1]}]}).encode(),
     "must have datatype BYTES"),
    ("v2", b'{"inputs": [', "invalid request body: body.12: JSON decode error"),
    ("v2", b'{"inputs": {"name": "text"}}', "inputs: Input should be a valid list"),
]


@pytest.mark.slow
@requires_ag_news
def test_bad_input_gets_400_naming_the_problem_and_the_server_keeps_serving(server, ag_news_texts):
    import httpx

    urls = {"v1": f"{server.http}/v1/models/textclf:predict", "v2": f"{server.http}/v2/models/textclf/infer"}
    failures = []
    for protocol, body, message in BAD_HTTP_REQUESTS:
        response = httpx.post(urls[protocol], content=body, headers={"content-type": "application/json"}, timeout=30)
        error = response.json().get("error", "") if response.status_code == 400 else response.text
        if response.status_code != 400 or message not in error:
            failures.append((protocol, body[:60], message, response.status_code, error[:200]))
    assert not failures, failures
    plain = httpx.post(urls["v1"], content=b'{"instances": ["cut', headers={"content-type": "text/plain"}, timeout=30)
    assert plain.status_code == 400 and "request body is not valid JSON" in plain.json()["error"]
    assert v1_predict(server, ag_news_texts[:1])["predictions"][0]["label"]


@pytest.mark.slow
@requires_ag_news
def test_v2_shape_that_does_not_state_the_data_gets_400_over_rest_and_grpc(server, ag_news_texts):
    """A negative size is no wildcard: ``[-1]`` (which numpy's reshape would fill in) and sizes that do not match
    the data are refused like every other shape mismatch."""
    import grpc
    import httpx
    from kserve import InferenceGRPCClient

    texts = ag_news_texts[:2]
    for shape in ([-1], [2, -1], [-2, -1], [3], [1]):
        body = {"id": "req-1", "inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "data": texts}]}
        response = httpx.post(f"{server.http}/v2/models/textclf/infer", json=body, timeout=30)
        assert response.status_code == 400, (shape, response.text)
        assert f"data does not match shape {shape}" in response.json()["error"]

    async def call() -> InferResponse:
        client = InferenceGRPCClient(url=f"{LOOPBACK}:{server.grpc_port}", timeout=30, retries=2)
        try:
            return await client.infer(v2_request([text.encode("utf-8") for text in texts], shape=[-1]))
        finally:
            await client.close()

    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        asyncio.run(call())
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "data does not match shape [-1]" in excinfo.value.details()
    assert v1_predict(server, texts)["predictions"][0]["label"]


@pytest.mark.slow
@requires_ag_news
def test_metrics_expose_batch_size_class_counts_and_confidence(server, ag_news_texts):
    import httpx

    v1_predict(server, ag_news_texts[:2])
    text = httpx.get(f"{server.http}/metrics", timeout=30).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['textclf_batch_size_count{model_name="textclf"}'] > 0
    assert samples['textclf_prediction_confidence_count{model_name="textclf"}'] >= 2
    assert sum(v for k, v in samples.items() if k.startswith("textclf_predictions_total{")) >= 2
    assert any('label="' in k for k in samples if k.startswith("textclf_predictions_total{"))
    assert samples['request_predict_seconds_count{model_name="textclf"}'] > 0, "KServe's own latency metrics"


@pytest.mark.slow
@requires_ag_news
def test_request_log_has_one_json_line_per_prediction(server, ag_news_texts):
    """Each prediction is logged with its id (the request id, ``#index`` for several texts), the caller's user key
    and the request's latency; the response returns the request id in its body and its ``x-request-id`` header."""
    import httpx

    marker = f"request-log-check-{os.getpid()}"
    texts = [f"{marker} {i} {text}" for i, text in enumerate(ag_news_texts[:5])]
    response = httpx.post(f"{server.http}/v1/models/textclf:predict", json={"instances": texts}, timeout=30,
                          headers={"x-request-id": "req-log-1", "x-user-id": "user-7"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == "req-log-1" and response.headers["x-request-id"] == "req-log-1"
    single = httpx.post(f"{server.http}/v1/models/textclf:predict", json={"instances": [f"{marker} single"]},
                        headers={"ce-id": "event-9"}, timeout=30)
    assert single.json()["request_id"] == "event-9", "the CloudEvent id when no x-request-id is sent"
    generated = v1_predict(server, [f"{marker} generated"])["request_id"]
    assert len(generated) == 32 and generated != v1_predict(server, [f"{marker} generated"])["request_id"]
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in server.logged()]
        logged = [line for line in lines if line["text"].startswith(marker)]
        if len(logged) >= len(texts) + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    batch = logged[:len(texts)]
    assert [line["text"] for line in batch] == texts
    assert [line["label"] for line in batch] == [p["label"] for p in body["predictions"]]
    assert [line["request_id"] for line in batch] == [f"req-log-1#{i}" for i in range(5)]
    for line in batch:
        assert set(line) == {"timestamp", "text", "label", "probabilities", "model_version", "request_id",
                             "user_id", "latency_ms"}
        assert line["user_id"] == "user-7" and line["latency_ms"] > 0
        assert abs(sum(line["probabilities"].values()) - 1.0) < 1e-5 and "T" in line["timestamp"]
    assert logged[len(texts)]["request_id"] == "event-9" and "user_id" not in logged[len(texts)]
    assert logged[len(texts) + 1]["request_id"] == generated


@pytest.mark.slow
@requires_ag_news
def test_requests_are_counted_by_outcome_with_their_latency(server, ag_news_texts):
    import httpx

    def samples() -> dict[str, float]:
        text = httpx.get(f"{server.http}/metrics", timeout=30).text
        return {name: float(value) for name, value in
                (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}

    before = samples()
    v1_predict(server, ag_news_texts[:2])
    v2 = httpx.post(f"{server.http}/v2/models/textclf/infer", json=v2_infer_body(ag_news_texts[:1]), timeout=30)
    assert v2.json()["id"] == "req-1" and v2.headers["x-request-id"] == "req-1", "the V2 body id is echoed"
    refused = httpx.post(f"{server.http}/v1/models/textclf:predict", json={"instances": []}, timeout=30)
    assert refused.status_code == 400
    after = samples()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('textclf_requests_total{model_name="textclf",outcome="ok"}') == 2
    assert delta('textclf_requests_total{model_name="textclf",outcome="invalid_input"}') == 1
    assert delta('textclf_request_latency_seconds_count{model_name="textclf"}') == 2
    assert delta('textclf_request_latency_seconds_sum{model_name="textclf"}') > 0


def test_cli_process_exits_2_on_a_bundle_without_the_onnx_model(tmp_path):
    bundle = write_fake_bundle(tmp_path / "bundle")
    result = subprocess.run(
        [sys.executable, "-m", "textclf.serving", "--model-dir", str(bundle), "--http-port", str(free_port())],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "model.int8.onnx not found" in result.stderr


@pytest.mark.slow
@requires_ag_news
def test_sagemaker_container_contract(exported_tiny_model, ag_news_texts, tmp_path):
    """Started as SageMaker starts a container (the argument ``serve``, arguments in $TEXTCLF_SERVING_ARGS, as
    ``textclf deploy sagemaker`` sets them): /ping is readiness, /invocations is V1 predict."""
    import httpx

    port = free_port()
    env = {**os.environ, "TEXTCLF_SERVING_ARGS": f"--model-dir={exported_tiny_model} --model-name=textclf "
                                                 f"--http-port={port} --no-grpc"}
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "textclf.serving", "serve"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    base = f"http://{LOOPBACK}:{port}"
    try:
        wait_until_ready(process, f"{base}/ping", tmp_path / "server.log")
        body = {"instances": ag_news_texts[:3]}
        same_id = {"x-request-id": "sagemaker-contract"}  # else each answer carries its own generated id
        invoked = httpx.post(f"{base}/invocations", json=body, headers=same_id, timeout=30)
        direct = httpx.post(f"{base}/v1/models/textclf:predict", json=body, headers=same_id, timeout=30)
        assert invoked.status_code == 200 and invoked.json() == direct.json()
        refused = httpx.post(f"{base}/invocations", json={"instances": []}, timeout=30)
        assert refused.status_code == 400 and "empty" in refused.text
    finally:
        stop_process(process)
        log.close()


@pytest.mark.slow
@requires_ag_news
def test_textclf_serve_uses_the_latest_run_and_passes_server_flags(exported_tiny_model, ag_news_texts, tmp_path):
    """`make serve SERVE_ARGS="--precision fp32 ..."`: `textclf serve` finds the bundle through the runs
    directory's latest.json and hands every other flag to the server; fp32 answers as the fp32 model does offline."""
    import httpx

    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / "latest.json").write_text(json.dumps({"artifacts": {"onnx_model": str(exported_tiny_model)}}))
    port = free_port()
    log_path = tmp_path / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "textclf.cli", "serve", "--precision", "fp32", "--runs-dir", str(runs_dir),
         "--model-name", "textclf", "--http-port", str(port), "--no-grpc"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://{LOOPBACK}:{port}"
    try:
        wait_until_ready(process, f"{base}/v2/health/ready", log_path)
        answer = httpx.post(f"{base}/v1/models/textclf:predict", json={"instances": ag_news_texts[:4]}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        labels = json.loads((exported_tiny_model / "labels.json").read_text())["labels"]
        scores = np.array([[p["scores"][label] for label in labels] for p in body["predictions"]])
        expected = offline_probabilities(exported_tiny_model, ag_news_texts[:4], onnx_file="model.onnx")
        np.testing.assert_allclose(scores, expected, atol=1e-4)
        fp32_sha256 = hashlib.sha256((exported_tiny_model / "model.onnx").read_bytes()).hexdigest()
        assert body["model_version"].endswith(fp32_sha256[:12])  # the fp32 file, as --precision asked
    finally:
        stop_process(process)
        log.close()


def test_serve_without_the_sagemaker_arguments_says_what_is_missing(monkeypatch):
    from textclf.serving.__main__ import resolve_argv

    monkeypatch.delenv("TEXTCLF_SERVING_ARGS", raising=False)
    with pytest.raises(SystemExit, match="set TEXTCLF_SERVING_ARGS"):
        resolve_argv(["serve"])
    monkeypatch.setenv("TEXTCLF_SERVING_ARGS", "--model-dir='/opt/ml/model' --no-grpc")
    assert resolve_argv(["serve"]) == ["--model-dir=/opt/ml/model", "--no-grpc"]
    assert resolve_argv(["--model-dir", "x"]) == ["--model-dir", "x"]


def test_serve_benchmark_measures_the_model_alone_and_relates_the_server_to_it(exported_tiny_model, ag_news_texts):
    """The no-HTTP ceiling in ``make bench-serve``: real runs of the bundle's INT8 model, and the summary's share of
    it (a server can come close to the ceiling, never far above it)."""
    from textclf.benchmarks.serve_bench import measure_model_alone, summarise

    alone = measure_model_alone(exported_tiny_model, ag_news_texts * 4, "int8", seconds=0.5)
    assert alone["single_texts_per_s"] > 0 and alone["batch32_texts_per_s"] > 0
    assert alone["single_text_ms"] == pytest.approx(1000.0 / alone["single_texts_per_s"])

    def run(rps: float, p50: float) -> dict:
        return {"throughput_rps": rps, "errors": 0, "latency_ms": {"p50": p50, "p95": p50, "p99": p50}}

    servers = {"onnx-int8": {"1": run(100.0, 9.0), "8": run(120.0, 60.0), "32": run(130.0, 240.0)},
               "hf-pytorch-fp32": {"1": run(40.0, 25.0), "8": run(40.0, 200.0), "32": run(40.0, 800.0)}}
    summary = summarise(servers, {"onnx-int8": {"batch32_texts_per_s": 260.0}})
    assert summary["int8_speedup_over_baseline_at_c32"] == pytest.approx(3.25)
    assert summary["int8_share_of_model_alone_batch32_at_c32"] == pytest.approx(0.5)
    assert summary["targets"] == {"int8_speedup_at_c32_ge_4x": False, "int8_throughput_at_c32_ge_300_rps": False,
                                  "int8_p50_at_c1_le_10ms": True, "zero_errors": True}
