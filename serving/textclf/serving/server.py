"""Starting the server: ``serve(config, options)`` loads the model and runs KServe's ModelServer (blocking)."""

from __future__ import annotations

import argparse
import logging
from http import HTTPStatus

import kserve
import kserve.model_server
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from kserve.model_server import app as kserve_rest_app
from kserve.predictor_config import PredictorConfig
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from textclf.serving.config import ServingConfig

#: KServe logs one line per request (timings, access log); at hundreds of requests/s that is real CPU time, so they
#: are quiet unless ``--enable_latency_logging=true`` or a ``--log_config_file`` asks for them.
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


class NoModelControl(ModelRepositoryExtension):
    """KServe's V2 model-repository extension with model control off, as Triton's default
    (``--model-control-mode=none``): the index still lists the served model, and ``load``/``unload`` (REST
    ``POST /v2/repository/models/{name}/load|unload``, gRPC ``RepositoryModelLoad|Unload``) are refused with 400 /
    ``INVALID_ARGUMENT``.

    This server serves one model from its bundle. With KServe's default extension one unauthenticated request unloads
    it while ``/v2/health/ready`` still answers 200, so Kubernetes keeps routing traffic to a pod that answers 404 to
    every prediction (found by the fuzzer, tests/test_fuzz.py). A new model is a new revision of the
    InferenceService, never a call on the data plane.
    """

    @staticmethod
    def refusal(action: str, model_name: str) -> InvalidInput:
        return InvalidInput(f"model control is disabled on this server: cannot {action} {model_name!r}; it serves "
                            "one model from its bundle (roll out a new InferenceService revision to change it)")

    async def load(self, model_name: str) -> None:
        raise self.refusal("load", model_name)

    async def unload(self, model_name: str) -> None:
        raise self.refusal("unload", model_name)


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
    """The ONNX predictor, or the Triton transformer when ``config.predictor_host`` is set; not loaded yet (its
    ``load`` fetches and checks the bundle, once).

    Args:
        config: Serving configuration.

    Returns:
        The model, not ready until its ``load`` returned.
    """
    if config.predictor_host is not None:
        from textclf.serving.transformer import TritonTextTransformer

        return TritonTextTransformer(config)
    from textclf.serving.predictor import TextClassifierPredictor

    return TextClassifierPredictor(config)


def build_model_server(config: ServingConfig, options: argparse.Namespace) -> kserve.ModelServer:
    """KServe's ModelServer on the configured ports (and, for the transformer, pointing at Triton), with KServe's own
    options from the command line.

    KServe reads some options from ``kserve.model_server.args`` instead of its constructor (logging:
    ``--configure_logging``, ``--log_config_file``; gRPC message sizes; the predictor defaults). That namespace is
    parsed from ``sys.argv`` when ``kserve.model_server`` is imported, and this server's arguments may come from
    elsewhere (``$TEXTCLF_SERVING_ARGS``, ``textclf serve``), so it is set from ``options`` first.

    Args:
        config: Serving configuration.
        options: The parsed command line ``config`` came from (``textclf.serving.__main__.parse_command_line``):
            it holds every option of KServe's parser.

    Returns:
        The (not yet started) server.
    """
    kserve_args = kserve.model_server.args
    for name in vars(kserve_args):
        setattr(kserve_args, name, getattr(options, name))
    predictor_config = None
    if config.predictor_host is not None:
        predictor_config = PredictorConfig(
            predictor_host=config.predictor_host, predictor_protocol=config.predictor_protocol,
            predictor_use_ssl=options.predictor_use_ssl,
            predictor_request_timeout_seconds=options.predictor_request_timeout_seconds,
            predictor_request_retries=options.predictor_request_retries,
            predictor_health_check=options.enable_predictor_health_check,
        )
    server = kserve.ModelServer(
        http_port=config.http_port, grpc_port=config.grpc_port, enable_grpc=config.enable_grpc,
        workers=1,  # one process owns the micro-batcher and the ONNX session (the parser refuses other values)
        max_threads=options.max_threads, max_asyncio_workers=options.max_asyncio_workers,
        enable_docs_url=options.enable_docs_url, enable_latency_logging=options.enable_latency_logging,
        access_log_format=options.access_log_format, event_loop=options.event_loop,
        timeout_keep_alive=options.timeout_keep_alive, predictor_config=predictor_config,
        ssl_certfile=options.ssl_certfile, ssl_keyfile=options.ssl_keyfile,
    )
    # Both the REST and the gRPC server take the extension from here when they start.
    server.model_repository_extension = NoModelControl(model_registry=server.registered_models)
    return server


def serve(config: ServingConfig, options: argparse.Namespace, model: kserve.Model | None = None) -> None:
    """Load, warm up and serve the export bundle until SIGTERM/SIGINT.

    The model reports ready (``/v2/health/ready``, ``/v1/models/{name}``) only once it is loaded and warmed up:
    the ports open after that. SageMaker's ``/ping`` and ``/invocations`` are aliases of the V2 readiness and V1
    predict routes (:class:`SageMakerRoutes`).

    Args:
        config: Serving configuration.
        options: The parsed command line ``config`` came from: KServe's own options (see
            :func:`build_model_server`).
        model: The model to serve, not loaded yet; default :func:`build_model` of ``config`` (a benchmark passes
            a stand-in, e.g. a no-op model behind the same server).

    Raises:
        textclf.serving.bundle.BundleError: The bundle cannot be fetched, is missing files or is incompatible
            (raised by the model's ``load``, before any port is opened).
    """
    model = model if model is not None else build_model(config)
    model.load()
    server = build_model_server(config, options)
    kserve_rest_app.add_exception_handler(RequestValidationError, request_validation_error_handler)
    kserve_rest_app.add_middleware(SageMakerRoutes, model_name=config.model_name)
    if not options.enable_latency_logging and options.log_config_file is None:
        for name in _PER_REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        server.start([model])
    finally:
        model.stop()
