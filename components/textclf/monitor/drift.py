"""Drift detector: compares a window of logged requests with the reference sample of the production model.

Signals (each one p-value, see :data:`textclf.monitor.config.SIGNALS`):

* ``label`` - predicted-class distribution: chi-square test of the 2 x k contingency table (window vs reference
  counts; ``scipy.stats.chi2_contingency``), so the reference's own sampling noise is accounted for.
* ``confidence`` - top-class probability: two-sample Kolmogorov-Smirnov test.
* ``text`` - the text column: a domain classifier we control (hashed unigrams, ``SGDClassifier`` with logistic loss,
  stratified k-fold out-of-fold scores); the p-value is the one-sided Mann-Whitney U test that window rows score
  higher than reference rows, the ROC AUC (= U / n1 n0) is reported as the effect size. It replaces Evidently's
  default text drift (a TF-IDF domain classifier that took 4.8 s for 400 rows here).
* ``n_words``, ``oov_share``, ``mean_word_length`` - numeric text descriptors: two-sample KS tests.

All of them run inside one Evidently 0.7 report, ``Report([DataDriftPreset(...)])`` over a ``Dataset`` with a text
column, a categorical and four numerical columns (the text and label tests are registered with Evidently as custom
stat tests), which also renders the self-contained HTML report.

Decision rule (the new Evidently API has no dataset-drift boolean, so it is computed here, explicitly):

1. A window with fewer than ``min_window_size`` rows is not checked (:class:`DataValidationError`).
2. Signal ``i`` is drifted if its p-value is below ``threshold_i = alpha / m`` (Bonferroni over the ``m`` enabled
   signals; ``signal_alpha`` may set a signal's threshold explicitly). With the defaults (``alpha = 0.01``, six
   signals) every threshold is 0.00167, and an unshifted window raises a false alarm with probability <= 1 %.
   The ``text`` signal also needs an effect size: domain-classifier ROC AUC >= ``min_domain_auc`` (0.55), because
   news text churns (new stories, near-duplicates) enough to be "significant" but harmless at any window size.
3. The window is drifted (``drift_detected``) if **any** signal is drifted.
4. Cooldown (:class:`Cooldown`): a drifted window *triggers* (calls ``on_drift``, e.g. starts a retraining run)
   only if no trigger happened in the last ``cooldown_checks`` checks **and** the last ``cooldown_seconds``; the
   windows in between are still checked and reported (``cooling_down: true``), so one shift does not start ten
   retrains.

``drift_score`` (a gauge) is ``max_i log(p_i) / log(threshold_i)`` clipped to [0, 10] (a signal that is not drifted
contributes at most 0.999): 0 for p = 1, 1 exactly at a threshold, so ``drift_score >= 1`` is the same as
``drift_detected``. ``drifted_share`` is Evidently's share of
drifted columns (signals) under the same thresholds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import html
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
from scipy import stats

from textclf.errors import DataValidationError
from textclf.monitor.config import DESCRIPTORS, DriftConfig
from textclf.monitor.reference import Reference, text_descriptors
from textclf.provenance import atomic_file, write_json
from textclf.text import normalise_text

log = logging.getLogger(__name__)

#: Cap of :data:`DriftResult.drift_score`.
MAX_DRIFT_SCORE = 10.0
#: Columns a window must have.
WINDOW_COLUMNS = ("text", "label", "confidence")


# --- statistical tests (registered with Evidently) --------------------------------------------------------------


@dataclass(frozen=True)
class DomainClassifierSettings:
    """How the text domain classifier is trained: the ``domain_*`` fields of :class:`DriftConfig` (which holds the
    defaults), gathered into one hashable key for memoising and naming the registered test."""

    folds: int
    features: int
    max_reference: int
    seed: int
    min_auc: float

    @classmethod
    def from_config(cls, config: DriftConfig) -> DomainClassifierSettings:
        return cls(config.domain_folds, config.domain_features, config.domain_max_reference, config.seed,
                   config.min_domain_auc)


#: (test, reference key, current key) -> result. Evidently runs a column's stat test up to three times per report
#: (the metric, the drifted-columns count and the legacy table it renders), so results are memoised.
_RESULTS: OrderedDict[tuple[Any, ...], tuple[float, float]] = OrderedDict()
_RESULTS_MAX = 32


def _series_key(values: pd.Series) -> tuple[int, str]:
    hashed = pd.util.hash_pandas_object(values.reset_index(drop=True), index=False).to_numpy()
    return len(values), hashlib.blake2b(hashed.tobytes(), digest_size=16).hexdigest()


def _memoised(key: tuple[Any, ...], compute: Any) -> tuple[float, float]:
    if key in _RESULTS:
        _RESULTS.move_to_end(key)
        return _RESULTS[key]
    value = compute()
    _RESULTS[key] = value
    while len(_RESULTS) > _RESULTS_MAX:
        _RESULTS.popitem(last=False)
    return value


def domain_classifier_test(reference_texts: pd.Series, current_texts: pd.Series,
                           settings: DomainClassifierSettings | None = None) -> tuple[float, float]:
    """Can a classifier tell window texts from reference texts better than chance?

    Args:
        reference_texts: Normalised reference texts.
        current_texts: Normalised window texts.
        settings: Classifier settings (default: from ``DriftConfig()``).

    Returns:
        ``(p_value, roc_auc)``: one-sided Mann-Whitney U p-value of out-of-fold scores (window > reference) and the
        corresponding ROC AUC (0.5 = indistinguishable).
    """
    settings = settings or DomainClassifierSettings.from_config(DriftConfig())
    reference_texts = pd.Series(reference_texts, dtype=object)
    current_texts = pd.Series(current_texts, dtype=object)
    key = ("domain", settings, _series_key(reference_texts), _series_key(current_texts))
    return _memoised(key, lambda: _domain_classifier(reference_texts, current_texts, settings))


def _domain_classifier(reference_texts: pd.Series, current_texts: pd.Series,
                       settings: DomainClassifierSettings) -> tuple[float, float]:
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n_ref = min(len(reference_texts), settings.max_reference)
    if n_ref < len(reference_texts):
        reference_texts = reference_texts.sample(n=n_ref, random_state=settings.seed)
    folds = min(settings.folds, len(reference_texts), len(current_texts))
    if folds < 2:
        return 1.0, 0.5
    features = scipy.sparse.vstack([_hashed(reference_texts, settings.features), _hashed(current_texts,
                                                                                       settings.features)]).tocsr()
    target = np.r_[np.zeros(len(reference_texts)), np.ones(len(current_texts))]
    model = SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=20, tol=None, random_state=settings.seed,
                          class_weight="balanced")
    scores = cross_val_predict(model, features, target, method="decision_function",
                               cv=StratifiedKFold(folds, shuffle=True, random_state=settings.seed))
    test = stats.mannwhitneyu(scores[target == 1], scores[target == 0], alternative="greater")
    auc = float(test.statistic) / (len(current_texts) * len(reference_texts))
    return float(test.pvalue), auc


_FEATURES: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def _hashed(texts: pd.Series, width: int) -> Any:
    """Hashed unigram counts of ``texts`` (memoised: the reference sample is the same at every check)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    key = (width, _series_key(texts))
    if key not in _FEATURES:
        vectoriser = HashingVectorizer(n_features=width, alternate_sign=False, lowercase=True)
        _FEATURES[key] = vectoriser.transform(list(texts))
        while len(_FEATURES) > 4:
            _FEATURES.popitem(last=False)
    _FEATURES.move_to_end(key)
    return _FEATURES[key]


