"""``make bench-serve``: throughput, latency and served accuracy of our KServe predictor against a Hugging Face
baseline, for the 6-layer transformer, a distilled student and confidence cascades, with the HTTP ceiling.

The servers run one after another on loopback, all on KServe's ModelServer: the no-op server (our server with the
model taken out, :mod:`textclf.benchmarks.noop_server`: the HTTP ceiling), our ONNX predictor on the 6-layer model
(INT8 and fp32, micro-batching), :mod:`textclf.benchmarks.hf_baseline_server` (transformers/PyTorch fp32, one
request at a time, as KServe's HF runtime), and when given, the student's INT8 bundle and each cascade bundle. For
each server a load client in a separate process sends real AG News test texts as single-text V1 requests at each
concurrency for a fixed time and reports throughput, p50/p95/p99 latency and errors; then it sends each of the
:data:`TEST_TEXTS` texts once and scores the answers against their labels (speed and accuracy measured on the same
server), with the share each cascade stage answered.

Before the servers start, the same models run without HTTP (:func:`measure_model_alone`): one text at a time and
in length-sorted batches of 32, on the same 2 cores. That is the ceiling no server on this machine can pass, and
the JSON reports it beside the server numbers, with the CPU model and the flags that decide speed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from textclf.benchmarks.machine import machine_info
from textclf.ports import LOOPBACK, free_port
from textclf.provenance import git_commit, package_versions, write_json

CONCURRENCIES = (1, 8, 32)
MODEL_NAME = "textclf"
#: Placeholder for the HTTP port in a :class:`ServerSpec` command; :func:`running_server` picks a free port.
PORT = "{port}"
#: Requests sent before timing starts (connection set-up, allocator warm-up).
WARMUP_REQUESTS = 20
TEST_TEXTS = 2000
READY_TIMEOUT_S = 300.0


#: Concurrency of the served-accuracy pass (each test text sent once).
ACCURACY_CONCURRENCY = 8
#: Targets of the student / cascade servers (issue: serving at 300 req/s on 2 cores).
TARGET_SPEEDUP_OVER_INT8 = 1.8
TARGET_SPEEDUP_OVER_BASELINE = 6.0
TARGET_RPS = 300.0
TARGET_ACCURACY_DROP = 0.003
TARGET_P50_MS = 5.0


@dataclass(frozen=True)
class BenchModels:
    """What bench-serve serves.

    Attributes:
        model_dir: The 6-layer transformer's train-stage output (the baseline serves it with transformers).
        onnx_dir: Its export bundle (our predictor; the no-op server reads its labels).
        student_dir: A distilled student's export bundle, or None.
        cascade_dirs: Cascade bundles (the cascade stage's output), each served as ``cascade-<directory name>``.
    """

    model_dir: Path
    onnx_dir: Path
    student_dir: Path | None = None
    cascade_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server under test.

    Attributes:
        name: Key in the results.
        command: Command line; :data:`PORT` is replaced by the HTTP port.
        bundle: The bundle it serves (for the no-HTTP ceiling), None for the baseline and the no-op server.
        candidate: A faster model measured against the 6-layer INT8 server's targets (student, cascade).
    """

    name: str
    command: tuple[str, ...]
    bundle: Path | None = None
    candidate: bool = False


def server_specs(models: BenchModels) -> list[ServerSpec]:
    """The servers compared: no-op (HTTP ceiling), ONNX INT8 and fp32 of the 6-layer model, the PyTorch baseline,
    then the student and the cascades when given.

    Args:
        models: What to serve.

    Returns:
        One spec per server.
    """

    from textclf.serving.config import ServingConfig

    def ours(bundle: Path, precision: str = "int8", module: str = "textclf.serving") -> tuple[str, ...]:
        config = ServingConfig(model_dir=str(bundle), model_name=MODEL_NAME, precision=precision, enable_grpc=False)
        return (sys.executable, "-m", module, *serving_args(config))

    specs = [
        ServerSpec("noop", ours(models.onnx_dir, module="textclf.benchmarks.noop_server")),
        ServerSpec("onnx-int8", ours(models.onnx_dir), models.onnx_dir),
        ServerSpec("onnx-fp32", ours(models.onnx_dir, "fp32"), models.onnx_dir),
        ServerSpec("hf-pytorch-fp32", (sys.executable, "-m", "textclf.benchmarks.hf_baseline_server",
                                       "--model-dir", str(models.model_dir), "--http-port", PORT)),
    ]
    if models.student_dir is not None:
        specs.append(ServerSpec("student-int8", ours(models.student_dir), models.student_dir, candidate=True))
    for cascade in models.cascade_dirs:
        specs.append(ServerSpec(f"cascade-{cascade.name}", ours(cascade), cascade, candidate=True))
    return specs


def serving_args(config: Any, fields: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``config.to_args(fields)`` (a :class:`textclf.serving.config.ServingConfig`: the serving package's one list of
    server arguments) with the HTTP port left as :data:`PORT`, which :func:`running_server` fills with a free one."""
    from textclf.serving.config import SERVER_FLAGS

    flag = SERVER_FLAGS["http_port"]
    return (*(arg for arg in config.to_args(fields) if not arg.startswith(f"{flag}=")), f"{flag}={PORT}")


def load_test_rows(dataset_dir: Path, limit: int = TEST_TEXTS) -> tuple[list[str], list[str]]:
    """Real AG News test texts (title and description joined by a space, as ingest does) and their class names.

    Args:
        dataset_dir: Directory with ``test.csv.gz``.
        limit: Most rows returned (the file's first rows).

    Returns:
        The texts and their labels.
    """
    from textclf.ingest.ingest import read_split_texts

    frame = read_split_texts(dataset_dir, "test").head(limit)
    return frame["text"].tolist(), [str(label) for label in frame["label"].tolist()]


def wait_until_ready(process: subprocess.Popen, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers 200.

    Args:
        process: The server process (its exit ends the wait).
        url: Readiness URL.
        timeout_s: Longest wait.

    Raises:
        RuntimeError: The server exited or did not become ready in time.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before becoming ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s")


@contextmanager
def running_server(spec: ServerSpec, log_path: Path) -> Iterator[str]:
    """Start a server, wait until its model is ready, stop it (SIGTERM, then SIGKILL) on exit.

    Args:
        spec: The server.
        log_path: File receiving the server's stdout and stderr.

    Yields:
        The V1 predict URL.
    """
    port = free_port()
    command = [part.replace(PORT, str(port)) for part in spec.command]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(process, f"http://{LOOPBACK}:{port}/v1/models/{MODEL_NAME}")
            yield f"http://{LOOPBACK}:{port}/v1/models/{MODEL_NAME}:predict"
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s; nothing when it has already exited."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


async def _drive_load(url: str, texts: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    next_text = itertools.cycle(texts).__next__
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> bool:
            async with session.post(url, json={"instances": [next_text()]}) as response:
                await response.read()
                return response.status == 200

        for _ in range(WARMUP_REQUESTS):
            await send()
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    ok = await send()
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    milliseconds = np.array(latencies) * 1000.0
    percentiles = np.percentile(milliseconds, [50, 95, 99]).tolist() if latencies else [None] * 3
    return {
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": len(latencies) / elapsed,
        "latency_ms": dict(zip(("p50", "p95", "p99"), percentiles, strict=True)),
    }


async def _served_answers(url: str, texts: list[str], concurrency: int) -> tuple[list[dict | None], int]:
    import aiohttp

    answers: list[dict | None] = [None] * len(texts)
    errors = 0
    queue = iter(range(len(texts)))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal errors
            for index in queue:
                try:
                    async with session.post(url, json={"instances": [texts[index]]}) as response:
                        body = await response.json() if response.status == 200 else None
                except aiohttp.ClientError:
                    body = None
                if body is None:
                    errors += 1
                else:
                    answers[index] = body["predictions"][0]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers, errors


def measure_served_accuracy(url: str, texts: list[str], labels: list[str],
                            concurrency: int = ACCURACY_CONCURRENCY) -> dict[str, Any]:
    """Send every text once (single-text V1 requests, ``concurrency`` in flight) and score the answers.

    Runs in the load-client process.

    Args:
        url: V1 predict URL.
        texts: The test texts.
        labels: Their true class names.
        concurrency: Requests in flight.

    Returns:
        ``texts``, ``accuracy`` (an unanswered text counts as wrong), ``errors`` and, when the answers name a
        cascade stage, ``stage_share`` (stage -> share of the answered texts) and ``accuracy_by_stage``.
    """
    answers, errors = asyncio.run(_served_answers(url, texts, concurrency))
    correct = [answer is not None and answer["label"] == label for answer, label in zip(answers, labels,
                                                                                         strict=True)]
    result: dict[str, Any] = {"texts": len(texts), "accuracy": sum(correct) / len(texts), "errors": errors}
    stages = [answer.get("stage") for answer in answers if answer is not None]
    if stages and all(stage is not None for stage in stages):
        by_stage: dict[str, list[bool]] = {}
        for answer, ok in zip(answers, correct, strict=True):
            if answer is not None:
                by_stage.setdefault(str(answer["stage"]), []).append(ok)
        result["stage_share"] = {stage: len(oks) / len(stages) for stage, oks in sorted(by_stage.items())}
        result["accuracy_by_stage"] = {stage: sum(oks) / len(oks) for stage, oks in sorted(by_stage.items())}
    return result


def measure_load(url: str, texts: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` clients each send single-text V1 requests back to back for ``seconds``.

    Runs in the load-client process (see :func:`run_serve_benchmark`).

    Args:
        url: V1 predict URL.
        texts: Texts sent in turn.
        concurrency: Requests in flight.
        seconds: Timed duration (after :data:`WARMUP_REQUESTS` untimed requests).

    Returns:
        Throughput (successful requests/s), p50/p95/p99 latency (ms) of successful requests and the error count.
    """
    return asyncio.run(_drive_load(url, texts, concurrency, seconds))


def measure_model_alone(bundle_dir: Path, texts: list[str], precision: str, seconds: float) -> dict[str, Any]:
    """Texts/s of a bundle's model with no server: built as the predictor builds it (same loader, session options,
    tokenisation, length grouping; a cascade runs both stages as the server does), single texts, then windows of 32
    consecutive texts as the micro-batcher sees them.

    Args:
        bundle_dir: Export, classical or cascade bundle.
        texts: Texts, used in order.
        precision: ``int8`` or ``fp32``.
        seconds: Time spent on each of the two measurements.

    Returns:
        ``single_text_ms`` (mean latency of one text), ``single_texts_per_s`` and ``batch32_texts_per_s``.
    """
    from textclf.serving.config import Precision, ServingConfig
    from textclf.serving.models import load_served_model

    # Built as the predictor builds it, with the predictor's defaults (class attributes of the config).
    served = load_served_model(bundle_dir, Precision(precision), ServingConfig.intra_op_threads,
                               ServingConfig.max_batch_size, ServingConfig.warmup_batches)
    return texts_per_second(served.score, texts, seconds)


def texts_per_second(predict: Any, texts: list[str], seconds: float) -> dict[str, float]:
    """Texts/s of ``predict`` (a callable on a list of texts) one text at a time, then on windows of 32 consecutive
    texts as the micro-batcher sees them, each for ``seconds``.

    Returns:
        ``single_text_ms`` (mean latency of one text), ``single_texts_per_s`` and ``batch32_texts_per_s``.
    """

    def rate(batch: int) -> float:
        done, started = 0, time.perf_counter()
        windows = itertools.cycle(range(0, len(texts) - batch + 1, batch))
        while time.perf_counter() - started < seconds:
            start = next(windows)
            predict(texts[start : start + batch])
            done += batch
        return done / (time.perf_counter() - started)

    single = rate(1)
    return {"single_text_ms": 1000.0 / single, "single_texts_per_s": single, "batch32_texts_per_s": rate(32)}


def _top(runs: dict[str, Any], concurrency: int) -> float:
    return runs[str(concurrency)]["throughput_rps"]


def summarise(servers: dict[str, dict[str, Any]], model_alone: dict[str, Any],
              accuracy: dict[str, dict[str, Any]] | None = None, candidates: tuple[str, ...] = ()) -> dict[str, Any]:
    """Headline numbers against the targets.

    The 6-layer INT8 server against the baseline and its model's own ceiling, as before; then each candidate
    (student, cascade) against the 6-layer INT8 server and the baseline measured in the same run: >= 1.8x and >= 6x
    their throughput at the top concurrency and >= 300 req/s there, served accuracy at most 0.3 points below the
    6-layer server's, p50 <= 5 ms at concurrency 1, no errors. ``best`` is the fastest candidate that keeps the
    accuracy (else the fastest). With the no-op server measured, each server's share of that HTTP ceiling.

    Args:
        servers: Server name -> concurrency (as str) -> measurement.
        model_alone: Server name -> :func:`measure_model_alone` of its bundle (``onnx-int8`` at least).
        accuracy: Server name -> :func:`measure_served_accuracy`.
        candidates: Names of the candidate servers.

    Returns:
        Speed-ups, shares of the ceilings and target checks.
    """
    ours, baseline = servers["onnx-int8"], servers["hf-pytorch-fp32"]
    top, low = max(CONCURRENCIES), min(CONCURRENCIES)
    speedup = _top(ours, top) / max(_top(baseline, top), 1e-9)
    errors = sum(run["errors"] for runs in servers.values() for run in runs.values())
    errors += sum(result["errors"] for result in (accuracy or {}).values())
    p50 = ours[str(low)]["latency_ms"]["p50"]
    summary: dict[str, Any] = {
        f"int8_speedup_over_baseline_at_c{top}": speedup,
        f"int8_share_of_model_alone_batch32_at_c{top}": _top(ours, top) / model_alone["onnx-int8"][
            "batch32_texts_per_s"],
        "targets": {
            f"int8_speedup_at_c{top}_ge_4x": speedup >= 4.0,
            f"int8_throughput_at_c{top}_ge_300_rps": _top(ours, top) >= 300.0,
            "int8_p50_at_c1_le_10ms": p50 is not None and p50 <= 10.0,
            "zero_errors": errors == 0,
        },
    }
    if "noop" in servers:
        ceiling = _top(servers["noop"], top)
        summary[f"http_ceiling_rps_at_c{top}"] = ceiling
        summary[f"share_of_http_ceiling_at_c{top}"] = {name: _top(runs, top) / ceiling
                                                       for name, runs in servers.items() if name != "noop"}
    reference = (accuracy or {}).get("onnx-int8", {}).get("accuracy")
    rows = {}
    for name in candidates:
        runs = servers[name]
        served = (accuracy or {}).get(name, {}).get("accuracy")
        drop = None if served is None or reference is None else reference - served
        candidate_p50 = runs[str(low)]["latency_ms"]["p50"]
        candidate_errors = sum(run["errors"] for run in runs.values()) + (accuracy or {}).get(name, {}).get(
            "errors", 0)
        row = {
            f"throughput_rps_at_c{top}": _top(runs, top),
            f"speedup_over_int8_at_c{top}": _top(runs, top) / max(_top(ours, top), 1e-9),
            f"speedup_over_baseline_at_c{top}": _top(runs, top) / max(_top(baseline, top), 1e-9),
            "served_accuracy": served,
            "accuracy_drop_vs_int8": drop,
            "p50_ms_at_c1": candidate_p50,
            "errors": candidate_errors,
        }
        if name in model_alone:
            row[f"share_of_model_alone_batch32_at_c{top}"] = _top(runs, top) / model_alone[name][
                "batch32_texts_per_s"]
        row["targets"] = {
            f"speedup_over_int8_ge_{TARGET_SPEEDUP_OVER_INT8}x": row[f"speedup_over_int8_at_c{top}"]
            >= TARGET_SPEEDUP_OVER_INT8,
            f"speedup_over_baseline_ge_{TARGET_SPEEDUP_OVER_BASELINE:g}x": row[f"speedup_over_baseline_at_c{top}"]
            >= TARGET_SPEEDUP_OVER_BASELINE,
            f"throughput_ge_{TARGET_RPS:g}_rps": _top(runs, top) >= TARGET_RPS,
            "accuracy_within_0.3_points": drop is not None and drop <= TARGET_ACCURACY_DROP + 1e-12,
            f"p50_at_c1_le_{TARGET_P50_MS:g}ms": candidate_p50 is not None and candidate_p50 <= TARGET_P50_MS,
            "zero_errors": candidate_errors == 0,
        }
        rows[name] = row
    if rows:
        keeping = [name for name, row in rows.items() if row["targets"]["accuracy_within_0.3_points"]]
        best = max(keeping or rows, key=lambda name: rows[name][f"throughput_rps_at_c{top}"])
        summary["candidates"] = rows
        summary["best"] = {"server": best, "keeps_accuracy": best in keeping,
                           "all_targets_met": all(rows[best]["targets"].values())}
    return summary


def run_serve_benchmark(
    models: BenchModels, output: Path, seconds: float, dataset_dir: Path | None = None,
    concurrencies: tuple[int, ...] = CONCURRENCIES, accuracy_texts: int = TEST_TEXTS,
) -> dict[str, Any]:
    """Benchmark every server at every concurrency, measure its served accuracy, write the JSON to ``output``.

    Args:
        models: What to serve (the 6-layer model, and optionally a student and cascades).
        output: JSON file to write (server logs go beside it).
        seconds: Timed duration of each (server, concurrency) run.
        dataset_dir: AG News directory with ``test.csv.gz`` (default: ``../shared/datasets/ag_news`` beside the
            repository).
        concurrencies: Concurrency levels.
        accuracy_texts: Test texts sent once each for the served accuracy (0: skip it).

    Returns:
        The written results.
    """
    dataset_dir = dataset_dir or Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "ag_news"
    texts, labels = load_test_rows(dataset_dir, max(TEST_TEXTS, accuracy_texts))
    specs = server_specs(models)
    load_at_start = os.getloadavg()
    model_alone = {"onnx-fp32": measure_model_alone(models.onnx_dir, texts, "fp32", min(seconds, 10.0))}
    for spec in specs:
        if spec.bundle is not None and spec.name != "onnx-fp32":
            model_alone[spec.name] = measure_model_alone(spec.bundle, texts, "int8", min(seconds, 10.0))
    servers: dict[str, dict[str, Any]] = {}
    accuracy: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as load_client:
        for spec in specs:
            with running_server(spec, output.parent / f"{output.stem}.{spec.name}.log") as url:
                servers[spec.name] = {
                    str(concurrency): load_client.submit(measure_load, url, texts, concurrency, seconds).result()
                    for concurrency in concurrencies
                }
                if accuracy_texts and spec.name != "noop":
                    accuracy[spec.name] = load_client.submit(
                        measure_served_accuracy, url, texts[:accuracy_texts], labels[:accuracy_texts]
                    ).result()
    result = {
        "benchmark": "bench-serve",
        "machine": {**machine_info(), "load_average_1_5_15_min_at_start": load_at_start,
                    "load_average_1_5_15_min_at_end": os.getloadavg()},
        "request": "one text per V1 request, AG News test texts in file order",
        "settings": {"seconds_per_run": seconds, "concurrencies": list(concurrencies),
                     "accuracy_texts": accuracy_texts, "accuracy_concurrency": ACCURACY_CONCURRENCY,
                     "models": {"model_dir": str(models.model_dir), "onnx_dir": str(models.onnx_dir),
                                "student_dir": str(models.student_dir) if models.student_dir else None,
                                "cascade_dirs": [str(path) for path in models.cascade_dirs]}},
        "seconds_per_run": seconds,
        "model_alone_no_http": model_alone,
        "servers": servers,
        "served_accuracy": accuracy,
        "git_commit": git_commit(),
        "package_versions": package_versions(),
    }
    if {"onnx-int8", "hf-pytorch-fp32"} <= servers.keys() and set(CONCURRENCIES) <= set(concurrencies):
        result["summary"] = summarise(servers, model_alone, accuracy,
                                      tuple(spec.name for spec in specs if spec.candidate))
    write_json(output, result)
    return result
