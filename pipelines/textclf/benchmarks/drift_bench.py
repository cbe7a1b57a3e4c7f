"""``make bench-drift``: detection rate on shifted windows, false-alarm rate on i.i.d. windows, seconds per check.

Setup (all predictions come from the real exported model, the INT8 ONNX file the server runs):

* Reference: :func:`textclf.monitor.reference.reference_from_splits` on the model's own training splits
  (validation rows first, then train rows; ``DriftConfig.reference_size`` rows) - what production uses.
* Pools: the whole AG News test set (7,600 rows, never trained on) and ``arxiv_rows`` arXiv CS abstracts
  (``title + " " + abstract`` from the arXiv test file), each predicted once and cached in ``cache_dir``.
* i.i.d. windows: ``n`` rows drawn at random from the AG News test pool (no drift: should not alarm).
* ``shifted`` windows (the headline): ``arxiv_share`` (30 %) arXiv abstracts plus AG News test rows drawn with a
  class-prior shift (World 10 %, Sports 10 %, Business 35 %, Sci/Tech 45 % by true label).
* Two milder shifts are reported for context: ``arxiv_10pct`` (10 % arXiv, balanced news) and ``prior_only``
  (the class-prior shift alone, no arXiv).
* Timing: checks of ``timing_rows``-row i.i.d. and shifted windows (statistics + Evidently report; the HTML
  rendering is timed separately), plus Evidently's *default* text drift on 400 rows for comparison.

Each rate comes with a 95 % Clopper-Pearson interval (50 windows only resolve rates to a few percent).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from textclf.monitor.config import DriftConfig
from textclf.monitor.detector import DriftDetector, describe_rule
from textclf.monitor.reference import (
    REFERENCE_FILE,
    Reference,
    load_reference,
    predict_with_bundle,
    reference_from_splits,
    save_reference,
)
from textclf.ingest.ingest import AG_NEWS_LABELS as AG_NEWS_CLASS_NAMES
from textclf.benchmarks.machine import machine_info
from textclf.provenance import git_commit, package_versions, read_json, write_json

log = logging.getLogger(__name__)

AG_NEWS_LABELS = tuple(AG_NEWS_CLASS_NAMES.values())
#: Class prior of the news part of a shifted window (by true label).
SHIFTED_PRIOR = {"World": 0.10, "Sports": 0.10, "Business": 0.35, "Sci/Tech": 0.45}
TARGETS = {"detection_rate_min_at_500": 0.95, "false_alarm_rate_max_at_500": 0.05, "seconds_per_check_max_at_5000": 5.0}


def _shared_datasets() -> Path:
    return Path(__file__).resolve().parents[3].parent / "shared" / "datasets"


def _predicted_pool(name: str, frame: pd.DataFrame, onnx_dir: Path, cache_dir: Path) -> tuple[pd.DataFrame, dict]:
    """``frame`` (text, true) with the model's ``label`` and ``confidence``, cached per model file."""
    from textclf.serving.bundle import load_bundle
    from textclf.serving.config import Precision

    version = load_bundle(onnx_dir).model_version(Precision.INT8)
    path = cache_dir / f"pool-{name}-{version}-{len(frame)}.parquet"
    timing_path = path.with_suffix(".json")
    if path.is_file() and timing_path.is_file():
        return pd.read_parquet(path), {"cached": True, **read_json(timing_path)}
    started = time.perf_counter()
    probabilities, labels, _ = predict_with_bundle(onnx_dir, frame["text"].tolist(), "int8")
    seconds = time.perf_counter() - started
    out = frame.assign(label=np.asarray(labels, dtype=object)[probabilities.argmax(1)],
                       confidence=probabilities.max(1))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(path, index=False)
    timing = {"prediction_seconds": seconds, "texts_per_second": len(frame) / seconds,
              "load_average": os.getloadavg()[0]}
    write_json(timing_path, timing)
    return out, {"cached": False, **timing}


