"""A/B (canary) analysis of the serving request log, and stable variant assignment by user id.

Assignment
    :func:`assign_variant` hashes ``salt:user_id`` with SHA-256 into a bucket in ``[0, 100)``; a user whose bucket
    is below ``treatment_percent`` gets ``"treatment"``, everyone else ``"control"``. The same user always gets the
    same variant for a given salt (use a new salt per experiment so the same users are not always the treated
    ones), and raising the percentage only moves users from control to treatment, never back.

Record format
    The serving request log's schema, :class:`textclf.serving.request_log.RequestRecord` (JSON lines, one object
    per prediction): the server writes ``timestamp``, ``text``, ``label``, ``probabilities`` and ``model_version``;
    the A/B fields are ``request_id`` (joins delayed ground truth from a labels file), ``user_id`` (the hashed key;
    checks assignment consistency), ``variant``, ``latency_ms``, ``true_label`` (ground truth when already known)
    and ``shadow`` (predictions of other versions on the same request, for prediction disagreement).

    The analysis needs a ``label`` and a non-empty ``model_version`` per record. A record without ``variant`` is
    assigned from ``ABTestConfig.control_version`` / ``treatment_version`` when its model version matches one of
    them, else it counts only in the per-version table. Lines that are not JSON objects
    (:class:`~textclf.serving.request_log.MalformedLine`) are counted as ``malformed_lines`` and skipped; records
    that break the schema or lack ``label`` / ``model_version``
    (:class:`~textclf.serving.request_log.InvalidRecord`) are counted as ``invalid_records`` and skipped. ``.gz``
    files are read transparently (rotated logs: pass every file).

Labels file (delayed ground truth)
    JSON lines ``{"request_id": str, "true_label": str}`` (``"label"`` is accepted for ``"true_label"``), a CSV
    with columns ``request_id`` and ``true_label`` (or ``label``), or a ``.json`` object ``{request_id: label}``.
    A label from the file overrides one in the record (conflicts are counted).

Analysis
    Per model version and per variant: requests, users, labelled requests, accuracy with a 95% Wilson interval,
    latency mean/p50/p95/p99, predicted-label distribution. Prediction disagreement between versions, from texts
    served by both versions (majority label per version per text) and from shadow predictions. Significance:
    a two-sided two-proportion z-test on labelled accuracy, treatment vs control (unpaired: different requests
    go to different versions), with the difference's 95% Wald interval, and a verdict.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textclf.errors import ConfigError, DataValidationError
from textclf.serving.request_log import InvalidRecord, MalformedLine, RequestRecord

CONTROL = "control"
TREATMENT = "treatment"
UNASSIGNED = "(unassigned)"
REPORT_JSON = "ab_report.json"
REPORT_MD = "ab_report.md"
REPORT_HTML = "ab_report.html"

# Verdict codes of ``report["comparison"]["verdict"]``.
TREATMENT_BETTER = "treatment_better"
TREATMENT_WORSE = "treatment_worse"
NO_SIGNIFICANT_DIFFERENCE = "no_significant_difference"
INSUFFICIENT_DATA = "insufficient_data"
MISSING_VARIANT = "missing_variant"


def variant_bucket(user_id: str, salt: str = "") -> float:
    """Deterministic bucket in ``[0, 100)`` for ``user_id`` (SHA-256 of ``salt:user_id``, first 64 bits)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def assign_variant(user_id: str, treatment_percent: float, salt: str = "") -> str:
    """``"treatment"`` for about ``treatment_percent`` % of users, ``"control"`` for the rest; stable per user.

    Args:
        user_id: Any stable user key (stringified).
        treatment_percent: Share of users in treatment, in ``[0, 100]`` (the canary's ``canaryTrafficPercent``).
        salt: Experiment name; a different salt reshuffles users independently.

    Raises:
        ConfigError: ``treatment_percent`` outside ``[0, 100]``.
    """
    percent = float(treatment_percent)
    if not 0.0 <= percent <= 100.0 or math.isnan(percent):
        raise ConfigError(f"treatment_percent must be in [0, 100], got {treatment_percent!r}")
    return TREATMENT if variant_bucket(str(user_id), salt) < percent else CONTROL


