"""Canary rollout on KServe: the candidate as the canary, the monitor's A/B evidence, promote or roll back, and the
registry's production pointer following what is served.

* :mod:`textclf.rollout.decision` - :func:`decide` (pure): promote, rollback or wait, from the A/B report and guards.
* :mod:`textclf.rollout.evidence` - clients of the monitor's ``/v1/ab`` endpoint and of Prometheus' query API.
* :mod:`textclf.rollout.kube` - GET and merge-PATCH of an InferenceService (resourceVersion, 409 retried).
* :mod:`textclf.rollout.rollout` - the sequence and its order of operations.
* :mod:`textclf.rollout.component` - the KFP component ``rollout_op`` (the only module importing kfp).

Who decides: the monitor service computes the A/B *evidence* (it holds the prediction store and the labels fed
back to it); the *decision and the actions* belong to the pipeline's rollout component, which holds the
Kubernetes credentials and the registry write, waits the A/B window as a pipeline step, and records the decision
as an artifact with lineage to the candidate and the gate's decision.
"""

from textclf.rollout.config import ROLLOUT_MODES, RolloutConfig, RolloutError
from textclf.rollout.decision import (
    PROMOTE,
    ROLLBACK,
    WAIT,
    ErrorRates,
    GuardCheck,
    RolloutDecision,
    RolloutGuards,
    decide,
)
from textclf.rollout.evidence import HttpSettings, MonitorClient, PrometheusClient, error_share_query
from textclf.rollout.kube import InferenceServiceNotFound, InferenceServices, KubeApiError, KubeSettings
from textclf.rollout.rollout import Rollout, RolloutResult, RolloutTarget, run_rollout

__all__ = [
    "PROMOTE", "ROLLBACK", "ROLLOUT_MODES", "WAIT", "ErrorRates", "GuardCheck", "HttpSettings",
    "InferenceServiceNotFound", "InferenceServices", "KubeApiError", "KubeSettings", "MonitorClient",
    "PrometheusClient", "Rollout", "RolloutConfig", "RolloutDecision", "RolloutError", "RolloutGuards",
    "RolloutResult", "RolloutTarget", "decide", "error_share_query", "run_rollout",
]
