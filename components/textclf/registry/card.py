"""Model cards (Mitchell et al. 2019): what a registered model is for, what it was trained and scored on, how it
behaves, and what it should not be used for, as Markdown (the Kubeflow UI shows a KFP ``Markdown`` artifact) and as a
self-contained HTML page (with the confusion matrix and the reliability diagram as images).

Built from what the pipeline wrote: the version's ``metadata.json`` (:func:`build_version_metadata`), the evaluate
stage's ``metrics.json``, the train stage's metadata (lineage: distillation, LoRA, strategies) and, when present,
the robustness stage's ``robustness.json``. Stored beside the version as :data:`CARD_MARKDOWN` and :data:`CARD_HTML`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

#: Registry files of a version's card.
CARD_MARKDOWN = "model_card.md"
CARD_HTML = "model_card.html"

#: Intended and out-of-scope use per dataset format (``generic``: the user's own data, stated as such).
INTENDED_USE = {
    "ag_news": ("Routing or tagging English news headlines and leads into four topics (World, Sports, Business, "
                "Sci/Tech), as in the AG News corpus (news of 2004-2005)."),
    "arxiv_cs": ("Suggesting the primary arXiv category (20 computer-science categories) of an English paper from its "
                 "title and abstract, for triage by a person."),
}
OUT_OF_SCOPE = (
    "Texts in other languages, other domains or much later periods than the training data (accuracy is unmeasured "
    "there: watch the drift monitor); decisions about people; any use where a wrong label causes harm without a "
    "person reviewing it; inputs longer than the model's token limit (they are truncated)."
)
LIMITATIONS = (
    "Accuracy is measured on one held-out test set from the same source as the training rows; classes absent or rare "
    "in training are predicted poorly; the calibration temperature was fitted on the validation split and may not "
    "hold under drift; the robustness suites (when run) cover surface perturbations, not meaning-changing edits."
)


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_number(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def card_sections(version_meta: Mapping[str, Any], metrics: Mapping[str, Any], model_meta: Mapping[str, Any],
                  robustness: Mapping[str, Any] | None = None) -> list[tuple[str, list[str]]]:
    """The card as (heading, Markdown lines) sections, in order."""
    dataset = version_meta.get("dataset", {})
    fmt = str(dataset.get("format") or "generic")
    params = version_meta.get("hyperparameters", {})
    test = metrics.get("test", {})
    calibration = metrics.get("calibration", {})
    sections: list[tuple[str, list[str]]] = []
    sections.append(("Model details", [
        f"- Version: `{version_meta.get('version')}`, registered {version_meta.get('created_at', '')}",
        f"- Base model: `{version_meta.get('base_model')}`, method `{params.get('method')}`, "
        f"{params.get('epochs')} epoch(s), batch {params.get('batch_size')}, learning rate "
        f"{params.get('effective_learning_rate')}, max length {params.get('max_length')} tokens",
        f"- Text normalisation: profile `{model_meta.get('text_profile', 'news')}`, version "
        f"{model_meta.get('normalisation_version')}",
        f"- Labels: {', '.join(version_meta.get('labels', []))}",
        f"- Training code: commit `{version_meta.get('git_commit')}`; run key `{version_meta.get('training_run_key')}`",
        *([f"- Notes: {version_meta['notes']}"] if version_meta.get("notes") else []),
    ]))
    sections.append(("Intended use", [INTENDED_USE.get(fmt, (
        f"Classifying texts like those of the training data (`{dataset.get('uri')}`, format `{fmt}`) into its "
        f"{len(version_meta.get('labels', []))} classes; the owner of that data states its purpose."))]))
    sections.append(("Out-of-scope use", [OUT_OF_SCOPE]))
    rows = dataset.get("rows", {})
    fingerprints = dataset.get("fingerprints", {})
    sections.append(("Training data", [
        f"- Source: `{dataset.get('uri')}` (format `{fmt}`)",
        "- Rows: " + ", ".join(f"{split} {count}" for split, count in rows.items()),
        *[f"- {name}: `{value}`" for name, value in sorted(fingerprints.items())],
    ]))
    headline = version_meta.get("metrics", {})
    evaluation = [
        f"Scored on {version_meta.get('test_rows')} held-out test rows (test set sha256 "
        f"`{version_meta.get('test_set_sha256')}`).", "",
        *_table(["metric", "value"], [[name, value] for name, value in headline.items()]), "",
        "Per class:", "",
        *_table(["class", "precision", "recall", "F1", "support"],
                [[label, c.get("precision"), c.get("recall"), c.get("f1"), c.get("support")]
                 for label, c in test.get("per_class", {}).items()]),
    ]
    if calibration:
        evaluation += ["", f"Calibration: temperature {_number(calibration.get('temperature'), 3)} fitted on the "
                       f"validation split; test ECE {_number(calibration.get('test_ece_before'))} before, "
                       f"{_number(calibration.get('test_ece_after'))} after (the server applies it)."]
    sections.append(("Evaluation", evaluation))
    if robustness:
        sections.append(("Robustness", [
            f"Each suite perturbs the test rows it applies to and is scored against the same rows unperturbed "
            f"({robustness.get('test_rows')} rows scored; worst drop {_number(robustness.get('worst_drop_points'), 2)}"
            " points).", "",
            *_table(["suite", "rows", "accuracy (original)", "accuracy (perturbed)", "drop (points)"],
                    [[name, s.get("rows"), s.get("accuracy_original"), s.get("accuracy_perturbed"),
                      _number(s.get("drop_points"), 2)] for name, s in robustness.get("suites", {}).items()]),
            *_contrast_lines(robustness.get("contrast")),
        ]))
    lineage = []
    distillation = model_meta.get("distillation")
    if distillation:
        lineage.append(f"- Distilled student: {distillation}")
    if params.get("method") in ("lora", "qlora"):
        lineage.append(f"- {params.get('method')} adapters (r {params.get('lora_r')}, alpha {params.get('lora_alpha')})"
                       " merged into the base weights before export")
    strategy = model_meta.get("training", {}).get("strategy")
    if strategy:
        lineage.append(f"- Training strategy: precision {model_meta.get('training', {}).get('precision')}, "
                       + ", ".join(f"{k} {v}" for k, v in strategy.items() if v not in (None, "none", 1.0)))
    if lineage:
        sections.append(("Lineage", lineage))
    export = version_meta.get("export", {})
    parity = export.get("parity") or {}
    sizes = export.get("sizes_bytes") or {}
    sections.append(("Export", [
        "ONNX fp32 and INT8, each accepted only after a parity check against PyTorch on held-out texts:", "",
        *_table(["check", "value"], [[name, value] for name, value in parity.items()
                                     if isinstance(value, (int, float, bool))]),
        "", "Sizes: " + ", ".join(f"`{name}` {size / 1e6:.1f} MB" for name, size in sizes.items()),
    ]))
    sections.append(("Limitations", [LIMITATIONS]))
    versions = model_meta.get("package_versions") or {}
    sections.append(("Versions", [", ".join(f"{name} {value}" for name, value in sorted(versions.items()))
                                  or "not recorded"]))
    return sections


def render_markdown(version_meta: Mapping[str, Any], metrics: Mapping[str, Any], model_meta: Mapping[str, Any],
                    robustness: Mapping[str, Any] | None = None) -> str:
    """The card as Markdown."""
    lines = [f"# Model card: textclf {version_meta.get('version')}", ""]
    for heading, body in card_sections(version_meta, metrics, model_meta, robustness):
        lines += [f"## {heading}", "", *body, ""]
    return "\n".join(lines)


def render_html(markdown_text: str, images: Mapping[str, bytes] | None = None) -> str:
    """The Markdown as a self-contained HTML page, with ``images`` (caption -> PNG bytes) embedded at the end of
    the evaluation."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    figures = "".join(
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode('ascii')}'/><figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, png in (images or {}).items())
    if figures:
        marker = "<h2>Evaluation</h2>"
        start = body.find(marker)
        end = body.find("<h2>", start + len(marker)) if start >= 0 else -1
        body = body[:end] + figures + body[end:] if end >= 0 else body + figures
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Model card</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px}img{max-width:32em}</style></head><body>"
            f"{body}</body></html>")


