"""Clients for the rollout's evidence: the drift monitor's A/B endpoint and Prometheus' query API.

Monitor
    ``GET {monitor_url}/v1/ab?control=<model_version>&treatment=<model_version>[&alpha=&min_labelled=]`` answers
    the report of :func:`textclf.monitor.abtest.analyse_ab_log` over the monitor's prediction store and the labels
    fed back to it (JSON); 404 while it has no predictions of either version (the rollout keeps waiting). The monitor owns the evidence (it holds the requests and the late labels); the rollout component owns
    the decision and the actions.

Prometheus
    ``GET {prometheus_url}/api/v1/query?query=<PromQL>`` (the HTTP API, instant query, ``resultType: vector``).
    The predictor counts requests by outcome in ``textclf_requests_total{model_name, outcome}``; the revision label
    is added by the scrape (a ``labelmap`` of ``__meta_kubernetes_pod_label_(.+)`` turns the Knative pod label
    ``serving.knative.dev/revision`` into ``serving_knative_dev_revision``, :data:`REVISION_LABEL`).

Both retry connection errors and 5xx answers (tenacity, exponential backoff); any other failure raises
:class:`~textclf.rollout.config.RolloutError` with the URL and the server's message.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tenacity
from textclf.rollout.config import RolloutError
from textclf.rollout.decision import ErrorRates

#: The monitor's A/B endpoint.
AB_PATH = "/v1/ab"
#: Prometheus' instant-query endpoint.
QUERY_PATH = "/api/v1/query"
#: The predictor's request counter (``Counter("textclf_requests", ...)`` is exposed with ``_total``).
REQUESTS_METRIC = "textclf_requests_total"
ERROR_OUTCOME = "error"
#: Pod label carrying the Knative revision, after the usual ``labelmap`` relabelling.
REVISION_LABEL = "serving_knative_dev_revision"


class _Transient(Exception):
    """A connection error or a 5xx answer: worth another try."""


@dataclass(frozen=True)
class HttpSettings:
    """Timeout and retries of one JSON GET."""

    timeout_s: float = 10.0
    attempts: int = 4
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0


def get_json(url: str, settings: HttpSettings | None = None) -> tuple[int, Any]:
    """GET ``url`` and parse the JSON body, retrying transient failures.

    Returns:
        (HTTP status, parsed body) for a 2xx or 4xx answer (a 4xx body that is not JSON is returned as text).

    Raises:
        RolloutError: Still unreachable or answering 5xx after every attempt, or a 2xx answer that is not JSON.
    """
    settings = settings or HttpSettings()

    def once() -> tuple[int, bytes]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            if exc.code >= 500:
                raise _Transient(f"HTTP {exc.code}: {body[:300]!r}") from exc
            return exc.code, body
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise _Transient(str(getattr(exc, "reason", exc))) from exc

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise RolloutError(f"{url!r} is not an http(s) URL")
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, settings.attempts)),
        wait=tenacity.wait_exponential_jitter(initial=settings.initial_backoff_s, max=settings.max_backoff_s),
        retry=tenacity.retry_if_exception_type(_Transient), reraise=True,
    )
    try:
        status, body = retrying(once)
    except _Transient as exc:
        raise RolloutError(f"GET {url} failed after {settings.attempts} attempts: {exc}") from exc
    try:
        return status, json.loads(body)
    except ValueError as exc:
        if status >= 400:
            return status, body.decode("utf-8", "replace")
        raise RolloutError(f"GET {url} answered {status} with a body that is not JSON: {body[:200]!r}") from exc


class MonitorClient:
    """The drift monitor's A/B endpoint."""

    def __init__(self, base_url: str, settings: HttpSettings | None = None):
        self.base_url = base_url.rstrip("/")
        self.settings = settings or HttpSettings()

    def ab_report(self, control: str, treatment: str, *, alpha: float | None = None,
                  min_labelled: int | None = None, since: str | None = None) -> dict[str, Any]:
        """The A/B report of ``treatment`` (the canary's model version) against ``control`` (production's).

        Args:
            control: Production's model version.
            treatment: The candidate's.
            alpha: Significance level for the report's own verdict (the monitor's default when None).
            min_labelled: Labelled requests per variant for the report's verdict (likewise).
            since: Only predictions made at or after this ISO-8601 time (the A/B window's start), so that the
                control's traffic from before the canary does not enter the comparison.

        Raises:
            RolloutError: The monitor is unreachable, refuses the request, or answers something that is not an A/B
                report (no ``comparison`` / ``variants``).
        """
        params: dict[str, Any] = {"control": control, "treatment": treatment}
        params.update({name: value for name, value in (("alpha", alpha), ("min_labelled", min_labelled),
                                                       ("since", since)) if value is not None})
        query = urllib.parse.urlencode(params)
        url = f"{self.base_url}{AB_PATH}?{query}"
        status, body = get_json(url, self.settings)
        if status != 200:
            raise RolloutError(f"monitor GET {url} answered {status}: {body}")
        if not isinstance(body, Mapping) or not {"comparison", "variants"} <= set(body):
            raise RolloutError(f"monitor GET {url} did not answer an A/B report (keys: "
                               f"{sorted(body) if isinstance(body, Mapping) else type(body).__name__})")
        return dict(body)