@dataclass(frozen=True)
class ABTestConfig:
    """Settings of :func:`analyse_ab_log`.

    Args:
        alpha: Significance level of the accuracy test.
        control: Variant name of the control group.
        treatment: Variant name of the treatment group.
        min_labelled: Labelled requests needed in *each* variant before a better/worse verdict is given.
        percentiles: Latency percentiles to report.
        control_version: Model version to treat as control when a record has no ``variant`` field (optional).
        treatment_version: Likewise for treatment.
    """

    alpha: float = 0.05
    control: str = CONTROL
    treatment: str = TREATMENT
    min_labelled: int = 30
    percentiles: tuple[float, ...] = (50.0, 95.0, 99.0)
    control_version: str = ""
    treatment_version: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < float(self.alpha) < 1.0:
            raise ConfigError(f"A/B alpha must be in (0, 1), got {self.alpha!r}")
        if self.control == self.treatment:
            raise ConfigError(f"control and treatment variant names must differ, both are {self.control!r}")
        if int(self.min_labelled) < 1:
            raise ConfigError(f"min_labelled must be >= 1, got {self.min_labelled!r}")
        if not all(0.0 <= float(p) <= 100.0 for p in self.percentiles):
            raise ConfigError(f"latency percentiles must be in [0, 100], got {self.percentiles!r}")


@dataclass
class ABLog:
    """Valid records read from one or more log files, with counts of what was skipped."""

    records: list[RequestRecord] = field(default_factory=list)
    lines: int = 0
    malformed_lines: int = 0
    invalid_records: int = 0
    sources: list[str] = field(default_factory=list)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by the caller's with


def _add(log: ABLog, item: str | RequestRecord | Mapping[str, Any]) -> None:
    """Count ``item`` (a log line, a record or its JSON object) as a record, a malformed line or an invalid one."""
    try:
        if isinstance(item, str):
            record = RequestRecord.from_json(item)
        else:
            record = item if isinstance(item, RequestRecord) else RequestRecord.from_dict(item)
        log.records.append(record.require("model_version"))
    except MalformedLine:
        log.malformed_lines += 1
    except InvalidRecord:
        log.invalid_records += 1


def read_ab_log(paths: str | Path | Iterable[str | Path]) -> ABLog:
    """Read JSON-lines A/B logs (see the module docstring), skipping and counting bad lines.

    Raises:
        DataValidationError: A file does not exist.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    log = ABLog()
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataValidationError(f"A/B log {path} does not exist")
        log.sources.append(str(path))
        with _open_text(path) as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                log.lines += 1
                _add(log, line)
    return log


def read_labels(path: str | Path) -> tuple[dict[str, str], int]:
    """Delayed ground truth keyed by request id, and the count of unusable lines/rows.

    Accepts JSON lines (``request_id`` + ``true_label`` or ``label``), CSV with the same columns, or a ``.json``
    object mapping request id to label.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"labels file {path} does not exist")
    labels: dict[str, str] = {}
    bad = 0

    def take(row: Mapping[str, Any]) -> None:
        nonlocal bad
        request_id = row.get("request_id")
        label = row.get("true_label", row.get("label"))
        if request_id in (None, "") or not isinstance(label, str) or not label:
            bad += 1
        else:
            labels[str(request_id)] = label

    name = path.name.removesuffix(".gz")
    with _open_text(path) as handle:
        if name.endswith(".csv"):
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "request_id" not in reader.fieldnames:
                raise DataValidationError(f"labels CSV {path} needs a 'request_id' column, got {reader.fieldnames}")
            for row in reader:
                take(row)
            return labels, bad
        text = handle.read()
    if name.endswith(".json") and not name.endswith(".jsonl"):
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None
        if isinstance(whole, dict):
            for key, value in whole.items():
                take({"request_id": key, "true_label": value})
            return labels, bad
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            take(row)
        else:
            bad += 1
    return labels, bad


# --------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """A record with the ground truth and the variant the analysis settled on."""

    record: RequestRecord
    true_label: str | None
    variant: str


