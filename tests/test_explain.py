"""``:explain``: occlusion attributions (leave one out) on hand-built models, the limits and their messages, KServe's
explain verb through the predictor, and real servers (transformer and cascade bundles) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb

from conftest import read_ag_news, requires_ag_news
from test_cascade import cascade_bundle, classical_bundle, halving_cascade, test_texts  # noqa: F401 - fixtures
from test_serving import LABELS, RunningServer, running_server, write_fake_bundle
from textclf.serving.bundle import BundleKind, load_bundle
from textclf.serving.cascade import CascadeClassifier, CascadeSpec, Stage2Returns
from textclf.serving.codec import softmax
from textclf.serving.config import ServingConfig
from textclf.serving.contract import LOGITS
from textclf.serving.engine import OnnxTextClassifier
from textclf.serving.explain import (
    CascadeExplainer,
    Explanation,
    OcclusionExplainer,
    OnnxOcclusion,
    WordOcclusion,
    check_explain_instances,
    classical_words,
    explanations_v1_response,
)
from textclf.serving.models import ServedModel
from textclf.text import normalise_text

# ---------------------------------------------------------------------------------------- hand-built models

#: Keyword -> logit added to one class, per occurrence (LABELS order: World, Sports, Business, Sci/Tech).
KEYWORDS = {"stocks": (2, 2.0), "fell": (2, 1.0), "goal": (1, 1.5), "scored": (1, 1.0), "chip": (3, 3.0)}


def keyword_logits(words: list[str]) -> np.ndarray:
    logits = np.zeros(len(LABELS), dtype=np.float32)
    for word in words:
        if word in KEYWORDS:
            label, weight = KEYWORDS[word]
            logits[label] += weight
    return logits


class KeywordModel:
    """A :class:`~textclf.serving.cascade.ProbabilityModel` over whitespace words; records each call's texts."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature
        self.calls: list[list[str]] = []

    def probabilities(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return softmax(np.stack([keyword_logits(text.split()) for text in texts]), self.temperature)


def p(words: list[str], label: int, temperature: float = 1.0) -> float:
    """The hand computation: softmax of the keyword logits, one class."""
    logits = keyword_logits(words).astype(np.float64) / temperature
    return float(np.exp(logits[label]) / np.exp(logits).sum())


def test_word_occlusion_equals_hand_computed_leave_one_out_and_runs_variants_in_chunks():
    model = KeywordModel()
    explainer = OcclusionExplainer(WordOcclusion(model, max_group_size=2))
    [explanation] = explainer(["stocks fell goal"], max_tokens=8)
    assert explanation.label_id == 2 and explanation.tokens == ("stocks", "fell", "goal")  # Business: 3.0 vs 1.5
    assert explanation.probability == pytest.approx(p(["stocks", "fell", "goal"], 2), abs=1e-6)
    full = p(["stocks", "fell", "goal"], 2)
    expected = [full - p(["fell", "goal"], 2), full - p(["stocks", "goal"], 2), full - p(["stocks", "fell"], 2)]
    np.testing.assert_allclose(explanation.attributions, expected, atol=1e-6)
    assert explanation.attributions[0] > explanation.attributions[1] > 0 > explanation.attributions[2]
    # the full text alone, then the three variants two at a time
    assert model.calls == [["stocks fell goal"], ["fell goal", "stocks goal"], ["stocks fell"]]
    assert explanation.stage is None


def test_onnx_occlusion_drops_each_word_piece_position_and_keeps_specials_truncation_and_temperature(tmp_path):
    """A stand-in ONNX session (logits from the ids and the sequence length) behind the real tokenizer path."""
    bundle = load_bundle(write_fake_bundle(tmp_path / "bundle"))  # WordLevel vocab, max_length 5 with [CLS]/[SEP]
    vocab_labels = {4: 2, 5: 2, 6: 1, 7: 1}  # stocks, fell -> Business; goal, scored -> Sports

    def logits_of(ids: list[int]) -> np.ndarray:
        logits = np.zeros(len(LABELS), dtype=np.float32)
        for position, token in enumerate(ids):
            if token in vocab_labels:
                logits[vocab_labels[token]] += 1.0 + 0.25 * position  # position matters: dropping shifts later ones
        logits[0] += 0.1 * len(ids)
        return logits

    class Session:
        def __init__(self):
            self.feeds: list[dict[str, np.ndarray]] = []

        def run(self, names, feeds):
            assert names == [LOGITS]
            self.feeds.append(feeds)
            rows = [ids[mask == 1].tolist() for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"],
                                                                 strict=True)]
            return [np.stack([logits_of(row) for row in rows])]

    session = Session()
    classifier = OnnxTextClassifier(session, bundle.load_tokenizer(), max_group_size=2, temperature=2.0)
    occlusion = OnnxOcclusion(classifier)
    [explanation] = OcclusionExplainer(occlusion)(["stocks fell,  goal scored"], max_tokens=8)
    # normalised, tokenised as predict does, truncated to max_length 5: [CLS] stocks fell goal [SEP] (',' is [UNK])
    full_ids = [2, 4, 5, 1, 3]
    assert [encoding.ids for encoding in classifier.encodings(["stocks fell,  goal scored"])] == [full_ids]
    assert explanation.tokens == ("stocks", "fell", "[UNK]")
    variants = [[2, 5, 1, 3], [2, 4, 1, 3], [2, 4, 5, 3]]
    sent = [row.tolist() for feeds in session.feeds for row in feeds["input_ids"]]
    assert sent == [full_ids, *variants], "the full text alone, then each word piece's position dropped"
    assert [len(feeds["input_ids"]) for feeds in session.feeds] == [1, 2, 1], "variants in runs of max_group_size"
    assert all(feeds["attention_mask"].all() for feeds in session.feeds), "equal lengths: no padding"

    def prob(ids: list[int]) -> np.ndarray:
        logits = logits_of(ids).astype(np.float64) / 2.0
        return np.exp(logits) / np.exp(logits).sum()

    label = int(prob(full_ids).argmax())
    assert explanation.label_id == label == 2
    assert explanation.probability == pytest.approx(prob(full_ids)[label], abs=1e-6)
    np.testing.assert_allclose(explanation.attributions,
                               [prob(full_ids)[label] - prob(ids)[label] for ids in variants], atol=1e-6)
    # the same probabilities as predict's path for the whole text
    np.testing.assert_allclose(classifier.probabilities(["stocks fell,  goal scored"])[0], prob(full_ids), atol=1e-6)


