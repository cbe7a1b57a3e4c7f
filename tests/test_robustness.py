"""Robustness suites: each perturbation does what it says, deterministically; a suite is scored against the same
rows unperturbed; the registration gate names every limit a model misses; a real (tiny) model is scored on real
AG News rows with every suite."""


import random

import numpy as np
import pandas as pd
import pytest

from conftest import requires_ag_news
from textclf.errors import ConfigError
from textclf.robustness.robustness import (
    ROBUSTNESS_FILE,
    ROBUSTNESS_REPORT_FILE,
    RobustnessConfig,
    RobustnessSuite,
    add_typos,
    perturb,
    remove_agency_tags,
    robustness_gate,
    score_suites,
)

FRAME = pd.DataFrame({
    "row": [1, 2, 3],
    "text": ["Oil Rises (Reuters) Reuters - Oil prices rose on Monday as supply fell in the Gulf region again.",
             "Cup final tonight AP - The team plays at home.",
             "Short note"],
    "label": ["Business", "Sports", "World"],
    "title": ["Oil Rises", "Cup final tonight", "Short note"],
})


def test_agency_tags_are_removed_and_other_dashes_kept():
    assert remove_agency_tags(FRAME["text"][0]) == ("Oil Rises Oil prices rose on Monday as supply fell in the "
                                                    "Gulf region again.")
    assert remove_agency_tags("Ice melts (AFP) AFP - Fast.") == "Ice melts Fast."
    assert remove_agency_tags("Spin-offs - a review") == "Spin-offs - a review"


def test_typos_swap_inner_letters_and_are_seeded():
    text = "The quick brown foxes jumped over lazy dogs"
    once = add_typos(text, 0.5, random.Random("0:1"))
    assert once == add_typos(text, 0.5, random.Random("0:1")) and once != text
    for before, after in zip(text.split(), once.split(), strict=True):
        assert sorted(before) == sorted(after) and before[0] == after[0] and before[-1] == after[-1]


def test_each_suite_applies_to_the_rows_it_can():
    config = RobustnessConfig(first_words=5)
    assert perturb(FRAME, RobustnessSuite.TITLE_ONLY, config).tolist() == ["Oil Rises", "Cup final tonight"]
    assert perturb(FRAME, RobustnessSuite.DESCRIPTION_ONLY, config).tolist()[1] == "AP - The team plays at home."
    assert perturb(FRAME, RobustnessSuite.FIRST_WORDS, config).tolist() == ["Oil Rises (Reuters) Reuters -",
                                                                            "Cup final tonight AP -"]
    assert list(perturb(FRAME, RobustnessSuite.NO_AGENCY_TAGS, config).index) == [0, 1]
    assert perturb(FRAME, RobustnessSuite.UPPERCASE, config)[2] == "SHORT NOTE"
    assert perturb(FRAME, RobustnessSuite.HTML_MARKUP, config)[2] == "<p>Short note</p>"
    no_titles = FRAME.drop(columns=["title"])
    assert perturb(no_titles, RobustnessSuite.TITLE_ONLY, config).empty  # single-column data: not applicable


def test_a_suite_is_scored_against_the_same_rows_unperturbed():
    labels = ["Business", "Sports", "World"]

    right = dict(zip(FRAME["text"], range(3), strict=True))

    def predict(texts):  # right on the original texts, "World" for upper case, "Business" for anything else
        return np.array([right.get(t, labels.index("World") if t.isupper() else 0) for t in texts])

    ids = np.array([0, 1, 2])
    base, suites = score_suites(predict, FRAME, ids, RobustnessConfig(suites=("uppercase", "title_only")))
    assert base == 1.0
    assert suites["uppercase"] == {**suites["uppercase"], "rows": 3, "accuracy_original": 1.0,
                                   "accuracy_perturbed": pytest.approx(1 / 3), "flipped": 2}
    assert suites["uppercase"]["drop_points"] == pytest.approx(100 * 2 / 3)
    assert suites["title_only"]["rows"] == 2 and suites["title_only"]["accuracy_perturbed"] == 0.5


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown robustness suite 'leet'"):
        RobustnessConfig(suites=("lowercase", "leet"))
    assert RobustnessConfig(suites="lowercase, typos").suites == ("lowercase", "typos")
    with pytest.raises(ConfigError, match="first_words must be >= 1"):
        RobustnessConfig(first_words=0)


