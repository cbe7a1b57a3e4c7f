"""What one drift check found: :class:`SignalResult` per signal, :class:`DriftResult` per window, their JSON form and
the HTML report (a summary of the decision above Evidently's drift report).

``drift_score`` (a gauge) is ``max_i log(p_i) / log(threshold_i)`` clipped to [0, :data:`MAX_DRIFT_SCORE`] (a signal
that is not drifted contributes at most 0.999): 0 for p = 1, 1 exactly at a threshold, so ``drift_score >= 1`` is
the same as ``drift_detected``. ``drifted_share`` is the share of the signals that drifted.
"""

from __future__ import annotations

import dataclasses
import html
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from textclf.provenance import atomic_file, write_json

#: Cap of :data:`DriftResult.drift_score`.
MAX_DRIFT_SCORE = 10.0


@dataclass
class SignalResult:
    """One signal's test in one check.

    Attributes:
        name: Signal (``label``, ``confidence``, ``text``, ...).
        method: The statistical test (see :mod:`textclf.monitor.stats`).
        p_value: The test's p-value.
        threshold: p-value below which the signal counts as drifted.
        drifted: ``p_value < threshold`` (and, for ``text``, the effect-size floor).
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
        drift_detected: The decision rule's verdict on this window (see :mod:`textclf.monitor.detector`).
        drift_score: ``max log(p) / log(threshold)``, clipped to [0, 10]; >= 1 iff ``drift_detected``.
        drifted_share: Share of signals drifted.
        signals: Per-signal results.
        triggered: The drift was acted on (``on_drift`` called) - False while cooling down.
        cooling_down: A drift was found during the cooldown of an earlier trigger and not acted on.
        window_start: Timestamp of the window's first request (if logged).
        window_end: Timestamp of its last request.
        model_versions: Requests per logged model version.
        reference_model_version: The model the reference was built for.
        reference_fingerprint: sha256 of the reference rows.
        seconds: Time the statistics took (not the Evidently HTML report, rendered when the result is saved).
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
    #: Renders Evidently's report of this check (set by the detector; None for a result loaded from JSON).
    _evidently_html: Callable[[], str] | None = field(default=None, repr=False, compare=False)

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
            RuntimeError: The result was loaded from JSON (the window it was computed from is not kept).
        """
        if self._evidently_html is None:
            raise RuntimeError(f"check {self.check_id}: no window to render (result loaded from JSON)")
        page = self._evidently_html()
        banner = _summary_html(self)
        marker = page.find("<body")
        if marker >= 0:
            close = page.find(">", marker) + 1
            return page[:close] + banner + page[close:]
        return banner + page

    def save(self, directory: str | Path, with_html: bool = True, stem: str | None = None) -> tuple[Path, Path | None]:
        """Write ``<stem>.json`` (and then ``<stem>.html``) to ``directory``, atomically.

        Args:
            directory: Where (created).
            with_html: Also write the HTML report (needs the window: not for a result loaded from JSON).
            stem: File name without suffix (default: the check id).

        Returns:
            The JSON path and the HTML path (None without HTML).
        """
        json_path = Path(directory) / f"{stem or self.check_id}.json"
        write_json(json_path, self.to_dict())
        html_path = self.save_html(directory, stem) if with_html and self._evidently_html is not None else None
        return json_path, html_path

    def save_html(self, directory: str | Path, stem: str | None = None) -> Path:
        """Write the HTML report (:meth:`html`) as ``<stem>.html`` in ``directory``, atomically; returns its path."""
        html_path = Path(directory) / f"{stem or self.check_id}.html"
        with atomic_file(html_path) as handle:
            handle.write(self.html().encode("utf-8"))
        return html_path


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