def test_classical_words_are_the_preprocessed_whitespace_words():
    assert classical_words("Stocks  FELL #39;sharply&quot;\\today") == ["stocks", "fell", "'sharply\"", "today"]
    assert " ".join(classical_words("A  b\tC")) == normalise_text("A  b\tC").lower()


def test_texts_over_the_token_limit_are_refused_naming_index_count_and_limit():
    model = KeywordModel()
    explainer = OcclusionExplainer(WordOcclusion(model, max_group_size=4))
    with pytest.raises(InvalidInput) as excinfo:
        explainer(["goal", "stocks fell goal scored", "chip"], max_tokens=3)
    assert str(excinfo.value) == ("instance 1: too long to explain (4 words, at most 3: --max-explain-tokens); send "
                                  "a shorter text")
    assert model.calls == [], "checked before anything runs"
    with pytest.raises(InvalidInput, match=r"too many instances to explain: 9 texts in one request, at most 8 "
                                           r"\(--max-explain-instances\)"):
        check_explain_instances(9, 8)
    check_explain_instances(8, 8)


def test_a_text_without_tokens_gets_an_empty_explanation():
    model = KeywordModel()
    [explanation] = OcclusionExplainer(WordOcclusion(model, 4, words=lambda text: []))(["goal"], max_tokens=4)
    assert explanation.tokens == () and explanation.attributions == () and model.calls == [["goal"]]


def test_v1_response_shape():
    explanations = [Explanation(1, 0.75, ("goal", "!"), (0.5, -0.01)), Explanation(3, 0.5, ("chip",), (0.25,), 2)]
    body = explanations_v1_response(explanations, LABELS, "v-1")
    assert body == {"explanations": [
        {"label": "Sports", "label_id": 1, "probability": 0.75, "method": "occlusion", "tokens": ["goal", "!"],
         "attributions": [0.5, -0.01]},
        {"label": "Sci/Tech", "label_id": 3, "probability": 0.5, "stage": 2, "method": "occlusion",
         "tokens": ["chip"], "attributions": [0.25]},
    ], "model_version": "v-1"}
    json.dumps(body)  # plain JSON types


