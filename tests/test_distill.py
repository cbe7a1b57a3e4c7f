"""Distillation building blocks on tiny random BERTs built from a config (no real weights, no data): the loss's
two limits, even layer choice, encoder truncation, the Trainer's use of the teacher-logits column, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from textclf.config import DistillConfig
from textclf.distill import (
    TEACHER_LOGITS,
    DistillationCollator,
    DistillationTrainer,
    build_student,
    distillation_loss,
    evenly_spaced_layers,
    truncate_encoder,
)
from textclf.errors import ConfigError

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
VOCAB = 100


def tiny_bert(layers: int = 6, seed: int = 0):
    """A random 6-layer BERT sequence classifier, hidden size 16, in eval mode (dropout off)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def logits_batch():
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(8, 4, generator=generator) * 3
    teacher = torch.randn(8, 4, generator=generator) * 3
    labels = torch.randint(0, 4, (8,), generator=generator)
    return student, teacher, labels


def test_loss_at_alpha_1_is_cross_entropy(logits_batch):
    student, teacher, labels = logits_batch
    for temperature in (1.0, 2.0, 5.0):
        loss = distillation_loss(student, teacher, labels, temperature, alpha=1.0)
        torch.testing.assert_close(loss, F.cross_entropy(student, labels))


def test_loss_at_alpha_0_is_t_squared_kl(logits_batch):
    student, teacher, labels = logits_batch
    for temperature in (1.0, 2.0, 4.0):
        expected = temperature**2 * F.kl_div(
            F.log_softmax(student / temperature, dim=-1), F.softmax(teacher / temperature, dim=-1),
            reduction="batchmean",
        )
        loss = distillation_loss(student, teacher, labels, temperature, alpha=0.0)
        torch.testing.assert_close(loss, expected)
        assert float(loss) > 0
    # Same teacher and student: no soft loss; labels play no part at alpha = 0.
    assert float(distillation_loss(student, student, labels, 2.0, 0.0)) == pytest.approx(0.0, abs=1e-6)


def test_loss_mixes_linearly_and_accepts_log_probabilities(logits_batch):
    student, teacher, labels = logits_batch
    hard = distillation_loss(student, teacher, labels, 3.0, 1.0)
    soft = distillation_loss(student, teacher, labels, 3.0, 0.0)
    torch.testing.assert_close(distillation_loss(student, teacher, labels, 3.0, 0.3), 0.3 * hard + 0.7 * soft)
    # Log-probabilities are logits up to a per-row constant: the same loss (ensembles can pass log(p)).
    log_probs = F.log_softmax(teacher, dim=-1)
    torch.testing.assert_close(distillation_loss(student, log_probs, labels, 3.0, 0.3),
                               distillation_loss(student, teacher, labels, 3.0, 0.3))


def test_loss_gradient_reaches_the_student_only(logits_batch):
    student, teacher, labels = logits_batch
    student = student.clone().requires_grad_(True)
    teacher = teacher.clone().requires_grad_(True)
    distillation_loss(student, teacher, labels, 2.0, 0.5).backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    assert teacher.grad is None


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
def test_bad_temperature_is_a_config_error(logits_batch, temperature):
    student, teacher, labels = logits_batch
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        distillation_loss(student, teacher, labels, temperature, 0.5)
    with pytest.raises(ConfigError, match="DistillConfig.temperature"):
        DistillConfig(temperature=temperature)
    with pytest.raises(ConfigError, match="temperature"):
        DistillationTrainer(model=tiny_bert(2), temperature=temperature, alpha=0.5)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_bad_alpha_is_a_config_error(logits_batch, alpha):
    student, teacher, labels = logits_batch
    with pytest.raises(ConfigError, match=r"alpha must be a number in \[0, 1\]"):
        distillation_loss(student, teacher, labels, 2.0, alpha)
    with pytest.raises(ConfigError, match="DistillConfig.alpha"):
        DistillConfig(alpha=alpha)


def test_mismatched_teacher_shape_and_bad_config_values_are_config_errors(logits_batch):
    student, teacher, labels = logits_batch
    with pytest.raises(ConfigError, match="same label map"):
        distillation_loss(student, teacher[:, :3], labels, 2.0, 0.5)
    with pytest.raises(ConfigError, match="DistillConfig.init must be one of teacher, base"):
        DistillConfig(init="scratch")
    with pytest.raises(ConfigError, match="DistillConfig.student_layers"):
        DistillConfig(student_layers=0)
    assert DistillConfig().student_layers == 3


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(6, 3) == [1, 3, 5]
    assert evenly_spaced_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert evenly_spaced_layers(6, 6) == list(range(6))
    assert evenly_spaced_layers(6, 1) == [5]
    for n in range(1, 13):
        for k in range(1, n + 1):
            keep = evenly_spaced_layers(n, k)
            assert len(keep) == k and keep == sorted(set(keep)) and keep[-1] == n - 1 and keep[0] >= 0


