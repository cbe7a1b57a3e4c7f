"""The canary rollout (textclf.rollout) against stand-ins on 127.0.0.1: the Kubernetes API (tests/kube_fakes.py, the
``kubernetes`` client talking to it over HTTP), the monitor's ``/v1/ab`` serving real reports of
``analyse_ab_log`` on synthetic records, and Prometheus' ``/api/v1/query``. The registry is a local directory with
tiny fake bundles; time is a fake clock, so an hour-long A/B window takes no time."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kube_fakes import MERGE_PATCH, evidence, evidence_server, kube, kube_server  # noqa: F401  (fixtures)
from storage_servers import HOST, free_port
from test_manifests import MANIFESTS, core_errors, render
from test_registry import make_run
from textclf.deploy.kserve import MODEL_VERSION_ANNOTATION, render_inference_service
from textclf.errors import ConfigError, RegistryError
from textclf.monitor.abtest import analyse_ab_log
from textclf.registry import ARCHIVED, CANDIDATE, PRODUCTION, ModelRegistry
from textclf.rollout import (
    PROMOTE,
    ROLLBACK,
    WAIT,
    ErrorRates,
    HttpSettings,
    InferenceServiceNotFound,
    InferenceServices,
    KubeApiError,
    KubeSettings,
    MonitorClient,
    PrometheusClient,
    RolloutConfig,
    RolloutError,
    RolloutGuards,
    RolloutTarget,
    decide,
    error_share_query,
    run_rollout,
)
from textclf.rollout.kube import api_client, resolve_namespace

NAMESPACE = "textclf"
SERVING_ROOT = "pvc://textclf-registry/registry"
PROD, CAND = "v0.1.0", "v0.1.1"
FAST = HttpSettings(timeout_s=5.0, attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
ARGS = ["--precision=int8"]


def bundle_uri(version: str) -> str:
    return f"{SERVING_ROOT}/versions/{version}/onnx_model/"


# --- synthetic A/B traffic ---------------------------------------------------------------------------------------


def ab_records(n_control: int, acc_control: float, n_treatment: int, acc_treatment: float, *,
               latency_control: float = 20.0, latency_treatment: float = 20.0, unlabelled: int = 0) -> list[dict]:
    """Request-log records of both variants: the first ``acc * n`` labelled ones of a variant are correct."""
    records = []
    for variant, version, n, accuracy, latency in (("control", PROD, n_control, acc_control, latency_control),
                                                  ("treatment", CAND, n_treatment, acc_treatment,
                                                   latency_treatment)):
        for i in range(n + unlabelled):
            labelled = i < n
            correct = i < round(accuracy * n)
            records.append({
                "timestamp": f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z", "text": f"{variant} text {i}",
                "label": "World", "model_version": version, "variant": variant, "request_id": f"{variant}-{i}",
                "user_id": f"{variant}-user-{i}", "latency_ms": latency + (i % 10) / 10,
                **({"true_label": "World" if correct else "Sports"} if labelled else {}),
            })
    return records


def ab_report(*args, **kwargs) -> dict:
    """What the monitor's /v1/ab answers: analyse_ab_log's report, through JSON."""
    return json.loads(json.dumps(analyse_ab_log(ab_records(*args, **kwargs))))


SAME = (2000, 0.90, 2000, 0.90)         # non-inferiority shown at once
WORSE = (500, 0.90, 500, 0.80)          # significantly less accurate
FEW = (10, 0.90, 10, 0.90)              # too little labelled traffic
UNDECIDED = (150, 0.90, 150, 0.90)      # not worse, interval too wide for non-inferiority


class Clock:
    """A fake monotonic clock that ``sleep`` advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- fixtures ----------------------------------------------------------------------------------------------------


def make_registry(root: Path, with_production: bool = True) -> ModelRegistry:
    registry = ModelRegistry(root / "registry")
    if with_production:
        registry.register(make_run(root / "prod", run_key="run-prod"), version=PROD)
        registry.promote(PROD, reason="first model")
    registry.register(make_run(root / "cand", run_key="run-cand", accuracy=0.92), version=CAND)
    return registry


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return make_registry(tmp_path)


def index_bytes(registry: ModelRegistry) -> bytes:
    return registry.store.read_bytes("index.json")


def live_isvc(kube_state, version: str = PROD, name: str = "textclf") -> dict:
    """The production InferenceService, as ``kubectl apply`` of the rendered manifest created it."""
    manifest = render_inference_service(bundle_uri(version), name=name, namespace=NAMESPACE, model_version=version)
    return kube_state.put(NAMESPACE, manifest)


