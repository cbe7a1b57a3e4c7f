"""``make loop``'s own pieces (the pipeline, monitor, trigger and gate it strings together are tested in their own
modules; the whole demo is run by ``make loop``)."""

from __future__ import annotations

import pytest
from conftest import AG_NEWS, ARXIV_CS, requires_ag_news

from textclf.errors import ConfigError
from textclf.loop import LoopConfig, Timeline, traffic, write_new_rows

requires_arxiv = pytest.mark.skipif(not (ARXIV_CS / "test.csv.gz").is_file(), reason="arXiv CS data not found")


@requires_ag_news
@requires_arxiv
def test_shifted_traffic_mixes_arxiv_abstracts_and_shifts_the_class_prior():
    config = LoopConfig(dataset_uri=str(AG_NEWS), shift_dataset_uri=str(ARXIV_CS), window=200, arxiv_share=0.25)
    iid, shifted = traffic(config)
    assert len(iid) == len(shifted) == 200 and not set(iid) & set(shifted)
    import pandas as pd

    test = pd.read_csv(AG_NEWS / "test.csv.gz", dtype=str, keep_default_na=False)
    names = dict(zip((test["title"].str.strip() + " " + test["description"].str.strip()).str.strip(), test["label"],
                     strict=False))
    from_ag_news = [names[text] for text in shifted if text in names]
    assert len(from_ag_news) == 150  # 25% of the window came from arXiv
    assert set(from_ag_news) <= {"3", "4"}  # Business and Sci/Tech only
    assert len({names.get(text) for text in iid}) == 4


@requires_ag_news
def test_new_rows_are_real_labelled_training_rows(tmp_path):
    config = LoopConfig(dataset_uri=str(AG_NEWS), shift_dataset_uri=str(ARXIV_CS), new_rows=50)
    import pandas as pd

    frame = pd.read_csv(write_new_rows(config, tmp_path / "new") / "train.csv.gz", dtype=str)
    assert list(frame.columns) == ["label", "title", "description"] and len(frame) == 50


def test_loop_config_names_a_missing_dataset(tmp_path):
    with pytest.raises(ConfigError, match="dataset_uri: no test.csv.gz"):
        LoopConfig(dataset_uri=str(tmp_path), shift_dataset_uri=str(tmp_path))


def test_timeline_renders_in_order(capsys):
    timeline = Timeline()
    timeline.add("first")
    timeline.add("second", run="r1")
    assert [event["event"] for event in timeline.events] == ["first", "second"]
    assert "first" in capsys.readouterr().out and timeline.render().splitlines()[1].endswith("second")


# --- the cluster path's pieces -------------------------------------------------------------------------------------


def canary_isvc(kube_state, percent: int = 30):
    """The InferenceService in a stand-in whose revisions wait for mark_ready, then a canary patch applied."""
    from textclf.localcluster import KubeRequest, answer

    kube_state.put("ns", {"metadata": {"name": "textclf"},
                          "spec": {"predictor": {"model": {"storageUri": "pvc://r/versions/v1.0.0/onnx_model/"}}}})
    patch = {"spec": {"predictor": {"canaryTrafficPercent": percent,
                                    "model": {"storageUri": "pvc://r/versions/v1.1.0/onnx_model/"}}}}
    status, body = answer(kube_state, KubeRequest("PATCH", "/apis/serving.kserve.io/v1beta1/namespaces/ns/"
                                                  "inferenceservices/textclf", {}, "application/merge-patch+json",
                                                  patch))
    assert status == 200
    return body


def test_new_revision_waits_for_the_controller_hook_then_gets_the_canary_share():
    from textclf.localcluster import LocalKubeState, predictor_status

    state = LocalKubeState(revisions_get_ready=False)
    patched = predictor_status(canary_isvc(state))
    assert patched["latestCreatedRevision"] == "textclf-predictor-00002"
    assert patched["latestReadyRevision"] == "textclf-predictor-00001"
    assert patched["traffic"] == [{"revisionName": "textclf-predictor-00001", "percent": 100, "latestRevision": True}]
    version = state.get("ns", "textclf")["metadata"]["resourceVersion"]

    assert state.mark_ready("ns", "textclf", "textclf-predictor-00002")
    ready = state.get("ns", "textclf")
    assert ready["metadata"]["resourceVersion"] != version  # a status update is a write
    assert [(t["revisionName"], t["percent"]) for t in predictor_status(ready)["traffic"]] == [
        ("textclf-predictor-00002", 30), ("textclf-predictor-00001", 70)]
    assert not state.mark_ready("ns", "textclf", "textclf-predictor-00002")  # already ready
    assert not state.mark_ready("ns", "textclf", "textclf-predictor-00001")  # not the latest created


def test_users_are_routed_by_key_and_stay_on_their_revision():
    from textclf.localcluster import revision_for
    from textclf.monitor.abtest import assign_variant

    split = [{"revisionName": "isvc-predictor-00002", "percent": 30, "tag": "latest", "latestRevision": True},
             {"revisionName": "isvc-predictor-00001", "percent": 70, "tag": "prev", "latestRevision": False}]
    users = [f"user-{i}" for i in range(2000)]
    routed = {user: revision_for(split, user) for user in users}
    canary = [user for user, revision in routed.items() if revision == "isvc-predictor-00002"]
    assert 0.25 < len(canary) / len(users) < 0.35
    assert all((assign_variant(user, 30) == "treatment") == (user in canary) for user in users)
    assert all(revision_for(split, user) == routed[user] for user in users[:100])  # sticky
    assert revision_for([{"revisionName": "only", "percent": 100, "latestRevision": True}], "user-1") == "only"
    with pytest.raises(ValueError, match="no revision receives traffic"):
        revision_for([], "user-1")


