"""The statistical tests of the drift signals; each returns its p-value and its effect size together.

* :func:`chi2_two_sample_test` - categorical samples (the predicted label): chi-square test of homogeneity of the
  2 x k contingency table (``scipy.stats.chi2_contingency``), so the reference's own sampling noise counts.
* :func:`ks_two_sample_test` - numeric samples (confidence, text descriptors): two-sample Kolmogorov-Smirnov
  (``scipy.stats.ks_2samp``).
* :class:`DomainClassifierTest` - texts: a domain classifier (hashed unigrams, ``SGDClassifier`` with logistic loss,
  stratified k-fold out-of-fold scores) tells window rows from reference rows; the p-value is the one-sided
  Mann-Whitney U test (``scipy.stats.mannwhitneyu``) that window rows score higher, the effect size the ROC AUC
  (``U / (n1 n0)``). The reference side (sampling, hashed features) is prepared once, when the test is built.

Each test runs once per check: the detector decides from these results and hands them to Evidently to render.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
from scipy import stats

from textclf.monitor.config import DriftConfig

CHI2 = "chi2_contingency"
KS = "ks_2samp"
DOMAIN_CLASSIFIER = "domain_classifier_mannwhitney"
#: Each test in words (the HTML report's test column).
DESCRIPTIONS = {
    CHI2: "chi-square (2 x k contingency) p-value",
    KS: "two-sample Kolmogorov-Smirnov p-value",
    DOMAIN_CLASSIFIER: "domain classifier (hashed words + logistic regression), Mann-Whitney U p-value",
}


@dataclass(frozen=True)
class TwoSampleResult:
    """One two-sample test.

    Attributes:
        method: Which test (:data:`CHI2`, :data:`KS` or :data:`DOMAIN_CLASSIFIER`).
        p_value: Its p-value.
        statistic: Its effect size: the chi-square statistic, the KS statistic, or the domain classifier's ROC AUC.
    """

    method: str
    p_value: float
    statistic: float


def chi2_two_sample_test(reference: Sequence[Any] | pd.Series, current: Sequence[Any] | pd.Series) -> TwoSampleResult:
    """Chi-square test of homogeneity of two categorical samples (2 x k contingency table).

    Returns:
        p-value and chi-square statistic; ``(1.0, 0.0)`` when both samples hold a single category.
    """
    reference, current = pd.Series(reference).astype(str), pd.Series(current).astype(str)
    categories = sorted(set(reference) | set(current))
    if len(categories) < 2:
        return TwoSampleResult(CHI2, 1.0, 0.0)
    table = np.array([reference.value_counts().reindex(categories, fill_value=0).to_numpy(),
                      current.value_counts().reindex(categories, fill_value=0).to_numpy()])
    result = stats.chi2_contingency(table, correction=False)
    return TwoSampleResult(CHI2, float(result.pvalue), float(result.statistic))


def ks_two_sample_test(reference: Sequence[float] | pd.Series, current: Sequence[float] | pd.Series) -> TwoSampleResult:
    """Two-sided two-sample Kolmogorov-Smirnov test: p-value and KS statistic."""
    result = stats.ks_2samp(np.asarray(reference, dtype=float), np.asarray(current, dtype=float))
    return TwoSampleResult(KS, float(result.pvalue), float(result.statistic))


@dataclass(frozen=True)
class DomainClassifierSettings:
    """How the text domain classifier is trained: the ``domain_*`` fields and the seed of :class:`DriftConfig`
    (which holds the defaults)."""

    folds: int
    features: int
    max_reference: int
    seed: int

    @classmethod
    def from_config(cls, config: DriftConfig) -> DomainClassifierSettings:
        return cls(config.domain_folds, config.domain_features, config.domain_max_reference, config.seed)


class DomainClassifierTest:
    """Can a classifier tell window texts from the reference texts better than chance?

    Args:
        reference_texts: Normalised reference texts (a seeded sample of ``settings.max_reference`` if more).
        settings: Classifier settings (default: from ``DriftConfig()``).
    """

    def __init__(self, reference_texts: Sequence[str] | pd.Series, settings: DomainClassifierSettings | None = None):
        self.settings = settings or DomainClassifierSettings.from_config(DriftConfig())
        texts = pd.Series(reference_texts, dtype=object).reset_index(drop=True)
        if len(texts) > self.settings.max_reference:
            texts = texts.sample(n=self.settings.max_reference, random_state=self.settings.seed)
        self.reference_rows = len(texts)
        self._reference = self._hashed(texts)

    def _hashed(self, texts: Sequence[str] | pd.Series) -> Any:
        from sklearn.feature_extraction.text import HashingVectorizer

        vectoriser = HashingVectorizer(n_features=self.settings.features, alternate_sign=False, lowercase=True)
        return vectoriser.transform(list(texts))

    def __call__(self, current_texts: Sequence[str] | pd.Series) -> TwoSampleResult:
        """Test ``current_texts`` (normalised) against the reference.

        Returns:
            The one-sided Mann-Whitney U p-value of out-of-fold scores (window > reference) and the ROC AUC
            (0.5 = indistinguishable); ``(1.0, 0.5)`` when either side is too small for two folds.
        """
        from sklearn.linear_model import SGDClassifier
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        n_ref, n_cur = self.reference_rows, len(current_texts)
        folds = min(self.settings.folds, n_ref, n_cur)
        if folds < 2:
            return TwoSampleResult(DOMAIN_CLASSIFIER, 1.0, 0.5)
        features = scipy.sparse.vstack([self._reference, self._hashed(current_texts)]).tocsr()
        target = np.r_[np.zeros(n_ref), np.ones(n_cur)]
        model = SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=20, tol=None, random_state=self.settings.seed,
                              class_weight="balanced")
        scores = cross_val_predict(model, features, target, method="decision_function",
                                   cv=StratifiedKFold(folds, shuffle=True, random_state=self.settings.seed))
        test = stats.mannwhitneyu(scores[target == 1], scores[target == 0], alternative="greater")
        return TwoSampleResult(DOMAIN_CLASSIFIER, float(test.pvalue), float(test.statistic) / (n_cur * n_ref))


def domain_classifier_test(reference_texts: Sequence[str] | pd.Series, current_texts: Sequence[str] | pd.Series,
                           settings: DomainClassifierSettings | None = None) -> TwoSampleResult:
    """One :class:`DomainClassifierTest` of ``current_texts`` against ``reference_texts`` (both normalised)."""
    return DomainClassifierTest(reference_texts, settings)(current_texts)
