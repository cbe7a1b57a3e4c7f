"""KServe's payload logger -> the monitor: CloudEvents from real predictor exchanges into the prediction store,
ground truth fed back, live accuracy and the accuracy-drop trigger.

The predictor is real (``python -m textclf.serving`` on a tiny ONNX model, on loopback); the monitor's endpoint is
the real :class:`MetricsServer` with :func:`monitor_routes`. What stands in for KServe is :func:`log_exchange`: it
sends the two CloudEvents KServe's logger sends for one proxied request (``pkg/logger/handler.go``: a request
event with the request body and, for an HTTP 200, a response event with the response body, the same ``Ce-Id``, the
extensions ``inferenceservicename``, ``namespace``, ``component``, ``endpoint`` and ``metadata``; ``worker.go``:
binary mode through the CloudEvents SDK), so the bodies are the server's own.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from textclf.monitor.config import DriftConfig
from textclf.monitor.endpoints import AB_PATH, EVENTS_PATH, FEEDBACK_PATH, monitor_routes
from textclf.monitor.events import REQUEST_EVENT, RESPONSE_EVENT, MalformedEvent, parse_cloudevent, request_texts
from textclf.monitor.metrics import MetricsServer, MonitorMetrics
from textclf.monitor.reference import build_reference
from textclf.monitor.service import DriftMonitor
from textclf.monitor.store import STORE_FILE, PredictionStore

WORDS = ["stocks", "fell", "goal", "scored", "market", "match", "shares", "team"]


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + f" n{i}" for i in range(n)]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Any]:
    from test_calibration import write_tiny_onnx
    from test_serving import running_server, write_fake_bundle

    work = tmp_path_factory.mktemp("events-server")
    bundle = write_fake_bundle(work / "bundle")
    write_tiny_onnx(bundle / "model.int8.onnx")
    with running_server(bundle, work) as running:
        yield running


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def logger_headers(event_id: str, kind: str, endpoint: str = "default", user: str | None = None) -> dict[str, str]:
    """The headers of one binary-mode CloudEvent as KServe's logger sends it (Go's canonical header names)."""
    metadata = {"X-User-Id": [user]} if user else {}
    return {
        "Ce-Specversion": "1.0", "Ce-Id": event_id, "Ce-Source": "http://localhost:9081/",
        "Ce-Type": kind, "Ce-Time": datetime.now(timezone.utc).isoformat(),
        "Ce-Inferenceservicename": "textclf", "Ce-Namespace": "ml", "Ce-Component": "predictor",
        "Ce-Endpoint": endpoint, "Ce-Metadata": json.dumps(metadata), "Content-Type": "application/json",
    }


def predict(server: Any, body: dict[str, Any], protocol: str = "v1", headers: dict[str, str] | None = None) -> bytes:
    path = "/v1/models/textclf:predict" if protocol == "v1" else "/v2/models/textclf/infer"
    request = urllib.request.Request(f"{server.http}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json", **(headers or {})}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def log_exchange(monitor_url: str, request_body: bytes, response_body: bytes, event_id: str | None = None,
                 endpoint: str = "default", user: str | None = None,
                 response_first: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """Send one exchange's two events as KServe's logger does (optionally the response first: the logger's
    workers send them concurrently)."""
    event_id = event_id or str(uuid.uuid4())
    sends = [(REQUEST_EVENT, request_body), (RESPONSE_EVENT, response_body)]
    if response_first:
        sends.reverse()
    return [post(monitor_url + EVENTS_PATH, body, logger_headers(event_id, kind, endpoint, user))
            for kind, body in sends]


@pytest.fixture
def monitor(tmp_path, server) -> Iterator[dict[str, Any]]:
    """A drift monitor (no request log: events only) with its HTTP endpoint."""
    from test_serving import LABELS

    rng = np.random.default_rng(0)
    sample = texts(60, 1)
    version = json.loads(predict(server, {"instances": ["stocks fell"]}))["model_version"]
    reference = build_reference(sample, rng.dirichlet(np.ones(len(LABELS)), len(sample)), LABELS, version)
    reference.meta["test_accuracy"] = 0.9
    metrics = MonitorMetrics()
    config = DriftConfig(window_size=20, min_window_size=20, reference_size=20, cooldown_checks=0,
                         cooldown_seconds=0, min_labelled=20, accuracy_window=40, accuracy_tolerance=0.05)
    triggers: list[Any] = []
    drift = DriftMonitor([], reference, tmp_path / "state", config, on_drift=triggers.append, metrics=metrics,
                         write_html=False)
    http = MetricsServer(metrics, 0, "127.0.0.1", routes=monitor_routes(drift.store, metrics, drift.refresh_accuracy))
    try:
        yield {"url": f"http://127.0.0.1:{http.port}", "drift": drift, "metrics": metrics, "version": version,
               "triggers": triggers, "state": tmp_path / "state"}
    finally:
        http.close()


def test_v1_and_v2_exchanges_become_records_with_the_servers_ids(server, monitor):
    url, drift = monitor["url"], monitor["drift"]
    v1_body = {"instances": texts(3, 2)}
    v1_answer = predict(server, v1_body, headers={"x-user-id": "u-1"})
    assert [s for s, _ in log_exchange(url, json.dumps(v1_body).encode(), v1_answer, user="u-1")] == [200, 200]
    v2_body = {"id": "v2-req", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                           "data": texts(2, 3)}]}
    v2_answer = predict(server, v2_body, "v2")
    replies = log_exchange(url, json.dumps(v2_body).encode(), v2_answer, endpoint="canary", response_first=True)
    assert replies[0] == (200, {"kind": "response", "duplicate": False, "records": 0})
    assert replies[1] == (200, {"kind": "request", "duplicate": False, "records": 2})
    stored = [record for _, record in drift.store.records_after(0)]
    request_id = json.loads(v1_answer)["request_id"]
    assert [r.request_id for r in stored] == [f"{request_id}#0", f"{request_id}#1", f"{request_id}#2",
                                              "v2-req#0", "v2-req#1"]
    assert [r.text for r in stored] == v1_body["instances"] + v2_body["inputs"][0]["data"]
    assert [r.label for r in stored[:3]] == [p["label"] for p in json.loads(v1_answer)["predictions"]]
    assert stored[0].user_id == "u-1" and stored[3].user_id is None
    assert [r.variant for r in stored] == ["control"] * 3 + ["treatment"] * 2, "KServe's endpoint: default/canary"
    assert all(r.model_version == monitor["version"] for r in stored)
    v2_probabilities = json.loads(v2_answer)["outputs"][1]["data"]
    assert list(stored[3].probabilities.values()) == pytest.approx(v2_probabilities[:4])
    drift.poll()
    assert monitor["metrics"].value("textclf_monitor_predictions_total", {"model_version": monitor["version"]}) == 5
    assert monitor["metrics"].value("textclf_events_total", {"type": "request", "outcome": "accepted"}) == 2


def test_structured_mode_is_read_too():
    from cloudevents.conversion import to_structured
    from cloudevents.http import CloudEvent

    event = CloudEvent({"type": REQUEST_EVENT, "source": "http://localhost:9081/", "id": "s-1",
                        "endpoint": "default", "metadata": json.dumps({"X-User-Id": ["u-9"]})},
                       {"instances": ["stocks fell"]})
    headers, body = to_structured(event)
    parsed = parse_cloudevent(headers, body)
    assert (parsed.event_id, parsed.kind, parsed.user_id, parsed.data) == ("s-1", "request", "u-9",
                                                                          {"instances": ["stocks fell"]})


def test_resent_events_and_a_restart_neither_lose_nor_double_count(server, monitor, tmp_path):
    url, drift = monitor["url"], monitor["drift"]
    exchanges = []
    for index in range(4):
        body = {"instances": texts(2, 10 + index)}
        exchanges.append((json.dumps(body).encode(), predict(server, body), f"ex-{index}"))
    log_exchange(url, *exchanges[0][:2], event_id=exchanges[0][2])
    request_only = post(url + EVENTS_PATH, exchanges[1][0], logger_headers(exchanges[1][2], REQUEST_EVENT))
    assert request_only[0] == 200
    assert log_exchange(url, *exchanges[0][:2], event_id=exchanges[0][2]) == [
        (200, {"kind": "request", "duplicate": True, "records": 0}),
        (200, {"kind": "response", "duplicate": True, "records": 0}),
    ]
    # the monitor restarts: a new store on the same file; the half exchange completes, re-sends are duplicates
    restarted = PredictionStore(monitor["state"] / STORE_FILE, drift.reference.labels)
    metrics = MonitorMetrics()
    http = MetricsServer(metrics, 0, "127.0.0.1", routes=monitor_routes(restarted, metrics))
    try:
        second = f"http://127.0.0.1:{http.port}"
        assert post(second + EVENTS_PATH, exchanges[1][1], logger_headers(exchanges[1][2], RESPONSE_EVENT)) == (
            200, {"kind": "response", "duplicate": False, "records": 2})
        for body, answer, event_id in exchanges:
            log_exchange(second, body, answer, event_id=event_id)
    finally:
        http.close()
    ids = [record.request_id for _, record in restarted.records_after(0)]
    assert len(ids) == len(set(ids)) == 8
    assert restarted.unjoined_events() == 0
    assert metrics.value("textclf_events_total", {"type": "request", "outcome": "duplicate"}) == 2


def test_malformed_events_get_a_clear_error_and_are_counted(server, monitor):
    url, metrics = monitor["url"], monitor["metrics"]
    not_an_event = post(url + EVENTS_PATH, b'{"instances": ["x"]}', {"Content-Type": "application/json"})
    assert not_an_event[0] == 400 and "not a CloudEvent" in not_an_event[1]["error"]
    wrong_type = post(url + EVENTS_PATH, b"{}", {**logger_headers("w-1", REQUEST_EVENT), "Ce-Type": "com.example"})
    assert wrong_type[0] == 400 and "not one of KServe's logger types" in wrong_type[1]["error"]
    not_json = post(url + EVENTS_PATH, b"\x00\x01binary", {**logger_headers("b-1", REQUEST_EVENT),
                                                           "Content-Type": "application/octet-stream"})
    assert not_json[0] == 400 and "not JSON" in not_json[1]["error"]
    body = {"instances": texts(2, 5)}
    answer = json.loads(predict(server, body))
    answer["predictions"] = answer["predictions"][:1]
    replies = log_exchange(url, json.dumps(body).encode(), json.dumps(answer).encode(), event_id="short")
    assert replies[1][0] == 422 and "2 texts in the request, 1 answers" in replies[1][1]["error"]
    assert metrics.value("textclf_events_total", {"type": "unknown", "outcome": "malformed"}) == 3
    assert metrics.value("textclf_events_total", {"type": "response", "outcome": "malformed"}) == 1
    assert monitor["drift"].store.prediction_count() == 0
    with pytest.raises(MalformedEvent, match='neither "instances"'):
        request_texts({"nothing": 1})


def test_feedback_joins_labels_and_refuses_bad_ones(server, monitor):
    url, metrics = monitor["url"], monitor["metrics"]
    body = {"instances": texts(3, 7)}
    answer = json.loads(predict(server, body, headers={"x-request-id": "fb-1"}))
    log_exchange(url, json.dumps(body).encode(), json.dumps(answer).encode())
    truth = answer["predictions"][0]["label"]
    assert post(url + FEEDBACK_PATH, json.dumps({"request_id": "fb-1#0", "true_label": truth}).encode(), {}) == (
        200, {"accepted": 1, "refused": []})
    cases = [
        ({"request_id": "fb-1#0", "true_label": truth}, 409, "already has the label"),
        ({"request_id": "nope", "true_label": truth}, 404, "no prediction with request_id 'nope'"),
        ({"request_id": "fb-1#1", "true_label": "Weather"}, 422, "not one of the model's classes"),
        ({"request_id": "fb-1#1"}, 400, "'true_label' must be a non-empty string"),
    ]
    for item, status, message in cases:
        code, reply = post(url + FEEDBACK_PATH, json.dumps(item).encode(), {})
        assert code == status and message in reply["error"], (item, code, reply)
    garbage = post(url + FEEDBACK_PATH, b"{not json", {})
    assert garbage[0] == 400 and "neither JSON nor JSON lines" in garbage[1]["error"]
    lines = "\n".join(json.dumps(item) for item in [{"request_id": "fb-1#1", "true_label": truth},
                                                     {"request_id": "fb-1#2", "label": truth},
                                                     {"request_id": "ghost", "true_label": truth}])
    code, reply = post(url + FEEDBACK_PATH, lines.encode(), {"Content-Type": "application/x-ndjson"})
    assert code == 200 and reply["accepted"] == 2
    assert [(r["index"], r["outcome"]) for r in reply["refused"]] == [(2, "unknown_id")]
    expected = {"accepted": 3, "duplicate": 1, "unknown_id": 2, "bad_label": 1, "malformed": 2}
    assert {k: metrics.value("textclf_feedback_total", {"outcome": k}) for k in expected} == expected
    correct = sum(p["label"] == truth for p in answer["predictions"])
    assert metrics.value("textclf_live_labelled", {"model_version": monitor["version"]}) == 3
    assert metrics.value("textclf_live_accuracy", {"model_version": monitor["version"]}) == pytest.approx(correct / 3)
    assert get(url + AB_PATH + "?control=a")[0] == 400


def test_accuracy_drop_triggers_like_drift_and_ab_report_reads_the_store(server, monitor):
    """Wrong labels on the production model's predictions: the next check adds a drifted ``accuracy`` signal
    (exact binomial test against baseline - tolerance), and on_drift is called with that check."""
    url, drift = monitor["url"], monitor["drift"]
    body = {"instances": texts(8, 20)}
    for index in range(4):
        answer = predict(server, body, headers={"x-request-id": f"acc-{index}"})
        log_exchange(url, json.dumps(body).encode(), answer, endpoint="default" if index % 2 else "canary")
        labels = [p["label"] for p in json.loads(answer)["predictions"]]
        wrong = [next(name for name in drift.reference.labels if name != label) for label in labels]
        items = [{"request_id": f"acc-{index}#{i}", "true_label": truth} for i, truth in enumerate(wrong)]
        assert post(url + FEEDBACK_PATH, json.dumps(items).encode(), {})[1]["accepted"] == 8
    results = drift.poll()
    assert len(results) == 1 and monitor["triggers"] == results
    accuracy = next(s for s in results[0].signals if s.name == "accuracy")
    assert accuracy.drifted and accuracy.current == {"accuracy": 0.0, "labelled": 32.0}
    assert results[0].drift_detected and "accuracy" in results[0].drifted_signals
    saved = json.loads((monitor["state"] / "checks" / f"{results[0].check_id}.json").read_text())
    assert any(s["name"] == "accuracy" and s["drifted"] for s in saved["signals"]), "the same decision record"
    assert monitor["metrics"].value("textclf_accuracy_drop_detected") == 1
    assert monitor["metrics"].value("textclf_accuracy_baseline") == 0.9
    version = monitor["version"]
    code, report = get(f"{url}{AB_PATH}?control={version}&treatment=other-version")
    assert code == 200 and report["variants"]["treatment"]["labelled"] == 16
    assert report["variants"]["control"]["accuracy"] == 0.0
    later = urllib.parse.quote("2999-01-01T00:00:00+00:00")
    assert get(f"{url}{AB_PATH}?control={version}&treatment=other-version&since={later}")[0] == 404
    earlier = "2000-01-01T00:00:00"
    assert get(f"{url}{AB_PATH}?control={version}&treatment=other-version&since={earlier}")[1] == report
    bad = get(f"{url}{AB_PATH}?control={version}&treatment=other-version&since=yesterday")
    assert bad[0] == 400 and "not an ISO-8601 time" in bad[1]["error"]


def test_file_log_predictions_go_through_the_store_once(server, tmp_path):
    """One machine: the request log's lines are stored (so feedback joins them) and windows come from the store;
    re-reading the log after a lost state does not store a line twice."""
    from test_serving import LABELS

    body = {"instances": texts(5, 30)}
    predict(server, body, headers={"x-request-id": "file-1"})
    lines = []
    for _ in range(100):
        lines = [json.loads(line) for line in server.logged()]
        if any(line.get("request_id") == "file-1#4" for line in lines):
            break
        time.sleep(0.1)
    reference = build_reference(texts(40, 31), np.full((40, 4), 0.25), LABELS, "v")
    config = DriftConfig(window_size=20, min_window_size=20, reference_size=20)
    state = tmp_path / "state"
    first = DriftMonitor(server.request_log, reference, state, config, write_html=False)
    first.poll()
    (state / "state.json").unlink()  # the read positions are lost: the whole log is read again
    again = DriftMonitor(server.request_log, reference, state, config, write_html=False)
    again.poll()
    ids = [record.request_id for _, record in again.store.records_after(0)]
    assert len(ids) == len(set(ids)) == len(lines) and "file-1#4" in ids
    assert again.store.add_feedback("file-1#4", LABELS[0]).true_label == LABELS[0]


def test_feedback_cli_imports_a_labels_file(tmp_path, capsys):
    from deploy_fakes import run_cli

    from textclf.serving.request_log import RequestRecord

    state = tmp_path / "state"
    store = PredictionStore(state / STORE_FILE)
    store.add_records([RequestRecord(label="World", probabilities={"World": 0.9, "Sports": 0.1}, request_id=f"r{i}",
                                     model_version="v1", text=f"t{i}") for i in range(3)])
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps(row) for row in [
        {"request_id": "r0", "true_label": "World"}, {"request_id": "r1", "true_label": "Sports"},
        {"request_id": "r2", "true_label": "Weather"}, {"request_id": "zz", "true_label": "World"}]) + "\n")
    assert run_cli(["feedback", str(labels), "--state-dir", str(state)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["outcomes"] == {"accepted": 2, "malformed": 0, "bad_label": 1, "unknown_id": 1}
    assert [(item.prediction_id, item.correct) for item in store.labelled()] == [("r0", True), ("r1", False)]
    assert run_cli(["feedback", str(labels), "--state-dir", str(tmp_path / "nowhere")]) == 2
    assert "must be a monitor's state directory" in capsys.readouterr().err


def test_the_monitor_follows_a_published_reference(tmp_path):
    """The retraining pipeline publishes the promoted model's reference at the monitor's --reference; the monitor
    re-reads its fingerprint and switches (new detector, cooldown reset, the new model's test accuracy as the
    baseline) without a restart. An unreadable reference there keeps the current one."""
    from test_serving import LABELS

    from textclf.monitor.reference import publish_reference, reference_fingerprint_at, test_accuracy_of

    source = tmp_path / "reference"
    old = build_reference(texts(40, 40), np.full((40, 4), 0.25), LABELS, "v1")
    old.meta["test_accuracy"] = 0.8
    publish_reference(old, str(source))
    clock = {"now": 1000.0}
    config = DriftConfig(window_size=20, min_window_size=20, reference_size=20)
    monitor = DriftMonitor([], old, tmp_path / "state", config, write_html=False, reference_source=str(source),
                           reference_check_seconds=30, clock=lambda: clock["now"])
    monitor.state.cooldown = {"last_trigger_unix": 999.0, "checks_since_trigger": 0}
    new = build_reference(texts(40, 41), np.full((40, 4), 0.25), LABELS, "v2")
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.91}}))
    new.meta["test_accuracy"] = test_accuracy_of(evaluation)
    publish_reference(new, str(source))
    assert reference_fingerprint_at(source) == new.fingerprint != old.fingerprint
    monitor.poll()
    assert monitor.reference.model_version == "v1", "checked only every reference_check_seconds"
    clock["now"] += 31
    monitor.poll()
    assert monitor.reference.model_version == "v2" and monitor.detector.reference is monitor.reference
    assert monitor.accuracy_baseline == 0.91 and monitor.state.cooldown == {}
    assert json.loads((tmp_path / "state" / "state.json").read_text())["reference_fingerprint"] == new.fingerprint
    (source / "reference.json").write_text("{broken")
    assert monitor.reload_reference_if_changed() is False and monitor.reference.model_version == "v2"
    with pytest.raises(Exception, match="no test accuracy"):
        test_accuracy_of(tmp_path)
