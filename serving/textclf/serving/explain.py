"""Explanations (KServe's V1 ``:explain`` verb): per-token attributions by occlusion, i.e. leave one out.

For a text with tokens ``t_1 .. t_n``, the model ``m`` that answers it and the class ``c`` it is answered with::

    attribution_i = p_m(c | text) - p_m(c | text without t_i)

Positive: the token supports the answer (removing it lowers the probability); negative: it speaks against it. The
response's ``probability`` is ``p_m(c | text)``, so ``probability - attribution_i`` is the probability without token
``i``. Only the model's forward pass is needed (ONNX Runtime or scikit-learn; no torch, no gradients).

Tokens, per model kind (:func:`occlusion_model_for`):

- **Transformer** (:class:`OnnxOcclusion`): the word pieces the ONNX model sees, from the same normalisation,
  tokenizer, truncation (to the bundle's max length) and calibration temperature as predict. ``[CLS]``/``[SEP]``
  (the tokenizer's special tokens) stay in every variant and are not explained. Occluding a word piece **drops its
  position** from ``input_ids`` and ``attention_mask``. Dropping was chosen over replacing the piece by ``[PAD]`` or
  ``[MASK]``: a variant is then an input the model can really get (the text without that piece; the pieces after it
  move up one position, as in any shorter text), whereas ``[PAD]`` under an attention mask of 1 is an input the
  model never saw, and ``[MASK]`` is a token of its own (which the fine-tuned classifier never saw either, and which
  not every tokenizer has). All ``n`` variants of a text have the same length, so they run in batches without
  padding, ``max_batch_size`` rows per ONNX Runtime run.
- **Classical** (:class:`WordOcclusion` with :func:`classical_words`): the whitespace-separated words of
  :func:`textclf.serving.classical.preprocess` (the normalised, lower-cased text the TF-IDF vectorisers read). A
  variant is the other words joined by single spaces; the pipeline preprocesses it again, which leaves such a text
  as it is. Removing a word also removes the word and character n-grams that span it: this is leave-one-out over
  words, not over TF-IDF features.

Cost: ``n + 1`` model rows per text. The full text runs alone (so its probability is the one a one-text
``:predict`` answers), the ``n`` variants in batches. On the INT8 model, dynamic quantisation picks its activation
scales per run, so a variant's probability can differ by about 0.01 from the same input run alone; FP32 is exact.

Cascade (:class:`CascadeExplainer`): each text is routed as the cascade routes it (stage 1's top probability against
the threshold, :func:`~textclf.serving.cascade.stage1_answers`), and the stage that answers is explained: its
model, its tokens, the cascade's label. With ``stage2_returns: average`` the label is the argmax of the mean of both
stages, while ``probability`` and the attributions are stage 2's own probabilities of that label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from kserve.errors import InvalidInput

from textclf.serving.cascade import CascadeClassifier, ProbabilityModel, combine, stage1_answers
from textclf.serving.classical import preprocess

if TYPE_CHECKING:
    from textclf.serving.engine import OnnxTextClassifier

#: The ``method`` every explanation names.
METHOD = "occlusion"
#: The flags whose limits an explanation request can break (named in the 400 messages).
MAX_TOKENS_FLAG = "--max-explain-tokens"
MAX_INSTANCES_FLAG = "--max-explain-instances"


@dataclass(frozen=True)
class Explanation:
    """One text's explanation.

    Attributes:
        label_id: The class explained: the served answer's.
        probability: The explaining model's probability of that class for the whole text.
        tokens: The tokens attributed to, in text order.
        attributions: One per token: ``probability`` minus the probability without that token.
        stage: For a cascade, the stage whose model answered (and is explained); None otherwise.
    """

    label_id: int
    probability: float
    tokens: tuple[str, ...]
    attributions: tuple[float, ...]
    stage: int | None = None

    def to_v1(self, labels: tuple[str, ...]) -> dict[str, Any]:
        """``{"label", "label_id", "probability", ["stage"], "method", "tokens", "attributions"}``."""
        body: dict[str, Any] = {"label": labels[self.label_id], "label_id": self.label_id,
                                "probability": self.probability}
        if self.stage is not None:
            body["stage"] = self.stage
        body.update(method=METHOD, tokens=list(self.tokens), attributions=list(self.attributions))
        return body


def explanations_v1_response(
    explanations: Sequence[Explanation], labels: tuple[str, ...], model_version: str
) -> dict[str, Any]:
    """The V1 ``:explain`` response body: ``{"explanations": [...], "model_version": ...}``."""
    return {"explanations": [explanation.to_v1(labels) for explanation in explanations],
            "model_version": model_version}


@dataclass(frozen=True)
class Tokenised:
    """A text split into the tokens an explanation attributes to.

    Attributes:
        text: The raw text.
        tokens: The tokens, as shown in the response.
        token_ids: Transformer only: the model's input ids, special tokens included.
        positions: Transformer only: where each token is in ``token_ids``.
    """

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...] = ()
    positions: tuple[int, ...] = ()


class OcclusionModel(Protocol):
    """A model seen as tokens that can be left out one at a time."""

    #: What its tokens are, for the messages ("word pieces", "words").
    unit: str

    def split(self, texts: list[str]) -> list[Tokenised]:
        """The tokens of each text."""
        ...

    def full(self, tokenised: Tokenised) -> np.ndarray:
        """Probabilities ``[n_labels]`` of the whole text, run alone."""
        ...

    def occluded(self, tokenised: Tokenised) -> np.ndarray:
        """Probabilities ``[n_tokens, n_labels]``: row ``i`` without token ``i`` (at least one token)."""
        ...


def drop_each(token_ids: Sequence[int], positions: Sequence[int]) -> list[list[int]]:
    """``token_ids`` once without each of ``positions``: row ``i`` lacks the id at ``positions[i]``."""
    ids = list(token_ids)
    return [ids[:position] + ids[position + 1:] for position in positions]


def leave_each_out(words: Sequence[str]) -> list[str]:
    """The text without each word in turn, the others joined by single spaces."""
    return [" ".join([*words[:index], *words[index + 1:]]) for index in range(len(words))]


def occlusion_attributions(full: np.ndarray, occluded: np.ndarray, label_id: int) -> np.ndarray:
    """``full[label_id] - occluded[:, label_id]``: how much each left-out token's absence lowers the class's
    probability (float32 ``[n_tokens]``)."""
    return (np.float32(full[label_id]) - occluded[:, label_id].astype(np.float32)).astype(np.float32)


def classical_words(text: str) -> list[str]:
    """The classical model's tokens: whitespace words of :func:`textclf.serving.classical.preprocess`."""
    return preprocess(text).split()


