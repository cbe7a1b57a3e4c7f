"""KServe transformer for the GPU path: tokenises here, a Triton predictor runs the model.

``preprocess`` turns a V1 or V2 text request into a V2 ``InferRequest`` with INT64 ``input_ids`` and
``attention_mask`` (the same normalisation, tokenisation and truncation as :mod:`textclf.serving.engine`, from
:mod:`textclf.serving.codec`); KServe's ``Model.predict`` sends it to the Triton predictor at ``predictor_host``
(V2 REST or gRPC); ``postprocess`` turns Triton's ``logits`` into the same V1/V2 responses as the ONNX predictor,
with the bundle's calibration temperature applied the same way (``softmax(logits / T)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kserve
import numpy as np
from kserve.errors import InferenceError
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from textclf.serving.accounting import PredictionAccounting
from textclf.serving.bundle import BundleError, BundleKind, ExportBundle, bundle_kind, fetch_bundle, load_bundle
from textclf.serving.codec import pad, softmax, tokenise, v1_response, v2_response
from textclf.serving.config import ServingConfig
from textclf.serving.contract import LOGITS
from textclf.serving.inputs import (
    InputLimits,
    ParsedRequest,
    RequestKind,
    ValidatedInPreprocess,
)


@dataclass(frozen=True)
class TritonRequest:
    """A request on its way to Triton, and back.

    Attributes:
        request: The parsed client request (kept for formatting the response).
        infer_request: The tokenised V2 request sent to Triton.
    """

    request: ParsedRequest
    infer_request: InferRequest


@dataclass(frozen=True)
class TritonResult:
    """Triton's answer for one request.

    Attributes:
        request: The parsed client request.
        response: Triton's V2 response (with ``logits``).
    """

    request: ParsedRequest
    response: InferResponse


def int64_input(name: str, array: np.ndarray) -> InferInput:
    """A V2 INT64 input tensor.

    Args:
        name: Tensor name.
        array: int64 array.

    Returns:
        The ``InferInput`` (data inline, valid for REST JSON and gRPC).
    """
    tensor = InferInput(name, shape=list(array.shape), datatype="INT64")
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


class TritonTextTransformer(PredictionAccounting, ValidatedInPreprocess, kserve.Model):
    """Tokenising front of a Triton predictor serving the exported model.

    The Triton address and protocol come from KServe's ``PredictorConfig`` (``ModelServer(predictor_config=...)``,
    or ``--predictor_host``/``--predictor_protocol`` on a KServe transformer container).

    Args:
        config: Serving configuration (bundle directory, model name, input limits).
    """

    def __init__(self, config: ServingConfig):
        super().__init__(config.model_name, return_response_headers=True)
        self.config = config
        self.limits = InputLimits(config.max_instances, config.max_text_bytes)
        self.bundle: ExportBundle | None = None
        self._tokenizer = None

    def load(self) -> bool:
        """Fetch the bundle (an ``s3://`` / ``gs://`` ``model_dir`` is downloaded into ``model_cache_dir``, once) and
        read its labels and tokenizer (the ONNX files are not needed here).

        Returns:
            ``True``.

        Raises:
            textclf.serving.bundle.BundleError: The bundle cannot be fetched, is missing files or is incompatible, or
                is a classical or cascade bundle (Triton serves one transformer's ONNX graph).
        """
        root = fetch_bundle(self.config.model_dir, self.config.model_cache_dir)
        kind = bundle_kind(root)
        if kind is not BundleKind.TRANSFORMER:
            raise BundleError(f"{root}: a {kind.value} bundle cannot be served through Triton (--predictor-host): "
                              "Triton runs one transformer bundle; serve this one without --predictor-host")
        self.bundle = load_bundle(root)
        self._tokenizer = self.bundle.load_tokenizer()
        self.start_accounting()
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Flush and close the request log."""
        self.stop_accounting()
        self.ready = False

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> TritonRequest:
        """Validate the request and tokenise its texts into Triton's V2 input tensors.

        Args:
            payload: Decoded V1 JSON body or V2 ``InferRequest``.
            headers: Request headers (unused).

        Returns:
            The parsed request and the V2 ``InferRequest`` for Triton.

        Raises:
            kserve.errors.InvalidInput: The request is malformed or breaks a limit.
        """
        assert self._tokenizer is not None and self.bundle is not None, "preprocess called before load"
        request = self.parse(payload, headers)
        batch = pad(tokenise(self._tokenizer, request.texts, self.bundle.text_profile))
        infer_request = InferRequest(
            model_name=self.name, request_id=request.request_id,
            infer_inputs=[int64_input(name, array) for name, array in batch.feeds().items()],
        )
        return TritonRequest(request, infer_request)

    async def predict(
        self, payload: TritonRequest, headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> TritonResult:
        """Send the tokenised request to Triton (KServe's V2 REST or gRPC client).

        Args:
            payload: The request for Triton.
            headers: Request headers (tracing and authorisation headers are forwarded).
            response_headers: Filled with Triton's response headers (REST).

        Returns:
            Triton's response with the client request.
        """
        with self.failures_counted():
            response = await super().predict(payload.infer_request, headers, response_headers)
        return TritonResult(payload.request, response)

    async def postprocess(
        self, result: TritonResult, headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Turn Triton's logits into the client's V1 or V2 response (probabilities ``softmax(logits / T)``, ``T`` the
        bundle's calibration temperature).

        Args:
            result: Triton's response with the client request.
            headers: Request headers (unused).
            response_headers: Response headers (unused).

        Returns:
            V1 ``{"predictions": [...], "model_version": ...}`` or a V2 ``InferResponse``.

        Raises:
            kserve.errors.InferenceError: Triton's response has no ``logits`` output.
        """
        assert self.bundle is not None, "postprocess called before load"
        with self.failures_counted():
            logits_output = result.response.get_output_by_name(LOGITS)
            if logits_output is None:
                raise InferenceError(f"predictor response has no {LOGITS!r} output")
            logits = logits_output.as_numpy().reshape(len(result.request.texts), -1)
        probabilities = softmax(logits, self.bundle.temperature)
        model_version = result.response.model_version or self.bundle.git_commit[:12]
        request = result.request
        self.account(request, probabilities, self.bundle.labels, model_version, response_headers=response_headers)
        if request.kind is RequestKind.V1:
            return v1_response(probabilities, self.bundle.labels, model_version, request_id=request.request_id)
        return v2_response(probabilities, self.bundle.labels, self.name, model_version, request.request_id)