def chi2_two_sample_test(reference: pd.Series, current: pd.Series) -> tuple[float, float]:
    """Chi-square test of homogeneity of two categorical samples (2 x k contingency table).

    Returns:
        ``(p_value, statistic)``; ``(1.0, 0.0)`` when there is a single category.
    """
    key = ("chi2", _series_key(reference.astype(str)), _series_key(current.astype(str)))

    def compute() -> tuple[float, float]:
        categories = sorted(set(reference.astype(str)) | set(current.astype(str)))
        if len(categories) < 2:
            return 1.0, 0.0
        table = np.array([
            reference.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy(),
            current.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy(),
        ])
        result = stats.chi2_contingency(table, correction=False)
        return float(result.pvalue), float(result.statistic)

    return _memoised(key, compute)


def _evidently_chi2(reference: pd.Series, current: pd.Series, feature_type: Any,
                    threshold: float) -> tuple[float, bool]:
    p_value, _ = chi2_two_sample_test(reference, current)
    return p_value, p_value < threshold


@functools.lru_cache(maxsize=None)
def _register_stattests(settings: DomainClassifierSettings) -> tuple[str, str]:
    """Register the chi-square and domain-classifier tests with Evidently; returns their names."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    _patch_text_plots()
    chi2_name = "textclf_chi2_contingency"
    register_stattest(StatTest(chi2_name, "chi-square (2 x k contingency) p-value", [ColumnType.Categorical], 0.05),
                      _evidently_chi2)

    def domain(reference: pd.Series, current: pd.Series, feature_type: Any, threshold: float) -> tuple[float, bool]:
        p_value, auc = domain_classifier_test(reference, current, settings)
        return p_value, bool(p_value < threshold and auc >= settings.min_auc)

    domain_name = (f"textclf_domain_classifier_f{settings.folds}_h{settings.features}_r{settings.max_reference}"
                   f"_s{settings.seed}_auc{settings.min_auc:g}")
    register_stattest(
        StatTest(domain_name, "domain classifier (hashed words + logistic regression, Mann-Whitney p-value)",
                 [ColumnType.Text], 0.05),
        domain,
    )
    return chi2_name, domain_name


#: Most rows per side Evidently's "typical words / examples" explainer of a drifted text column is fitted on.
TEXT_PLOT_MAX_ROWS = 1000


def _patch_text_plots() -> None:
    """Make Evidently's explainer of a drifted text column (``get_text_data_for_plots``: a TF-IDF classifier fitted
    to list the words and examples typical of each side, for the HTML report) memoised and capped at
    :data:`TEXT_PLOT_MAX_ROWS` rows per side. Unpatched, it is fitted on all rows, three times per report (the
    preset computes the column drift for its metric, its count and its table): 3.7 of 6 s at 5,000 rows.

    Patches one name in ``evidently.legacy.calculations.data_drift`` (checked for evidently 0.7.23); does nothing
    if that name is gone.
    """
    from evidently.legacy.calculations import data_drift

    original = getattr(data_drift, "get_text_data_for_plots", None)
    if original is None or getattr(original, "_textclf_patched", False):
        return

    def capped(reference_data: pd.Series, current_data: pd.Series) -> Any:
        reference_data = _cap(reference_data)
        current_data = _cap(current_data)
        key = ("text_plots", _series_key(reference_data), _series_key(current_data))
        if key not in _PLOTS:
            _PLOTS[key] = original(reference_data, current_data)
            while len(_PLOTS) > 4:
                _PLOTS.popitem(last=False)
        return _PLOTS[key]

    capped._textclf_patched = True  # type: ignore[attr-defined]
    data_drift.get_text_data_for_plots = capped


_PLOTS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def _cap(values: pd.Series) -> pd.Series:
    return values.sample(n=TEXT_PLOT_MAX_ROWS, random_state=0) if len(values) > TEXT_PLOT_MAX_ROWS else values


def signal_methods(config: DriftConfig) -> dict[str, str]:
    """Signal -> name of the Evidently stat test that checks it."""
    chi2_name, domain_name = _register_stattests(DomainClassifierSettings.from_config(config))
    methods = {"label": chi2_name, "confidence": "ks", "text": domain_name}
    methods.update({name: "ks" for name in DESCRIPTORS})
    return {signal: methods[signal] for signal in config.signals}


def text_drift_preset(config: DriftConfig) -> Any:
    """Evidently's ``DataDriftPreset`` configured for our signals: their columns, stat tests and thresholds, and a
    dataset-drift share of one column (so the report's headline agrees with the any-signal rule).

    Args:
        config: Drift settings.

    Returns:
        A ``DataDriftPreset``.
    """
    from evidently.presets import DataDriftPreset

    return DataDriftPreset(
        columns=list(config.signals),
        per_column_method=signal_methods(config),
        per_column_threshold={signal: config.threshold(signal) for signal in config.signals},
        drift_share=0.999 / len(config.signals),
    )


def _data_definition(config: DriftConfig) -> Any:
    from evidently import DataDefinition

    numerical = [s for s in config.signals if s not in ("label", "text")]
    return DataDefinition(
        text_columns=["text"] if "text" in config.signals else [],
        categorical_columns=["label"] if "label" in config.signals else [],
        numerical_columns=numerical,
    )


# --- windows ----------------------------------------------------------------------------------------------------


def window_frame(window: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A window as a DataFrame with ``text``, ``label``, ``confidence`` (and ``timestamp``, ``model_version`` if
    known), from a DataFrame or from request-log records (``probabilities`` gives the confidence).

    Raises:
        DataValidationError: A required column is missing or a confidence is not a probability.
    """
    if not isinstance(window, pd.DataFrame):
        records = list(window)
        window = pd.DataFrame({
            "text": [r.get("text") for r in records],
            "label": [r.get("label") for r in records],
            "confidence": [r["confidence"] if "confidence" in r else max(r.get("probabilities", {}).values(),
                                                                          default=np.nan) for r in records],
            "timestamp": [r.get("timestamp") for r in records],
            "model_version": [r.get("model_version") for r in records],
        })
    missing = [c for c in WINDOW_COLUMNS if c not in window.columns]
    if missing:
        raise DataValidationError(f"window is missing column(s) {missing}; expected {list(WINDOW_COLUMNS)}")
    confidence = pd.to_numeric(window["confidence"], errors="coerce")
    if (confidence.isna() | (confidence < 0) | (confidence > 1)).any():
        raise DataValidationError("window has confidence values that are missing or outside [0, 1]")
    out = window.assign(text=window["text"].astype(str), label=window["label"].astype(str), confidence=confidence)
    return out.reset_index(drop=True)


def signal_frame(texts: Sequence[str], labels: Sequence[str], confidence: Sequence[float], reference: Reference,
                 is_reference: bool = False) -> pd.DataFrame:
    """The columns Evidently tests: normalised ``text``, ``label``, ``confidence`` and the descriptors."""
    if is_reference:
        normalised, descriptors = reference.normalised_texts.to_numpy(), reference.descriptors
    else:
        normalised = np.array([normalise_text(t) for t in texts], dtype=object)
        descriptors = text_descriptors(list(normalised), reference.vocabulary, normalised=True)
    return pd.DataFrame({
        "text": normalised,
        "label": np.asarray(labels, dtype=object),
        "confidence": np.asarray(confidence, dtype=float),
        **{name: descriptors[name].to_numpy() for name in DESCRIPTORS},
    })


# --- results ----------------------------------------------------------------------------------------------------


@dataclass
class SignalResult:
    """One signal's test in one check.

    Attributes:
        name: Signal (``label``, ``confidence``, ``text``, ...).
        method: Evidently stat test name.
        p_value: The test's p-value.
        threshold: p-value below which the signal counts as drifted.
        drifted: ``p_value < threshold``.
        statistic: Effect size: ROC AUC for ``text``, chi-square statistic for ``label``, KS statistic otherwise.
        reference: Summary of the reference (mean, or class shares for ``label``).
        current: The same summary for the window.
    """

    name: str
    method: str
    p_value: float
    threshold: float
    drifted: bool
    statistic: float | None = None
    reference: dict[str, float] = field(default_factory=dict)
    current: dict[str, float] = field(default_factory=dict)


@dataclass
class DriftResult:
    """What one check found, and what the monitor did about it (JSON-ready via :meth:`to_dict`).

    Attributes:
        check_id: Unique, sortable id (``YYYYmmddTHHMMSSffffffZ``), also the result's file name.
        checked_at: When the check ran (ISO-8601 UTC).
        window_rows: Rows in the window.
        reference_rows: Rows in the reference.
        drift_detected: The decision rule's verdict on this window (see the module docstring).
        drift_score: ``max log(p) / log(threshold)``, clipped to [0, 10]; >= 1 iff ``drift_detected``.
        drifted_share: Share of signals drifted (Evidently's ``DriftedColumnsCount``).
        signals: Per-signal results.
        triggered: The drift was acted on (``on_drift`` called) - False while cooling down.
        cooling_down: A drift was found during the cooldown of an earlier trigger and not acted on.
        window_start: Timestamp of the window's first request (if logged).
        window_end: Timestamp of its last request.
        model_versions: Requests per logged model version.
        reference_model_version: The model the reference was built for.
        reference_fingerprint: sha256 of the reference rows.
        seconds: Time the check took (statistics and Evidently report; not the HTML rendering).
        rule: The decision rule in words.
        config: The settings used.
        trigger_error: Why ``on_drift`` failed, if it did.
        cooldown: The cooldown state after this check.
        malformed_lines: Request-log lines skipped as malformed since the previous check (None: not read from a
            log).
    """

    check_id: str
    checked_at: str
    window_rows: int
    reference_rows: int
    drift_detected: bool
    drift_score: float
    drifted_share: float
    signals: list[SignalResult]
    triggered: bool = False
    cooling_down: bool = False
    window_start: str | None = None
    window_end: str | None = None
    model_versions: dict[str, int] = field(default_factory=dict)
    reference_model_version: str = ""
    reference_fingerprint: str = ""
    seconds: float = 0.0
    rule: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    trigger_error: str | None = None
    cooldown: dict[str, Any] = field(default_factory=dict)
    malformed_lines: int | None = None
    _snapshot: Any = field(default=None, repr=False, compare=False)

    @property
    def drifted_signals(self) -> list[str]:
        return [s.name for s in self.signals if s.drifted]

    def signal(self, name: str) -> SignalResult:
        for found in self.signals:
            if found.name == name:
                return found
        raise KeyError(f"no signal {name!r} in this check (signals: {[s.name for s in self.signals]})")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
        out["signals"] = [dataclasses.asdict(s) for s in self.signals]
        out["drifted_signals"] = self.drifted_signals
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> DriftResult:
        names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        values = {k: v for k, v in payload.items() if k in names}
        values["signals"] = [SignalResult(**s) for s in payload.get("signals", [])]
        return cls(**values)

    def summary(self) -> str:
        """One line for logs."""
        verdict = "DRIFT" if self.drift_detected else "no drift"
        action = " (triggered)" if self.triggered else " (cooling down)" if self.cooling_down else ""
        drifted = f" in {', '.join(self.drifted_signals)}" if self.drifted_signals else ""
        return (f"check {self.check_id}: {verdict}{drifted}{action}; {self.window_rows} rows, score "
                f"{self.drift_score:.2f}, {self.seconds:.2f} s")

    def html(self) -> str:
        """The self-contained HTML report: our decision summary above Evidently's drift report.

        Raises:
            RuntimeError: The result was loaded from JSON (the Evidently snapshot is not kept).
        """
        if self._snapshot is None:
            raise RuntimeError(f"check {self.check_id}: no Evidently snapshot to render (result loaded from JSON)")
        page = self._snapshot.get_html_str(as_iframe=False)
        banner = _summary_html(self)
        marker = page.find("<body")
        if marker >= 0:
            close = page.find(">", marker) + 1
            return page[:close] + banner + page[close:]
        return banner + page

    def save(self, directory: str | Path, with_html: bool = True, stem: str | None = None) -> tuple[Path, Path | None]:
        """Write ``<stem>.json`` (and ``<stem>.html``) to ``directory``, atomically.

        Args:
            directory: Where (created).
            with_html: Also write the HTML report (needs the Evidently snapshot).
            stem: File name without suffix (default: the check id).

        Returns:
            The JSON path and the HTML path (None without HTML).
        """
        directory = Path(directory)
        stem = stem or self.check_id
        html_path = None
        if with_html and self._snapshot is not None:
            html_path = directory / f"{stem}.html"
            with atomic_file(html_path) as handle:
                handle.write(self.html().encode("utf-8"))
        json_path = directory / f"{stem}.json"
        write_json(json_path, self.to_dict())
        return json_path, html_path


def _summary_html(result: DriftResult) -> str:
    colour = "#b00020" if result.drift_detected else "#1b5e20"
    verdict = "DRIFT DETECTED" if result.drift_detected else "No drift"
    if result.triggered:
        verdict += " - retraining triggered"
    elif result.cooling_down:
        verdict += " - not acted on (cooldown)"
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{html.escape(s.method)}</td><td>{s.p_value:.3g}</td>"
        f"<td>{s.threshold:.3g}</td><td>{'' if s.statistic is None else f'{s.statistic:.3f}'}</td>"
        f"<td style='color:{'#b00020' if s.drifted else '#1b5e20'}'>{'drifted' if s.drifted else 'ok'}</td></tr>"
        for s in result.signals
    )
    return (
        "<div style='font-family:sans-serif;margin:16px;padding:12px;border:2px solid "
        f"{colour}'><h2 style='color:{colour};margin-top:0'>textclf drift check {html.escape(result.check_id)}: "
        f"{verdict}</h2><p>{result.window_rows} window rows ({html.escape(str(result.window_start))} to "
        f"{html.escape(str(result.window_end))}) vs {result.reference_rows} reference rows of model "
        f"{html.escape(result.reference_model_version)}; drift score {result.drift_score:.2f}, "
        f"{result.drifted_share:.0%} of signals drifted.</p><p><b>Rule:</b> {html.escape(result.rule)}</p>"
        "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>signal</th><th>test</th>"
        f"<th>p-value</th><th>threshold</th><th>statistic</th><th></th></tr>{rows}</table></div>"
    )


