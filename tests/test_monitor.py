"""Drift monitor (``textclf.monitor``) on real AG News windows, its service, metrics, CLI, component and manifests.

The production model of most tests is a small scikit-learn classifier (hashed words + logistic regression) trained
here on AG News train rows in a second: the detector only sees texts, predicted labels and probabilities, so any
classifier exercises it, and no transformer has to be trained. The reference is built from *other* train rows
(as the real reference uses held-out validation rows first). The ``slow`` test builds a reference with the exported
tiny transformer (``exported_tiny_model``) through the serving engine.
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ARXIV_CS, requires_ag_news
from test_manifests import MANIFESTS, core_errors, render

from textclf.errors import ConfigError, DataValidationError, ObjectNotFoundError, TextclfError
from textclf.monitor import Cooldown, DriftDetector, DriftResult, SignalResult
from textclf.monitor.config import SIGNALS, DriftConfig
from textclf.monitor.reference import build_reference, load_reference, save_reference
from textclf.monitor.result import drift_score

LABELS = ("World", "Sports", "Business", "Sci/Tech")
pytestmark = requires_ag_news


# --- data and a stand-in production model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def news(ag_news_frames) -> dict[str, pd.DataFrame]:
    def frame(raw: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"text": (raw["title"] + " " + raw["description"]).to_numpy(),
                             "true": [LABELS[int(v) - 1] for v in raw["label"]]})

    train = frame(ag_news_frames["train"]).sample(n=11000, random_state=0).reset_index(drop=True)
    return {"fit": train.iloc[:8000], "reference": train.iloc[8000:], "test": frame(ag_news_frames["test"])}


@pytest.fixture(scope="module")
def arxiv() -> pd.DataFrame:
    path = ARXIV_CS / "test.csv.gz"
    if not path.is_file():
        pytest.skip(f"arXiv CS abstracts not found at {path}")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False).sample(n=1500, random_state=0)
    return pd.DataFrame({"text": (raw["title"] + " " + raw["abstract"]).to_numpy(), "true": "arXiv"})


@pytest.fixture(scope="module")
def model(news):
    """Stand-in production model: ``texts -> probabilities [n, 4]`` in LABELS order."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    from textclf.text import normalise_text

    pipeline = make_pipeline(HashingVectorizer(n_features=2**18, alternate_sign=False, preprocessor=normalise_text),
                             SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=15, tol=None, random_state=0))
    pipeline.fit(news["fit"]["text"], news["fit"]["true"])
    order = [list(pipeline.classes_).index(label) for label in LABELS]
    return lambda texts: pipeline.predict_proba(list(texts))[:, order]


@pytest.fixture(scope="module")
def reference(news, model):
    texts = news["reference"]["text"].tolist()
    return build_reference(texts, model(texts), LABELS, model_version="sklearn-test-1", source={"test": True})


@pytest.fixture(scope="module")
def detector(reference):
    return DriftDetector(reference, DriftConfig())


def predicted(frame: pd.DataFrame, model) -> pd.DataFrame:
    probabilities = model(frame["text"])
    return pd.DataFrame({"text": frame["text"].to_numpy(),
                         "label": np.asarray(LABELS, dtype=object)[probabilities.argmax(1)],
                         "confidence": probabilities.max(1), "probabilities": list(probabilities)})


def iid_window(news, model, n: int, seed: int) -> pd.DataFrame:
    return predicted(news["test"].sample(n=n, random_state=seed), model)


def shifted_window(news, arxiv, model, n: int, seed: int, arxiv_share: float = 0.3) -> pd.DataFrame:
    """``arxiv_share`` arXiv abstracts + AG News test rows, mostly Sci/Tech and Business."""
    rng = np.random.default_rng(seed)
    n_arxiv = int(round(n * arxiv_share))
    counts = rng.multinomial(n - n_arxiv, [0.10, 0.10, 0.35, 0.45])
    test = news["test"]
    parts = [test[test["true"] == label].sample(n=int(k), random_state=seed) for label, k in zip(LABELS, counts)]
    parts.append(arxiv.sample(n=n_arxiv, random_state=seed))
    return predicted(pd.concat(parts).sample(frac=1.0, random_state=seed), model)


