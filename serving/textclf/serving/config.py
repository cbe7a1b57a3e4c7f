"""Typed serving configuration: every default of the predictor in one place."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from textclf.serving.contract import FP32_ONNX_FILE, INT8_ONNX_FILE


class Precision(str, Enum):
    """Which exported ONNX model the predictor runs."""

    FP32 = "fp32"
    INT8 = "int8"

    @property
    def onnx_file(self) -> str:
        """Name of this precision's ONNX file inside the export bundle."""
        return ONNX_FILES[self]


#: Precision -> ONNX file of the export bundle (:mod:`textclf.serving.contract`).
ONNX_FILES: dict[Precision, str] = {Precision.FP32: FP32_ONNX_FILE, Precision.INT8: INT8_ONNX_FILE}


#: KServe protocols a Triton predictor speaks (KServe's ``PredictorProtocol`` values).
TRITON_PROTOCOLS = ("v2", "grpc-v2")
#: Where ``--model-dir s3://...`` / ``gs://...`` bundles are downloaded to.
DEFAULT_MODEL_CACHE_DIR = Path(tempfile.gettempdir()) / "textclf-models"

#: The ``python -m textclf.serving`` flag of every :class:`ServingConfig` field, in the order
#: :meth:`ServingConfig.to_args` writes them; the server's parser (``textclf.serving.__main__``) reads the same
#: names. Six fields are KServe ModelServer options, and KServe's own flags set them too (``--model_name``,
#: ``--http_port``, ``--grpc_port``, ``--enable_grpc``, ``--predictor_host``, ``--predictor_protocol``); the spellings
#: here are the ones the manifests, the deploy targets and the docs use. ``enable_grpc`` has only this off switch.
SERVER_FLAGS: dict[str, str] = {
    "model_name": "--model-name",
    "model_dir": "--model-dir",
    "model_cache_dir": "--model-cache-dir",
    "precision": "--precision",
    "cascade_stage": "--cascade-stage",
    "http_port": "--http-port",
    "grpc_port": "--grpc-port",
    "enable_grpc": "--no-grpc",
    "max_batch_size": "--max-batch-size",
    "max_wait_ms": "--max-wait-ms",
    "max_instances": "--max-instances",
    "max_text_bytes": "--max-text-bytes",
    "max_explain_instances": "--max-explain-instances",
    "max_explain_tokens": "--max-explain-tokens",
    "intra_op_threads": "--intra-op-threads",
    "warmup_batches": "--warmup-batches",
    "request_log": "--request-log",
    "request_log_max_bytes": "--request-log-max-bytes",
    "request_log_backups": "--request-log-backups",
    "predictor_host": "--predictor-host",
    "predictor_protocol": "--predictor-protocol",
}
#: Fields :meth:`ServingConfig.to_args` states even at their defaults: the routes, the probes and what is served
#: depend on them, so a deployment's arguments say them outright.
ALWAYS_STATED = ("model_name", "model_dir", "precision", "http_port")
#: SageMaker starts a serving container with the single argument ``serve``; the server's own arguments then come
#: from this variable (shell-style quoting; set by ``textclf deploy sagemaker``).
SAGEMAKER_ARGS_ENV = "TEXTCLF_SERVING_ARGS"


