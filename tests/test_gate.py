"""Promotion gate (McNemar's test + minimum improvement) on constructed prediction sets and on predictions.parquet
files in the evaluate stage's format, the gate component under kfp.local, and the canary A/B analysis."""

import argparse
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from textclf.errors import ConfigError, DataValidationError
from textclf.gate import (
    ABTestConfig, GateConfig, SEED_MIN_IMPROVEMENT, analyse_ab_log, assign_variant, decide,
    decide_from_evaluations, decide_from_predictions, read_ab_log, variant_bucket, write_ab_report,
)
from textclf.cli.gate import add_gate_commands
from textclf.gate.mcnemar import TEST_CHI2, TEST_EXACT, TEST_NONE

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
TEST_SET = "a" * 64


def paired(n: int, both_right: int, b: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Candidate/production correctness over ``n`` rows with the given paired counts, rows shuffled."""
    assert both_right + b + c <= n
    cand = np.zeros(n, bool)
    prod = np.zeros(n, bool)
    cand[:both_right] = prod[:both_right] = True
    cand[both_right:both_right + b] = True
    prod[both_right + b:both_right + b + c] = True
    order = np.random.default_rng(seed).permutation(n)
    return cand[order], prod[order]


# ------------------------------------------------------------------------------------------------------------------
# decide() on constructed correctness vectors
# ------------------------------------------------------------------------------------------------------------------


def test_better_and_significant_is_promoted():
    cand, prod = paired(1000, 850, b=40, c=10)
    d = decide(cand, prod)
    assert d.promote and d.verdict == "promote"
    assert (d.n, d.b, d.c) == (1000, 40, 10)
    assert d.candidate_accuracy == pytest.approx(0.89) and d.production_accuracy == pytest.approx(0.86)
    assert d.improvement == pytest.approx(0.03)
    assert d.test == TEST_CHI2 and d.p_value < 1e-4
    assert "b=40" in d.reason and "c=10" in d.reason and "+3.00 points" in d.reason
    assert d.to_dict()["decision"] == "promote" and json.dumps(d.to_dict())


@pytest.mark.parametrize("b,c", [(0, 0), (20, 20)])
def test_equal_is_archived(b, c):
    cand, prod = paired(1000, 880, b=b, c=c)
    d = decide(cand, prod)
    assert not d.promote and d.improvement == 0.0
    assert d.p_value > 0.5  # 1.0 with no discordant rows; statsmodels' corrected chi-square gives 0.87 for 20/20
    assert "not better" in d.reason
    assert d.test == (TEST_NONE if b == 0 else TEST_CHI2)


def test_worse_is_archived():
    cand, prod = paired(1000, 850, b=10, c=40)
    d = decide(cand, prod)
    assert not d.promote and d.improvement == pytest.approx(-0.03) and d.p_value < 1e-4
    assert "worse" in d.reason and "-3.00 points" in d.reason


def test_better_but_not_significant_is_archived():
    cand, prod = paired(1000, 880, b=6, c=2)  # +0.4 points would also fail the minimum; use min 0 to isolate
    d = decide(cand, prod, GateConfig(min_improvement=0.0))
    assert not d.promote and d.test == TEST_EXACT
    assert d.p_value == pytest.approx(0.2890625)  # 2 * P(Binomial(8, 1/2) <= 2)
    assert "not significant" in d.reason
    # a large but noisy gain: +1 point on 1000 rows with many discordant rows
    cand, prod = paired(1000, 700, b=60, c=50)
    d = decide(cand, prod)
    assert not d.promote and d.improvement == pytest.approx(0.01) and d.p_value > 0.05


def test_significant_but_below_minimum_improvement_is_archived():
    cand, prod = paired(20000, 18000, b=90, c=40)  # +0.25 points, p ~ 1e-5
    d = decide(cand, prod)
    assert d.p_value < 0.001 and d.improvement == pytest.approx(0.0025)
    assert not d.promote and "below the minimum +0.50 points" in d.reason
    assert decide(cand, prod, GateConfig(min_improvement=0.0)).promote


def test_seed_two_percent_option_and_exact_threshold():
    cand, prod = paired(2000, 1800, b=40, c=15)  # +1.25 points, significant
    assert decide(cand, prod).promote
    strict = decide(cand, prod, GateConfig(min_improvement=SEED_MIN_IMPROVEMENT))
    assert not strict.promote and "+2.00 points" in strict.reason
    cand, prod = paired(2000, 1800, b=10, c=0)  # exactly +0.5 points, exact p = 2 / 2**10
    d = decide(cand, prod)
    assert d.test == TEST_EXACT and d.p_value == pytest.approx(2 / 1024) and d.promote


def test_first_model_is_promoted():
    d = decide(np.array([1, 0, 1, 1]), None)
    assert d.promote and d.reason.startswith("no production model")
    assert d.candidate_accuracy == 0.75 and d.production_accuracy is None and d.p_value is None


def test_bad_inputs_and_config():
    with pytest.raises(DataValidationError, match="same test set"):
        decide(np.ones(5, bool), np.ones(6, bool))
    with pytest.raises(DataValidationError, match="empty"):
        decide(np.array([], bool), np.array([], bool))
    with pytest.raises(DataValidationError, match="booleans"):
        decide(np.array([0.2, 1.0]), np.array([1, 1]))
    with pytest.raises(ConfigError):
        GateConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="0.005"):
        GateConfig(min_improvement=2.0)  # points instead of a fraction


def test_worse_or_equal_model_is_never_promoted_property():
    """Over many random sizes, accuracies and correlations: promote implies better, significant and big enough."""
    rng = np.random.default_rng(12345)
    configs = [GateConfig(), GateConfig(min_improvement=0.0), GateConfig(alpha=0.5, min_improvement=0.0),
               GateConfig(alpha=0.2, exact_below=0), GateConfig(min_improvement=0.0, exact_below=10**9)]
    promoted = archived_worse = 0
    for trial in range(1500):
        n = int(rng.integers(1, 3000))
        prod_acc, cand_acc = rng.uniform(0.3, 1.0, size=2)
        prod = rng.random(n) < prod_acc
        # correlated errors: the candidate copies production on a random share of rows
        copy = rng.random(n) < rng.uniform(0.0, 0.95)
        cand = np.where(copy, prod, rng.random(n) < cand_acc)
        config = configs[trial % len(configs)]
        d = decide(cand, prod, config)
        if cand.mean() <= prod.mean():
            assert not d.promote, (trial, d)
            archived_worse += 1
        if d.promote:
            promoted += 1
            assert d.b > d.c and d.p_value < config.alpha and d.improvement >= config.min_improvement - 1e-12
            assert cand.mean() > prod.mean()
    assert promoted > 50 and archived_worse > 500  # both branches were exercised


# ------------------------------------------------------------------------------------------------------------------
# predictions.parquet in the evaluate stage's format
# ------------------------------------------------------------------------------------------------------------------


def write_evaluation(directory: Path, rows: list[int], labels: list[str], correct: np.ndarray, seed: int = 0,
                     test_set: str = TEST_SET, with_row: bool = True) -> Path:
    """An evaluate-stage directory: predictions.parquet with exactly evaluate.py's columns, and metrics.json."""
    rng = np.random.default_rng(seed)
    label_ids = np.array([LABELS.index(x) for x in labels])
    wrong = (label_ids + rng.integers(1, len(LABELS), size=len(labels))) % len(LABELS)
    predicted_ids = np.where(correct, label_ids, wrong)
    probs = rng.dirichlet(np.ones(len(LABELS)), size=len(labels)).astype(np.float32)
    probs[np.arange(len(labels)), predicted_ids] += 2.0
    probs /= probs.sum(axis=1, keepdims=True)
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "row": np.asarray(rows),
        "label": np.asarray(labels, dtype=object),
        "predicted": [LABELS[i] for i in predicted_ids],
        "correct": predicted_ids == label_ids,
        **{f"p_{label}": probs[:, i] for i, label in enumerate(LABELS)},
    })
    if not with_row:
        frame = frame.drop(columns="row")
    frame.to_parquet(directory / "predictions.parquet", index=False)
    (directory / "metrics.json").write_text(json.dumps({
        "test": {"accuracy": float(np.mean(correct)), "rows": len(rows)}, "test_set_sha256": test_set,
        "labels": LABELS, "model_run_key": directory.name,
    }))
    return directory