def write_log(path: Path, window: pd.DataFrame, start: datetime | None = None, step_seconds: float = 0.0,
              version: str = "sklearn-test-1") -> None:
    """Append ``window`` to a request log in the serving format (``textclf.serving.request_log``)."""
    start = start or datetime.now(timezone.utc)
    with open(path, "a", encoding="utf-8") as handle:
        for i, row in enumerate(window.itertuples()):
            stamp = (start + timedelta(seconds=i * step_seconds)).isoformat()
            handle.write(json.dumps({"timestamp": stamp, "text": row.text, "label": row.label,
                                     "probabilities": dict(zip(LABELS, map(float, row.probabilities))),
                                     "model_version": version}) + "\n")


def serving_log(path: Path, window: pd.DataFrame, max_bytes: int, backups: int = 20) -> None:
    """Write ``window`` with the model server's own ``RequestLog`` (size-rotated JSON lines)."""
    from textclf.serving.request_log import RequestLog

    request_log = RequestLog(path, max_bytes=max_bytes, backups=backups)
    for start in range(0, len(window), 16):  # requests of 16 texts, as the server logs them
        batch = window.iloc[start:start + 16]
        request_log.record(batch["text"].tolist(), batch["label"].tolist(), np.stack(batch["probabilities"]),
                           LABELS, "sklearn-test-1")
    request_log.close()


# --- the detector on real windows -------------------------------------------------------------------------------


def test_iid_windows_do_not_drift(detector, news, model):
    for seed, n in [(1, 500), (2, 500), (3, 500), (4, 1000), (5, 250)]:
        result = detector.check(iid_window(news, model, n, seed))
        assert not result.drift_detected, result.summary()
        assert result.drift_score < 1 and result.drifted_share == 0
        assert [s.name for s in result.signals] == list(SIGNALS)
        for signal in result.signals:
            assert signal.p_value >= signal.threshold == pytest.approx(0.01 / len(SIGNALS))


def test_shifted_windows_drift_in_every_kind_of_signal(detector, news, arxiv, model):
    for seed in (11, 12, 13):
        result = detector.check(shifted_window(news, arxiv, model, 500, seed))
        assert result.drift_detected and result.drift_score >= 1, result.summary()
        assert {"label", "text", "n_words", "oov_share"} <= set(result.drifted_signals), result.summary()
        assert result.drifted_share == pytest.approx(len(result.drifted_signals) / len(SIGNALS))
        assert result.signal("text").statistic > 0.55  # the domain classifier's ROC AUC
        assert result.signal("label").current["Sci/Tech"] > result.signal("label").reference["Sci/Tech"]
    prior_only = detector.check(shifted_window(news, arxiv, model, 500, 14, arxiv_share=0.0))
    assert prior_only.drift_detected and "label" in prior_only.drifted_signals, prior_only.summary()


def test_result_json_and_self_contained_html(detector, news, arxiv, model, tmp_path):
    result = detector.check(shifted_window(news, arxiv, model, 300, 21))
    json_path, html_path = result.save(tmp_path)
    payload = json.loads(json_path.read_text())
    assert payload["drift_detected"] is True and payload["window_rows"] == 300
    assert payload["reference_model_version"] == "sklearn-test-1" and payload["rule"].startswith("drift if any")
    assert {s["name"] for s in payload["signals"]} == set(SIGNALS)
    assert DriftResult.from_dict(payload).drifted_signals == result.drifted_signals
    page = html_path.read_text()
    assert "textclf drift check" in page and "DRIFT DETECTED" in page
    assert "<script src=\"http" not in page and "<link rel=\"stylesheet\" href=\"http" not in page  # self-contained
    assert len(page) > 100_000  # Evidently's report with its inlined JS


