"""Canary rollout of a registered candidate on KServe, with the registry's production pointer following what is served.

Sequence (:func:`run_rollout`)
    1. Checks, before anything is written: the candidate is a registered ``candidate``, its export bundle has a URI
       KServe can download (the registry's own, or below ``registry_serving_uri``), the InferenceService exists
       (a clear error naming it and the namespace otherwise) and no canary is already running on it.
    2. **Canary**: one merge patch sets ``spec.predictor.canaryTrafficPercent: N`` together with the candidate's
       ``storageUri`` / ``args`` (rendered by :func:`textclf.deploy.kserve.render_inference_service` from the
       committed overlay, so there is one manifest) and the model-version annotation. KServe starts a new revision
       for it and keeps ``100 - N`` % on the last rolled-out revision (the production model).
    3. Wait until the canary revision is ready (``ready_timeout_seconds``; a revision that never gets ready is
       rolled back).
    4. **A/B window**: every ``ab_poll_seconds`` the monitor's A/B report (production's version as control, the
       candidate as treatment, each named as its predictor logs it: :func:`served_model_version`) and, with
       ``prometheus_url``, the canary revision's error share go through :func:`textclf.rollout.decision.decide`;
       a promote or rollback ends the window early, at ``ab_window_seconds`` it decides with what there is (too
       little evidence -> rollback).
    5. **Promote**: ``canaryTrafficPercent`` removed (``null`` in the merge patch: the canary's revision takes 100%),
       then the registry promotes the candidate. **Rollback**: the previous ``storageUri`` / ``args`` / ``image`` /
       annotation restored and ``canaryTrafficPercent`` removed in one patch, then the registry archives the
       candidate with the reason; its production pointer never moved.

    A registry without a production version has nothing to compare with: the candidate is patched in at 100% (no
    canary, no window) and promoted.

Order of operations (the invariant: the registry's production pointer names what serves 100% of the traffic)
    * The cluster changes first, the registry second, and the registry is written only after the API server
      accepted the change. So any Kubernetes API error (404, 409 after every retry, 5xx, unreachable) raises
      before a registry write: **the registry is unchanged**.
    * During the canary the pointer stays on the production version (it still serves ``100 - N`` %).
    * An error after the canary was applied (an API error while waiting or on the promote patch, or anything else
      during the window) triggers one best-effort restore of the previous spec before the error is raised, so no
      half-finished canary is left; if that restore fails too, the error says the InferenceService may still run
      the canary. A step killed outright (pipeline timeout, node loss) leaves the canary running: the next rollout
      refuses to start on it ("already runs a canary") until it is promoted or undone by hand.
    * If the registry refuses the promotion after the cluster promoted (e.g. someone archived the candidate
      meanwhile), the previous spec is restored on the cluster (compensation), so served and registered agree
      again, and the error is raised.
    * If archiving the rolled-back candidate fails, the pointer is still right (it never moved): recorded as a
      warning in the result, not raised.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from textclf.deploy.kserve import DEFAULT_NAME, DEFAULT_PRECISION, MODEL_VERSION_ANNOTATION, render_inference_service
from textclf.errors import ConfigError, RegistryError, StorageError
from textclf.rollout.config import RolloutConfig, RolloutError
from textclf.rollout.decision import PROMOTE, ROLLBACK, WAIT, RolloutDecision, RolloutGuards, decide
from textclf.rollout.evidence import MonitorClient, PrometheusClient
from textclf.rollout.kube import InferenceServices, KubeApiError

#: Fields of ``spec.predictor.model`` a rollout sets (and restores on rollback).
MODEL_FIELDS = ("storageUri", "args", "image")
#: Seconds between two readiness reads of the canary revision.
READY_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class RolloutTarget:
    """The InferenceService and how the candidate is rendered into it.

    Attributes:
        name: InferenceService name.
        precision: ``int8`` or ``fp32`` (the ONNX file the predictor runs).
        image: Serving image overriding the runtime's; empty keeps the runtime's.
        registry_serving_uri: The registry root as KServe downloads from it when that differs from the registry URI
            the pipeline step uses (e.g. ``pvc://claim/registry`` for a registry on a volume mounted into the
            step); empty: the registry's own URI (``s3://`` / ``gs://``).
    """

    name: str = DEFAULT_NAME
    precision: str = DEFAULT_PRECISION
    image: str = ""
    registry_serving_uri: str = ""


@dataclass
class RolloutResult:
    """What a rollout did: the outcome, the evidence and every write, JSON-ready (:meth:`to_dict`)."""

    action: str
    reason: str
    candidate: str
    control: str | None
    namespace: str
    name: str
    storage_uri: str
    previous_storage_uri: str | None
    canary_traffic_percent: int | None
    decision: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    polls: int = 0
    conflicts_retried: int = 0
    revisions: dict[str, str | None] = field(default_factory=dict)
    ab_versions: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    registry: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def serving_storage_uri(registry: Any, version: str, registry_serving_uri: str = "") -> str:
    """The URI KServe downloads ``version``'s export bundle (``onnx_model``) from, with a trailing slash."""
    uri = str(registry.artifact_uri(version, "onnx_model"))
    if registry_serving_uri:
        root = str(registry.store.uri("")).rstrip("/")
        if not uri.startswith(root + "/"):
            raise ConfigError(f"{uri} is not below the registry root {root}")
        uri = f"{registry_serving_uri.rstrip('/')}/{uri[len(root) + 1:]}"
    return uri.rstrip("/") + "/"