@pytest.mark.parametrize("k", [0, 7, -1, 2.5, True])
def test_student_layers_outside_the_teacher_are_config_errors(k):
    with pytest.raises(ConfigError, match=r"student_layers must be an integer in 1\.\.6"):
        evenly_spaced_layers(6, k)


def _manual_truncated_forward(teacher, input_ids, keep):
    """Embeddings -> the teacher's own layers ``keep`` -> pooler -> classifier, by hand (no padding)."""
    hidden = teacher.bert.embeddings(input_ids=input_ids)
    for index in keep:
        hidden = teacher.bert.encoder.layer[index](hidden)
    return teacher.classifier(teacher.bert.pooler(hidden))


def test_truncated_student_has_k_layers_and_computes_the_kept_layers(tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher = tiny_bert()
    keep = evenly_spaced_layers(6, 3)
    student = truncate_encoder(teacher, keep)
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3
    assert teacher.config.num_hidden_layers == 6 and len(teacher.bert.encoder.layer) == 6  # untouched
    assert not student.training
    teacher_state = teacher.state_dict()
    for new, old in enumerate(keep):
        for name, tensor in student.bert.encoder.layer[new].state_dict().items():
            torch.testing.assert_close(tensor, teacher_state[f"bert.encoder.layer.{old}.{name}"], rtol=0, atol=0)
    torch.testing.assert_close(student.classifier.weight, teacher.classifier.weight, rtol=0, atol=0)
    assert student.bert.encoder.layer[0].attention.self.layer_idx == 0

    input_ids = torch.randint(1, VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = student(input_ids=input_ids).logits
        torch.testing.assert_close(logits, _manual_truncated_forward(teacher, input_ids, keep))
        assert not torch.allclose(logits, teacher(input_ids=input_ids).logits)

    # An ordinary model: it saves and loads back with 3 layers and the same outputs.
    student.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    assert reloaded.config.num_hidden_layers == 3
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=input_ids).logits, logits)


@pytest.mark.parametrize("keep", [[], [3, 1], [1, 1], [0, 6], [-1, 2]])
def test_bad_layer_lists_are_config_errors(keep):
    with pytest.raises(ConfigError, match="layers to keep"):
        truncate_encoder(tiny_bert(), keep)


def test_build_student_checks_k_before_loading_weights(tmp_path):
    source = tmp_path / "teacher"
    tiny_bert().config.save_pretrained(source)  # config.json only: loading weights would fail
    with pytest.raises(ConfigError, match=r"student_layers must be an integer in 1\.\.6"):
        build_student(str(source), LABELS, DistillConfig(student_layers=7))
    tiny_bert().save_pretrained(source)
    student, keep = build_student(str(source), LABELS, DistillConfig(student_layers=2))
    assert keep == [2, 5] and student.config.num_hidden_layers == 2
    assert student.config.id2label == dict(enumerate(LABELS))


def _examples(rows: int, with_teacher: bool, seed: int = 0) -> list[dict]:
    """Token-id examples of varying length (ids 1..VOCAB-1; 0 is the padding id) with labels."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(rows):
        length = 4 + i % 5
        ids = torch.randint(1, VOCAB, (length,), generator=generator).tolist()
        example = {"input_ids": ids, "attention_mask": [1] * length, "labels": i % len(LABELS)}
        if with_teacher:
            example[TEACHER_LOGITS] = (torch.randn(len(LABELS), generator=generator) * 4).tolist()
        out.append(example)
    return out


def test_trainer_keeps_the_teacher_column_and_uses_it(tmp_path):
    from textclf.config import default_base_model
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast, TrainingArguments

    tokenizer = PreTrainedTokenizerFast.from_pretrained(default_base_model())  # tokenizer files only (padding)
    student = truncate_encoder(tiny_bert(), [1, 3, 5])
    args = TrainingArguments(
        output_dir=str(tmp_path / "ckpt"), max_steps=3, per_device_train_batch_size=4, per_device_eval_batch_size=8,
        learning_rate=1e-3, report_to=[], use_cpu=True, dataloader_num_workers=0, save_strategy="no",
        disable_tqdm=True, seed=0,
    )
    assert args.remove_unused_columns  # the default, as in train.py: the column must survive it
    trainer = DistillationTrainer(
        model=student, args=args, train_dataset=_examples(12, True), eval_dataset=_examples(8, False, seed=1),
        data_collator=DistillationCollator(DataCollatorWithPadding(tokenizer)), temperature=2.0, alpha=0.0,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch[TEACHER_LOGITS].shape == (4, len(LABELS)) and batch[TEACHER_LOGITS].dtype == torch.float32
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(loss, distillation_loss(logits, batch[TEACHER_LOGITS], batch["labels"], 2.0, 0.0))
    assert not torch.allclose(loss, F.cross_entropy(logits, batch["labels"]))

    outcome = trainer.train()
    assert trainer.state.global_step == 3 and math.isfinite(outcome.training_loss)
    # The evaluation split has no teacher logits: plain cross-entropy.
    assert math.isfinite(trainer.evaluate()["eval_loss"])
