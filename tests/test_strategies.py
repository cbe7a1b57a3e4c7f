"""Training strategies (``textclf.train.strategies``): each option at its neutral setting trains exactly as before;
gradient accumulation and checkpointing give the weights of the plain step; FGM/PGD change only the gradients
(the embeddings are put back and the saved model is the plain architecture); class weights, layer-wise learning
rates and the curriculum do what they say; bf16 runs where the CPU has it and is refused clearly where not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import requires_ag_news
from textclf.config import Adversarial, Precision, TrainConfig, default_base_model
from textclf.errors import ConfigError, HardwareUnavailableError
from textclf.train.strategies import (
    BF16_CPU_FLAGS,
    LengthCurriculumSampler,
    TrainStrategy,
    balanced_class_weights,
    cpu_flags,
    layer_depth,
    layerwise_lr_groups,
    resolve_precision,
    strategy_trainer_class,
)

LAYERS = 2


def _tiny_bert():
    """A 2-layer BERT without dropout (so two ways of computing one step agree to rounding)."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, pad_token_id=0, hidden_size=32, num_hidden_layers=LAYERS,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=4)
    return AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("bad, message", [
    ({"precision": "fp8"}, "precision must be one of fp32, bf16, fp16, auto"),
    ({"class_weights": "inverse"}, "class_weights must be one of none, balanced"),
    ({"adversarial": "fgsm"}, "adversarial must be one of none, fgm, pgd"),
    ({"curriculum": "loss"}, "curriculum must be one of none, length"),
    ({"gradient_accumulation_steps": 0}, "invalid gradient_accumulation_steps"),
    ({"batch_size": 32, "gradient_accumulation_steps": 3}, "batch_size 32 is not divisible by gradient_accumulation"),
    ({"layerwise_lr_decay": 0.0}, "invalid layerwise_lr_decay"),
    ({"layerwise_lr_decay": 1.5}, "invalid layerwise_lr_decay"),
    ({"adversarial_epsilon": 0.0}, "invalid adversarial_epsilon"),
    ({"pgd_steps": 0}, "invalid pgd_steps"),
    ({"gradient_checkpointing": "maybe"}, "gradient_checkpointing must be true or false"),
])
def test_bad_strategy_settings_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**bad)


def test_a_string_bool_is_read_as_a_pipeline_parameter_spells_it():
    assert TrainConfig(gradient_checkpointing="true").gradient_checkpointing is True
    assert TrainConfig(gradient_checkpointing="False").gradient_checkpointing is False


def test_neutral_settings_keep_the_run_key_of_runs_recorded_before_the_options_existed():
    from textclf.train.train import run_key

    before = run_key(TrainConfig(), {"train": "x"})
    assert run_key(TrainConfig(precision="fp32", class_weights="none", curriculum="none"), {"train": "x"}) == before
    for changed in ({"precision": "bf16"}, {"gradient_accumulation_steps": 2}, {"gradient_checkpointing": True},
                    {"class_weights": "balanced"}, {"layerwise_lr_decay": 0.9}, {"adversarial": "fgm"},
                    {"curriculum": "length"}):
        assert run_key(TrainConfig(**changed), {"train": "x"}) != before, changed


def test_precision_is_resolved_from_the_hardware():
    assert resolve_precision("auto", cuda=False, flags={"avx2", "avx512_bf16"}) is Precision.BF16
    assert resolve_precision("auto", cuda=False, flags={"avx2", "amx_bf16"}) is Precision.BF16
    assert resolve_precision("auto", cuda=False, flags={"avx2", "avx512f"}) is Precision.FP32
    assert resolve_precision("fp32", cuda=False, flags=set()) is Precision.FP32
    assert resolve_precision("bf16", cuda=False, flags={"avx512_bf16"}) is Precision.BF16
    with pytest.raises(HardwareUnavailableError, match="none of the flags avx512_bf16, amx_bf16"):
        resolve_precision("bf16", cuda=False, flags={"avx2"})
    with pytest.raises(HardwareUnavailableError, match="'fp16' needs a CUDA GPU"):
        resolve_precision("fp16", cuda=False, flags={"avx512_bf16"})


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == set()


def test_balanced_class_weights_are_inverse_frequencies():
    assert balanced_class_weights([0, 0, 0, 1], 3) == [4 / 9, 4 / 3, 0.0]
    with pytest.raises(ConfigError, match="needs training rows"):
        balanced_class_weights([], 3)


