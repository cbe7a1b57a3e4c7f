"""The canary A/B analysis of the serving request log (:mod:`textclf.monitor.abtest`) and ``textclf ab-report``."""

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from textclf.cli.gate import add_gate_commands
from textclf.errors import ConfigError, DataValidationError
from textclf.monitor.abtest import (
    ABTestConfig, analyse_ab_log, assign_variant, read_ab_log, variant_bucket, write_ab_report,
)

LABELS = ["World", "Sports", "Business", "Sci/Tech"]



def test_assignment_is_stable_and_near_the_requested_percent():
    ids = [f"user-{i}" for i in range(10_000)]
    at_10 = [assign_variant(u, 10, salt="exp1") for u in ids]
    assert at_10 == [assign_variant(u, 10.0, salt="exp1") for u in ids]  # stable
    assert 0.09 <= at_10.count("treatment") / len(ids) <= 0.11
    at_50 = [assign_variant(u, 50, salt="exp1") for u in ids]
    assert 0.48 <= at_50.count("treatment") / len(ids) <= 0.52
    # raising the percentage only moves users into treatment
    assert all(b == "treatment" for a, b in zip(at_10, at_50) if a == "treatment")
    assert {assign_variant(u, 0, "exp1") for u in ids} == {"control"}
    assert {assign_variant(u, 100, "exp1") for u in ids} == {"treatment"}
    other_salt = [assign_variant(u, 10, salt="exp2") for u in ids]
    assert other_salt != at_10 and 0.09 <= other_salt.count("treatment") / len(ids) <= 0.11
    assert all(0.0 <= variant_bucket(u, "x") < 100.0 for u in ids[:100])
    with pytest.raises(ConfigError):
        assign_variant("u", 101)


def build_log(control_acc: float, treatment_acc: float, n: int = 2000, seed: int = 0, shared_texts: int = 100,
              treatment_percent: float = 30) -> tuple[list[dict], dict]:
    """Canary log: users hashed to variants; ``shared_texts`` texts are sent by users of both variants."""
    rng = np.random.default_rng(seed)
    records, expect = [], {"correct": {"v1": 0, "v2": 0}, "labelled": {"v1": 0, "v2": 0},
                           "latency": {"v1": [], "v2": []}, "disagree": 0}
    for i in range(n):
        user = f"u{rng.integers(0, 5000)}"
        variant = assign_variant(user, treatment_percent, salt="canary")
        version, acc, base = ("v2", treatment_acc, 20.0) if variant == "treatment" else ("v1", control_acc, 10.0)
        true = LABELS[i % 4]
        predicted = true if rng.random() < acc else LABELS[(i + 1) % 4]
        latency = float(base + rng.exponential(5.0))
        record = {"timestamp": f"2024-05-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00", "text": f"text {i}",
                  "label": predicted, "probabilities": {k: 0.25 for k in LABELS}, "model_version": version,
                  "request_id": f"r{i}", "user_id": user, "variant": variant, "latency_ms": latency,
                  "extra_field": {"ignored": True}}
        if i % 5:  # 80% labelled
            record["true_label"] = true
            expect["labelled"][version] += 1
            expect["correct"][version] += int(predicted == true)
        expect["latency"][version].append(latency)
        records.append(record)
    # the same texts served by both versions: version 2 disagrees on every 4th
    for j in range(shared_texts):
        for version, variant in (("v1", "control"), ("v2", "treatment")):
            label = LABELS[j % 4] if version == "v1" or j % 4 else LABELS[(j + 2) % 4]
            records.append({"text": f"shared {j}", "label": label, "model_version": version, "variant": variant,
                            "request_id": f"s{j}{version}"})
    expect["disagree"] = len([j for j in range(shared_texts) if j % 4 == 0])
    return records, expect


def test_ab_analysis_detects_a_real_difference(tmp_path):
    records, expect = build_log(control_acc=0.80, treatment_acc=0.92)
    log = tmp_path / "ab.jsonl"
    lines = [json.dumps(r) for r in records] + ["{not json", "[1, 2]", json.dumps({"label": "World"}), ""]
    log.write_text("\n".join(lines) + "\n")
    report = analyse_ab_log(log)
    assert report["input"]["malformed_lines"] == 2 and report["input"]["invalid_records"] == 1
    assert report["input"]["records"] == len(records)
    for version in ("v1", "v2"):
        stats = report["versions"][version]
        assert stats["labelled"] == expect["labelled"][version]
        assert stats["accuracy"] == pytest.approx(expect["correct"][version] / expect["labelled"][version])
        lat = np.array(expect["latency"][version])
        assert stats["latency_ms"]["count"] == lat.size
        assert stats["latency_ms"]["p50"] == pytest.approx(np.percentile(lat, 50))
        assert stats["latency_ms"]["p95"] == pytest.approx(np.percentile(lat, 95))
        assert stats["latency_ms"]["p99"] == pytest.approx(np.percentile(lat, 99))
        assert sum(stats["predicted_distribution"].values()) == pytest.approx(1.0)
    assert report["variants"]["treatment"]["model_versions"] == {"v2": report["versions"]["v2"]["requests"]}
    assert report["versions"]["v2"]["latency_ms"]["p50"] > report["versions"]["v1"]["latency_ms"]["p50"]
    [same_text] = [d for d in report["disagreement"] if d["source"] == "same_text"]
    assert same_text["versions"] == ["v1", "v2"] and same_text["compared"] == 100
    assert same_text["disagreements"] == expect["disagree"] and same_text["rate"] == pytest.approx(0.25)
    comparison = report["comparison"]
    assert comparison["verdict"] == "treatment_better" and comparison["p_value"] < 1e-6
    lo, hi = comparison["difference_ci95"]
    assert lo < comparison["difference"] < hi and lo > 0
    assert report["assignment"]["users_in_both_variants"] == 0
    assert 0.25 <= report["assignment"]["treatment_user_share"] <= 0.35
    assert report["warnings"] == []

    paths = write_ab_report(report, tmp_path / "report")
    assert json.loads(paths["json"].read_text())["comparison"]["verdict"] == "treatment_better"
    html_text = paths["html"].read_text()
    assert "treatment_better" in html_text and "Sci/Tech" in html_text and "<script" not in html_text
    assert "| v1 |" in paths["markdown"].read_text()

    swapped = analyse_ab_log(log, ABTestConfig(control="treatment", treatment="control"))
    assert swapped["comparison"]["verdict"] == "treatment_worse"


