"""Alerts and the dashboard (``manifests/monitoring/``), checked with a real Prometheus toolchain and real servers.

* ``prometheusrule.yaml`` is the only copy of the rules. Its ``spec`` is written out as a plain rule file for
  ``promtool check rules`` and ``promtool test rules`` (``alerts.test.yml``: every alert fires on synthetic series
  and stays quiet on others). Broken copies of the rules must fail those unit tests.
* The PrometheusRule is checked against a schema transcribed from Prometheus Operator's CRD (v0.82, strict): no CRD
  of it is in ``../shared/schemas/``.
* Every query of the dashboard parses (``promtool check rules`` on them as recording rules, Grafana's variables
  substituted), and every metric a rule or a panel names is exposed by a real predictor (``kserve.ModelServer`` on
  a tiny ONNX bundle, in a subprocess on 127.0.0.1) or a real drift monitor ``MetricsServer``, scraped here.
* The kustomization renders (``kustomize build`` or ``kubectl kustomize`` where installed) to the PrometheusRule and
  a ConfigMap generated from the dashboard JSON for Grafana's sidecar.

promtool comes with Debian's ``prometheus`` package; ``.ci/run`` installs it. Without it these tests fail when
``$CI`` is set and are skipped otherwise.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_manifests import MANIFESTS, core_errors

MONITORING = MANIFESTS / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
UNIT_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = {"TextclfHighErrorRate", "TextclfHighP99Latency", "TextclfNoTraffic", "TextclfDriftDetected",
          "TextclfAccuracyDrop", "TextclfMonitorStalled", "TextclfMonitorDown"}
SEVERITIES = {"warning", "critical"}
#: Labels Prometheus' scrape adds to every series; the rules and panels may match on them.
TARGET_LABELS = {"namespace", "pod", "job", "instance"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("promtool not found: .ci/run installs it (apt-get install -y --no-install-recommends prometheus)")
    pytest.skip("promtool not found: install it with `sudo apt-get install -y prometheus` (Debian/Ubuntu)")


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *map(str, args)], check=False, capture_output=True, text=True, timeout=120)


def load_rule() -> dict[str, Any]:
    (rule,) = [doc for doc in yaml.safe_load_all(RULES.read_text()) if doc]
    return rule


def alerting_rules(rule: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [r for group in (rule or load_rule())["spec"]["groups"] for r in group["rules"] if "alert" in r]


def write_rule_files(rule: dict[str, Any], directory: Path) -> Path:
    """The PrometheusRule's ``spec`` as the rule file ``alerts.test.yml`` names, next to a copy of that file;
    returns the copy."""
    (rule_file,) = yaml.safe_load(UNIT_TESTS.read_text())["rule_files"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / rule_file).write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return Path(shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name))


# --- PromQL: the metric names an expression uses ---------------------------------------------------------------

#: Keywords and constants of PromQL that look like identifiers (functions are recognised by their "(").
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                "unless", "inf", "nan"}
IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label names or inside
    strings, label matchers, ranges or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings first: they may hold }
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    return {match[1] for match in IDENTIFIER.finditer(text)
            if not match[2] and match[1].lower() not in PROMQL_WORDS}


def matchers(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names of its ``{...}`` matcher) for every selector with a matcher."""
    found = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", re.sub(r'"(?:[^"\\]|\\.)*"', '""',
                                                                                       match[2])))
        found.append((match[1], labels))
    return found


def test_metric_names_of_promql():
    expr = ('histogram_quantile(0.99, sum by (namespace, le) (rate(a_bucket{le!="+Inf", x=~"}{"}[5m:1m]))) > 1e9 '
            'or absent(b) * on(pod) group_left c_total unless ignoring(stage) group_left sum(d) by (e) '
            'and time() - f{g="h"} offset 5m > bool +Inf')
    assert metric_names(expr) == {"a_bucket", "b", "c_total", "d", "f"}
    assert metric_names('rate(x[$__rate_interval]) / count(y{n=~"$namespace"})') == {"x", "y"}
    assert matchers('rate(a{b="c", d!~"e,f="}[5m]) + g') == [("a", {"b", "d"})]


# --- the rules, promtool ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unit_tests(tmp_path_factory) -> Path:
    return write_rule_files(load_rule(), tmp_path_factory.mktemp("rules"))


def test_promtool_checks_the_rules(unit_tests):
    rule_file = unit_tests.parent / yaml.safe_load(unit_tests.read_text())["rule_files"][0]
    result = run_promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


