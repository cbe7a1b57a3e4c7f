"""Typed configuration of the drift monitor: every default in one place.

The CLI (``textclf monitor`` / ``textclf drift-check``), the KFP component and the benchmark build a
:class:`DriftConfig` from their flags, so a default is changed here and nowhere else. The decision rule these knobs
feed is documented in :mod:`textclf.monitor.detector`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from textclf.errors import ConfigError

#: Every signal the detector knows, in report order:
#:
#: * ``label``: predicted-class distribution, chi-square test of the 2 x k contingency table (window vs reference).
#: * ``confidence``: distribution of the top-class probability, two-sample Kolmogorov-Smirnov.
#: * ``text``: the text column itself, a fast domain classifier (hashed words + logistic regression, k-fold
#:   out-of-fold scores) whose scores are compared with a one-sided Mann-Whitney U test (p-value; ROC AUC reported).
#: * ``n_words``, ``oov_share``, ``mean_word_length``: numeric text descriptors, two-sample Kolmogorov-Smirnov.
#:   ``oov_share`` is the share of a text's words missing from the reference vocabulary.
SIGNALS: tuple[str, ...] = ("label", "confidence", "text", "n_words", "oov_share", "mean_word_length")
#: Descriptor signals computed from the text (a subset of :data:`SIGNALS`).
DESCRIPTORS: tuple[str, ...] = ("n_words", "oov_share", "mean_word_length")


@dataclass(frozen=True)
class DriftConfig:
    """Knobs of the drift check, the windowing and the cooldown.

    Attributes:
        window_size: Rows per window: the monitor runs a check as soon as this many new requests are logged.
        window_seconds: Also close a window this many seconds after its first request, if it has at least
            ``min_window_size`` rows (0 turns the time trigger off). A window never closes with fewer rows.
        min_window_size: Fewest rows a check accepts; smaller windows are refused (too little power, and the
            chi-square and KS approximations get loose).
        alpha: Family-wise false-alarm rate of one check on an unshifted window: each of the ``m`` signals is tested
            at ``alpha / m`` (Bonferroni), unless ``signal_alpha`` names its own threshold.
        signals: Signals to test (see :data:`SIGNALS`); ``m = len(signals)``.
        signal_alpha: Per-signal p-value thresholds that replace ``alpha / m`` for the signals they name.
        cooldown_checks: After a triggered drift, this many further checks cannot trigger again ...
        cooldown_seconds: ... and neither can any check within this many seconds (both must have passed).
        reference_size: Rows sampled from the training data for the reference.
        min_domain_auc: Effect-size floor of the ``text`` signal: it counts as drifted only if the domain
            classifier's ROC AUC is also at least this (Evidently's own text-drift threshold is 0.55). Without it,
            the small, harmless difference between AG News' test and train text (AUC ~0.505 on i.i.d. test windows
            against a 5,000-row train reference; 15-25 % of 500-row windows had p < 0.05) would alarm more and more
            often as windows grow.
        domain_folds: Folds of the domain classifier's cross-validation.
        domain_features: Hashing-vectoriser width of the domain classifier.
        domain_max_reference: Most reference rows the domain classifier uses (a seeded sample if the reference is
            larger). All of them by default: a small reference sample's own quirks made whole series of windows
            look drifted (a 500-row reference sample alarmed on 13 % of i.i.d. windows, the 3,000-row reference it
            was drawn from on none).
        seed: Seed for reference sampling and the domain classifier.
        keep_reports: HTML reports the service keeps (each is ~4 MB, self-contained); older ones are deleted, the
            JSON results are kept. 0 keeps all.
        accuracy_baseline: The accuracy the production model is held to once ground truth is fed back (its test
            accuracy); 0 takes the reference's ``test_accuracy`` and, when it has none, turns the accuracy signal
            off.
        accuracy_tolerance: How far below the baseline live accuracy may fall before it counts as a drop.
        accuracy_alpha: Significance of the accuracy signal: an exact one-sided binomial test of the last
            ``accuracy_window`` labels of the reference's model version against ``baseline - tolerance``.
        accuracy_window: Most recent labels the live accuracy (and its gauge) is computed on.
        min_labelled: Fewest labels the accuracy signal needs before it is tested (and added to a check).
    """

    window_size: int = 500
    window_seconds: float = 0.0
    min_window_size: int = 200
    alpha: float = 0.01
    signals: tuple[str, ...] = SIGNALS
    signal_alpha: Mapping[str, float] = field(default_factory=dict)
    cooldown_checks: int = 10
    cooldown_seconds: float = 3600.0
    reference_size: int = 5000
    min_domain_auc: float = 0.55
    domain_folds: int = 5
    domain_features: int = 2**18
    domain_max_reference: int = 5000
    seed: int = 42
    keep_reports: int = 100
    accuracy_baseline: float = 0.0
    accuracy_tolerance: float = 0.02
    accuracy_alpha: float = 0.01
    accuracy_window: int = 500
    min_labelled: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "signals", tuple(self.signals))
        object.__setattr__(self, "signal_alpha", dict(self.signal_alpha))
        if self.min_window_size < 20:
            raise ConfigError(f"min_window_size must be >= 20, got {self.min_window_size}")
        if self.window_size < self.min_window_size:
            raise ConfigError(
                f"window_size ({self.window_size}) must be >= min_window_size ({self.min_window_size})"
            )
        if self.window_seconds < 0:
            raise ConfigError(f"window_seconds must be >= 0 (0 = no time trigger), got {self.window_seconds}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if not self.signals:
            raise ConfigError("signals is empty: name at least one of " + ", ".join(SIGNALS))
        unknown = [s for s in (*self.signals, *self.signal_alpha) if s not in SIGNALS]
        if unknown:
            raise ConfigError(f"unknown drift signal(s) {unknown}; known: {', '.join(SIGNALS)}")
        if len(set(self.signals)) != len(self.signals):
            raise ConfigError(f"signals lists a signal twice: {self.signals}")
        for name, value in self.signal_alpha.items():
            if not 0.0 < value < 1.0:
                raise ConfigError(f"signal_alpha[{name!r}] must be in (0, 1), got {value}")
        if self.cooldown_checks < 0 or self.cooldown_seconds < 0:
            raise ConfigError(
                f"cooldown_checks and cooldown_seconds must be >= 0, got {self.cooldown_checks}, "
                f"{self.cooldown_seconds}"
            )
        if self.reference_size < self.min_window_size:
            raise ConfigError(
                f"reference_size ({self.reference_size}) must be >= min_window_size ({self.min_window_size})"
            )
        if not 0.5 <= self.min_domain_auc < 1.0:
            raise ConfigError(f"min_domain_auc must be in [0.5, 1), got {self.min_domain_auc}")
        if self.domain_folds < 2:
            raise ConfigError(f"domain_folds must be >= 2, got {self.domain_folds}")
        if self.domain_features < 2**10 or self.domain_max_reference < 100:
            raise ConfigError("domain_features must be >= 1024 and domain_max_reference >= 100")
        if not 0.0 <= self.accuracy_baseline <= 1.0 or not 0.0 <= self.accuracy_tolerance < 1.0:
            raise ConfigError(f"accuracy_baseline must be in [0, 1] and accuracy_tolerance in [0, 1), got "
                              f"{self.accuracy_baseline}, {self.accuracy_tolerance}")
        if not 0.0 < self.accuracy_alpha < 1.0:
            raise ConfigError(f"accuracy_alpha must be in (0, 1), got {self.accuracy_alpha}")
        if self.min_labelled < 1 or self.accuracy_window < self.min_labelled:
            raise ConfigError(f"need 1 <= min_labelled <= accuracy_window, got {self.min_labelled}, "
                              f"{self.accuracy_window}")
        if self.keep_reports < 0:
            raise ConfigError(f"keep_reports must be >= 0 (0 = keep all), got {self.keep_reports}")

    def threshold(self, signal: str) -> float:
        """The p-value below which ``signal`` counts as drifted: ``signal_alpha[signal]`` or ``alpha / m``."""
        return float(self.signal_alpha.get(signal, self.alpha / len(self.signals)))

    def replace(self, **changes: object) -> DriftConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready copy of the settings (recorded in every check result)."""
        out = dataclasses.asdict(self)
        out["signals"] = list(self.signals)
        out["signal_alpha"] = dict(self.signal_alpha)
        return out
