"""Error analysis of the evaluate stage's test predictions: the most confused class pairs (with example texts),
accuracy by text length and by confidence (a reliability diagram), and the most confident mistakes.

Everything is computed from the test rows and their uncalibrated probabilities; :func:`error_analysis` returns a
JSON-ready record (``metrics.json``'s ``error_analysis``) and :func:`analysis_html` the report's section.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Texts shown per confused pair, and mistakes listed.
EXAMPLES_PER_PAIR, CONFIDENT_MISTAKES = 3, 10
#: Confused pairs listed, confidence bins of the reliability diagram, length buckets (quantiles of word counts).
CONFUSED_PAIRS, CONFIDENCE_BINS, LENGTH_BUCKETS = 5, 10, 4
#: Characters of a text shown in a report.
SNIPPET = 200


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = CONFIDENCE_BINS) -> list[dict]:
    """Per equal-width confidence bin: its edges, row count, mean confidence and accuracy."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        chosen = index == b
        count = int(chosen.sum())
        out.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                    "confidence": float(confidence[chosen].mean()) if count else (b + 0.5) / bins,
                    "accuracy": float(correct[chosen].mean()) if count else 0.0})
    return out


def prediction_bins(predictions: pd.DataFrame, bins: int = CONFIDENCE_BINS) -> list[dict]:
    """:func:`reliability_bins` of the evaluate stage's ``predictions.parquet`` (``correct``, ``p_<label>``)."""
    confidence = predictions[[c for c in predictions.columns if c.startswith("p_")]].to_numpy().max(axis=1)
    return reliability_bins(confidence, predictions["correct"].to_numpy(), bins)


def reliability_png(bins: Sequence[Mapping[str, Any]]) -> bytes:
    """Accuracy against confidence per bin (``{"confidence", "accuracy", "count"}``), the diagonal for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 4), dpi=100)
    used = [b for b in bins if b["count"]]
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.bar([b["confidence"] for b in used], [b["accuracy"] for b in used], width=1 / max(len(bins), 1),
             alpha=0.7, edgecolor="black")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title("Reliability (test, uncalibrated)")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _length_buckets(words: np.ndarray, correct: np.ndarray, buckets: int) -> list[dict]:
    """Accuracy per word-count bucket; the edges are quantiles of the test lengths (equal-count buckets)."""
    edges = np.unique(np.quantile(words, np.linspace(0, 1, buckets + 1)).round().astype(int))
    out = []
    for i, (low, high) in enumerate(itertools.pairwise(edges)):
        last = i == len(edges) - 2
        chosen = (words >= low) & ((words <= high) if last else (words < high))
        if chosen.any():
            out.append({"words_low": int(low), "words_high": int(high if last else high - 1),
                        "rows": int(chosen.sum()), "accuracy": float(correct[chosen].mean())})
    return out


def error_analysis(test: pd.DataFrame, label_ids: np.ndarray, probabilities: np.ndarray,
                   labels: Sequence[str]) -> dict[str, Any]:
    """The error analysis of test rows (``row``, ``text``) given their true class ids and probabilities.

    Returns:
        ``confused_pairs`` (true -> predicted, count, share of the true class, the most confident examples),
        ``by_length`` (accuracy per word-count bucket), ``by_confidence`` (reliability bins) and
        ``confident_mistakes`` (the wrong predictions with the highest confidence).
    """
    predicted = probabilities.argmax(-1)
    confidence = probabilities.max(-1)
    correct = predicted == label_ids
    texts, rows = test["text"].tolist(), test["row"].to_numpy()
    wrong = np.flatnonzero(~correct)

    def example(i: int) -> dict[str, Any]:
        return {"row": int(rows[i]), "text": texts[i][:SNIPPET], "true": labels[label_ids[i]],
                "predicted": labels[predicted[i]], "confidence": float(confidence[i])}

    pairs: dict[tuple[int, int], list[int]] = {}
    for i in wrong:
        pairs.setdefault((int(label_ids[i]), int(predicted[i])), []).append(int(i))
    confused = []
    for (true, guess), members in sorted(pairs.items(), key=lambda item: (-len(item[1]), item[0]))[:CONFUSED_PAIRS]:
        members.sort(key=lambda i: -confidence[i])
        confused.append({"true": labels[true], "predicted": labels[guess], "count": len(members),
                         "share_of_true_class": len(members) / max(int((label_ids == true).sum()), 1),
                         "examples": [example(i) for i in members[:EXAMPLES_PER_PAIR]]})
    words = np.array([len(t.split()) for t in texts])
    mistakes = sorted(wrong, key=lambda i: -confidence[i])[:CONFIDENT_MISTAKES]
    return {"confused_pairs": confused, "by_length": _length_buckets(words, correct, LENGTH_BUCKETS),
            "by_confidence": reliability_bins(confidence, correct), "errors": int(len(wrong)),
            "confident_mistakes": [example(i) for i in mistakes]}


def analysis_html(analysis: Mapping[str, Any]) -> str:
    """The report's "Error analysis" section, with the reliability diagram inline."""
    def cell(value: Any) -> str:
        return f"<td>{html.escape(str(value))}</td>"

    def row(*values: Any, last: str = "") -> str:
        return "<tr>" + "".join(cell(v) for v in values) + last + "</tr>"

    def examples(pair: Mapping[str, Any]) -> str:
        return "<br/>".join(f"{html.escape(e['text'])} <i>({e['confidence']:.2f})</i>" for e in pair["examples"])

    pairs = "".join(
        row(p["true"], p["predicted"], p["count"], format(p["share_of_true_class"], ".2%"),
            last=f"<td>{examples(p)}</td>") for p in analysis["confused_pairs"])
    lengths = "".join(row(f"{b['words_low']}-{b['words_high']}", b["rows"], format(b["accuracy"], ".4f"))
                      for b in analysis["by_length"])
    confidence = "".join(row(f"{b['low']:.1f}-{b['high']:.1f}", b["count"], format(b["confidence"], ".3f"),
                             format(b["accuracy"], ".4f")) for b in analysis["by_confidence"] if b["count"])
    mistakes = "".join(row(m["row"], m["true"], m["predicted"], format(m["confidence"], ".3f"), m["text"])
                       for m in analysis["confident_mistakes"])
    image = base64.b64encode(reliability_png(analysis["by_confidence"])).decode()
    return f"""<h2>Error analysis</h2>
<p>{analysis['errors']:,} test rows wrong.</p>
<h3>Most confused pairs</h3>
<table><tr><th>true</th><th>predicted</th><th>rows</th><th>of the true class</th><th>most confident examples
(confidence)</th></tr>{pairs}</table>
<h3>Accuracy by text length (words; equal-count buckets)</h3>
<table><tr><th>words</th><th>rows</th><th>accuracy</th></tr>{lengths}</table>
<h3>Accuracy by confidence</h3>
<img alt="reliability diagram" src="data:image/png;base64,{image}">
<table><tr><th>confidence</th><th>rows</th><th>mean confidence</th><th>accuracy</th></tr>{confidence}</table>
<h3>Most confident mistakes</h3>
<table><tr><th>row</th><th>true</th><th>predicted</th><th>confidence</th><th>text</th></tr>{mistakes}</table>"""