def test_promtool_unit_tests_pass(unit_tests):
    result = run_promtool("test", "rules", unit_tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases: dict[str, list[list[dict[str, Any]]]] = {}
    for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    assert set(cases) == ALERTS
    severities = {r["alert"]: r["labels"]["severity"] for r in alerting_rules()}
    for alert, expected in cases.items():
        assert [] in expected, f"{alert}: no case where it stays quiet"
        firing = [a for alerts in expected for a in alerts]
        assert firing, f"{alert}: no case where it fires"
        for entry in firing:
            assert entry["exp_labels"]["severity"] == severities[alert], alert
            assert {"summary", "description"} <= set(entry["exp_annotations"]), alert


def _rule_of(rule: dict[str, Any], alert: str) -> dict[str, Any]:
    (entry,) = [r for r in alerting_rules(rule) if r["alert"] == alert]
    return entry


def _edit(rule: dict[str, Any], alert: str, old: str, new: str) -> None:
    entry = _rule_of(rule, alert)
    assert old in entry["expr"], entry["expr"]
    entry["expr"] = entry["expr"].replace(old, new)


@pytest.mark.parametrize(("mutate", "failing"), [
    (lambda rule: _edit(rule, "TextclfHighErrorRate", "> 0.05", "> 0.5"), "TextclfHighErrorRate"),
    (lambda rule: _rule_of(rule, "TextclfHighP99Latency").pop("for"), "TextclfHighP99Latency"),
    (lambda rule: _edit(rule, "TextclfNoTraffic", "or absent_over_time", "unless absent_over_time"),
     "TextclfNoTraffic"),
    (lambda rule: _edit(rule, "TextclfDriftDetected", "== 1", ">= 0"), "TextclfDriftDetected"),
    (lambda rule: _edit(rule, "TextclfMonitorStalled", "> 300", "> 3600"), "TextclfMonitorStalled"),
], ids=["error-threshold", "latency-without-for", "no-traffic-without-absent", "drift-on-any-check",
        "stalled-after-an-hour"])
def test_unit_tests_catch_broken_rules(mutate, failing, tmp_path):
    rule = copy.deepcopy(load_rule())
    mutate(rule)
    result = run_promtool("test", "rules", write_rule_files(rule, tmp_path))
    assert result.returncode != 0, f"promtool's unit tests pass on a broken {failing}:\n{result.stdout}"
    assert f"alertname: {failing}," in result.stderr, result.stdout + result.stderr


# --- the PrometheusRule manifest -------------------------------------------------------------------------------

#: Prometheus' duration format, the CRD's pattern.
DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
#: The openAPIV3Schema of Prometheus Operator's PrometheusRule CRD (v0.82.2,
#: example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml), transcribed, made strict (unknown
#: fields are errors) and with the "one of alert and record" its admission webhook enforces. Not in
#: ../shared/schemas/, hence the copy.
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
                           "namespace": {"type": "string"}, "labels": STRING_MAP, "annotations": STRING_MAP},
        },
        "spec": {"type": "object", "additionalProperties": False, "properties": {"groups": {
            "type": "array",
            "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1}, "interval": DURATION, "labels": STRING_MAP,
                    "limit": {"type": "integer"}, "partial_response_strategy": {"type": "string"},
                    "query_offset": DURATION,
                    "rules": {"type": "array", "items": {
                        "type": "object", "required": ["expr"], "additionalProperties": False,
                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                        "properties": {
                            "alert": {"type": "string"}, "record": {"type": "string"},
                            "expr": {"type": ["string", "integer"]}, "for": DURATION,
                            "keep_firing_for": {**DURATION, "minLength": 1}, "labels": STRING_MAP,
                            "annotations": STRING_MAP,
                        },
                    }},
                },
            },
        }}},
    },
}


def rule_errors(rule: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(PROMETHEUS_RULE_SCHEMA)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(rule)]
    names = [group.get("name") for group in rule.get("spec", {}).get("groups", [])]
    if len(names) != len(set(names)):  # x-kubernetes-list-type: map, keyed by name
        errors.append(f"spec/groups: duplicate names {names}")
    return errors


def test_prometheus_rule_matches_the_operator_schema_and_conventions():
    rule = load_rule()
    assert rule_errors(rule) == []
    assert {r["alert"] for r in alerting_rules(rule)} == ALERTS
    for entry in alerting_rules(rule):
        assert entry["labels"]["severity"] in SEVERITIES, entry["alert"]
        assert {"summary", "description"} <= set(entry["annotations"]), entry["alert"]
        assert set(entry["labels"]) == {"severity"}, entry["alert"]  # the series' own labels are kept


