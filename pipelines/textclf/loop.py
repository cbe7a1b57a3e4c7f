"""``make loop``: the closed loop on one machine, the cluster path of it, scripted so a person can watch it.

Each step prints one timeline line:

1. **v1**: the retraining pipeline (KFP local runner, ``rollout_mode='registry'``) trains v1 on a small AG News
   slice; the registry is empty, so the gate promotes it. The drift reference is built from v1's own data.
2. **Cluster**: the InferenceService for v1's bundle (rendered by :func:`textclf.deploy.kserve.render_inference_service`
   from the committed overlay) is created in :mod:`textclf.localcluster`, the local stand-in of the Kubernetes API
   and of KServe's controller. :class:`LocalPredictors` plays the pods: a real KServe server process
   (``python -m textclf.serving`` with the ServingRuntime's args and the InferenceService's) per model, each writing
   its own request log.
3. **Monitor**: :class:`textclf.monitor.DriftMonitor` over the servers' request logs, with its HTTP API
   (``/v1/feedback``, ``/v1/ab``, ``/metrics``) on a free loopback port.
4. **In-distribution traffic** (AG News test texts) from users ``user-<n>`` (``x-user-id``); the true labels are fed
   back with each response's request id (``POST /v1/feedback``); the monitor's check: no drift.
5. **Shifted traffic** (arXiv CS abstracts mixed in, and a class-prior shift to Business + Sci/Tech): drift; its
   ``on_drift`` starts the retraining pipeline in a background thread with ``rollout_mode='kserve'``, the monitor's
   URL, the stand-in as the Kubernetes API and the newly labelled rows.
6. **Canary**: the pipeline trains v2; its gate passes it to ``rollout_op``, which merge-patches the
   InferenceService (``canaryTrafficPercent``). The stand-in's controller creates the canary revision,
   :class:`LocalPredictors` starts a second real server for its ``storageUri`` and marks the revision ready; while
   ``rollout_op`` waits its A/B window, the load generator sends labelled AG News traffic, each user routed by
   :func:`textclf.localcluster.revision_for` (``assign_variant`` on the canary's percentage: no Knative router runs
   here), and feeds the labels back.
7. **Verdict**: ``rollout_op`` reads the monitor's ``/v1/ab`` report, decides (the guards), promotes (the canary takes
   100%) or rolls back (the previous model restored); the server with no traffic is stopped. The timeline shows the
   A/B verdict and the decision from the rollout's record, and the registry's production version.
8. **Reference**: after a promotion the pipeline rebuilt the drift reference for v2; the monitor is restarted on it.

Everything runs on 127.0.0.1; sized to finish within 20 minutes on 2 CPU cores (docs/benchmarks.md has the measured
time). What is real and what stands in: docs/loop.md.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from textclf.errors import ConfigError, ObjectNotFoundError

log = logging.getLogger(__name__)

#: Where the stand-in's "storage initializer" finds the registry: the InferenceService's ``storageUri`` is below this
#: root (as a registry on a volume claim would be, ``registry_serving_uri``), mapped to ``runs/loop/registry``.
SERVING_ROOT = "pvc://textclf-registry/registry"
NAMESPACE = "textclf"
ISVC_NAME = "textclf"


@dataclass(frozen=True)
class LoopConfig:
    """Sizes of the demo; every default is in this one place.

    Attributes:
        dataset_uri: AG News directory (``train.csv.gz``, ``test.csv.gz``).
        shift_dataset_uri: arXiv CS directory (its ``test.csv.gz`` abstracts are the out-of-domain traffic).
        runs_dir: Where the loop writes (replaced on every run).
        train_rows: Training + validation rows of v1 (stratified). Few, as a first model's labelled data is: with
            ``new_rows`` more, the candidate is better by enough for the gate (McNemar and the minimum gain) to
            pass it to the canary; with 2,000 + 1,000 the gate measured no gain and archived it.
        test_rows: Test rows both models are scored on.
        new_rows: Newly labelled AG News training rows handed to the retraining run.
        window: Requests per traffic phase, and the monitor's window size.
        arxiv_share: Share of arXiv abstracts in the shifted traffic.
        shifted_classes: AG News classes the rest of the shifted traffic is drawn from.
        concurrency: Parallel clients replaying traffic.
        epochs: Training epochs of both models.
        seed: Seed for sampling.
        users: Distinct user keys (``user-0`` ...) the traffic comes from, in turn.
        canary_traffic_percent: The canary's share (``canaryTrafficPercent``): a demo's 30, not production's 10, so
            the A/B window gets enough labelled canary requests in a couple of minutes.
        ab_window_seconds: The rollout's A/B window (production: an hour or more).
        ab_poll_seconds: Seconds between two looks of the rollout at the monitor's report.
        ab_min_labelled: Labelled requests each variant needs before accuracy is judged (the guards'
            ``min_labelled``; production: 100 or more, with a longer window).
        max_p99_latency_ratio: The latency guard. 2.0 rather than production's 1.5: both servers share two CPU
            cores with the monitor and the load generator here, so their p99 latencies are noisy.
        canary_batch: Requests sent between two looks at the InferenceService during the canary (each batch is
            routed with the traffic split the stand-in reports at its start).
    """

    dataset_uri: str = ""
    shift_dataset_uri: str = ""
    runs_dir: Path = Path("runs/loop")
    train_rows: int = 1000
    test_rows: int = 1000
    new_rows: int = 2000
    window: int = 500
    arxiv_share: float = 0.3
    shifted_classes: tuple[str, ...] = ("Business", "Sci/Tech")
    concurrency: int = 4
    epochs: float = 1.0
    seed: int = 7
    users: int = 200
    canary_traffic_percent: int = 30
    ab_window_seconds: int = 120
    ab_poll_seconds: int = 15
    ab_min_labelled: int = 200
    max_p99_latency_ratio: float = 2.0
    canary_batch: int = 100

    def __post_init__(self) -> None:
        for name in ("dataset_uri", "shift_dataset_uri"):
            if not (Path(getattr(self, name)) / "test.csv.gz").is_file():
                raise ConfigError(f"{name}: no test.csv.gz in {getattr(self, name)!r}")
        if not 0 < self.arxiv_share < 1:
            raise ConfigError(f"arxiv_share must be in (0, 1), got {self.arxiv_share}")
        if self.users < 1 or self.canary_batch < 1:
            raise ConfigError("users and canary_batch must be >= 1")


@dataclass
class Timeline:
    """What happened when, printed as it happens and saved as JSON.

    Lines go to ``stream`` (``sys.stdout`` when the timeline is made): the local runner redirects ``sys.stdout``
    (and ``print``) process-wide while a pipeline runs, in the background thread too, and the timeline must still
    reach the console.
    """

    started: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)
    stream: TextIO = field(default_factory=lambda: sys.stdout, repr=False)
    lock: Any = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, **details: Any) -> None:
        with self.lock:
            elapsed = time.monotonic() - self.started
            self.events.append({"t_seconds": round(elapsed, 1), "event": what, **details})
            self.stream.write(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {what}\n")
            self.stream.flush()

    def render(self) -> str:
        return "\n".join(f"{e['t_seconds']:>7.1f}s  {e['event']}" for e in self.events)


# --- traffic ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopRequest:
    """One request of the load generator: the text, its true AG News class (None: no label will come, e.g. an
    arXiv abstract) and the user it comes from (the ``x-user-id`` header)."""

    text: str
    true_label: str | None
    user: str


@dataclass(frozen=True)
class Sent:
    """What one request got: the server's request id (the prediction id labels are fed back under), where it went,
    the predicted class and model version, and the true class to feed back (None: none)."""

    request_id: str
    user: str
    revision: str
    label: str
    model_version: str
    true_label: str | None


def traffic_frames(config: LoopConfig) -> dict[str, pd.DataFrame]:
    """The three traffic phases as frames of ``text`` and ``label`` (None for arXiv abstracts), from test files
    only and without a text in two phases: ``iid`` (``config.window`` AG News test rows), ``shifted``
    (``config.window`` rows: ``arxiv_share`` arXiv CS abstracts, the rest AG News rows of ``shifted_classes``) and
    ``canary`` (every other AG News test row, all classes: the labelled live traffic of the A/B window)."""
    from textclf.ingest.ingest import read_split_texts

    test = read_split_texts(config.dataset_uri, "test").sample(frac=1.0, random_state=config.seed)
    iid = test.iloc[: config.window]
    rest = test.iloc[config.window:]
    n_arxiv = round(config.window * config.arxiv_share)
    in_classes = rest[rest["label"].isin(config.shifted_classes)].iloc[: config.window - n_arxiv]
    arxiv = read_split_texts(config.shift_dataset_uri, "test")
    arxiv_rows = arxiv.sample(n=n_arxiv, random_state=config.seed).assign(label=None)
    shifted = pd.concat([in_classes[["text", "label"]], arxiv_rows[["text", "label"]]])
    shifted = shifted.sample(frac=1.0, random_state=config.seed).reset_index(drop=True)
    canary = rest.drop(index=in_classes.index)
    return {"iid": iid[["text", "label"]].reset_index(drop=True), "shifted": shifted,
            "canary": canary[["text", "label"]].reset_index(drop=True)}


def traffic(config: LoopConfig) -> tuple[list[str], list[str]]:
    """(in-distribution texts, shifted texts), ``config.window`` each (:func:`traffic_frames`)."""
    frames = traffic_frames(config)
    return frames["iid"]["text"].tolist(), frames["shifted"]["text"].tolist()


def with_users(frame: pd.DataFrame, users: int, start: int = 0, labelled: bool = True) -> list[LoopRequest]:
    """The frame's rows as requests of users ``user-<n>`` in turn (``start`` continues the rotation);
    ``labelled=False`` drops the true labels (no feedback will come for them)."""
    return [LoopRequest(str(text), (None if label is None or pd.isna(label) else str(label)) if labelled else None,
                        f"user-{(start + i) % users}")
            for i, (text, label) in enumerate(zip(frame["text"], frame["label"], strict=True))]


def send_requests(requests: Sequence[LoopRequest], route: Callable[[str], tuple[str, str]],
                  concurrency: int) -> list[Sent]:
    """Send each request as a single-text V1 predict call with its user key, to the URL ``route(user)`` names
    (``(revision, url)``), from ``concurrency`` parallel clients.

    Raises:
        httpx.HTTPStatusError: A server answered an error.
    """
    import httpx

    from textclf.serving.contract import USER_KEY_HEADER

    with httpx.Client(timeout=30) as client:
        def send(request: LoopRequest) -> Sent:
            revision, url = route(request.user)
            response = client.post(url, json={"instances": [request.text]}, headers={USER_KEY_HEADER: request.user})
            response.raise_for_status()
            body = response.json()
            return Sent(str(body["request_id"]), request.user, revision, body["predictions"][0]["label"],
                        str(body.get("model_version", "")), request.true_label)

        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(send, requests))


def feedback_body(sent: Iterable[Sent]) -> list[dict[str, str]]:
    """The ``POST /v1/feedback`` body for the requests that have a true label: ``[{"request_id", "true_label"}]``
    (the request id of a single-text request is its prediction id)."""
    return [{"request_id": item.request_id, "true_label": item.true_label} for item in sent
            if item.true_label is not None]


def post_json(url: str, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
    """POST ``body`` as JSON; (status, parsed answer) for 2xx and 4xx answers alike."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def feed_back(monitor_url: str, sent: Iterable[Sent]) -> dict[str, Any]:
    """Feed the true labels of ``sent`` back to the monitor; its answer (``accepted``, ``refused``).

    Raises:
        RuntimeError: The monitor answered anything but 200.
    """
    from textclf.monitor.endpoints import FEEDBACK_PATH

    body = feedback_body(sent)
    if not body:
        return {"accepted": 0, "refused": []}
    status, answer = post_json(monitor_url.rstrip("/") + FEEDBACK_PATH, body)
    if status != 200:
        raise RuntimeError(f"POST {FEEDBACK_PATH} answered {status}: {answer}")
    return answer