def describe_rule(config: DriftConfig) -> str:
    """The decision rule with this configuration's numbers."""
    m = len(config.signals)
    thresholds = ", ".join(f"{s} < {config.threshold(s):.3g}" for s in config.signals)
    floor = f" - the text signal also needs a domain-classifier ROC AUC >= {config.min_domain_auc:g}" \
        if "text" in config.signals else ""
    return (
        f"drift if any of {m} signals has a p-value below its threshold ({thresholds}; alpha={config.alpha} "
        f"Bonferroni-split over {m} signals unless set per signal){floor}; windows of fewer than "
        f"{config.min_window_size} "
        f"rows are not checked; after a triggered drift, no new trigger for {config.cooldown_checks} checks and "
        f"{config.cooldown_seconds:g} s"
    )


def drift_score(signals: Sequence[SignalResult]) -> float:
    """``max log(p) / log(threshold)`` over the signals, clipped to [0, MAX_DRIFT_SCORE]; a signal that is not
    drifted (e.g. below its effect-size floor) contributes less than 1, so ``score >= 1`` iff some signal drifted."""
    score = 0.0
    for signal in signals:
        p_value = max(signal.p_value, 1e-300)
        ratio = math.log(p_value) / math.log(signal.threshold)
        score = max(score, ratio if signal.drifted else min(ratio, 0.999))
    return float(min(max(score, 0.0), MAX_DRIFT_SCORE))