@pytest.mark.parametrize(("mutate", "error"), [
    (lambda rule: rule["spec"]["groups"][0]["rules"][0].update(expression="up"), r"'expression' was unexpected"),
    (lambda rule: rule["spec"]["groups"][0]["rules"][0].update({"for": "5 minutes"}), r"for: '5 minutes' does not"),
    (lambda rule: rule["spec"]["groups"][0]["rules"][0]["labels"].update(page=True), r"True is not of type 'string'"),
    (lambda rule: rule["spec"]["groups"][0]["rules"][0].update(record="x"), r"is valid under each of"),
    (lambda rule: rule["spec"]["groups"].append(copy.deepcopy(rule["spec"]["groups"][0])), r"duplicate names"),
], ids=["unknown-field", "bad-duration", "non-string-label", "alert-and-record", "duplicate-group"])
def test_rule_schema_catches_broken_rules(mutate, error):
    rule = copy.deepcopy(load_rule())
    mutate(rule)
    errors = rule_errors(rule)
    assert any(re.search(error, message) for message in errors), errors


# --- the dashboard ---------------------------------------------------------------------------------------------

#: Panel titles the dashboard must have (request rate ... labelled count).
PANELS = {"Request rate by outcome", "Error rate", "Latency p50 / p99", "Predictions by label", "Confidence",
          "Batch size", "Cascade: share answered by each stage", "Drift score and decision",
          "Checks, triggers, failures (time range)", "Prediction events received by outcome", "Feedback by outcome",
          "Live accuracy vs baseline", "Labelled predictions in the accuracy window"}
#: Grafana's interval variables, replaced by a duration for promtool.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable (``label_values(selector, label)``: its
    selector)."""
    queries = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]\w*)\)", query)
            assert match, f"${variable['name']}: {query}"
            queries.append((f"${variable['name']}", match[1]))
    return queries


def rule_queries() -> list[tuple[str, str]]:
    return [(r["alert"], r["expr"]) for r in alerting_rules()]


def test_dashboard_structure():
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("namespace", "model_name"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), ids
    assert PANELS <= {p["title"] for p in panels(dashboard)}
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]


def test_dashboard_queries_parse_with_promtool(tmp_path):
    """Each query, with Grafana's variables replaced (intervals by durations, ``=~"$var"`` by ``=~".*"``), as a
    recording rule for ``promtool check rules``."""
    records = []
    for i, (where, expr) in enumerate(dashboard_queries(load_dashboard())):
        for variable, duration in GRAFANA_INTERVALS.items():
            expr = expr.replace(variable, duration)
        expr = re.sub(r'=~"\$\{?\w+\}?"', '=~".*"', expr)
        assert "$" not in expr, f"{where}: unknown Grafana variable in {expr}"
        records.append({"record": f"textclf:dashboard:{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the metrics exist: a real predictor and a real monitor, scraped --------------------------------------------


def exposed(text: str) -> dict[str, dict[str, Any]]:
    """Sample name -> {"type", "labels"} of a Prometheus text exposition. Families come from ``# TYPE`` lines (which
    prometheus_client writes for labelled metrics without samples too): a histogram's ``_bucket``, ``_sum`` and
    ``_count``, a counter's ``_total``; labels from the samples."""
    found: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            names = {"histogram": ["_bucket", "_sum", "_count"], "summary": ["", "_sum", "_count"],
                     "counter": ["" if family.endswith("_total") else "_total"]}.get(kind, [""])
            for suffix in names:
                found.setdefault(family + suffix, {"type": kind, "labels": set()})
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)[0]
            entry = found.setdefault(name, {"type": "untyped", "labels": set()})
            entry["labels"] |= set(re.findall(r"([a-zA-Z_]\w*)=\"", line.split("}")[0] if "{" in line else ""))
    return found