def _selector(**labels: str) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items() if value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def error_share_query(revision: str, window_seconds: int, *, namespace: str = "",
                      revision_label: str = REVISION_LABEL) -> str:
    """PromQL: the share of ``revision``'s requests with outcome ``error`` over the last ``window_seconds``."""
    window = f"[{max(int(window_seconds), 60)}s]"
    scope = {"namespace": namespace, revision_label: revision}
    errors = _selector(**scope, outcome=ERROR_OUTCOME)
    return (f"sum(increase({REQUESTS_METRIC}{{{errors}}}{window})) / "
            f"sum(increase({REQUESTS_METRIC}{{{_selector(**scope)}}}{window}))")


class PrometheusClient:
    """Instant queries against Prometheus' HTTP API."""

    def __init__(self, base_url: str, settings: HttpSettings | None = None, *, namespace: str = "",
                 revision_label: str = REVISION_LABEL):
        self.base_url = base_url.rstrip("/")
        self.settings = settings or HttpSettings()
        self.namespace = namespace
        self.revision_label = revision_label

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """The samples of an instant query (``resultType`` vector or scalar) as (labels, value).

        Raises:
            RolloutError: Unreachable, ``status: error`` (the message is Prometheus' ``error``), or another result
                type.
        """
        url = f"{self.base_url}{QUERY_PATH}?{urllib.parse.urlencode({'query': promql})}"
        status, body = get_json(url, self.settings)
        if not isinstance(body, Mapping) or body.get("status") != "success":
            message = body.get("error") if isinstance(body, Mapping) else body
            kind = body.get("errorType") if isinstance(body, Mapping) else None
            raise RolloutError(f"Prometheus query {promql!r} failed ({status} {kind or ''}): {message}")
        data = body.get("data") or {}
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return [({}, float(result[1]))]
        if kind != "vector":
            raise RolloutError(f"Prometheus query {promql!r} returned a {kind!r}, expected a vector")
        return [(dict(sample.get("metric") or {}), float(sample["value"][1])) for sample in result]

    def error_share(self, revision: str, window_seconds: int) -> tuple[float | None, str]:
        """(share of ``revision``'s requests with outcome error, or None without samples; the query)."""
        promql = error_share_query(revision, window_seconds, namespace=self.namespace,
                                   revision_label=self.revision_label)
        samples = self.query(promql)
        values = [value for _, value in samples if not math.isnan(value)]  # NaN: no requests in the window (0/0)
        return (values[0] if values else None), promql

    def error_rates(self, treatment_revision: str, control_revision: str | None,
                    window_seconds: int) -> ErrorRates:
        """The canary's and (when known) the control revision's error shares."""
        treatment, first = self.error_share(treatment_revision, window_seconds)
        queries = [first]
        control = None
        if control_revision:
            control, second = self.error_share(control_revision, window_seconds)
            queries.append(second)
        return ErrorRates(treatment=treatment, control=control, queries=tuple(queries))