def test_layer_depths_and_layerwise_learning_rates():
    model = _tiny_bert()
    assert layer_depth("bert.embeddings.word_embeddings.weight", LAYERS) == 0
    assert layer_depth("bert.encoder.layer.0.attention.self.query.weight", LAYERS) == 1
    assert layer_depth("bert.encoder.layer.1.output.dense.bias", LAYERS) == 2
    assert layer_depth("classifier.weight", LAYERS) == LAYERS + 1
    assert layer_depth("model.layers.1.self_attn.q_proj.weight", LAYERS) == 2  # Llama-style names
    groups = layerwise_lr_groups(model, 1e-3, 0.5, 0.01, {"classifier.weight"})
    by_param = {id(p): group for group in groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["classifier.weight"])]["lr"] == pytest.approx(1e-3)
    assert by_param[id(named["classifier.weight"])]["weight_decay"] == 0.01
    assert by_param[id(named["classifier.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["bert.encoder.layer.1.output.dense.weight"])]["lr"] == pytest.approx(5e-4)
    assert by_param[id(named["bert.encoder.layer.0.output.dense.weight"])]["lr"] == pytest.approx(2.5e-4)
    assert by_param[id(named["bert.embeddings.word_embeddings.weight"])]["lr"] == pytest.approx(1.25e-4)
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_length_curriculum_goes_short_to_long_then_shuffles():
    lengths = [(i * 37) % 100 for i in range(100)]
    sampler = LengthCurriculumSampler(lengths, window=10, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(100))
    windows = [first[i:i + 10] for i in range(0, 100, 10)]
    for earlier, later in zip(windows, windows[1:]):
        assert max(lengths[i] for i in earlier) <= min(lengths[i] for i in later)
    assert first != sorted(first, key=lambda i: lengths[i])  # shuffled inside its windows
    assert list(LengthCurriculumSampler(lengths, window=10, seed=3)) == first  # deterministic: a resume skips it
    sampler.set_epoch(1)
    later = list(sampler)
    assert sorted(later) == list(range(100)) and later != first
    with pytest.raises(ConfigError, match="window must be >= 1"):
        LengthCurriculumSampler(lengths, window=0, seed=3)


# --- the Trainer subclass on a tiny model and a hand-made batch ------------------------------------------------

def _trainer(tmp_path: Path, strategy: TrainStrategy, model=None, **arguments):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], learning_rate=1e-3,
                             per_device_train_batch_size=4, **arguments)
    trainer = strategy_trainer_class(Trainer)(model=model or _tiny_bert(), args=args, strategy=strategy)
    trainer.current_gradient_accumulation_steps = 1  # what the training loop sets before each step
    return trainer


def _batch():
    import torch

    torch.manual_seed(1)
    ids = torch.randint(1000, 2000, (4, 12))
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}


def test_neutral_strategy_loss_is_plain_cross_entropy_and_weights_reweight_it(tmp_path):
    import torch
    import torch.nn.functional as F

    model = _tiny_bert().train()
    batch = _batch()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        plain = float(F.cross_entropy(logits, batch["labels"]))
        neutral = float(_trainer(tmp_path, TrainStrategy(), model).compute_loss(model, batch))
        ones = float(_trainer(tmp_path, TrainStrategy(class_weights=(1.0,) * 4), model).compute_loss(model, batch))
        weights = (1.0, 2.0, 0.5, 3.0)
        weighted = float(_trainer(tmp_path, TrainStrategy(class_weights=weights), model).compute_loss(model, batch))
        expected = float(F.cross_entropy(logits, batch["labels"], weight=torch.tensor(weights)))
        model.eval()  # validation: unweighted, comparable across runs
        validation = float(_trainer(tmp_path, TrainStrategy(class_weights=weights), model).compute_loss(model, batch))
    assert neutral == pytest.approx(plain, abs=1e-6) and ones == pytest.approx(plain, abs=1e-6)
    assert weighted == pytest.approx(expected, abs=1e-6) and weighted != pytest.approx(plain, abs=1e-4)
    assert validation == pytest.approx(plain, abs=1e-6)


def test_class_weights_are_refused_with_a_loss_of_its_own(tmp_path):
    from transformers import Trainer, TrainingArguments

    class OwnLoss(Trainer):
        pass

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    with pytest.raises(ConfigError, match="OwnLoss has its own loss"):
        strategy_trainer_class(OwnLoss)(model=_tiny_bert(), args=args, strategy=TrainStrategy(class_weights=(1.0,)))


