"""The ensemble stage on constructed logits (a few hundred rows; the only model fitted is the tiny meta-learner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from textclf.classical.classical import LOGITS_FILES, logits_frame
from textclf.config import EnsembleConfig
from textclf.ensemble import (
    MemberLogits,
    apply_ensemble,
    fit_ensemble,
    fit_ensemble_dirs,
    load_ensemble,
    read_member_logits,
    save_ensemble,
)
from textclf.ensemble.ensemble import ENSEMBLE_FILE, align_members
from textclf.errors import ConfigError, DataValidationError

CLASSES = ("World", "Sports", "Business")


def constructed_split(rows: int, seed: int, first_row: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Rows with labels and two members' logits that err differently: ``a`` mistakes half of the ``Business`` rows
    for ``World``, ``b`` half of the ``World`` rows for ``Sports``; both add noise."""
    rng = np.random.default_rng(seed)
    label_ids = rng.integers(0, len(CLASSES), rows)
    frame = pd.DataFrame({"row": np.arange(first_row, first_row + rows), "label": np.array(CLASSES)[label_ids]})
    logits = {}
    for name, (true_class, wrong_class) in {"a": (2, 0), "b": (0, 1)}.items():
        peaks = label_ids.copy()
        confused = (label_ids == true_class) & (rng.random(rows) < 0.5)
        peaks[confused] = wrong_class
        member = rng.normal(0.0, 0.7, (rows, len(CLASSES)))
        member[np.arange(rows), peaks] += 2.5
        member[confused, true_class] += 1.2  # the true class stays second: information stacking can use
        logits[name] = member.astype(np.float32)
    return frame, logits


def members_of(frame: pd.DataFrame, logits: dict[str, np.ndarray]) -> list[MemberLogits]:
    return [read_member_logits_frame(frame, values, name) for name, values in logits.items()]


def read_member_logits_frame(frame: pd.DataFrame, values: np.ndarray, name: str) -> MemberLogits:
    from textclf.ensemble.ensemble import member_from_frame

    return member_from_frame(logits_frame(frame, values, list(CLASSES)), name)


