"""The InferenceService through the Kubernetes API (``kubernetes`` client, ``CustomObjectsApi``).

Connection
    In a pipeline step: the in-cluster config (the pod's ServiceAccount token, ``manifests/rollout`` grants it
    get/list/watch/patch/update on InferenceServices of its namespace) and the pod's namespace
    (:data:`SERVICE_ACCOUNT_NAMESPACE`). Elsewhere: ``host`` (an API server URL without authentication, e.g.
    ``kubectl proxy`` or a test stand-in; also ``$TEXTCLF_KUBE_HOST``) or a kubeconfig file; the namespace from the
    argument, ``$POD_NAMESPACE`` or the ServiceAccount file, in that order.

Writes
    JSON merge patches (RFC 7386, ``application/merge-patch+json``, what ``patch_namespaced_custom_object`` sends):
    the body names only the fields the rollout owns (``canaryTrafficPercent``, the model's ``storageUri`` /
    ``args`` / ``image`` and the model-version annotation), a ``null`` removes a field (how
    ``canaryTrafficPercent`` goes away on promotion), and everything else on the object (replicas, resources,
    other annotations someone set with kubectl) is left alone. Server-side apply was not chosen: it needs the
    object's whole intended state from one field manager, and the InferenceService was created with
    ``kubectl apply`` (another manager), so taking over fields means forcing conflicts -- for no gain over a
    patch of four fields.

    Every patch carries ``metadata.resourceVersion`` from a fresh GET (optimistic concurrency): if anyone changed
    the object since, the API server answers 409 Conflict, and :meth:`InferenceServices.patch` reads it again and
    rebuilds the patch from the new state (up to ``max_conflict_retries`` times).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf.errors import ConfigError
from textclf.rollout.config import RolloutError

GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
NAMESPACE_ENV = "POD_NAMESPACE"
HOST_ENV = "TEXTCLF_KUBE_HOST"


class KubeApiError(RolloutError):
    """The Kubernetes API refused or failed a request (``status``: the HTTP status, 0 when unreachable)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class InferenceServiceNotFound(KubeApiError):
    """The named InferenceService does not exist in the namespace."""


@dataclass(frozen=True)
class KubeSettings:
    """Where the API server is and which namespace the InferenceService is in.

    Attributes:
        namespace: Empty: ``$POD_NAMESPACE``, else the pod's ServiceAccount namespace file.
        host: API server URL used without credentials (``kubectl proxy``, a stand-in); empty: ``$TEXTCLF_KUBE_HOST``,
            else ``kubeconfig``, else the in-cluster config.
        kubeconfig: A kubeconfig file (its current context).
        max_conflict_retries: Re-reads after a 409 Conflict before giving up.
        timeout_s: Per-request timeout.
    """

    namespace: str = ""
    host: str = ""
    kubeconfig: str = ""
    max_conflict_retries: int = 5
    timeout_s: float = 30.0


def resolve_namespace(namespace: str = "", namespace_file: str | os.PathLike[str] = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The namespace to use: the argument, ``$POD_NAMESPACE``, or the ServiceAccount's namespace file.

    Raises:
        ConfigError: None of them is set (not in a pod and no namespace given).
    """
    for candidate in (namespace, os.environ.get(NAMESPACE_ENV, "")):
        if candidate.strip():
            return candidate.strip()
    path = Path(namespace_file)
    if path.is_file() and path.read_text(encoding="utf-8").strip():
        return path.read_text(encoding="utf-8").strip()
    raise ConfigError(f"no Kubernetes namespace: pass one, set ${NAMESPACE_ENV}, or run in a pod ({path} is absent)")


def api_client(settings: KubeSettings) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``settings`` (see the module docstring for the order).

    Raises:
        ConfigError: Not in a cluster and neither ``host`` nor ``kubeconfig`` given, or an unusable kubeconfig.
    """
    from kubernetes import client, config

    host = settings.host or os.environ.get(HOST_ENV, "")
    if host:
        configuration = client.Configuration()
        configuration.host = host.rstrip("/")
        return client.ApiClient(configuration)
    try:
        if settings.kubeconfig:
            return config.new_client_from_config(config_file=settings.kubeconfig)
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException as exc:
        raise ConfigError(f"no Kubernetes API configuration ({exc}): run in a pod with a ServiceAccount, or give a "
                          f"kubeconfig or an API server URL (${HOST_ENV})") from exc


def _status_message(exc: Any) -> str:
    """The ``message`` of the API server's Status object in an ``ApiException`` (else its reason)."""
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


class InferenceServices:
    """GET and merge-PATCH of the InferenceServices of one namespace."""

    def __init__(self, settings: KubeSettings | None = None, *, api: Any = None, namespace: str | None = None):
        """Args:
            settings: Connection and namespace (see :class:`KubeSettings`).
            api: An existing ``CustomObjectsApi`` (overrides the connection settings).
            namespace: Overrides the settings' namespace resolution.
        """
        from kubernetes import client

        self.settings = settings or KubeSettings()
        self.namespace = namespace or resolve_namespace(self.settings.namespace)
        self.api = api or client.CustomObjectsApi(api_client(self.settings))
        #: 409 Conflicts met (and retried) so far.
        self.conflicts = 0

    def _describe(self, name: str) -> str:
        return f"InferenceService {name!r} in namespace {self.namespace!r}"

    def _call(self, what: str, name: str, call: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ApiException as exc:
            if exc.status == 404:
                raise InferenceServiceNotFound(
                    f"{self._describe(name)} does not exist ({_status_message(exc)}): create it first, e.g. "
                    f"kubectl -n {self.namespace} apply -k manifests/overlays/cpu", 404) from exc
            raise KubeApiError(f"{what} {self._describe(name)} failed: HTTP {exc.status}: {_status_message(exc)}",
                               int(exc.status or 0)) from exc
        except HTTPError as exc:
            raise KubeApiError(f"{what} {self._describe(name)} failed: the API server is unreachable ({exc})") from exc

    def get(self, name: str) -> dict[str, Any]:
        """The object as the API server has it.

        Raises:
            InferenceServiceNotFound: No such InferenceService.
            KubeApiError: Any other API failure.
        """
        return self._call("GET", name, lambda: self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=self.settings.timeout_s))

    def patch(self, name: str, build: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Merge-patch ``name`` with ``build(current object)``, pinned to the object's resourceVersion; on a 409
        Conflict read it again and rebuild.

        Args:
            name: The InferenceService.
            build: Current object -> merge-patch body (its ``metadata.resourceVersion`` is set here).

        Returns:
            The patched object.

        Raises:
            InferenceServiceNotFound: No such InferenceService.
            KubeApiError: Any other API failure, or still conflicting after ``max_conflict_retries`` re-reads.
        """
        from kubernetes.client.exceptions import ApiException

        for _attempt in range(self.settings.max_conflict_retries + 1):
            current = self.get(name)
            body = build(current)
            body.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return self._call("PATCH", name, lambda body=body: self._patch_raw(name, body))
            except KubeApiError as exc:
                if exc.status != 409 or not isinstance(exc.__cause__, ApiException):
                    raise
                self.conflicts += 1
        raise KubeApiError(f"PATCH {self._describe(name)}: still conflicting after "
                           f"{self.settings.max_conflict_retries} re-reads (someone keeps changing it)", 409)

    def _patch_raw(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, body,
                                                       _request_timeout=self.settings.timeout_s)