def test_feedback_body_holds_the_labelled_requests_by_request_id():
    from textclf.loop import Sent, feedback_body

    sent = [Sent("r1", "user-1", "rev-1", "World", "abc-def", "Sports"),
            Sent("r2", "user-2", "rev-2", "Business", "abc-123", None)]
    assert feedback_body(sent) == [{"request_id": "r1", "true_label": "Sports"}]


def test_labels_are_fed_back_to_the_monitors_api(tmp_path):
    from textclf.loop import Sent, feed_back
    from textclf.monitor.endpoints import monitor_routes
    from textclf.monitor.metrics import MetricsServer, MonitorMetrics
    from textclf.monitor.store import PredictionStore
    from textclf.serving.request_log import RequestRecord

    labels = ("World", "Sports", "Business", "Sci/Tech")
    store = PredictionStore(tmp_path / "predictions.sqlite", labels)
    store.add_records([RequestRecord(timestamp="2025-01-01T00:00:00Z", text="t", label="World",
                                     probabilities=dict.fromkeys(labels, 0.25), model_version="m1",
                                     request_id="r1")])
    metrics = MonitorMetrics()
    http = MetricsServer(metrics, 0, "127.0.0.1", routes=monitor_routes(store, metrics))
    try:
        answer = feed_back(f"http://127.0.0.1:{http.port}", [Sent("r1", "u", "rev", "World", "m1", "Sports"),
                                                             Sent("r9", "u", "rev", "World", "m1", "World"),
                                                             Sent("r3", "u", "rev", "World", "m1", None)])
    finally:
        http.close()
    assert answer["accepted"] == 1 and [r["outcome"] for r in answer["refused"]] == ["unknown_id"]
    assert [(item.prediction_id, item.true_label) for item in store.labelled()] == [("r1", "Sports")]


def test_users_take_turns_and_arxiv_rows_carry_no_label():
    import pandas as pd
    from textclf.loop import with_users

    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["World", None, "Sports"]})
    requests = with_users(frame, users=2, start=3)
    assert [(r.user, r.true_label) for r in requests] == [("user-1", "World"), ("user-0", None), ("user-1", "Sports")]
    assert all(r.true_label is None for r in with_users(frame, users=2, labelled=False))


def test_storage_uri_maps_to_the_local_registry_and_the_server_gets_the_runtime_args(tmp_path):
    from textclf.loop import local_model_dir, precision_of, predictor_command

    assert local_model_dir("pvc://claim/registry/versions/v1.0.0/onnx_model/", "pvc://claim/registry",
                           tmp_path) == tmp_path / "versions/v1.0.0/onnx_model"
    with pytest.raises(ConfigError, match="not below"):
        local_model_dir("s3://bucket/x/", "pvc://claim/registry", tmp_path)
    command = predictor_command({"args": ["--precision=fp32"]}, "textclf", tmp_path / "bundle", tmp_path / "r.jsonl")
    assert command[1:3] == ("-m", "textclf.serving") and "--model-name=textclf" in command
    assert command.index("--precision=fp32") > command.index("--precision=int8")  # the ISVC's args come later
    assert precision_of(command) == "fp32"
    assert command[-4:] == (f"--model-dir={tmp_path / 'bundle'}", "--no-grpc", f"--request-log={tmp_path / 'r.jsonl'}",
                            "--http-port={port}")
    from textclf.serving.__main__ import build_parser, parse_command_line

    config, _ = parse_command_line(build_parser(), [arg.replace("{port}", "1234") for arg in command[3:]])
    assert (config.model_dir, config.precision.value, config.http_port, config.enable_grpc, config.request_log) == (
        str(tmp_path / "bundle"), "fp32", 1234, False, tmp_path / "r.jsonl")  # the server reads the later flags


def test_rollout_asks_the_monitor_for_the_versions_the_servers_log(tmp_path):
    """rollout_op names each model by the version its predictor answers with (the bundle's), not the registry id."""
    import json

    from test_registry import make_run
    from textclf.provenance import write_json
    from textclf.registry import ModelRegistry
    from textclf.rollout.rollout import served_model_version
    from textclf.serving.bundle import ExportBundle
    from textclf.serving.config import Precision

    dirs = make_run(tmp_path / "run")
    metadata_file = dirs.onnx_model / "export_metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["files"] = {"model.onnx": "1" * 64, "model.int8.onnx": "2" * 64}
    write_json(metadata_file, metadata)
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.register(dirs, version="v1.0.0")
    bundle = ExportBundle(tmp_path, (), 0, "abc123", metadata["files"])
    assert served_model_version(registry, version) == bundle.model_version(Precision.INT8) == "abc123-222222222222"
    assert served_model_version(registry, version, "fp32") == "abc123-111111111111"