@pytest.fixture
def eval_pair(tmp_path):
    """Candidate (+3 points, significant) and production evaluations; production rows stored in another order."""
    n = 1000
    rng = np.random.default_rng(7)
    rows = list(range(1, n + 1))
    labels = [LABELS[i] for i in rng.integers(0, 4, size=n)]
    cand, prod = paired(n, 850, b=40, c=10, seed=3)
    candidate = write_evaluation(tmp_path / "candidate", rows, labels, cand, seed=1)
    order = rng.permutation(n)
    production = write_evaluation(tmp_path / "production", [rows[i] for i in order], [labels[i] for i in order],
                                  prod[order], seed=2)
    return candidate, production, rows, labels, cand, prod


def test_decide_from_predictions_aligns_by_row_id(eval_pair):
    candidate, production, _, _, cand, prod = eval_pair
    d = decide_from_predictions(candidate / "predictions.parquet", production / "predictions.parquet")
    assert d == decide(cand, prod) and d.promote and (d.b, d.c) == (40, 10)
    # directories work too; swapping roles archives
    assert not decide_from_predictions(production, candidate).promote
    first = decide_from_predictions(candidate, None)
    assert first.promote and first.candidate_accuracy == pytest.approx(0.89)
    decision, context = decide_from_evaluations(candidate, production)
    assert decision.promote and context["production_test_set_sha256"] == TEST_SET


def test_decide_from_predictions_by_position_without_row_ids(tmp_path):
    rows, labels = list(range(1, 201)), [LABELS[i % 4] for i in range(200)]
    cand, prod = paired(200, 150, b=30, c=2)
    a = write_evaluation(tmp_path / "a", rows, labels, cand, with_row=False)
    b = write_evaluation(tmp_path / "b", rows, labels, prod, with_row=False)
    d = decide_from_predictions(a, b)
    assert (d.b, d.c, d.n) == (30, 2, 200) and d.promote


