"""KFP component: the canary rollout of a promoted candidate (thin wrapper around
:func:`textclf.rollout.rollout.run_rollout`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output
from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def rollout_op(
    registry_uri: str,
    version: str,
    decision: Input[Artifact],
    rollout: Output[Artifact],
    monitor_url: str,
    inference_service_name: str = "textclf",
    namespace: str = "",
    kube_host: str = "",
    registry_serving_uri: str = "",
    precision: str = "int8",
    canary_traffic_percent: int = 10,
    ab_window_seconds: int = 3600,
    ab_poll_seconds: int = 60,
    ready_timeout_seconds: int = 600,
    prometheus_url: str = "",
    ab_min_labelled: int = 100,
    ab_alpha: float = 0.05,
    max_accuracy_drop: float = 0.02,
    max_p99_latency_ratio: float = 1.5,
    max_error_rate: float = 0.01,
) -> str:
    """Run the candidate as a KServe canary, wait the A/B window, then promote it to 100% or roll it back; the
    registry's production pointer follows what is served (promoted: the candidate; rolled back: unchanged, the
    candidate archived with the reason).

    Args:
        registry_uri: Registry root (``s3://`` or ``gs://``; a local one only with ``registry_serving_uri``).
        version: The registered candidate the promotion gate passed.
        decision: The gate component's output (``decision.json``); its reason is recorded with the rollout.
        rollout: Output directory: ``rollout.json``, the outcome, the A/B report and every check of the last decision, and
            each patch sent to the InferenceService.
        monitor_url: Base URL of the drift monitor's service (``GET /v1/ab?control=..&treatment=..``).
        inference_service_name: The InferenceService to roll out on (it must exist).
        namespace: Its namespace; empty: the pipeline pod's own (ServiceAccount namespace).
        kube_host: Kubernetes API server URL used without credentials (e.g. ``kubectl proxy``); empty: the
            in-cluster config of the pod's ServiceAccount (``manifests/rollout``).
        registry_serving_uri: The registry root as KServe downloads from it (e.g. ``pvc://claim/registry``);
            empty: ``registry_uri``.
        precision: ``int8`` or ``fp32``.
        canary_traffic_percent: Share (1-99) of the requests the candidate gets during the A/B window.
        ab_window_seconds: Length of the A/B window; at its end the rollout decides with the evidence there is
            (too little labelled traffic: rollback, the safe default).
        ab_poll_seconds: Seconds between two looks at the A/B evidence.
        ready_timeout_seconds: How long the canary revision may take to become ready before it is rolled back.
        prometheus_url: Prometheus base URL for the canary revision's error share; empty: the error-rate guard is
            recorded as not checked.
        ab_min_labelled: Labelled requests needed per variant before accuracy is judged.
        ab_alpha: Significance level of the two-proportion test on accuracy.
        max_accuracy_drop: Non-inferiority margin (absolute accuracy, 0.02 = 2 points).
        max_p99_latency_ratio: Largest allowed p99 latency of the canary over production's.
        max_error_rate: Largest allowed error share of the canary revision.

    Returns:
        ``promote`` or ``rollback``. The component fails, with the registry unchanged, when the InferenceService
        does not exist, a canary already runs on it, or the Kubernetes API fails.
    """
    import json
    from pathlib import Path

    from textclf.gate import read_decision
    from textclf.registry import ModelRegistry
    from textclf.rollout import (
        InferenceServices,
        KubeSettings,
        MonitorClient,
        PrometheusClient,
        RolloutConfig,
        RolloutGuards,
        RolloutTarget,
        run_rollout,
    )
    from textclf.rollout.rollout import served_model_version

    gate_reason = read_decision(decision.path)["reason"]
    services = InferenceServices(KubeSettings(namespace=namespace, host=kube_host))
    registry = ModelRegistry(registry_uri)
    result = run_rollout(
        registry, version, services,
        monitor=MonitorClient(monitor_url) if monitor_url else None,
        prometheus=PrometheusClient(prometheus_url, namespace=services.namespace) if prometheus_url else None,
        target=RolloutTarget(name=inference_service_name, precision=precision,
                             registry_serving_uri=registry_serving_uri),
        config=RolloutConfig(rollout_mode="kserve", canary_traffic_percent=canary_traffic_percent,
                             ab_window_seconds=ab_window_seconds, ab_poll_seconds=ab_poll_seconds,
                             ready_timeout_seconds=ready_timeout_seconds),
        guards=RolloutGuards(min_labelled=ab_min_labelled, alpha=ab_alpha, max_accuracy_drop=max_accuracy_drop,
                             max_p99_latency_ratio=max_p99_latency_ratio, max_error_rate=max_error_rate),
        reason=f"promotion gate: {gate_reason}",
        # The monitor knows each model by the version its predictor logs (the bundle's), not the registry's id.
        ab_version=lambda registered: served_model_version(registry, registered, precision),
    )
    record = {**result.to_dict(), "gate_reason": gate_reason}
    Path(rollout.path).mkdir(parents=True, exist_ok=True)
    (Path(rollout.path) / "rollout.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n",
                                                      encoding="utf-8")
    rollout.metadata.update({"action": result.action, "candidate": version, "control": result.control or "",
                             "storageUri": result.storage_uri, "namespace": result.namespace})
    print(f"rollout of {version}: {result.action}: {result.reason}")
    return result.action
