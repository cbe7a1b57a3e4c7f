"""``python -m textclf.serving --model-dir DIR ...``: serve an export bundle with KServe.

The command line is KServe's ModelServer parser (``kserve.model_server.parser``: ``--http_port``, ``--workers``,
``--max_threads``, ``--log_config_file``, ``--predictor_use_ssl``, timeouts, ...) plus this server's own flags
(:data:`~textclf.serving.config.SERVER_FLAGS`, which :meth:`ServingConfig.to_args` writes); KServe's options reach
``kserve.ModelServer``. Parsing reads nothing: the model's ``load`` fetches and checks the bundle, once, before any
port opens. Exit code 2 with a one-line message when the arguments or the bundle are unusable.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path

import kserve.model_server

from textclf.serving.bundle import BundleError
from textclf.serving.config import SAGEMAKER_ARGS_ENV, SERVER_FLAGS, TRITON_PROTOCOLS, Precision, ServingConfig
from textclf.serving.server import serve

_DEFAULTS = {field.name: field.default for field in fields(ServingConfig) if field.name != "model_dir"}
#: KServe options whose default differs here: KServe's per-request latency log line is real CPU time at hundreds of
#: requests/s (``--enable_latency_logging=true`` turns it back on).
KSERVE_DEFAULTS = {"enable_latency_logging": False}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface: KServe's ModelServer parser plus this server's flags, with the defaults of
    :class:`ServingConfig` (and :data:`KSERVE_DEFAULTS`).

    KServe's parser is copied before it becomes the parent: a parent shares its actions with the child, and the
    defaults set here (``--model_name`` is ``textclf``, KServe's is ``model``) would otherwise change KServe's.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="python -m textclf.serving",
        description="Serve a textclf export bundle with KServe (V1/V2 REST, V2 gRPC).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[copy.deepcopy(kserve.model_server.parser)],
    )
    flag = SERVER_FLAGS
    parser.add_argument(flag["model_dir"], "--model_dir", required=True,
                        help="export bundle: a directory, or an s3:// / gs:// prefix (downloaded first; credentials "
                             "and endpoint from AWS_* / S3_* or STORAGE_EMULATOR_HOST)")
    parser.add_argument(flag["model_cache_dir"], type=Path, help="where a bundle from an object store is downloaded to")
    parser.add_argument(flag["precision"], choices=[p.value for p in Precision], help="which ONNX model to run")
    parser.add_argument(flag["cascade_stage"], type=int, choices=(1, 2),
                        help="serve only this stage of a cascade bundle (a step of a KServe InferenceGraph)")
    # KServe's own flags set these; the spellings the manifests, deploy targets and docs use are aliases of them.
    parser.add_argument(flag["model_name"], dest="model_name", help="same as --model_name")
    parser.add_argument(flag["http_port"], dest="http_port", type=int, help="same as --http_port")
    parser.add_argument(flag["grpc_port"], dest="grpc_port", type=int, help="same as --grpc_port")
    parser.add_argument(flag["enable_grpc"], dest="enable_grpc", action="store_false",
                        help="same as --enable_grpc=false: do not start the gRPC server")
    parser.add_argument(flag["predictor_host"], dest="predictor_host",
                        help="same as --predictor_host: host:port of a Triton predictor; run the tokenising "
                             "transformer in front of it instead of the ONNX model")
    parser.add_argument(flag["predictor_protocol"], dest="predictor_protocol", choices=TRITON_PROTOCOLS,
                        help="same as --predictor_protocol: protocol of the Triton predictor")
    parser.add_argument(flag["max_batch_size"], type=int, help="most texts per micro-batch")
    parser.add_argument(flag["max_wait_ms"], type=float, help="longest a micro-batch waits for more requests")
    parser.add_argument(flag["max_instances"], type=int, help="most texts per request")
    parser.add_argument(flag["max_text_bytes"], type=int, help="longest text accepted (UTF-8 bytes)")
    parser.add_argument(flag["max_explain_instances"], type=int, help="most texts per :explain request")
    parser.add_argument(flag["max_explain_tokens"], type=int,
                        help="most tokens (word pieces the model sees; a classical model's words) per explained text")
    parser.add_argument(flag["intra_op_threads"], type=int, help="ONNX Runtime threads per model run")
    parser.add_argument(flag["warmup_batches"], type=int)
    parser.add_argument(flag["request_log"], type=Path,
                        help="JSON-lines file receiving every prediction (off when not given)")
    parser.add_argument(flag["request_log_max_bytes"], type=int)
    parser.add_argument(flag["request_log_backups"], type=int)
    parser.set_defaults(**{**_DEFAULTS, "precision": _DEFAULTS["precision"].value, **KSERVE_DEFAULTS})
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None = None,
                       ) -> tuple[ServingConfig, argparse.Namespace]:
    """Parse the command line into a checked :class:`ServingConfig` (nothing is read or downloaded).

    Args:
        parser: From :func:`build_parser`.
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The configuration, and the whole namespace (KServe's options too, for
        :func:`textclf.serving.server.serve`).

    Raises:
        SystemExit: Code 2 with a message for unusable arguments.
    """
    args = parser.parse_args(argv)
    if args.workers != 1:
        parser.error(f"--workers must be 1, got {args.workers}: one process owns the micro-batcher and the ONNX "
                     "session; scale with replicas instead")
    try:
        config = ServingConfig(**{name: getattr(args, name) for name in SERVER_FLAGS})
    except ValueError as exc:
        parser.error(str(exc))
    return config, args


def config_from_args(argv: list[str] | None = None) -> ServingConfig:
    """Parse the command line into a checked :class:`ServingConfig`; the inverse of :meth:`ServingConfig.to_args`.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The configuration.

    Raises:
        SystemExit: Code 2 with a message for unusable arguments.
    """
    return parse_command_line(build_parser(), argv)[0]


def resolve_argv(argv: list[str]) -> list[str]:
    """``argv``, or for SageMaker's ``serve`` the arguments in ``$TEXTCLF_SERVING_ARGS`` (shell-style quoting).

    Raises:
        SystemExit: ``serve`` without the variable.
    """
    if argv != ["serve"]:
        return argv
    value = os.environ.get(SAGEMAKER_ARGS_ENV, "").strip()
    if not value:
        sys.exit(f"python -m textclf.serving serve: set {SAGEMAKER_ARGS_ENV} to the server's arguments "
                 "(e.g. --model-dir=/opt/ml/model --http-port=8080 --no-grpc)")
    return shlex.split(value)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m textclf.serving``: parse, then load and serve (blocking).

    Args:
        argv: Arguments (default: ``sys.argv[1:]``); ``serve`` alone (SageMaker) reads them from
            ``$TEXTCLF_SERVING_ARGS``.

    Raises:
        SystemExit: Code 2 with a message for unusable arguments, or a bundle that cannot be fetched or loaded.
    """
    parser = build_parser()
    config, options = parse_command_line(parser, resolve_argv(sys.argv[1:] if argv is None else list(argv)))
    try:
        serve(config, options)
    except BundleError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main(sys.argv[1:])
