"""``make bench-reliability``: the model server and the drift monitor under sustained load, faults and hostile input.

Everything runs on 127.0.0.1 against real processes: ``python -m textclf.serving`` on an export bundle (default: the
newest ``make run``), ``textclf monitor`` on its request log, the registry on local disk, the server fetching its
bundle from S3. Three parts, each written to the JSON when it ends (a killed run resumes with the parts not yet done,
as long as its settings are the same):

- ``soak``: ``clients`` concurrent clients send single-text V1 requests back to back for ``soak_seconds``; per minute:
  requests, errors, p50/p99 latency and the server's RSS (``/proc/<pid>/status``). Targets: 0 errors, RSS growth
  < 5% from minute 2 to the last minute, the last minute's p99 within 20% of minute 2's.
- ``faults``: ``kill -9`` of the server under load, then a restart on the same request log (every line parses; the
  service answers again; a monitor restarted on its state counts every logged prediction exactly once); the monitor
  process killed mid-window and restarted (nothing lost, nothing counted twice); concurrent registry writers in
  separate processes (no lost or torn version, one production); a truncated and a bit-flipped ONNX file (refused at
  load by sha256); the object store unreachable when the server fetches its bundle (retried, then a clear error).
- ``fuzz``: :func:`textclf.benchmarks.fuzz.fuzz_server` with ``fuzz_examples`` cases per OpenAPI operation and mode and
  per body route. Target: >= 1,000 requests per endpoint that has that many distinct inputs, 0 answers >= 500 (KServe's
  deliberate 501 to a ``model_version`` is counted apart), and the server still serving.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textclf.benchmarks.machine import machine_info
from textclf.benchmarks.serve_bench import MODEL_NAME, stop_process, wait_until_ready
from textclf.ports import LOOPBACK, free_port
from textclf.provenance import git_commit, package_versions, read_json, write_json
from textclf.serving.contract import INT8_ONNX_FILE, METADATA_FILE

PARTS = ("faults", "fuzz", "soak")
#: Targets (issue 17).
TARGET_RSS_GROWTH = 0.05
TARGET_P99_DRIFT = 0.20
TARGET_FUZZ_REQUESTS = 1000
#: Monitor window used by the fault cases (small, so that the log holds several windows).
MONITOR_WINDOW = 200


@dataclass
class Server:
    """A running ``python -m textclf.serving``."""

    process: subprocess.Popen
    http: str
    log_path: Path

    @property
    def predict_url(self) -> str:
        return f"{self.http}/v1/models/{MODEL_NAME}:predict"


def server_command(model_dir: str | Path, http_port: int, request_log: Path | None) -> list[str]:
    """``python -m textclf.serving`` on ``model_dir`` (INT8), its arguments from :meth:`ServingConfig.to_args`."""
    from textclf.serving.config import Precision, ServingConfig

    config = ServingConfig(model_dir=str(model_dir), model_name=MODEL_NAME, precision=Precision.INT8,
                           http_port=http_port, grpc_port=free_port(), request_log=request_log)
    return [sys.executable, "-m", "textclf.serving", *config.to_args()]


@contextmanager
def running_server(model_dir: str | Path, work: Path, name: str, request_log: Path | None = None) -> Iterator[Server]:
    """Start the server on a free loopback port, wait until ready, stop it (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    log_path = work / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(server_command(model_dir, port, request_log), stdout=log, stderr=subprocess.STDOUT)
        server = Server(process, f"http://{LOOPBACK}:{port}", log_path)
        try:
            wait_until_ready(process, f"{server.http}/v2/health/ready")
            yield server
        finally:
            stop_process(process)


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``), None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- load -------------------------------------------------------------------------------------------------------