@pytest.fixture
def cluster(kube, evidence):
    """(kube state, evidence state, services client, monitor client, prometheus client) with the ISVC in place."""
    kube_url, kube_state = kube
    evidence_url, evidence_state = evidence
    live_isvc(kube_state)
    services = InferenceServices(KubeSettings(namespace=NAMESPACE, host=kube_url))
    return SimpleNamespace(kube=kube_state, evidence=evidence_state, services=services,
                           monitor=MonitorClient(evidence_url, FAST),
                           prometheus=PrometheusClient(evidence_url, FAST, namespace=NAMESPACE), kube_url=kube_url,
                           evidence_url=evidence_url)


def serve_report(evidence_state, *args, **kwargs) -> dict:
    report = ab_report(*args, **kwargs)
    evidence_state.routes["/v1/ab"] = lambda query: (200, report)
    return report


def rollout(cluster, registry, clock: Clock | None = None, **overrides):
    clock = clock or Clock()
    options = dict(monitor=cluster.monitor, target=RolloutTarget(registry_serving_uri=SERVING_ROOT),
                   config=RolloutConfig(rollout_mode="kserve", canary_traffic_percent=10, ab_window_seconds=3600,
                                        ab_poll_seconds=60, ready_timeout_seconds=120),
                   guards=RolloutGuards(), clock=clock, sleep=clock.sleep)
    options.update(overrides)
    return run_rollout(registry, CAND, cluster.services, **options)


def canary_body(resource_version: str) -> dict:
    return {"metadata": {"annotations": {MODEL_VERSION_ANNOTATION: CAND}, "resourceVersion": resource_version},
            "spec": {"predictor": {"canaryTrafficPercent": 10,
                                   "model": {"storageUri": bundle_uri(CAND), "args": ARGS}}}}


def restore_body(resource_version: str) -> dict:
    return {"metadata": {"annotations": {MODEL_VERSION_ANNOTATION: PROD}, "resourceVersion": resource_version},
            "spec": {"predictor": {"canaryTrafficPercent": None,
                                   "model": {"storageUri": bundle_uri(PROD), "args": ARGS}}}}


def isvc_path(name: str = "textclf") -> str:
    return f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{name}"


# --- the sequences -----------------------------------------------------------------------------------------------


