"""Hostile input against a running model server: every operation of the server's own OpenAPI document (KServe's
FastAPI app serves ``/openapi.json``) through schemathesis, in its positive and negative generation modes, and
hypothesis-generated JSON bodies and near-valid V1/V2 payloads for the predict and infer routes.

One function, :func:`fuzz_server`, used by tests/test_fuzz.py (a bounded run) and by ``make bench-reliability``
(>= 1,000 requests per endpoint). It sends traffic only to the base URL it is given (tests: 127.0.0.1).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st

from textclf.serving.contract import INPUT_IDS
from textclf.serving.inputs import V2_TEXT_INPUT

#: Arbitrary JSON documents (also NaN, which json.dumps writes as the non-standard ``NaN``).
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
#: Texts: any unicode (lone surrogates included) and byte strings read as latin-1.
TEXTS = st.text(max_size=300) | st.binary(max_size=64).map(lambda raw: raw.decode("latin-1"))
#: V1 bodies: an ``instances`` list of texts, ``{"text": ...}`` records and arbitrary JSON.
V1_BODIES = st.fixed_dictionaries({"instances": st.lists(
    TEXTS | st.fixed_dictionaries({"text": TEXTS | JSON}) | JSON, max_size=6)})
#: V2 bodies: ``inputs`` tensors with real and wrong names, shapes, datatypes and data.
V2_BODIES = st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
    "name": st.sampled_from([V2_TEXT_INPUT, INPUT_IDS, "x", ""]) | st.text(max_size=8),
    "shape": st.lists(st.integers(-2, 6), max_size=3),
    "datatype": st.sampled_from(["BYTES", "INT64", "FP32", "BOOL", "nonsense"]),
    "data": st.lists(TEXTS | st.integers() | JSON, max_size=6),
}), max_size=3)})


#: 5xx answers KServe gives by design, not failures: (status, body). KServe's V2 routes take an optional
#: ``model_version`` and answer 501 to any value (its handlers' TODO); the server serves one unversioned model.
KSERVE_DESIGNED_5XX = frozenset({(501, '{"error":"Model versioning not supported yet."}')})


@dataclass
class EndpointTally:
    """What one endpoint answered.

    Attributes:
        requests: Requests sent.
        statuses: HTTP status -> count.
        server_errors: The first few requests answered with a status >= 500 (method, path, status, body head) that
            is not one of :data:`KSERVE_DESIGNED_5XX`.
        designed_5xx: Answers that are one of :data:`KSERVE_DESIGNED_5XX`.
        transport_errors: Requests that got no HTTP answer at all (connection reset, timeout).
        modes_without_cases: schemathesis generation modes that have no case for this operation.
    """

    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    designed_5xx: int = 0
    transport_errors: int = 0
    modes_without_cases: list[str] = field(default_factory=list)

    def record(self, method: str, path: str, status: int | None, body: str = "") -> None:
        self.requests += 1
        if status is None:
            self.transport_errors += 1
            return
        if (status, body) in KSERVE_DESIGNED_5XX:
            self.designed_5xx += 1
            return
        self.statuses[status] += 1
        if status >= 500 and len(self.server_errors) < 5:
            self.server_errors.append({"method": method, "path": path, "status": status, "body": body[:300]})

    @property
    def responses_5xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "responses_5xx": self.responses_5xx, "designed_5xx": self.designed_5xx,
                "transport_errors": self.transport_errors, "modes_without_cases": self.modes_without_cases,
                "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
                "server_errors": self.server_errors}


def _settings(examples: int):
    # Generation only: no shrinking (a 5xx is recorded, never raised) and no example database on disk.
    return settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                    verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck))


def fuzz_openapi(base_url: str, model_name: str, examples: int,
                 timeout_s: float = 30.0) -> dict[str, EndpointTally]:
    """Every operation of ``base_url/openapi.json``, ``examples`` positive and ``examples`` negative cases each.

    About half the cases of an operation with a ``{model_name}`` in its path name the served model (so they reach
    its validation and the model), the rest a generated name. Hypothesis stops early for an operation whose inputs
    allow fewer distinct cases (a GET without parameters); the tally then shows how many were sent.

    Args:
        base_url: ``http://host:port`` of the server.
        model_name: The served model's name.
        examples: Cases per operation and generation mode.
        timeout_s: Per-request timeout.

    Returns:
        ``"METHOD /path"`` -> its tally.
    """
    import requests
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    tallies: dict[str, EndpointTally] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        tally = tallies.setdefault(f"{operation.method.upper()} {operation.path}", EndpointTally())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @_settings(examples)
            @given(case=operation.as_strategy(generation_mode=mode), served=st.booleans())
            def send(case, served: bool) -> None:
                if served and "model_name" in (case.path_parameters or {}):
                    case.path_parameters["model_name"] = model_name
                try:
                    response = case.call(base_url=base_url, timeout=timeout_s)
                except requests.RequestException:
                    tally.record(case.method, case.formatted_path, None)
                    return
                tally.record(case.method, case.formatted_path, response.status_code, response.text)

            try:
                send()
            except Unsatisfiable:  # nothing to make invalid (a GET without parameters): no negative case exists
                tally.modes_without_cases.append(mode.value)
    return tallies


def fuzz_bodies(url: str, bodies: st.SearchStrategy, examples: int, timeout_s: float = 30.0) -> EndpointTally:
    """POST ``examples`` hypothesis-generated JSON bodies to ``url``.

    Args:
        url: The route.
        bodies: Strategy of JSON-serialisable bodies.
        examples: Bodies sent.
        timeout_s: Per-request timeout.

    Returns:
        The route's tally.
    """
    import httpx

    tally = EndpointTally()
    with httpx.Client(timeout=timeout_s) as client:

        @_settings(examples)
        @given(body=bodies)
        def send(body) -> None:
            try:
                # json.dumps writes NaN/Infinity as the non-standard literals: hostile input on purpose.
                response = client.post(url, content=json.dumps(body).encode("utf-8", "surrogatepass"),
                                       headers={"content-type": "application/json"})
            except httpx.TransportError:
                tally.record("POST", url, None)
                return
            tally.record("POST", url, response.status_code, response.text)

        send()
    return tally


def fuzz_server(base_url: str, model_name: str, examples: int) -> dict[str, dict[str, Any]]:
    """Fuzz a running model server: its OpenAPI operations, then V1 predict and V2 infer with generated bodies.

    Args:
        base_url: ``http://host:port`` of the server.
        model_name: The served model's name (the predict and infer routes).
        examples: Cases per operation and mode (OpenAPI), bodies per route (hypothesis).

    Returns:
        Endpoint -> summary (``requests``, ``responses_5xx``, ``designed_5xx``, ``transport_errors``, ``statuses``,
        ``server_errors``); hypothesis-driven routes are keyed ``"POST <path> (hypothesis)"``.
    """
    results = {name: tally.summary() for name, tally in fuzz_openapi(base_url, model_name, examples).items()}
    for path, bodies in ((f"/v1/models/{model_name}:predict", JSON | V1_BODIES),
                         (f"/v2/models/{model_name}/infer", JSON | V2_BODIES)):
        results[f"POST {path} (hypothesis)"] = fuzz_bodies(f"{base_url}{path}", bodies, examples).summary()
    return results