def ingest(monitor: Any, rows: int, timeout_s: float = 30.0) -> list[Any]:
    """Poll the monitor until it has read ``rows`` more predictions (the servers write their request logs off the
    request path); the checks that ran meanwhile.

    Raises:
        TimeoutError: They did not all arrive within ``timeout_s``.
    """
    target = monitor.state.rows_read + rows
    deadline = time.monotonic() + timeout_s
    results: list[Any] = []
    while True:
        try:
            results += monitor.poll()
        except ObjectNotFoundError:  # no request log written yet
            pass
        if monitor.state.rows_read >= target:
            return results
        if time.monotonic() > deadline:
            raise TimeoutError(f"the monitor read {monitor.state.rows_read - target + rows} of {rows} predictions "
                               f"within {timeout_s:.0f} s")
        time.sleep(0.2)


# --- the pods: a real KServe server per model ------------------------------------------------------------------


def local_model_dir(storage_uri: str, serving_root: str, registry_root: Path) -> Path:
    """Where the stand-in's "storage initializer" finds ``storage_uri``: below ``serving_root`` is below the local
    registry directory.

    Raises:
        ConfigError: ``storage_uri`` is not below ``serving_root``.
    """
    root = serving_root.rstrip("/") + "/"
    if not storage_uri.startswith(root):
        raise ConfigError(f"storageUri {storage_uri!r} is not below {root!r}, the registry the stand-in serves from")
    return Path(registry_root) / storage_uri[len(root):].strip("/")