async def _timed_load(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, list]:
    import aiohttp

    next_text = itertools.cycle(texts).__next__
    started_at: list[float] = []
    latencies: list[float] = []
    ok: list[bool] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as session:
        origin = time.perf_counter()
        stop_at = origin + seconds

        async def worker() -> None:
            while (now := time.perf_counter()) < stop_at:
                try:
                    async with session.post(url, json={"instances": [next_text()]}) as response:
                        await response.read()
                        success = response.status == 200
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    success = False
                    await asyncio.sleep(0.05)  # a dead server: do not spin
                started_at.append(now - origin)
                latencies.append(time.perf_counter() - now)
                ok.append(success)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return {"started_s": started_at, "latency_s": latencies, "ok": ok}


def timed_load(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, list]:
    """Closed-loop load (runs in a load-client process): every request's start (s from the start), latency, success."""
    return asyncio.run(_timed_load(url, texts, clients, seconds))


def _load_client() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def per_minute(load: dict[str, list], rss: list[tuple[float, float]], minute_s: float) -> list[dict[str, Any]]:
    """Requests, errors, p50/p99 latency (ms, successful requests) and the last RSS sample per ``minute_s`` bucket."""
    started = np.asarray(load["started_s"])
    latency = np.asarray(load["latency_s"]) * 1000.0
    ok = np.asarray(load["ok"], dtype=bool)
    buckets = int(np.ceil(started.max() / minute_s)) if len(started) else 0
    rows = []
    for index in range(buckets):
        inside = (started >= index * minute_s) & (started < (index + 1) * minute_s)
        good = latency[inside & ok]
        samples = [value for at, value in rss if index * minute_s <= at < (index + 1) * minute_s]
        rows.append({
            "minute": index + 1, "requests": int(inside.sum()), "errors": int((inside & ~ok).sum()),
            "p50_ms": float(np.percentile(good, 50)) if len(good) else None,
            "p99_ms": float(np.percentile(good, 99)) if len(good) else None,
            "rss_mb": samples[-1] if samples else None,
        })
    return rows


def soak(bundle: Path, texts: list[str], work: Path, clients: int, seconds: float,
         minute_s: float = 60.0) -> dict[str, Any]:
    """The server under ``clients`` concurrent clients for ``seconds`` (see the module docstring)."""
    with running_server(bundle, work, "soak-server", work / "soak-requests.jsonl") as server, _load_client() as pool:
        pid = server.process.pid
        future = pool.submit(timed_load, server.predict_url, texts, clients, seconds)
        origin = time.perf_counter()
        rss: list[tuple[float, float]] = []
        while not future.done():
            value = rss_mb(pid)
            if value is not None:
                rss.append((time.perf_counter() - origin, value))
            time.sleep(min(5.0, minute_s / 6))
        load = future.result()
        alive = server.process.poll() is None
    minutes = per_minute(load, rss, minute_s)
    second, last = (minutes[1], minutes[-1]) if len(minutes) >= 3 else (None, None)
    growth = (last["rss_mb"] / second["rss_mb"] - 1) if second and second["rss_mb"] and last["rss_mb"] else None
    p99_drift = (last["p99_ms"] / second["p99_ms"] - 1) if second and second["p99_ms"] and last["p99_ms"] else None
    errors = sum(row["errors"] for row in minutes)
    return {
        "clients": clients, "seconds": seconds, "minute_s": minute_s, "requests": len(load["ok"]), "errors": errors,
        "throughput_rps": len(load["ok"]) / seconds, "server_alive_after": alive, "minutes": minutes,
        "rss_growth_minute2_to_last": growth, "p99_change_minute2_to_last": p99_drift,
        "targets": {"zero_errors": errors == 0,
                    "rss_growth_below_5pct": growth is not None and growth < TARGET_RSS_GROWTH,
                    "p99_stable_within_20pct": p99_drift is not None and abs(p99_drift) <= TARGET_P99_DRIFT},
    }


# --- faults -----------------------------------------------------------------------------------------------------


