"""The retraining pipeline end to end under kfp.local on a small real AG News slice: the first candidate goes through
the gate's promote branch (no production model yet), a second one, trained with newly labelled rows, through the
archive branch; the registry and the rendered artifacts show each outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import stratified_head, write_csv_gz

from textclf.registry import ARCHIVED, PRODUCTION, ModelRegistry
from textclf.trigger import RetrainRequest, TriggerBackend, check_data_growth, make_trigger

pytestmark = pytest.mark.slow


def run_retraining(arguments: dict, root: Path) -> Path:
    from textclf.pipelines.local import run_pipeline_locally
    from textclf.pipelines.retraining.pipeline import retraining_pipeline

    return run_pipeline_locally(retraining_pipeline, arguments, root).run_dir


@pytest.fixture(scope="module")
def retraining_runs(ag_news_frames, tmp_path_factory):
    root = tmp_path_factory.mktemp("retraining")
    train = stratified_head(ag_news_frames["train"], 60, seed=21)
    write_csv_gz(train, root / "data" / "train.csv.gz")
    write_csv_gz(stratified_head(ag_news_frames["test"], 25, seed=21), root / "data" / "test.csv.gz")
    write_csv_gz(stratified_head(ag_news_frames["train"].drop(train.index), 10, seed=22), root / "new" / "train.csv.gz")
    common = {
        "dataset_uri": str(root / "data"), "registry_uri": str(root / "registry"), "epochs": 1.0,
        "learning_rate": 2e-4, "validation_fraction": 0.2, "checkpoint_steps": 50, "early_stopping_patience": 0,
        "seed": 4,
    }
    first = run_retraining({**common, "trigger_reason": "initial model"}, root / "pipeline_root")
    growth = check_data_growth(str(root / "new"), str(root / "registry"))
    # The second run goes through the local trigger backend. min_improvement 0.5 (50 points) cannot be met: the
    # candidate must take the archive branch.
    trigger = make_trigger("local", pipeline_root=root / "pipeline_root")
    fired = trigger.fire(RetrainRequest(growth.reason, {**common, "new_rows_uri": str(root / "new"),
                                                        "min_improvement": 0.5}))
    return {"first": first, "second": Path(fired.run_id), "fired": fired, "growth": growth,
            "registry": ModelRegistry(root / "registry")}


def decision(run_dir: Path) -> dict:
    return json.loads((run_dir / "gate-op" / "decision" / "decision.json").read_text())


def test_first_candidate_is_promoted_because_there_is_no_production_model(retraining_runs):
    first = retraining_runs["first"]
    assert decision(first)["decision"] == "promote"
    assert "no production model" in decision(first)["reason"]
    assert (first / "promote-op").is_dir() and not (first / "archive-op").exists()
    manifest_note = (first / "promote-op" / "manifest").read_text()
    assert "KServe cannot download from local disk" in manifest_note  # a local registry renders no manifest
    # rollout_mode "registry" (the default): no canary; the drift reference is rebuilt for the promoted model.
    assert not (first / "rollout-op").exists()
    reference = json.loads((first / "drift-reference-op-2" / "reference" / "reference.json").read_text())
    assert reference["rows"] > 0 and (first / "drift-reference-op-2" / "reference" / "reference.parquet").is_file()


def test_second_candidate_is_archived_with_the_gate_reason(retraining_runs):
    second, registry = retraining_runs["second"], retraining_runs["registry"]
    verdict = decision(second)
    assert verdict["decision"] == "archive" and verdict["has_production"] is True
    assert verdict["n"] == 100  # both models scored on the same 100 test rows
    assert (second / "archive-op").is_dir() and not (second / "promote-op").exists()
    assert not list(second.glob("drift-reference-op*"))  # nothing promoted, the reference stays
    rows = {row["version"]: row for row in registry.list_versions()}
    first_version, second_version = sorted(rows)
    assert rows[first_version]["status"] == PRODUCTION
    assert rows[second_version]["status"] == ARCHIVED
    assert rows[second_version]["archived_reason"] == f"promotion gate: {verdict['reason']}"
    assert registry.metadata(second_version)["notes"] == retraining_runs["growth"].reason
    history = registry.index()["history"]
    assert [event["action"] for event in history] == ["promote", "archive"]


def test_the_second_candidate_trained_on_the_newly_labelled_rows(retraining_runs):
    report = json.loads((retraining_runs["second"] / "validate-split-op" / "splits" / "validation_report.json")
                        .read_text())
    assert report["rows_in"]["new_rows"] == 40
    assert sum(report["new_rows_used"].values()) == 40


def test_production_was_scored_on_the_candidates_test_set(retraining_runs):
    second = retraining_runs["second"]
    candidate = pd.read_parquet(second / "evaluate-op" / "evaluation" / "predictions.parquet")
    production = pd.read_parquet(second / "evaluate-production-op" / "evaluation" / "predictions.parquet")
    assert candidate["label"].tolist() == production["label"].tolist()



def test_data_growth_check_against_the_production_model(retraining_runs):
    growth = retraining_runs["growth"]
    assert growth.new_rows == 40 and growth.current_rows == 240  # 240 train + validation rows behind production
    assert growth.ratio == pytest.approx(40 / 240) and growth.due
    assert "16.7% of the 240 rows" in growth.reason


def test_local_trigger_reports_the_run_and_the_gate_decision(retraining_runs):
    fired = retraining_runs["fired"]
    assert fired.backend is TriggerBackend.LOCAL
    assert fired.details["decision"]["decision"] == "archive"
    assert Path(fired.run_id).is_dir()


def test_local_trigger_details_come_from_the_pipelines_declared_outputs(retraining_runs):
    fired, registry = retraining_runs["fired"], retraining_runs["registry"]
    assert fired.details["registered_version"] == max(row["version"] for row in registry.list_versions())
    outputs = fired.details["outputs"]
    assert {"model", "onnx_model", "splits", "evaluation", "decision"} <= set(outputs)
    assert all(Path(path).exists() and path.startswith(fired.run_id) for path in outputs.values())
    assert (Path(fired.details["logs_dir"]) / "gate-op.log").is_file()