def test_canary_then_promote(cluster, registry):
    serve_report(cluster.evidence, *SAME)
    result = rollout(cluster, registry)

    assert result.action == PROMOTE and "non-inferiority shown" in result.reason
    writes = cluster.kube.writes()
    assert [(w.method, w.path, w.content_type) for w in writes] == [("PATCH", isvc_path(), MERGE_PATCH)] * 2
    assert writes[0].body == canary_body("101")
    assert writes[1].body == {"metadata": {"resourceVersion": "102"},
                              "spec": {"predictor": {"canaryTrafficPercent": None}}}
    # The checks read it, every write is preceded by a fresh GET (its resourceVersion), readiness is a GET.
    assert [r.method for r in cluster.kube.requests] == ["GET", "GET", "PATCH", "GET", "GET", "PATCH"]
    (query,) = [r.query for r in cluster.evidence.requests]
    since = datetime.fromisoformat(query.pop("since"))  # the window's start: the control's earlier traffic is left out
    assert abs((datetime.now(timezone.utc) - since).total_seconds()) < 60
    assert query == {"control": PROD, "treatment": CAND, "alpha": "0.05", "min_labelled": "100"}

    served = cluster.kube.get(NAMESPACE, "textclf")
    predictor = served["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor and predictor["model"]["storageUri"] == bundle_uri(CAND)
    assert served["metadata"]["annotations"][MODEL_VERSION_ANNOTATION] == CAND
    assert served["status"]["components"]["predictor"]["latestRolledoutRevision"] == "textclf-predictor-00002"
    # The registry's pointer follows: the candidate is production, the old version a candidate again.
    assert registry.production_version() == CAND
    rows = {row["version"]: row["status"] for row in registry.list_versions()}
    assert rows == {PROD: CANDIDATE, CAND: PRODUCTION}
    event = registry.index()["history"][-1]
    assert event["action"] == "promote" and event["reason"].startswith("canary rollout: non-inferiority shown")
    assert result.revisions == {"control": "textclf-predictor-00001", "canary": "textclf-predictor-00002"}
    assert [step["step"] for step in result.steps] == ["canary", "promote"]
    assert result.decision["action"] == PROMOTE and result.report["comparison"]["verdict"]


def test_canary_then_rollback(cluster, registry):
    serve_report(cluster.evidence, *WORSE)
    before = cluster.kube.get(NAMESPACE, "textclf")
    result = rollout(cluster, registry)

    assert result.action == ROLLBACK and "significantly less accurate" in result.reason
    writes = cluster.kube.writes()
    assert [w.body for w in writes] == [canary_body("101"), restore_body("102")]
    assert all(w.content_type == MERGE_PATCH for w in writes)
    after = cluster.kube.get(NAMESPACE, "textclf")
    assert after["spec"] == before["spec"]  # the previous spec, canaryTrafficPercent gone
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    # The pointer never moved; the candidate is archived with the reason.
    assert registry.production_version() == PROD
    entry = registry.index()["versions"][CAND]
    assert entry["status"] == ARCHIVED and entry["archived_reason"].startswith("canary rollback: treatment is")
    assert result.registry == {"archived": CAND, "production": PROD}


def test_insufficient_data_waits_the_window_then_rolls_back(cluster, registry):
    serve_report(cluster.evidence, *FEW)
    clock = Clock()
    result = rollout(cluster, registry, clock, config=RolloutConfig(
        rollout_mode="kserve", ab_window_seconds=300, ab_poll_seconds=60, ready_timeout_seconds=60))
    assert result.action == ROLLBACK and "too little evidence" in result.reason and "safe default" in result.reason
    assert result.polls == 6 and clock.now == 300  # looks at 0, 60, ..., 300 s
    assert result.decision["at_deadline"] is True
    assert registry.production_version() == PROD and registry.index()["versions"][CAND]["status"] == ARCHIVED
    assert len(cluster.evidence.requests) == 6


def test_not_worse_but_undecided_promotes_at_the_deadline(cluster, registry):
    serve_report(cluster.evidence, *UNDECIDED)
    clock = Clock()
    result = rollout(cluster, registry, clock, config=RolloutConfig(
        rollout_mode="kserve", ab_window_seconds=120, ab_poll_seconds=60))
    assert result.action == PROMOTE and result.reason.startswith("A/B window over") and result.polls == 3
    assert "not checked: error_rate" in result.reason
    assert registry.production_version() == CAND


def test_monitor_down_during_the_whole_window_rolls_back(cluster, registry):
    cluster.evidence.routes["/v1/ab"] = lambda query: (503, {"error": "warming up"})
    result = rollout(cluster, registry, config=RolloutConfig(rollout_mode="kserve", ab_window_seconds=60,
                                                             ab_poll_seconds=30))
    assert result.action == ROLLBACK and "A/B evidence unavailable" in result.reason
    assert registry.production_version() == PROD


def test_no_stored_predictions_yet_keeps_waiting(cluster, registry):
    """The monitor answers 404 until it has predictions of either version; then the evidence comes."""
    report = ab_report(*SAME)
    answers = iter([(404, {"error": f"no stored predictions of model version {PROD!r} or {CAND!r}"})] * 2)
    cluster.evidence.routes["/v1/ab"] = lambda query: next(answers, (200, report))
    result = rollout(cluster, registry)
    assert result.action == PROMOTE and result.polls == 3


def test_error_rate_guard_from_prometheus_rolls_back(cluster, registry):
    serve_report(cluster.evidence, *SAME)
    queries = []

    def prometheus(query):
        queries.append(query["query"])
        share = "0.05" if 'serving_knative_dev_revision="textclf-predictor-00002"' in query["query"] else "0.001"
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1735689600.0, share]}]}}

    cluster.evidence.routes["/api/v1/query"] = prometheus
    result = rollout(cluster, registry, prometheus=cluster.prometheus)
    assert result.action == ROLLBACK and "error_rate" in result.reason
    check = {c["name"]: c for c in result.decision["checks"]}["error_rate"]
    assert check["status"] == "fail" and check["value"] == pytest.approx(0.05)
    assert len(queries) == 2 and 'namespace="textclf"' in queries[0]
    assert registry.production_version() == PROD


def test_canary_that_never_gets_ready_is_rolled_back(cluster, registry):
    cluster.kube.revisions_get_ready = False
    clock = Clock()
    result = rollout(cluster, registry, clock)
    assert result.action == ROLLBACK and "not ready within 120 s" in result.reason
    assert clock.now >= 120 and not cluster.evidence.requests  # no A/B look before the canary is ready
    assert registry.production_version() == PROD


def test_first_model_is_rolled_out_without_a_canary(cluster, tmp_path):
    registry = make_registry(tmp_path / "fresh", with_production=False)
    result = run_rollout(registry, CAND, cluster.services, monitor=None,
                         target=RolloutTarget(registry_serving_uri=SERVING_ROOT))
    assert result.action == PROMOTE and "without a canary" in result.reason
    (write,) = cluster.kube.writes()
    assert write.body["spec"]["predictor"] == {"canaryTrafficPercent": None,
                                               "model": {"storageUri": bundle_uri(CAND), "args": ARGS}}
    assert registry.production_version() == CAND and not cluster.evidence.requests


