"""Stand-ins of the rollout's services on 127.0.0.1: the Kubernetes API for namespaced InferenceServices, and a JSON
HTTP server for the monitor's ``/v1/ab`` and Prometheus' ``/api/v1/query``.

The Kubernetes stand-in (stdlib ``http.server``, a free port, one per importing module) answers what the
``kubernetes`` client's ``CustomObjectsApi`` sends for ``serving.kserve.io/v1beta1`` ``inferenceservices``:

* ``GET`` / ``PATCH`` (``application/merge-patch+json``, RFC 7386; ``application/json-patch+json`` and server-side
  apply answer 415, which this stand-in does not implement) / ``PUT`` of one named object;
* ``metadata.resourceVersion`` increments on every write, and a write naming a stale one answers 409 Conflict with
  the API server's Status object and message;
* 404 (Status ``NotFound``) for an unknown name; injected failures: ``conflicts`` (the next N writes lose to a
  concurrent writer, which bumps the resourceVersion first, as a real race would), ``fail`` (a status for the
  next requests of a method) and ``fail_writes`` (a status for the Nth write);
* a few lines of KServe's controller: a changed predictor model creates revision ``<name>-predictor-0000N``, and
  ``status.components.predictor`` (latest created / ready / rolled-out revisions, traffic) follows
  ``canaryTrafficPercent`` the way KServe routes it.

Every request is recorded (method, path, query, content type, parsed JSON body) so tests assert the exact bodies.
"""

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kfp import dsl
from kfp.dsl import Artifact, Output
from storage_servers import HOST
from textclf.images import COMPONENT_IMAGE

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
PREFIX = f"/apis/{GROUP}/{VERSION}/namespaces/"
MERGE_PATCH = "application/merge-patch+json"


@dataclass
class KubeRequest:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class FakeKubeState:
    """Objects by (namespace, name), the recorded requests and the injected failures."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[KubeRequest] = field(default_factory=list)
    #: The next N writes lose a race: another writer changes the object first, then this write gets 409.
    conflicts: int = 0
    #: method -> [status, count]: the next ``count`` requests of ``method`` answer ``status``.
    fail: dict[str, list[int]] = field(default_factory=dict)
    #: write number (1-based, PATCH and PUT) -> status it answers instead of being applied.
    fail_writes: dict[int, int] = field(default_factory=dict)
    #: False: new revisions never become ready (the readiness-timeout path).
    revisions_get_ready: bool = True
    version_counter: int = 100

    def put(self, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object (as ``kubectl apply`` would have), with a first revision rolled out at 100%."""
        obj = copy.deepcopy(obj)
        name = obj["metadata"]["name"]
        obj["metadata"].update(namespace=namespace, generation=1, resourceVersion=self._next_version(),
                               uid=f"uid-{name}")
        predictor = f"{name}-predictor-00001"
        obj["status"] = {"components": {"predictor": {
            "latestCreatedRevision": predictor, "latestReadyRevision": predictor,
            "latestRolledoutRevision": predictor,
            "traffic": [{"revisionName": predictor, "percent": 100, "latestRevision": True}],
        }}}
        self.objects[(namespace, name)] = obj
        return obj

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(namespace, name)])

    def writes(self) -> list[KubeRequest]:
        return [r for r in self.requests if r.method in ("PATCH", "PUT")]

    def _next_version(self) -> str:
        self.version_counter += 1
        return str(self.version_counter)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def status_object(code: int, reason: str, message: str, name: str = "") -> dict[str, Any]:
    """The API server's ``Status`` body of a failed request."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": {"name": name, "group": GROUP, "kind": PLURAL}, "code": code}


def _conflict(name: str) -> tuple[int, dict[str, Any]]:
    return 409, status_object(409, "Conflict", f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "{name}": the '
                                               "object has been modified; please apply your changes to the latest "
                                               "version and try again", name)


def _reconcile(state: FakeKubeState, before: dict[str, Any], after: dict[str, Any]) -> None:
    """KServe's revisions and traffic for the new spec (Serverless mode)."""
    name = after["metadata"]["name"]
    status = after.setdefault("status", {}).setdefault("components", {}).setdefault("predictor", {})
    old_model = (before.get("spec") or {}).get("predictor", {}).get("model")
    predictor = after["spec"]["predictor"]
    if predictor.get("model") != old_model:
        number = int(status["latestCreatedRevision"].rsplit("-", 1)[1]) + 1
        status["latestCreatedRevision"] = f"{name}-predictor-{number:05d}"
        if state.revisions_get_ready:
            status["latestReadyRevision"] = status["latestCreatedRevision"]
    latest, rolled = status.get("latestReadyRevision"), status.get("latestRolledoutRevision")
    canary = predictor.get("canaryTrafficPercent")
    if canary is None or canary == 100:
        if latest and latest != rolled:
            status["previousRolledoutRevision"] = rolled
            status["latestRolledoutRevision"] = latest
        status["traffic"] = [{"revisionName": status["latestRolledoutRevision"], "percent": 100,
                              "latestRevision": True}]
    elif latest and latest != rolled:
        status["previousRolledoutRevision"] = rolled
        status["traffic"] = [{"revisionName": latest, "percent": canary, "tag": "latest", "latestRevision": True},
                             {"revisionName": rolled, "percent": 100 - canary, "tag": "prev",
                              "latestRevision": False}]