def test_bad_inputs_raise_clear_errors(detector, reference, news, model, tmp_path):
    with pytest.raises(DataValidationError, match=r"window has 50 rows, fewer than min_window_size=200"):
        detector.check(iid_window(news, model, 50, 1))
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['confidence'\]"):
        detector.check(iid_window(news, model, 300, 1).drop(columns="confidence"))
    with pytest.raises(DataValidationError, match="cannot build a reference from 0 texts"):
        build_reference([], np.zeros((0, 4)), LABELS, "v")
    with pytest.raises(DataValidationError, match=r"shape \(2, 3\), expected \(2, 4\)"):
        build_reference(["a", "b"], np.zeros((2, 3)), LABELS, "v")
    tiny = build_reference(["one text"] * 10, np.full((10, 4), 0.25), LABELS, "v")
    with pytest.raises(DataValidationError, match="reference has 10 rows, fewer than min_window_size=200"):
        DriftDetector(tiny)
    with pytest.raises(ObjectNotFoundError, match="no drift reference here"):
        load_reference(tmp_path / "nowhere")
    saved = save_reference(reference, tmp_path / "ref")
    pd.DataFrame(columns=["text", "label", "confidence"]).to_parquet(saved / "reference.parquet")
    with pytest.raises(DataValidationError, match="the reference is empty"):
        load_reference(saved)
    for bad, message in [({"window_size": 100}, "window_size .* must be >= min_window_size"),
                         ({"alpha": 0.0}, "alpha must be in"), ({"signals": ("label", "colour")}, "unknown drift"),
                         ({"signal_alpha": {"text": 2.0}}, r"signal_alpha\['text'\]")]:
        with pytest.raises(ConfigError, match=message):
            DriftConfig(**bad)


def test_reference_round_trip(reference, tmp_path):
    loaded = load_reference(save_reference(reference, tmp_path / "reference"))
    assert loaded.rows == reference.rows == 3000 and loaded.labels == LABELS
    assert loaded.model_version == "sklearn-test-1" and loaded.fingerprint == reference.fingerprint
    assert (loaded.frame["confidence"].between(0.25, 1.0)).all()
    # leave-one-out OOV: the reference's own out-of-vocabulary share is not zero by construction
    assert 0.0 < loaded.descriptors["oov_share"].mean() < 0.2


# --- cooldown ---------------------------------------------------------------------------------------------------


def fake_result(drift: bool, check_id: str) -> DriftResult:
    p_value = 1e-9 if drift else 0.5
    signal = SignalResult("label", "chi2", p_value, 0.001, drift)
    return DriftResult(check_id=check_id, checked_at="", window_rows=500, reference_rows=5000, drift_detected=drift,
                       drift_score=drift_score([signal]), drifted_share=float(drift), signals=[signal])


def test_cooldown_counts_checks_and_seconds():
    config = DriftConfig(cooldown_checks=2, cooldown_seconds=600)
    cooldown = Cooldown()
    timeline = [  # (seconds, drift?, expected: triggered, cooling down)
        (0, True, True, False),      # first drift triggers
        (60, True, False, True),     # 1 check, 60 s later: cooling down
        (120, False, False, False),  # no drift (still counts as a check)
        (180, True, False, True),    # 3 checks later, but only 180 s: seconds still block
        (700, True, True, False),    # > 2 checks and > 600 s: triggers again
        (710, True, False, True),
    ]
    for index, (now, drift, triggered, cooling) in enumerate(timeline):
        result = cooldown.apply(fake_result(drift, f"c{index}"), config, now=now)
        assert (result.triggered, result.cooling_down) == (triggered, cooling), (index, result.cooldown)
    assert cooldown.last_trigger_check == "c4" and cooldown.checks_since_trigger == 1
    assert Cooldown.from_dict(cooldown.to_dict()) == cooldown
    assert fake_result(True, "x").drift_score == pytest.approx(3.0)  # log(1e-9) / log(1e-3)


# --- the service ------------------------------------------------------------------------------------------------


