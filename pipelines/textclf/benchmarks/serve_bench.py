"""``make bench-serve``: throughput and latency of the KServe ONNX predictor against a Hugging Face baseline.

Three servers run one after another on loopback, all on KServe's ModelServer and the same trained model: our ONNX
predictor (INT8 and fp32, micro-batching) and :mod:`textclf.benchmarks.hf_baseline_server` (transformers/PyTorch
fp32, one request at a time, as KServe's HF runtime). For each server a load client in a separate process sends
real AG News test texts as single-text V1 requests at each concurrency for a fixed time and reports throughput,
p50/p95/p99 latency and errors.

Before the servers start, the same ONNX models run without HTTP (:func:`measure_model_alone`): one text at a time
and in length-sorted batches of 32, on the same 2 cores. That is the ceiling no server on this machine can pass, and
the JSON reports it beside the server numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import socket
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

from textclf.provenance import git_commit, package_versions, write_json

LOOPBACK = "127.0.0.1"
CONCURRENCIES = (1, 8, 32)
MODEL_NAME = "textclf"
#: Requests sent before timing starts (connection set-up, allocator warm-up).
WARMUP_REQUESTS = 20
TEST_TEXTS = 2000
READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server under test.

    Attributes:
        name: Key in the results.
        command: Command line; ``{port}`` is replaced by the HTTP port.
    """

    name: str
    command: tuple[str, ...]


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def server_specs(model_dir: Path, onnx_dir: Path) -> list[ServerSpec]:
    """The servers compared: ONNX INT8, ONNX fp32 and the PyTorch baseline.

    Args:
        model_dir: Train stage output (for the baseline).
        onnx_dir: Export bundle (for the ONNX predictor).

    Returns:
        One spec per server.
    """
    ours = (sys.executable, "-m", "textclf.serving", "--model-dir", str(onnx_dir), "--model-name", MODEL_NAME,
            "--http-port", "{port}", "--no-grpc")
    return [
        ServerSpec("onnx-int8", (*ours, "--precision", "int8")),
        ServerSpec("onnx-fp32", (*ours, "--precision", "fp32")),
        ServerSpec("hf-pytorch-fp32", (sys.executable, "-m", "textclf.benchmarks.hf_baseline_server",
                                       "--model-dir", str(model_dir), "--http-port", "{port}")),
    ]


def load_test_texts(dataset_dir: Path, limit: int = TEST_TEXTS) -> list[str]:
    """Real AG News test texts (title and description joined by a space, as ingest does).

    Args:
        dataset_dir: Directory with ``test.csv.gz``.
        limit: Most texts returned (the file's first rows).

    Returns:
        The texts.
    """
    from textclf.ingest.ingest import read_split_texts

    return read_split_texts(dataset_dir, "test")["text"].head(limit).tolist()


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
    command = [part.replace("{port}", str(port)) for part in spec.command]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(process, f"http://{LOOPBACK}:{port}/v1/models/{MODEL_NAME}")
            yield f"http://{LOOPBACK}:{port}/v1/models/{MODEL_NAME}:predict"
        finally:
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


def measure_model_alone(onnx_dir: Path, texts: list[str], precision: str, seconds: float) -> dict[str, Any]:
    """Texts/s of the ONNX model with no server: the serving engine (same session options, tokenisation and length
    grouping as the predictor), single texts, then windows of 32 consecutive texts as the micro-batcher sees them.

    Args:
        onnx_dir: Export bundle.
        texts: Texts, used in order.
        precision: ``int8`` or ``fp32``.
        seconds: Time spent on each of the two measurements.

    Returns:
        ``single_text_ms`` (mean latency of one text), ``single_texts_per_s`` and ``batch32_texts_per_s``.
    """
    from textclf.serving.bundle import load_bundle
    from textclf.serving.config import Precision, ServingConfig
    from textclf.serving.engine import OnnxTextClassifier

    # Built as the predictor builds it, with the predictor's defaults (class attributes of the config).
    classifier = OnnxTextClassifier.from_bundle(
        load_bundle(onnx_dir), Precision(precision), ServingConfig.intra_op_threads, ServingConfig.max_batch_size,
        ServingConfig.warmup_batches,
    )

    return texts_per_second(classifier.probabilities, texts, seconds)


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


