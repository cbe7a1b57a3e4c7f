"""Promotion gate (McNemar's test + minimum improvement) on constructed prediction sets and on predictions.parquet
files in the evaluate stage's format, and the gate component under kfp.local (the canary A/B analysis:
test_abtest.py)."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from textclf.errors import ConfigError, DataValidationError
from textclf.gate import GateConfig, SEED_MIN_IMPROVEMENT, decide, decide_from_evaluations, decide_from_predictions
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
