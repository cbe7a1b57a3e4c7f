"""ONNX Runtime inference for the predictor: texts in, class probabilities out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from textclf.serving.codec import length_groups, pad, softmax, tokenise
from textclf.serving.contract import LOGITS
from textclf.text import TextProfile, normalise_text

if TYPE_CHECKING:
    from textclf.serving.bundle import ExportBundle
    from textclf.serving.config import Precision

#: Texts of increasing length run through the model after loading, so that ONNX Runtime has allocated its buffers
#: and tuned its kernels before the first request.
WARMUP_TEXTS = ("warm up", "a short news headline about markets " * 4, "a long story about a football match " * 20)


def create_session(model_path: Path, intra_op_threads: int) -> ort.InferenceSession:
    """An ONNX Runtime CPU session tuned for small batches on few cores.

    Args:
        model_path: The ONNX file.
        intra_op_threads: Threads used inside one run.

    Returns:
        The session.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads would otherwise spin and take the cores the event loop needs to accept requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxTextClassifier:
    """Tokenises texts, groups them by length and runs the ONNX model on each group.

    Args:
        session: ONNX Runtime session of the exported model.
        tokenizer: The bundle's tokenizer (truncating, not padding).
        max_group_size: Most texts per model run.
        temperature: Calibration temperature ``T`` (> 0): probabilities are ``softmax(logits / T)``.
        text_profile: The text normalisation profile the model was trained with.
    """

    def __init__(
        self, session: ort.InferenceSession, tokenizer: Tokenizer, max_group_size: int, temperature: float = 1.0,
        text_profile: TextProfile = TextProfile.NEWS,
    ):
        self.text_profile = TextProfile(text_profile)
        self._session = session
        self._tokenizer = tokenizer
        self._max_group_size = max_group_size
        self.temperature = temperature

    @classmethod
    def from_bundle(
        cls, bundle: ExportBundle, precision: Precision, intra_op_threads: int, max_group_size: int,
        warmup_rounds: int,
    ) -> OnnxTextClassifier:
        """The bundle's model at ``precision`` in a :func:`create_session` session, with the bundle's calibration
        temperature, warmed up and ready.

        Args:
            bundle: A loaded export bundle.
            precision: Which of its ONNX models.
            intra_op_threads: Threads used inside one run.
            max_group_size: Most texts per model run.
            warmup_rounds: Rounds of :meth:`warm_up` before returning.

        Returns:
            The classifier.
        """
        session = create_session(bundle.onnx_path(precision), intra_op_threads)
        classifier = cls(session, bundle.load_tokenizer(), max_group_size, bundle.temperature, bundle.text_profile)
        classifier.warm_up(warmup_rounds)
        return classifier

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Class probabilities of raw texts (normalised and tokenised here, as in training): ``softmax(logits / T)``
        with the calibration temperature ``T``, so the response, the metrics and the request log all carry the
        calibrated values.

        Args:
            texts: Raw texts (at least one).

        Returns:
            float32 ``[len(texts), n_labels]``, rows in input order.
        """
        return self.probabilities_of_ids(tokenise(self._tokenizer, texts, self.text_profile))

    def probabilities_of_ids(self, token_ids: list[list[int]]) -> np.ndarray:
        """Calibrated class probabilities of already tokenised inputs (special tokens included), run as
        :meth:`probabilities` runs texts: grouped by length (:func:`length_groups`, at most ``max_group_size`` per
        run), padded per group, ``softmax(logits / T)``.

        Args:
            token_ids: Token ids per input (at least one input).

        Returns:
            float32 ``[len(token_ids), n_labels]``, rows in input order.
        """
        groups = length_groups([len(ids) for ids in token_ids], self._max_group_size)
        rows: list[np.ndarray] = [np.empty(0)] * len(token_ids)
        for group in groups:
            batch = pad([token_ids[index] for index in group])
            logits = self._session.run([LOGITS], batch.feeds())[0]
            for index, row in zip(group, softmax(logits, self.temperature), strict=True):
                rows[index] = row
        return np.stack(rows)

    def encodings(self, texts: list[str]) -> list[Encoding]:
        """The tokenizer's encodings of raw texts, normalised and truncated exactly as :meth:`probabilities` does
        (their ``ids`` are :func:`~textclf.serving.codec.tokenise`'s), with the word pieces (``tokens``) and which
        of them are special tokens (``special_tokens_mask``): what an explanation needs.

        Args:
            texts: Raw texts.

        Returns:
            One ``tokenizers.Encoding`` per text.
        """
        return self._tokenizer.encode_batch([normalise_text(text, self.text_profile) for text in texts])

    def warm_up(self, rounds: int) -> None:
        """Run :data:`WARMUP_TEXTS` through the model, one at a time and together.

        Args:
            rounds: How many times.
        """
        for _ in range(rounds):
            for text in WARMUP_TEXTS:
                self.probabilities([text])
            self.probabilities(list(WARMUP_TEXTS) * 4)