# --- conflicts and failures --------------------------------------------------------------------------------------


def test_conflict_is_retried_with_the_new_resource_version(cluster, registry):
    serve_report(cluster.evidence, *SAME)
    cluster.kube.conflicts = 1  # another writer touches the object between our GET and PATCH
    result = rollout(cluster, registry)
    assert result.action == PROMOTE and result.conflicts_retried == 1
    patches = [r for r in cluster.kube.requests if r.method == "PATCH"]
    assert [p.body["metadata"]["resourceVersion"] for p in patches] == ["101", "102", "103"]
    assert patches[0].body == canary_body("101") and patches[1].body == canary_body("102")  # rebuilt on re-read
    served = cluster.kube.get(NAMESPACE, "textclf")
    # The merge patch left the other writer's change alone.
    assert served["metadata"]["annotations"]["example.com/touched-by"] == "another-writer"
    assert registry.production_version() == CAND


def test_endless_conflicts_give_up_and_change_nothing(cluster, registry):
    serve_report(cluster.evidence, *SAME)
    before_index = index_bytes(registry)
    cluster.kube.conflicts = 100
    with pytest.raises(KubeApiError, match="still conflicting after 5 re-reads"):
        rollout(cluster, registry)
    assert len(cluster.kube.writes()) == 6
    assert index_bytes(registry) == before_index
    assert cluster.kube.get(NAMESPACE, "textclf")["spec"]["predictor"]["model"]["storageUri"] == bundle_uri(PROD)


def test_api_error_on_the_canary_changes_nothing(cluster, registry):
    serve_report(cluster.evidence, *SAME)
    before_index, before = index_bytes(registry), cluster.kube.get(NAMESPACE, "textclf")
    cluster.kube.fail_writes = {1: 500}
    with pytest.raises(KubeApiError, match=r"PATCH InferenceService 'textclf' in namespace 'textclf' failed: HTTP 500"):
        rollout(cluster, registry)
    assert index_bytes(registry) == before_index
    assert cluster.kube.get(NAMESPACE, "textclf") == before and not cluster.evidence.requests


def test_api_error_on_promotion_restores_the_spec_and_leaves_the_registry_unchanged(cluster, registry):
    serve_report(cluster.evidence, *SAME)
    before_index, before = index_bytes(registry), cluster.kube.get(NAMESPACE, "textclf")
    cluster.kube.fail_writes = {2: 500}  # the canary is applied, the promote patch fails
    with pytest.raises(RolloutError, match="previous spec was restored and the registry was not changed"):
        rollout(cluster, registry)
    assert index_bytes(registry) == before_index
    writes = cluster.kube.writes()
    assert [w.body["spec"]["predictor"].get("canaryTrafficPercent", "absent") for w in writes] == [10, None, None]
    assert writes[2].body == restore_body("102")
    assert cluster.kube.get(NAMESPACE, "textclf")["spec"] == before["spec"]


def test_any_error_during_the_window_undoes_the_canary(cluster, registry):
    report = ab_report(*SAME)
    del report["variants"]["treatment"]["correct"]  # a report decide() cannot read
    cluster.evidence.routes["/v1/ab"] = lambda query: (200, report)
    before_index, before = index_bytes(registry), cluster.kube.get(NAMESPACE, "textclf")
    with pytest.raises(RolloutError, match="KeyError during the canary.*previous spec was restored"):
        rollout(cluster, registry)
    assert cluster.kube.get(NAMESPACE, "textclf")["spec"] == before["spec"] and index_bytes(registry) == before_index


def test_registry_refusal_after_promotion_restores_the_spec(cluster, registry, monkeypatch):
    serve_report(cluster.evidence, *SAME)
    before = cluster.kube.get(NAMESPACE, "textclf")

    def refuse(version, reason=""):
        raise RegistryError(f"{version} is archived and cannot be promoted")

    monkeypatch.setattr(registry, "promote", refuse)
    with pytest.raises(RolloutError, match="registry refused to promote v0.1.1.*restored to the previous model"):
        rollout(cluster, registry)
    assert [s for s in (w.body["spec"]["predictor"].get("canaryTrafficPercent", "-") for w in cluster.kube.writes())
            ] == [10, None, None]
    assert cluster.kube.get(NAMESPACE, "textclf")["spec"] == before["spec"]
    assert registry.production_version() == PROD


