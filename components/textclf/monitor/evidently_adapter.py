"""Evidently, used one way: as the renderer of the HTML drift report. Its tests do not decide anything.

The detector (:mod:`textclf.monitor.detector`) runs every test once (:mod:`textclf.monitor.stats`) and applies the
decision rule itself (the Evidently 0.7 API has no dataset-drift boolean, and the ``text`` signal needs an
effect-size floor Evidently's tests do not have). :class:`EvidentlyRenderer` then hands those outcomes to an Evidently
0.7 ``Report([DataDriftPreset(...)])`` over a ``Dataset`` with a text column, a categorical and the numerical signal
columns: each signal's column is checked by a stat test registered here (``textclf_<signal>``) that only returns
the outcome already computed, so Evidently draws the distributions, tables and typical words/examples of exactly
the p-values and verdicts the detector reported. Evidently is imported and run only when a report is rendered.

Evidently's explainer of a drifted text column (``get_text_data_for_plots``: a TF-IDF classifier fitted to list
the words and examples typical of each side) is capped at :data:`TEXT_PLOT_MAX_ROWS` rows per side and fitted once
per report (the preset asks for it three times: for its metric, its count and its table); unpatched it took 3.7 of
6 s at 5,000 rows. This patches one name in ``evidently.legacy.calculations.data_drift`` (checked for evidently
0.7.23); outside a rendering here the original runs, and nothing is patched if that name is gone.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Most rows per side Evidently's "typical words / examples" explainer of a drifted text column is fitted on.
TEXT_PLOT_MAX_ROWS = 1000
#: Columns with Evidently's text and categorical types; every other signal column is numerical.
TEXT_COLUMN, CATEGORICAL_COLUMN = "text", "label"


@dataclass
class _Rendering:
    """What the registered stat tests and the text-plot explainer see while one report runs."""

    outcomes: Mapping[str, tuple[float, bool]]
    text_plots: dict[Any, Any] = field(default_factory=dict)


_RENDERING: ContextVar[_Rendering | None] = ContextVar("textclf_evidently_rendering", default=None)


def stat_test_name(signal: str) -> str:
    """Name of the Evidently stat test that reports ``signal``'s precomputed outcome."""
    return f"textclf_{signal}"


def _outcome(signal: str, reference: pd.Series, current: pd.Series, feature_type: Any,
             threshold: float) -> tuple[float, bool]:
    rendering = _RENDERING.get()
    if rendering is None or signal not in rendering.outcomes:
        raise RuntimeError(f"{stat_test_name(signal)} only renders outcomes of textclf.monitor.detector; "
                           "use EvidentlyRenderer")
    p_value, drifted = rendering.outcomes[signal]
    return float(p_value), bool(drifted)


@functools.cache
def _register(signal: str, description: str) -> str:
    """Register the stat test that reports ``signal`` (once per signal and description); returns its name."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    _patch_text_plots()
    kind = {TEXT_COLUMN: ColumnType.Text, CATEGORICAL_COLUMN: ColumnType.Categorical}.get(signal,
                                                                                          ColumnType.Numerical)
    name = stat_test_name(signal)
    register_stattest(StatTest(name, description, [kind], 0.05), functools.partial(_outcome, signal))
    return name


def _patch_text_plots() -> None:
    from evidently.legacy.calculations import data_drift

    original = getattr(data_drift, "get_text_data_for_plots", None)
    if original is None or getattr(original, "_textclf_patched", False):
        return

    def once_per_report(reference_data: pd.Series, current_data: pd.Series) -> Any:
        rendering = _RENDERING.get()
        if rendering is None:
            return original(reference_data, current_data)
        key = reference_data.name
        if key not in rendering.text_plots:
            rendering.text_plots[key] = original(_cap(reference_data), _cap(current_data))
        return rendering.text_plots[key]

    once_per_report._textclf_patched = True  # type: ignore[attr-defined]
    data_drift.get_text_data_for_plots = once_per_report


def _cap(values: pd.Series) -> pd.Series:
    return values.sample(n=TEXT_PLOT_MAX_ROWS, random_state=0) if len(values) > TEXT_PLOT_MAX_ROWS else values


class EvidentlyRenderer:
    """Renders checks of one reference as Evidently's self-contained data-drift HTML report.

    Args:
        reference: The reference's signal columns (one per signal, named after it).
        descriptions: Signal -> the test that checked it, in report order (shown in Evidently's table).
        thresholds: Signal -> its p-value threshold.
    """

    def __init__(self, reference: pd.DataFrame, descriptions: Mapping[str, str], thresholds: Mapping[str, float]):
        self.signals: Sequence[str] = list(descriptions)
        self.descriptions = dict(descriptions)
        self.thresholds = {signal: float(thresholds[signal]) for signal in self.signals}
        self._reference_frame = reference[self.signals]
        self._reference: Any = None

    def _data_definition(self) -> Any:
        from evidently import DataDefinition

        return DataDefinition(
            text_columns=[s for s in self.signals if s == TEXT_COLUMN],
            categorical_columns=[s for s in self.signals if s == CATEGORICAL_COLUMN],
            numerical_columns=[s for s in self.signals if s not in (TEXT_COLUMN, CATEGORICAL_COLUMN)],
        )

    def _preset(self) -> Any:
        from evidently.presets import DataDriftPreset

        return DataDriftPreset(
            columns=list(self.signals),
            per_column_method={s: _register(s, self.descriptions[s]) for s in self.signals},
            per_column_threshold=self.thresholds,
            drift_share=0.999 / len(self.signals),  # the report's headline: drift if any signal drifted
        )

    def html(self, current: pd.DataFrame, outcomes: Mapping[str, tuple[float, bool]]) -> str:
        """The HTML report of one check.

        Args:
            current: The window's signal columns.
            outcomes: Signal -> (p-value, drifted) as the detector decided.

        Returns:
            A self-contained HTML page (scripts inlined).
        """
        from evidently import Dataset, Report

        missing = [s for s in self.signals if s not in outcomes]
        if missing:
            raise ValueError(f"no outcome for signal(s) {missing}")
        if self._reference is None:
            self._reference = Dataset.from_pandas(self._reference_frame, data_definition=self._data_definition())
        token = _RENDERING.set(_Rendering(dict(outcomes)))
        try:
            snapshot = Report([self._preset()], include_tests=False).run(
                Dataset.from_pandas(current[list(self.signals)], data_definition=self._data_definition()),
                self._reference,
            )
        finally:
            _RENDERING.reset(token)
        return snapshot.get_html_str(as_iframe=False)
