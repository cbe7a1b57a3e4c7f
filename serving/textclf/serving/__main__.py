"""``python -m textclf.serving --model-dir DIR ...``: serve an export bundle with KServe.

Exit code 2 with a one-line message when the arguments or the bundle are unusable.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from textclf.serving.bundle import BundleError, fetch_bundle, load_bundle
from textclf.serving.config import DEFAULT_MODEL_CACHE_DIR, TRITON_PROTOCOLS, Precision, ServingConfig
from textclf.serving.server import serve

_DEFAULTS = {field.name: field.default for field in fields(ServingConfig) if field.name != "model_dir"}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; defaults come from :class:`ServingConfig`.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="python -m textclf.serving",
        description="Serve a textclf export bundle with KServe (V1/V2 REST, V2 gRPC).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model-dir", "--model_dir", required=True,
                        help="export bundle: a directory, or an s3:// / gs:// prefix (downloaded first; credentials "
                             "and endpoint from AWS_* / S3_* or STORAGE_EMULATOR_HOST)")
    parser.add_argument("--model-cache-dir", type=Path, default=DEFAULT_MODEL_CACHE_DIR,
                        help="where a bundle from an object store is downloaded to")
    parser.add_argument("--model-name", "--model_name", default=_DEFAULTS["model_name"],
                        help="name in /v1/models/{name}:predict")
    parser.add_argument("--precision", choices=[p.value for p in Precision],
                        default=_DEFAULTS["precision"].value,
                        help="which ONNX model to run")
    parser.add_argument("--http-port", "--http_port", type=int, default=_DEFAULTS["http_port"])
    parser.add_argument("--grpc-port", "--grpc_port", type=int, default=_DEFAULTS["grpc_port"])
    parser.add_argument("--no-grpc", dest="enable_grpc", action="store_false", help="do not start the gRPC server")
    parser.add_argument("--max-batch-size", type=int, default=_DEFAULTS["max_batch_size"],
                        help="most texts per micro-batch")
    parser.add_argument("--max-wait-ms", type=float, default=_DEFAULTS["max_wait_ms"],
                        help="longest a micro-batch waits for more requests")
    parser.add_argument("--max-instances", type=int, default=_DEFAULTS["max_instances"],
                        help="most texts per request")
    parser.add_argument("--max-text-bytes", type=int, default=_DEFAULTS["max_text_bytes"],
                        help="longest text accepted (UTF-8 bytes)")
    parser.add_argument("--intra-op-threads", type=int, default=_DEFAULTS["intra_op_threads"],
                        help="ONNX Runtime threads per model run")
    parser.add_argument("--warmup-batches", type=int, default=_DEFAULTS["warmup_batches"])
    parser.add_argument("--request-log", type=Path, default=None,
                        help="JSON-lines file receiving every prediction (off when not given)")
    parser.add_argument("--request-log-max-bytes", type=int, default=_DEFAULTS["request_log_max_bytes"])
    parser.add_argument("--request-log-backups", type=int, default=_DEFAULTS["request_log_backups"])
    parser.add_argument("--predictor-host", "--predictor_host", default=None,
                        help="host:port of a Triton predictor: run the tokenising transformer in front of it "
                             "instead of the ONNX model")
    parser.add_argument("--predictor-protocol", "--predictor_protocol", choices=TRITON_PROTOCOLS, default=_DEFAULTS["predictor_protocol"],
                        help="protocol of the Triton predictor")
    parser.add_argument("--workers", type=int, default=1,
                        help="accepted because KServe passes it to transformer containers; must be 1 (one process "
                             "owns the micro-batcher and the ONNX session)")
    return parser


def config_from_args(argv: list[str] | None = None) -> ServingConfig:
    """Parse the command line into a checked :class:`ServingConfig`.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The configuration.

    Raises:
        SystemExit: Code 2 with a message for unusable arguments or an unusable bundle.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers != 1:
        parser.error(f"--workers must be 1, got {args.workers}: scale with replicas instead")
    del args.workers
    try:
        args.model_dir = fetch_bundle(args.model_dir, args.model_cache_dir)
        del args.model_cache_dir
        config = ServingConfig(**{**vars(args), "precision": Precision(args.precision)})
        bundle = load_bundle(config.model_dir)
        if config.predictor_host is None:
            bundle.onnx_path(config.precision)
    except (ValueError, BundleError) as exc:
        parser.error(str(exc))
    return config


#: SageMaker starts a serving container with the single argument ``serve``; the server's own arguments then come
#: from this variable (set by ``textclf deploy sagemaker``).
SAGEMAKER_ARGS_ENV = "TEXTCLF_SERVING_ARGS"


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
    """Entry point of ``python -m textclf.serving``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``); ``serve`` alone (SageMaker) reads them from
            ``$TEXTCLF_SERVING_ARGS``.
    """
    serve(config_from_args(resolve_argv(sys.argv[1:] if argv is None else list(argv))))


if __name__ == "__main__":
    main(sys.argv[1:])