def test_exposed_names_families_without_samples():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    Counter("c", "a counter", ["outcome"], registry=registry)  # labelled, no sample yet
    Histogram("h_seconds", "a histogram", registry=registry).observe(0.2)
    Gauge("g", "a gauge", ["version"], registry=registry).labels(version="1").set(1)
    found = exposed(generate_latest(registry).decode())
    assert {name: entry["type"] for name, entry in found.items() if not name.endswith("_created")} == {
        "c_total": "counter", "h_seconds_bucket": "histogram", "h_seconds_sum": "histogram",
        "h_seconds_count": "histogram", "g": "gauge"}
    assert found["g"]["labels"] == {"version"} and found["h_seconds_bucket"]["labels"] == {"le"}
    assert found["c_total"]["labels"] == set()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> dict[str, dict[str, dict[str, Any]]]:
    """``/metrics`` of a real predictor (after an answered and a refused request) and of a real drift monitor."""
    import httpx
    from test_calibration import write_tiny_onnx
    from test_serving import running_server, v1_predict, write_fake_bundle
    from textclf.monitor.metrics import MetricsServer, MonitorMetrics

    work = tmp_path_factory.mktemp("alerts_scrape")
    bundle = write_fake_bundle(work / "bundle")
    write_tiny_onnx(bundle / "model.int8.onnx")
    with running_server(bundle, work) as server:
        assert v1_predict(server, ["stocks fell", "goal scored"])["predictions"]
        refused = httpx.post(f"{server.http}/v1/models/textclf:predict", json={"instances": []}, timeout=30)
        assert refused.status_code == 400, refused.text
        predictor = httpx.get(f"{server.http}/metrics", timeout=30).text
    monitor_server = MetricsServer(MonitorMetrics(), 0, "127.0.0.1")
    try:
        monitor = httpx.get(f"http://127.0.0.1:{monitor_server.port}/metrics", timeout=30).text
    finally:
        monitor_server.close()
    return {"predictor": exposed(predictor), "monitor": exposed(monitor)}


def test_scrape_has_the_request_metrics(scraped):
    """The predictor's request counter and latency histogram have samples (so the labels below are checked)."""
    predictor = scraped["predictor"]
    assert {"model_name", "outcome"} <= predictor["textclf_requests_total"]["labels"]
    assert "le" in predictor["textclf_request_latency_seconds_bucket"]["labels"]


def test_every_metric_of_the_rules_and_dashboard_exists(scraped):
    metrics = {**scraped["predictor"], **scraped["monitor"]}
    queries = rule_queries() + dashboard_queries(load_dashboard())
    used = {}
    for where, expr in queries:
        assert metric_names(expr), f"{where}: no metric in {expr}"
        for name in metric_names(expr):
            used.setdefault(name, []).append(where)
    missing = {name: places for name, places in used.items() if name not in metrics}
    assert not missing, f"metrics no server exposes: {missing}"
    for where, expr in queries:
        for name in re.findall(r"\b(?:rate|increase|irate)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", expr):
            assert metrics[name]["type"] in ("counter", "histogram", "summary"), f"{where}: rate of a gauge {name}"
        for name, labels in matchers(expr):
            if metrics[name]["labels"]:  # a family with samples in the scrape: its labels are known
                unknown = labels - metrics[name]["labels"] - TARGET_LABELS
                assert not unknown, f"{where}: {name} has no label {unknown}"
    assert used.keys() >= {"textclf_requests_total", "textclf_drift_detected", "textclf_accuracy_drop_detected",
                           "textclf_live_accuracy", "textclf_feedback_total", "textclf_events_total"}


def test_outcome_values_are_the_predictors():
    from textclf.serving.metrics import OUTCOMES

    for where, expr in rule_queries() + dashboard_queries(load_dashboard()):
        for value in re.findall(r'outcome\s*!?=~?\s*"([^"]*)"', expr):
            if "textclf_requests_total" in expr:
                assert value in OUTCOMES, f"{where}: outcome {value!r}"


# --- the kustomization -----------------------------------------------------------------------------------------


def kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def test_kustomization_lists_the_rule_and_generates_the_dashboard():
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [RULES.name]
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == [f"textclf.json={DASHBOARD.name}"]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    monitor = yaml.safe_load((MANIFESTS / "monitor" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == monitor["namespace"], "alerts and dashboard beside the monitor"


@pytest.mark.skipif(kustomize() is None, reason="neither kustomize nor kubectl (kubectl kustomize) is installed")
def test_kustomize_build_renders_the_rule_and_the_dashboard_configmap():
    result = subprocess.run([*kustomize(), str(MONITORING)], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    built = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    assert set(built) == {"PrometheusRule", "ConfigMap"}
    configmap, rule = built["ConfigMap"], built["PrometheusRule"]
    assert core_errors(configmap) == []
    assert configmap["metadata"]["name"] == "textclf-grafana-dashboard"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"textclf.json": DASHBOARD.read_text()}
    assert rule["spec"] == load_rule()["spec"] and rule_errors(rule) == []
    for resource in (configmap, rule):
        assert resource["metadata"]["namespace"] == "textclf"
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "textclf-pipelines"