def test_unknown_inference_service_is_a_clear_error_and_nothing_changes(cluster, registry):
    before_index = index_bytes(registry)
    with pytest.raises(InferenceServiceNotFound) as caught:
        rollout(cluster, registry, target=RolloutTarget(name="textclf-typo", registry_serving_uri=SERVING_ROOT))
    message = str(caught.value)
    assert "InferenceService 'textclf-typo' in namespace 'textclf' does not exist" in message
    assert "kubectl -n textclf apply -k manifests/overlays/cpu" in message and caught.value.status == 404
    assert cluster.kube.writes() == [] and index_bytes(registry) == before_index


def test_a_running_canary_is_not_overwritten(cluster, registry):
    cluster.kube.objects[(NAMESPACE, "textclf")]["spec"]["predictor"]["canaryTrafficPercent"] = 30
    with pytest.raises(RolloutError, match="already runs a canary at 30%.*nothing was changed"):
        rollout(cluster, registry)
    assert cluster.kube.writes() == []


def test_a_local_registry_without_a_serving_uri_is_refused_before_any_request(cluster, registry):
    with pytest.raises(ConfigError, match="KServe cannot download"):
        rollout(cluster, registry, target=RolloutTarget())
    assert cluster.kube.requests == []


def test_only_candidates_are_rolled_out(cluster, registry):
    registry.archive(CAND, reason="test")
    with pytest.raises(RegistryError, match="archived, not a candidate"):
        rollout(cluster, registry)
    assert cluster.kube.requests == []


# --- the decision ------------------------------------------------------------------------------------------------


GUARDS = RolloutGuards(min_labelled=100, alpha=0.05, max_accuracy_drop=0.02, max_p99_latency_ratio=1.5,
                       max_error_rate=0.01, min_latency_samples=50)


@pytest.mark.parametrize(
    ("traffic", "extra", "at_deadline", "error_rates", "action", "reason"),
    [
        (FEW, {}, False, None, WAIT, "waiting for labelled requests"),
        (FEW, {}, True, None, ROLLBACK, "too little evidence"),
        ((0, 0.9, 0, 0.9), {"unlabelled": 60}, False, None, WAIT, "labelled control/treatment 0/0"),
        (WORSE, {}, False, None, ROLLBACK, "significantly less accurate"),
        ((300, 0.90, 300, 0.87), {}, False, None, ROLLBACK, "more than 0.02 below"),
        (SAME, {}, False, None, PROMOTE, "non-inferiority shown"),
        (UNDECIDED, {}, False, None, WAIT, "non-inferiority not shown yet"),
        (UNDECIDED, {}, True, None, PROMOTE, "A/B window over: not significantly worse"),
        ((2000, 0.90, 2000, 0.93), {}, False, None, PROMOTE, "non-inferiority shown"),
        (SAME, {"latency_treatment": 40.0}, False, None, ROLLBACK, "latency_p99_ratio"),
        (FEW, {"latency_treatment": 40.0, "unlabelled": 60}, False, None, ROLLBACK, "latency_p99_ratio"),
        (SAME, {}, False, ErrorRates(treatment=0.02, control=0.001), ROLLBACK, "error_rate"),
        (SAME, {}, False, ErrorRates(treatment=0.005), PROMOTE, "non-inferiority shown"),
    ],
    ids=["few-wait", "few-deadline", "no-labels", "worse", "beyond-margin", "non-inferior", "undecided-wait",
         "undecided-deadline", "better", "latency", "latency-before-labels", "error-rate", "error-rate-ok"],
)
def test_decision_table(traffic, extra, at_deadline, error_rates, action, reason):
    decision = decide(ab_report(*traffic, **extra), GUARDS, error_rates=error_rates, at_deadline=at_deadline)
    assert decision.action == action, decision.reason
    assert reason in decision.reason
    assert decision.at_deadline is at_deadline
    json.dumps(decision.to_dict())  # JSON-ready


def test_decision_records_what_was_not_checked():
    decision = decide(ab_report(*SAME), GUARDS)
    assert decision.check("error_rate").status == "not_checked"
    assert "no prometheus_url" in decision.check("error_rate").detail
    assert decision.check("latency_p99_ratio").status == "pass"
    assert {c.name for c in decision.checks} == {"latency_p99_ratio", "error_rate", "data", "accuracy_significance",
                                                 "accuracy_margin", "non_inferiority"}
    assert decide(ab_report(*SAME), GUARDS, error_rates=ErrorRates(None)).check("error_rate").status == "not_checked"


def test_decision_uses_its_own_alpha_not_the_monitors():
    report = ab_report(400, 0.90, 400, 0.86)  # p ~ 0.07: worse at alpha 0.10, not at 0.05
    loose = RolloutGuards(alpha=0.10, max_accuracy_drop=0.05)
    strict = RolloutGuards(alpha=0.05, max_accuracy_drop=0.05)
    assert decide(report, loose).action == ROLLBACK
    assert decide(report, strict).action == WAIT


