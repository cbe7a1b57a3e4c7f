"""Typed settings of distributed training: how many processes, and the Kubeflow Trainer ``TrainJob`` that runs them
on a cluster. Every default lives here; the pipeline parameters and the CLI take theirs from these fields."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from textclf.errors import ConfigError
from textclf.images import COMPONENT_IMAGE, GPU_COMPONENT_IMAGE

#: trainer.kubeflow.org/v1alpha1 (Kubeflow Trainer 2.3).
TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
TRAINER_API_VERSION = f"{TRAINER_GROUP}/{TRAINER_VERSION}"
#: The TrainingRuntime of manifests/trainer/ (torch policy: the controller sets torchrun's PET_* variables).
DEFAULT_RUNTIME = "textclf-torch-distributed"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel processes of one training run (local ``torchrun``, or a ``TrainJob`` on a cluster).

    Attributes:
        workers: Training processes in all; 1 trains in the calling process (no torchrun, no process group).
        num_nodes: Machines (TrainJob pods) the workers are spread over; ``workers`` must be a multiple of it.
        master_port: Rendezvous port of a local ``torchrun`` (0: a free port chosen at launch).
    """

    workers: int = 1
    num_nodes: int = 1
    master_port: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ConfigError(f"workers must be an integer >= 1 (training processes in all); got {self.workers!r}")
        if self.num_nodes < 1:
            raise ConfigError(f"num_nodes must be >= 1; got {self.num_nodes!r}")
        if self.workers % self.num_nodes:
            raise ConfigError(f"workers ({self.workers}) must be a multiple of num_nodes ({self.num_nodes}): every "
                              "node runs the same number of processes")
        if not 0 <= self.master_port <= 65535:
            raise ConfigError(f"master_port must be 0..65535; got {self.master_port}")

    @property
    def procs_per_node(self) -> int:
        return self.workers // self.num_nodes


@dataclass(frozen=True)
class TrainJobConfig:
    """The Kubeflow Trainer ``TrainJob`` that runs the train stage on a cluster.

    Attributes:
        distributed: Processes and nodes (``numNodes`` x ``numProcPerNode``).
        namespace: Namespace of the TrainJob (the TrainingRuntime must be in it).
        runtime_name: ``spec.runtimeRef.name``: the TrainingRuntime of ``manifests/trainer/``.
        runtime_kind: ``TrainingRuntime`` (namespaced) or ``ClusterTrainingRuntime``.
        image: The trainer container's image; empty: the component image, or its CUDA build when ``gpus`` > 0
            (:attr:`trainer_image`).
        cpu: CPU request and limit per node.
        memory: Memory request and limit per node.
        gpus: ``nvidia.com/gpu`` per node (0: CPU, gloo; > 0: nccl).
        start_timeout_seconds: Fail (and delete the TrainJob) when no trainer pod is running after this long.
        timeout_seconds: Fail (and delete the TrainJob) when it has not finished after this long; 0: no limit.
        poll_seconds: Seconds between status reads.
        log_lines: Trailing log lines of the first trainer node surfaced on failure.
    """

    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    namespace: str = "kubeflow"
    runtime_name: str = DEFAULT_RUNTIME
    runtime_kind: str = "TrainingRuntime"
    image: str = ""
    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    start_timeout_seconds: float = 600.0
    timeout_seconds: float = 0.0
    poll_seconds: float = 5.0
    log_lines: int = 200

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.namespace):
            raise ConfigError(f"namespace must be a DNS label; got {self.namespace!r}")
        if not self.runtime_name:
            raise ConfigError("runtime_name must name a TrainingRuntime")
        if self.runtime_kind not in ("TrainingRuntime", "ClusterTrainingRuntime"):
            raise ConfigError(f"runtime_kind must be TrainingRuntime or ClusterTrainingRuntime; got "
                              f"{self.runtime_kind!r}")
        for name in ("cpu", "memory"):
            if not _QUANTITY.match(getattr(self, name)):
                raise ConfigError(f"{name} must be a Kubernetes quantity (e.g. 2, 500m, 8Gi); got "
                                  f"{getattr(self, name)!r}")
        if self.gpus < 0:
            raise ConfigError(f"gpus must be >= 0; got {self.gpus}")
        if self.start_timeout_seconds <= 0:
            raise ConfigError(f"start_timeout_seconds must be > 0; got {self.start_timeout_seconds}")
        if self.timeout_seconds < 0:
            raise ConfigError(f"timeout_seconds must be >= 0 (0: no limit); got {self.timeout_seconds}")
        if self.poll_seconds <= 0:
            raise ConfigError(f"poll_seconds must be > 0; got {self.poll_seconds}")

    @property
    def trainer_image(self) -> str:
        """``image``, else the component image for ``gpus`` GPUs per node (its CUDA build when > 0)."""
        return self.image or (GPU_COMPONENT_IMAGE if self.gpus > 0 else COMPONENT_IMAGE)