def served_model_version(registry: Any, version: str, precision: str = DEFAULT_PRECISION) -> str:
    """The model version the predictor serving ``version``'s export bundle answers with and logs, which is what the
    monitor stores predictions under and so what its A/B report is asked for: the bundle's
    ``ExportBundle.model_version`` (``<training git commit[:12]>-<sha256[:12] of the ONNX file it runs>``), computed
    from the bundle's ``export_metadata.json`` in the registry, not the registry's version id.

    Raises:
        RegistryError: The bundle's metadata cannot be read.
    """
    import json

    from textclf.serving.bundle import ExportBundle
    from textclf.serving.config import Precision
    from textclf.serving.contract import METADATA_FILE

    path = f"versions/{version}/onnx_model/{METADATA_FILE}"
    try:
        metadata = json.loads(registry.store.read_bytes(path))
    except (StorageError, ValueError, OSError) as exc:
        raise RegistryError(f"{version}: cannot read {path} in {registry.store.root}: {exc}") from exc
    bundle = ExportBundle(root=registry.store.root, labels=(), max_length=0,
                          git_commit=str((metadata.get("source_model") or {}).get("git_commit") or "unknown"),
                          file_sha256=dict(metadata.get("files") or {}))
    return bundle.model_version(Precision(precision))


def _predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    return (isvc.get("spec") or {}).get("predictor") or {}


def _predictor_status(isvc: dict[str, Any]) -> dict[str, Any]:
    return ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}


def served_version(isvc: dict[str, Any]) -> str | None:
    """The registry version the InferenceService's annotation says it serves."""
    return ((isvc.get("metadata") or {}).get("annotations") or {}).get(MODEL_VERSION_ANNOTATION)


def canary_patch(rendered: dict[str, Any], canary_traffic_percent: int | None) -> dict[str, Any]:
    """The merge patch putting the rendered candidate on the InferenceService (as the canary at N %, or at 100%
    with ``None``)."""
    model = rendered["spec"]["predictor"]["model"]
    return {
        "metadata": {"annotations": {MODEL_VERSION_ANNOTATION: rendered["metadata"]["annotations"][
            MODEL_VERSION_ANNOTATION]}},
        "spec": {"predictor": {"canaryTrafficPercent": canary_traffic_percent,
                               "model": {key: copy.deepcopy(model[key]) for key in MODEL_FIELDS if key in model}}},
    }


