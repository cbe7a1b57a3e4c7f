"""Start the retraining pipeline: one interface (:class:`RetrainTrigger`) with three backends (local ``kfp.local``,
Kubeflow ``kfp.Client``, Vertex AI ``PipelineJob``), a data-growth check and a KFP recurring run (cron)."""

from textclf.trigger.growth import DataGrowth, GrowthConfig, check_data_growth
from textclf.trigger.schedule import RecurringRunConfig, create_recurring_run
from textclf.trigger.triggers import (
    TRIGGERS,
    KubeflowTrigger,
    LocalTrigger,
    RetrainRequest,
    RetrainTrigger,
    TriggerBackend,
    TriggerResult,
    VertexTrigger,
    make_trigger,
    retrain_on_drift,
    retraining_package,
    trigger_from_env,
)

__all__ = [
    "TRIGGERS", "DataGrowth", "GrowthConfig", "KubeflowTrigger", "LocalTrigger", "RecurringRunConfig",
    "RetrainRequest", "RetrainTrigger", "TriggerBackend", "TriggerResult", "VertexTrigger", "check_data_growth",
    "create_recurring_run", "make_trigger", "retrain_on_drift", "retraining_package", "trigger_from_env",
]