def monitor_for(log_path, reference, state_dir, triggers, clock=None, **config):
    from textclf.monitor.metrics import MonitorMetrics
    from textclf.monitor.service import DriftMonitor

    settings = {"window_size": 400, "min_window_size": 200, "cooldown_checks": 1, "cooldown_seconds": 0, **config}
    return DriftMonitor(log_path, reference, state_dir, DriftConfig(**settings), on_drift=triggers.append,
                        metrics=MonitorMetrics(), write_html=False, **({"clock": clock} if clock else {}))


def test_service_follows_rotation_skips_malformed_lines_and_resumes(reference, news, arxiv, model, tmp_path):
    from textclf.monitor.service import MonitorState

    log_path, state_dir, triggers = tmp_path / "logs" / "requests.jsonl", tmp_path / "state", []
    iid = iid_window(news, model, 500, 31)
    shifted = shifted_window(news, arxiv, model, 500, 32)
    serving_log(log_path, iid, max_bytes=60_000)
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write("{not json\n" + json.dumps({"text": "", "label": "World"}) + "\n")
    assert log_path.with_name("requests.jsonl.1").is_file(), "the log should have rotated already"

    first = monitor_for(log_path, reference, state_dir, triggers)
    (result,) = first.poll()
    assert not result.drift_detected and result.window_rows == 400 and result.malformed_lines == 2
    assert len(first.state.pending) == 100 and first.metrics.value("textclf_drift_malformed_log_lines_total") == 2
    del first  # "killed": only state.json survives

    serving_log(log_path, shifted, max_bytes=60_000)  # keeps rotating while the monitor is down
    second = monitor_for(log_path, reference, state_dir, triggers)
    assert len(second.state.pending) == 100
    (result,) = second.poll()
    assert result.drift_detected and result.triggered and triggers == [result]
    assert second.poll() == []  # nothing new
    state = MonitorState.load(state_dir / "state.json")
    assert state.rows_read == 1000 and state.malformed_lines == 2 and state.checks == 2 and state.triggers == 1
    assert [row["x"] for row in state.pending] == shifted["text"].tolist()[-200:]  # no row lost or read twice
    checks = sorted(p.name for p in (state_dir / "checks").glob("*.json"))
    assert len(checks) == 2 and checks[-1] == f"{result.check_id}.json" == f"{state.last_check_id}.json"


def test_service_cooldown_and_failing_trigger(reference, news, arxiv, model, tmp_path):
    log_path, triggers = tmp_path / "requests.jsonl", []
    for seed in (41, 42, 43):
        write_log(log_path, shifted_window(news, arxiv, model, 200, seed))
    monitor = monitor_for(log_path, reference, tmp_path / "state", triggers, window_size=200, cooldown_checks=1)
    results = monitor.poll()
    assert [(r.drift_detected, r.triggered, r.cooling_down) for r in results] == [
        (True, True, False), (True, False, True), (True, True, False)]
    assert len(triggers) == 2 and monitor.metrics.value("textclf_drift_triggers_total") == 2

    def broken(result):
        raise RuntimeError("KFP API unreachable")

    monitor.on_drift = broken
    monitor.cooldown = Cooldown()  # as if the cooldown had passed
    write_log(log_path, shifted_window(news, arxiv, model, 200, 44))
    (failed,) = monitor.poll()
    assert failed.drift_detected and not failed.triggered
    assert failed.trigger_error == "RuntimeError: KFP API unreachable"
    assert monitor.cooldown.last_trigger_unix is None  # not started: the next drift triggers again
    saved = json.loads((tmp_path / "state" / "checks" / f"{failed.check_id}.json").read_text())
    assert saved["trigger_error"] == failed.trigger_error
    assert monitor.metrics.value("textclf_drift_trigger_failures_total") == 1