def default_intra_op_threads() -> int:
    """Threads for one ONNX Runtime run: every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ServingConfig:
    """Everything the KServe predictor needs to start.

    Attributes:
        model_dir: A transformer export bundle (``model.onnx``, ``model.int8.onnx``, ``tokenizer.json``,
            ``labels.json``, ``export_metadata.json``), a classical bundle or a cascade bundle
            (:class:`textclf.serving.bundle.BundleKind`): a directory, or an ``s3://`` / ``gs://`` prefix, which
            the model's ``load`` downloads into ``model_cache_dir`` first. Kept as ``str`` (an ``os.PathLike`` is converted), so that a
            URI keeps its ``//``.
        model_cache_dir: Where a bundle from an object store is downloaded to (once: a restart reuses it).
        model_name: Name under which KServe serves the model (``/v1/models/{model_name}:predict``).
        precision: Which ONNX model to run (of every transformer in the bundle).
        cascade_stage: Serve only this stage (1 or 2) of a cascade bundle, as one step of a KServe InferenceGraph
            (stage 1's predictions then say whether they ``defer`` to stage 2); None serves the bundle whole.
        http_port: REST port (V1 and V2).
        grpc_port: gRPC port (V2).
        enable_grpc: Start the gRPC server as well.
        max_batch_size: Most texts one micro-batch collects before it runs.
        max_wait_ms: Longest a request waits for others to join its micro-batch. The default 0 adds no latency
            and still batches under load: requests arriving while the model runs queue up and go together in the
            next run. (Measured, INT8, 2 cores: p50 at concurrency 1 was 12.7 ms with 0 and 15.0 ms with 2 ms;
            throughput at concurrency 32 was the same within 4%.)
        max_instances: Most texts one request may carry.
        max_text_bytes: Longest text (UTF-8 bytes) accepted.
        max_explain_instances: Most texts one ``:explain`` request may carry (each costs one model row per token).
        max_explain_tokens: Most tokens an explained text may have: word pieces the transformer sees (after the
            bundle's truncation, special tokens not counted), or the classical model's words. An explanation of
            ``n`` tokens runs ``n + 1`` model rows (:mod:`textclf.serving.explain`).
        intra_op_threads: ONNX Runtime threads per run.
        warmup_batches: Dummy batches run after loading, before the model reports ready.
        request_log: JSON-lines file receiving every prediction (for drift monitoring); ``None`` disables it.
        request_log_max_bytes: Size at which the request log rotates.
        request_log_backups: Rotated request-log files kept.
        predictor_host: ``host:port`` of a Triton predictor; when set, the server runs the tokenising
            :class:`~textclf.serving.transformer.TritonTextTransformer` in front of it instead of the ONNX model.
        predictor_protocol: How the transformer talks to Triton: ``"v2"`` (REST) or ``"grpc-v2"``.
    """

    model_dir: str
    model_cache_dir: Path = DEFAULT_MODEL_CACHE_DIR
    model_name: str = "textclf"
    precision: Precision = Precision.INT8
    cascade_stage: int | None = None
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    max_instances: int = 256
    max_text_bytes: int = 64 * 1024
    max_explain_instances: int = 8
    max_explain_tokens: int = 128
    intra_op_threads: int = default_intra_op_threads()
    warmup_batches: int = 3
    request_log: Path | None = None
    request_log_max_bytes: int = 50 * 1024 * 1024
    request_log_backups: int = 5
    predictor_host: str | None = None
    predictor_protocol: str = "grpc-v2"

    def __post_init__(self) -> None:
        """Convert paths and the precision to the fields' types, and reject values no server could run with.

        Raises:
            ValueError: An unknown precision or protocol, or a size, count or wait out of range.
        """
        object.__setattr__(self, "model_dir", os.fspath(self.model_dir))
        object.__setattr__(self, "model_cache_dir", Path(self.model_cache_dir))
        object.__setattr__(self, "precision", Precision(self.precision))
        if self.request_log is not None:
            object.__setattr__(self, "request_log", Path(self.request_log))
        positive = {
            "max_batch_size": self.max_batch_size, "max_instances": self.max_instances,
            "max_text_bytes": self.max_text_bytes, "max_explain_instances": self.max_explain_instances,
            "max_explain_tokens": self.max_explain_tokens, "intra_op_threads": self.intra_op_threads,
            "request_log_max_bytes": self.request_log_max_bytes,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.cascade_stage not in (None, 1, 2):
            raise ValueError(f"cascade_stage must be 1 or 2 (or None), got {self.cascade_stage!r}")
        if self.cascade_stage is not None and self.predictor_host is not None:
            raise ValueError("cascade_stage serves a stage with ONNX Runtime in this process; it cannot be combined "
                             "with predictor_host (a Triton predictor serves one transformer bundle)")
        if self.predictor_protocol not in TRITON_PROTOCOLS:
            raise ValueError(f"predictor_protocol must be one of {TRITON_PROTOCOLS}, got {self.predictor_protocol!r}")
        if self.warmup_batches < 0 or self.request_log_backups < 0:
            raise ValueError("warmup_batches and request_log_backups must be >= 0")

    def to_args(self, fields: Collection[str] | None = None) -> list[str]:
        """The server's command line for this configuration; ``python -m textclf.serving`` parses it back to an
        equal config. Every deploy target builds its container arguments here.

        Args:
            fields: State only these fields, each even at its default (e.g. ``("precision",)`` for arguments
                appended to a ServingRuntime's). None: the :data:`ALWAYS_STATED` fields and every other field that
                is not at its default.

        Returns:
            ``--flag=value`` items in :data:`SERVER_FLAGS` order. ``enable_grpc`` is stated only when off
            (``--no-grpc``), a field that is ``None`` (no request log, no Triton host) not at all.

        Raises:
            ValueError: ``fields`` names something that is not a field.
        """
        unknown = set(fields or ()) - set(SERVER_FLAGS)
        if unknown:
            raise ValueError(f"not ServingConfig fields: {sorted(unknown)}")
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        args = []
        for name, flag in SERVER_FLAGS.items():
            value = getattr(self, name)
            stated = name in fields if fields is not None else name in ALWAYS_STATED or value != defaults[name]
            if not stated or value is None or value is True:
                continue
            args.append(flag if value is False else f"{flag}={value.value if isinstance(value, Enum) else value}")
        return args