def write_member(directory: Path, split: str, frame: pd.DataFrame, values: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    logits_frame(frame, values, list(CLASSES)).to_parquet(directory / LOGITS_FILES[split], index=False)


def accuracy(probabilities: np.ndarray, label_ids: np.ndarray) -> float:
    return float((probabilities.argmax(-1) == label_ids).mean())


@pytest.fixture(scope="module")
def validation():
    return constructed_split(300, seed=1)


@pytest.fixture(scope="module")
def fitted(validation):
    return fit_ensemble(members_of(*validation), EnsembleConfig())


def test_vote_weights_are_a_distribution_and_fit_the_likelihood(fitted, validation):
    weights = fitted.weights
    assert weights.shape == (2,) and (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
    summary = fitted.summary
    aligned = align_members(members_of(*validation))
    for uniform_or_single in ([0.5, 0.5], [1.0, 0.0], [0.0, 1.0]):
        mixture = np.tensordot(np.array(uniform_or_single), aligned.probabilities, axes=1)
        nll = -np.log(mixture[np.arange(len(aligned.label_ids)), aligned.label_ids]).mean()
        assert summary["vote"]["log_loss"] <= nll + 1e-9


def test_stacking_beats_or_equals_its_best_member(fitted, validation):
    summary = fitted.summary
    best_member = max(scores["accuracy"] for scores in summary["members"].values())
    assert best_member < 0.9  # the constructed members really err
    assert summary["stack_out_of_fold"]["accuracy"] >= best_member
    assert summary["stack"]["accuracy"] >= best_member

    held_out_frame, held_out_logits = constructed_split(300, seed=2, first_row=10_000)
    held_out = members_of(held_out_frame, held_out_logits)
    probabilities, aligned = apply_ensemble(fitted, held_out, method="stack")
    member_accuracies = [accuracy(aligned.probabilities[m], aligned.label_ids) for m in range(2)]
    assert accuracy(probabilities, aligned.label_ids) >= max(member_accuracies)
    assert probabilities.shape == (300, 3) and np.allclose(probabilities.sum(-1), 1.0)


def test_fit_reads_validation_only(tmp_path, validation):
    """Member directories hold validation and test logits; replacing the test logits (or removing them) changes
    neither the vote weights nor the meta-learner."""
    frame, logits = validation
    test_frame, test_logits = constructed_split(200, seed=3, first_row=5_000)
    dirs = {name: tmp_path / name for name in logits}
    for name, directory in dirs.items():
        write_member(directory, "validation", frame, logits[name])
        write_member(directory, "test", test_frame, test_logits[name])
    first = fit_ensemble_dirs(dirs, EnsembleConfig(), tmp_path / "first")

    shuffled = {name: np.random.default_rng(9).permutation(values) * 3.0 for name, values in test_logits.items()}
    for name, directory in dirs.items():
        write_member(directory, "test", test_frame, shuffled[name])
    second = fit_ensemble_dirs(dirs, EnsembleConfig(), tmp_path / "second")
    for directory in dirs.values():
        (directory / LOGITS_FILES["test"]).unlink()
    third = fit_ensemble_dirs(dirs, EnsembleConfig(), tmp_path / "third")

    for other in (second, third):
        np.testing.assert_array_equal(first.weights, other.weights)
        np.testing.assert_array_equal(first.meta_learner.coef_, other.meta_learner.coef_)
        np.testing.assert_array_equal(first.meta_learner.intercept_, other.meta_learner.intercept_)
    saved = [json.loads((tmp_path / run / ENSEMBLE_FILE).read_text()) for run in ("first", "second", "third")]
    assert saved[0]["vote"] == saved[1]["vote"] == saved[2]["vote"]
    assert saved[0]["stack"] == saved[1]["stack"] == saved[2]["stack"]


def test_save_load_round_trips_to_identical_probabilities(tmp_path, fitted):
    test = members_of(*constructed_split(120, seed=4, first_row=20_000))
    save_ensemble(fitted, tmp_path / "ensemble")
    text = (tmp_path / "ensemble" / ENSEMBLE_FILE).read_text()
    json.loads(text)  # plain JSON: nothing pickled
    loaded = load_ensemble(tmp_path / "ensemble")
    assert loaded.members == fitted.members and loaded.classes == fitted.classes and loaded.method == "vote"
    for method in ("vote", "stack"):
        before, _ = apply_ensemble(fitted, test, method=method)
        after, _ = apply_ensemble(loaded, test, method=method)
        np.testing.assert_array_equal(before, after)
    default, _ = apply_ensemble(loaded, test)
    np.testing.assert_array_equal(default, apply_ensemble(fitted, test, method="vote")[0])


def test_members_in_another_row_order_are_aligned(fitted, validation):
    frame, logits = validation
    members = members_of(frame, logits)
    order = np.random.default_rng(5).permutation(len(frame))
    reordered = read_member_logits_frame(frame.iloc[order].reset_index(drop=True), logits["b"][order], "b")
    np.testing.assert_allclose(apply_ensemble(fitted, [members[0], reordered])[0], apply_ensemble(fitted, members)[0])
    # Members given in another order are put back in the fitted order (stacking's features follow it).
    np.testing.assert_array_equal(apply_ensemble(fitted, members[::-1], "stack")[0],
                                  apply_ensemble(fitted, members, "stack")[0])


def test_bad_members_are_refused_before_fitting(tmp_path, validation):
    frame, logits = validation
    a, b = members_of(frame, logits)
    with pytest.raises(DataValidationError, match="at least 2 members, got 1"):
        fit_ensemble([a])
    with pytest.raises(DataValidationError, match="at least 2 members, got 1"):
        fit_ensemble_dirs({"a": tmp_path}, EnsembleConfig(), tmp_path / "out")
    with pytest.raises(DataValidationError, match="distinct"):
        fit_ensemble([a, a])

    other_rows = read_member_logits_frame(frame.assign(row=frame["row"] + 1), logits["b"], "b")
    with pytest.raises(DataValidationError, match="member 'b': row ids differ"):
        fit_ensemble([a, other_rows])
    relabelled = frame.copy()
    relabelled.loc[7, "label"] = "Sports" if relabelled.loc[7, "label"] != "Sports" else "World"
    with pytest.raises(DataValidationError, match="member 'b': labels differ .* on 1 rows"):
        fit_ensemble([a, read_member_logits_frame(relabelled, logits["b"], "b")])
    other_classes = MemberLogits("b", b.rows, b.labels, ("World", "Business", "Sports"), b.logits)
    with pytest.raises(DataValidationError, match="member 'b': classes"):
        fit_ensemble([a, other_classes])
    broken = MemberLogits("b", b.rows, b.labels, b.classes, np.where(np.arange(3) == 1, np.nan, b.logits))
    with pytest.raises(DataValidationError, match="member 'b': logits hold NaN"):
        fit_ensemble([a, broken])

    write_member(tmp_path / "a", "validation", frame, logits["a"])
    (tmp_path / "b").mkdir()
    with pytest.raises(DataValidationError, match="member 'b': logits file .* not found"):
        fit_ensemble_dirs({"a": tmp_path / "a", "b": tmp_path / "b"}, EnsembleConfig(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataValidationError, match="member 'b'.*test logits are missing"):
        read_member_logits(tmp_path / "b", "b", "test")

    tiny = frame.iloc[:8]
    with pytest.raises(DataValidationError, match="per class"):
        fit_ensemble(members_of(tiny, {name: values[:8] for name, values in logits.items()}))


def test_apply_refuses_other_members_and_bad_config(fitted, validation):
    frame, logits = validation
    a, b = members_of(frame, logits)
    c = MemberLogits("c", b.rows, b.labels, b.classes, b.logits)
    with pytest.raises(DataValidationError, match=r"fitted on members \['a', 'b'\].*missing \['b'\]"):
        apply_ensemble(fitted, [a, c])
    with pytest.raises(ConfigError, match="method must be one of"):
        apply_ensemble(fitted, [a, b], method="median")
    with pytest.raises(ConfigError, match="EnsembleConfig.method"):
        EnsembleConfig(method="median")
    with pytest.raises(ConfigError, match="EnsembleConfig.cv_folds"):
        EnsembleConfig(cv_folds=1)
    with pytest.raises(ConfigError, match="EnsembleConfig.stack_c"):
        EnsembleConfig(stack_c=0.0)


def test_load_refuses_a_foreign_file(tmp_path):
    with pytest.raises(DataValidationError, match="not an ensemble"):
        load_ensemble(tmp_path)
    (tmp_path / ENSEMBLE_FILE).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(DataValidationError, match="format_version 99"):
        load_ensemble(tmp_path)
