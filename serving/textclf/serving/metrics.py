"""Prometheus metrics of the predictor, in prometheus_client's default registry (which KServe serves on
``/metrics`` next to its own request latency histograms)."""

from __future__ import annotations

import numpy as np
from prometheus_client import Counter, Histogram

BATCH_SIZE = Histogram(
    "textclf_batch_size", "Texts per micro-batch run by the model", ["model_name"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PREDICTIONS = Counter("textclf_predictions", "Predictions by predicted class", ["model_name", "label"])
CONFIDENCE = Histogram(
    "textclf_prediction_confidence", "Probability of the predicted class", ["model_name"],
    buckets=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
CASCADE_ANSWERS = Counter("textclf_cascade_answers", "Texts answered by each stage of a cascade",
                          ["model_name", "stage"])
#: Outcomes of :data:`REQUESTS`: answered, refused as the caller's fault (HTTP 400), failed in the server.
OUTCOMES = ("ok", "invalid_input", "error")
REQUESTS = Counter("textclf_requests", "Prediction requests by outcome (ok, invalid_input, error)",
                   ["model_name", "outcome"])
REQUEST_LATENCY = Histogram(
    "textclf_request_latency_seconds", "Server-side latency of answered prediction requests, from validation to the "
    "formatted response (queueing for the micro-batch included)", ["model_name"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe_batch(model_name: str, size: int) -> None:
    """Record one micro-batch.

    Args:
        model_name: Served model name.
        size: Texts in the batch.
    """
    BATCH_SIZE.labels(model_name=model_name).observe(size)


def observe_predictions(model_name: str, labels: list[str], probabilities: np.ndarray) -> None:
    """Record the predicted class and its probability of every text of a request.

    Args:
        model_name: Served model name.
        labels: Predicted class per text.
        probabilities: ``[n, n_labels]``.
    """
    confidence = CONFIDENCE.labels(model_name=model_name)
    for label, top in zip(labels, probabilities.max(axis=-1).tolist(), strict=True):
        PREDICTIONS.labels(model_name=model_name, label=label).inc()
        confidence.observe(top)


def observe_stages(model_name: str, stages: np.ndarray) -> None:
    """Count a cascade's answers per stage.

    Args:
        model_name: Served model name.
        stages: The answering stage (1 or 2) per text.
    """
    numbers, counts = np.unique(stages, return_counts=True)
    for number, count in zip(numbers.tolist(), counts.tolist(), strict=True):
        CASCADE_ANSWERS.labels(model_name=model_name, stage=str(number)).inc(count)


def observe_request(model_name: str, outcome: str, seconds: float | None = None) -> None:
    """Count one prediction request and, when answered, its latency.

    Args:
        model_name: Served model name.
        outcome: One of :data:`OUTCOMES`.
        seconds: Server-side latency of an answered request.
    """
    REQUESTS.labels(model_name=model_name, outcome=outcome).inc()
    if seconds is not None:
        REQUEST_LATENCY.labels(model_name=model_name).observe(seconds)


def init_requests(model_name: str) -> None:
    """Create the request counter of every outcome (at 0) for a served model."""
    for outcome in OUTCOMES:
        REQUESTS.labels(model_name=model_name, outcome=outcome)