def promote_patch() -> dict[str, Any]:
    """The merge patch promoting the canary: ``canaryTrafficPercent`` removed, the latest revision takes 100%."""
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def restore_patch(previous: dict[str, Any], applied: dict[str, Any]) -> dict[str, Any]:
    """The merge patch undoing ``applied`` on an object that was ``previous`` before it: the model fields and the
    annotation it set get their old values back (``null`` where they were absent), ``canaryTrafficPercent`` goes."""
    old_model = _predictor(previous).get("model") or {}
    set_model = applied["spec"]["predictor"]["model"]
    return {
        "metadata": {"annotations": {MODEL_VERSION_ANNOTATION: served_version(previous)}},
        "spec": {"predictor": {"canaryTrafficPercent": None,
                               "model": {key: copy.deepcopy(old_model.get(key)) for key in set_model}}},
    }


class Rollout:
    """One canary rollout (see the module docstring); build it, then :meth:`run`.

    ``ab_version`` maps a registry version to the model version its predictor logs (the name the monitor's A/B
    report knows it by); ``rollout_op`` passes :func:`served_model_version`. None asks the monitor for the registry
    versions themselves (a monitor whose predictions are recorded under them).
    """

    def __init__(self, registry: Any, candidate: str, services: InferenceServices, *,
                 monitor: MonitorClient | None, prometheus: PrometheusClient | None = None,
                 target: RolloutTarget | None = None, config: RolloutConfig | None = None,
                 guards: RolloutGuards | None = None, reason: str = "",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 ab_version: Callable[[str], str] | None = None):
        self.ab_version = ab_version
        self.registry, self.candidate, self.services = registry, candidate, services
        self.monitor, self.prometheus = monitor, prometheus
        self.target = target or RolloutTarget()
        self.config = config or RolloutConfig(rollout_mode="kserve")
        self.guards = guards or RolloutGuards()
        self.reason = reason
        self.clock, self.sleep = clock, sleep

    # -- steps -------------------------------------------------------------------------------------------------

    def _patch(self, result: RolloutResult, step: str, body: dict[str, Any]) -> dict[str, Any]:
        patched = self.services.patch(self.target.name, lambda _current: copy.deepcopy(body))
        result.conflicts_retried = self.services.conflicts
        result.steps.append({"step": step, "patch": body,
                             "resource_version": patched.get("metadata", {}).get("resourceVersion")})
        return patched

    def _restore(self, result: RolloutResult, previous: dict[str, Any], applied: dict[str, Any], step: str) -> None:
        self._patch(result, step, restore_patch(previous, applied))

    def _wait_ready(self, before: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """(ready, last object): the canary revision is the latest created one and ready."""
        old = _predictor_status(before).get("latestCreatedRevision")
        deadline = self.clock() + self.config.ready_timeout_seconds
        while True:
            current = self.services.get(self.target.name)
            status = _predictor_status(current)
            created = status.get("latestCreatedRevision")
            if not status:
                return True, current  # no per-component status (not a Serverless InferenceService): nothing to wait on
            if created and created != old and status.get("latestReadyRevision") == created:
                return True, current
            if self.clock() >= deadline:
                return False, current
            self.sleep(min(READY_POLL_SECONDS, max(0.0, deadline - self.clock())))

    def _look(self, versions: dict[str, str], revisions: dict[str, str | None], at_deadline: bool,
              elapsed: float, since: str | None = None) -> tuple[RolloutDecision, dict[str, Any] | None, list[str]]:
        """One look at the evidence: (decision, report, warnings)."""
        warnings: list[str] = []
        error_rates = None
        if self.prometheus is not None and revisions.get("canary"):
            window = int(max(elapsed, self.config.ab_poll_seconds, 60))
            try:
                error_rates = self.prometheus.error_rates(revisions["canary"], revisions.get("control"), window)
            except RolloutError as exc:
                warnings.append(f"error rate not checked this time: {exc}")
        assert self.monitor is not None
        try:
            report = self.monitor.ab_report(versions["control"], versions["treatment"], alpha=self.guards.alpha,
                                            min_labelled=self.guards.min_labelled, since=since)
        except RolloutError as exc:
            action = ROLLBACK if at_deadline else WAIT
            why = "A/B window over without evidence, rolled back (the safe default)" if at_deadline else "waiting"
            return RolloutDecision(action, f"A/B evidence unavailable ({exc}); {why}", (), at_deadline), None, warnings
        return decide(report, self.guards, error_rates=error_rates, at_deadline=at_deadline), report, warnings

    def _ab_window(self, result: RolloutResult) -> RolloutDecision:
        start = self.clock()
        since = datetime.now(timezone.utc).isoformat()  # the window's evidence: predictions from now on
        deadline = start + self.config.ab_window_seconds
        while True:
            now = self.clock()
            decision, report, warnings = self._look(result.ab_versions, result.revisions, now >= deadline,
                                                    now - start, since)
            result.polls += 1
            result.warnings += [w for w in warnings if w not in result.warnings]
            result.decision, result.report = decision.to_dict(), report
            print(f"A/B look {result.polls}: {decision.action}: {decision.reason}")
            if decision.action != WAIT:
                return decision
            self.sleep(min(float(self.config.ab_poll_seconds), max(0.0, deadline - self.clock())))

    def _registry_promote(self, result: RolloutResult, previous: dict[str, Any], applied: dict[str, Any],
                          reason: str) -> None:
        try:
            result.registry = self.registry.promote(self.candidate, reason=reason)
        except (RegistryError, StorageError) as exc:
            try:
                self._restore(result, previous, applied, "restore-after-registry-failure")
            except KubeApiError as undo:
                raise RolloutError(
                    f"{self.candidate} serves 100% of {self._where()} but the registry refused to promote it ({exc}) "
                    f"and restoring the previous spec failed too ({undo}): served and registered versions differ; "
                    f"restore storageUri {_predictor(previous).get('model', {}).get('storageUri')} by hand"
                ) from exc
            raise RolloutError(f"the registry refused to promote {self.candidate} ({exc}); {self._where()} was "
                               "restored to the previous model, so the registry (unchanged) still names what is "
                               "served") from exc

    def _where(self) -> str:
        return f"InferenceService {self.target.name!r} in namespace {self.services.namespace!r}"

    # -- the whole thing ---------------------------------------------------------------------------------------

    def run(self) -> RolloutResult:
        """Roll the candidate out (see the module docstring).

        Returns:
            The result; ``action`` is ``promote`` or ``rollback``.

        Raises:
            ConfigError: The candidate's URI cannot be served by KServe, or a setting is invalid (nothing changed).
            RegistryError: The candidate is not a registered candidate (nothing changed).
            InferenceServiceNotFound: No such InferenceService (nothing changed).
            RolloutError: A canary is already running (nothing changed), or an API / registry failure after the
                canary (see "Order of operations"; the registry is unchanged).
        """
        index = self.registry.index()
        entry = index["versions"].get(self.candidate)
        if entry is None or entry["status"] != "candidate":
            state = "not registered" if entry is None else f"{entry['status']}, not a candidate"
            raise RegistryError(f"{self.candidate} cannot be rolled out: it is {state} in {self.registry.store.root}")
        production = index["production"]
        storage_uri = serving_storage_uri(self.registry, self.candidate, self.target.registry_serving_uri)
        direct = production is None
        rendered = render_inference_service(
            storage_uri, name=self.target.name, namespace=self.services.namespace, precision=self.target.precision,
            model_version=self.candidate, image=self.target.image or None,
            canary_traffic_percent=None if direct else self.config.canary_traffic_percent,
        )
        if self.monitor is None and not direct:
            raise ConfigError("a canary rollout needs the monitor's URL (monitor_url) for the A/B evidence")

        live = self.services.get(self.target.name)
        running = _predictor(live).get("canaryTrafficPercent")
        if running is not None:
            raise RolloutError(f"{self._where()} already runs a canary at {running}% "
                               f"(serving {served_version(live)!r}): finish or undo it first; nothing was changed")
        served = served_version(live)
        result = RolloutResult(
            action=WAIT, reason="", candidate=self.candidate, control=production, namespace=self.services.namespace,
            name=self.target.name, storage_uri=storage_uri,
            previous_storage_uri=(_predictor(live).get("model") or {}).get("storageUri"),
            canary_traffic_percent=None if direct else self.config.canary_traffic_percent,
        )
        if production and served != production:
            result.warnings.append(f"{self._where()} is annotated as serving {served!r} but the registry's "
                                   f"production version is {production}; the A/B control is {production}")
        status = _predictor_status(live)
        result.revisions = {"control": status.get("latestRolledoutRevision") or status.get("latestReadyRevision"),
                            "canary": None}

        if not direct:  # before any write: a bundle without readable metadata changes nothing
            name = self.ab_version or (lambda version: version)
            result.ab_versions = {"control": name(production), "treatment": name(self.candidate)}
            if result.ab_versions["control"] == result.ab_versions["treatment"]:
                result.warnings.append(f"{production} and {self.candidate} are both served as model version "
                                       f"{result.ab_versions['control']!r}: the A/B report cannot tell them apart")

        applied = canary_patch(rendered, result.canary_traffic_percent)
        if direct:
            self._patch(result, "full-rollout", applied)
            why = "no production version to compare with: rolled out to 100% without a canary"
            self._registry_promote(result, live, applied, f"rollout: {why}" + (f"; {self.reason}" if self.reason
                                                                                 else ""))
            result.action, result.reason = PROMOTE, why
            result.decision = RolloutDecision(PROMOTE, why).to_dict()
            return result

        self._patch(result, "canary", applied)  # an error here: nothing changed anywhere
        try:
            ready, current = self._wait_ready(live)
            result.revisions["canary"] = _predictor_status(current).get("latestCreatedRevision")
            if not ready:
                decision = RolloutDecision(ROLLBACK, f"canary revision {result.revisions['canary']!r} not ready "
                                                     f"within {self.config.ready_timeout_seconds} s")
                result.decision = decision.to_dict()
            else:
                decision = self._ab_window(result)
            result.action, result.reason = decision.action, decision.reason
            if decision.action == PROMOTE:
                self._patch(result, "promote", promote_patch())
        except Exception as exc:  # an API error, or anything else once the canary runs: undo it, then raise
            what = "Kubernetes API error" if isinstance(exc, KubeApiError) else f"{type(exc).__name__}"
            try:
                self._restore(result, live, applied, "restore-after-error")
            except KubeApiError as undo:
                raise RolloutError(
                    f"{what} during the canary of {self.candidate} ({exc}); restoring the previous spec failed too "
                    f"({undo}): {self._where()} may still run the canary at {self.config.canary_traffic_percent}%; "
                    "the registry was not changed"
                ) from exc
            raise RolloutError(f"{what} during the canary of {self.candidate} ({exc}); the previous spec was "
                               "restored and the registry was not changed") from exc

        if decision.action == PROMOTE:
            self._registry_promote(result, live, applied, f"canary rollout: {decision.reason}")
        else:
            self._restore(result, live, applied, "rollback")  # an error here: raised, registry unchanged
            try:
                result.registry = self.registry.archive(self.candidate, reason=f"canary rollback: {decision.reason}")
            except (RegistryError, StorageError) as exc:
                result.warnings.append(f"rolled back, but archiving {self.candidate} failed: {exc}")
            result.registry["production"] = production
        return result


def run_rollout(registry: Any, candidate: str, services: InferenceServices, **options: Any) -> RolloutResult:
    """Build a :class:`Rollout` with ``options`` (its keyword arguments) and run it."""
    return Rollout(registry, candidate, services, **options).run()