def test_a_missing_variant_waits():
    records = [r for r in ab_records(*SAME) if r["variant"] == "control"]
    decision = decide(analyse_ab_log(records), GUARDS)
    assert decision.action == WAIT and "no requests of the treatment variant" in decision.reason


@pytest.mark.parametrize(
    ("config", "field"),
    [(dict(min_labelled=0), "min_labelled"), (dict(alpha=1.0), "alpha"), (dict(max_accuracy_drop=-0.1),
     "max_accuracy_drop"), (dict(max_p99_latency_ratio=0), "max_p99_latency_ratio"),
     (dict(max_error_rate=2), "max_error_rate")],
)
def test_guards_validate(config, field):
    with pytest.raises(ConfigError, match=field):
        RolloutGuards(**config)


@pytest.mark.parametrize(
    ("config", "field"),
    [(dict(rollout_mode="helm"), "rollout_mode"), (dict(canary_traffic_percent=100), "canary_traffic_percent"),
     (dict(canary_traffic_percent=0), "canary_traffic_percent"), (dict(ab_window_seconds=-1), "ab_window_seconds"),
     (dict(ab_poll_seconds=0), "ab_poll_seconds")],
)
def test_rollout_config_validates(config, field):
    with pytest.raises(ConfigError, match=field):
        RolloutConfig(**config)


# --- the evidence clients ----------------------------------------------------------------------------------------


def test_monitor_client_reads_the_monitors_report(evidence):
    url, state = evidence
    report = serve_report(state, *UNDECIDED)
    got = MonitorClient(url + "/", FAST).ab_report(PROD, CAND)
    assert got == report and got["comparison"]["verdict"] == "no_significant_difference"
    (request,) = state.requests
    assert (request.method, request.path, request.query) == ("GET", "/v1/ab", {"control": PROD, "treatment": CAND})


def test_monitor_client_retries_5xx_then_succeeds(evidence):
    url, state = evidence
    report = ab_report(*FEW)
    answers = iter([(503, {"error": "starting"}), (200, report)])
    state.routes["/v1/ab"] = lambda query: next(answers)
    assert MonitorClient(url, FAST).ab_report(PROD, CAND)["comparison"]["verdict"] == "insufficient_data"
    assert len(state.requests) == 2


def test_monitor_client_errors(evidence):
    url, state = evidence
    state.routes["/v1/ab"] = lambda query: (400, {"error": "unknown model version v9"})
    with pytest.raises(RolloutError, match="answered 400.*unknown model version v9"):
        MonitorClient(url, FAST).ab_report(PROD, "v9")
    state.routes["/v1/ab"] = lambda query: (200, {"verdict": "ok"})
    with pytest.raises(RolloutError, match="did not answer an A/B report"):
        MonitorClient(url, FAST).ab_report(PROD, CAND)
    nothing = f"http://{HOST}:{free_port()}"
    with pytest.raises(RolloutError, match="failed after 3 attempts"):
        MonitorClient(nothing, FAST).ab_report(PROD, CAND)


def test_prometheus_client_speaks_the_http_api(evidence):
    url, state = evidence
    seen = []

    def answer(query):
        seen.append(query["query"])
        value = "NaN" if "00009" in query["query"] else "0.0125"
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"serving_knative_dev_revision": "textclf-predictor-00002"}, "value": [1735689600.5, value]}]}}

    state.routes["/api/v1/query"] = answer
    client = PrometheusClient(url, FAST, namespace=NAMESPACE)
    rates = client.error_rates("textclf-predictor-00002", "textclf-predictor-00009", 600)
    assert rates.treatment == pytest.approx(0.0125) and rates.control is None  # NaN: 0/0, no requests
    assert seen[0] == (
        'sum(increase(textclf_requests_total{namespace="textclf",serving_knative_dev_revision='
        '"textclf-predictor-00002",outcome="error"}[600s])) / sum(increase(textclf_requests_total{namespace='
        '"textclf",serving_knative_dev_revision="textclf-predictor-00002"}[600s]))')
    assert rates.queries == tuple(seen)
    state.routes["/api/v1/query"] = lambda query: (200, {"status": "success",
                                                         "data": {"resultType": "vector", "result": []}})
    assert client.error_share("textclf-predictor-00002", 600)[0] is None
    state.routes["/api/v1/query"] = lambda query: (400, {"status": "error", "errorType": "bad_data",
                                                         "error": "1:5: parse error: unexpected"})
    with pytest.raises(RolloutError, match="bad_data.*parse error"):
        client.query("sum(")
    state.routes["/api/v1/query"] = lambda query: (200, {"status": "success",
                                                         "data": {"resultType": "scalar", "result": [1.0, "2"]}})
    assert client.query("scalar(1)") == [({}, 2.0)]