@pytest.mark.parametrize("returns", list(Stage2Returns))
def test_cascade_explains_the_stage_that_answers(returns):
    stage1, stage2 = KeywordModel(temperature=4.0), KeywordModel()  # stage 1 is sure only of strong keywords
    spec = CascadeSpec(0.5, returns, LABELS)
    cascade = CascadeClassifier(stage1, stage2, spec)
    explainer = CascadeExplainer(cascade, WordOcclusion(stage1, 8), WordOcclusion(stage2, 8))
    texts = ["chip chip chip", "goal fell"]
    answers = cascade.score(texts)
    explanations = explainer(texts, max_tokens=8)
    assert [e.stage for e in explanations] == answers.stages.tolist() == [1, 2]
    assert [e.label_id for e in explanations] == answers.probabilities.argmax(-1).tolist()
    sure, unsure = explanations
    assert sure.probability == pytest.approx(p(["chip"] * 3, 3, 4.0), abs=1e-6)
    np.testing.assert_allclose(sure.attributions, [p(["chip"] * 3, 3, 4.0) - p(["chip"] * 2, 3, 4.0)] * 3,
                               atol=1e-6)
    label = unsure.label_id
    assert unsure.probability == pytest.approx(p(["goal", "fell"], label), abs=1e-6), "stage 2's own probability"
    np.testing.assert_allclose(unsure.attributions, [p(["goal", "fell"], label) - p(["fell"], label),
                                                     p(["goal", "fell"], label) - p(["goal"], label)], atol=1e-6)
    assert ["chip chip"] * 3 in stage1.calls and ["fell", "goal"] in stage2.calls, "each stage ran its variants"


# ------------------------------------------------------------------------------ KServe's verb, the predictor


def stub_predictor(max_explain_instances: int = 2, explain=True):
    from textclf.serving.predictor import TextClassifierPredictor

    config = ServingConfig(model_dir="/nowhere", max_explain_instances=max_explain_instances, max_explain_tokens=3)
    predictor = TextClassifierPredictor(config)
    model = KeywordModel()
    predictor.served = ServedModel(BundleKind.CLASSICAL, LABELS, "v-7", lambda texts: [],
                                   explain=OcclusionExplainer(WordOcclusion(model, 4)) if explain else None)
    predictor.model_version = "v-7"
    predictor._explainer = ThreadPoolExecutor(max_workers=1)
    return predictor, model


def test_kserve_explain_verb_runs_preprocess_explain_postprocess_in_the_explanation_thread():
    predictor, model = stub_predictor()
    body, _headers = asyncio.run(predictor({"instances": ["goal scored", {"text": "chip"}]}, headers={},
                                           verb=InferenceVerb.EXPLAIN))
    assert body["model_version"] == "v-7" and [e["label"] for e in body["explanations"]] == ["Sports", "Sci/Tech"]
    assert body["explanations"][0]["tokens"] == ["goal", "scored"] and len(body["explanations"][0]["attributions"]) == 2
    assert model.calls[0] == ["goal scored"]
    for payload, message in [({"instances": []}, "empty request"), ({"instances": ["a", "b", "c"]},
                                                                    "too many instances to explain: 3"),
                             ({"instances": ["a b c d"]}, "instance 0: too long to explain (4 words, at most 3")]:
        with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
            asyncio.run(predictor(payload, headers={}, verb=InferenceVerb.EXPLAIN))
    predictor.stop()
    no_explain, _ = stub_predictor(explain=False)
    with pytest.raises(NotImplementedError, match="has no explanations"):
        asyncio.run(no_explain({"instances": ["goal"]}, headers={}, verb=InferenceVerb.EXPLAIN))
    no_explain.stop()


