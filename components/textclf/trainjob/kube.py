"""The train stage as a Kubeflow Trainer ``TrainJob`` (trainer.kubeflow.org/v1alpha1, Trainer 2.3): build the
object, create it through the Kubernetes API, follow its status conditions to ``Complete`` or ``Failed``, and
surface the first trainer node's log. Plain functions over the ``kubernetes`` client (no kfp import)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from textclf.config import TrainConfig
from textclf.errors import ConfigError
from textclf.trainjob.config import TRAINER_API_VERSION, TRAINER_GROUP, TRAINER_VERSION, TrainJobConfig
from textclf.trainjob.launch import TrainingFailedError, worker_arguments, worker_command

log = logging.getLogger(__name__)

PLURAL = "trainjobs"
#: Labels JobSet puts on the pods of a TrainJob (the JobSet has the TrainJob's name); the trainer's replicated
#: job and container are both called ``node`` in the torch runtimes.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
TRAINER_NODE = "node"
#: Terminal conditions of a TrainJob (Trainer 2.3: Created, Suspended, Complete, Failed; no Running condition:
#: a running job is one whose jobsStatus counts an active or ready pod).
COMPLETE, FAILED = "Complete", "Failed"


def trainjob_name(prefix: str = "textclf-train") -> str:
    """A fresh RFC 1035 name (the CRD's rule), at most 63 characters."""
    return f"{prefix[:50].rstrip('-')}-{uuid.uuid4().hex[:8]}"


def build_trainjob(name: str, worker_args: list[str], config: TrainJobConfig,
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The TrainJob running ``torchrun -m textclf.trainjob.worker <worker_args>`` on ``numNodes`` pods with
    ``numProcPerNode`` processes each; torchrun takes nodes, ranks and master from the ``PET_*`` variables the
    Trainer controller's torch plugin sets from the same two numbers."""
    distributed = config.distributed
    resources = {"cpu": config.cpu, "memory": config.memory}
    if config.gpus:
        resources["nvidia.com/gpu"] = str(config.gpus)
    return {
        "apiVersion": TRAINER_API_VERSION,
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": {"app.kubernetes.io/name": "textclf", "app.kubernetes.io/component": "train", **(labels or {})},
        },
        "spec": {
            "runtimeRef": {"apiGroup": TRAINER_GROUP, "kind": config.runtime_kind, "name": config.runtime_name},
            "trainer": {
                "image": config.trainer_image,
                "command": worker_command(distributed, worker_args, local=False),
                "numNodes": distributed.num_nodes,
                "numProcPerNode": distributed.procs_per_node,
                "resourcesPerNode": {"requests": dict(resources), "limits": dict(resources)},
            },
        },
    }


def trainjob_for_training(name: str, split_uri: str, train_config: TrainConfig, model_uri: str,
                          config: TrainJobConfig, checkpoint_root: str = "") -> dict[str, Any]:
    """:func:`build_trainjob` for the train stage, after the checks that need no cluster.

    Raises:
        ConfigError: ``batch_size`` not a multiple of the workers, or a split/model location the pods cannot reach
            (a local path: the TrainJob's pods share no disk with the caller).
        HardwareUnavailableError: ``qlora`` without GPUs per node.
    """
    from textclf.config import TrainMethod
    from textclf.errors import HardwareUnavailableError
    from textclf.train.train import per_process_batch_size

    per_process_batch_size(train_config.batch_size, config.distributed.workers)
    if train_config.train_method is TrainMethod.QLORA and not config.gpus:
        raise HardwareUnavailableError("method 'qlora' needs CUDA: set gpus >= 1 per TrainJob node")
    for what, uri in (("splits", split_uri), ("model", model_uri)):
        if not uri:
            raise ConfigError(f"the TrainJob needs the {what} location")
    return build_trainjob(name, worker_arguments(split_uri, train_config, model_uri, checkpoint_root or None,
                                                 progress=False), config)


@dataclass
class TrainJobOutcome:
    """How a TrainJob ended: its name, final status and the trainer node's log tail."""

    name: str
    status: dict[str, Any]
    seconds: float
    logs: str = ""
    history: list[str] = field(default_factory=list)


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def has_started(status: dict[str, Any]) -> bool:
    """A trainer pod is (or was) running: jobsStatus counts an active, ready, succeeded or failed one."""
    return any(job.get(key, 0) for job in status.get("jobsStatus") or []
               for key in ("active", "ready", "succeeded", "failed"))


def describe(status: dict[str, Any]) -> str:
    conditions = [f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
                  for c in status.get("conditions") or []]
    jobs = [f"{j.get('name')}: active={j.get('active')} ready={j.get('ready')} failed={j.get('failed')}"
            for j in status.get("jobsStatus") or []]
    return "; ".join(conditions + jobs) or "no status yet"


def trainer_logs(core_api: Any, name: str, namespace: str, tail_lines: int) -> str:
    """The last ``tail_lines`` lines of the first trainer node's container (best effort: a note on failure)."""
    selector = f"{JOBSET_NAME_LABEL}={name},{REPLICATED_JOB_LABEL}={TRAINER_NODE}"
    try:
        pods = core_api.list_namespaced_pod(namespace, label_selector=selector).items
        if not pods:
            return f"(no trainer pod of {name} found)"
        pods.sort(key=lambda pod: (pod.metadata.labels or {}).get(COMPLETION_INDEX_LABEL, "~"))
        pod = pods[0].metadata.name
        text = core_api.read_namespaced_pod_log(pod, namespace, container=TRAINER_NODE, tail_lines=tail_lines)
        return f"--- {pod} (last {tail_lines} lines) ---\n{text}"
    except Exception as exc:  # noqa: BLE001 - logs are best effort; the status carries the verdict
        return f"(logs of {name} unavailable: {exc})"


def run_trainjob(body: dict[str, Any], config: TrainJobConfig, api_client: Any, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 echo: Callable[[str], None] | None = None) -> TrainJobOutcome:
    """Create the TrainJob and wait for ``Complete``; on ``Failed``, on never starting within
    ``start_timeout_seconds`` and on ``timeout_seconds`` raise with the status and the trainer's log tail (the
    last two delete the TrainJob, so nothing keeps running or waiting for resources).

    Raises:
        TrainingFailedError: The TrainJob failed, never started or timed out; or the API refused it.
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    say = echo or log.info
    try:
        custom.create_namespaced_custom_object(TRAINER_GROUP, TRAINER_VERSION, namespace, PLURAL, body)
    except ApiException as exc:
        raise TrainingFailedError(f"the Kubernetes API refused TrainJob {namespace}/{name}: {exc.status} "
                                  f"{exc.reason}: {exc.body}") from exc
    say(f"created TrainJob {namespace}/{name} ({config.distributed.workers} processes on "
        f"{config.distributed.num_nodes} node(s), runtime {config.runtime_kind}/{config.runtime_name})")
    started_at = clock()
    history: list[str] = []
    started = False
    while True:
        try:
            status = custom.get_namespaced_custom_object(TRAINER_GROUP, TRAINER_VERSION, namespace, PLURAL,
                                                         name).get("status") or {}
        except ApiException as exc:
            if exc.status == 404:
                raise TrainingFailedError(f"TrainJob {namespace}/{name} disappeared (deleted by someone else?)") \
                    from exc
            raise TrainingFailedError(f"cannot read TrainJob {namespace}/{name}: {exc.status} {exc.reason}") from exc
        state = describe(status)
        if not history or history[-1] != state:
            history.append(state)
            say(f"TrainJob {name}: {state}")
        elapsed = clock() - started_at
        if _condition(status, COMPLETE):
            return TrainJobOutcome(name, status, elapsed, trainer_logs(core, name, namespace, config.log_lines),
                                   history)
        failed = _condition(status, FAILED)
        if failed:
            logs = trainer_logs(core, name, namespace, config.log_lines)
            raise TrainingFailedError(
                f"TrainJob {namespace}/{name} failed: {failed.get('reason')}: {failed.get('message')}\n{logs}")
        started = started or has_started(status)
        if not started and elapsed >= config.start_timeout_seconds:
            _delete(custom, name, namespace)
            raise TrainingFailedError(
                f"TrainJob {namespace}/{name} never started: no trainer pod ran within "
                f"{config.start_timeout_seconds:g} s (start_timeout_seconds); last status: {state}. Check that the "
                f"{config.runtime_kind} {config.runtime_name!r} exists in {namespace} (manifests/trainer/), that the "
                f"Trainer controller runs, and that nodes can fit {config.distributed.num_nodes} pod(s) of "
                f"{config.cpu} CPU / {config.memory}" + (f" / {config.gpus} GPU" if config.gpus else "")
                + ". The TrainJob was deleted.")
        if config.timeout_seconds and elapsed >= config.timeout_seconds:
            logs = trainer_logs(core, name, namespace, config.log_lines)
            _delete(custom, name, namespace)
            raise TrainingFailedError(f"TrainJob {namespace}/{name} did not finish within "
                                      f"{config.timeout_seconds:g} s (timeout_seconds); deleted.\n{logs}")
        sleep(config.poll_seconds)


def _delete(custom: Any, name: str, namespace: str) -> None:
    from kubernetes.client.rest import ApiException

    try:
        custom.delete_namespaced_custom_object(TRAINER_GROUP, TRAINER_VERSION, namespace, PLURAL, name)
    except ApiException as exc:  # already gone is fine; anything else is only logged (the error is raised anyway)
        log.warning("could not delete TrainJob %s/%s: %s", namespace, name, exc)


def kube_api_client(host: str = "") -> Any:
    """A ``kubernetes`` ApiClient for ``host`` (an API server URL without credentials, e.g. a stand-in), else
    ``$TEXTCLF_KUBE_HOST``, else the in-cluster service account: the rollout's one configuration path
    (:func:`textclf.rollout.kube.api_client`)."""
    from textclf.rollout.kube import KubeSettings, api_client

    return api_client(KubeSettings(host=host))


def pod_visible_uri(uri: str) -> str:
    """An artifact URI as the TrainJob's pods read it: KFP's ``minio://`` is the S3 API of its MinIO.

    Raises:
        ConfigError: A local path (the pods share no disk with the KFP step).
    """
    from textclf.storage import is_remote

    if uri.startswith("minio://"):
        uri = "s3://" + uri[len("minio://"):]
    if not is_remote(uri):
        raise ConfigError(f"{uri!r} is a local path: a TrainJob's pods cannot read or write it. Run the pipeline on a "
                          "cluster with an s3:// or gs:// pipeline root, or use workers=1 (in-process training)")
    return uri


def train_with_trainjob(split_uri: str, train_config: TrainConfig, model_uri: str, model_dir: str,
                        job_config: TrainJobConfig, api_client: Any, checkpoint_root: str = "",
                        fetch: Callable[[str, str], Any] | None = None,
                        echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The train stage as a TrainJob: rank 0 of the job writes the model to ``model_uri``; once the job is
    ``Complete`` the model is fetched into ``model_dir`` (the KFP output) and its training summary returned.

    Raises:
        ConfigError: workers < 1, a batch the workers do not divide, or local artifact paths (before the API call).
        TrainingFailedError: The TrainJob failed, never started or timed out.
    """
    from textclf.provenance import read_json
    from textclf.train.train import METADATA_FILE

    split_uri, model_uri = pod_visible_uri(split_uri), pod_visible_uri(model_uri)
    body = trainjob_for_training(trainjob_name(), split_uri, train_config, model_uri, job_config, checkpoint_root)
    outcome = run_trainjob(body, job_config, api_client, echo=echo)
    (echo or log.info)(outcome.logs)
    if fetch is None:
        from textclf.storage import download

        fetch = download
    fetch(model_uri, model_dir)
    summary = dict(read_json(f"{model_dir}/{METADATA_FILE}")["training"])
    summary["trainjob"] = outcome.name
    summary["trainjob_seconds"] = outcome.seconds
    return summary
