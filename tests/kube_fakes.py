"""Stand-ins of the rollout's services on 127.0.0.1, as pytest fixtures: the Kubernetes API for namespaced
InferenceServices, and a JSON HTTP server for the monitor's ``/v1/ab`` and Prometheus' ``/api/v1/query``.

The Kubernetes stand-in itself (GET / merge-PATCH / PUT, resourceVersion and 409, 404, injected failures, and a few
lines of KServe's controller: revisions and ``status.components.predictor`` following ``canaryTrafficPercent``) is
product code, :mod:`textclf.localcluster`, which ``make loop`` runs too; this module serves it once per importing
module (``kube_server``), with a fresh state per test (``kube``). ``FakeKubeState`` is
:class:`textclf.localcluster.LocalKubeState`: every request is recorded (method, path, query, content type, parsed
JSON body) so tests assert the exact bodies.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kfp import dsl
from kfp.dsl import Artifact, Output
from textclf.images import COMPONENT_IMAGE
from textclf.localcluster import (  # noqa: F401  (re-exported for the tests)
    GROUP,
    MERGE_PATCH,
    PLURAL,
    PREFIX,
    VERSION,
    KubeRequest,
    answer,
    merge_patch,
    serve,
    status_object,
    url_of,
)
from textclf.localcluster import LocalKubeState as FakeKubeState


@pytest.fixture(scope="module")
def kube_server():
    server = serve(answer, FakeKubeState())
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def kube(kube_server) -> tuple[str, FakeKubeState]:
    """(API server URL, fresh state)."""
    kube_server.state = FakeKubeState()
    return url_of(kube_server), kube_server.state


@dataclass
class EvidenceState:
    """What the monitor / Prometheus stand-in answers: ``routes[path](query) -> (status, body)``."""

    routes: dict[str, Callable[[dict[str, str]], tuple[int, Any]]] = field(default_factory=dict)
    requests: list[KubeRequest] = field(default_factory=list)


def answer_evidence(state: EvidenceState, request: KubeRequest) -> tuple[int, Any]:
    route = state.routes.get(request.path)
    if route is None:
        return 404, {"error": f"no route {request.path}"}
    return route(request.query)


@pytest.fixture(scope="module")
def evidence_server():
    server = serve(answer_evidence, EvidenceState())
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def evidence(evidence_server) -> tuple[str, EvidenceState]:
    """(base URL, fresh state) of the monitor / Prometheus stand-in."""
    evidence_server.state = EvidenceState()
    return url_of(evidence_server), evidence_server.state


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def gate_stub_op(decision: Output[Artifact], reason: str = "stub gate"):
    """The promotion gate's ``decision`` artifact (``decision.json``: promote), for running ``rollout_op`` alone.
    (Here and not in a test module: kfp reads the annotations, which ``from __future__ import annotations`` would
    turn into strings.)"""
    import json
    import os

    os.makedirs(decision.path, exist_ok=True)
    with open(os.path.join(decision.path, "decision.json"), "w", encoding="utf-8") as handle:
        json.dump({"decision": "promote", "reason": reason}, handle)


@dsl.pipeline(name="rollout-test")
def rollout_test_pipeline(registry_uri: str, version: str, monitor_url: str, kube_host: str, namespace: str,
                          registry_serving_uri: str) -> str:
    """The gate stand-in, then ``rollout_op`` deciding at once (``ab_window_seconds=0``)."""
    from textclf.rollout.component import rollout_op

    gate = gate_stub_op()
    return rollout_op(registry_uri=registry_uri, version=version, decision=gate.outputs["decision"],
                      monitor_url=monitor_url, namespace=namespace, kube_host=kube_host,
                      registry_serving_uri=registry_serving_uri, ab_window_seconds=0).outputs["Output"]
