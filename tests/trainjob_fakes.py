"""A stand-in of the Kubernetes API on 127.0.0.1 for Kubeflow Trainer TrainJobs (stdlib HTTP server): create,
read and delete of trainer.kubeflow.org/v1alpha1 trainjobs, whose status follows a script (one status per read,
the last repeated), plus the core API's pod list and pod log for the trainer node."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlparse

TRAINJOBS = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
NOW = "2026-01-01T00:00:00Z"


def condition(kind: str, reason: str, message: str, status: str = "True") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": NOW}


def jobs_status(active: int = 0, ready: int = 0, succeeded: int = 0, failed: int = 0) -> list[dict[str, Any]]:
    return [{"name": "node", "active": active, "ready": ready, "succeeded": succeeded, "failed": failed,
             "suspended": 0}]


class TrainJobCluster:
    """The stand-in: ``script`` is the list of statuses a TrainJob shows on its successive reads."""

    def __init__(self, script: list[dict[str, Any]] | None = None, logs: str = "") -> None:
        self.script = script or [{}]
        self.logs = logs
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads: dict[tuple[str, str], int] = {}
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                  "reason": reason, "message": message})

            def do_POST(self) -> None:
                url = urlparse(self.path)
                cluster.requests.append(("POST", url.path))
                match = TRAINJOBS.match(url.path)
                if not match or match.group(2):
                    return self._status(404, "NotFound", url.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = (match.group(1), body["metadata"]["name"])
                with cluster.lock:
                    if key in cluster.objects:
                        return self._status(409, "AlreadyExists", f"trainjobs {key[1]!r} already exists")
                    cluster.created.append(json.loads(json.dumps(body)))
                    cluster.objects[key] = body
                    cluster.reads[key] = 0
                self._send(201, body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                cluster.requests.append(("GET", url.path))
                query = parse_qs(url.query)
                if match := TRAINJOBS.match(url.path):
                    key = (match.group(1), match.group(2))
                    with cluster.lock:
                        if key not in cluster.objects:
                            return self._status(404, "NotFound", f"trainjobs {key[1]!r} not found")
                        index = min(cluster.reads[key], len(cluster.script) - 1)
                        cluster.reads[key] += 1
                        obj = dict(cluster.objects[key])
                        if cluster.script[index]:  # no status at all before the controller's first update
                            obj["status"] = cluster.script[index]
                    return self._send(200, obj)
                if match := PODS.match(url.path):
                    selector = dict(item.split("=", 1) for item in query.get("labelSelector", [""])[0].split(",")
                                    if item)
                    with cluster.lock:
                        names = [name for (ns, name) in cluster.objects if ns == match.group(1)]
                    pods = [{"metadata": {"name": f"{name}-node-0-0-abcde", "namespace": match.group(1),
                                          "labels": {"jobset.sigs.k8s.io/jobset-name": name,
                                                     "jobset.sigs.k8s.io/replicatedjob-name": "node",
                                                     "batch.kubernetes.io/job-completion-index": "0"}}}
                            for name in names]
                    pods = [pod for pod in pods if all(pod["metadata"]["labels"].get(k) == v
                                                       for k, v in selector.items())]
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})
                if match := POD_LOG.match(url.path):
                    tail = int(query.get("tailLines", ["0"])[0]) or None
                    lines = cluster.logs.splitlines()
                    text = "\n".join(lines[-tail:] if tail else lines)
                    return self._send(200, text, "text/plain")
                self._status(404, "NotFound", url.path)

            def do_DELETE(self) -> None:
                url = urlparse(self.path)
                cluster.requests.append(("DELETE", url.path))
                match = TRAINJOBS.match(url.path)
                key = (match.group(1), match.group(2)) if match else None
                with cluster.lock:
                    if key not in cluster.objects:
                        return self._status(404, "NotFound", url.path)
                    del cluster.objects[key]
                    cluster.deleted.append(key)
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        return Handler
