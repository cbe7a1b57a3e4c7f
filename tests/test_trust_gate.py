"""The contrast set (its procedure's invariants, on the real AG News test file), the error analysis on constructed
predictions, the registration gate over evaluate/export outputs, and how the pipelines wire it: registration only
when it passes (training, distillation), an archive with the reason (retraining)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import requires_ag_news, stratified_head, write_csv_gz
from textclf.errors import ConfigError, DataValidationError
from textclf.evaluate.analysis import error_analysis
from textclf.robustness.contrast import (
    HELD_OUT,
    REPORT,
    contrast_rows,
    is_held_out,
    load_contrast_set,
    score_contrast,
    text_sha256,
)
from textclf.robustness.robustness import ROBUSTNESS_FILE, gate_evaluation
from textclf.serving.contract import INT8_ONNX_FILE

LABELS = ["Business", "Sci/Tech", "Sports", "World"]


@pytest.fixture(scope="module")
def official_test(ag_news_frames, tmp_path_factory):
    """The official test file as the ingest stage reads it (row = its 1-based line, title kept)."""
    from textclf.config import IngestConfig
    from textclf.ingest import ingest_dataset

    root = tmp_path_factory.mktemp("ag_news_official_test")
    write_csv_gz(stratified_head(ag_news_frames["train"], 10), root / "data" / "train.csv.gz")
    write_csv_gz(ag_news_frames["test"], root / "data" / "test.csv.gz")
    ingest_dataset(IngestConfig(dataset_uri=str(root / "data")), root / "ingested")
    return pd.read_parquet(root / "ingested" / "test.parquet")


def test_the_contrast_set_follows_its_procedure():
    edits = load_contrast_set()
    assert len(edits) >= 20 and len({e.id for e in edits}) == len(edits)
    held_out = [e for e in edits if e.held_out]
    assert 0.2 <= len(held_out) / len(edits) <= 0.45 and all(is_held_out(e.id) for e in held_out)
    for edit in edits:
        assert edit.label in LABELS and 1 <= len(edit.spans) <= 4
        assert edit.apply("some other text") is None  # only the text it was written for
    with pytest.raises(ConfigError, match="no contrast set"):
        load_contrast_set("imdb")


@requires_ag_news
def test_every_contrast_edit_applies_to_the_official_test_file_and_changes_the_label(official_test):
    frame = contrast_rows(official_test, load_contrast_set())
    assert len(frame) == len(load_contrast_set())
    assert (frame["label"] != frame["contrast_label"]).all() and (frame["text"] != frame["original"]).all()
    by_row = official_test.set_index("row")
    for row in frame.itertuples():
        assert text_sha256(by_row.loc[row.row, "text"]) == text_sha256(row.original)
        assert abs(len(row.text) - len(row.original)) < 0.6 * len(row.original)  # a small edit, not a new text
    # A model that reads only the first word: the parts are scored separately, the originals against their labels.
    first_word = {t: i % 4 for i, t in enumerate(sorted({t.split()[0] for t in official_test["text"]}))}
    scored = score_contrast(lambda texts: np.array([first_word.get(t.split()[0], 0) for t in texts]),
                            official_test, LABELS)
    assert scored["applicable"] == len(frame)
    assert scored[REPORT]["rows"] + scored[HELD_OUT]["rows"] == len(frame)
    assert 0 <= scored[REPORT]["consistency"] <= min(scored[REPORT]["accuracy_original"],
                                                    scored[REPORT]["accuracy_contrast"])


def test_error_analysis_of_constructed_predictions():
    test = pd.DataFrame({"row": range(1, 7), "text": ["a b", "a b c", "a b c d", "one", "a b c d e f", "x y z"]})
    truth = np.array([0, 0, 1, 1, 2, 3])
    probabilities = np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0.3, 0.7, 0, 0],
                              [0.6, 0.4, 0, 0], [0, 0, 1.0, 0], [0, 0.55, 0, 0.45]])
    analysis = error_analysis(test, truth, probabilities, LABELS)
    assert analysis["errors"] == 3
    assert [(p["true"], p["predicted"], p["count"]) for p in analysis["confused_pairs"]] == [
        ("Business", "Sci/Tech", 1), ("Sci/Tech", "Business", 1), ("World", "Sci/Tech", 1)]
    assert analysis["confused_pairs"][0]["share_of_true_class"] == 0.5
    assert [m["row"] for m in analysis["confident_mistakes"]] == [2, 4, 6]  # 0.8, 0.6, 0.55
    assert sum(b["rows"] for b in analysis["by_length"]) == 6
    by_bin = {b["low"]: b for b in analysis["by_confidence"] if b["count"]}
    assert by_bin[0.5]["count"] == 1 and by_bin[0.5]["accuracy"] == 0.0  # 0.55: wrong


def _stage_outputs(tmp_path, accuracy=0.9, worst=3.0, int8_bytes=2_000_000, robustness=True):
    evaluation, onnx = tmp_path / "evaluation", tmp_path / "onnx"
    evaluation.mkdir()
    onnx.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"test": {"accuracy": accuracy}}))
    if robustness:
        (evaluation / ROBUSTNESS_FILE).write_text(json.dumps({"worst_drop_points": worst}))
    (onnx / INT8_ONNX_FILE).write_bytes(b"\0" * int8_bytes)
    return evaluation, onnx


def test_registration_gate_reads_the_stage_outputs(tmp_path):
    evaluation, onnx = _stage_outputs(tmp_path)
    assert gate_evaluation(evaluation, onnx).passed  # every limit off
    assert gate_evaluation(evaluation, onnx, min_accuracy=0.85, max_robustness_drop=5, max_model_mb=3).passed
    missed = gate_evaluation(evaluation, onnx, min_accuracy=0.95, max_robustness_drop=2.5, max_model_mb=1.5)
    assert not missed.passed and len(missed.reasons) == 3
    assert "2.0 MB, more than max_model_mb 1.5" in missed.reasons[2]
    with pytest.raises(ConfigError, match="gate limits"):
        gate_evaluation(evaluation, onnx, min_accuracy=1.5)
    with pytest.raises(DataValidationError, match="not found"):
        gate_evaluation(tmp_path / "nowhere", onnx)


def test_a_drop_limit_without_robustness_suites_is_a_reason(tmp_path):
    evaluation, onnx = _stage_outputs(tmp_path, robustness=False)
    assert gate_evaluation(evaluation, onnx, min_accuracy=0.5).passed
    decision = gate_evaluation(evaluation, onnx, max_robustness_drop=5)
    assert not decision.passed and "robustness_suites=none" in decision.reasons[0]


def test_vetoed_gate_decision_archives_with_the_reason():
    from textclf.gate import decide
    from textclf.gate.mcnemar import vetoed

    decision = decide([True] * 90 + [False] * 10, [True] * 60 + [False] * 40)
    assert decision.promote
    archived = vetoed(decision, "registration gate: the model is 120.0 MB")
    assert not archived.promote and archived.verdict == "archive"
    assert archived.reason.startswith("registration gate: the model is 120.0 MB (McNemar: ")
    assert archived.p_value == decision.p_value


def _tasks(path):
    """name -> task of every DAG in a compiled pipeline, with the trigger condition of the DAG task holding it."""
    spec = yaml.safe_load(path.read_text())
    components = spec["components"]
    found = {}

    def walk(dag, conditions):
        for name, task in dag["tasks"].items():
            condition = task.get("triggerPolicy", {}).get("condition")
            now = conditions + ([condition] if condition else [])
            found[name] = (task, now)
            inner = components[task["componentRef"]["name"]].get("dag")
            if inner:
                walk(inner, now)

    walk(spec["root"]["dag"], [])
    return found


@pytest.mark.parametrize("pipeline", ["training/training_pipeline.yaml", "distillation/distillation_pipeline.yaml"])
def test_compiled_pipelines_register_only_when_the_gate_passes(pipeline):
    from pathlib import Path

    import textclf.pipelines as pipelines

    tasks = _tasks(Path(pipelines.__file__).parent / pipeline)
    gate, _ = tasks["registration-gate-op"]
    assert set(gate["inputs"]["parameters"]) >= {"min_accuracy", "max_robustness_drop", "max_model_mb"}
    _, conditions = tasks["register-op"]
    assert "inputs.parameter_values['pipelinechannel--registry_uri'] != ''" in conditions
    assert "inputs.parameter_values['pipelinechannel--registration-gate-op-passed'] == true" in conditions


def test_compiled_retraining_pipeline_hands_the_gate_verdict_to_the_promotion_gate():
    from pathlib import Path

    import textclf.pipelines as pipelines

    tasks = _tasks(Path(pipelines.__file__).parent / "retraining/retraining_pipeline.yaml")
    gate, _ = tasks["gate-op"]
    wired = gate["inputs"]["parameters"]
    assert wired["registration_passed"]["taskOutputParameter"] == {"outputParameterKey": "passed",
                                                                   "producerTask": "registration-gate-op"}
    assert wired["registration_reasons"]["taskOutputParameter"]["outputParameterKey"] == "reasons"


def test_registration_gate_feeds_the_promotion_gate_under_kfp_local(tmp_path, monkeypatch):
    """``registration_gate_op`` -> ``gate_op`` in kfp.local subprocesses, wired as the retraining pipeline wires
    them: a first model the promotion gate would promote is archived when it misses a size limit."""
    import os

    from kfp import dsl
    from kfp.dsl import Artifact, Model

    from textclf.gate.component import gate_op
    from textclf.pipelines.local import init_local_runner
    from textclf.robustness.component import registration_gate_op

    evaluation, onnx = _stage_outputs(tmp_path)
    pd.DataFrame({"row": range(10), "label": ["Sports"] * 10, "predicted": ["Sports"] * 9 + ["World"]}).to_parquet(
        evaluation / "predictions.parquet", index=False)
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))

    @dsl.pipeline(name="registration-gate-test")
    def gates(evaluation_uri: str, onnx_uri: str, max_model_mb: float) -> str:
        evaluated = dsl.importer(artifact_uri=evaluation_uri, artifact_class=Artifact, reimport=False)
        exported = dsl.importer(artifact_uri=onnx_uri, artifact_class=Model, reimport=False)
        registration = registration_gate_op(evaluation=evaluated.output, onnx_model=exported.output,
                                            min_accuracy=0.5, max_model_mb=max_model_mb)
        return gate_op(candidate_evaluation=evaluated.output, production_evaluation=evaluated.output,
                       has_production=False, registration_passed=registration.outputs["passed"],
                       registration_reasons=registration.outputs["reasons"]).outputs["Output"]

    root = tmp_path / "pipeline_root"
    init_local_runner(root)
    assert gates(evaluation_uri=str(evaluation), onnx_uri=str(onnx), max_model_mb=5.0).output == "promote"
    assert gates(evaluation_uri=str(evaluation), onnx_uri=str(onnx), max_model_mb=1.0).output == "archive"
    decisions = [json.loads(p.read_text()) for p in sorted(root.rglob("decision.json"), key=os.path.getmtime)]
    assert decisions[-1]["reason"].startswith("registration gate: the model is 2.0 MB, more than max_model_mb 1.0")