def _wilson(correct: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(correct, n, alpha=0.05, method="wilson")
    return [float(low), float(high)]


def _group_stats(rows: list[_Row], percentiles: tuple[float, ...]) -> dict[str, Any]:
    labelled = [r for r in rows if r.true_label is not None]
    correct = sum(1 for r in labelled if r.record.label == r.true_label)
    latencies = np.array([r.record.latency_ms for r in rows if r.record.latency_ms is not None], dtype=float)
    predicted = Counter(r.record.label for r in rows)
    latency: dict[str, Any] = {"count": int(latencies.size)}
    if latencies.size:
        latency["mean"] = float(latencies.mean())
        for p in percentiles:
            latency[f"p{p:g}"] = float(np.percentile(latencies, p))
    return {
        "requests": len(rows),
        "users": len({r.record.user_id for r in rows if r.record.user_id is not None}),
        "labelled": len(labelled),
        "correct": correct,
        "accuracy": correct / len(labelled) if labelled else None,
        "accuracy_ci95": _wilson(correct, len(labelled)),
        "latency_ms": latency,
        "predicted_counts": dict(sorted(predicted.items())),
        "predicted_distribution": {k: v / len(rows) for k, v in sorted(predicted.items())},
    }


def two_proportion_test(correct_t: int, n_t: int, correct_c: int, n_c: int) -> dict[str, Any]:
    """Two-sided pooled two-proportion z-test of treatment vs control accuracy, with the difference's 95% Wald CI.

    Both proportions equal to 0 or both equal to 1 give ``z = 0, p = 1`` (no variance, no evidence of a difference).
    """
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    acc_t, acc_c = correct_t / n_t, correct_c / n_c
    pooled = (correct_t + correct_c) / (n_t + n_c)
    if pooled in (0.0, 1.0):
        z, p = 0.0, 1.0
    else:
        z, p = proportions_ztest([correct_t, correct_c], [n_t, n_c], alternative="two-sided")
    low, high = confint_proportions_2indep(correct_t, n_t, correct_c, n_c, method="wald", compare="diff")
    return {
        "test": "two-proportion z-test (pooled, two-sided)",
        "difference": acc_t - acc_c,
        "difference_ci95": [float(low), float(high)],
        "z": float(z),
        "p_value": float(p),
    }


def _majority(counter: Counter) -> str:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _disagreement(records: list[RequestRecord]) -> list[dict[str, Any]]:
    """Disagreement per version pair, from shared texts and from shadow predictions."""
    by_text: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    shadow_pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        if record.text is not None:
            by_text[record.text][record.model_version][record.label] += 1
        for shadow in record.shadow:
            if shadow.model_version != record.model_version:
                pair = (record.model_version, shadow.model_version)
                shadow_pairs[pair][0] += 1
                shadow_pairs[pair][1] += int(shadow.label != record.label)
    text_pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for versions in by_text.values():
        if len(versions) < 2:
            continue
        names = sorted(versions)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                text_pairs[(first, second)][0] += 1
                text_pairs[(first, second)][1] += int(_majority(versions[first]) != _majority(versions[second]))
    rows = []
    for source, pairs in (("same_text", text_pairs), ("shadow", shadow_pairs)):
        for (first, second), (compared, differ) in sorted(pairs.items()):
            rows.append({"versions": [first, second], "source": source, "compared": compared,
                         "disagreements": differ, "rate": differ / compared if compared else None})
    return rows


def _records_from(log: Any) -> ABLog:
    if isinstance(log, ABLog):
        return log
    if isinstance(log, (str, Path)):
        return read_ab_log([log])
    items = list(log)
    if items and all(isinstance(item, (str, Path)) for item in items):
        return read_ab_log(items)
    parsed = ABLog(sources=["(records)"], lines=len(items))
    for item in items:
        _add(parsed, item)
    return parsed


def analyse_ab_log(
    log: ABLog | str | Path | Iterable[str | Path] | Iterable[RequestRecord | Mapping[str, Any]],
    config: ABTestConfig | None = None,
    labels: Mapping[str, str] | str | Path | None = None,
) -> dict[str, Any]:
    """Analyse a canary's request log: per-version and per-variant stats, disagreement, and a significance test.

    Args:
        log: Records (:class:`RequestRecord` or their JSON objects), a log path, several paths (rotated files),
            or an :class:`ABLog`.
        config: Variant names, alpha, minimum labelled requests per variant, latency percentiles.
        labels: Delayed ground truth, ``{request_id: true_label}`` or a labels file (see the module docstring).

    Returns:
        A JSON-ready report: ``input`` (counts of lines, skipped lines, labels joined), ``versions`` and
        ``variants`` (stats each), ``assignment`` (traffic split, users seen in both variants), ``disagreement``
        (per version pair), ``comparison`` (test, p-value, ``verdict`` code and ``summary`` sentence) and
        ``warnings``.

    Raises:
        DataValidationError: No valid record at all (empty log, or every line malformed).
    """
    config = config or ABTestConfig()
    parsed = _records_from(log)
    label_bad = 0
    if isinstance(labels, (str, Path)):
        labels, label_bad = read_labels(labels)
    labels = dict(labels or {})
    if not parsed.records:
        raise DataValidationError(
            f"no valid A/B records in {parsed.sources or 'the input'}: {parsed.lines} lines, "
            f"{parsed.malformed_lines} malformed, {parsed.invalid_records} without model_version/label"
        )

    version_to_variant = {v: name for v, name in ((config.control_version, config.control),
                                                  (config.treatment_version, config.treatment)) if v}
    joined = conflicts = 0
    records: list[_Row] = []
    for record in parsed.records:
        own = record.true_label
        late = labels.get(record.request_id) if record.request_id is not None else None
        if late is not None:
            joined += 1
            conflicts += int(own is not None and own != late)
        variant = record.variant or version_to_variant.get(record.model_version, UNASSIGNED)
        records.append(_Row(record, late if late is not None else own, variant))

    warnings: list[str] = []
    by_version: dict[str, list[_Row]] = defaultdict(list)
    by_variant: dict[str, list[_Row]] = defaultdict(list)
    for row in records:
        by_version[row.record.model_version].append(row)
        by_variant[row.variant].append(row)
    versions = {name: _group_stats(rows, config.percentiles) for name, rows in sorted(by_version.items())}
    variants = {}
    for name, rows in sorted(by_variant.items()):
        stats = _group_stats(rows, config.percentiles)
        stats["model_versions"] = dict(sorted(Counter(r.record.model_version for r in rows).items()))
        if name != UNASSIGNED and len(stats["model_versions"]) > 1:
            warnings.append(f"variant {name!r} was served by several model versions: {stats['model_versions']}")
        variants[name] = stats
    for name in sorted(set(variants) - {config.control, config.treatment, UNASSIGNED}):
        warnings.append(f"variant {name!r} is neither {config.control!r} nor {config.treatment!r}; not compared")
    if UNASSIGNED in variants:
        warnings.append(f"{variants[UNASSIGNED]['requests']} requests have no variant; only in the per-version table")

    user_variants: dict[str, set] = defaultdict(set)
    for row in records:
        if row.record.user_id is not None and row.variant in (config.control, config.treatment):
            user_variants[row.record.user_id].add(row.variant)
    in_both = sum(1 for v in user_variants.values() if len(v) > 1)
    if in_both:
        warnings.append(f"{in_both} users were served by both variants: assignment is not consistent per user")
    n_compared = sum(len(rows) for name, rows in by_variant.items() if name in (config.control, config.treatment))
    treated_users = sum(1 for v in user_variants.values() if v == {config.treatment})
    assignment = {
        "treatment_request_share": len(by_variant.get(config.treatment, [])) / n_compared if n_compared else None,
        "treatment_user_share": treated_users / len(user_variants) if user_variants else None,
        "users": len(user_variants),
        "users_in_both_variants": in_both,
    }

    comparison = _compare(variants, config)
    if conflicts:
        warnings.append(f"{conflicts} labels from the labels file differ from the record's own true_label")
    timestamps = sorted(r.record.timestamp for r in records if r.record.timestamp)
    return {
        "config": {**asdict(config), "percentiles": list(config.percentiles)},
        "input": {
            "sources": parsed.sources, "lines": parsed.lines, "records": len(records),
            "malformed_lines": parsed.malformed_lines, "invalid_records": parsed.invalid_records,
            "labelled": sum(1 for r in records if r.true_label is not None),
            "labels_joined": joined, "label_conflicts": conflicts, "malformed_label_lines": label_bad,
            "first_timestamp": timestamps[0] if timestamps else None,
            "last_timestamp": timestamps[-1] if timestamps else None,
        },
        "versions": versions,
        "variants": variants,
        "assignment": assignment,
        "disagreement": _disagreement(parsed.records),
        "comparison": comparison,
        "warnings": warnings,
    }


def _compare(variants: dict[str, dict[str, Any]], config: ABTestConfig) -> dict[str, Any]:
    control, treatment = variants.get(config.control), variants.get(config.treatment)
    base: dict[str, Any] = {"control": config.control, "treatment": config.treatment, "alpha": config.alpha,
                            "test": None, "difference": None, "difference_ci95": None, "z": None, "p_value": None}
    if control is None or treatment is None:
        present = [name for name in (config.control, config.treatment) if name in variants]
        return {**base, "verdict": MISSING_VARIANT,
                "summary": f"cannot compare: only {present or 'no'} variant(s) {config.control!r}/"
                           f"{config.treatment!r} in the log"}
    n_c, n_t = control["labelled"], treatment["labelled"]
    if n_c == 0 or n_t == 0:
        return {**base, "verdict": INSUFFICIENT_DATA,
                "summary": f"no ground truth yet: {n_c} labelled control and {n_t} labelled treatment requests"}
    result = {**base, **two_proportion_test(treatment["correct"], n_t, control["correct"], n_c)}
    acc = (f"treatment {treatment['accuracy']:.4f} (n={n_t}) vs control {control['accuracy']:.4f} (n={n_c}), "
           f"difference {result['difference'] * 100:+.2f} points, p={result['p_value']:.4g}")
    if min(n_c, n_t) < config.min_labelled:
        verdict, summary = INSUFFICIENT_DATA, f"too few labelled requests (< {config.min_labelled} per variant): {acc}"
    elif result["p_value"] < config.alpha and result["difference"] > 0:
        verdict, summary = TREATMENT_BETTER, f"treatment is significantly more accurate: {acc}"
    elif result["p_value"] < config.alpha and result["difference"] < 0:
        verdict, summary = TREATMENT_WORSE, f"treatment is significantly less accurate: {acc}"
    else:
        verdict = NO_SIGNIFICANT_DIFFERENCE
        summary = f"no significant accuracy difference (alpha={config.alpha}): {acc}"
    return {**result, "verdict": verdict, "summary": summary}


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table_rows(groups: dict[str, dict[str, Any]], percentiles: list[float]) -> tuple[list[str], list[list[str]]]:
    header = ["name", "requests", "users", "labelled", "accuracy", "accuracy 95% CI", "latency mean (ms)",
              *[f"latency p{p:g} (ms)" for p in percentiles], "predicted distribution"]
    rows = []
    for name, stats in groups.items():
        ci = stats["accuracy_ci95"]
        lat = stats["latency_ms"]
        dist = ", ".join(f"{k} {v:.1%}" for k, v in stats["predicted_distribution"].items())
        rows.append([name, str(stats["requests"]), str(stats["users"]), str(stats["labelled"]),
                     _fmt(stats["accuracy"]), f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-", _fmt(lat.get("mean"), 1),
                     *[_fmt(lat.get(f"p{p:g}"), 1) for p in percentiles], dist])
    return header, rows


def _disagreement_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["versions", "source", "compared", "disagreements", "rate"]
    rows = [[" vs ".join(r["versions"]), r["source"], str(r["compared"]), str(r["disagreements"]),
             _fmt(r["rate"])] for r in report["disagreement"]]
    return header, rows


def _sections(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    percentiles = report["config"]["percentiles"]
    return [("Per model version", *_table_rows(report["versions"], percentiles)),
            ("Per variant", *_table_rows(report["variants"], percentiles)),
            ("Prediction disagreement", *_disagreement_rows(report))]


def _facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    comp, inp, asg = report["comparison"], report["input"], report["assignment"]
    ci = comp["difference_ci95"]
    return [
        ("verdict", comp["verdict"]),
        ("summary", comp["summary"]),
        ("test", comp["test"] or "-"),
        ("p-value", f"{comp['p_value']:.4g}" if comp["p_value"] is not None else "-"),
        ("accuracy difference (treatment - control)", _fmt(comp["difference"])),
        ("difference 95% CI", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"),
        ("records / lines", f"{inp['records']} / {inp['lines']}"),
        ("malformed lines skipped", str(inp["malformed_lines"])),
        ("invalid records skipped", str(inp["invalid_records"])),
        ("labelled requests", str(inp["labelled"])),
        ("period", f"{inp['first_timestamp'] or '-'} .. {inp['last_timestamp'] or '-'}"),
        ("treatment share (requests / users)",
         f"{_fmt(asg['treatment_request_share'])} / {_fmt(asg['treatment_user_share'])}"),
        ("users in both variants", str(asg["users_in_both_variants"])),
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (headline facts, per-version/per-variant tables, disagreement, warnings)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["# A/B analysis", "", "| | |", "|---|---|"]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in _facts(report)]
    for title, header, rows in _sections(report):
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("(none)")
            continue
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def render_html(report: dict[str, Any]) -> str:
    """The report as a self-contained HTML page (no external assets)."""
    esc = html.escape
    facts = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _facts(report))
    body = [f"<h1>A/B analysis</h1><table>{facts}</table>"]
    for title, header, rows in _sections(report):
        body.append(f"<h2>{esc(title)}</h2>")
        if not rows:
            body.append("<p>(none)</p>")
            continue
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
        body.append(f"<table><tr>{head}</tr>{cells}</table>")
    if report["warnings"]:
        body.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in report["warnings"]) + "</ul>")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>textclf A/B analysis</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:4px 10px;"
            "border-bottom:1px solid #ddd;text-align:left}table{border-collapse:collapse}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_ab_report(report: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write ``ab_report.json``, ``ab_report.md`` and ``ab_report.html`` into ``output_dir`` (created)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT_JSON, "markdown": out / REPORT_MD, "html": out / REPORT_HTML}
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths
