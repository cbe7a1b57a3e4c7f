"""Text encoding and response formatting shared by the ONNX predictor and the Triton transformer.

One place turns texts into ``input_ids``/``attention_mask`` (normalise exactly as training did, tokenise, truncate to
the bundle's max length, pad) and one place turns logits into the V1 and V2 responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferResponse
from tokenizers import Tokenizer

from textclf.serving.contract import ATTENTION_MASK, INPUT_IDS
from textclf.text import TextProfile, normalise_text

#: Padding id; padded positions are masked out (attention_mask 0), so they never affect the logits.
PAD_ID = 0
V2_LABEL_OUTPUT = "label"
V2_PROBABILITIES_OUTPUT = "probabilities"
#: A cascade's answering stage (1 or 2) per text: the V2 output and the V1 prediction field.
V2_STAGE_OUTPUT = "stage"
V1_STAGE_FIELD = "stage"
#: Stage 1 of a cascade served alone (an InferenceGraph step): whether stage 2 should answer the text.
V2_DEFER_OUTPUT = "defer"
V1_DEFER_FIELD = "defer"
#: The V1 response's request id (V2 responses carry it as ``id``): the prediction ids are derived from it
#: (:func:`textclf.serving.contract.prediction_id`).
V1_REQUEST_ID_FIELD = "request_id"


@dataclass(frozen=True)
class EncodedBatch:
    """Model inputs for a group of texts, padded to the group's longest text.

    Attributes:
        input_ids: int64 ``[n, longest]``.
        attention_mask: int64 ``[n, longest]``, 1 on real tokens.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def feeds(self) -> dict[str, np.ndarray]:
        """The ONNX/Triton input tensors by name (the names of :data:`textclf.serving.contract.ONNX_SPEC`)."""
        return {INPUT_IDS: self.input_ids, ATTENTION_MASK: self.attention_mask}


def tokenise(tokenizer: Tokenizer, texts: list[str], profile: TextProfile = TextProfile.NEWS) -> list[list[int]]:
    """Normalise (as training does) and tokenise texts, truncated by the tokenizer's configured max length.

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` with truncation enabled and padding disabled
            (:meth:`textclf.serving.bundle.ExportBundle.load_tokenizer`).
        texts: Raw request texts.
        profile: The model's text profile (its bundle's ``text_profile``).

    Returns:
        Token ids per text, special tokens included.
    """
    return [encoding.ids for encoding in tokenizer.encode_batch([normalise_text(text, profile) for text in texts])]


def pad(token_ids: list[list[int]]) -> EncodedBatch:
    """Right-pad token id lists to the longest one.

    Args:
        token_ids: Token ids per text (at least one).

    Returns:
        The padded ``input_ids`` and ``attention_mask``.
    """
    longest = max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), longest), PAD_ID, dtype=np.int64)
    attention_mask = np.zeros((len(token_ids), longest), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return EncodedBatch(input_ids, attention_mask)


def length_groups(lengths: list[int], max_group_size: int, max_length_ratio: float = 1.5) -> list[list[int]]:
    """Bucket texts by token length so each model run pads little.

    Indices are sorted by length; a group closes when it holds ``max_group_size`` texts or when the next text is
    more than ``max_length_ratio`` times as long as the group's shortest.

    Args:
        lengths: Token count per text.
        max_group_size: Most texts per group.
        max_length_ratio: Longest/shortest length allowed within a group.

    Returns:
        Groups of indices into ``lengths``; every index appears exactly once.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and (
            len(current) >= max_group_size or lengths[index] > max_length_ratio * lengths[current[0]]
        ):
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float32.

    Args:
        logits: ``[n, n_labels]``.
        temperature: The bundle's calibration temperature (:attr:`textclf.serving.bundle.ExportBundle.temperature`,
            > 0, checked when the bundle is loaded); 1 leaves the logits as they are (dividing by 1 is exact).

    Returns:
        Probabilities, each row summing to 1.
    """
    scaled = logits.astype(np.float32) / np.float32(temperature)
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def predicted_labels(probabilities: np.ndarray, labels: tuple[str, ...]) -> list[str]:
    """Argmax class name per row.

    Args:
        probabilities: ``[n, n_labels]``.
        labels: Class names in label-id order.

    Returns:
        One class name per row.
    """
    return [labels[index] for index in probabilities.argmax(axis=-1).tolist()]


def v1_response(
    probabilities: np.ndarray, labels: tuple[str, ...], model_version: str, stages: np.ndarray | None = None,
    deferred: np.ndarray | None = None, request_id: str | None = None,
) -> dict[str, Any]:
    """The V1 ``:predict`` response body.

    Args:
        probabilities: ``[n, n_labels]``.
        labels: Class names in label-id order.
        model_version: Identifier of the served model.
        stages: For a cascade, the stage (1 or 2) that answered each text; None otherwise.
        deferred: For stage 1 of a cascade served alone, whether stage 2 should answer each text; None otherwise.
        request_id: The request's id (:data:`V1_REQUEST_ID_FIELD`), if any.

    Returns:
        ``{"predictions": [{"label", "label_id", "scores": {name: p}}], "model_version": ..., "request_id": ...}``;
        each prediction also has ``"stage"`` when ``stages`` is given and ``"defer"`` when ``deferred`` is.
    """
    predictions = []
    stage_list = None if stages is None else stages.tolist()
    defer_list = None if deferred is None else deferred.tolist()
    for index, row in enumerate(probabilities.tolist()):
        label_id = max(range(len(row)), key=row.__getitem__)
        prediction: dict[str, Any] = {
            "label": labels[label_id], "label_id": label_id, "scores": dict(zip(labels, row, strict=True))
        }
        if stage_list is not None:
            prediction[V1_STAGE_FIELD] = stage_list[index]
        if defer_list is not None:
            prediction[V1_DEFER_FIELD] = defer_list[index]
        predictions.append(prediction)
    body: dict[str, Any] = {"predictions": predictions, "model_version": model_version}
    if request_id:
        body[V1_REQUEST_ID_FIELD] = request_id
    return body


def v2_response(
    probabilities: np.ndarray, labels: tuple[str, ...], model_name: str, model_version: str, request_id: str | None,
    stages: np.ndarray | None = None, deferred: np.ndarray | None = None,
) -> InferResponse:
    """The V2 ``/infer`` response: ``label`` (BYTES ``[n]``) and ``probabilities`` (FP32 ``[n, n_labels]``); for a
    cascade also ``stage`` (INT32 ``[n]``) and, for its stage 1 served alone, ``defer`` (BOOL ``[n]``).

    Args:
        probabilities: ``[n, n_labels]``.
        labels: Class names in label-id order.
        model_name: Served model name.
        model_version: Identifier of the served model.
        request_id: The request's id, echoed back.
        stages: The answering stage per text, or None.
        deferred: Whether stage 2 should answer each text, or None.

    Returns:
        A KServe ``InferResponse`` (encoded to REST JSON or gRPC by KServe).
    """
    outputs = [
        InferOutput(V2_LABEL_OUTPUT, shape=[len(probabilities)], datatype="BYTES",
                    data=predicted_labels(probabilities, labels)),
        InferOutput(V2_PROBABILITIES_OUTPUT, shape=list(probabilities.shape), datatype="FP32",
                    data=probabilities.astype(np.float32).ravel().tolist()),
    ]
    if stages is not None:
        outputs.append(InferOutput(V2_STAGE_OUTPUT, shape=[len(stages)], datatype="INT32", data=stages.tolist()))
    if deferred is not None:
        outputs.append(InferOutput(V2_DEFER_OUTPUT, shape=[len(deferred)], datatype="BOOL", data=deferred.tolist()))
    return InferResponse(
        response_id=request_id or "", model_name=model_name, model_version=model_version, infer_outputs=outputs,
    )
