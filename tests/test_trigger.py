"""Retraining triggers up to the network: the Kubeflow backend and the recurring run against a local fake of the
KFP v2beta1 REST API driven by the real ``kfp.Client`` (exact requests checked), the Vertex AI backend built offline
with anonymous credentials. The local backend really runs the pipeline in tests/test_retraining.py."""

from __future__ import annotations

from typing import Any

import deploy_fakes
import pytest
import yaml
from deploy_fakes import kfp, kfp_server  # noqa: F401  (pytest fixtures)

from textclf.deploy.kubeflow import KubeflowConfig
from textclf.deploy.vertex import VertexPipelineConfig
from textclf.errors import ConfigError, RegistryError
from textclf.trigger import (
    RecurringRunConfig,
    RetrainRequest,
    TriggerBackend,
    check_data_growth,
    create_recurring_run,
    make_trigger,
    retraining_package,
)

ARGUMENTS = {"dataset_uri": "s3://textclf-data/ag_news", "registry_uri": "s3://textclf-models/registry",
             "new_rows_uri": "s3://textclf-data/ag_news_labelled/2026-11", "min_improvement": 0.02}
REASON = "drift: label distribution p=1.2e-9 < 0.0167 on 500 requests"


def retraining_spec() -> dict[str, Any]:
    return next(iter(yaml.safe_load_all(retraining_package().read_text())))


def test_kubeflow_trigger_runs_the_compiled_retraining_pipeline(kfp):
    host, state = kfp
    trigger = make_trigger("kubeflow", config=KubeflowConfig(host=host, token="t0ken", namespace="team-a"))
    result = trigger.fire(RetrainRequest(REASON, ARGUMENTS))

    assert result.backend is TriggerBackend.KUBEFLOW and result.run_id == "run-1"
    assert state.uploads == [retraining_package().read_bytes()]
    run = state.requests[-1]
    assert (run.method, run.path) == ("POST", "/apis/v2beta1/runs")
    assert run.headers["authorization"] == "Bearer t0ken"
    body = run.json()
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "textclf-retraining"
    assert body["pipeline_spec"]["root"] == retraining_spec()["root"]
    assert body["runtime_config"]["parameters"] == {**ARGUMENTS, "trigger_reason": REASON}


def test_trigger_refuses_bad_parameters_before_any_request(kfp):
    host, state = kfp
    trigger = make_trigger("kubeflow", config=KubeflowConfig(host=host))
    with pytest.raises(ConfigError, match="needs a value for registry_uri"):
        trigger.fire(RetrainRequest(REASON, {"dataset_uri": "s3://d"}))
    with pytest.raises(ConfigError, match="has no parameter learning_rat\\b"):
        trigger.fire(RetrainRequest(REASON, {**ARGUMENTS, "learning_rat": 1e-4}))
    assert state.requests == []


def recurring_answer(original):
    """The fake server's answers plus ``POST /apis/v2beta1/recurringruns``."""
    def answer(state, request):
        if (request.method, request.path) == ("POST", "/apis/v2beta1/recurringruns"):
            return 200, {**request.json(), "recurring_run_id": "recurring-1", "status": "ENABLED"}
        return original(state, request)
    return answer


def test_weekly_recurring_run(kfp, monkeypatch):
    host, state = kfp
    monkeypatch.setattr(deploy_fakes, "answer", recurring_answer(deploy_fakes.answer))
    config = RecurringRunConfig(kubeflow=KubeflowConfig(host=host, token="t0ken"), arguments=ARGUMENTS)
    assert create_recurring_run(config) == "recurring-1"
    body = state.requests[-1].json()
    assert state.requests[-1].path == "/apis/v2beta1/recurringruns"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert (body["max_concurrency"], body["no_catchup"], body["mode"]) == (1, True, "ENABLE")
    assert body["pipeline_spec"]["root"] == retraining_spec()["root"]
    assert body["runtime_config"]["parameters"] == ARGUMENTS


def test_recurring_run_needs_a_six_field_cron():
    with pytest.raises(ConfigError, match="6 fields"):
        RecurringRunConfig(kubeflow=KubeflowConfig(host="http://127.0.0.1:1"), cron_expression="0 3 * * 1")


def test_vertex_trigger_builds_the_retraining_job_offline(monkeypatch):
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setenv("NO_GCE_CHECK", "true")
    config = VertexPipelineConfig(project="textclf-prod", location="europe-west4",
                                  pipeline_root="gs://textclf-pipelines/root")
    trigger = make_trigger("vertex", config=config, credentials=AnonymousCredentials())
    body = trigger.build_job(RetrainRequest(REASON, ARGUMENTS)).to_dict()
    assert body["pipelineSpec"]["root"] == retraining_spec()["root"]
    assert body["runtimeConfig"] == {"gcsOutputDirectory": "gs://textclf-pipelines/root",
                                     "parameterValues": {**ARGUMENTS, "trigger_reason": REASON}}


def test_unknown_backend_and_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown trigger backend 'airflow'"):
        make_trigger("airflow")
    with pytest.raises(ConfigError, match="local trigger"):
        make_trigger("local", root=tmp_path)


def test_data_growth_needs_a_production_model(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "train.csv").write_text("label,title,description\n1,a,b\n")
    with pytest.raises(RegistryError, match="no production model"):
        check_data_growth(str(tmp_path / "new"), str(tmp_path / "registry"))


class FakeDriftResult:
    def summary(self) -> str:
        return "check 20261122T0400: DRIFT in label, text_domain (triggered); 500 rows"


def test_monitor_callback_starts_a_kubeflow_run_from_the_environment(kfp):
    from textclf.trigger import retrain_on_drift, trigger_from_env

    host, state = kfp
    trigger = trigger_from_env("kubeflow", environ={"KFP_HOST": host, "KFP_TOKEN": "in-cluster"})
    on_drift = retrain_on_drift(trigger, ARGUMENTS)
    fired = on_drift(FakeDriftResult())
    assert fired.run_id == "run-1"
    body = state.requests[-1].json()
    assert state.requests[-1].headers["authorization"] == "Bearer in-cluster"
    assert body["runtime_config"]["parameters"]["trigger_reason"] == f"drift: {FakeDriftResult().summary()}"


def test_triggers_from_the_environment_say_what_is_missing(tmp_path):
    from textclf.trigger import LocalTrigger, VertexTrigger, retrain_on_drift, trigger_from_env

    with pytest.raises(ConfigError, match=r"no Kubeflow Pipelines host: pass --host or set KFP_HOST"):
        trigger_from_env("kubeflow", environ={})
    with pytest.raises(ConfigError, match=r"needs \$VERTEX_PROJECT and \$VERTEX_PIPELINE_ROOT"):
        trigger_from_env("vertex", environ={})
    vertex = trigger_from_env("vertex", environ={"VERTEX_PROJECT": "textclf-prod", "VERTEX_PIPELINE_ROOT": "gs://textclf-pipelines/root"})
    assert isinstance(vertex, VertexTrigger) and vertex.config.pipeline_root == "gs://textclf-pipelines/root"
    local = trigger_from_env("local", environ={}, pipeline_root=tmp_path)
    assert isinstance(local, LocalTrigger)
    with pytest.raises(ConfigError, match="needs a value for registry_uri"):  # at start-up, not at the first drift
        retrain_on_drift(local, {"dataset_uri": "s3://d"})