def new_check_id(now: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%S%fZ")


# --- the detector -----------------------------------------------------------------------------------------------


class DriftDetector:
    """Checks windows against one reference (stateless: the cooldown is :class:`Cooldown`'s job).

    Args:
        reference: The production model's reference sample.
        config: Drift settings.

    Raises:
        DataValidationError: The reference is empty or smaller than ``config.min_window_size``.
    """

    def __init__(self, reference: Reference, config: DriftConfig | None = None):
        self.config = config or DriftConfig()
        if reference.rows == 0:
            raise DataValidationError("the drift reference is empty (0 rows); rebuild it from the training data")
        if reference.rows < self.config.min_window_size:
            raise DataValidationError(
                f"the drift reference has {reference.rows} rows, fewer than min_window_size="
                f"{self.config.min_window_size}; rebuild it with more rows (reference_size)"
            )
        from evidently import Dataset

        self.reference = reference
        self.methods = signal_methods(self.config)
        frame = reference.frame
        self._reference_signals = signal_frame(frame["text"].tolist(), frame["label"].tolist(),
                                               frame["confidence"].to_numpy(), reference, is_reference=True)
        self._reference_dataset = Dataset.from_pandas(self._reference_signals[list(self.config.signals)],
                                                      data_definition=_data_definition(self.config))

    def check(self, window: pd.DataFrame | Iterable[Mapping[str, Any]], now: float | None = None) -> DriftResult:
        """Test one window (no cooldown applied: ``triggered`` stays False).

        Args:
            window: Rows with ``text``, ``label``, ``confidence`` (see :func:`window_frame`).
            now: Check time (Unix seconds; default: now).

        Returns:
            The result, holding the Evidently snapshot for :meth:`DriftResult.save`.

        Raises:
            DataValidationError: The window is smaller than ``min_window_size`` or malformed.
        """
        from evidently import Dataset, Report

        started = time.perf_counter()
        frame = window_frame(window)
        if len(frame) < self.config.min_window_size:
            raise DataValidationError(
                f"window has {len(frame)} rows, fewer than min_window_size={self.config.min_window_size}: "
                "not checked (too little data for a reliable decision)"
            )
        current = signal_frame(frame["text"].tolist(), frame["label"].tolist(), frame["confidence"].to_numpy(),
                               self.reference)
        signals = list(self.config.signals)
        snapshot = Report([text_drift_preset(self.config)], include_tests=False).run(
            Dataset.from_pandas(current[signals], data_definition=_data_definition(self.config)),
            self._reference_dataset,
        )
        p_values, share = _read_snapshot(snapshot.dict(), signals)
        results = [self._signal(name, p_values[name], current) for name in signals]
        now = time.time() if now is None else now
        stamps = frame["timestamp"].dropna() if "timestamp" in frame else pd.Series(dtype=object)
        versions = frame["model_version"].dropna().astype(str) if "model_version" in frame else pd.Series(dtype=str)
        return DriftResult(
            check_id=new_check_id(now),
            checked_at=datetime.fromtimestamp(now, tz=timezone.utc).isoformat(),
            window_rows=len(frame),
            reference_rows=self.reference.rows,
            drift_detected=any(r.drifted for r in results),
            drift_score=drift_score(results),
            drifted_share=share,
            signals=results,
            window_start=str(stamps.iloc[0]) if len(stamps) else None,
            window_end=str(stamps.iloc[-1]) if len(stamps) else None,
            model_versions={str(k): int(v) for k, v in versions.value_counts().items()},
            reference_model_version=self.reference.model_version,
            reference_fingerprint=self.reference.fingerprint,
            seconds=round(time.perf_counter() - started, 4),
            rule=describe_rule(self.config),
            config=self.config.to_dict(),
            _snapshot=snapshot,
        )

    def _signal(self, name: str, p_value: float, current: pd.DataFrame) -> SignalResult:
        threshold = self.config.threshold(name)
        reference = self._reference_signals
        statistic: float | None
        if name == "text":
            _, statistic = domain_classifier_test(reference["text"], current["text"],
                                                  DomainClassifierSettings.from_config(self.config))
            summaries = ({"mean_chars": float(reference["text"].str.len().mean())},
                         {"mean_chars": float(current["text"].str.len().mean())})
        elif name == "label":
            _, statistic = chi2_two_sample_test(reference["label"], current["label"])
            summaries = tuple(
                {str(k): round(float(v), 4)
                 for k, v in frame["label"].value_counts(normalize=True).sort_index().items()}
                for frame in (reference, current)
            )
        else:
            statistic = float(stats.ks_2samp(reference[name], current[name]).statistic)
            summaries = tuple({"mean": float(frame[name].mean()), "median": float(frame[name].median())}
                              for frame in (reference, current))
        drifted = p_value < threshold and (name != "text" or statistic >= self.config.min_domain_auc)
        return SignalResult(name=name, method=self.methods[name], p_value=float(p_value), threshold=threshold,
                            drifted=bool(drifted), statistic=statistic,
                            reference=summaries[0], current=summaries[1])


def _read_snapshot(payload: Mapping[str, Any], signals: Sequence[str]) -> tuple[dict[str, float], float]:
    """Per-column p-values (``ValueDrift`` values) and the drifted share (``DriftedColumnsCount``)."""
    p_values: dict[str, float] = {}
    share = float("nan")
    for metric in payload.get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith("ValueDrift") and config.get("column") in signals:
            p_values[config["column"]] = float(metric["value"])
        elif kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    missing = [s for s in signals if s not in p_values]
    if missing:
        raise RuntimeError(f"the Evidently report has no drift result for {missing}")
    return p_values, share


# --- cooldown ---------------------------------------------------------------------------------------------------


@dataclass
class Cooldown:
    """Remembers the last trigger so that one shift does not trigger again and again.

    Attributes:
        last_trigger_unix: When the last trigger happened (None: never).
        checks_since_trigger: Checks run since then.
        last_trigger_check: ``check_id`` of that trigger.
    """

    last_trigger_unix: float | None = None
    checks_since_trigger: int = 0
    last_trigger_check: str | None = None

    def blocks(self, config: DriftConfig, now: float) -> bool:
        """Whether a trigger now would fall inside the cooldown of the last one (counting the check being made)."""
        if self.last_trigger_unix is None:
            return False
        return (self.checks_since_trigger + 1 <= config.cooldown_checks
                or now - self.last_trigger_unix < config.cooldown_seconds)

    def apply(self, result: DriftResult, config: DriftConfig, now: float | None = None) -> DriftResult:
        """Decide whether ``result`` triggers, update the state, and record both on the result.

        Returns:
            ``result``, with ``triggered``, ``cooling_down`` and ``cooldown`` set.
        """
        now = time.time() if now is None else now
        blocked = self.blocks(config, now)
        result.triggered = bool(result.drift_detected and not blocked)
        result.cooling_down = bool(result.drift_detected and blocked)
        if result.triggered:
            self.last_trigger_unix, self.checks_since_trigger, self.last_trigger_check = now, 0, result.check_id
        elif self.last_trigger_unix is not None:
            self.checks_since_trigger += 1
        result.cooldown = self.to_dict()
        return result

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any] | None) -> Cooldown:
        return cls(**dict(payload or {}))
