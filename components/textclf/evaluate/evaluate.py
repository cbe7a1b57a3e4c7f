"""Evaluate: score the trained model on the held-out test set and write metrics and a report.

This is the only stage that scores the test split. It also fits the calibration temperature ``T`` on the VALIDATION
split's logits (:mod:`textclf.evaluate.calibration`) and reports the test set's calibration error with and without
it; the export stage reads ``T`` back (:func:`evaluation_temperature`) and records it in the serving bundle. Output
layout (a directory): ``metrics.json`` (all numbers),
``predictions.parquet`` (per test row: true label, predicted label, probabilities), ``report.html`` (self-contained,
with the confusion-matrix plot, the error analysis and its reliability diagram inline), ``robustness.json`` (the
robustness suites and the contrast set, :mod:`textclf.robustness`; unless turned off), ``confusion_matrix.png``
and ``parity_texts.parquet`` (test texts, without labels, for the export stage's parity check).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from textclf.config import ROBUSTNESS_OFF, EvaluateConfig
from textclf.evaluate.analysis import analysis_html, error_analysis
from textclf.errors import DataValidationError
from textclf.provenance import read_json, read_json_object, write_json
from textclf.serving.contract import LABELS_FILE, temperature_problem
from textclf.text import TextProfile, normalise_text, text_profile_of
from textclf.train.train import METADATA_FILE as MODEL_METADATA_FILE
from textclf.validate.validate import REPORT_FILE as SPLIT_REPORT_FILE
from textclf.validate.validate import SPLIT_FILES

log = logging.getLogger(__name__)

#: Output: every number (``test`` metrics, uncalibrated; train/validation accuracy and gap; ``calibration``: the
#: :func:`textclf.evaluate.calibration.calibration_summary` of the validation-fitted temperature, with the test
#: set's ECE and NLL before and after it; ``test_set_sha256``; ``model_run_key``); the gate, the registry, the
#: export stage (``calibration.temperature``) and the local runner read it.
METRICS_FILE = "metrics.json"
#: Key of :data:`METRICS_FILE` holding the calibration summary (absent in evaluations written before calibration).
CALIBRATION_KEY = "calibration"
#: Keys of :data:`METRICS_FILE` holding the error analysis (:mod:`textclf.evaluate.analysis`) and the robustness
#: summary (``worst_drop_points``, ``rows``, per-suite ``drop_points``; the full record is ``robustness.json``).
ERROR_ANALYSIS_KEY, ROBUSTNESS_KEY = "error_analysis", "robustness"
#: Output: per test row ``row``, ``label``, ``predicted``, ``correct`` and ``p_<label>``; the gate reads it.
PREDICTIONS_FILE = "predictions.parquet"
#: Output: test texts (column ``text``, no labels) for the export stage's parity check.
PARITY_TEXTS_FILE = "parity_texts.parquet"
#: Output: the self-contained HTML report (the evaluate component publishes it) and its confusion-matrix plot.
REPORT_FILE = "report.html"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"


@dataclass(frozen=True)
class EvaluationResult:
    """The evaluation directory and its headline metrics."""

    output_dir: Path
    metrics: dict[str, Any]


def predict_logits(model: Any, tokenizer: Any, texts: list[str], batch_size: int, max_length: int,
                   profile: TextProfile = TextProfile.NEWS) -> np.ndarray:
    """Logits for ``texts`` from a PyTorch classifier, batching texts of similar length together; texts are
    normalised under ``profile`` (the model's: its metadata's ``text_profile``)."""
    import torch

    order = np.argsort([len(t) for t in texts], kind="stable")
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [normalise_text(texts[i], profile) for i in index], truncation=True, max_length=max_length,
                padding=True, return_tensors="pt",
            )
            logits[index] = model(**batch).logits.float().numpy()
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def expected_calibration_error(probabilities: np.ndarray, label_ids: np.ndarray, bins: int) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| weighted by bin share."""
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == label_ids
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_metrics(label_ids: np.ndarray, probabilities: np.ndarray, labels: list[str], bins: int) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix and ECE."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    predicted = probabilities.argmax(axis=-1)
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        label_ids, predicted, labels=ids, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(label_ids, predicted)),
        "macro_f1": float(f1_score(label_ids, predicted, labels=ids, average="macro", zero_division=0)),
        "expected_calibration_error": expected_calibration_error(probabilities, label_ids, bins),
        "per_class": {
            label: {
                "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(label_ids, predicted, labels=ids).tolist(),
        "rows": int(len(label_ids)),
    }


def confusion_matrix_png(matrix: list[list[int]], labels: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=110)
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = data.max() / 2 if data.size else 0
    for (i, j), value in np.ndenumerate(data):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    ax.set_title("Confusion matrix (test set)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def calibration_section(calibration: dict[str, Any] | None) -> str:
    """The report's "Calibration" section for ``metrics["calibration"]``; empty when there is none."""
    if not calibration:
        return ""
    return f"""<h2>Calibration</h2>
<p>Temperature scaling: <code>T = {calibration['temperature']:.4f}</code>, fitted on {calibration['validation_rows']:,}
validation rows (the served probabilities are <code>softmax(logits / T)</code>; predictions are unchanged).</p>
<table><tr><th>metric</th><th>before</th><th>after</th></tr>
<tr><td>test expected calibration error ({calibration['bins']} bins)</td><td>{calibration['test_ece_before']:.4f}</td>
<td>{calibration['test_ece_after']:.4f}</td></tr>
<tr><td>test negative log-likelihood</td><td>{calibration['test_nll_before']:.4f}</td>
<td>{calibration['test_nll_after']:.4f}</td></tr>
<tr><td>validation negative log-likelihood</td><td>{calibration['validation_nll_before']:.4f}</td>
<td>{calibration['validation_nll_after']:.4f}</td></tr></table>"""


def robustness_section(result: Any) -> str:
    """The report's "Robustness" section for a :class:`textclf.robustness.RobustnessResult`; empty without one."""
    if result is None:
        return ""
    from textclf.robustness.robustness import contrast_html, suites_table_html

    return (f"<h2>Robustness</h2><p>Worst drop {result.worst_drop_points:.2f} accuracy points; each suite perturbs "
            "the sampled test rows it applies to and is scored against the same rows unperturbed.</p>"
            + suites_table_html(result) + contrast_html(result.contrast))


def render_html(metrics: dict[str, Any], labels: list[str], png: bytes, model_meta: dict[str, Any],
                robustness: Any = None) -> str:
    """A self-contained HTML report (the KFP UI shows it as an HTML artifact)."""
    test = metrics["test"]
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{c['precision']:.4f}</td><td>{c['recall']:.4f}</td>"
        f"<td>{c['f1']:.4f}</td><td>{c['support']}</td></tr>"
        for label, c in test["per_class"].items()
    )
    gap = metrics["train_validation_gap"]
    flag = "<b style='color:#b00'>yes</b>" if metrics["overfitting"] else "no"
    image = base64.b64encode(png).decode()
    params = model_meta.get("params", {})
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>textclf evaluation</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Evaluation report</h1>
<p>Model: method <code>{html.escape(str(params.get('method')))}</code>, base
<code>{html.escape(str(model_meta.get('base_model')))}</code>; test set sha256
<code>{html.escape(metrics['test_set_sha256'])}</code> ({test['rows']:,} rows).</p>
<table><tr><th>metric</th><th>value</th></tr>
<tr><td>accuracy</td><td>{test['accuracy']:.4f}</td></tr>
<tr><td>macro-F1</td><td>{test['macro_f1']:.4f}</td></tr>
<tr><td>expected calibration error</td><td>{test['expected_calibration_error']:.4f}</td></tr>
<tr><td>train accuracy (sample)</td><td>{metrics['train_accuracy']:.4f}</td></tr>
<tr><td>validation accuracy</td><td>{metrics['validation_accuracy']:.4f}</td></tr>
<tr><td>train - validation gap</td><td>{gap:+.4f}</td></tr>
<tr><td>overfitting (gap &gt; {metrics['overfit_threshold']})</td><td>{flag}</td></tr></table>
{calibration_section(metrics.get(CALIBRATION_KEY))}
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
<h2>Confusion matrix</h2>
<img alt="confusion matrix" src="data:image/png;base64,{image}">
{analysis_html(metrics[ERROR_ANALYSIS_KEY]) if ERROR_ANALYSIS_KEY in metrics else ""}
{robustness_section(robustness)}
</body></html>
"""


def evaluate_model(
    model_dir: str | Path, split_dir: str | Path, config: EvaluateConfig, output_dir: str | Path
) -> EvaluationResult:
    """Score the model on the test split, and on train/validation samples for the overfitting check.

    Args:
        model_dir: Output of the train stage.
        split_dir: Output of the validate/split stage.
        config: Batch size, calibration bins, overfitting threshold and sample sizes.
        output_dir: Directory to create.

    Returns:
        The output directory and the metrics (also in ``metrics.json``); ``metrics["test"]`` is computed from the
        uncalibrated probabilities, ``metrics["calibration"]`` holds the temperature fitted on the validation split
        and the test set's calibration error and NLL before and after it.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir, split_dir, out = Path(model_dir), Path(split_dir), Path(output_dir)
    labels: list[str] = read_json(model_dir / LABELS_FILE)["labels"]
    model_meta = read_json(model_dir / MODEL_METADATA_FILE)
    split_report = read_json(split_dir / SPLIT_REPORT_FILE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    label_to_id = {label: i for i, label in enumerate(labels)}
    max_length = int(model_meta["max_length"])

    def score_texts(texts: list[str]) -> np.ndarray:
        """Raw logits of ``texts``."""
        return predict_logits(model, tokenizer, texts, config.batch_size, max_length, text_profile_of(model_meta))

    def score(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Label ids and raw logits of ``frame``'s rows."""
        return frame["label"].map(label_to_id).to_numpy(), score_texts(frame["text"].tolist())

    test = pd.read_parquet(split_dir / SPLIT_FILES["test"])
    train = pd.read_parquet(split_dir / SPLIT_FILES["train"])
    validation = pd.read_parquet(split_dir / SPLIT_FILES["validation"])
    train_sample = train.sample(n=min(config.train_sample_rows, len(train)), random_state=0)

    test_ids, test_logits = score(test)
    train_ids, train_logits = score(train_sample)
    val_ids, val_logits = score(validation)
    test_probs = softmax(test_logits)
    train_accuracy = float((train_logits.argmax(-1) == train_ids).mean())
    validation_accuracy = float((val_logits.argmax(-1) == val_ids).mean())
    gap = train_accuracy - validation_accuracy
    from textclf.evaluate.calibration import calibration_summary  # it imports this module: not at the top

    metrics = {
        "test": classification_metrics(test_ids, test_probs, labels, config.calibration_bins),
        "train_accuracy": train_accuracy,
        "validation_accuracy": validation_accuracy,
        "train_validation_gap": gap,
        "overfit_threshold": config.overfit_gap,
        "overfitting": bool(gap > config.overfit_gap),
        # T is fitted on the validation logits only; the test set only reports its effect.
        CALIBRATION_KEY: calibration_summary(val_logits, val_ids, test_logits, test_ids, config.calibration_bins),
        "labels": labels,
        "test_set_sha256": split_report["fingerprints"]["test_set_sha256"],
        "model_run_key": model_meta["training"]["run_key"],
    }

    out.mkdir(parents=True, exist_ok=True)
    predicted = test_probs.argmax(-1)
    pd.DataFrame(
        {
            "row": test["row"].to_numpy(),
            "label": test["label"].to_numpy(),
            "predicted": [labels[i] for i in predicted],
            "correct": predicted == test_ids,
            **{f"p_{label}": test_probs[:, i] for i, label in enumerate(labels)},
        }
    ).to_parquet(out / PREDICTIONS_FILE, index=False)
    parity = test.sample(n=min(config.parity_rows, len(test)), random_state=0)
    parity[["text"]].to_parquet(out / PARITY_TEXTS_FILE, index=False)
    metrics[ERROR_ANALYSIS_KEY] = error_analysis(test, test_ids, test_probs, labels)
    robustness = None
    if config.robustness_suites != ROBUSTNESS_OFF:
        from textclf.robustness.robustness import ROBUSTNESS_FILE, RobustnessConfig, result_of, score_robustness

        settings = RobustnessConfig(suites=config.robustness_suites or RobustnessConfig().suites,
                                    max_rows=config.robustness_max_rows, batch_size=config.batch_size)
        record = score_robustness(lambda texts: score_texts(texts).argmax(-1), test, labels, settings,
                                  str(split_dir / SPLIT_FILES["test"]))
        write_json(out / ROBUSTNESS_FILE, record)
        robustness = result_of(record, out)
        metrics[ROBUSTNESS_KEY] = {"worst_drop_points": record["worst_drop_points"], "rows": record["test_rows"],
                                   "drop_points": {name: suite["drop_points"] for name, suite
                                                   in record["suites"].items() if suite["rows"]},
                                   "contrast_accuracy": (record.get("contrast") or {}).get("report", {})
                                   .get("accuracy_contrast")}
    png = confusion_matrix_png(metrics["test"]["confusion_matrix"], labels)
    (out / CONFUSION_MATRIX_FILE).write_bytes(png)
    (out / REPORT_FILE).write_text(render_html(metrics, labels, png, model_meta, robustness), encoding="utf-8")
    write_json(out / METRICS_FILE, metrics)
    log.info("test accuracy %.4f, macro-F1 %.4f", metrics["test"]["accuracy"], metrics["test"]["macro_f1"])
    calibration = metrics[CALIBRATION_KEY]
    log.info("temperature %.4f (validation-fitted): test ECE %.4f -> %.4f", calibration["temperature"],
             calibration["test_ece_before"], calibration["test_ece_after"])
    return EvaluationResult(out, metrics)


def evaluation_temperature(evaluation_dir: str | Path) -> float | None:
    """The calibration temperature an evaluate-stage directory recorded (``metrics.json``'s
    ``calibration.temperature``, fitted on the validation split), for the export stage to put in the bundle.

    Args:
        evaluation_dir: Output directory of :func:`evaluate_model`.

    Returns:
        ``T`` as a float, or ``None`` when ``metrics.json`` has no ``calibration`` entry (an evaluation written before
        the evaluate stage calibrated): the bundle then serves ``softmax(logits)``.

    Raises:
        DataValidationError: ``metrics.json`` is missing or not a JSON object, ``calibration`` is not an object with
            a ``temperature``, or the temperature is not a finite number > 0.
    """
    path = Path(evaluation_dir) / METRICS_FILE
    metrics = read_json_object(path, DataValidationError, f"{evaluation_dir} an evaluate-stage output")
    if CALIBRATION_KEY not in metrics:
        return None
    calibration = metrics[CALIBRATION_KEY]
    if not isinstance(calibration, dict) or "temperature" not in calibration:
        raise DataValidationError(f"{path}: {CALIBRATION_KEY!r} must be an object with a 'temperature'")
    temperature = calibration["temperature"]
    problem = temperature_problem(temperature)
    if problem:
        raise DataValidationError(f"{path}: {CALIBRATION_KEY}.temperature {problem}")
    return float(temperature)