def test_explain_limits_are_config_fields_and_flags(tmp_path):
    from textclf.serving.__main__ import config_from_args

    default = ServingConfig(model_dir="/m")
    assert (default.max_explain_instances, default.max_explain_tokens) == (8, 128)
    config = config_from_args(["--model-dir", "/m", "--max-explain-tokens", "40", "--max-explain-instances", "2"])
    assert (config.max_explain_instances, config.max_explain_tokens) == (2, 40)
    assert "--max-explain-tokens=40" in config.to_args() and config_from_args(config.to_args()) == config
    for name in ("max_explain_tokens", "max_explain_instances"):
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            ServingConfig(model_dir="/m", **{name: 0})


# ------------------------------------------------------------------------------------------ real servers (slow)

EXPLAIN_LIMIT = 64


def offline_model(model_dir: Path):
    """onnxruntime + tokenizers directly (no server code): the tokenizer and a function ids -> probabilities, one
    input per run."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    metadata = json.loads((model_dir / "export_metadata.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=metadata["max_length"])
    tokenizer.no_padding()
    session = ort.InferenceSession(str(model_dir / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    temperature = float(metadata.get("temperature", 1.0))

    def probabilities(ids: list[int]) -> np.ndarray:
        batch = np.array([ids], dtype=np.int64)
        logits = session.run(["logits"], {"input_ids": batch, "attention_mask": np.ones_like(batch)})[0][0]
        scaled = logits.astype(np.float64) / temperature
        return np.exp(scaled - scaled.max()) / np.exp(scaled - scaled.max()).sum()

    return tokenizer, probabilities


@pytest.fixture(scope="module")
def explain_server(exported_tiny_model, tmp_path_factory) -> Iterator[RunningServer]:
    with running_server(exported_tiny_model, tmp_path_factory.mktemp("explain"),
                        ("--max-explain-tokens", str(EXPLAIN_LIMIT), "--max-explain-instances", "5")) as running:
        yield running


@pytest.fixture(scope="module")
def short_texts(exported_tiny_model) -> list[str]:
    """10 real AG News test texts (title and description) of at most :data:`EXPLAIN_LIMIT` word pieces."""
    tokenizer, _ = offline_model(exported_tiny_model)
    frame = read_ag_news("test").iloc[:60]
    texts = [text for text in (frame["title"] + " " + frame["description"]).tolist()
             if len(tokenizer.encode(normalise_text(text)).ids) - 2 <= EXPLAIN_LIMIT]
    assert len(texts) >= 10
    return texts[:10]


def post(server: RunningServer, verb: str, body: bytes | dict) -> httpx.Response:
    url = f"{server.http}/v1/models/textclf:{verb}"
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    return httpx.post(url, json=body, timeout=60)


@pytest.mark.slow
@requires_ag_news
def test_transformer_explanations_attribute_every_word_piece_and_agree_with_predict(explain_server, short_texts):
    tokenizer, probabilities = offline_model(explain_server.model_dir)
    labels = json.loads((explain_server.model_dir / "labels.json").read_text())["labels"]
    explanations = []
    for start in (0, 5):
        response = post(explain_server, "explain", {"instances": short_texts[start:start + 5]})
        assert response.status_code == 200, response.text
        explanations.extend(response.json()["explanations"])
    assert response.json()["model_version"] == post(explain_server, "predict", {"instances": ["x"]}).json()[
        "model_version"]
    lowered = 0
    for text, explanation in zip(short_texts, explanations, strict=True):
        encoding = tokenizer.encode(normalise_text(text))
        positions = [i for i, special in enumerate(encoding.special_tokens_mask) if not special]
        assert explanation["method"] == "occlusion" and "stage" not in explanation
        assert explanation["tokens"] == [encoding.tokens[i] for i in positions]
        assert len(explanation["attributions"]) == len(explanation["tokens"]) == len(positions)
        prediction = post(explain_server, "predict", {"instances": [text]}).json()["predictions"][0]
        assert (explanation["label"], explanation["label_id"]) == (prediction["label"], prediction["label_id"])
        assert explanation["probability"] == pytest.approx(prediction["scores"][explanation["label"]], abs=1e-6)
        # Checked on the model directly (onnxruntime, one input per run, no server code): the text's word pieces
        # without the top-attributed one. (Rebuilding a text without a word piece and sending it to :predict would
        # re-tokenise it differently.)
        label, ids = explanation["label_id"], list(encoding.ids)
        full = probabilities(ids)[label]
        assert full == pytest.approx(explanation["probability"], abs=1e-5)
        offline = [full - probabilities(ids[:position] + ids[position + 1:])[label] for position in positions]
        top = int(np.argmax(explanation["attributions"]))
        lowered += offline[top] > 0
        # the served variants ran in batches: INT8 scales per run move them by ~0.01 from these one-input runs
        np.testing.assert_allclose(explanation["attributions"], offline, atol=0.03)
        assert labels[label] == explanation["label"]
    assert lowered >= 8, f"removing the top-attributed word piece lowered the probability on {lowered} of 10 texts"


@pytest.mark.slow
@requires_ag_news
def test_transformer_explain_refuses_long_texts_and_bad_bodies_with_400(explain_server, short_texts):
    tokenizer, _ = offline_model(explain_server.model_dir)
    long_text = " ".join(short_texts[:6])
    count = len(tokenizer.encode(normalise_text(long_text)).ids) - 2  # truncated to the bundle's max length
    assert count > EXPLAIN_LIMIT
    cases = [
        (json.dumps({"instances": [short_texts[0], long_text]}).encode(),
         f"instance 1: too long to explain ({count} word pieces, at most {EXPLAIN_LIMIT}: --max-explain-tokens)"),
        (json.dumps({"instances": short_texts[:6]}).encode(),
         "too many instances to explain: 6 texts in one request, at most 5 (--max-explain-instances)"),
        (b'{"instances": []}', "empty request"),
        (b'{"instances": [""]}', "instance 0: empty text"),
        (b'{"instances": ["ok", 42]}', "instance 1: expected a string, got int"),
        (b'{"instances": ["unterminated', "Unrecognized request format"),
        (b'{"text": "no instances"}', 'expected a JSON object {"instances"'),
    ]
    failures = []
    for body, message in cases:
        response = post(explain_server, "explain", body)
        error = response.json().get("error", "") if response.status_code == 400 else response.text
        if response.status_code != 400 or message not in error:
            failures.append((body[:60], message, response.status_code, error[:200]))
    assert not failures, failures
    assert post(explain_server, "explain", {"instances": short_texts[:1]}).status_code == 200, "still serving"


@pytest.mark.slow
@requires_ag_news
def test_cascade_explanations_carry_the_stage_that_answers(halving_cascade, test_texts, tmp_path):  # noqa: F811
    texts = test_texts[:16]
    # the classical stage's words are not truncated: one of these texts has 136
    with running_server(halving_cascade, tmp_path, ("--max-explain-tokens", "256")) as server:
        predictions = [post(server, "predict", {"instances": [text]}).json()["predictions"][0] for text in texts]
        explanations = []
        for start in range(0, len(texts), 8):
            response = post(server, "explain", {"instances": texts[start:start + 8]})
            assert response.status_code == 200, response.text
            explanations.extend(response.json()["explanations"])
    stages = [prediction["stage"] for prediction in predictions]
    assert {1, 2} <= set(stages), "the halving threshold sends texts both ways"
    assert [explanation["stage"] for explanation in explanations] == stages
    assert [explanation["label"] for explanation in explanations] == [p["label"] for p in predictions]
    stage2_tokenizer, _ = offline_model(halving_cascade / "stage2")
    for text, explanation, prediction in zip(texts, explanations, predictions, strict=True):
        assert len(explanation["tokens"]) == len(explanation["attributions"]) > 0
        # stage2_returns is "stage2": the answer is the answering stage's own probability
        assert explanation["probability"] == pytest.approx(prediction["scores"][explanation["label"]], abs=1e-6)
        if explanation["stage"] == 1:
            assert explanation["tokens"] == classical_words(text), "the classical stage: words"
        else:
            encoding = stage2_tokenizer.encode(normalise_text(text))
            assert explanation["tokens"] == [token for token, special in
                                             zip(encoding.tokens, encoding.special_tokens_mask, strict=True)
                                             if not special], "the transformer stage: word pieces"