def summarise(servers: dict[str, dict[str, Any]], model_alone: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers against the targets (ours >= 4x the baseline and >= 300 req/s at concurrency 32, p50 <= 10 ms
    at concurrency 1, no errors), and how close the INT8 server comes to its model's own ceiling.

    Args:
        servers: Server name -> concurrency (as str) -> measurement.
        model_alone: :func:`measure_model_alone` of the INT8 model.

    Returns:
        Speed-ups, the share of the no-HTTP ceiling reached, and target checks for the INT8 predictor.
    """
    ours, baseline = servers["onnx-int8"], servers["hf-pytorch-fp32"]
    top = str(max(CONCURRENCIES))
    speedup = ours[top]["throughput_rps"] / max(baseline[top]["throughput_rps"], 1e-9)
    errors = sum(run["errors"] for runs in servers.values() for run in runs.values())
    p50 = ours[str(min(CONCURRENCIES))]["latency_ms"]["p50"]
    return {
        f"int8_speedup_over_baseline_at_c{top}": speedup,
        f"int8_share_of_model_alone_batch32_at_c{top}": ours[top]["throughput_rps"]
        / model_alone["batch32_texts_per_s"],
        "targets": {
            f"int8_speedup_at_c{top}_ge_4x": speedup >= 4.0,
            f"int8_throughput_at_c{top}_ge_300_rps": ours[top]["throughput_rps"] >= 300.0,
            "int8_p50_at_c1_le_10ms": p50 is not None and p50 <= 10.0,
            "zero_errors": errors == 0,
        },
    }


def run_serve_benchmark(
    model_dir: Path, onnx_dir: Path, output: Path, seconds: float, dataset_dir: Path | None = None,
    concurrencies: tuple[int, ...] = CONCURRENCIES,
) -> dict[str, Any]:
    """Benchmark every server at every concurrency and write the JSON to ``output``.

    Args:
        model_dir: Train stage output (the baseline serves it with transformers).
        onnx_dir: Export bundle of the same model (our predictor serves it).
        output: JSON file to write (server logs go beside it).
        seconds: Timed duration of each (server, concurrency) run.
        dataset_dir: AG News directory with ``test.csv.gz`` (default: ``../shared/datasets/ag_news`` beside the
            repository).
        concurrencies: Concurrency levels.

    Returns:
        The written results.
    """
    dataset_dir = dataset_dir or Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "ag_news"
    texts = load_test_texts(dataset_dir)
    model_alone = {precision: measure_model_alone(Path(onnx_dir), texts, precision, min(seconds, 10.0))
                   for precision in ("int8", "fp32")}
    servers: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as load_client:
        for spec in server_specs(Path(model_dir), Path(onnx_dir)):
            with running_server(spec, output.parent / f"{output.stem}.{spec.name}.log") as url:
                servers[spec.name] = {
                    str(concurrency): load_client.submit(measure_load, url, texts, concurrency, seconds).result()
                    for concurrency in concurrencies
                }
    result = {
        "benchmark": "bench-serve",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "request": "one text per V1 request, AG News test texts in file order",
        "seconds_per_run": seconds,
        "model_alone_no_http": model_alone,
        "servers": servers,
        "git_commit": git_commit(),
        "package_versions": package_versions(),
    }
    if {"onnx-int8", "hf-pytorch-fp32"} <= servers.keys() and set(CONCURRENCIES) <= set(concurrencies):
        result["summary"] = summarise(servers, model_alone["int8"])
    write_json(output, result)
    return result