def test_gate_names_every_limit_a_model_misses():
    assert robustness_gate(0.9, 3.0, 30_000_000).passed  # every limit off
    decision = robustness_gate(0.85, 6.5, 120_000_000, min_accuracy=0.9, max_robustness_drop=5.0, max_model_mb=100)
    assert not decision.passed and len(decision.reasons) == 3
    assert "test accuracy 0.8500 is below min_accuracy 0.9000" in decision.reasons[0]
    assert "drops 6.50 points, more than max_robustness_drop 5.00" in decision.reasons[1]
    assert "120.0 MB, more than max_model_mb 100.0" in decision.reasons[2]
    assert robustness_gate(0.95, 1.0, 1, min_accuracy=0.9, max_robustness_drop=5.0, max_model_mb=100).passed
    with pytest.raises(ConfigError, match="gate limits must be >= 0"):
        robustness_gate(0.9, 1.0, 1, max_model_mb=-1)


@requires_ag_news
def test_a_real_model_is_scored_on_every_suite(tiny_model, small_splits, tmp_path):
    from textclf.robustness import evaluate_robustness
    from textclf.provenance import read_json

    result = evaluate_robustness(tiny_model, small_splits, RobustnessConfig(max_rows=60), tmp_path / "robustness")
    written = read_json(tmp_path / "robustness" / ROBUSTNESS_FILE)
    assert set(written["suites"]) == {s.value for s in RobustnessSuite}
    assert (written["test_rows"], written["test_rows_in_split"]) == (60, 200)  # a stratified sample
    assert 0.25 < written["base_accuracy"] <= 1
    for name, suite in written["suites"].items():
        assert suite["rows"] > 0, name  # AG News rows have titles, agency tags and more than 10 words
        assert suite["drop_points"] == pytest.approx(100 * (suite["accuracy_original"] - suite["accuracy_perturbed"]))
    assert written["suites"]["lowercase"]["drop_points"] == 0.0  # the packaged tokenizer lower-cases
    assert written["suites"]["html_markup"]["flipped"] == 0  # normalise_text strips the markup again
    assert result.worst_drop_points == max(s["drop_points"] for s in written["suites"].values())
    page = (tmp_path / "robustness" / ROBUSTNESS_REPORT_FILE).read_text()
    assert page.count("<tr>") == 1 + len(RobustnessSuite) and "title_only" in page


@requires_ag_news
def test_component_under_kfp_local_reports_the_gate_and_its_reasons(tiny_model, exported_tiny_model, small_splits,
                                                                    tmp_path, monkeypatch):
    """``robustness_op`` in a kfp.local subprocess: scored, its metrics logged, a size limit the model misses."""
    import json
    import os

    from kfp import dsl
    from kfp.dsl import Dataset, Model

    from textclf.pipelines.local import init_local_runner
    from textclf.robustness.component import robustness_op

    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))

    @dsl.pipeline(name="robustness-test")
    def robustness_pipeline(model_uri: str, splits_uri: str, onnx_uri: str) -> str:
        model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
        splits = dsl.importer(artifact_uri=splits_uri, artifact_class=Dataset, reimport=False)
        onnx = dsl.importer(artifact_uri=onnx_uri, artifact_class=Model, reimport=False)
        task = robustness_op(model=model.output, splits=splits.output, onnx_model=onnx.output,
                             suites="uppercase,title_only", max_rows=40, max_model_mb=1.0)
        return task.outputs["reasons"]

    root = tmp_path / "pipeline_root"
    init_local_runner(root)
    reasons = robustness_pipeline(model_uri=str(tiny_model), splits_uri=str(small_splits),
                                  onnx_uri=str(exported_tiny_model)).output
    assert "more than max_model_mb 1.0" in reasons
    (written,) = root.rglob(ROBUSTNESS_FILE)
    assert set(json.loads(written.read_text())["suites"]) == {"uppercase", "title_only"}