def test_error_share_query_escapes_label_values():
    query = error_share_query('rev"x', 30, revision_label="revision")
    assert 'revision="rev\\"x"' in query and "[60s]" in query  # at least one minute of samples


# --- configuration -----------------------------------------------------------------------------------------------


def test_namespace_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    mounted = tmp_path / "namespace"
    mounted.write_text("from-pod\n")
    assert resolve_namespace("given", mounted) == "given"
    assert resolve_namespace("", mounted) == "from-pod"
    monkeypatch.setenv("POD_NAMESPACE", "from-env")
    assert resolve_namespace("", mounted) == "from-env"
    monkeypatch.delenv("POD_NAMESPACE")
    with pytest.raises(ConfigError, match="no Kubernetes namespace"):
        resolve_namespace("", tmp_path / "absent")


def test_outside_a_cluster_without_a_host_is_a_config_error(monkeypatch):
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "TEXTCLF_KUBE_HOST"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="no Kubernetes API configuration"):
        api_client(KubeSettings(namespace=NAMESPACE))


def test_unreachable_api_server_is_an_api_error(registry):
    services = InferenceServices(KubeSettings(namespace=NAMESPACE, host=f"http://{HOST}:{free_port()}",
                                              timeout_s=2.0))
    services.api.api_client.configuration.retries = 0
    with pytest.raises(KubeApiError, match="unreachable"):
        services.get("textclf")


# --- the KFP component and the pipeline ------------------------------------------------------------------------


def test_component_defaults_are_the_typed_configs():
    from textclf.rollout.component import rollout_op

    inputs = rollout_op.component_spec.inputs
    config, guards = RolloutConfig(), RolloutGuards()
    for name in ("canary_traffic_percent", "ab_window_seconds", "ab_poll_seconds", "ready_timeout_seconds"):
        assert inputs[name].default == getattr(config, name), name
    for name, field in (("ab_min_labelled", "min_labelled"), ("ab_alpha", "alpha"),
                        ("max_accuracy_drop", "max_accuracy_drop"), ("max_p99_latency_ratio", "max_p99_latency_ratio"),
                        ("max_error_rate", "max_error_rate")):
        assert inputs[name].default == getattr(guards, field), name
    assert rollout_op.component_spec.outputs["rollout"].type == "system.Artifact@0.0.1"


def test_component_function_writes_the_decision_record(cluster, registry, tmp_path):
    from textclf.rollout.component import rollout_op

    serve_report(cluster.evidence, *WORSE)
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "decision.json").write_text(json.dumps({"decision": "promote", "reason": "McNemar p=0.01, +3 points"}))
    out = SimpleNamespace(path=str(tmp_path / "rollout"), metadata={})
    action = rollout_op.python_func(
        registry_uri=str(registry.store.root), version=CAND, decision=SimpleNamespace(path=str(gate)), rollout=out,
        monitor_url=cluster.evidence_url, namespace=NAMESPACE, kube_host=cluster.kube_url,
        registry_serving_uri=SERVING_ROOT, ab_window_seconds=0,
    )
    assert action == ROLLBACK
    record = json.loads((Path(out.path) / "rollout.json").read_text())
    assert record["action"] == ROLLBACK and record["gate_reason"] == "McNemar p=0.01, +3 points"
    assert record["decision"]["checks"] and record["report"]["variants"]["treatment"]["labelled"] == 500
    assert [step["step"] for step in record["steps"]] == ["canary", "rollback"]
    assert out.metadata == {"action": ROLLBACK, "candidate": CAND, "control": PROD, "storageUri": bundle_uri(CAND),
                            "namespace": NAMESPACE}
    assert ModelRegistry(registry.store.root).index()["versions"][CAND]["status"] == ARCHIVED


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task that uses custom")  # kfp.local, as intended
def test_rollout_component_under_kfp_local(cluster, registry, tmp_path):
    """The component as the local runner runs it (its source in a subprocess), after a stand-in of the gate."""
    from kube_fakes import rollout_test_pipeline
    from textclf.pipelines.local import init_local_runner

    serve_report(cluster.evidence, *SAME)
    init_local_runner(tmp_path / "pipeline_root")
    task = rollout_test_pipeline(registry_uri=str(registry.store.root), version=CAND,
                                 monitor_url=cluster.evidence_url, kube_host=cluster.kube_url, namespace=NAMESPACE,
                                 registry_serving_uri=SERVING_ROOT)
    assert task.output == PROMOTE
    (record_file,) = (tmp_path / "pipeline_root").rglob("rollout.json")
    record = json.loads(record_file.read_text())
    assert record["action"] == PROMOTE and record["gate_reason"] == "stub gate"
    assert [w.body["spec"]["predictor"]["canaryTrafficPercent"] for w in cluster.kube.writes()] == [10, None]
    assert ModelRegistry(registry.store.root).production_version() == CAND


