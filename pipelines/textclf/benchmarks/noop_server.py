"""``python -m textclf.benchmarks.noop_server``: our server with the model taken out, the HTTP ceiling of bench-serve.

The same command line, KServe ModelServer, request parsing and limits, micro-batcher, response formatting, metrics
and (if asked) request log as ``python -m textclf.serving``; only the model is replaced by one that answers every
text with uniform probabilities at no cost. Its throughput is what the server itself can carry on this machine: a
served model can come close to it, never pass it. Reads only the bundle's labels (no ONNX file is loaded).
"""

from __future__ import annotations

import sys

import numpy as np

from textclf.serving.bundle import BundleKind, fetch_bundle
from textclf.serving.models import ServedModel, bundle_labels
from textclf.serving.scores import ScoredText
from textclf.serving.predictor import TextClassifierPredictor

#: The no-op model's version string in responses.
NOOP_VERSION = "noop"


def noop_model(labels: tuple[str, ...]) -> ServedModel:
    """A served model answering uniform probabilities over ``labels`` for every text, instantly."""
    row = np.full(len(labels), 1.0 / len(labels), dtype=np.float32)

    def score(texts: list[str]) -> list[ScoredText]:
        return [ScoredText(row) for _ in texts]

    return ServedModel(BundleKind.TRANSFORMER, labels, NOOP_VERSION, score)


class NoOpPredictor(TextClassifierPredictor):
    """:class:`TextClassifierPredictor` serving :func:`noop_model` with the labels of ``config.model_dir``."""

    def load(self) -> bool:
        return self.use(noop_model(bundle_labels(fetch_bundle(self.config.model_dir, self.config.model_cache_dir))))


def main(argv: list[str] | None = None) -> None:
    """Parse ``python -m textclf.serving``'s command line and serve the no-op model (blocking)."""
    from textclf.serving.__main__ import build_parser, parse_command_line
    from textclf.serving.server import serve

    config, options = parse_command_line(build_parser(), sys.argv[1:] if argv is None else argv)
    serve(config, options, NoOpPredictor(config))


if __name__ == "__main__":
    main()