class OnnxOcclusion:
    """Occlusion over the word pieces of an :class:`~textclf.serving.engine.OnnxTextClassifier` (its tokenizer, its
    truncation, its temperature); variants run through its session ``max_group_size`` rows at a time.

    Args:
        classifier: The loaded transformer.
    """

    unit = "word pieces"

    def __init__(self, classifier: OnnxTextClassifier):
        self.classifier = classifier

    def split(self, texts: list[str]) -> list[Tokenised]:
        out = []
        for text, encoding in zip(texts, self.classifier.encodings(texts), strict=True):
            positions = tuple(index for index, special in enumerate(encoding.special_tokens_mask) if not special)
            out.append(Tokenised(text, tuple(encoding.tokens[index] for index in positions), tuple(encoding.ids),
                                 positions))
        return out

    def full(self, tokenised: Tokenised) -> np.ndarray:
        return self.classifier.probabilities_of_ids([list(tokenised.token_ids)])[0]

    def occluded(self, tokenised: Tokenised) -> np.ndarray:
        return self.classifier.probabilities_of_ids(drop_each(tokenised.token_ids, tokenised.positions))


class WordOcclusion:
    """Occlusion over the words of any model that scores raw texts (the classical model, or a test's stand-in).

    Args:
        model: Raw texts in, probabilities out.
        max_group_size: Most variants per call of ``model``.
        words: A text's tokens (default: whitespace words).
    """

    unit = "words"

    def __init__(self, model: ProbabilityModel, max_group_size: int,
                 words: Callable[[str], list[str]] = str.split):
        self.model = model
        self.max_group_size = max_group_size
        self.words = words

    def split(self, texts: list[str]) -> list[Tokenised]:
        return [Tokenised(text, tuple(self.words(text))) for text in texts]

    def full(self, tokenised: Tokenised) -> np.ndarray:
        return self.model.probabilities([tokenised.text])[0]

    def occluded(self, tokenised: Tokenised) -> np.ndarray:
        variants = leave_each_out(tokenised.tokens)
        return np.concatenate([self.model.probabilities(variants[start:start + self.max_group_size])
                               for start in range(0, len(variants), self.max_group_size)])


def occlusion_model_for(model: ProbabilityModel, max_group_size: int) -> OcclusionModel:
    """The occlusion view of a loaded stage: word pieces for a transformer, words for a classical model.

    Raises:
        TypeError: Another kind of model.
    """
    from textclf.serving.classical import ClassicalTextClassifier
    from textclf.serving.engine import OnnxTextClassifier

    if isinstance(model, OnnxTextClassifier):
        return OnnxOcclusion(model)
    if isinstance(model, ClassicalTextClassifier):
        return WordOcclusion(model, max_group_size, classical_words)
    raise TypeError(f"no occlusion explanation for a {type(model).__name__}")