def log_lines(path: Path) -> dict[str, int]:
    """Lines of a request log (rotated copies included) that parse as records, and those that do not."""
    from textclf.monitor.tailer import rotated_files
    from textclf.serving.request_log import RequestRecord, RequestRecordError

    valid = torn = 0
    for file in rotated_files(path):
        for line in file.read_bytes().splitlines():
            try:
                RequestRecord.from_json(line)
                valid += 1
            except RequestRecordError:
                torn += 1
    return {"valid": valid, "unparseable": torn}


def send(url: str, texts: list[str], count: int | None = None, start: int = 0) -> int:
    """Send ``count`` texts (default: each once) from ``start`` on, one after another, going round ``texts`` as
    needed; the number answered 200."""
    import httpx

    chosen = itertools.islice(itertools.cycle(texts), start, start + (len(texts) if count is None else count))
    with httpx.Client(timeout=30) as client:
        return sum(client.post(url, json={"instances": [text]}).status_code == 200 for text in chosen)


def monitor_command(request_log: Path, reference: Path, state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "textclf.cli", "monitor", "--request-log", str(request_log),
            "--reference", str(reference), "--state-dir", str(state_dir), "--window-size", str(MONITOR_WINDOW),
            "--min-window-size", str(MONITOR_WINDOW // 2), "--poll-seconds", "0.5", "--no-html",
            "--metrics-port", str(free_port()), "--metrics-host", LOOPBACK]


def monitor_counts(state_dir: Path) -> dict[str, int]:
    """What the monitor's state says it has read, checked and stored."""
    import sqlite3

    from textclf.monitor.service import STATE_FILE
    from textclf.monitor.store import STORE_FILE

    state = read_json(state_dir / STATE_FILE)
    with sqlite3.connect(state_dir / STORE_FILE) as db:
        stored = db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    return {"rows_read": state["rows_read"], "pending": len(state["pending"]), "checks": state["checks"],
            "stored_predictions": stored, "malformed_lines": state["malformed_lines"]}


def wait_for(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001 - any zero-argument predicate
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _monitor_read(state_dir: Path, rows: int) -> bool:
    """The monitor has read ``rows`` rows and checked every full window of them (its state is saved after each
    check, so a state with a full window pending is one seen mid-poll)."""
    import sqlite3

    try:
        counts = monitor_counts(state_dir)
    except (OSError, KeyError, ValueError, sqlite3.Error):
        return False
    return counts["rows_read"] >= rows and counts["pending"] < MONITOR_WINDOW


def server_killed_under_load(bundle: Path, texts: list[str], reference: Path, work: Path,
                             load_seconds: float = 12.0, kill_after_s: float = 6.0) -> dict[str, Any]:
    """kill -9 of the server under load, a restart on the same request log, and the monitor following both."""
    request_log = work / "kill-requests.jsonl"
    state_dir = work / "kill-monitor"
    monitor = subprocess.Popen(monitor_command(request_log, reference, state_dir),
                               stdout=(work / "kill-monitor.log").open("ab"), stderr=subprocess.STDOUT)
    try:
        with running_server(bundle, work, "kill-server", request_log) as server, _load_client() as pool:
            future = pool.submit(timed_load, server.predict_url, texts, 8, load_seconds)
            time.sleep(kill_after_s)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=30)
            load = future.result()
        after_kill = log_lines(request_log)
        answered_before = int(sum(load["ok"]))
        with running_server(bundle, work, "kill-server-restarted", request_log) as server:
            answered_after = send(server.predict_url, texts, MONITOR_WINDOW)
        lines = log_lines(request_log)
        wait_for(lambda: _monitor_read(state_dir, lines["valid"]), 120, "the monitor to read the whole log")
        counts = monitor_counts(state_dir)
    finally:
        stop_process(monitor)
    return {
        "requests_answered_before_kill": answered_before,
        "requests_failed_by_the_kill": len(load["ok"]) - answered_before,
        "log_after_kill": after_kill, "answered_after_restart": answered_after, "log_after_restart": lines,
        "monitor": counts,
        # Every answered request is logged (the writer thread may lose the last few queued records to kill -9).
        "logged_share_of_answered": after_kill["valid"] / max(answered_before, 1),
        "passed": (lines["unparseable"] == 0 and answered_after == MONITOR_WINDOW
                   and counts["rows_read"] == counts["stored_predictions"] == lines["valid"]),
    }


def monitor_killed_mid_window(bundle: Path, texts: list[str], reference: Path, work: Path) -> dict[str, Any]:
    """The monitor process killed while a window is half full, then restarted: nothing lost or counted twice."""
    request_log = work / "monitor-requests.jsonl"
    state_dir = work / "killed-monitor"
    half = MONITOR_WINDOW + MONITOR_WINDOW // 2
    with running_server(bundle, work, "monitor-server", request_log) as server:
        send(server.predict_url, texts, half)
        wait_for(lambda: log_lines(request_log)["valid"] >= half, 60, "the request log")
        monitor = subprocess.Popen(monitor_command(request_log, reference, state_dir),
                                   stdout=(work / "killed-monitor.log").open("ab"), stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _monitor_read(state_dir, half), 120, "the monitor's first read")
            before = monitor_counts(state_dir)
            monitor.send_signal(signal.SIGKILL)
            monitor.wait(timeout=30)
        finally:
            stop_process(monitor)
        send(server.predict_url, texts, half, start=half)
    lines = log_lines(request_log)
    monitor = subprocess.Popen(monitor_command(request_log, reference, state_dir),
                               stdout=(work / "killed-monitor.log").open("ab"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _monitor_read(state_dir, lines["valid"]), 120, "the restarted monitor to catch up")
        after = monitor_counts(state_dir)
    finally:
        stop_process(monitor)
    return {
        "killed_with": before, "after_restart": after, "log": lines,
        "passed": (before["pending"] > 0 and after["rows_read"] == after["stored_predictions"] == lines["valid"]
                   and after["checks"] == lines["valid"] // MONITOR_WINDOW
                   and after["pending"] == lines["valid"] % MONITOR_WINDOW),
    }


def _register(root: str, dirs: Any, results: Any) -> None:
    """Body of a writer process: its own registry client, one registration, then a promotion of that version."""
    from textclf.registry.registry import ModelRegistry
    from textclf.storage import Store

    try:
        store = Store(root)
        registry = ModelRegistry(store.root, store=store)
        version = registry.register(dirs)
        registry.promote(version)
        results.put(version)
    except BaseException as exc:  # reported by the parent
        results.put(f"error: {exc!r}")


def registry_concurrent_writers(artifacts: dict[str, Path], work: Path, writers: int = 4) -> dict[str, Any]:
    """``writers`` processes register the same run's artifacts and promote their version at the same time."""
    from textclf.provenance import sha256_file
    from textclf.registry.metadata import ArtifactDirs
    from textclf.registry.registry import PRODUCTION, VERSIONS, ModelRegistry
    from textclf.storage import Store

    root = work / "registry"
    shutil.rmtree(root, ignore_errors=True)
    dirs = ArtifactDirs(**artifacts)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    started = time.perf_counter()
    processes = [context.Process(target=_register, args=(str(root), dirs, results)) for _ in range(writers)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=600) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    seconds = time.perf_counter() - started
    store = Store(str(root))
    registry = ModelRegistry(store.root, store=store)
    listed = registry.list_versions()
    index = registry.index()
    source = sha256_file(dirs.onnx_model / INT8_ONNX_FILE)
    intact = [sha256_file(root / VERSIONS / row["version"] / "onnx_model" / INT8_ONNX_FILE) == source
              for row in listed] if (root / VERSIONS).is_dir() else []
    return {
        "writers": writers, "seconds": seconds, "outcomes": outcomes,
        "versions": [row["version"] for row in listed], "history": len(index.get("history", [])),
        "production": index.get("production"), "intact_copies": sum(intact),
        "passed": (not any(str(o).startswith("error") for o in outcomes) and len(set(outcomes)) == writers
                   and [row["version"] for row in listed] == outcomes and len(index.get("history", [])) == writers
                   and [row["status"] for row in listed].count(PRODUCTION) == 1 and sum(intact) == writers),
    }


def _refused_at_start(command: list[str], log_path: Path, env: dict[str, str] | None = None,
                      timeout_s: float = 300.0) -> dict[str, Any]:
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s,
                                 check=False)
    text = log_path.read_text(errors="replace")
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    return {"exit_code": process.returncode, "seconds": time.perf_counter() - started,
            "error": errors[-1][:400] if errors else text[-400:]}


def corrupted_model_files(bundle: Path, work: Path) -> dict[str, Any]:
    """The server started on a bundle whose INT8 file is truncated, and on one with a flipped bit."""
    cases = {}
    for case in ("truncated", "bit_flipped"):
        copy = work / f"bundle-{case}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(bundle, copy)
        onnx = copy / INT8_ONNX_FILE
        data = bytearray(onnx.read_bytes())
        if case == "truncated":
            data = data[: len(data) // 2]
        else:
            data[len(data) // 3] ^= 0x10
        onnx.write_bytes(bytes(data))
        result = _refused_at_start(server_command(copy, free_port(), None), work / f"{case}-server.log")
        result["passed"] = result["exit_code"] != 0 and f"recorded in {METADATA_FILE}" in result["error"]
        cases[case] = result
        shutil.rmtree(copy)
    return cases


def object_store_unreachable(work: Path) -> dict[str, Any]:
    """The server fetching its bundle from S3 while nothing listens at the endpoint: retried, then a clear error."""
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{free_port()}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
    result = _refused_at_start(server_command("s3://textclf-models/bundle", free_port(), None),
                               work / "unreachable-store-server.log", env=env)
    result["passed"] = result["exit_code"] != 0 and "attempts" in result["error"]
    return result


def faults(bundle: Path, artifacts: dict[str, Path], texts: list[str], reference: Path, work: Path) -> dict[str, Any]:
    cases = {
        "server_kill9_under_load": server_killed_under_load(bundle, texts, reference, work),
        "monitor_kill9_mid_window": monitor_killed_mid_window(bundle, texts, reference, work),
        "registry_concurrent_writer_processes": registry_concurrent_writers(artifacts, work),
        "corrupted_model_file": corrupted_model_files(bundle, work),
        "object_store_unreachable": object_store_unreachable(work),
    }
    cases["corrupted_model_file"]["passed"] = all(c["passed"] for c in cases["corrupted_model_file"].values())
    return {"cases": cases, "passed": all(case["passed"] for case in cases.values())}


# --- fuzz -------------------------------------------------------------------------------------------------------


def fuzz(bundle: Path, work: Path, examples: int) -> dict[str, Any]:
    from textclf.benchmarks.fuzz import fuzz_server

    with running_server(bundle, work, "fuzz-server", work / "fuzz-requests.jsonl") as server:
        started = time.perf_counter()
        endpoints = fuzz_server(server.http, MODEL_NAME, examples)
        seconds = time.perf_counter() - started
        still_serving = server.process.poll() is None and send(server.predict_url, ["Stocks fell on Monday"]) == 1
    bad = sorted(name for name, result in endpoints.items() if result["responses_5xx"] or result["transport_errors"])
    # Hypothesis stops early when an operation has fewer distinct inputs (a GET without parameters has two).
    short = {name: result["requests"] for name, result in sorted(endpoints.items())
             if result["requests"] < TARGET_FUZZ_REQUESTS}
    return {
        "examples": examples, "seconds": seconds, "requests": sum(r["requests"] for r in endpoints.values()),
        "endpoints": endpoints, "endpoints_with_5xx_or_dropped": bad,
        "endpoints_below_1000_requests": short, "still_serving": still_serving,
        "passed": not bad and still_serving,
    }


# --- the benchmark ----------------------------------------------------------------------------------------------


def run_reliability_benchmark(output: Path, work: Path, bundle: Path, model_dir: Path, evaluation_dir: Path,
                              splits_dir: Path, parts: tuple[str, ...] = PARTS, soak_seconds: float = 600.0,
                              soak_clients: int = 32, fuzz_examples: int = TARGET_FUZZ_REQUESTS,
                              minute_s: float = 60.0) -> dict[str, Any]:
    """Run the parts not yet in ``output`` (same settings) and write each to it as it ends.

    Args:
        output: The JSON.
        work: Scratch directory (request logs, server logs, the registry, the monitor's state).
        bundle: Export bundle served (``onnx_model`` of a run).
        model_dir: The run's train-stage output (registered by the registry writers).
        evaluation_dir: The run's evaluate-stage output.
        splits_dir: The run's splits (the monitor's reference is built from them; load texts are its test rows).
        parts: Parts to run.
        soak_seconds: Soak duration.
        soak_clients: Concurrent soak clients.
        fuzz_examples: Cases per OpenAPI operation and mode, and bodies per route.
        minute_s: The soak's reporting interval (60 s; shorter in tests).

    Returns:
        The JSON written.
    """
    import pandas as pd

    from textclf.monitor.reference import META_FILE, reference_from_splits, save_reference

    settings = {"bundle": str(bundle), "parts": list(parts), "soak_seconds": soak_seconds,
                "soak_clients": soak_clients, "fuzz_examples": fuzz_examples, "minute_s": minute_s}
    previous = read_json(output) if output.is_file() else {}
    result: dict[str, Any] = {"settings": settings, "parts": {}}
    if previous.get("settings") == settings:
        result["parts"] = previous.get("parts", {})
    result.update({"git_commit": git_commit(), "machine": machine_info(), "packages": package_versions()})
    work.mkdir(parents=True, exist_ok=True)
    texts = pd.read_parquet(splits_dir / "test.parquet")["text"].tolist()
    reference = work / "reference"
    if not (reference / META_FILE).is_file():
        save_reference(reference_from_splits(splits_dir, bundle, sample_size=1000, seed=0), reference)
    artifacts = {"model": model_dir, "onnx_model": bundle, "evaluation": evaluation_dir}
    for part in parts:
        if part in result["parts"]:
            continue
        started = time.perf_counter()
        if part == "soak":
            outcome = soak(bundle, texts, work, soak_clients, soak_seconds, minute_s)
        elif part == "faults":
            outcome = faults(bundle, artifacts, texts, reference, work)
        else:
            outcome = fuzz(bundle, work, fuzz_examples)
        outcome["wall_seconds"] = time.perf_counter() - started
        result["parts"][part] = outcome
        write_json(output, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textclf.benchmarks.reliability_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="where latest.json names the run whose artifacts are used (make run)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--soak-clients", type=int, default=32)
    parser.add_argument("--fuzz-examples", type=int, default=TARGET_FUZZ_REQUESTS)
    parser.add_argument("--output", type=Path, default=Path("runs/bench/bench_reliability.json"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/reliability"))
    args = parser.parse_args(argv)
    from textclf.cli import latest_artifact
    from textclf.errors import TextclfError

    try:
        names = ("onnx_model", "model", "evaluation", "splits")
        bundle, model_dir, evaluation_dir, splits_dir = (latest_artifact(args.runs_dir, name) for name in names)
        result = run_reliability_benchmark(args.output, args.work_dir, bundle, model_dir, evaluation_dir, splits_dir,
                                           tuple(args.parts), args.soak_seconds, args.soak_clients,
                                           args.fuzz_examples)
    except TextclfError as exc:
        print(f"bench-reliability: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({part: outcome.get("passed", outcome.get("targets")) for part, outcome in
                      result["parts"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