def test_neutral_optimiser_and_sampler_are_the_trainers_own(tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from textclf.train.train import EncodedTexts

    trainer = _trainer(tmp_path, TrainStrategy(), train_sampling_strategy="group_by_length")
    assert len(trainer.create_optimizer().param_groups) == 2  # decayed and not, at one learning rate
    decayed = _trainer(tmp_path, TrainStrategy(layerwise_lr_decay=0.8))
    rates = sorted({group["lr"] for group in decayed.create_optimizer().param_groups})
    assert rates == pytest.approx([1e-3 * 0.8 ** k for k in range(LAYERS + 1, -1, -1)])
    trainer.train_dataset = EncodedTexts({"input_ids": [[1, 2]] * 8, "attention_mask": [[1, 1]] * 8}, [0] * 8)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    curriculum = _trainer(tmp_path, TrainStrategy(curriculum_lengths=(3, 1, 2), curriculum_window=1))
    assert list(curriculum._get_train_sampler()) == [1, 2, 0]


@pytest.mark.parametrize("method", [Adversarial.FGM, Adversarial.PGD])
def test_adversarial_training_changes_only_the_gradients(method, tmp_path):
    import torch

    batch = _batch()
    grads = {}
    for name, strategy in (("plain", TrainStrategy()),
                           ("adversarial", TrainStrategy(adversarial=method, adversarial_epsilon=1.0, pgd_steps=3))):
        trainer = _trainer(tmp_path, strategy)
        trainer.create_optimizer()
        before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.training_step(trainer.model, dict(batch))
        after = trainer.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "weights must be put back exactly"
        grads[name] = {k: p.grad.detach().clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
    assert grads["plain"].keys() == grads["adversarial"].keys()
    changed = [k for k in grads["plain"] if not torch.allclose(grads["plain"][k], grads["adversarial"][k])]
    assert "classifier.weight" in changed and len(changed) > len(grads["plain"]) // 2


def test_adversarial_training_needs_embedding_gradients(tmp_path):
    model = _tiny_bert()
    model.get_input_embeddings().weight.requires_grad_(False)
    trainer = _trainer(tmp_path, TrainStrategy(adversarial=Adversarial.FGM), model)
    trainer.create_optimizer()
    with pytest.raises(ConfigError, match="word embeddings along their gradient, and they have none"):
        trainer.training_step(trainer.model, _batch())


# --- through train_model on real rows --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strategy_splits(small_splits, tmp_path_factory) -> Path:
    """``small_splits`` with 48 train and 16 validation rows."""
    out = tmp_path_factory.mktemp("strategy_splits") / "splits"
    shutil.copytree(small_splits, out)
    for name, rows in (("train", 48), ("validation", 16)):
        frame = pd.read_parquet(out / f"{name}.parquet")
        frame.sample(n=rows, random_state=0).to_parquet(out / f"{name}.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    base = tmp_path_factory.mktemp("strategy_base") / "base"
    _tiny_bert().save_pretrained(base)
    AutoTokenizer.from_pretrained(default_base_model()).save_pretrained(base)
    return base


def _train(splits: Path, base: Path, out: Path, **options):
    from textclf.train import train_model

    # 48 rows, batch 16: 3 optimiser steps (the first at learning rate 0: one warm-up step).
    config = TrainConfig(base_model=str(base), epochs=1, batch_size=16, learning_rate=1e-3, max_length=32,
                         checkpoint_steps=100, early_stopping_patience=0, seed=5, **options)
    return train_model(splits, config, out, progress=False)


def _weights(model_dir: Path):
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


@pytest.fixture(scope="module")
def plain_run(strategy_splits, tiny_base, tmp_path_factory):
    return _train(strategy_splits, tiny_base, tmp_path_factory.mktemp("plain") / "model")


@requires_ag_news
@pytest.mark.parametrize("options", [{"gradient_accumulation_steps": 4}, {"gradient_checkpointing": True}])
def test_accumulation_and_checkpointing_give_the_plain_steps_weights(options, plain_run, strategy_splits,
                                                                     tiny_base, tmp_path):
    import torch

    result = _train(strategy_splits, tiny_base, tmp_path / "model", **options)
    assert result.summary["global_steps"] == plain_run.summary["global_steps"] == 3
    if "gradient_accumulation_steps" in options:
        assert result.summary["micro_batch_size"] == 4
    plain, other = _weights(plain_run.model_dir), _weights(result.model_dir)
    assert plain.keys() == other.keys()
    base = _weights(tiny_base)
    assert not torch.equal(plain["classifier.weight"], base["classifier.weight"])  # it did train
    for name in plain:
        torch.testing.assert_close(other[name], plain[name], rtol=1e-4, atol=1e-5, msg=name)


@requires_ag_news
def test_each_strategy_trains_and_saves_the_plain_architecture(plain_run, strategy_splits, tiny_base, tmp_path):
    import torch

    plain = _weights(plain_run.model_dir)
    for i, options in enumerate([{"class_weights": "balanced"}, {"layerwise_lr_decay": 0.5},
                                 {"adversarial": "fgm"}, {"adversarial": "pgd", "pgd_steps": 2},
                                 {"curriculum": "length"}, {"label_smoothing": 0.1}]):
        result = _train(strategy_splits, tiny_base, tmp_path / f"model{i}", **options)
        weights = _weights(result.model_dir)
        assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in plain.items()}, options
        assert not torch.allclose(weights["classifier.weight"], plain["classifier.weight"]), options
        assert torch.isfinite(torch.tensor(result.summary["train_loss"])), options
    assert result.summary["strategy"]["curriculum"] == "none"  # the last run: label smoothing alone


@requires_ag_news
def test_bf16_trains_where_the_cpu_has_it_and_is_refused_where_not(strategy_splits, tiny_base, tmp_path):
    import torch

    if not cpu_flags() & set(BF16_CPU_FLAGS):
        with pytest.raises(HardwareUnavailableError, match="none of the flags avx512_bf16, amx_bf16"):
            _train(strategy_splits, tiny_base, tmp_path / "model", precision="bf16")
        assert not (tmp_path / "model").exists()
        return
    result = _train(strategy_splits, tiny_base, tmp_path / "model", precision="auto")
    assert result.summary["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in _weights(result.model_dir).values())  # master weights saved


# --- make bench-strategies ------------------------------------------------------------------------------------

def test_paired_difference_is_the_mean_and_standard_error_of_per_text_differences():
    from textclf.benchmarks.strategy_bench import paired_difference

    found = paired_difference([1, 1, 0, 1], [1, 0, 0, 0])
    assert found["points"] == pytest.approx(50.0)
    assert found["standard_error_points"] == pytest.approx(100 * 0.57735 / 2, rel=1e-4)  # std of [0,1,0,1] / 2
    assert (found["only_this_right"], found["only_plain_right"], found["texts"]) == (2, 0, 4)
    with pytest.raises(ValueError, match="same >= 2 texts"):
        paired_difference([1, 0], [1])


@requires_ag_news
def test_strategy_bench_measures_rows_pairs_them_with_plain_and_resumes(small_ag_news, tmp_path, capsys):
    from textclf.benchmarks.strategy_bench import CORRECT_FILE, run_strategy_benchmark

    output = tmp_path / "bench.json"
    arguments = (output, tmp_path / "work", str(small_ag_news), 60, 40, ["grad_accumulation_4", "bf16"], 0.5, 32, 1)
    result = run_strategy_benchmark(*arguments)
    assert list(result["rows"]) == ["plain", "grad_accumulation_4", "bf16", "throughput"]  # plain first, always
    plain = result["rows"]["plain"]
    assert 0 <= plain["test_accuracy"] <= 1 and plain["train_samples_per_second"] > 0
    effect = result["effects_vs_plain"]["grad_accumulation_4"]
    assert effect["texts"] == 40 and effect["standard_error_points"] >= 0
    assert len(json.loads((Path(result["work_dir"]) / "plain" / CORRECT_FILE).read_text())) == 40
    throughput = result["rows"]["throughput"]
    if cpu_flags() & set(BF16_CPU_FLAGS):
        assert result["rows"]["bf16"]["precision"] == "bf16" and "bf16" in result["effects_vs_plain"]
        assert result["bf16_target"]["met"] is False  # a pilot of 60 rows never meets the 6,000-row target
        assert result["bf16_target"]["bf16_speedup_interleaved"] == throughput["bf16_speedup"] > 0
        assert len(throughput["samples_per_second"]["bf16"]) == 1
    else:
        assert "avx512_bf16" in result["rows"]["bf16"]["not_run"] and result["bf16_target"] is None
        assert throughput["bf16_not_run"] and list(throughput["median"]) == ["fp32"]
    again = run_strategy_benchmark(*arguments)
    assert again["rows"] == result["rows"]
    assert capsys.readouterr().err.count("already measured, skipped") == 3  # the throughput is not measured again
