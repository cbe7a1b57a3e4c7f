"""bench-quality's bookkeeping (the benchmark itself takes hours and runs by `make bench-quality`, not in tests):
its settings are checked before work, a finished step is not run again, and the verdict only counts the target data."""

from __future__ import annotations

import pytest

from textclf.benchmarks.quality_bench import (
    TARGETS,
    QualitySettings,
    Steps,
    markdown,
    student_name,
    verdict,
)
from textclf.errors import ConfigError


@pytest.mark.parametrize("bad", [{"teacher_epochs": 1.0}, {"distill_alpha": 1.5}, {"distill_temperature": 0.0},
                                 {"student_layers": (0,)}, {"ensemble_method": "median"}, {"speed_rounds": 0},
                                 {"extra_teacher_seeds": (42,)}, {"extra_teacher_seeds": (7, 7)}, {"precision": "fp8"}])
def test_bad_settings_are_refused_before_any_work(bad):
    with pytest.raises(ConfigError):
        QualitySettings(dataset_uri="/data/ag_news_64k", **bad)


def test_the_work_directory_is_per_data_and_each_model_is_named_by_what_it_depends_on():
    base = QualitySettings(dataset_uri="/data/ag_news_64k")
    sweep = QualitySettings(dataset_uri="/data/ag_news_64k", distill_temperature=4.0, speed_seconds=1.0)
    assert base.data_key() == sweep.data_key()  # a sweep reuses the splits, the teacher, TF-IDF and the ensemble
    assert base.data_key() != QualitySettings(dataset_uri="/data/ag_news_64k", max_train_rows=6000).data_key()
    before, after = base.model_dirs(), sweep.model_dirs()
    for shared in ("teacher", "classical", "ensemble", "baseline", student_name(3, False)):
        assert before[shared] == after[shared], shared
    assert before[student_name(3, True)] != after[student_name(3, True)]
    assert "T4" in after[student_name(3, True)] and "e2" in after["teacher"]
    deeper = QualitySettings(dataset_uri="/data/ag_news_64k", teacher_epochs=3.0).model_dirs()
    assert deeper["teacher"] != before["teacher"] and deeper["ensemble"] != before["ensemble"]
    assert deeper[student_name(3, False)] != before[student_name(3, False)]  # initialised from another teacher
    seeds = QualitySettings(dataset_uri="/data/ag_news_64k", extra_teacher_seeds=(7,)).model_dirs()
    assert seeds["teacher_s7"] == "teacher_e2_s7" and seeds["teacher"] == before["teacher"]
    assert seeds["ensemble"] != before["ensemble"] and seeds[student_name(3, False)] == before[student_name(3, False)]
    bf16 = QualitySettings(dataset_uri="/data/ag_news_64k", precision="bf16")
    assert bf16.data_key() == base.data_key() and bf16.train_config(2.0).precision == "bf16"
    bf16_dirs = bf16.model_dirs()  # a bf16 transformer never stands in for an fp32 one; the TF-IDF model is shared
    assert bf16_dirs["classical"] == before["classical"]
    for transformer in ("teacher", "ensemble", "baseline", student_name(3, True), student_name(3, False)):
        assert bf16_dirs[transformer] != before[transformer] and "bf16" in bf16_dirs[transformer], transformer


def test_a_finished_step_is_not_run_again_and_other_settings_start_over(tmp_path):
    output = tmp_path / "bench.json"
    calls = []

    def step():
        calls.append(1)
        return {"value": len(calls)}

    header = {"work_dir": "runs/a", "settings": {"distill_temperature": 2.0}}
    assert Steps(output, header).run("train", step)["value"] == 1
    assert Steps(output, header).run("train", step)["value"] == 1 and len(calls) == 1  # resumed from the JSON
    other_settings = {"work_dir": "runs/a", "settings": {"distill_temperature": 4.0}}
    assert Steps(output, other_settings).run("train", step)["value"] == 1  # same data: its steps are kept
    assert Steps(output, {"work_dir": "runs/b", "settings": {}}).run("train", step)["value"] == 2


def _row(model, kind, accuracy, ece_after, b32=None):
    return {"model": model, "kind": kind, "encoder_layers": None, "test_accuracy": accuracy, "test_macro_f1": accuracy,
            "ece_before": 0.03, "ece_after": ece_after, "temperature": 1.2, "train_seconds": 10.0,
            "int8_texts_per_s_batch1": b32, "int8_texts_per_s_batch32": b32, "size_bytes": 1_000_000}


@pytest.fixture()
def rows():
    return [
        _row("teacher", "transformer", 0.935, 0.010, b32=280.0),
        _row("classical", "classical", 0.921, 0.012, b32=9000.0),
        _row("ensemble_vote", "ensemble", 0.941, 0.011),
        _row("ensemble_stack", "ensemble", 0.939, 0.009),
        _row(student_name(3, True), "transformer", 0.931, 0.014, b32=520.0),
        _row(student_name(3, False), "transformer", 0.926, 0.013, b32=520.0),
    ]


def test_verdict_on_the_target_data(rows):
    found = verdict(rows, QualitySettings(dataset_uri="/data/ag_news_64k"))
    assert found["best_ensemble"] == "ensemble_vote" and found["on_target_data"]
    assert found["student_k3_int8_batch32_speedup_vs_teacher"] == pytest.approx(520 / 280)
    assert found["distillation_gain_k3"] == pytest.approx(0.005)
    assert found["worst_calibrated_ece_served"] == 0.014  # ensembles are not served; the rest are
    assert all(found["meets"].values()), found["meets"]


def test_a_pilot_or_other_data_never_meets_the_targets(rows):
    for settings in (QualitySettings(dataset_uri="/data/ag_news_64k", max_train_rows=6000),
                     QualitySettings(dataset_uri="/data/ag_news")):
        found = verdict(rows, settings)
        assert not found["on_target_data"] and not any(found["meets"].values())


def test_a_short_target_is_reported_as_short(rows):
    rows[4]["test_accuracy"] = TARGETS["student_accuracy"] - 0.001
    assert not verdict(rows, QualitySettings(dataset_uri="/data/ag_news_64k"))["meets"]["student_accuracy"]


def test_markdown_has_one_row_per_model(rows):
    state = {"settings": {"dataset_uri": "/data/ag_news_64k"}, "steps": {"data": {"rows": {"train": 61628}}},
             "git_commit": "abc", "table": rows, "verdict": {"best_ensemble": "ensemble_vote"}}
    text = markdown(state)
    for row in rows:
        assert f"| {row['model']} |" in text
    assert "61628" in text and "ensemble_vote" in text
