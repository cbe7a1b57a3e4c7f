"""Prometheus metrics of the drift monitor, and the small HTTP server that exposes them with health endpoints.

Each :class:`MonitorMetrics` has its own ``CollectorRegistry`` (not the process-wide default), so several monitors -
or tests - in one process do not collide. Served paths: ``/metrics`` (Prometheus text format), ``/healthz/live``
and ``/healthz/ready`` (200 or 503, used by the Deployment's probes).
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

log = logging.getLogger(__name__)


class MonitorMetrics:
    """The monitor's gauges and counters.

    Args:
        registry: Registry to create them in (default: a new one).
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.drift_score = Gauge("textclf_drift_score", "Drift score of the last check: max over signals of "
                                 "log(p)/log(threshold), clipped to [0, 10]; >= 1 means drift", registry=r)
        self.drifted_share = Gauge("textclf_drift_share_drifted_features",
                                   "Share of drift signals (features) drifted in the last check", registry=r)
        self.drift_detected = Gauge("textclf_drift_detected", "1 if the last check found drift, else 0", registry=r)
        self.cooling_down = Gauge("textclf_drift_cooling_down",
                                  "1 while a new drift would not trigger (cooldown after a trigger)", registry=r)
        self.last_check = Gauge("textclf_drift_last_check_timestamp_seconds",
                                "Unix time of the last completed check", registry=r)
        self.last_poll = Gauge("textclf_drift_last_poll_timestamp_seconds",
                               "Unix time the request log was last read", registry=r)
        self.window_rows = Gauge("textclf_drift_window_rows", "Rows in the last checked window", registry=r)
        self.pending_rows = Gauge("textclf_drift_pending_rows", "Rows read but not yet checked", registry=r)
        self.check_seconds = Gauge("textclf_drift_check_duration_seconds",
                                   "Seconds the statistics of the last check took (not its HTML report)", registry=r)
        self.signal_p_value = Gauge("textclf_drift_signal_p_value", "p-value of each signal in the last check",
                                    ["signal"], registry=r)
        self.signal_drifted = Gauge("textclf_drift_signal_drifted", "1 if the signal drifted in the last check",
                                    ["signal"], registry=r)
        self.checks = Counter("textclf_drift_checks", "Checks run, by outcome (drift, no_drift, error)",
                              ["outcome"], registry=r)
        self.triggers = Counter("textclf_drift_triggers", "Drifts acted on (on_drift called)", registry=r)
        self.trigger_failures = Counter("textclf_drift_trigger_failures", "on_drift calls that raised", registry=r)
        self.rows_read = Counter("textclf_drift_log_rows", "Valid request-log rows read", registry=r)
        self.malformed_lines = Counter("textclf_drift_malformed_log_lines",
                                       "Request-log lines skipped as malformed", registry=r)
        # prediction events (KServe's payload logger), ground truth and live accuracy
        self.events = Counter("textclf_events", "KServe logger CloudEvents received, by type (request, response) and "
                              "outcome (accepted, duplicate, malformed)", ["type", "outcome"], registry=r)
        self.predictions = Counter("textclf_monitor_predictions", "Predictions recorded in the monitor's store "
                                   "(from the request log or from CloudEvents), by model version",
                                   ["model_version"], registry=r)
        self.feedback = Counter("textclf_feedback", "Ground-truth labels received, by outcome (accepted, unknown_id, "
                                "bad_label, duplicate, malformed)", ["outcome"], registry=r)
        self.live_accuracy = Gauge("textclf_live_accuracy", "Accuracy of the last labelled predictions (the accuracy "
                                   "window), by model version", ["model_version"], registry=r)
        self.live_labelled = Gauge("textclf_live_labelled", "Labelled predictions in the accuracy window, by model "
                                   "version", ["model_version"], registry=r)
        self.accuracy_baseline = Gauge("textclf_accuracy_baseline", "Accuracy the production model is held to "
                                       "(its test accuracy, from the reference)", registry=r)
        self.accuracy_drop_detected = Gauge("textclf_accuracy_drop_detected", "1 if the last accuracy check found "
                                            "live accuracy significantly below the baseline, else 0", registry=r)
        self.accuracy_checks = Counter("textclf_accuracy_checks", "Accuracy checks run, by outcome (drop, no_drop)",
                                       ["outcome"], registry=r)

    def observe_check(self, result: Any) -> None:
        """Set the gauges from a :class:`textclf.monitor.result.DriftResult`."""
        self.drift_score.set(result.drift_score)
        self.drifted_share.set(result.drifted_share)
        self.drift_detected.set(1 if result.drift_detected else 0)
        self.cooling_down.set(1 if result.cooling_down else 0)
        self.window_rows.set(result.window_rows)
        self.check_seconds.set(result.seconds)
        for signal in result.signals:
            self.signal_p_value.labels(signal=signal.name).set(signal.p_value)
            self.signal_drifted.labels(signal=signal.name).set(1 if signal.drifted else 0)
        self.checks.labels(outcome="drift" if result.drift_detected else "no_drift").inc()
        self.last_check.set_to_current_time()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of a sample (``name`` as exposed, e.g. ``textclf_drift_checks_total``)."""
        return self.registry.get_sample_value(name, labels or {})


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        log.debug("metrics http: " + format, *args)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


#: A route's handler: the WSGI environ in, ``(HTTP status, JSON-ready body)`` out.
RouteHandler = Callable[[dict[str, Any]], tuple[int, Any]]


class MetricsServer:
    """``/metrics``, the health endpoints and the monitor's API routes on a background thread.

    Args:
        metrics: What ``/metrics`` serves.
        port: TCP port (0 picks a free one; see :attr:`port`).
        host: Interface to bind.
        live: Returns whether the monitor loop is alive (``/healthz/live``).
        ready: Returns whether the monitor is ready (``/healthz/ready``).
        routes: ``{(method, path): handler}`` answered as JSON (:mod:`textclf.monitor.endpoints`); a known path
            with another method gets 405.
    """

    def __init__(self, metrics: MonitorMetrics, port: int, host: str = "0.0.0.0",
                 live: Callable[[], bool] = lambda: True, ready: Callable[[], bool] = lambda: True,
                 routes: Mapping[tuple[str, str], RouteHandler] | None = None):
        prometheus = make_wsgi_app(metrics.registry)
        routes = dict(routes or {})
        paths = {path for _, path in routes}

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path in ("/healthz/live", "/healthz/ready"):
                ok = (live if path.endswith("live") else ready)()
                start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"ok\n" if ok else b"unhealthy\n"]
            if path in paths:
                handler = routes.get((environ.get("REQUEST_METHOD", "GET"), path))
                if handler is None:
                    status, body = 405, {"error": f"{environ.get('REQUEST_METHOD')} not allowed on {path}"}
                else:
                    try:
                        status, body = handler(environ)
                    except Exception as exc:  # a handler bug must answer, not kill the thread
                        log.exception("%s %s failed", environ.get("REQUEST_METHOD"), path)
                        status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
                payload = json.dumps(body, default=str).encode()
                start_response(f"{status} {HTTPStatus(status).phrase}",
                               [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
                return [payload]
            return prometheus(environ, start_response)

        self._server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="drift-metrics", daemon=True)
        self._thread.start()
        log.info("drift monitor metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
