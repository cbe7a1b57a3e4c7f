"""A local stand-in of the Kubernetes API and of KServe's controller, for one machine (``make loop``, the tests).

What it is
    An HTTP server on 127.0.0.1 (stdlib ``http.server``, a free port) answering what the ``kubernetes`` client's
    ``CustomObjectsApi`` sends for ``serving.kserve.io/v1beta1`` ``inferenceservices`` (:func:`answer`):

    * ``GET`` / ``PATCH`` (``application/merge-patch+json``, RFC 7386; ``application/json-patch+json`` and
      server-side apply answer 415, which this stand-in does not implement) / ``PUT`` of one named object;
    * ``metadata.resourceVersion`` increments on every write (status updates included), and a write naming a stale
      one answers 409 Conflict with the API server's Status object and message;
    * 404 (Status ``NotFound``) for an unknown name; injected failures for tests: ``conflicts`` (the next N writes
      lose to a concurrent writer, which bumps the resourceVersion first, as a real race would), ``fail`` (a status
      for the next requests of a method) and ``fail_writes`` (a status for the Nth write);
    * a few lines of KServe's controller (:func:`reconcile`, :func:`route_traffic`): a changed predictor model
      creates revision ``<name>-predictor-0000N``, and ``status.components.predictor`` (latest created / ready /
      rolled-out revisions, traffic) follows ``canaryTrafficPercent`` the way KServe routes it (Serverless mode).
      With ``revisions_get_ready=False`` a new revision stays not-ready until :meth:`LocalKubeState.mark_ready` is
      called, the hook through which whoever runs the revision's server (``make loop``: a real KServe server
      process per model) tells the controller its pods are ready, as Knative does when a readiness probe passes.

    Every request is recorded (method, path, query, content type, parsed JSON body), so tests assert exact bodies.

The boundary (what is *not* here)
    No real API server: no authentication or RBAC, no admission webhooks or schema validation, no watch, no other
    kinds; one process's memory is the cluster's state. No Knative router: :func:`revision_for` says which revision
    a request goes to, and the caller (the loop's load generator) sends it there itself; it splits traffic by user
    key (:func:`textclf.monitor.abtest.assign_variant`, so a user sticks to one variant), where Knative splits
    requests at random in the revision percentages. No storage initializer, no pods: the caller maps ``storageUri``
    to a local directory and starts the server process.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
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
class LocalKubeState:
    """Objects by (namespace, name), the recorded requests and the injected failures.

    ``lock`` guards every change: the HTTP handler holds it while answering, :meth:`mark_ready` and :meth:`get`
    take it, so a caller in another thread sees whole writes only.
    """

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[KubeRequest] = field(default_factory=list)
    #: The next N writes lose a race: another writer changes the object first, then this write gets 409.
    conflicts: int = 0
    #: method -> [status, count]: the next ``count`` requests of ``method`` answer ``status``.
    fail: dict[str, list[int]] = field(default_factory=dict)
    #: write number (1-based, PATCH and PUT) -> status it answers instead of being applied.
    fail_writes: dict[int, int] = field(default_factory=dict)
    #: True: a new revision is ready at once; False: only after :meth:`mark_ready` (never, if nobody calls it).
    revisions_get_ready: bool = True
    version_counter: int = 100
    lock: Any = field(default_factory=threading.RLock, repr=False, compare=False)

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
        with self.lock:
            self.objects[(namespace, name)] = obj
        return obj

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[(namespace, name)])

    def writes(self) -> list[KubeRequest]:
        return [r for r in self.requests if r.method in ("PATCH", "PUT")]

    def mark_ready(self, namespace: str, name: str, revision: str) -> bool:
        """The controller hook: ``revision``'s pods are ready. Sets ``latestReadyRevision`` and routes the traffic
        again (a canary revision now gets its percentage, a full rollout all of it), as a status update (new
        resourceVersion, same generation).

        Returns:
            False (nothing changed) when ``revision`` is not the latest created revision any more, or already ready.
        """
        with self.lock:
            obj = self.objects[(namespace, name)]
            status = predictor_status(obj)
            if status.get("latestCreatedRevision") != revision or status.get("latestReadyRevision") == revision:
                return False
            status["latestReadyRevision"] = revision
            route_traffic(status, obj["spec"]["predictor"])
            obj["metadata"]["resourceVersion"] = self._next_version()
            return True

    def _next_version(self) -> str:
        self.version_counter += 1
        return str(self.version_counter)


def predictor_status(isvc: Mapping[str, Any]) -> dict[str, Any]:
    """``status.components.predictor`` (an empty dict when absent; the object's own dict when present)."""
    status = isvc.get("status") or {}
    return (status.get("components") or {}).get("predictor") or {}


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


def route_traffic(status: dict[str, Any], predictor: Mapping[str, Any]) -> None:
    """KServe's traffic for ``predictor`` (its ``canaryTrafficPercent``) over the revisions in ``status``: without a
    canary the latest ready revision is rolled out at 100%; with one, a ready new revision gets the percentage
    (tag ``latest``) and the last rolled-out revision the rest (tag ``prev``); a new revision that is not ready
    yet gets nothing."""
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


def reconcile(state: LocalKubeState, before: dict[str, Any], after: dict[str, Any]) -> None:
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
    route_traffic(status, predictor)


def answer(state: LocalKubeState, request: KubeRequest) -> tuple[int, dict[str, Any]]:
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
    reconcile(state, current, updated)
    state.objects[(namespace, name)] = updated
    return 200, copy.deepcopy(updated)


class JsonHandler(BaseHTTPRequestHandler):
    """Parses a request into a :class:`KubeRequest`, records it and answers ``server.respond(state, request)`` as
    JSON, under the state's lock (or the server's)."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_PATCH(self) -> None:
        self.handle_any("PATCH")

    def do_PUT(self) -> None:
        self.handle_any("PUT")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def handle_any(self, method: str) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        request = KubeRequest(method, url.path, {k: v[0] for k, v in parse_qs(url.query).items()}, content_type,
                              body)
        server: Any = self.server
        state = server.state
        with getattr(state, "lock", None) or server.lock:
            state.requests.append(request)
            status, payload = server.respond(state, request)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(respond: Callable[[Any, KubeRequest], tuple[int, Any]], state: Any, host: str = HOST,
          port: int = 0) -> ThreadingHTTPServer:
    """A JSON server on ``host`` (a free port by default) answering with ``respond(state, request)`` on a daemon
    thread; stop it with ``.shutdown()`` and ``.server_close()``. ``state.requests`` must be a list."""
    server = ThreadingHTTPServer((host, port), JsonHandler)
    server.daemon_threads = True
    server.respond, server.state, server.lock = respond, state, threading.Lock()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True, name="localcluster").start()
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://{server.server_address[0]}:{server.server_port}"


def serve_kube_api(state: LocalKubeState | None = None, host: str = HOST) -> ThreadingHTTPServer:
    """The Kubernetes API stand-in over ``state`` (a fresh one by default); its URL is :func:`url_of`, the
    ``kube_host`` (``KubeSettings.host``) a rollout talks to."""
    return serve(answer, state if state is not None else LocalKubeState(), host)


# --- what a Knative router would decide ----------------------------------------------------------------------------


def revision_for(traffic: Sequence[Mapping[str, Any]], user_id: str, salt: str = "") -> str:
    """The revision ``user_id``'s requests go to, given ``status.components.predictor.traffic``.

    One target at 100%: that revision. A canary split (the ``latestRevision`` target at N %, the previous one at
    the rest): :func:`textclf.monitor.abtest.assign_variant` with N, so about N % of the users (each always the
    same user for a given salt) get the canary's revision. Knative itself splits requests, not users, at random;
    splitting by user keeps one user's requests on one model, which the A/B analysis counts per variant.

    Raises:
        ValueError: No traffic target has a positive percentage.
    """
    from textclf.monitor.abtest import TREATMENT, assign_variant

    targets = [t for t in traffic if float(t.get("percent") or 0) > 0]
    if not targets:
        raise ValueError(f"no revision receives traffic: {list(traffic)!r}")
    if len(targets) == 1:
        return str(targets[0]["revisionName"])
    canary = next((t for t in targets if t.get("latestRevision")), targets[0])
    stable = next(t for t in targets if t is not canary)
    variant = assign_variant(user_id, float(canary["percent"]), salt)
    return str((canary if variant == TREATMENT else stable)["revisionName"])