def runtime_args(name: str) -> list[str]:
    """The ``textclf-onnx`` ServingRuntime's container args (``manifests/base/servingruntime.yaml``), ``{{.Name}}``
    substituted, as KServe starts the container."""
    import yaml

    from textclf.deploy.kserve import manifests_dir

    runtime = yaml.safe_load((manifests_dir() / "base" / "servingruntime.yaml").read_text(encoding="utf-8"))
    (container,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    return [str(arg).replace("{{.Name}}", name) for arg in container.get("args", [])]


def predictor_command(model: Mapping[str, Any], name: str, model_dir: Path, request_log: Path) -> tuple[str, ...]:
    """The server process of one revision: ``python -m textclf.serving`` with the runtime's args, then the
    InferenceService's ``model.args`` (KServe concatenates them; a later flag wins), then what the stand-in changes:
    the local model directory for ``/mnt/models``, a free HTTP port (``{port}``), no gRPC, a request log."""
    from textclf.benchmarks.serve_bench import serving_args
    from textclf.serving.config import ServingConfig

    local = ServingConfig(model_dir=str(model_dir), enable_grpc=False, request_log=request_log)
    return (sys.executable, "-m", "textclf.serving", *runtime_args(name), *(str(a) for a in model.get("args") or ()),
            *serving_args(local, fields=("model_dir", "enable_grpc", "request_log")))


def precision_of(args: Sequence[str], default: str = "int8") -> str:
    """The last ``--precision`` in a command line."""
    value = default
    for i, arg in enumerate(args):
        if arg.startswith("--precision="):
            value = arg.split("=", 1)[1]
        elif arg == "--precision" and i + 1 < len(args):
            value = args[i + 1]
    return value


@dataclass
class _Server:
    revision: str  # the first revision it was started for (its log is named after it)
    url: str
    model_version: str
    registry_version: str
    stack: contextlib.ExitStack


class LocalPredictors:
    """What Knative and the storage initializer do for the stand-in, with real server processes.

    :meth:`sync` looks at the InferenceService in the stand-in: a new revision gets a real KServe server for its
    ``spec.predictor.model`` (``storageUri`` mapped to the local registry, :func:`predictor_command`); when it
    answers, the revision is marked ready (:meth:`textclf.localcluster.LocalKubeState.mark_ready`), which routes the
    traffic to it. A revision of a model that already runs (a rollback restores the previous ``storageUri``: a new
    revision of the old model) reuses that process. A server that no revision with traffic uses any more is stopped.
    :meth:`route` is the router's job, done by the load generator: the revision and URL a user's request goes to.
    """

    def __init__(self, kube: Any, registry_root: Path, logs_dir: Path, namespace: str = NAMESPACE,
                 name: str = ISVC_NAME, serving_root: str = SERVING_ROOT):
        self.kube, self.registry_root, self.logs_dir = kube, Path(registry_root), Path(logs_dir)
        self.namespace, self.name, self.serving_root = namespace, name, serving_root
        self.servers: dict[tuple[str, tuple[str, ...]], _Server] = {}
        self.revisions: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.traffic: list[dict[str, Any]] = []

    def sync(self) -> list[str]:
        """Bring the servers in line with the InferenceService; one sentence per change."""
        from textclf.deploy.kserve import MODEL_VERSION_ANNOTATION
        from textclf.localcluster import predictor_status

        events = []
        isvc = self.kube.get(self.namespace, self.name)
        status = predictor_status(isvc)
        created = status["latestCreatedRevision"]
        if created not in self.revisions:
            model = isvc["spec"]["predictor"]["model"]
            key = (model["storageUri"], tuple(str(a) for a in model.get("args") or ()))
            self.revisions[created] = key
            version = (isvc["metadata"].get("annotations") or {}).get(MODEL_VERSION_ANNOTATION, "?")
            if key in self.servers:
                events.append(f"revision {created} ({version}) runs the model of {self.servers[key].revision}: "
                              f"its server process is reused")
            else:
                server = self._start(created, model, version)
                self.servers[key] = server
                events.append(f"KServe server for revision {created} ({version}, model version "
                              f"{server.model_version}) ready on {server.url.rsplit('/v1', 1)[0]}")
        if self.kube.mark_ready(self.namespace, self.name, created):
            events.append(f"revision {created} marked ready in the stand-in")
        self.traffic = predictor_status(self.kube.get(self.namespace, self.name)).get("traffic") or []
        live = {t["revisionName"] for t in self.traffic if t.get("percent")} | {created}
        keep = {self.revisions[r] for r in live if r in self.revisions}
        for key in [k for k in self.servers if k not in keep]:
            server = self.servers.pop(key)
            server.stack.close()
            events.append(f"stopped the server of {server.revision} ({server.registry_version}): no traffic")
        return events

    def split(self) -> str:
        """The traffic as ``revision (version) N%`` parts."""
        versions = {r: self.servers[k].registry_version for r, k in self.revisions.items() if k in self.servers}
        return ", ".join(f"{t['revisionName']} ({versions.get(t['revisionName'], '?')}) {t['percent']}%"
                         for t in self.traffic if t.get("percent"))

    def canary_running(self) -> bool:
        return sum(1 for t in self.traffic if t.get("percent")) > 1

    def route(self, user: str) -> tuple[str, str]:
        """(revision, predict URL) for ``user``'s request, by :func:`textclf.localcluster.revision_for`."""
        from textclf.localcluster import revision_for

        revision = revision_for(self.traffic, user)
        return revision, self.servers[self.revisions[revision]].url

    def model_versions(self) -> dict[str, str]:
        """Registry version -> the model version its server answers with, for the running servers."""
        return {s.registry_version: s.model_version for s in self.servers.values()}

    def _start(self, revision: str, model: Mapping[str, Any], version: str) -> _Server:
        from textclf.benchmarks.serve_bench import ServerSpec, running_server
        from textclf.serving.bundle import load_bundle
        from textclf.serving.config import Precision

        model_dir = local_model_dir(model["storageUri"], self.serving_root, self.registry_root)
        short = revision.rsplit("-", 1)[-1]
        command = predictor_command(model, self.name, model_dir, self.logs_dir / f"predictor-{short}.jsonl")
        stack = contextlib.ExitStack()
        url = stack.enter_context(running_server(ServerSpec(revision, command),
                                                 self.logs_dir.parent / f"server-{short}.log"))
        served = load_bundle(model_dir).model_version(Precision(precision_of(command)))
        return _Server(revision, url, served, version, stack)

    def close(self) -> None:
        for server in self.servers.values():
            server.stack.close()
        self.servers.clear()


# --- the rest ----------------------------------------------------------------------------------------------------


def write_new_rows(config: LoopConfig, out_dir: Path) -> Path:
    """``config.new_rows`` AG News training rows in the original format: the "newly labelled" data."""
    train = pd.read_csv(Path(config.dataset_uri) / "train.csv.gz", dtype=str, keep_default_na=False)
    sample = train.sample(n=config.new_rows, random_state=config.seed + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample.to_csv(out_dir / "train.csv.gz", index=False)
    return out_dir


def collect_reports(runs_dir: Path, reports_dir: Path) -> list[Path]:
    """Copy every HTML/Markdown report of the loop into one folder (names prefixed with where they came from)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted(runs_dir.rglob("*")):
        if reports_dir in source.parents or not source.is_file():
            continue
        relative = source.relative_to(runs_dir).as_posix()
        if relative.startswith("registry/") or relative.endswith("evaluate-op/evaluation/report.html"):
            continue  # copies of reports collected from the pipeline runs
        if source.suffix == ".html" or relative.endswith(("evaluate-op/report", "validate-split-op/report")):
            name = relative.replace("/", "__") + ("" if source.suffix == ".html" else ".html")
            if relative.endswith("validate-split-op/report"):
                name = name[: -len(".html")] + ".md"
            shutil.copy(source, reports_dir / name)
            copied.append(reports_dir / name)
    return copied


def _find(run_dir: Path, name: str) -> Path | None:
    """The one file called ``name`` in a local run's folder (a task output), or None."""
    found = sorted(Path(run_dir).rglob(name), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _accuracy_line(store: Any, versions: Mapping[str, str]) -> str:
    """``v1.0.0 0.8800 (500 labels)`` per registry version, from the monitor's store."""
    live = store.live_accuracy(0)
    parts = []
    for registry_version, model_version in versions.items():
        correct, labelled = live.get(model_version, (0, 0))
        if labelled:
            parts.append(f"{registry_version} {correct / labelled:.4f} ({labelled} labels)")
    return "; ".join(parts) or "no labels yet"


def run_loop(config: LoopConfig) -> dict[str, Any]:
    """Run the demo (see the module docstring) and return its summary (also ``runs_dir/loop_summary.json``)."""
    from textclf.deploy.kserve import render_inference_service
    from textclf.localcluster import LocalKubeState, serve_kube_api, url_of
    from textclf.monitor import (
        DriftConfig,
        DriftMonitor,
        MetricsServer,
        MonitorMetrics,
        reference_from_splits,
        save_reference,
    )
    from textclf.monitor.endpoints import monitor_routes
    from textclf.monitor.reference import load_reference
    from textclf.provenance import write_json
    from textclf.registry import ModelRegistry
    from textclf.rollout.kube import HOST_ENV
    from textclf.rollout.rollout import serving_storage_uri
    from textclf.trigger import RetrainRequest, check_data_growth, make_trigger

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per replayed request otherwise
    runs = config.runs_dir.resolve()
    if runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True)
    timeline = Timeline()
    registry_uri = str(runs / "registry")
    registry = ModelRegistry(registry_uri)
    trigger = make_trigger("local", pipeline_root=runs / "pipeline_root")
    base_arguments = {
        "dataset_uri": str(Path(config.dataset_uri).resolve()), "registry_uri": registry_uri,
        "max_train_rows": config.train_rows, "max_test_rows": config.test_rows, "epochs": config.epochs,
        "seed": config.seed, "checkpoint_root": str(runs / "checkpoints"),
    }
    logs = runs / "logs"
    logs.mkdir()

    def fire(request: Any, log_name: str) -> Any:
        """Run the retraining pipeline with the runner's per-task output in a log file, not on the console."""
        with (logs / log_name).open("w", encoding="utf-8") as output, contextlib.redirect_stdout(output):
            return trigger.fire(request)

    # 1. v1 -----------------------------------------------------------------------------------------------------
    timeline.add(f"training v1 on {config.train_rows:,} AG News rows (retraining pipeline, rollout_mode=registry, "
                 f"empty registry; log: {logs / 'retraining-v1.log'})")
    first = fire(RetrainRequest("initial model", base_arguments), "retraining-v1.log")
    v1 = registry.production_version()
    timeline.add(f"v1 = {v1}: {first.details['decision']['reason']}", run=first.run_id)
    outputs = first.details["outputs"]  # the retraining pipeline's declared outputs
    reference = reference_from_splits(outputs["splits"], outputs["onnx_model"],
                                      sample_size=DriftConfig.reference_size, seed=config.seed)
    reference.meta["test_accuracy"] = float(registry.index()["versions"][v1].get("accuracy") or 0.0)
    save_reference(reference, runs / "monitor" / "reference")
    timeline.add(f"drift reference built: {len(reference.frame):,} rows of v1's own data with v1's predictions "
                 f"(model version {reference.model_version}, fingerprint {reference.fingerprint[:12]})")
    new_rows_dir = write_new_rows(config, runs / "new_rows")
    growth = check_data_growth(str(new_rows_dir), registry_uri)
    timeline.add(f"newly labelled rows waiting: {growth.reason}")

    frames = traffic_frames(config)
    kube = LocalKubeState(revisions_get_ready=False)  # a revision is ready when its server answers
    api = serve_kube_api(kube)
    # The retraining pipeline has no kube host parameter: rollout_op's client reads $TEXTCLF_KUBE_HOST (a pipeline
    # pod uses its ServiceAccount instead); the local runner's step processes inherit this environment.
    saved_host = os.environ.get(HOST_ENV)
    os.environ[HOST_ENV] = url_of(api)
    serving_logs = runs / "serving" / "request_logs"
    serving_logs.mkdir(parents=True)
    predictors = LocalPredictors(kube, runs / "registry", serving_logs)
    metrics = MonitorMetrics()
    monitor_config = DriftConfig(window_size=config.window, min_window_size=min(config.window, 200))
    checks: list[dict[str, Any]] = []
    fired: dict[str, Any] = {}
    canary: dict[str, Any] = {"requests": 0, "labels": 0, "by_revision": Counter(), "answered": Counter(),
                              "users": {}, "checks": 0}
    http = None
    try:
        # 2. the cluster --------------------------------------------------------------------------------------
        manifest = render_inference_service(serving_storage_uri(registry, v1, SERVING_ROOT), name=ISVC_NAME,
                                            namespace=NAMESPACE, model_version=v1)
        kube.put(NAMESPACE, manifest)
        storage_uri = manifest["spec"]["predictor"]["model"]["storageUri"]
        timeline.add(f"InferenceService {NAMESPACE}/{ISVC_NAME} for {v1} created in the Kubernetes API stand-in "
                     f"(textclf.localcluster) at {url_of(api)}: storageUri {storage_uri}")
        for event in predictors.sync():
            timeline.add(event)

        # 3. the monitor -------------------------------------------------------------------------------------------
        monitor_state = runs / "monitor"

        def on_drift(result: Any) -> None:
            if fired:  # one retraining at a time (the cooldown stops a second trigger anyway)
                return
            timeline.add(f"DRIFT -> retraining: {result.summary()}")
            arguments = {
                **base_arguments, "new_rows_uri": str(new_rows_dir),
                "max_train_rows": config.train_rows + config.new_rows,
                "rollout_mode": "kserve", "monitor_url": monitor_url, "namespace": NAMESPACE, "inference_service_name": ISVC_NAME, "registry_serving_uri": SERVING_ROOT,
                "canary_traffic_percent": config.canary_traffic_percent,
                "ab_window_seconds": config.ab_window_seconds, "ab_poll_seconds": config.ab_poll_seconds,
                "ab_min_labelled": config.ab_min_labelled, "max_p99_latency_ratio": config.max_p99_latency_ratio,
            }
            request = RetrainRequest(f"{result.summary()}; {growth.reason}", arguments)
            request.pipeline_arguments()  # checked here, before the thread: a bad argument fails the check loudly

            def run() -> None:
                try:
                    fired["result"] = fire(request, "retraining-v2.log")
                except Exception as exc:  # noqa: BLE001 - re-raised by the main thread
                    fired["error"] = exc

            fired["thread"] = threading.Thread(target=run, name="retraining-v2", daemon=True)
            fired["thread"].start()
            timeline.add(f"retraining pipeline started in the background: {config.new_rows:,} newly labelled rows, "
                         f"rollout_mode=kserve, canary {config.canary_traffic_percent}% for an A/B window of "
                         f"{config.ab_window_seconds} s (min_labelled {config.ab_min_labelled}; log: "
                         f"{logs / 'retraining-v2.log'})")

        monitor = DriftMonitor(serving_logs, reference, monitor_state, monitor_config, on_drift=on_drift,
                               metrics=metrics)
        http = MetricsServer(metrics, 0, "127.0.0.1",
                             routes=monitor_routes(monitor.store, metrics, monitor.refresh_accuracy))
        monitor_url = f"http://127.0.0.1:{http.port}"
        timeline.add(f"drift monitor on the servers' request logs; its API on {monitor_url} "
                     "(/v1/feedback, /v1/ab, /metrics)")

        # 4-5. in-distribution, then shifted traffic -------------------------------------------------------------
        users_sent = 0
        phases = (("in-distribution AG News test traffic", frames["iid"], True),
                  ((f"shifted traffic ({config.arxiv_share:.0%} arXiv abstracts, rest "
                    f"{' + '.join(config.shifted_classes)} only)"), frames["shifted"], False))
        for phase, frame, labelled in phases:
            requests = with_users(frame, config.users, users_sent, labelled)
            users_sent += len(requests)
            sent = send_requests(requests, predictors.route, config.concurrency)
            predicted = dict(Counter(item.label for item in sent).most_common())
            timeline.add(f"{len(sent)} requests of {phase} from {len({r.user for r in requests})} users; "
                         f"predicted {predicted}")
            results = ingest(monitor, len(sent))
            if labelled:
                answer = feed_back(monitor_url, sent)
                monitor.refresh_accuracy()
                timeline.add(f"true labels fed back (POST /v1/feedback by request id): {answer['accepted']} "
                             f"accepted, {len(answer['refused'])} refused; live accuracy "
                             f"{_accuracy_line(monitor.store, {v1: reference.model_version})}")
            for result in results:
                checks.append(result.to_dict())
                if not result.triggered:  # a triggered check was announced by on_drift already
                    timeline.add(f"monitor check: {result.summary()}")

        # 6. the canary ---------------------------------------------------------------------------------------------
        if fired:
            pool = itertools.cycle(with_users(frames["canary"], config.users, users_sent))
            seen_canary = False
            while True:
                for event in predictors.sync():
                    timeline.add(event)
                if predictors.canary_running():
                    if not seen_canary:
                        seen_canary = True
                        canary["model_versions"] = predictors.model_versions()
                        timeline.add(f"canary running: traffic {predictors.split()}; the load generator routes "
                                     f"each user by assign_variant(user, {config.canary_traffic_percent}) and feeds "
                                     "the labels back")
                    batch = [next(pool) for _ in range(config.canary_batch)]
                    sent = send_requests(batch, predictors.route, config.concurrency)
                    canary["checks"] += len(ingest(monitor, len(sent)))
                    canary["labels"] += feed_back(monitor_url, sent)["accepted"]
                    canary["requests"] += len(sent)
                    canary["by_revision"].update(item.revision for item in sent)
                    canary["answered"].update(item.model_version for item in sent)
                    for item in sent:
                        canary["users"].setdefault(item.user, set()).add(item.revision)
                    continue
                if seen_canary:
                    sticky = sum(1 for revisions in canary["users"].values() if len(revisions) == 1)
                    timeline.add(f"canary over: {canary['requests']} requests from {len(canary['users'])} users "
                                 f"({sticky} stayed on one revision), by revision "
                                 f"{dict(canary['by_revision'])} (model versions answered: "
                                 f"{dict(canary['answered'])}); {canary['labels']} labels fed back; "
                                 f"{canary['checks']} monitor checks meanwhile (cooldown); traffic now "
                                 f"{predictors.split()}")
                    seen_canary = False
                if not fired["thread"].is_alive():
                    break
                time.sleep(1.0)
            fired["thread"].join()
            for event in predictors.sync():
                timeline.add(event)
            if "error" in fired:
                raise fired["error"]

        # 7. the verdict --------------------------------------------------------------------------------------------
        rollout: dict[str, Any] | None = None
        if "result" in fired:
            result = fired["result"]
            decision = result.details["decision"]
            timeline.add(f"gate: {decision['decision'].upper()}: {decision['reason']}", run=result.run_id)
            record_file = _find(Path(result.run_id), "rollout.json")
            if record_file is not None:
                rollout = json.loads(record_file.read_text(encoding="utf-8"))
                comparison = (rollout.get("report") or {}).get("comparison") or {}
                asked = rollout.get("ab_versions") or {}
                served = canary.get("model_versions", {})
                same = (asked.get("control"), asked.get("treatment")) == (served.get(rollout["control"]),
                                                                          served.get(rollout["candidate"]))
                timeline.add(f"A/B verdict (the monitor's /v1/ab, asked by rollout_op for control {rollout['control']} "
                             f"= model version {asked.get('control')}, treatment {rollout['candidate']} = "
                             f"{asked.get('treatment')}: {'the' if same else 'NOT the'} versions the servers "
                             f"answered with): {comparison.get('verdict', 'no report')}: "
                             f"{comparison.get('summary', '')}")
                timeline.add(f"rollout decision after {rollout['polls']} looks: {rollout['action'].upper()}: "
                             f"{rollout['reason']}")
        else:
            timeline.add("no retraining was triggered")
        production = registry.production_version()
        timeline.add(f"registry: production = {production}; " + "; ".join(
            f"{row['version']} {row['status']} (accuracy {row.get('accuracy', 0):.4f})"
            for row in registry.list_versions()))
        timeline.add(f"serving: {predictors.split()}")

        # 8. the reference ------------------------------------------------------------------------------------------
        if rollout is not None and rollout["action"] == "promote":
            reference_file = _find(Path(fired["result"].run_id), "reference.json")
            if reference_file is None:
                timeline.add("no rebuilt drift reference found in the retraining run")
            else:
                rebuilt = load_reference(reference_file.parent)
                monitor = DriftMonitor(serving_logs, rebuilt, monitor_state, monitor_config, metrics=metrics,
                                       store=monitor.store)
                timeline.add(f"drift reference rebuilt by the pipeline for {production}: {rebuilt.rows:,} rows, "
                             f"model version {rebuilt.model_version}, fingerprint {rebuilt.fingerprint[:12]}; "
                             "the monitor restarted on it (cooldown reset)")
    finally:
        predictors.close()
        if http is not None:
            http.close()
        api.shutdown()
        api.server_close()
        if saved_host is None:
            os.environ.pop(HOST_ENV, None)
        else:
            os.environ[HOST_ENV] = saved_host

    versions = registry.list_versions()
    reports = collect_reports(runs, runs / "reports")
    timeline.add(f"{len(reports)} reports in {runs / 'reports'}")
    summary = {
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()},
        "timeline": timeline.events,
        "checks": checks,
        "retraining_runs": [first.run_id, *([fired["result"].run_id] if "result" in fired else [])],
        "registry": versions,
        "canary": {**canary, "by_revision": dict(canary["by_revision"]), "answered": dict(canary["answered"]),
                   "users": {user: sorted(revisions) for user, revisions in canary["users"].items()}},
        "rollout": rollout,
        "reports": [str(path) for path in reports],
    }
    write_json(runs / "loop_summary.json", summary)
    (runs / "timeline.txt").write_text(timeline.render() + "\n", encoding="utf-8")
    timeline.stream.write("\nTimeline\n" + timeline.render() + "\n")
    timeline.stream.write(f"\nSummary: {runs / 'loop_summary.json'}\nReports: {runs / 'reports'}\n")
    return summary


def add_loop_command(subparsers: Any) -> None:
    """Add ``textclf loop`` (what ``make loop`` runs)."""
    from textclf.cli import REPO_ROOT, default_dataset_uri

    loop = subparsers.add_parser("loop", help="the closed loop, scripted: train, serve, drift, retrain, gate")
    loop.add_argument("--dataset-uri", default=default_dataset_uri(), help="AG News directory")
    loop.add_argument("--shift-dataset-uri", default=str(REPO_ROOT.parent / "shared" / "datasets" / "arxiv_cs"),
                      help="arXiv CS directory (out-of-domain traffic)")
    loop.add_argument("--runs-dir", type=Path, default=LoopConfig.runs_dir, help="replaced on every run")
    loop.set_defaults(func=cmd_loop)


def cmd_loop(args: Any) -> int:
    run_loop(LoopConfig(dataset_uri=args.dataset_uri, shift_dataset_uri=args.shift_dataset_uri,
                        runs_dir=args.runs_dir))
    return 0