def test_pipeline_checks_rollout_parameters():
    from textclf.pipelines.parameters import check_pipeline_arguments
    from textclf.pipelines.retraining.pipeline import retraining_pipeline

    base = {"dataset_uri": "/data", "registry_uri": "/registry"}
    check_pipeline_arguments(retraining_pipeline, {**base, "rollout_mode": "kserve", "monitor_url": "http://m"})
    with pytest.raises(ConfigError, match="rollout_mode"):
        check_pipeline_arguments(retraining_pipeline, {**base, "rollout_mode": "helm"})
    with pytest.raises(ConfigError, match="max_error_rate"):
        check_pipeline_arguments(retraining_pipeline, {**base, "max_error_rate": 1.5})
    inputs = retraining_pipeline.component_spec.inputs
    assert inputs["rollout_mode"].default == "registry"
    assert inputs["canary_traffic_percent"].default == RolloutConfig().canary_traffic_percent
    assert inputs["ab_min_labelled"].default == RolloutGuards().min_labelled


def test_pipeline_promote_branch_runs_the_rollout_or_the_registry_promotion():
    """gate promotes -> rollout_mode kserve: rollout_op, and the drift reference only when it promoted; else
    promote_op then the drift reference. The archive branch is unchanged."""
    from google.protobuf import json_format
    from textclf.pipelines.retraining.pipeline import retraining_pipeline

    spec = json_format.MessageToDict(retraining_pipeline.pipeline_spec)
    found = {}

    def walk(dag, conditions, after):  # after: the upstream tasks of this DAG and of the ones around it
        for name, task in dag.get("tasks", {}).items():
            condition = task.get("triggerPolicy", {}).get("condition")
            here = (*conditions, condition) if condition else conditions
            upstream = after | {t for t in task.get("dependentTasks", []) if not t.startswith("condition")}
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"], here, upstream)
            else:
                found[name] = (here, upstream)

    walk(spec["root"]["dag"], (), set())
    gate = "inputs.parameter_values['pipelinechannel--gate-op-Output'] == 'promote'"
    kserve = "inputs.parameter_values['pipelinechannel--rollout_mode'] == 'kserve'"
    promoted = "inputs.parameter_values['pipelinechannel--rollout-op-Output'] == 'promote'"
    assert found["rollout-op"][0] == (gate, kserve)
    assert found["drift-reference-op"][0] == (gate, kserve, promoted) and "rollout-op" in found["drift-reference-op"][1]
    assert found["promote-op"][0] == (gate, f"!({kserve})")
    assert found["drift-reference-op-2"][0] == (gate, f"!({kserve})")
    assert "promote-op" in found["drift-reference-op-2"][1]
    assert found["archive-op"][0] == (f"!({gate})",)
    wired = spec["components"]["comp-condition-4"]["dag"]["tasks"]["rollout-op"]["inputs"]["parameters"]
    assert {"monitor_url", "canary_traffic_percent", "ab_window_seconds", "max_error_rate", "prometheus_url",
            "namespace", "registry_serving_uri"} <= set(wired)


# --- RBAC --------------------------------------------------------------------------------------------------------


def test_rollout_rbac_is_least_privilege_and_valid():
    resources = render(MANIFESTS / "rollout")
    by_kind = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    assert set(by_kind) == {("ServiceAccount", "textclf-rollout"), ("Role", "textclf-rollout"),
                            ("RoleBinding", "textclf-rollout")}
    for resource in resources:
        assert core_errors(resource) == [], f"{resource['kind']} {resource['metadata']['name']}"
    (rule,) = by_kind[("Role", "textclf-rollout")]["rules"]
    assert rule == {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                    "verbs": ["get", "list", "watch", "patch", "update"]}
    binding = by_kind[("RoleBinding", "textclf-rollout")]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "textclf-rollout"}
    kustomization = yaml.safe_load((MANIFESTS / "rollout" / "kustomization.yaml").read_text())
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "textclf-rollout",
                                    "namespace": kustomization["namespace"]}]
    # What the rollout sends is within the Role: GET and PATCH of inferenceservices.serving.kserve.io.
    from textclf.rollout.kube import GROUP, PLURAL

    assert (GROUP, PLURAL) == (rule["apiGroups"][0], rule["resources"][0])