def test_mismatched_test_sets_are_refused(tmp_path, eval_pair):
    candidate, _, rows, labels, cand, prod = eval_pair
    same = "candidate and production were not evaluated on the same test set"
    other_rows = write_evaluation(tmp_path / "other_rows", [r + 5 for r in rows], labels, prod)
    with pytest.raises(DataValidationError, match=same + ".*only in candidate"):
        decide_from_predictions(candidate, other_rows)
    relabelled = list(labels)
    relabelled[10] = "Sports" if labels[10] != "Sports" else "World"
    other_labels = write_evaluation(tmp_path / "other_labels", rows, relabelled, prod)
    with pytest.raises(DataValidationError, match=same + ".*true labels differ on 1 of 1000 rows.*11"):
        decide_from_predictions(candidate, other_labels)
    shorter = write_evaluation(tmp_path / "short", rows[:-1], labels[:-1], prod[:-1], with_row=False)
    no_rows = write_evaluation(tmp_path / "no_rows", rows, labels, cand, with_row=False)
    with pytest.raises(DataValidationError, match=same):
        decide_from_predictions(no_rows, shorter)
    other_fingerprint = write_evaluation(tmp_path / "other_fp", rows, labels, prod, test_set="b" * 64)
    with pytest.raises(DataValidationError, match=same + ".*test_set_sha256"):
        decide_from_evaluations(candidate, other_fingerprint)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="no predictions"):
        decide_from_predictions(candidate, tmp_path / "empty")


def test_gate_cli(tmp_path, eval_pair, capsys):
    candidate, production, *_ = eval_pair
    parser = argparse.ArgumentParser(prog="textclf")
    add_gate_commands(parser.add_subparsers(dest="command", required=True))

    def run(argv: list[str]) -> dict:
        args = parser.parse_args(argv)
        assert args.func(args) == 0
        return json.loads(capsys.readouterr().out)

    out = run(["gate", "--candidate", str(candidate), "--production", str(production),
               "--output", str(tmp_path / "d" / "decision.json")])
    assert out["decision"] == "promote" and json.loads((tmp_path / "d" / "decision.json").read_text()) == out
    assert run(["gate", "--candidate", str(candidate), "--production", str(production),
                "--min-improvement", "0.05"])["decision"] == "archive"
    assert run(["gate", "--candidate", str(candidate)])["reason"].startswith("no production model")


# ------------------------------------------------------------------------------------------------------------------
# gate_op under kfp.local
# ------------------------------------------------------------------------------------------------------------------


def test_gate_component_under_kfp_local(tmp_path, eval_pair, monkeypatch):
    from kfp import dsl
    from kfp.dsl import Artifact

    from textclf.gate.component import gate_op
    from textclf.pipelines.local import init_local_runner

    candidate, production, *_ = eval_pair
    empty = tmp_path / "no-production"
    empty.mkdir()
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # restored after the test

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def promoted_marker(verdict: str) -> str:
        return f"deploying after {verdict}"

    @dsl.pipeline(name="gate-test")
    def gate_pipeline(candidate_uri: str, production_uri: str, has_production: bool,
                      min_improvement: float) -> str:
        cand = dsl.importer(artifact_uri=candidate_uri, artifact_class=Artifact, reimport=False)
        prod = dsl.importer(artifact_uri=production_uri, artifact_class=Artifact, reimport=False)
        gate = gate_op(candidate_evaluation=cand.output, production_evaluation=prod.output,
                       has_production=has_production, alpha=0.05, min_improvement=min_improvement)
        with dsl.If(gate.outputs["Output"] == "promote"):
            promoted_marker(verdict=gate.outputs["Output"])
        return gate.outputs["Output"]

    root = tmp_path / "pipeline_root"
    init_local_runner(root)
    assert gate_pipeline(candidate_uri=str(candidate), production_uri=str(production), has_production=True,
                         min_improvement=0.005).output == "promote"
    assert gate_pipeline(candidate_uri=str(production), production_uri=str(candidate), has_production=True,
                         min_improvement=0.005).output == "archive"
    assert gate_pipeline(candidate_uri=str(candidate), production_uri=str(empty), has_production=False,
                         min_improvement=0.005).output == "promote"
    decisions = [json.loads(p.read_text()) for p in sorted(root.rglob("decision.json"), key=os.path.getmtime)]
    assert [d["decision"] for d in decisions] == ["promote", "archive", "promote"]
    assert decisions[0]["b"] == 40 and decisions[1]["b"] == 10 and "worse" in decisions[1]["reason"]
    assert decisions[2]["reason"].startswith("no production model") and decisions[2]["has_production"] is False
    markers = [p for p in root.rglob("*") if "promoted-marker" in p.as_posix()]
    assert markers, "the dsl.If branch ran for a promotion"


# ------------------------------------------------------------------------------------------------------------------
# A/B analysis
# ------------------------------------------------------------------------------------------------------------------


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
