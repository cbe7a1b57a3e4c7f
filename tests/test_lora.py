"""LoRA for any architecture: the target modules found from the model's type (or given by name), and per family a
tiny randomly initialised model built from a config (no downloads; the packaged MiniLM tokenizer) trained with
LoRA on real AG News rows, merged, and exported through the ONNX parity gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import requires_ag_news
from textclf.config import ExportConfig, TrainConfig, default_base_model
from textclf.errors import ConfigError
from textclf.train.lora import LORA_TARGETS, known_targets, linear_module_names, lora_target_modules

SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _configs() -> dict[str, object]:
    """model_type -> a tiny config of that family, sized for the packaged tokenizer (BERT WordPiece, pad id 0)."""
    from transformers import (BertConfig, DebertaV2Config, DistilBertConfig, LlamaConfig, MPNetConfig,
                              RobertaConfig)

    vocab = {"vocab_size": 30522, "pad_token_id": 0}
    return {
        "bert": BertConfig(**vocab, **SIZE, max_position_embeddings=64),
        "distilbert": DistilBertConfig(**vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                       max_position_embeddings=64),
        "roberta": RobertaConfig(**vocab, **SIZE, max_position_embeddings=72),
        "deberta-v2": DebertaV2Config(**vocab, **SIZE, max_position_embeddings=64, relative_attention=True,
                                      pos_att_type=["p2c", "c2p"], position_buckets=16),
        "mpnet": MPNetConfig(**vocab, **SIZE, max_position_embeddings=72),
        "llama": LlamaConfig(**vocab, **SIZE, num_key_value_heads=2, max_position_embeddings=64),
    }


FAMILIES = ["bert", "distilbert", "roberta", "deberta-v2", "mpnet", "llama"]


def _model(model_type: str):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = _configs()[model_type]
    config.num_labels = 4
    return AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_every_family_has_its_attention_projections_as_targets(model_type):
    model = _model(model_type)
    assert model.config.model_type == model_type
    targets = lora_target_modules(model)
    assert targets == list(LORA_TARGETS[model_type]) and len(targets) == 3
    assert set(targets) <= set(linear_module_names(model))


def test_peft_table_covers_other_architectures_and_ours_wins_where_both_know():
    assert known_targets("gpt2") == ("c_attn",)  # PEFT's table
    assert known_targets("bert") == ("query", "key", "value")  # ours (PEFT adapts query and value only)
    assert known_targets("no-such-architecture") is None


def test_given_targets_are_used_and_checked_against_the_model():
    model = _model("llama")
    assert lora_target_modules(model, ("q_proj", "v_proj")) == ["q_proj", "v_proj"]
    assert lora_target_modules(model, ("self_attn.q_proj",)) == ["self_attn.q_proj"]  # a dotted suffix, as PEFT
    with pytest.raises(ConfigError, match=r"\['query'\] match no Linear module of this llama model; its Linear "
                                          r"modules are named \[.*'q_proj'"):
        lora_target_modules(model, ("q_proj", "query"))


def test_an_architecture_with_no_known_targets_and_none_given_is_refused():
    model = _model("bert")
    model.config.model_type = "home-made"
    with pytest.raises(ConfigError, match=r"no known LoRA target modules for model_type 'home-made': pass "
                                          r"lora_target_modules .*'query'"):
        lora_target_modules(model)


@pytest.mark.parametrize(("value", "expected"), [("q_proj, v_proj", ("q_proj", "v_proj")), ("", ()),
                                                 (["query", "value"], ("query", "value"))])
def test_train_config_reads_target_modules_from_a_parameter_or_json(value, expected):
    assert TrainConfig(lora_target_modules=value).lora_target_modules == expected


@pytest.mark.parametrize(("field", "value"), [("lora_dropout", 1.0), ("lora_alpha", 0),
                                              ("lora_target_modules", "q,q"), ("lora_r", 0)])
def test_bad_lora_settings_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=f"invalid {field}"):
        TrainConfig(**{field: value})


def test_default_targets_do_not_change_the_run_key_of_existing_runs():
    from textclf.train.train import run_key

    assert run_key(TrainConfig(method="lora"), {"train": "x"}) == run_key(
        TrainConfig(method="lora", lora_target_modules=""), {"train": "x"})
    assert run_key(TrainConfig(method="lora"), {"train": "x"}) != run_key(
        TrainConfig(method="lora", lora_target_modules="query"), {"train": "x"})


@pytest.fixture(scope="module")
def lora_splits(small_splits, tmp_path_factory) -> Path:
    """``small_splits`` with 32 train and 16 validation rows."""
    out = tmp_path_factory.mktemp("lora_splits") / "splits"
    shutil.copytree(small_splits, out)
    for name, rows in (("train", 32), ("validation", 16)):
        frame = pd.read_parquet(out / f"{name}.parquet")
        frame.sample(n=rows, random_state=0).to_parquet(out / f"{name}.parquet", index=False)
    return out


@requires_ag_news
@pytest.mark.parametrize("model_type", FAMILIES)
def test_lora_trains_merges_and_exports_through_the_parity_gate(model_type, lora_splits, tmp_path):
    from transformers import AutoTokenizer

    from textclf.export import export_model
    from textclf.train import train_model

    base = tmp_path / "base"
    _model(model_type).save_pretrained(base)
    AutoTokenizer.from_pretrained(default_base_model()).save_pretrained(base)
    config = TrainConfig(base_model=str(base), method="lora", epochs=1, batch_size=16, max_length=32,
                         checkpoint_steps=100, early_stopping_patience=0, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         seed=1)
    result = train_model(lora_splits, config, tmp_path / "model", progress=False)
    weights = {p.name for p in (tmp_path / "model").iterdir()}
    assert "model.safetensors" in weights and "adapter_config.json" not in weights  # merged into plain weights
    parity_texts = tmp_path / "parity.parquet"
    pd.read_parquet(lora_splits / "test.parquet")[["text"]].head(24).to_parquet(parity_texts, index=False)
    # Random tiny models' logits sit close together, so INT8 argmax agreement says little here; fp32 is exact.
    exported = export_model(result.model_dir, parity_texts, ExportConfig(min_int8_agreement=0.5), tmp_path / "onnx")
    assert exported.parity["passed"] and exported.parity["fp32_argmax_agreement"] == 1.0
    assert exported.parity["fp32_max_abs_logit_diff"] <= ExportConfig().max_abs_logit_diff
    assert (tmp_path / "onnx").is_dir()