def _contrast_lines(contrast: Mapping[str, Any] | None) -> list[str]:
    """The contrast set's reported part (its held-out part stays out of every report)."""
    part = (contrast or {}).get("report") or {}
    if not part.get("rows"):
        return []
    return ["", f"Contrast set `{contrast['name']}` ({part['rows']} edited test rows whose label the edit changes): "
            f"accuracy {_number(part['accuracy_original'])} on the originals, {_number(part['accuracy_contrast'])} "
            f"on the edits, consistency {_number(part['consistency'])} (both right)."]


def card_images(metrics: Mapping[str, Any], predictions: Any = None) -> dict[str, bytes]:
    """The confusion matrix and (with the test predictions) the reliability diagram, as PNG."""
    from textclf.evaluate.evaluate import confusion_matrix_png

    images = {}
    test = metrics.get("test", {})
    labels = list(test.get("per_class", {}))
    if test.get("confusion_matrix") and labels:
        images["Confusion matrix (test)"] = confusion_matrix_png(test["confusion_matrix"], labels)
    if predictions is not None and len(predictions):
        from textclf.evaluate.analysis import prediction_bins, reliability_png

        images["Reliability diagram (test, uncalibrated)"] = reliability_png(prediction_bins(predictions))
    return images


def build_card(dirs: Any, version_meta: Mapping[str, Any]) -> tuple[str, str]:
    """Markdown and HTML of the card of a version registered from ``dirs`` (:class:`ArtifactDirs`): the evaluate
    stage's metrics and predictions, the train stage's metadata and, when the evaluation directory holds one, the
    robustness stage's ``robustness.json``."""
    import pandas as pd

    from textclf.evaluate.evaluate import METRICS_FILE, PREDICTIONS_FILE
    from textclf.provenance import read_json
    from textclf.robustness.robustness import ROBUSTNESS_FILE
    from textclf.train.train import METADATA_FILE

    metrics = read_json(dirs.evaluation / METRICS_FILE)
    model_meta = read_json(dirs.model / METADATA_FILE)
    robustness = read_json(dirs.evaluation / ROBUSTNESS_FILE) if (dirs.evaluation / ROBUSTNESS_FILE).is_file() else None
    predictions_path = dirs.evaluation / PREDICTIONS_FILE
    predictions = pd.read_parquet(predictions_path) if predictions_path.is_file() else None
    text = render_markdown(version_meta, metrics, model_meta, robustness)
    return text, render_html(text, card_images(metrics, predictions))

