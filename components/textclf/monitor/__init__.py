"""Drift monitoring: compare windows of the serving request log with a reference sample of the training data.

* :mod:`textclf.monitor.config` - :class:`DriftConfig`, every knob and default.
* :mod:`textclf.monitor.reference` - build, save and load the reference (training texts + the model's predictions).
* :mod:`textclf.monitor.stats` - the statistical tests (p-value and effect size together).
* :mod:`textclf.monitor.detector` - the detector (signals, explicit decision rule) and the cooldown.
* :mod:`textclf.monitor.result` - :class:`DriftResult` / :class:`SignalResult`, their JSON and the HTML report.
* :mod:`textclf.monitor.evidently_adapter` - Evidently, used only to render the HTML report.
* :mod:`textclf.monitor.tailer` - following the rotated request log, resumably.
* :mod:`textclf.monitor.service` - the long-running monitor (``textclf monitor``) and one-shot checks.
* :mod:`textclf.monitor.metrics` - Prometheus gauges and the metrics/health HTTP server.
* :mod:`textclf.monitor.abtest` - A/B (canary) analysis of the request log and stable variant assignment.
* :mod:`textclf.monitor.component` - KFP components ``drift_check_op`` and ``drift_reference_op``.

Evidently is imported only when a report is rendered, so importing this package stays cheap.
"""

from textclf.monitor.config import DESCRIPTORS, SIGNALS, DriftConfig
from textclf.monitor.detector import Cooldown, DriftDetector, describe_rule
from textclf.monitor.metrics import MetricsServer, MonitorMetrics
from textclf.monitor.reference import (
    Reference,
    build_reference,
    load_reference,
    predict_with_bundle,
    reference_from_splits,
    save_reference,
)
from textclf.monitor.result import DriftResult, SignalResult
from textclf.monitor.service import DriftMonitor, run_drift_check
from textclf.monitor.tailer import read_request_log

__all__ = [
    "DESCRIPTORS", "SIGNALS", "Cooldown", "DriftConfig", "DriftDetector", "DriftMonitor", "DriftResult",
    "MetricsServer", "MonitorMetrics", "Reference", "SignalResult", "build_reference", "describe_rule",
    "load_reference", "predict_with_bundle", "read_request_log", "reference_from_splits", "run_drift_check",
    "save_reference",
]
