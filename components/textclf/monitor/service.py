"""The long-running drift monitor behind ``textclf monitor``, and the one-shot check behind ``textclf drift-check``.

It reads the serving request log with :class:`textclf.monitor.tailer.LogTailer` (rotation, malformed lines and
several replicas' logs are handled there), collects rows into windows (``window_size`` rows, or ``window_seconds``
after the window's first request once it has ``min_window_size`` rows), checks each window with
:class:`textclf.monitor.detector.DriftDetector`, writes ``checks/<check_id>.json`` and ``.html`` under the state
directory, updates the Prometheus gauges, applies the cooldown and calls ``on_drift(result)`` for a drift that is
acted on.

State (``state.json`` in the state directory, replaced atomically after every poll that changed anything): the
tailer's read position in each log, the rows read but not yet checked, the cooldown and counters (malformed lines
skipped: ``malformed_lines``, and ``textclf_drift_malformed_log_lines_total``). A killed monitor resumes from it:
every logged row lands in a checked window; a crash between writing a check's result and saving the state
re-checks that window (at-least-once), and a crash while ``on_drift`` runs calls it again on restart
(``pending_trigger``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from textclf.errors import DataValidationError, ObjectNotFoundError, TextclfError
from textclf.monitor.config import DriftConfig
from textclf.monitor.detector import Cooldown, DriftDetector
from textclf.monitor.metrics import MonitorMetrics
from textclf.monitor.reference import Reference
from textclf.monitor.result import DriftResult, SignalResult, drift_score
from textclf.monitor.store import STORE_FILE, PredictionStore
from textclf.monitor.tailer import LogTailer, read_request_log, rows_to_window, window_row
from textclf.serving.request_log import RequestRecordError
from textclf.provenance import read_json, write_json

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
CHECKS_DIR = "checks"
STATE_VERSION = 1

OnDrift = Callable[[DriftResult], None]


# --- state ------------------------------------------------------------------------------------------------------


@dataclass
class MonitorState:
    """What survives a restart (``state.json``)."""

    positions: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_seq: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)
    cooldown: dict[str, Any] = field(default_factory=dict)
    reference_fingerprint: str = ""
    pending_trigger: str | None = None
    cooldown_before_trigger: dict[str, Any] = field(default_factory=dict)
    checks: int = 0
    triggers: int = 0
    rows_read: int = 0
    malformed_lines: int = 0
    malformed_since_check: int = 0
    check_errors: int = 0
    last_check_id: str | None = None
    version: int = STATE_VERSION

    @classmethod
    def load(cls, path: Path) -> MonitorState:
        if not path.is_file():
            return cls()
        try:
            payload = read_json(path)
        except (OSError, json.JSONDecodeError) as exc:
            raise DataValidationError(
                f"{path}: unreadable monitor state ({exc}); move it away to start over from the beginning of the log"
            ) from exc
        if payload.get("version") != STATE_VERSION:
            raise DataValidationError(f"{path}: state version {payload.get('version')}, expected {STATE_VERSION}")
        known = {k: v for k, v in payload.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))


# --- the monitor ------------------------------------------------------------------------------------------------


class DriftMonitor:
    """Tails the request log and checks windows against the reference (see the module docstring).

    Every prediction goes through the :class:`PredictionStore` (``predictions.sqlite`` in the state directory):
    the request log's lines are stored there (once, whatever is re-read after a restart), the HTTP endpoint stores
    KServe's logger events there, and windows are read from it in insertion order (``store_seq`` in the state).
    When ground truth is fed back and an accuracy baseline is known, every check also tests the ``accuracy``
    signal (:meth:`accuracy_signal`): a significant drop is a drift like any other, under the same cooldown and in
    the same check record.

    Args:
        request_logs: Log file(s) or a directory of ``*.jsonl`` logs; empty when predictions arrive only as
            events.
        reference: The production model's reference.
        state_dir: Where ``state.json`` and ``checks/`` live (created).
        config: Drift settings.
        on_drift: Called with the result of every drift that is acted on (not during the cooldown). If it raises,
            the error is logged and recorded in the result, the cooldown is not started, and the next drifted
            window triggers again.
        metrics: Gauges to update (default: a fresh :class:`MonitorMetrics`).
        clock: Time source (Unix seconds), for tests.
        write_html: Write the HTML report of every check.
        store: The prediction store (default: ``predictions.sqlite`` in ``state_dir``).
        reference_source: Where ``reference`` was loaded from (the ``--reference`` path or URI). Every
            ``reference_check_seconds`` its ``reference.json`` is read, and a changed fingerprint loads the new
            reference (:meth:`use_reference`): the retraining pipeline publishes the promoted model's reference
            there, so the monitor follows a promotion without a restart.
        reference_check_seconds: How often ``reference_source`` is checked.
    """

    def __init__(self, request_logs: str | Path | Sequence[str | Path], reference: Reference,
                 state_dir: str | Path, config: DriftConfig | None = None, on_drift: OnDrift | None = None,
                 metrics: MonitorMetrics | None = None, clock: Callable[[], float] = time.time,
                 write_html: bool = True, store: PredictionStore | None = None,
                 reference_source: str | Path | None = None, reference_check_seconds: float = 60.0):
        self.request_logs = [request_logs] if isinstance(request_logs, (str, Path)) else list(request_logs)
        self.config = config or DriftConfig()
        self.detector = DriftDetector(reference, self.config)
        self.reference = reference
        self.state_dir = Path(state_dir)
        self.checks_dir = self.state_dir / CHECKS_DIR
        self.checks_dir.mkdir(parents=True, exist_ok=True)
        self.on_drift = on_drift
        self.metrics = metrics or MonitorMetrics()
        self.clock = clock
        self.write_html = write_html
        self.state_path = self.state_dir / STATE_FILE
        self.state = MonitorState.load(self.state_path)
        if self.state.reference_fingerprint and self.state.reference_fingerprint != reference.fingerprint:
            log.info("reference changed (%s -> %s, model %s): cooldown reset", self.state.reference_fingerprint[:12],
                     reference.fingerprint[:12], reference.model_version)
            self.state.cooldown = {}
        self.state.reference_fingerprint = reference.fingerprint
        self.cooldown = Cooldown.from_dict(self.state.cooldown)
        self.tailer = LogTailer(self.request_logs, self.state.positions)
        self.store = store or PredictionStore(self.state_dir / STORE_FILE, reference.labels, clock)
        self.reference_source = reference_source
        self.reference_check_seconds = reference_check_seconds
        self._reference_checked = clock()
        self._set_baseline()
        self.last_poll: float | None = None
        self._warned_versions: set[str] = set()
        self.metrics.pending_rows.set(len(self.state.pending))

    # -- the reference --

    def _set_baseline(self) -> None:
        self.accuracy_baseline = self.config.accuracy_baseline or float(
            self.reference.meta.get("test_accuracy") or 0.0)
        self.metrics.accuracy_baseline.set(self.accuracy_baseline)

    def use_reference(self, reference: Reference) -> None:
        """Check from now on against ``reference`` (a promoted model's): new detector, the cooldown reset (a new
        model starts with a clean slate), the accuracy baseline from its ``test_accuracy``; rows already pending
        are checked against it."""
        log.info("reference changed (%s -> %s, model %s -> %s): cooldown reset", self.reference.fingerprint[:12],
                 reference.fingerprint[:12], self.reference.model_version, reference.model_version)
        self.reference = reference
        self.detector = DriftDetector(reference, self.config)
        self.cooldown = Cooldown.from_dict({})
        self.state.cooldown = {}
        self.state.reference_fingerprint = reference.fingerprint
        self.store.labels = reference.labels
        self._warned_versions.clear()
        self._set_baseline()
        self._save_state()

    def reload_reference_if_changed(self) -> bool:
        """Load the reference at ``reference_source`` if its fingerprint changed; returns whether it did. A
        reference that cannot be read is logged and the current one kept."""
        from textclf.monitor.reference import load_reference, reference_fingerprint_at

        if self.reference_source is None:
            return False
        self._reference_checked = self.clock()
        try:
            if reference_fingerprint_at(self.reference_source) == self.reference.fingerprint:
                return False
            self.use_reference(load_reference(self.reference_source))
        except TextclfError as exc:
            log.warning("reference at %s not reloaded (%s); keeping model %s's", self.reference_source, exc,
                        self.reference.model_version)
            return False
        return True

    # -- reading --

    def _read(self) -> list[dict[str, Any]]:
        malformed = 0
        if self.request_logs:
            found = self.tailer.read()
            self.store.add_records(found.records)  # before the positions are saved: a crash re-reads, not loses
            self.state.positions = self.tailer.positions_state()
            malformed = found.malformed
        rows = []
        for seq, record in self.store.records_after(self.state.store_seq):
            self.state.store_seq = seq
            try:
                rows.append(window_row(record))
            except RequestRecordError:
                malformed += 1
                continue
            self.metrics.predictions.labels(model_version=record.model_version).inc()
        self.state.rows_read += len(rows)
        self.state.malformed_lines += malformed
        self.state.malformed_since_check += malformed
        self.metrics.rows_read.inc(len(rows))
        self.metrics.malformed_lines.inc(malformed)
        return rows

    # -- windows --

    def _next_cut(self, now: float | None) -> int | None:
        """Rows of the next window to close among the pending rows, or None if no window is due.

        A window closes at ``window_size`` rows, or - with ``window_seconds`` - just before the first row logged
        ``window_seconds`` after the window's first row, if that leaves at least ``min_window_size`` rows (else it
        closes as soon as it has them). ``now`` (when the log has been read to its end) closes a window whose
        first row is ``window_seconds`` old.
        """
        pending, config = self.state.pending, self.config
        cut = config.window_size if len(pending) >= config.window_size else None
        if config.window_seconds > 0 and len(pending) >= config.min_window_size:
            limit = pending[0]["t"] + config.window_seconds
            late = next((i for i, row in enumerate(pending) if row["t"] >= limit), None)
            if late is not None:
                late = max(late, config.min_window_size)
            elif now is not None and now >= limit:
                late = len(pending)
            if late is not None and late <= len(pending):
                cut = min(cut or late, late)
        return cut

    def poll(self) -> list[DriftResult]:
        """Read what was logged since the last poll and run every check that falls due.

        Returns:
            The results of the checks run (usually none or one).

        Raises:
            ObjectNotFoundError: The request log does not exist.
        """
        results: list[DriftResult | None] = []
        if self.reference_source is not None and self.clock() - self._reference_checked >= self.reference_check_seconds:
            self.reload_reference_if_changed()
        if self.state.pending_trigger:
            self._replay_trigger()
        rows = self._read()
        self.state.pending.extend(rows)  # before any check saves the state, whose positions are past these rows
        while (cut := self._next_cut(self.clock())) is not None:
            results.append(self._check_pending(cut))
        self.last_poll = self.clock()
        self.metrics.last_poll.set(self.last_poll)
        self.metrics.pending_rows.set(len(self.state.pending))
        self.refresh_accuracy()
        if rows or results:
            self._save_state()
        return [r for r in results if r is not None]

    def flush(self) -> DriftResult:
        """Check the pending rows now, however few (for one-shot runs).

        Raises:
            DataValidationError: Fewer than ``min_window_size`` rows are pending.
        """
        if len(self.state.pending) < self.config.min_window_size:
            raise DataValidationError(
                f"only {len(self.state.pending)} new request(s) in {', '.join(map(str, self.request_logs))} since the "
                f"last check, fewer than min_window_size={self.config.min_window_size}: nothing checked"
            )
        result = self._check_pending(len(self.state.pending))
        self._save_state()
        if result is None:
            raise TextclfError("the drift check failed; see the log above")
        return result

    def _check_pending(self, rows: int) -> DriftResult | None:
        window, rest = self.state.pending[:rows], self.state.pending[rows:]
        now = self.clock()
        try:
            result = self.detector.check(rows_to_window(window), now=now)
            self._add_accuracy(result)
        except Exception:  # a window that cannot be checked must not stop the monitor (it is dropped)
            log.exception("drift check of %d rows failed; window dropped", len(window))
            self.state.check_errors += 1
            self.state.pending = rest
            self.metrics.checks.labels(outcome="error").inc()
            return None
        result.malformed_lines, self.state.malformed_since_check = self.state.malformed_since_check, 0
        self._warn_foreign_versions(result)
        before = self.cooldown.to_dict()
        self.cooldown.apply(result, self.config, now)
        self.state.cooldown = self.cooldown.to_dict()
        self.state.pending = rest
        self.state.checks += 1
        self.state.last_check_id = result.check_id
        if result.triggered and self.on_drift is not None:
            self.state.pending_trigger = result.check_id
            self.state.cooldown_before_trigger = before
        result.save(self.checks_dir, with_html=False)
        if self.write_html:
            try:
                result.save_html(self.checks_dir)
            except Exception:  # the report is secondary: the JSON result is written, the check counts
                log.exception("HTML report of check %s failed; its JSON result is written", result.check_id)
        self._prune_reports()
        self._save_state()
        if self.state.pending_trigger == result.check_id:
            self._trigger(result)
        elif result.triggered:
            self.state.triggers += 1
            self.metrics.triggers.inc()
        self.metrics.observe_check(result)
        log.info(result.summary())
        return result

    # -- ground truth --

    def refresh_accuracy(self) -> None:
        """Set the live-accuracy gauges from the stored labels (per model version, the last
        ``accuracy_window``)."""
        for version, (correct, labelled) in self.store.live_accuracy(self.config.accuracy_window).items():
            self.metrics.live_labelled.labels(model_version=version).set(labelled)
            if labelled:
                self.metrics.live_accuracy.labels(model_version=version).set(correct / labelled)

    def accuracy_signal(self) -> SignalResult | None:
        """The ``accuracy`` signal: is the live accuracy of the reference's model version significantly below
        ``baseline - accuracy_tolerance``? An exact one-sided binomial test of its last ``accuracy_window`` labels
        (``scipy.stats.binomtest``, ``alternative="less"``), drifted when ``p < accuracy_alpha``.

        Returns:
            None when no baseline is known or fewer than ``min_labelled`` labels are in.
        """
        from scipy.stats import binomtest

        config = self.config
        if not self.accuracy_baseline:
            return None
        labelled = self.store.labelled(self.reference.model_version, config.accuracy_window)
        if len(labelled) < config.min_labelled:
            return None
        correct = sum(item.correct for item in labelled)
        floor = max(self.accuracy_baseline - config.accuracy_tolerance, 1e-9)
        p_value = float(binomtest(correct, len(labelled), floor, alternative="less").pvalue)
        return SignalResult(
            name="accuracy", method="binomial test (exact, one-sided)", p_value=p_value,
            threshold=config.accuracy_alpha, drifted=p_value < config.accuracy_alpha,
            statistic=correct / len(labelled), reference={"accuracy": self.accuracy_baseline, "floor": floor},
            current={"accuracy": correct / len(labelled), "labelled": float(len(labelled))},
        )

    def _add_accuracy(self, result: DriftResult) -> None:
        signal = self.accuracy_signal()
        if signal is None:
            return
        result.signals.append(signal)
        result.drift_detected = result.drift_detected or signal.drifted
        result.drift_score = drift_score(result.signals)
        result.drifted_share = sum(s.drifted for s in result.signals) / len(result.signals)
        self.metrics.accuracy_drop_detected.set(1 if signal.drifted else 0)
        self.metrics.accuracy_checks.labels(outcome="drop" if signal.drifted else "no_drop").inc()

    def _warn_foreign_versions(self, result: DriftResult) -> None:
        expected = self.reference.model_version
        for version in result.model_versions:
            if version and version != expected and version not in self._warned_versions:
                self._warned_versions.add(version)
                log.warning("requests from model %s are checked against the reference of model %s; rebuild the "
                            "reference after promoting a new model", version, expected)

    # -- triggering --

    def _trigger(self, result: DriftResult) -> None:
        try:
            assert self.on_drift is not None
            self.on_drift(result)
        except Exception as exc:  # the hook is user code: record the failure, keep monitoring
            log.exception("on_drift failed for check %s; the next drifted window will trigger again",
                          result.check_id)
            result.triggered = False
            result.trigger_error = f"{type(exc).__name__}: {exc}"
            self.cooldown = Cooldown.from_dict(self.state.cooldown_before_trigger)  # as if it had not triggered
            self.cooldown.checks_since_trigger += 1 if self.cooldown.last_trigger_unix is not None else 0
            result.cooldown = self.cooldown.to_dict()
            result.save(self.checks_dir, with_html=False)
            self.metrics.trigger_failures.inc()
        else:
            self.state.triggers += 1
            self.metrics.triggers.inc()
        self.state.cooldown = self.cooldown.to_dict()
        self.state.pending_trigger = None
        self.state.cooldown_before_trigger = {}
        self._save_state()

    def _replay_trigger(self) -> None:
        check_id = self.state.pending_trigger
        path = self.checks_dir / f"{check_id}.json"
        if self.on_drift is not None and path.is_file():
            log.warning("on_drift did not finish for check %s before the monitor stopped: calling it again", check_id)
            self._trigger(DriftResult.from_dict(read_json(path)))
        else:
            self.state.pending_trigger = None

    # -- housekeeping --

    def _prune_reports(self) -> None:
        if self.config.keep_reports <= 0:
            return
        reports = sorted(self.checks_dir.glob("*.html"))
        for old in reports[:-self.config.keep_reports]:
            old.unlink(missing_ok=True)

    def _save_state(self) -> None:
        self.state.save(self.state_path)

    # -- the loop --

    def live(self) -> bool:
        """The loop polled recently (``/healthz/live``)."""
        if self.last_poll is None:
            return True  # still starting
        return self.clock() - self.last_poll < max(120.0, 10 * self._poll_seconds)

    def ready(self) -> bool:
        """The reference is loaded and the log has been read at least once (``/healthz/ready``)."""
        return self.last_poll is not None

    _poll_seconds = 10.0

    def run_forever(self, poll_seconds: float = 10.0, stop: threading.Event | None = None) -> None:
        """Poll every ``poll_seconds`` until ``stop`` is set. A missing log is waited for (warned about every
        minute); other errors of a poll are logged and the loop goes on.
        """
        self._poll_seconds = poll_seconds
        stop = stop or threading.Event()
        last_warning = 0.0
        while not stop.is_set():
            try:
                self.poll()
            except ObjectNotFoundError as exc:
                self.last_poll = self.clock()
                if self.clock() - last_warning >= 60:
                    log.warning("%s; waiting for it", exc)
                    last_warning = self.clock()
            except Exception:
                log.exception("drift monitor poll failed; retrying in %.0f s", poll_seconds)
            stop.wait(poll_seconds)
        self._save_state()


# --- one-shot check ---------------------------------------------------------------------------------------------

#: File names of a one-shot check's outputs.
RESULT_STEM = "drift_result"


def run_drift_check(request_logs: str | Path | Sequence[str | Path], reference: str | Path | Reference,
                    output_dir: str | Path, config: DriftConfig | None = None, rows: int = 0,
                    write_html: bool = True) -> DriftResult:
    """Check the most recent requests of a log once, without state or cooldown (``textclf drift-check``, the
    ``drift_check_op`` component).

    Args:
        request_logs: Log file(s) or a directory of ``*.jsonl`` logs (rotated copies are read too).
        reference: A :class:`Reference` or its location (path, ``file://``, ``s3://``, ``gs://``).
        output_dir: Where ``drift_result.json`` and ``drift_result.html`` are written (created).
        config: Drift settings.
        rows: Check the last ``rows`` requests (0: ``config.window_size``).
        write_html: Write the HTML report.

    Returns:
        The result (``triggered`` is always False: acting on it is the caller's decision).

    Raises:
        ObjectNotFoundError: No request log or reference at the given locations.
        DataValidationError: Fewer valid rows than ``min_window_size``, or an empty/malformed reference.
    """
    from textclf.monitor.reference import load_reference

    config = config or DriftConfig()
    if not isinstance(reference, Reference):
        reference = load_reference(reference)
    paths = [request_logs] if isinstance(request_logs, (str, Path)) else list(request_logs)
    records, malformed = read_request_log(paths)
    window = records[-(rows or config.window_size):]
    if len(window) < config.min_window_size:
        raise DataValidationError(
            f"request log {', '.join(map(str, paths))} has {len(records)} valid row(s) ({malformed} malformed line(s) "
            f"skipped), fewer than min_window_size={config.min_window_size}: nothing checked"
        )
    result = DriftDetector(reference, config).check(rows_to_window(window))
    result.malformed_lines = malformed
    result.save(output_dir, with_html=write_html, stem=RESULT_STEM)
    log.info(result.summary())
    return result