def answer(state: FakeKubeState, request: KubeRequest) -> tuple[int, dict[str, Any]]:
    """The API server's answer (and its effect on ``state``)."""
    if not request.path.startswith(PREFIX):
        return 404, status_object(404, "NotFound", f"the server could not find the requested resource {request.path}")
    namespace, plural, *rest = request.path[len(PREFIX):].split("/")
    if plural != PLURAL or len(rest) != 1:
        return 404, status_object(404, "NotFound", f"no route {request.method} {request.path}")
    (name,) = rest
    failing = state.fail.get(request.method)
    if failing and failing[1] > 0:
        failing[1] -= 1
        return failing[0], status_object(failing[0], "InternalError", "injected failure", name)
    if request.method in ("PATCH", "PUT"):
        number = len(state.writes())
        if number in state.fail_writes:
            code = state.fail_writes[number]
            return code, status_object(code, "InternalError", f"injected failure of write {number}", name)
    if (namespace, name) not in state.objects:
        return 404, status_object(404, "NotFound", f'{PLURAL}.{GROUP} "{name}" not found', name)
    current = state.objects[(namespace, name)]
    if request.method == "GET":
        return 200, copy.deepcopy(current)
    if request.method not in ("PATCH", "PUT"):
        return 405, status_object(405, "MethodNotAllowed", f"{request.method} is not supported here", name)
    if request.method == "PATCH" and request.content_type != MERGE_PATCH:
        return 415, status_object(415, "UnsupportedMediaType",
                                  f"the body of the request was in an unknown format - accepted media types "
                                  f"include: {MERGE_PATCH} (this stand-in)", name)
    if state.conflicts > 0:  # someone else wrote first
        state.conflicts -= 1
        current["metadata"]["resourceVersion"] = state._next_version()
        current["metadata"].setdefault("annotations", {})["example.com/touched-by"] = "another-writer"
        return _conflict(name)
    wanted = (request.body.get("metadata") or {}).get("resourceVersion")
    if request.method == "PUT" and not wanted:
        return 422, status_object(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified "
                                                  "for an update", name)
    if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
        return _conflict(name)
    if request.method == "PATCH":
        updated = merge_patch(current, request.body)
    else:
        updated = {**copy.deepcopy(request.body), "status": copy.deepcopy(current.get("status"))}
    for key in ("name", "namespace", "uid", "generation"):
        updated["metadata"][key] = current["metadata"][key]
    if updated.get("spec") != current.get("spec"):
        updated["metadata"]["generation"] += 1
    updated["metadata"]["resourceVersion"] = state._next_version()
    _reconcile(state, current, updated)
    state.objects[(namespace, name)] = updated
    return 200, copy.deepcopy(updated)


class _JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_PATCH(self) -> None:
        self.handle_any("PATCH")

    def do_PUT(self) -> None:
        self.handle_any("PUT")

    def handle_any(self, method: str) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        request = KubeRequest(method, url.path, {k: v[0] for k, v in parse_qs(url.query).items()}, content_type,
                              json.loads(raw) if raw else None)
        server: Any = self.server
        with server.lock:
            server.state.requests.append(request)
            status, payload = server.respond(server.state, request)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(respond: Callable[[Any, KubeRequest], tuple[int, Any]], state: Any) -> ThreadingHTTPServer:
    """A JSON server on 127.0.0.1 (free port) answering with ``respond(state, request)``; stop with ``.shutdown()``."""
    server = ThreadingHTTPServer((HOST, 0), _JsonHandler)
    server.respond, server.state, server.lock = respond, state, threading.Lock()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://{HOST}:{server.server_port}"


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