def test_service_time_windows(reference, news, model, tmp_path):
    log_path, triggers = tmp_path / "requests.jsonl", []
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    write_log(log_path, iid_window(news, model, 250, 51), start=start, step_seconds=1.0)  # 250 rows in 250 s
    now = {"t": start.timestamp() + 250}
    monitor = monitor_for(log_path, reference, tmp_path / "state", triggers, clock=lambda: now["t"],
                          window_size=1000, window_seconds=600)
    assert monitor.poll() == [] and len(monitor.state.pending) == 250  # not 600 s old yet
    now["t"] = start.timestamp() + 700
    (result,) = monitor.poll()
    assert result.window_rows == 250 and monitor.state.pending == []
    # A late row closes the window before it, once the window has min_window_size rows.
    write_log(log_path, iid_window(news, model, 220, 52), start=start + timedelta(seconds=1000), step_seconds=1.0)
    write_log(log_path, iid_window(news, model, 5, 53), start=start + timedelta(seconds=1700))
    (result,) = monitor.poll()
    assert result.window_rows == 220 and len(monitor.state.pending) == 5


def test_missing_log_is_an_error_once_and_awaited_in_the_loop(reference, tmp_path):
    monitor = monitor_for(tmp_path / "missing.jsonl", reference, tmp_path / "state", [])
    with pytest.raises(ObjectNotFoundError, match=r"request log not found: .*missing\.jsonl"):
        monitor.poll()
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run_forever, args=(0.05, stop))
    thread.start()
    stop.wait(0.3)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and monitor.ready() and monitor.live()


def test_metrics_gauges_and_http_endpoints(detector, reference, news, arxiv, model, tmp_path):
    from textclf.monitor.metrics import MetricsServer, MonitorMetrics

    metrics = MonitorMetrics()
    metrics.observe_check(detector.check(shifted_window(news, arxiv, model, 300, 61)))
    assert metrics.value("textclf_drift_score") >= 1
    assert 0 < metrics.value("textclf_drift_share_drifted_features") <= 1
    assert metrics.value("textclf_drift_last_check_timestamp_seconds") > 1.7e9
    assert metrics.value("textclf_drift_signal_p_value", {"signal": "label"}) < 1e-3
    assert metrics.value("textclf_drift_checks_total", {"outcome": "drift"}) == 1
    healthy = {"live": True}
    server = MetricsServer(metrics, 0, "127.0.0.1", live=lambda: healthy["live"])
    try:
        base = f"http://127.0.0.1:{server.port}"
        body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "textclf_drift_score " in body and "textclf_drift_share_drifted_features" in body
        assert urllib.request.urlopen(f"{base}/healthz/ready", timeout=5).status == 200
        healthy["live"] = False
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(f"{base}/healthz/live", timeout=5)
    finally:
        server.close()


# --- CLI, component, manifests ----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    from textclf.cli.monitor import add_bench_drift_command, add_monitor_commands

    root = argparse.ArgumentParser(prog="textclf")
    commands = root.add_subparsers(dest="command", required=True)
    add_monitor_commands(commands)
    add_bench_drift_command(commands)
    return root


def test_cli_drift_check_and_monitor_once(reference, news, arxiv, model, tmp_path, capsys):
    ref_dir = save_reference(reference, tmp_path / "reference")
    log_path = tmp_path / "requests.jsonl"
    write_log(log_path, shifted_window(news, arxiv, model, 300, 71))
    args = parser().parse_args(["drift-check", "--request-log", str(log_path), "--reference", str(ref_dir),
                                "--output", str(tmp_path / "out"), "--rows", "300", "--fail-on-drift"])
    assert args.func(args) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["drift_detected"] and printed["window_rows"] == 300
    assert (tmp_path / "out" / "drift_result.html").is_file() and (tmp_path / "out" / "drift_result.json").is_file()

    once = ["monitor", "--request-log", str(log_path), "--reference", str(ref_dir), "--state-dir",
            str(tmp_path / "state"), "--once", "--no-html", "--trigger", "log"]
    args = parser().parse_args(once)
    assert args.func(args) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert printed["window_rows"] == 300 and printed["triggered"]
    with pytest.raises(DataValidationError, match="only 0 new request"):  # nothing new since the last run
        args.func(parser().parse_args(once))
    missing = parser().parse_args(["drift-check", "--request-log", str(tmp_path / "nope.jsonl"), "--reference",
                                   str(ref_dir), "--output", str(tmp_path / "o2")])
    with pytest.raises(TextclfError, match="request log not found"):
        missing.func(missing)
    with pytest.raises(ConfigError, match="cannot import"):
        args = parser().parse_args([*once[:-2], "--trigger", "textclf.nothing:here"])
        args.func(args)


