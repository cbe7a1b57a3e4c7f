"""Drift detector: compares a window of logged requests with the reference sample of the production model, and the
cooldown that keeps one shift from triggering again and again.

Signals (each one test, see :data:`textclf.monitor.config.SIGNALS` and :mod:`textclf.monitor.stats`):

* ``label`` - predicted-class distribution: chi-square test of the 2 x k contingency table (window vs reference).
* ``confidence`` - top-class probability: two-sample Kolmogorov-Smirnov test.
* ``text`` - the text column: a domain classifier we control; p-value of a one-sided Mann-Whitney U test of its
  out-of-fold scores, ROC AUC as the effect size. It replaces Evidently's default text drift (a TF-IDF domain
  classifier that took 4.8 s for 400 rows here).
* ``n_words``, ``oov_share``, ``mean_word_length`` - numeric text descriptors: two-sample KS tests.

Decision rule (computed here, explicitly; Evidently only renders it, see :mod:`textclf.monitor.evidently_adapter`):

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
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from textclf.errors import DataValidationError
from textclf.monitor.config import DESCRIPTORS, DriftConfig
from textclf.monitor.evidently_adapter import EvidentlyRenderer
from textclf.monitor.reference import Reference, text_descriptors
from textclf.monitor.result import DriftResult, SignalResult, drift_score, new_check_id
from textclf.monitor.stats import (
    CHI2,
    DESCRIPTIONS,
    DOMAIN_CLASSIFIER,
    KS,
    DomainClassifierSettings,
    DomainClassifierTest,
    TwoSampleResult,
    chi2_two_sample_test,
    ks_two_sample_test,
)
from textclf.serving.request_log import RequestRecord, RequestRecordError
from textclf.text import normalise_text

#: Columns a window must have.
WINDOW_COLUMNS = ("text", "label", "confidence")
#: The test of each signal (:mod:`textclf.monitor.stats`).
SIGNAL_TESTS: dict[str, str] = {"label": CHI2, "confidence": KS, "text": DOMAIN_CLASSIFIER,
                                **{name: KS for name in DESCRIPTORS}}


# --- windows ----------------------------------------------------------------------------------------------------


def window_frame(window: pd.DataFrame | Iterable[RequestRecord | Mapping[str, Any]]) -> pd.DataFrame:
    """A window as a DataFrame with ``text``, ``label``, ``confidence`` (and ``timestamp``, ``model_version`` if
    known), from a DataFrame or from request-log records (:class:`RequestRecord` or its JSON object).

    Raises:
        DataValidationError: A required column is missing, a record is invalid or has no text or probabilities, or
            a confidence is not a probability.
    """
    if not isinstance(window, pd.DataFrame):
        records = []
        for index, item in enumerate(window):
            try:
                record = item if isinstance(item, RequestRecord) else RequestRecord.from_dict(item)
                record.require("text", "probabilities")
            except RequestRecordError as exc:
                raise DataValidationError(f"window record {index}: {exc.reason}") from exc
            records.append(record)
        window = pd.DataFrame({
            "text": [r.text for r in records], "label": [r.label for r in records],
            "confidence": [r.confidence for r in records], "timestamp": [r.timestamp for r in records],
            "model_version": [r.model_version for r in records],
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
    """The columns the signals are tested on: normalised ``text``, ``label``, ``confidence`` and the descriptors."""
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
        self.reference = reference
        self.methods = {signal: SIGNAL_TESTS[signal] for signal in self.config.signals}
        frame = reference.frame
        self._reference_signals = signal_frame(frame["text"].tolist(), frame["label"].tolist(),
                                               frame["confidence"].to_numpy(), reference, is_reference=True)
        self._domain = DomainClassifierTest(self._reference_signals["text"],
                                            DomainClassifierSettings.from_config(self.config)) \
            if "text" in self.methods else None
        self._renderer = EvidentlyRenderer(self._reference_signals,
                                           {signal: DESCRIPTIONS[method] for signal, method in self.methods.items()},
                                           {signal: self.config.threshold(signal) for signal in self.methods})

    def check(self, window: pd.DataFrame | Iterable[RequestRecord | Mapping[str, Any]],
              now: float | None = None) -> DriftResult:
        """Test one window (no cooldown applied: ``triggered`` stays False).

        Args:
            window: Rows with ``text``, ``label``, ``confidence``, or request-log records (see :func:`window_frame`).
            now: Check time (Unix seconds; default: now).

        Returns:
            The result; its Evidently report is rendered when it is saved with HTML.

        Raises:
            DataValidationError: The window is smaller than ``min_window_size`` or malformed.
        """
        started = time.perf_counter()
        frame = window_frame(window)
        if len(frame) < self.config.min_window_size:
            raise DataValidationError(
                f"window has {len(frame)} rows, fewer than min_window_size={self.config.min_window_size}: "
                "not checked (too little data for a reliable decision)"
            )
        current = signal_frame(frame["text"].tolist(), frame["label"].tolist(), frame["confidence"].to_numpy(),
                               self.reference)
        results = [self._signal(name, current) for name in self.config.signals]
        now = time.time() if now is None else now
        stamps = frame["timestamp"].dropna() if "timestamp" in frame else pd.Series(dtype=object)
        versions = frame["model_version"].dropna().astype(str) if "model_version" in frame else pd.Series(dtype=str)
        outcomes = {r.name: (r.p_value, r.drifted) for r in results}
        return DriftResult(
            check_id=new_check_id(now),
            checked_at=datetime.fromtimestamp(now, tz=timezone.utc).isoformat(),
            window_rows=len(frame),
            reference_rows=self.reference.rows,
            drift_detected=any(r.drifted for r in results),
            drift_score=drift_score(results),
            drifted_share=sum(r.drifted for r in results) / len(results),
            signals=results,
            window_start=str(stamps.iloc[0]) if len(stamps) else None,
            window_end=str(stamps.iloc[-1]) if len(stamps) else None,
            model_versions={str(k): int(v) for k, v in versions.value_counts().items()},
            reference_model_version=self.reference.model_version,
            reference_fingerprint=self.reference.fingerprint,
            seconds=round(time.perf_counter() - started, 4),
            rule=describe_rule(self.config),
            config=self.config.to_dict(),
            _evidently_html=functools.partial(self._renderer.html, current, outcomes),
        )

    def _test(self, name: str, current: pd.DataFrame) -> TwoSampleResult:
        reference = self._reference_signals
        if self.methods[name] == DOMAIN_CLASSIFIER:
            assert self._domain is not None
            return self._domain(current[name])
        if self.methods[name] == CHI2:
            return chi2_two_sample_test(reference[name], current[name])
        return ks_two_sample_test(reference[name], current[name])

    def _signal(self, name: str, current: pd.DataFrame) -> SignalResult:
        test = self._test(name, current)
        reference = self._reference_signals
        if name == "text":
            summaries = ({"mean_chars": float(reference["text"].str.len().mean())},
                         {"mean_chars": float(current["text"].str.len().mean())})
        elif name == "label":
            summaries = tuple(
                {str(k): round(float(v), 4)
                 for k, v in frame["label"].value_counts(normalize=True).sort_index().items()}
                for frame in (reference, current)
            )
        else:
            summaries = tuple({"mean": float(frame[name].mean()), "median": float(frame[name].median())}
                              for frame in (reference, current))
        threshold = self.config.threshold(name)
        drifted = test.p_value < threshold and (name != "text" or test.statistic >= self.config.min_domain_auc)
        return SignalResult(name=name, method=test.method, p_value=test.p_value, threshold=threshold,
                            drifted=bool(drifted), statistic=test.statistic,
                            reference=summaries[0], current=summaries[1])


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