def test_ab_analysis_no_difference_and_late_labels(tmp_path):
    records, expect = build_log(control_acc=0.85, treatment_acc=0.85, seed=1, shared_texts=0)
    late = {r["request_id"]: r.pop("true_label") for r in records if "true_label" in r}
    labels_file = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": list(late), "true_label": list(late.values())}).to_csv(labels_file, index=False)
    log = tmp_path / "ab.jsonl.gz"
    log.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in records).encode()))
    report = analyse_ab_log([log], labels=labels_file)
    assert report["input"]["labels_joined"] == len(late) and report["input"]["labelled"] == len(late)
    for version in ("v1", "v2"):
        assert report["versions"][version]["accuracy"] == pytest.approx(
            expect["correct"][version] / expect["labelled"][version])
    assert report["comparison"]["verdict"] == "no_significant_difference"
    assert report["comparison"]["p_value"] > 0.05
    # the same labels as JSON lines and as an in-memory mapping give the same numbers
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text("\n".join(json.dumps({"request_id": k, "label": v}) for k, v in late.items()) + "\nbad\n")
    again = analyse_ab_log(read_ab_log(log), labels=jsonl)
    assert again["versions"] == report["versions"] and again["input"]["malformed_label_lines"] == 1
    assert analyse_ab_log(log, labels=late)["comparison"] == report["comparison"]


def test_ab_analysis_bad_and_partial_input(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="no valid A/B records"):
        analyse_ab_log(empty)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("nope\n{\"x\": 1}\n")
    with pytest.raises(DataValidationError, match="1 malformed, 1 without model_version"):
        analyse_ab_log(garbage)
    with pytest.raises(DataValidationError, match="does not exist"):
        analyse_ab_log(tmp_path / "missing.jsonl")

    records, _ = build_log(0.8, 0.9, n=300, shared_texts=0)
    control_only = [r for r in records if r["variant"] == "control"]
    report = analyse_ab_log(control_only)
    assert report["comparison"]["verdict"] == "missing_variant" and report["comparison"]["p_value"] is None
    assert "v2" not in report["versions"]
    unlabelled = [{k: v for k, v in r.items() if k != "true_label"} for r in records]
    assert analyse_ab_log(unlabelled)["comparison"]["verdict"] == "insufficient_data"
    few = analyse_ab_log(records[:40], ABTestConfig(min_labelled=30))
    assert few["comparison"]["verdict"] == "insufficient_data"

    # the plain serving request log (no variant): variants from model versions; shadow predictions
    plain = [{"timestamp": "t", "text": f"x{i}", "label": LABELS[i % 4], "model_version": "v1" if i % 2 else "v2",
              "shadow": {"model_version": "v2" if i % 2 else "v1", "label": LABELS[i % 4] if i % 3 else "World"}}
             for i in range(60)]
    report = analyse_ab_log(plain, ABTestConfig(control_version="v1", treatment_version="v2"))
    assert set(report["variants"]) == {"control", "treatment"}
    assert report["comparison"]["verdict"] == "insufficient_data"
    shadow = {tuple(d["versions"]): d for d in report["disagreement"] if d["source"] == "shadow"}
    expected_v1 = sum(1 for i in range(60) if i % 2 and i % 3 == 0 and LABELS[i % 4] != "World")
    assert shadow[("v1", "v2")]["compared"] == 30 and shadow[("v1", "v2")]["disagreements"] == expected_v1
    unassigned = analyse_ab_log(plain)
    assert "(unassigned)" in unassigned["variants"] and any("no variant" in w for w in unassigned["warnings"])


def test_ab_report_cli(tmp_path, capsys):
    records, _ = build_log(0.8, 0.92, n=1500, shared_texts=10)
    log = tmp_path / "ab.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n###\n")
    parser = argparse.ArgumentParser(prog="textclf")
    add_gate_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ab-report", "--log", str(log), "--output", str(tmp_path / "out")])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["comparison"]["verdict"] == "treatment_better" and out["input"]["malformed_lines"] == 1
    assert {Path(p).name for p in out["reports"].values()} == {"ab_report.json", "ab_report.md", "ab_report.html"}