def _reference(splits_dir: Path, onnx_dir: Path, config: DriftConfig, cache_dir: Path) -> Reference:
    from textclf.serving.bundle import load_bundle
    from textclf.serving.config import Precision

    version = load_bundle(onnx_dir).model_version(Precision.INT8)
    path = cache_dir / f"reference-{version}-{config.reference_size}-{config.seed}"
    if (path / REFERENCE_FILE).is_file():
        return load_reference(path)
    reference = reference_from_splits(splits_dir, onnx_dir, config.reference_size, config.seed)
    save_reference(reference, path)
    return reference


def load_pools(onnx_dir: Path, cache_dir: Path, ag_news_dir: Path, arxiv_dir: Path, arxiv_rows: int,
               seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The AG News test pool and the arXiv pool, with the model's predictions."""
    from textclf.ingest.ingest import read_split_texts

    news = read_split_texts(ag_news_dir, "test").rename(columns={"label": "true"})[["text", "true"]]
    arxiv = read_split_texts(arxiv_dir, "test")
    arxiv = arxiv.sample(n=min(arxiv_rows, len(arxiv)), random_state=seed)
    arxiv = pd.DataFrame({"text": arxiv["text"].to_numpy(), "true": "arXiv"})
    news, news_info = _predicted_pool("ag_news_test", news, onnx_dir, cache_dir)
    arxiv, arxiv_info = _predicted_pool("arxiv_cs_test", arxiv, onnx_dir, cache_dir)
    return news, arxiv, {"ag_news_test": {"rows": len(news), **news_info},
                         "arxiv_cs_test": {"rows": len(arxiv), **arxiv_info}}


def sample_window(kind: str, n: int, news: pd.DataFrame, arxiv: pd.DataFrame, rng: np.random.Generator,
                  arxiv_share: float) -> pd.DataFrame:
    """One window of scenario ``kind`` (``iid``, ``shifted``, ``arxiv_10pct``, ``prior_only``)."""
    def draw(frame: pd.DataFrame, k: int) -> pd.DataFrame:
        return frame.iloc[rng.choice(len(frame), size=k, replace=False)]

    if kind == "iid":
        return draw(news, n)
    share = {"shifted": arxiv_share, "arxiv_10pct": 0.10, "prior_only": 0.0}[kind]
    n_arxiv = int(round(n * share))
    prior = SHIFTED_PRIOR if kind in ("shifted", "prior_only") else {label: 0.25 for label in AG_NEWS_LABELS}
    counts = rng.multinomial(n - n_arxiv, [prior[label] for label in AG_NEWS_LABELS])
    parts = [draw(news[news["true"] == label], int(k)) for label, k in zip(AG_NEWS_LABELS, counts, strict=True)]
    parts.append(draw(arxiv, n_arxiv))
    return pd.concat(parts).sample(frac=1.0, random_state=int(rng.integers(2**31)))


def _rate(hits: int, total: int) -> dict[str, float]:
    interval = stats.binomtest(hits, total).proportion_ci(0.95, method="exact") if total else None
    return {"rate": hits / total if total else float("nan"), "hits": hits, "windows": total,
            "ci95_low": float(interval.low) if interval else float("nan"),
            "ci95_high": float(interval.high) if interval else float("nan")}


def run_scenario(detector: DriftDetector, kind: str, n: int, windows: int, news: pd.DataFrame, arxiv: pd.DataFrame,
                 rng: np.random.Generator, arxiv_share: float) -> dict[str, Any]:
    """``windows`` checks of scenario ``kind`` at ``n`` rows: alarm rate, per-signal rates, seconds."""
    alarms, seconds = 0, []
    per_signal: dict[str, int] = {s: 0 for s in detector.config.signals}
    min_p: dict[str, list[float]] = {s: [] for s in detector.config.signals}
    for _ in range(windows):
        result = detector.check(sample_window(kind, n, news, arxiv, rng, arxiv_share))
        alarms += result.drift_detected
        seconds.append(result.seconds)
        for signal in result.signals:
            per_signal[signal.name] += signal.drifted
            min_p[signal.name].append(signal.p_value)
    return {
        "alarm": _rate(alarms, windows),
        "per_signal_rate": {name: hits / windows for name, hits in per_signal.items()},
        "median_p_value": {name: float(np.median(values)) for name, values in min_p.items()},
        "seconds_per_check_mean": float(np.mean(seconds)),
        "seconds_per_check_max": float(np.max(seconds)),
    }


def time_checks(detector: DriftDetector, rows: int, repeats: int, news: pd.DataFrame, arxiv: pd.DataFrame,
                rng: np.random.Generator, arxiv_share: float, html_dir: Path) -> dict[str, Any]:
    """Seconds per check (and per HTML report) at ``rows`` rows, i.i.d. and shifted."""
    out: dict[str, Any] = {"rows": rows, "repeats": repeats}
    for kind in ("iid", "shifted"):
        check_seconds, html_seconds, detected = [], [], []
        for _ in range(repeats):
            pool = pd.concat([news] * int(np.ceil(rows / len(news)))) if kind == "iid" and rows > len(news) else news
            window = sample_window(kind, rows, pool, arxiv, rng, arxiv_share)
            result = detector.check(window)
            check_seconds.append(result.seconds)
            started = time.perf_counter()
            result.save(html_dir, stem=f"timing-{kind}")
            html_seconds.append(time.perf_counter() - started)
            detected.append(result.drift_detected)
        out[kind] = {"seconds_per_check_mean": float(np.mean(check_seconds)),
                     "seconds_per_check_max": float(np.max(check_seconds)),
                     "html_seconds_mean": float(np.mean(html_seconds)), "drift_detected": detected}
    return out


def time_evidently_default_text_drift(reference: Reference, news: pd.DataFrame, rows: int = 400) -> float:
    """Seconds of Evidently's default text-column drift (``DataDriftPreset()`` on a lone text column)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(text_columns=["text"])
    ref = Dataset.from_pandas(reference.frame[["text"]].sample(n=min(rows, reference.rows), random_state=0),
                              data_definition=definition)
    cur = Dataset.from_pandas(news[["text"]].sample(n=rows, random_state=1), data_definition=definition)
    started = time.perf_counter()
    Report([DataDriftPreset()]).run(cur, ref)
    return time.perf_counter() - started


def run_drift_benchmark(output: str | Path, onnx_dir: str | Path, splits_dir: str | Path,
                        window_sizes: Sequence[int] = (200, 500, 1000), windows: int = 50,
                        context_windows: int | None = None, timing_rows: int = 5000, timing_repeats: int = 3,
                        config: DriftConfig | None = None, arxiv_share: float = 0.3, arxiv_rows: int = 3000,
                        cache_dir: str | Path = "runs/bench/drift_cache", ag_news_dir: str | Path | None = None,
                        arxiv_dir: str | Path | None = None, seed: int = 42) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and write its JSON to ``output``.

    Args:
        output: The JSON file.
        onnx_dir: Export bundle of the model whose predictions are monitored.
        splits_dir: The validate-stage output that model was trained on (for the reference).
        window_sizes: Window sizes to measure.
        windows: Windows per size for the i.i.d. and ``shifted`` scenarios (>= 50 for the targets).
        context_windows: Windows per size for the two milder shifts (default ``windows // 2``; 0 skips them).
        timing_rows: Window size of the timing run.
        timing_repeats: Checks per timing scenario.
        config: Drift settings (default :class:`DriftConfig`).
        arxiv_share: Share of arXiv abstracts in a ``shifted`` window.
        arxiv_rows: arXiv abstracts predicted for the pool.
        cache_dir: Cache of predictions and of the reference.
        ag_news_dir: AG News directory (default ``../shared/datasets/ag_news``).
        arxiv_dir: arXiv CS directory (default ``../shared/datasets/arxiv_cs``).
        seed: Window sampling seed.

    Returns:
        The JSON payload.
    """
    config = config or DriftConfig()
    load_at_start = os.getloadavg()
    onnx_dir, splits_dir, cache_dir = Path(onnx_dir), Path(splits_dir), Path(cache_dir)
    ag_news_dir = Path(ag_news_dir) if ag_news_dir else _shared_datasets() / "ag_news"
    arxiv_dir = Path(arxiv_dir) if arxiv_dir else _shared_datasets() / "arxiv_cs"
    context_windows = windows // 2 if context_windows is None else context_windows
    started = time.perf_counter()
    reference = _reference(splits_dir, onnx_dir, config, cache_dir)
    news, arxiv, pools = load_pools(onnx_dir, cache_dir, ag_news_dir, arxiv_dir, arxiv_rows, seed)
    detector = DriftDetector(reference, config)
    detector.check(sample_window("iid", config.min_window_size, news, arxiv, np.random.default_rng(0), arxiv_share))
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {}
    for n in window_sizes:
        scenarios = {"iid": windows, "shifted": windows}
        if context_windows:
            scenarios.update({"arxiv_10pct": context_windows, "prior_only": context_windows})
        results[str(n)] = {}
        for kind, count in scenarios.items():
            log.info("bench-drift: %d windows of %d rows, %s", count, n, kind)
            results[str(n)][kind] = run_scenario(detector, kind, n, count, news, arxiv, rng, arxiv_share)
    timing = time_checks(detector, timing_rows, timing_repeats, news, arxiv, rng, arxiv_share,
                         Path(output).parent / "bench_drift_reports")
    evidently_default = time_evidently_default_text_drift(reference, news)
    summary = {str(n): {"false_alarm_rate": results[str(n)]["iid"]["alarm"]["rate"],
                        "detection_rate": results[str(n)]["shifted"]["alarm"]["rate"],
                        "seconds_per_check": results[str(n)]["shifted"]["seconds_per_check_mean"]}
               for n in window_sizes}
    timing_worst = max(timing["iid"]["seconds_per_check_mean"], timing["shifted"]["seconds_per_check_mean"])
    targets = dict(TARGETS)
    if "500" in summary:
        targets["met"] = bool(summary["500"]["detection_rate"] >= TARGETS["detection_rate_min_at_500"]
                              and summary["500"]["false_alarm_rate"] <= TARGETS["false_alarm_rate_max_at_500"]
                              and timing_worst <= TARGETS["seconds_per_check_max_at_5000"])
    inference = pools["ag_news_test"].get("texts_per_second")
    payload = {
        "summary": summary,
        "targets": targets,
        "timing": timing,
        "evidently_default_text_drift_seconds_400_rows": evidently_default,
        "results": results,
        "decision_rule": describe_rule(config),
        "config": config.to_dict(),
        "scenarios": {"shifted": f"{arxiv_share:.0%} arXiv CS abstracts + AG News test rows with class prior "
                                 f"{SHIFTED_PRIOR}", "arxiv_10pct": "10% arXiv + balanced AG News test rows",
                      "prior_only": f"AG News test rows with class prior {SHIFTED_PRIOR}",
                      "iid": "random AG News test rows"},
        "model": {"onnx_dir": str(onnx_dir), "model_version": reference.model_version, "precision": "int8"},
        "reference": {k: v for k, v in reference.meta.items() if k != "package_versions"},
        "pools": pools,
        "embedding_drift": {
            "used": False,
            "why": "the request log has no embeddings and the exported ONNX model outputs only logits, so embedding "
                   "drift would re-run the transformer (with an extra pooled output) over every window: at the "
                   "measured inference rate that alone exceeds the 5 s budget at 5,000 rows, while the cheap "
                   "signals already reach the detection target",
            "model_texts_per_second": inference,
            "seconds_to_embed_timing_window": (timing_rows / inference) if inference else None,
        },
        "machine": {**machine_info(), "python": platform.python_version(),
                    "load_average_1_5_15_min_at_start": load_at_start,
                    "load_average_1_5_15_min_at_end": os.getloadavg(),
                    "note": "shared machine: other jobs ran during the benchmark; timings vary with the load"},
        "git_commit": git_commit(),
        "package_versions": package_versions(("textclf-pipelines", "evidently", "scikit-learn", "scipy", "pandas",
                                              "onnxruntime")),
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(output, payload)
    return payload