def check_explain_instances(count: int, max_instances: int) -> None:
    """Raises :class:`InvalidInput` (HTTP 400) when an explain request has more than ``max_instances`` texts."""
    if count > max_instances:
        raise InvalidInput(f"too many instances to explain: {count} texts in one request, at most {max_instances} "
                           f"({MAX_INSTANCES_FLAG})")


def check_explain_lengths(tokenised: Sequence[Tokenised], units: Sequence[str], max_tokens: int) -> None:
    """Raises :class:`InvalidInput` (HTTP 400) naming the first text with more than ``max_tokens`` tokens, its
    count and the limit."""
    for index, (item, unit) in enumerate(zip(tokenised, units, strict=True)):
        if len(item.tokens) > max_tokens:
            raise InvalidInput(f"instance {index}: too long to explain ({len(item.tokens)} {unit}, at most "
                               f"{max_tokens}: {MAX_TOKENS_FLAG}); send a shorter text")


@dataclass(frozen=True)
class Target:
    """What one text is explained with.

    Attributes:
        model: The model that answers it.
        label_id: The class answered; None: the model's own argmax.
        full: The model's probabilities of the whole text, when already computed (run alone); None: computed here.
        stage: The cascade stage of ``model``, or None.
    """

    model: OcclusionModel
    label_id: int | None = None
    full: np.ndarray | None = None
    stage: int | None = None


def explain_texts(texts: Sequence[str], targets: Sequence[Target], max_tokens: int) -> list[Explanation]:
    """Occlusion explanations of ``texts``, each with its target's model.

    Every text is tokenised and checked against ``max_tokens`` before any variant runs.

    Args:
        texts: Raw texts.
        targets: One per text.
        max_tokens: Most tokens per text.

    Returns:
        One explanation per text, in order.

    Raises:
        InvalidInput: A text has more than ``max_tokens`` tokens.
    """
    tokenised = [target.model.split([text])[0] for text, target in zip(texts, targets, strict=True)]
    check_explain_lengths(tokenised, [target.model.unit for target in targets], max_tokens)
    explanations = []
    for item, target in zip(tokenised, targets, strict=True):
        full = target.model.full(item) if target.full is None else target.full
        label_id = int(np.argmax(full)) if target.label_id is None else target.label_id
        occluded = target.model.occluded(item) if item.tokens else np.empty((0, len(full)), dtype=np.float32)
        attributions = occlusion_attributions(full, occluded, label_id)
        explanations.append(Explanation(label_id, float(full[label_id]), item.tokens, tuple(attributions.tolist()),
                                        target.stage))
    return explanations


class OcclusionExplainer:
    """Explains a single model's answers (a transformer or classical bundle, or one cascade stage served alone).

    Args:
        model: The model's occlusion view.
        stage: The cascade stage it is (``--cascade-stage``), or None.
    """

    def __init__(self, model: OcclusionModel, stage: int | None = None):
        self.model = model
        self.stage = stage

    def __call__(self, texts: list[str], max_tokens: int) -> list[Explanation]:
        """See :func:`explain_texts`."""
        return explain_texts(texts, [Target(self.model, stage=self.stage)] * len(texts), max_tokens)


class CascadeExplainer:
    """Explains a cascade's answers with the stage that gives them.

    Args:
        cascade: The loaded cascade.
        stage1: Occlusion view of its stage 1.
        stage2: Occlusion view of its stage 2.
    """

    def __init__(self, cascade: CascadeClassifier, stage1: OcclusionModel, stage2: OcclusionModel):
        self.cascade = cascade
        self.stages = (stage1, stage2)

    def route(self, text: str) -> Target:
        """The stage that answers ``text`` (run alone, by the cascade's rule), the cascade's class and that stage's
        own probabilities."""
        first = self.cascade.stage1.probabilities([text]).astype(np.float32)
        if stage1_answers(first, self.cascade.spec.threshold)[0]:
            return Target(self.stages[0], int(first[0].argmax()), first[0], stage=1)
        second = self.cascade.stage2.probabilities([text]).astype(np.float32)
        answer = combine(first, second, self.cascade.spec.stage2_returns)
        return Target(self.stages[1], int(answer[0].argmax()), second[0], stage=2)

    def __call__(self, texts: list[str], max_tokens: int) -> list[Explanation]:
        """See :func:`explain_texts`; each text routed first (:meth:`route`)."""
        return explain_texts(texts, [self.route(text) for text in texts], max_tokens)
