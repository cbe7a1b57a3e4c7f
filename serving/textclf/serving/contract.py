"""The export bundle's contract, defined once: the files it holds and the interface of its ONNX graphs.

The export stage (``textclf.export.export``) writes a bundle with these file names and exports the graph with
:data:`ONNX_SPEC`'s tensors; everything that reads a bundle (the predictor, the Triton transformer and model
repository, the TensorRT build, the registry, the deploy targets) imports these names instead of spelling them.
The input names and dynamic axes are declared once as data, in the style of Optimum's ONNX export configs.

Pure data: imports nothing from textclf, so any layer may import it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

#: The fp32 graph, standard ONNX operators only (what Triton's ONNX Runtime and TensorRT backends take).
FP32_ONNX_FILE = "model.onnx"
#: The fused, dynamically INT8-quantised graph: the CPU serving model.
INT8_ONNX_FILE = "model.int8.onnx"
#: The fast tokenizer the serving side loads (``tokenizers.Tokenizer.from_file``).
TOKENIZER_FILE = "tokenizer.json"
#: The tokenizer files the bundle keeps, when the model's tokenizer writes them (the serving side reads only
#: :data:`TOKENIZER_FILE`; the others let ``transformers.AutoTokenizer`` load the bundle as well).
TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
#: ``{"labels": [class names in label-id order]}``. The bundle's copy is the train stage's; the ingest and validate
#: stages write the label set under the same name and in the same format.
LABELS_FILE = "labels.json"
#: The export record: :meth:`OnnxSpec.to_json` (with the opset) under ``spec``, parity numbers, the sha256 of each
#: ONNX file under ``files``, ``max_length``, ``normalisation_version``, the source model's metadata and, for a
#: calibrated model, :data:`TEMPERATURE_KEY`.
METADATA_FILE = "export_metadata.json"
#: Key of :data:`METADATA_FILE` holding the calibration temperature ``T`` (a finite number > 0, fitted on the
#: validation split): the server's probabilities are ``softmax(logits / T)``. A bundle without it serves
#: ``softmax(logits)`` (``T = 1``).
TEMPERATURE_KEY = "temperature"
#: The classical model's files (written by the components' classical stage, read by the server): the fitted
#: scikit-learn pipeline in skops' format (never pickled) and its metadata (labels, normalisation version, data
#: fingerprints, the model file's sha256 under ``model_sha256``, optionally :data:`TEMPERATURE_KEY`). With
#: :data:`LABELS_FILE` they make a *classical bundle*, which the server runs without torch.
CLASSICAL_MODEL_FILE = "model.skops"
CLASSICAL_METADATA_FILE = "classical_metadata.json"
#: A *cascade bundle*: this file (:class:`textclf.serving.cascade.CascadeSpec`'s JSON: threshold, what stage 2
#: returns, labels, the validation numbers that chose the threshold) and one directory per stage, each a complete
#: transformer or classical bundle. Stage 1 answers the texts whose calibrated top probability is at least the
#: threshold; stage 2 answers the rest.
CASCADE_FILE = "cascade.json"
#: The stage directories of a cascade bundle, stage 1 first.
CASCADE_STAGE_DIRS = ("stage1", "stage2")
#: The files every transformer bundle holds.
REQUIRED_FILES = (FP32_ONNX_FILE, INT8_ONNX_FILE, TOKENIZER_FILE, LABELS_FILE, METADATA_FILE)

#: Token ids, ``[batch, sequence]``.
INPUT_IDS = "input_ids"
#: 1 on real tokens, 0 on padding, ``[batch, sequence]``.
ATTENTION_MASK = "attention_mask"
#: Unnormalised class scores, ``[batch, n_labels]``.
LOGITS = "logits"


@dataclass(frozen=True)
class OnnxSpec:
    """The exported graph's interface, declared once as data.

    Attributes:
        inputs: Input tensor names, in the order the graph takes them (the exporter traces them positionally).
        outputs: Output tensor names.
        dynamic_axes: Tensor name -> {axis index: symbolic dimension name}, for every input and output; axes not
            named are static. Stored read-only.
        input_dtype: numpy name of every input's element type.
        output_dtype: numpy name of every output's element type.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    input_dtype: str = "int64"
    output_dtype: str = "float32"

    def __post_init__(self) -> None:
        """Freeze ``dynamic_axes`` and check it covers exactly the named tensors.

        Raises:
            ValueError: A tensor name is repeated, or ``dynamic_axes`` names other tensors than the inputs and
                outputs.
        """
        names = (*self.inputs, *self.outputs)
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names must be unique, got {names}")
        if set(self.dynamic_axes) != set(names):
            raise ValueError(f"dynamic_axes must name exactly {names}, got {tuple(self.dynamic_axes)}")
        frozen = {name: MappingProxyType(dict(self.dynamic_axes[name])) for name in names}
        object.__setattr__(self, "dynamic_axes", MappingProxyType(frozen))

    def to_json(self) -> dict[str, dict[str, dict[int, str]]]:
        """The spec as recorded in :data:`METADATA_FILE`: ``{"inputs": {name: axes}, "outputs": {name: axes}}``."""
        return {
            "inputs": {name: dict(self.dynamic_axes[name]) for name in self.inputs},
            "outputs": {name: dict(self.dynamic_axes[name]) for name in self.outputs},
        }


#: The sequence classifier's graph: token ids and attention mask in, logits out; batch and sequence length dynamic.
ONNX_SPEC = OnnxSpec(
    inputs=(INPUT_IDS, ATTENTION_MASK),
    outputs=(LOGITS,),
    dynamic_axes={
        INPUT_IDS: {0: "batch", 1: "sequence"},
        ATTENTION_MASK: {0: "batch", 1: "sequence"},
        LOGITS: {0: "batch"},
    },
)


def temperature_problem(value: object) -> str | None:
    """Why ``value`` cannot be a bundle's calibration temperature ``T`` of ``softmax(logits / T)``, or None if it can
    (a finite number > 0). The one rule for the export stage, which writes ``T``, and the server, which reads it;
    each raises its own error with this text."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"must be a finite number > 0, got {type(value).__name__} {value!r}"
    if not math.isfinite(value) or value <= 0:
        return f"must be a finite number > 0, got {float(value)!r}"
    return None


# --- prediction events: the ids that join a prediction, its KServe logger events and its delayed ground truth ---

#: The request id the server uses (Istio/Knative set it on every request in a cluster); the response carries the id
#: back in this header (and in the body: V1 ``request_id``, V2 ``id``).
REQUEST_ID_HEADER = "x-request-id"
#: A CloudEvent's id (binary mode); KServe's payload logger takes its event id from this request header when the
#: caller sends one, so the server prefers it to a generated id when :data:`REQUEST_ID_HEADER` is absent.
CLOUDEVENT_ID_HEADER = "ce-id"
#: The caller's user key (A/B analysis and canary routing by user); recorded as ``user_id``. The InferenceService's
#: ``logger.metadataHeaders`` forwards it to the monitor inside the CloudEvent's ``metadata`` extension.
USER_KEY_HEADER = "x-user-id"


def prediction_id(request_id: str, index: int, count: int) -> str:
    """The id of the ``index``-th prediction of a request of ``count`` texts: the request id itself for a single
    text, ``"<request_id>#<index>"`` otherwise. Ground truth is fed back under this id."""
    return request_id if count == 1 else f"{request_id}#{index}"
