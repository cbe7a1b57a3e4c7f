"""Ensemble: soft voting and stacking over the members' logits, fitted on the VALIDATION split only.

A member is a model that wrote a logits artifact (:func:`textclf.classical.classical.logits_frame`'s format: per
row ``row``, ``label``, ``logit_<label>`` and ``p_<label>``; ``LOGITS_FILES["validation"]`` at training,
``LOGITS_FILES["test"]`` at evaluate time). Members are read with :func:`read_member_logits`; their probabilities
are recomputed as ``softmax(logits)`` (the ``p_`` columns are float32 roundings of the same numbers).

Fitting (:func:`fit_ensemble`) sees only validation logits, and fits both methods:

- **vote**: weights ``w`` on the simplex (``w >= 0``, ``sum(w) = 1``) maximising the validation log-likelihood of
  ``sum_i w_i p_i``. That objective is concave in ``w`` (the log of a linear function), so the constrained optimum
  scipy's SLSQP finds from the uniform start is the global one, for any number of members (a grid would grow
  exponentially with them). Log-likelihood rather than accuracy: it is smooth, and it breaks accuracy's ties
  towards the better-calibrated mixture.
- **stack**: a multinomial scikit-learn ``LogisticRegression`` on the members' concatenated validation
  probabilities (features ``[p_member0_class0..k-1, p_member1_...]``, in member order). It is fitted on all
  validation rows; its honest validation accuracy is the out-of-fold one (``cross_val_predict`` over
  ``cv_folds`` stratified folds of the validation rows), recorded next to the in-sample one.

Validation before fitting (:func:`align_members`): at least :data:`MIN_MEMBERS` members with distinct names; every
member has the same class list, the same row ids (no duplicates; another order is re-aligned) and the same label
on each row; logits finite. Each error names the member at fault.

Saved form (:func:`save_ensemble`, no pickle): :data:`ENSEMBLE_FILE`, JSON holding the member names and class list,
the vote weights, and the meta-learner's ``coef_``, ``intercept_`` and ``classes_`` (rebuilt into a
``LogisticRegression`` by :func:`load_ensemble`; float64 values round-trip exactly through JSON), plus the fitting
summary. :func:`apply_ensemble` scores members' logits on any split (e.g. test, at evaluate time).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from textclf.classical.classical import LOGITS_FILES
from textclf.config import EnsembleConfig, EnsembleMethod
from textclf.errors import ConfigError, DataValidationError
from textclf.evaluate.evaluate import softmax
from textclf.provenance import atomic_directory, git_commit, package_versions, read_json, write_json

log = logging.getLogger(__name__)

#: Output: the fitted ensemble as JSON (member names, class list, vote weights, meta-learner coefficients, summary).
ENSEMBLE_FILE = "ensemble.json"
#: Version of :data:`ENSEMBLE_FILE`'s layout; :func:`load_ensemble` refuses another.
FORMAT_VERSION = 1
#: An ensemble needs at least this many members.
MIN_MEMBERS = 2
#: Mixture probabilities are floored here before their log is taken.
PROBABILITY_FLOOR = 1e-12
#: Package versions recorded in :data:`ENSEMBLE_FILE`.
RECORDED_PACKAGES = ("textclf-components", "scikit-learn", "scipy", "numpy", "pandas")


@dataclass(frozen=True)
class MemberLogits:
    """One member's logits on one split.

    Attributes:
        name: The member's name (unique within an ensemble; errors name it).
        rows: Row ids ``[n]`` (the source file's data row; the key members are joined on).
        labels: True class name per row ``[n]``.
        classes: Class names in logit-column order.
        logits: ``[n, len(classes)]``.
    """

    name: str
    rows: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    logits: np.ndarray


@dataclass(frozen=True)
class AlignedMembers:
    """Members checked by :func:`align_members`, rows in the first member's order.

    Attributes:
        names: Member names, in the given order.
        classes: The shared class list.
        rows: Row ids ``[n]``.
        label_ids: True class id per row ``[n]`` (index into ``classes``).
        probabilities: ``softmax(logits)`` per member, float64 ``[members, n, classes]``.
    """

    names: tuple[str, ...]
    classes: tuple[str, ...]
    rows: np.ndarray
    label_ids: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class FittedEnsemble:
    """Both fitted combiners of one set of members (see the module docstring).

    Attributes:
        method: The default method of :func:`apply_ensemble` (``vote`` or ``stack``).
        members: Member names; stacking's features follow this order.
        classes: Class names in probability-column order.
        weights: Vote weights per member (>= 0, summing to 1).
        meta_learner: The fitted stacking ``LogisticRegression`` (features: members' probabilities, concatenated).
        summary: Validation numbers of the fit (JSON-serialisable).
    """

    method: str
    members: tuple[str, ...]
    classes: tuple[str, ...]
    weights: np.ndarray
    meta_learner: Any
    summary: dict[str, Any] = field(default_factory=dict)


def member_from_frame(frame: pd.DataFrame, name: str) -> MemberLogits:
    """A member from a logits frame (columns ``row``, ``label``, ``logit_<class>``...; ``p_`` columns ignored).

    Raises:
        DataValidationError: Naming ``name``: no rows, a missing ``row``/``label`` column, or fewer than two
            ``logit_`` columns.
    """
    missing = [column for column in ("row", "label") if column not in frame.columns]
    logit_columns = [column for column in frame.columns if str(column).startswith("logit_")]
    if missing:
        raise DataValidationError(f"member {name!r}: logits lack columns {missing}")
    if len(logit_columns) < 2:
        raise DataValidationError(f"member {name!r}: needs logit_<class> columns for >= 2 classes, got {logit_columns}")
    if frame.empty:
        raise DataValidationError(f"member {name!r}: logits have no rows")
    return MemberLogits(
        name=name,
        rows=frame["row"].to_numpy(),
        labels=frame["label"].astype(str).to_numpy(),
        classes=tuple(str(column)[len("logit_"):] for column in logit_columns),
        logits=frame[logit_columns].to_numpy(dtype=np.float64),
    )


def read_member_logits(path: str | Path, name: str, split: str = "validation") -> MemberLogits:
    """Read one member's logits artifact.

    Args:
        path: A member's logits directory (holding ``LOGITS_FILES[split]``) or the parquet file itself.
        name: The member's name.
        split: ``validation`` or ``test``, when ``path`` is a directory.

    Raises:
        DataValidationError: Unknown split, or the file is missing or malformed (the message names the member).
    """
    if split not in LOGITS_FILES:
        raise DataValidationError(f"member {name!r}: unknown split {split!r}; members write {list(LOGITS_FILES)}")
    path = Path(path)
    file = path / LOGITS_FILES[split] if path.is_dir() else path
    if not file.is_file():
        raise DataValidationError(f"member {name!r}: logits file {file} not found (its {split} logits are missing)")
    return member_from_frame(pd.read_parquet(file), name)


def align_members(members: Sequence[MemberLogits], expected: Sequence[str] | None = None) -> AlignedMembers:
    """Check the members against each other (and against ``expected`` names) and align their rows.

    Args:
        members: At least :data:`MIN_MEMBERS`, distinct names. The first member fixes the classes, row ids, labels
            and row order; another member's rows may come in another order.
        expected: If given, the members must carry exactly these names (any order); the result follows this order.

    Raises:
        DataValidationError: Too few members, duplicate or unexpected names, or (naming the member) another class
            list, non-finite logits, a logits shape that does not match, duplicate row ids, other row ids than the
            first member's, another label on some row, or a label outside the class list.
    """
    members = list(members)
    if len(members) < MIN_MEMBERS:
        raise DataValidationError(
            f"an ensemble needs at least {MIN_MEMBERS} members, got {len(members)}: {[m.name for m in members]}"
        )
    names = [member.name for member in members]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataValidationError(f"member names must be distinct; repeated: {duplicates}")
    if expected is not None:
        if sorted(names) != sorted(expected):
            raise DataValidationError(
                f"the ensemble was fitted on members {list(expected)}, got {names} "
                f"(missing {sorted(set(expected) - set(names))}, unexpected {sorted(set(names) - set(expected))})"
            )
        by_name = {member.name: member for member in members}
        members = [by_name[name] for name in expected]

    first = members[0]
    for member in members:
        _check_member(member)
    order = {row: i for i, row in enumerate(first.rows.tolist())}
    label_index = {label: i for i, label in enumerate(first.classes)}
    unknown = sorted(set(first.labels.tolist()) - set(label_index))
    if unknown:
        raise DataValidationError(
            f"member {first.name!r}: labels {unknown} are not in its classes {list(first.classes)}"
        )
    probabilities = np.empty((len(members), len(first.rows), len(first.classes)), dtype=np.float64)
    for m, member in enumerate(members):
        if member.classes != first.classes:
            raise DataValidationError(
                f"member {member.name!r}: classes {list(member.classes)} differ from member {first.name!r}'s "
                f"{list(first.classes)}"
            )
        rows = member.rows.tolist()
        if set(rows) != set(order):
            missing, extra = set(order) - set(rows), set(rows) - set(order)
            raise DataValidationError(
                f"member {member.name!r}: row ids differ from member {first.name!r}'s: {len(missing)} missing "
                f"(e.g. {sorted(missing)[:3]}), {len(extra)} extra (e.g. {sorted(extra)[:3]})"
            )
        position = np.array([order[row] for row in rows])
        labels = np.empty(len(rows), dtype=object)
        labels[position] = member.labels
        differ = np.flatnonzero(labels != first.labels)
        if differ.size:
            row = first.rows[differ[0]]
            raise DataValidationError(
                f"member {member.name!r}: labels differ from member {first.name!r}'s on {differ.size} rows "
                f"(row {row}: {labels[differ[0]]!r} vs {first.labels[differ[0]]!r})"
            )
        probabilities[m, position] = softmax(member.logits)
    label_ids = np.array([label_index[label] for label in first.labels.tolist()], dtype=np.int64)
    return AlignedMembers(tuple(m.name for m in members), first.classes, first.rows, label_ids, probabilities)


def _check_member(member: MemberLogits) -> None:
    n = len(member.rows)
    if n == 0:
        raise DataValidationError(f"member {member.name!r}: logits have no rows")
    if member.logits.shape != (n, len(member.classes)) or len(member.labels) != n:
        raise DataValidationError(
            f"member {member.name!r}: logits shape {member.logits.shape}, {len(member.labels)} labels and {n} rows "
            f"do not match its {len(member.classes)} classes"
        )
    if len(set(member.rows.tolist())) != n:
        raise DataValidationError(f"member {member.name!r}: duplicate row ids")
    if not np.isfinite(member.logits).all():
        raise DataValidationError(f"member {member.name!r}: logits hold NaN or infinite values")


def _mixture_nll(weights: np.ndarray, true_probabilities: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of the mixture and its gradient; ``true_probabilities`` is ``[members, n]``."""
    mixture = np.maximum(weights @ true_probabilities, PROBABILITY_FLOOR)
    return float(-np.log(mixture).mean()), -(true_probabilities / mixture).mean(axis=1)


def fit_vote_weights(probabilities: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """Soft-voting weights on the simplex maximising the log-likelihood of ``label_ids`` (validation only).

    Args:
        probabilities: ``[members, n, classes]``.
        label_ids: ``[n]``.

    Returns:
        float64 ``[members]``, each in ``[0, 1]``, summing to 1.
    """
    from scipy.optimize import minimize

    members = probabilities.shape[0]
    true_probabilities = probabilities[:, np.arange(len(label_ids)), label_ids]
    start = np.full(members, 1.0 / members)
    result = minimize(
        _mixture_nll, start, args=(true_probabilities,), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * members,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"maxiter": 500, "ftol": 1e-12},
    )
    if not result.success:
        log.warning("vote weights: SLSQP stopped without converging (%s); using its last point", result.message)
    weights = np.clip(result.x, 0.0, None)
    weights = weights / weights.sum() if weights.sum() > 0 else start
    # Never worse than the uniform start (SLSQP can stop early on flat objectives).
    return weights if _mixture_nll(weights, true_probabilities)[0] <= _mixture_nll(start, true_probabilities)[0] \
        else start


def stacking_features(probabilities: np.ndarray) -> np.ndarray:
    """``[members, n, classes]`` -> ``[n, members * classes]``: each row, the members' probabilities in order."""
    return np.concatenate(list(probabilities), axis=1)


def vote_probabilities(weights: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``sum_i weights[i] * probabilities[i]``: ``[n, classes]``."""
    return np.tensordot(weights, probabilities, axes=1)


def _meta_learner(config: EnsembleConfig) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=config.stack_c, max_iter=config.stack_max_iter)


def _scores(probabilities: np.ndarray, label_ids: np.ndarray) -> dict[str, float]:
    true = np.maximum(probabilities[np.arange(len(label_ids)), label_ids], PROBABILITY_FLOOR)
    return {"accuracy": float((probabilities.argmax(-1) == label_ids).mean()), "log_loss": float(-np.log(true).mean())}


def fit_ensemble(members: Sequence[MemberLogits], config: EnsembleConfig | None = None) -> FittedEnsemble:
    """Fit the vote weights and the stacking meta-learner on the members' VALIDATION logits.

    Every input is checked (:func:`align_members`, and every class needs ``config.cv_folds`` rows) before
    anything is fitted. Nothing but ``members`` is read: pass validation logits only.

    Args:
        members: Validation logits of at least two members.
        config: Method, meta-learner regularisation, folds; defaults to ``EnsembleConfig()``.

    Returns:
        The fitted ensemble; its summary holds per-member, vote, and stacking (in-sample and out-of-fold) validation
        accuracy and log-loss.

    Raises:
        DataValidationError: See :func:`align_members`; or a class with fewer validation rows than ``cv_folds``.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    config = config or EnsembleConfig()
    aligned = align_members(members)
    counts = np.bincount(aligned.label_ids, minlength=len(aligned.classes))
    short = [f"{label} ({count})" for label, count in zip(aligned.classes, counts) if count < config.cv_folds]
    if short:
        raise DataValidationError(
            f"stacking needs >= cv_folds={config.cv_folds} validation rows per class; too few for {short}"
        )
    started = time.perf_counter()
    weights = fit_vote_weights(aligned.probabilities, aligned.label_ids)
    features = stacking_features(aligned.probabilities)
    meta = _meta_learner(config).fit(features, aligned.label_ids)
    folds = StratifiedKFold(n_splits=config.cv_folds, shuffle=True, random_state=config.seed)
    out_of_fold = cross_val_predict(_meta_learner(config), features, aligned.label_ids, cv=folds,
                                    method="predict_proba")
    summary = {
        "validation_rows": len(aligned.rows),
        "members": {name: _scores(aligned.probabilities[m], aligned.label_ids) for m, name in enumerate(aligned.names)},
        "vote": _scores(vote_probabilities(weights, aligned.probabilities), aligned.label_ids),
        "stack": _scores(meta.predict_proba(features), aligned.label_ids),
        "stack_out_of_fold": _scores(out_of_fold, aligned.label_ids),
        "fit_seconds": time.perf_counter() - started,
    }
    log.info("ensemble of %s: vote weights %s, validation accuracy vote %.4f, stack (out-of-fold) %.4f",
             list(aligned.names), np.round(weights, 4).tolist(), summary["vote"]["accuracy"],
             summary["stack_out_of_fold"]["accuracy"])
    return FittedEnsemble(config.method, aligned.names, aligned.classes, weights, meta, summary)


def apply_ensemble(ensemble: FittedEnsemble, members: Sequence[MemberLogits], method: str | None = None
                   ) -> tuple[np.ndarray, AlignedMembers]:
    """The ensemble's probabilities on the members' logits of any split (e.g. test, at evaluate time).

    Args:
        ensemble: From :func:`fit_ensemble` or :func:`load_ensemble`.
        members: Logits of exactly the ensemble's members (any order), same classes.
        method: ``vote`` or ``stack``; defaults to ``ensemble.method``.

    Returns:
        float64 probabilities ``[n, classes]`` (columns in ``ensemble.classes`` order) and the aligned members
        (rows, label ids) they belong to.

    Raises:
        ConfigError: Unknown method.
        DataValidationError: See :func:`align_members`; or classes other than the ensemble's.
    """
    try:
        chosen = EnsembleMethod(method or ensemble.method)
    except ValueError:
        raise ConfigError(f"method must be one of {[m.value for m in EnsembleMethod]}; got {method!r}") from None
    aligned = align_members(members, expected=ensemble.members)
    if aligned.classes != ensemble.classes:
        raise DataValidationError(
            f"members' classes {list(aligned.classes)} differ from the ensemble's {list(ensemble.classes)}"
        )
    if chosen is EnsembleMethod.VOTE:
        return vote_probabilities(ensemble.weights, aligned.probabilities), aligned
    return ensemble.meta_learner.predict_proba(stacking_features(aligned.probabilities)), aligned


def apply_ensemble_logits(ensemble: FittedEnsemble, members: Sequence[MemberLogits], method: str | None = None
                          ) -> tuple[np.ndarray, AlignedMembers]:
    """:func:`apply_ensemble` as logits: the log of its probabilities (floored at ``PROBABILITY_FLOOR``), which
    softmax maps back to the same probabilities, so an ensemble is a teacher or a calibrated model like any member.

    Returns, Raises: as for :func:`apply_ensemble` (float64 ``[n, classes]`` logits).
    """
    probabilities, aligned = apply_ensemble(ensemble, members, method)
    return np.log(np.maximum(probabilities, PROBABILITY_FLOOR)), aligned


def ensemble_to_json(ensemble: FittedEnsemble) -> dict[str, Any]:
    """The JSON form of :data:`ENSEMBLE_FILE` (no pickle: plain lists of floats)."""
    meta = ensemble.meta_learner
    return {
        "format_version": FORMAT_VERSION,
        "method": ensemble.method,
        "members": list(ensemble.members),
        "classes": list(ensemble.classes),
        "vote": {"weights": [float(w) for w in ensemble.weights]},
        "stack": {
            "features": [f"{name}:p_{label}" for name in ensemble.members for label in ensemble.classes],
            "coef": meta.coef_.astype(np.float64).tolist(),
            "intercept": meta.intercept_.astype(np.float64).tolist(),
            "classes": [int(c) for c in meta.classes_],
            "C": float(meta.C),
        },
        "summary": ensemble.summary,
    }


def ensemble_from_json(payload: Mapping[str, Any], source: str = "ensemble") -> FittedEnsemble:
    """Rebuild a :class:`FittedEnsemble` (the meta-learner as a fitted ``LogisticRegression``) from its JSON form.

    Raises:
        DataValidationError: Another format version, or weights/coefficients that do not fit the members/classes.
    """
    from sklearn.linear_model import LogisticRegression

    if payload.get("format_version") != FORMAT_VERSION:
        raise DataValidationError(
            f"{source}: format_version {payload.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    members, classes = tuple(payload["members"]), tuple(payload["classes"])
    weights = np.asarray(payload["vote"]["weights"], dtype=np.float64)
    stack = payload["stack"]
    coef = np.asarray(stack["coef"], dtype=np.float64)
    intercept = np.asarray(stack["intercept"], dtype=np.float64)
    n_features = len(members) * len(classes)
    if weights.shape != (len(members),) or not math.isclose(float(weights.sum()), 1.0, abs_tol=1e-9) \
            or (weights < 0).any():
        raise DataValidationError(f"{source}: vote weights {weights.tolist()} are not a distribution over {members}")
    if coef.ndim != 2 or coef.shape[1] != n_features or intercept.shape != (coef.shape[0],) \
            or list(stack["classes"]) != list(range(len(classes))):
        raise DataValidationError(
            f"{source}: meta-learner coef {coef.shape}, intercept {intercept.shape}, classes {stack['classes']} do "
            f"not fit {len(members)} members x {len(classes)} classes"
        )
    meta = LogisticRegression(C=float(stack["C"]))
    meta.coef_, meta.intercept_ = coef, intercept
    meta.classes_ = np.asarray(stack["classes"], dtype=np.int64)
    meta.n_features_in_ = n_features
    return FittedEnsemble(str(payload["method"]), members, classes, weights, meta, dict(payload.get("summary", {})))


def save_ensemble(ensemble: FittedEnsemble, output_dir: str | Path) -> Path:
    """Write :data:`ENSEMBLE_FILE` (with package versions and git commit) into ``output_dir``, atomically.

    Returns:
        ``output_dir``.
    """
    payload = {**ensemble_to_json(ensemble), "package_versions": package_versions(RECORDED_PACKAGES),
               "git_commit": git_commit(), "created_unix": time.time()}
    with atomic_directory(output_dir) as staging:
        write_json(staging / ENSEMBLE_FILE, payload)
    return Path(output_dir)


def load_ensemble(model_dir: str | Path) -> FittedEnsemble:
    """Load an ensemble written by :func:`save_ensemble`.

    Raises:
        DataValidationError: :data:`ENSEMBLE_FILE` is missing or malformed.
    """
    path = Path(model_dir) / ENSEMBLE_FILE
    if not path.is_file():
        raise DataValidationError(f"{model_dir}: {ENSEMBLE_FILE} not found; not an ensemble")
    try:
        return ensemble_from_json(read_json(path), str(path))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DataValidationError):
            raise
        raise DataValidationError(f"{path}: malformed ensemble file: {exc!r}") from exc


def fit_ensemble_dirs(member_dirs: Mapping[str, str | Path], config: EnsembleConfig, output_dir: str | Path
                      ) -> FittedEnsemble:
    """Read each member's validation logits (``LOGITS_FILES["validation"]`` in its directory), fit, save.

    Args:
        member_dirs: Member name -> its logits directory (or file), in stacking-feature order.
        config: See :func:`fit_ensemble`.
        output_dir: Directory to create for :data:`ENSEMBLE_FILE`.

    Raises:
        DataValidationError: Fewer than two members or a member's logits missing or inconsistent, before fitting.
    """
    if len(member_dirs) < MIN_MEMBERS:
        raise DataValidationError(
            f"an ensemble needs at least {MIN_MEMBERS} members, got {len(member_dirs)}: {list(member_dirs)}"
        )
    members = [read_member_logits(path, name, "validation") for name, path in member_dirs.items()]
    ensemble = fit_ensemble(members, config)
    save_ensemble(ensemble, output_dir)
    return ensemble
