"""Starting the server: ``serve(config)`` loads the model and runs KServe's ModelServer (blocking)."""

from __future__ import annotations

import logging
from http import HTTPStatus

import kserve
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.model_server import app as kserve_rest_app
from kserve.predictor_config import PredictorConfig

from textclf.serving.config import ServingConfig

#: KServe logs one line per request (timings, access log); at hundreds of requests/s that is real CPU time.
_PER_REQUEST_LOGGERS = ("kserve.trace", "uvicorn.access")


async def request_validation_error_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """Answer a V2 body that FastAPI could not parse (invalid JSON, wrong structure) with 400, like KServe answers
    every other client mistake, instead of FastAPI's 422.

    Args:
        _request: The request (unused).
        exc: FastAPI's validation error.

    Returns:
        HTTP 400 with ``{"error": "invalid request body: <where>: <what>; ..."}``.
    """
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}" for error in exc.errors()
    )
    return JSONResponse(status_code=HTTPStatus.BAD_REQUEST, content={"error": f"invalid request body: {problems}"})


class SageMakerRoutes:
    """ASGI middleware giving the server SageMaker's container contract on top of KServe's routes:
    ``GET /ping`` answers as ``/v2/health/ready`` (200 once loaded and warmed up) and ``POST /invocations`` as
    ``/v1/models/{name}:predict`` (same body, same answer, same 400s). Every other path passes through unchanged.

    Args:
        app: The wrapped ASGI app.
        model_name: The served model's name.
    """

    def __init__(self, app, model_name: str):  # noqa: ANN001 - any ASGI app
        self.app = app
        self.aliases = {"/ping": "/v2/health/ready", "/invocations": f"/v1/models/{model_name}:predict"}

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - the ASGI signature
        if scope["type"] == "http" and scope["path"] in self.aliases:
            target = self.aliases[scope["path"]]
            scope = {**scope, "path": target, "raw_path": target.encode("ascii")}
        await self.app(scope, receive, send)


def build_model(config: ServingConfig) -> kserve.Model:
    """The ONNX predictor, or the Triton transformer when ``config.predictor_host`` is set; loaded and warmed up.

    Args:
        config: Serving configuration.

    Returns:
        The ready model.

    Raises:
        textclf.serving.bundle.BundleError: The bundle is missing files or incompatible.
    """
    if config.predictor_host is not None:
        from textclf.serving.transformer import TritonTextTransformer

        model: kserve.Model = TritonTextTransformer(config)
    else:
        from textclf.serving.predictor import TextClassifierPredictor

        model = TextClassifierPredictor(config)
    model.load()
    return model


def build_model_server(config: ServingConfig) -> kserve.ModelServer:
    """KServe's ModelServer on the configured ports (and, for the transformer, pointing at Triton).

    Args:
        config: Serving configuration.

    Returns:
        The (not yet started) server.
    """
    predictor_config = None
    if config.predictor_host is not None:
        predictor_config = PredictorConfig(predictor_host=config.predictor_host,
                                           predictor_protocol=config.predictor_protocol)
    return kserve.ModelServer(
        http_port=config.http_port, grpc_port=config.grpc_port, enable_grpc=config.enable_grpc, workers=1,
        enable_latency_logging=False, predictor_config=predictor_config,
    )


def serve(config: ServingConfig) -> None:
    """Load, warm up and serve the export bundle until SIGTERM/SIGINT.

    The model reports ready (``/v2/health/ready``, ``/v1/models/{name}``) only once it is loaded and warmed up:
    the ports open after that. SageMaker's ``/ping`` and ``/invocations`` are aliases of the V2 readiness and V1
    predict routes (:class:`SageMakerRoutes`).

    Args:
        config: Serving configuration.

    Raises:
        textclf.serving.bundle.BundleError: The bundle is missing files or incompatible (raised before any port
            is opened).
    """
    model = build_model(config)
    server = build_model_server(config)
    kserve_rest_app.add_exception_handler(RequestValidationError, request_validation_error_handler)
    kserve_rest_app.add_middleware(SageMakerRoutes, model_name=config.model_name)
    for name in _PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        server.start([model])
    finally:
        model.stop()
