"""The KServe predictor: a text classifier (transformer on ONNX Runtime, classical model, or a cascade of the two)
with micro-batching, metrics and a request log; ``:explain`` answers occlusion attributions per token."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kserve
import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse

from textclf.serving import metrics
from textclf.serving.accounting import PredictionAccounting
from textclf.serving.batcher import MicroBatcher
from textclf.serving.bundle import fetch_bundle
from textclf.serving.codec import v1_response, v2_response
from textclf.serving.config import ServingConfig
from textclf.serving.explain import Explanation, check_explain_instances, explanations_v1_response
from textclf.serving.inputs import (
    InputLimits,
    ParsedRequest,
    RequestKind,
    ValidatedInPreprocess,
)
from textclf.serving.models import ServedModel, load_served_model
from textclf.serving.scores import ScoredBatch, ScoredText


@dataclass(frozen=True)
class ScoredRequest:
    """A request with its answers, on its way from ``predict`` to ``postprocess``.

    Attributes:
        request: The parsed request.
        scores: Probabilities (float32 ``[n, n_labels]``) and, for a cascade, the answering stages.
    """

    request: ParsedRequest
    scores: ScoredBatch

    @property
    def probabilities(self) -> np.ndarray:
        """float32 ``[n, n_labels]``."""
        return self.scores.probabilities


@dataclass(frozen=True)
class ExplainedRequest:
    """A request with its explanations, on its way from ``explain`` to ``postprocess``.

    Attributes:
        request: The parsed request.
        explanations: One per text.
    """

    request: ParsedRequest
    explanations: list[Explanation]


class TextClassifierPredictor(PredictionAccounting, ValidatedInPreprocess, kserve.Model):
    """Serves a transformer bundle's ONNX model, a classical bundle or a cascade bundle (:func:`load_served_model`)
    over KServe V1/V2 REST and V2 gRPC.

    Requests are validated in ``preprocess``, scored in ``predict`` through a :class:`MicroBatcher` (concurrent
    requests share model runs, grouped by token length) and formatted in ``postprocess``, which also records the
    Prometheus metrics and the request log (:class:`PredictionAccounting`: request id, user key, latency).

    ``:explain`` requests (V1 only, as in KServe) go through the same ``preprocess``, then ``explain`` (occlusion,
    :mod:`textclf.serving.explain`) and ``postprocess``, which formats them without recording metrics or the request
    log (they are not predictions; KServe's own ``request_explain_seconds`` histogram times them). Explanations cost
    ``n + 1`` model rows per text of ``n`` tokens, so they bypass the micro-batcher and run one request at a time in
    a thread of their own: the event loop keeps serving, and predictions keep their batching worker.

    Args:
        config: Serving configuration.
    """

    def __init__(self, config: ServingConfig):
        super().__init__(config.model_name, return_response_headers=True)
        self.config = config
        self.limits = InputLimits(config.max_instances, config.max_text_bytes)
        self.served: ServedModel | None = None
        self.model_version = ""
        self._batcher: MicroBatcher[str, ScoredText] | None = None
        self._explainer: ThreadPoolExecutor | None = None

    def load(self) -> bool:
        """Fetch the bundle (an ``s3://`` / ``gs://`` ``model_dir`` is downloaded into ``model_cache_dir``, once),
        load its model(s) (for a transformer: tokenizer and ONNX model), warm them up, open the request log.

        Returns:
            ``True``: the model is ready (KServe reports ready only from here on).

        Raises:
            textclf.serving.bundle.BundleError: The bundle cannot be fetched, is missing files or is incompatible.
        """
        return self.use(load_served_model(
            fetch_bundle(self.config.model_dir, self.config.model_cache_dir), self.config.precision,
            self.config.intra_op_threads, self.config.max_batch_size, self.config.warmup_batches,
            self.config.cascade_stage,
        ))

    def use(self, served: ServedModel) -> bool:
        """Serve ``served`` (already loaded and warmed up): start the micro-batcher, open the request log.

        Args:
            served: The model (:func:`load_served_model`, or a stand-in such as the benchmark's no-op model).

        Returns:
            ``True``: the model is ready.
        """
        self.served = served
        self.model_version = served.model_version
        self._batcher = MicroBatcher(
            self.served.score, self.config.max_batch_size, self.config.max_wait_ms,
            on_batch=lambda size: metrics.observe_batch(self.name, size),
        )
        self._explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        self.start_accounting()
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Stop the batching worker and the explanation thread, and flush the request log."""
        if self._batcher is not None:
            self._batcher.close()
        if self._explainer is not None:
            self._explainer.shutdown(wait=False, cancel_futures=True)
            self._explainer = None
        self.stop_accounting()
        self.ready = False

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> ParsedRequest:
        """Validate the request (limits, types, UTF-8).

        Args:
            payload: Decoded V1 JSON body or V2 ``InferRequest``.
            headers: Request headers (the request id and the user key).

        Returns:
            The parsed request.

        Raises:
            kserve.errors.InvalidInput: The request is malformed or breaks a limit (HTTP 400 / INVALID_ARGUMENT).
        """
        return self.parse(payload, headers)

    async def predict(
        self, payload: ParsedRequest, headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> ScoredRequest:
        """Score the request's texts in the next micro-batch.

        Args:
            payload: The parsed request.
            headers: Request headers (unused).
            response_headers: Response headers (unused).

        Returns:
            The request with its answers.
        """
        assert self._batcher is not None, "predict called before load"
        with self.failures_counted():
            rows = await self._batcher.submit(payload.texts)
        return ScoredRequest(payload, ScoredBatch.stack(rows))

    async def explain(self, payload: ParsedRequest, headers: dict[str, str] | None = None) -> ExplainedRequest:
        """Explain the request's texts by occlusion (:mod:`textclf.serving.explain`), in the explanation thread.

        Args:
            payload: The parsed request (``preprocess`` applied predict's checks).
            headers: Request headers (unused).

        Returns:
            The request with one explanation per text.

        Raises:
            kserve.errors.InvalidInput: More than ``max_explain_instances`` texts, or a text with more than
                ``max_explain_tokens`` tokens (HTTP 400).
            NotImplementedError: The served model cannot explain (HTTP 501).
        """
        assert self.served is not None and self._explainer is not None, "explain called before load"
        if self.served.explain is None:
            raise NotImplementedError(f"model {self.name!r} has no explanations")
        check_explain_instances(len(payload.texts), self.config.max_explain_instances)
        explanations = await asyncio.get_running_loop().run_in_executor(
            self._explainer, self.served.explain, payload.texts, self.config.max_explain_tokens
        )
        return ExplainedRequest(payload, explanations)

    async def postprocess(
        self, result: ScoredRequest | ExplainedRequest, headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Format the response in the request's protocol; for predictions, record metrics and the request log.

        Args:
            result: The scored request, or (``:explain``) the explained one.
            headers: Request headers (unused).
            response_headers: Response headers (``x-request-id`` is set).

        Returns:
            V1 ``{"predictions": [...], "model_version": ..., "request_id": ...}`` or a V2 ``InferResponse`` (its
            ``id`` the request id); for ``:explain`` ``{"explanations": [...], "model_version": ...}``.
        """
        assert self.served is not None, "postprocess called before load"
        if isinstance(result, ExplainedRequest):
            return explanations_v1_response(result.explanations, self.served.labels, self.model_version)
        scores, names, request = result.scores, self.served.labels, result.request
        self.account(request, scores.probabilities, names, self.model_version, scores.stages, response_headers)
        if request.kind is RequestKind.V1:
            return v1_response(scores.probabilities, names, self.model_version, scores.stages, scores.deferred,
                               request.request_id)
        return v2_response(scores.probabilities, names, self.name, self.model_version, result.request.request_id,
                           scores.stages, scores.deferred)