def test_drift_check_component_under_kfp_local(reference, news, arxiv, model, tmp_path, monkeypatch):
    import os

    from kfp import dsl
    from kfp.dsl import Artifact, Dataset

    from textclf.monitor.component import drift_check_op
    from textclf.pipelines.local import init_local_runner

    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # restored after the test
    ref_dir = save_reference(reference, tmp_path / "reference")
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    write_log(log_dir / "requests.jsonl", shifted_window(news, arxiv, model, 250, 81))

    @dsl.pipeline(name="drift-check-test")
    def drift_pipeline():  # no return annotation: this module's string annotations would confuse kfp
        request_log = dsl.importer(artifact_uri=str(log_dir), artifact_class=Artifact, reimport=False)
        ref = dsl.importer(artifact_uri=str(ref_dir), artifact_class=Dataset, reimport=False)
        drift_check_op(request_log=request_log.output, reference=ref.output, rows=250)

    init_local_runner(tmp_path / "pipeline_root")
    drift_pipeline()
    html_files = list((tmp_path / "pipeline_root").rglob("report"))
    assert html_files and "textclf drift check" in html_files[0].read_text()
    (metrics_file,) = (tmp_path / "pipeline_root").rglob("executor_output.json")
    outputs = json.loads(metrics_file.read_text())
    assert outputs["parameterValues"]["window_rows"] == 250 and outputs["parameterValues"]["drift_detected"] is True
    logged = outputs["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["drift_detected"] == 1.0 and logged["p_value_label"] < 1e-3


def test_component_signatures_are_documented():
    from textclf.monitor.component import drift_check_op, drift_reference_op

    for op in (drift_check_op, drift_reference_op):
        spec = op.component_spec
        documented = op.python_func.__doc__
        for name in list(spec.inputs or {}) + list(spec.outputs or {}):
            assert name == "Output" or f"{name}:" in documented, (op.name, name)
    outputs = drift_check_op.component_spec.outputs
    assert outputs["report"].type == "system.HTML@0.0.1" and outputs["metrics"].type == "system.Metrics@0.0.1"


MONITOR = MANIFESTS / "monitor"


def test_monitor_manifests_validate_and_are_locked_down():
    resources = render(MONITOR)
    by_kind = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    assert {kind for kind, _ in by_kind} == {"ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim",
                                             "Deployment", "Service", "NetworkPolicy"}
    policy = by_kind[("NetworkPolicy", "textclf-drift-monitor")]["spec"]
    selected = by_kind[("Deployment", "textclf-drift-monitor")]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= selected.items()  # it applies to the monitor's pod
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [9090]  # its one port
    for resource in resources:
        assert core_errors(resource) == [], f"{resource['kind']} {resource['metadata']['name']}"
    deployment = by_kind[("Deployment", "textclf-drift-monitor")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    from textclf.images import COMPONENT_IMAGE

    assert container["image"] == COMPONENT_IMAGE and container["command"] == ["textclf"]
    args = parser().parse_args(container["args"])  # every flag exists
    assert args.command == "monitor" and args.metrics_port == 9090 and not args.once
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz/ready"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == args.metrics_port
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/tmp" in mounts and "/var/log/textclf" not in mounts, "events from KServe's logger, no shared log file"
    assert args.request_log == [] and str(args.state_dir).startswith("/var/lib/textclf-monitor")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {name for kind, name in by_kind if kind == "PersistentVolumeClaim"}
    (token,) = [v for v in pod["volumes"] if "projected" in v]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    # RBAC: only the KFP API resources the trigger needs; nothing on core resources, no wildcards, no writes but
    # creating runs.
    assert by_kind[("ServiceAccount", pod["serviceAccountName"])]["automountServiceAccountToken"] is False
    role = by_kind[("Role", "textclf-drift-monitor")]
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["pipelines.kubeflow.org"], rule
        assert "*" not in rule["resources"] + rule["verbs"], rule
        assert set(rule["verbs"]) <= {"get", "list", "create"}, rule
        assert "create" not in rule["verbs"] or rule["resources"] == ["runs"], rule
    binding = by_kind[("RoleBinding", "textclf-drift-monitor")]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    kustomization = yaml.safe_load((MONITOR / "kustomization.yaml").read_text())
    assert binding["subjects"][0]["namespace"] == kustomization["namespace"]
    service = by_kind[("Service", "textclf-drift-monitor")]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    # every InferenceService overlay logs to this Service's event endpoint (the cascade graph is the exception)
    from textclf.monitor.endpoints import EVENTS_PATH

    expected_url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}{EVENTS_PATH}"
    for overlay, component in (("cpu", "predictor"), ("custom-container", "predictor"), ("gpu-triton", "transformer")):
        (isvc,) = [r for r in render(MANIFESTS / "overlays" / overlay) if r["kind"] == "InferenceService"]
        logger = isvc["spec"][component]["logger"]
        assert logger == {"mode": "all", "url": expected_url, "metadataHeaders": ["X-User-Id"]}, overlay


def test_manifest_validation_catches_a_broken_deployment():
    (deployment,) = [r for r in render(MONITOR) if r["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = "yes"
    deployment["spec"]["replicaz"] = 1
    assert core_errors(deployment)


# --- the real serving model (slow) ------------------------------------------------------------------------------


@pytest.mark.slow
def test_reference_from_the_exported_model(small_splits, exported_tiny_model, news, tmp_path):
    from textclf.monitor.reference import predict_with_bundle, reference_from_splits
    from textclf.serving.bundle import load_bundle
    from textclf.serving.config import Precision

    built = reference_from_splits(small_splits, exported_tiny_model, sample_size=300, seed=3)
    assert built.rows == 300 and built.meta["source"]["rows_per_split"] == {"validation": 80, "train": 220}
    assert built.model_version == load_bundle(exported_tiny_model).model_version(Precision.INT8)
    assert built.meta["source"]["training_data_fingerprints"]["train_set_sha256"]
    loaded = load_reference(save_reference(built, tmp_path / "reference"))
    texts = news["test"].sample(n=300, random_state=5)["text"].tolist()
    probabilities, labels, _ = predict_with_bundle(exported_tiny_model, texts)
    window = pd.DataFrame({"text": texts, "label": np.asarray(labels, dtype=object)[probabilities.argmax(1)],
                           "confidence": probabilities.max(1)})
    result = DriftDetector(loaded, DriftConfig(reference_size=300)).check(window)
    assert not result.drift_detected, result.summary()


def test_monitor_manifest_trigger_is_a_valid_retraining_hook():
    """The Deployment's --trigger retrain:kubeflow and its --retrain-param flags build a working on_drift (checked
    against the compiled retraining pipeline; nothing is sent)."""
    import yaml as yaml_lib

    from textclf.cli.monitor import resolve_trigger

    deployment = yaml_lib.safe_load((MONITOR / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    flags = [arg for arg in container["args"] if arg.startswith("--trigger=") or arg.startswith("--retrain-param=")]
    trigger = next(arg.split("=", 1)[1] for arg in flags if arg.startswith("--trigger="))
    params = [arg.split("=", 1)[1] for arg in flags if arg.startswith("--retrain-param=")]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KFP_HOST", env["KFP_HOST"])
        on_drift = resolve_trigger(trigger, params)
    assert callable(on_drift) and trigger == "retrain:kubeflow"
    with pytest.raises(ConfigError, match="needs a value for registry_uri"):
        resolve_trigger("retrain:local", ["dataset_uri=s3://d"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        resolve_trigger("retrain:local", ["dataset_uri"])
