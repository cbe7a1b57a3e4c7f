"""Robustness evaluation: the model scored on perturbed copies of the test rows, each suite against the same rows
unperturbed (a paired drop, so a suite that only applies to some rows is compared on those rows).

Suites (every one deterministic for a seed; what each does to a row is documented on :class:`RobustnessSuite`):
case changes, typos, the title alone, the description alone, the first N words, HTML markup and the removal of
news-agency tags. A suite that does not apply to a row (no title column, no agency tag) leaves it out.

Output (a directory, written atomically): :data:`ROBUSTNESS_FILE` (per suite: rows, accuracy on the original and
the perturbed rows, the drop in points, prediction flips) and :data:`ROBUSTNESS_REPORT_FILE` (the same as an HTML
table). :func:`robustness_gate` turns the numbers into a registration decision with its reasons.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from textclf.errors import ConfigError, DataValidationError
from textclf.ingest.ingest import TITLE_COLUMN
from textclf.provenance import atomic_directory, read_json, write_json

#: Output: per suite, rows, accuracy before and after, drop in points, flips (and the settings).
ROBUSTNESS_FILE = "robustness.json"
#: Output: the same table as a self-contained HTML page.
ROBUSTNESS_REPORT_FILE = "robustness.html"


class RobustnessSuite(str, enum.Enum):
    """One perturbation of a test row."""

    LOWERCASE = "lowercase"  # the whole text lower-cased
    UPPERCASE = "uppercase"  # the whole text upper-cased
    TYPOS = "typos"  # in a share of words of >= 4 letters, two adjacent inner letters swapped
    TITLE_ONLY = "title_only"  # the title alone (rows with a title and a description)
    DESCRIPTION_ONLY = "description_only"  # the text without its title (same rows)
    FIRST_WORDS = "first_words"  # the first N words (rows longer than N words)
    HTML_MARKUP = "html_markup"  # wrapped in <p>/<b> tags, '&' and quotes written as HTML entities
    NO_AGENCY_TAGS = "no_agency_tags"  # news-agency tags removed: "(Reuters)", "AFP -", ... (rows that have one)


#: News-agency credits of AG News texts: a parenthesised source, or a source and a dash opening the description.
AGENCIES = (r"Reuters|AP|AFP|CP|Canadian Press|SPACE\.com|Sports Network|TheStreet\.com|Forbes\.com|"
            r"washingtonpost\.com|NewsFactor|TechWeb|PC World|Ziff Davis|eWeek|InfoWorld|CBS\.MW|MarketWatch|"
            r"USATODAY\.com|Newsday|NYT|LA Times|Washington Post|BusinessWeek Online|Techworld|Computerworld|"
            r"CNET News\.com|ZDNet|MacCentral|PRNewswire|Business Wire|Kiplinger\.com|Motley Fool|"
            r"Reuters Life!|Investor's Business Daily|Sporting News")
_AGENCY_TAG = re.compile(rf"\s*\((?:{AGENCIES})(?:\s*-\s*[^)]{{0,40}})?\)\s*-?\s*|(?:^|(?<=\s))(?:{AGENCIES})\s+-\s+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class RobustnessConfig:
    """Which suites and their knobs.

    Attributes:
        suites: Suite names (default: all).
        first_words: N of ``first_words``.
        typo_rate: Share of eligible words a typo hits.
        seed: Seed of the typos (each row's own generator is seeded by it and the row number) and of the row sample.
        batch_size: Texts per model run.
        max_rows: Test rows scored (a class-stratified sample of that many); 0: all.
        contrast_set: The contrast set scored as well (:data:`textclf.robustness.contrast.CONTRAST_SETS`; its edits
            apply only to the test texts they were written for, over the whole test split); empty: none.
    """

    suites: tuple[str, ...] = tuple(s.value for s in RobustnessSuite)
    first_words: int = 10
    typo_rate: float = 0.1
    seed: int = 0
    batch_size: int = 64
    max_rows: int = 1000
    contrast_set: str = "ag_news"

    def __post_init__(self) -> None:
        suites = self.suites.split(",") if isinstance(self.suites, str) else list(self.suites)
        object.__setattr__(self, "suites", tuple(s.strip() for s in suites if s.strip()))
        for name in self.suites:
            try:
                RobustnessSuite(name)
            except ValueError:
                raise ConfigError(f"unknown robustness suite {name!r}; known: "
                                  f"{[s.value for s in RobustnessSuite]}") from None
        if self.first_words < 1 or not 0 < self.typo_rate <= 1 or self.batch_size < 1 or self.max_rows < 0:
            raise ConfigError(f"first_words must be >= 1, typo_rate in (0, 1], batch_size >= 1, max_rows >= 0; got "
                              f"{self.first_words}, {self.typo_rate}, {self.batch_size}, {self.max_rows}")
        from textclf.robustness.contrast import CONTRAST_SETS

        if self.contrast_set and self.contrast_set not in CONTRAST_SETS:
            raise ConfigError(f"unknown contrast set {self.contrast_set!r}; known: {sorted(CONTRAST_SETS)}")


def remove_agency_tags(text: str) -> str:
    return re.sub(r"\s+", " ", _AGENCY_TAG.sub(" ", text)).strip()


def add_typos(text: str, rate: float, rng: random.Random) -> str:
    """Swap two adjacent inner letters in about ``rate`` of the words of at least 4 letters."""
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) < 4 or not word.isalpha() or rng.random() >= rate:
            return word
        i = rng.randrange(1, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return _WORD.sub(swap, text)


def html_markup(title: str | None, text: str) -> str:
    body = text.replace("&", "&amp;").replace('"', "&quot;")
    if title and text.startswith(title) and len(text) > len(title):
        head = title.replace("&", "&amp;").replace('"', "&quot;")
        return f"<p><b>{head}</b><br/>{body[len(head):].strip()}</p>"
    return f"<p>{body}</p>"


def perturb(frame: pd.DataFrame, suite: RobustnessSuite, config: RobustnessConfig) -> pd.Series:
    """The perturbed text of every row the suite applies to (index: the frame's), in frame order."""
    texts = frame["text"]
    titles = frame[TITLE_COLUMN] if TITLE_COLUMN in frame.columns else pd.Series([None] * len(frame),
                                                                                  index=frame.index)
    if suite is RobustnessSuite.LOWERCASE:
        return texts.str.lower()
    if suite is RobustnessSuite.UPPERCASE:
        return texts.str.upper()
    if suite is RobustnessSuite.TYPOS:
        return pd.Series([add_typos(t, config.typo_rate, random.Random(f"{config.seed}:{row}"))
                          for t, row in zip(texts, frame["row"], strict=True)], index=frame.index)
    if suite in (RobustnessSuite.TITLE_ONLY, RobustnessSuite.DESCRIPTION_ONLY):
        pairs = {}
        for index, text, title in zip(frame.index, texts, titles, strict=True):
            if isinstance(title, str) and title and text.startswith(title) and text[len(title):].strip():
                pairs[index] = title if suite is RobustnessSuite.TITLE_ONLY else text[len(title):].strip()
        return pd.Series(pairs, dtype=object)
    if suite is RobustnessSuite.FIRST_WORDS:
        words = texts.str.split()
        longer = words.map(len) > config.first_words
        return words[longer].map(lambda w: " ".join(w[:config.first_words]))
    if suite is RobustnessSuite.HTML_MARKUP:
        return pd.Series([html_markup(title if isinstance(title, str) else None, text)
                          for text, title in zip(texts, titles, strict=True)], index=frame.index)
    if suite is RobustnessSuite.NO_AGENCY_TAGS:
        removed = texts.map(remove_agency_tags)
        changed = removed != texts.map(lambda t: re.sub(r"\s+", " ", t).strip())
        return removed[changed & (removed.str.len() > 0)]
    raise ConfigError(f"no perturbation for suite {suite!r}")  # pragma: no cover - every member is handled


@dataclass(frozen=True)
class RobustnessResult:
    """Per suite: rows, accuracy on the original and on the perturbed rows, the drop (points) and flips."""

    output_dir: Path
    base_accuracy: float
    suites: dict[str, dict[str, Any]] = field(default_factory=dict)
    contrast: dict[str, Any] | None = None

    @property
    def worst_drop_points(self) -> float:
        drops = [s["drop_points"] for s in self.suites.values() if s["rows"]]
        return max(drops) if drops else 0.0


def score_suites(predict: Callable[[list[str]], np.ndarray], frame: pd.DataFrame, label_ids: np.ndarray,
                 config: RobustnessConfig) -> tuple[float, dict[str, dict[str, Any]]]:
    """Score ``predict`` (texts -> predicted class ids) on the frame and on every suite's perturbed rows."""
    original = np.asarray(predict(frame["text"].tolist()))
    correct = original == label_ids
    position = {index: i for i, index in enumerate(frame.index)}
    suites = {}
    for name in config.suites:
        perturbed = perturb(frame, RobustnessSuite(name), config)
        rows = [position[i] for i in perturbed.index]
        if not rows:
            suites[name] = {"rows": 0, "accuracy_original": None, "accuracy_perturbed": None, "drop_points": 0.0,
                            "flipped": 0}
            continue
        predicted = np.asarray(predict(perturbed.tolist()))
        before, after = correct[rows], predicted == label_ids[rows]
        suites[name] = {
            "rows": len(rows),
            "accuracy_original": float(before.mean()),
            "accuracy_perturbed": float(after.mean()),
            "drop_points": 100 * float(before.mean() - after.mean()),
            "flipped": int((predicted != original[rows]).sum()),
            "example": {"original": frame["text"].iloc[rows[0]], "perturbed": perturbed.iloc[0]},
        }
    return float(correct.mean()), suites


def transformer_predictor(model_dir: Path, batch_size: int) -> Callable[[list[str]], np.ndarray]:
    """Texts -> predicted class ids of a train-stage model directory (PyTorch; normalised under its profile)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textclf.evaluate.evaluate import predict_logits
    from textclf.text import text_profile_of
    from textclf.train.train import METADATA_FILE

    metadata = read_json(model_dir / METADATA_FILE)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_length, profile = int(metadata["max_length"]), text_profile_of(metadata)
    return lambda texts: predict_logits(model, tokenizer, texts, batch_size, max_length, profile).argmax(-1)


def sample_test_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """The rows robustness is scored on: all, or a class-stratified sample of ``max_rows`` (in split order)."""
    if not max_rows or len(frame) <= max_rows:
        return frame
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(frame, train_size=max_rows, stratify=frame["label"], random_state=seed)
    return sample.sort_index()


def score_robustness(predict: Callable[[list[str]], np.ndarray], test: pd.DataFrame, labels: list[str],
                     config: RobustnessConfig, source: str = "test split") -> dict[str, Any]:
    """The :data:`ROBUSTNESS_FILE` record of ``predict`` (texts -> class ids) on ``config.max_rows`` of ``test``.

    Raises:
        DataValidationError: A test label is not one of ``labels``.
    """
    frame = sample_test_rows(test, config.max_rows, config.seed)
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise DataValidationError(f"{source}: labels {unknown} are not the model's {labels}")
    label_ids = frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    base, suites = score_suites(predict, frame, label_ids, config)
    drops = [s["drop_points"] for s in suites.values() if s["rows"]]
    record = {"test_rows": len(frame), "test_rows_in_split": len(test), "base_accuracy": base, "suites": suites,
              "worst_drop_points": max(drops) if drops else 0.0, "config": asdict(config)}
    if config.contrast_set:
        from textclf.robustness.contrast import score_contrast

        record["contrast"] = score_contrast(predict, test, labels, config.contrast_set)
    return record


def result_of(record: dict[str, Any], output_dir: str | Path) -> RobustnessResult:
    return RobustnessResult(Path(output_dir), float(record["base_accuracy"]), dict(record["suites"]),
                            record.get("contrast"))


def evaluate_robustness(model_dir: str | Path, split_dir: str | Path, config: RobustnessConfig,
                        output_dir: str | Path) -> RobustnessResult:
    """Score a train-stage model on every suite of ``config`` over the test split; write the output directory.

    Raises:
        DataValidationError: The splits have no test file, or its labels are not the model's.
    """
    from textclf.serving.contract import LABELS_FILE
    from textclf.validate.validate import SPLIT_FILES

    model_dir, split_dir = Path(model_dir), Path(split_dir)
    labels: list[str] = read_json(model_dir / LABELS_FILE)["labels"]
    path = split_dir / SPLIT_FILES["test"]
    if not path.is_file():
        raise DataValidationError(f"{path} not found; is {split_dir} the validate stage's output?")
    record = score_robustness(transformer_predictor(model_dir, config.batch_size), pd.read_parquet(path), labels,
                              config, str(path))
    result = result_of(record, output_dir)
    with atomic_directory(output_dir) as staging:
        write_json(staging / ROBUSTNESS_FILE, record)
        (staging / ROBUSTNESS_REPORT_FILE).write_text(render_html(result), encoding="utf-8")
    return result


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def suites_table_html(result: RobustnessResult) -> str:
    """The per-suite table (one row per suite, with an example of its perturbation), for any HTML page."""
    import html

    rows = []
    for name, suite in result.suites.items():
        example = suite.get("example") or {}
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{suite['rows']}</td>"
            f"<td>{_number(suite['accuracy_original'])}</td><td>{_number(suite['accuracy_perturbed'])}</td>"
            f"<td>{_number(suite['drop_points'], 2)}</td><td>{suite['flipped']}</td>"
            f"<td>{html.escape(str(example.get('perturbed', ''))[:160])}</td></tr>")
    return ("<table><tr><th>suite</th><th>rows</th><th>accuracy (original)</th><th>accuracy (perturbed)</th>"
            "<th>drop (points)</th><th>flipped</th><th>example</th></tr>" + "".join(rows) + "</table>")


def contrast_html(contrast: dict[str, Any] | None) -> str:
    """The contrast set's reported part (the held-out part is never shown: it is kept for a final check)."""
    if not contrast or not contrast.get("report", {}).get("rows"):
        return ""
    part = contrast["report"]
    return (f"<p>Contrast set <code>{contrast['name']}</code>: {part['rows']} edited test rows whose label the edit "
            f"changes (of {contrast['applicable']} that apply; the held-out edits are not shown). Accuracy on the "
            f"originals {part['accuracy_original']:.4f}, on the edits {part['accuracy_contrast']:.4f}; "
            f"consistency (both right) {part['consistency']:.4f}.</p>")


def render_html(result: RobustnessResult) -> str:
    """A self-contained page: the suites table and the headline numbers."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Robustness</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>Robustness</h1><p>Test accuracy {result.base_accuracy:.4f}; worst drop "
        f"{result.worst_drop_points:.2f} points. Each suite is scored against the same rows unperturbed.</p>"
        + suites_table_html(result) + contrast_html(result.contrast) + "</body></html>"
    )


@dataclass(frozen=True)
class RegistrationLimits:
    """The registration gate's limits (pipeline parameters of the same names); each 0 is off.

    Attributes:
        min_accuracy: Lowest accepted test accuracy (0-1).
        max_robustness_drop: Largest accepted drop in accuracy points of any robustness suite.
        max_model_mb: Largest accepted served (INT8 ONNX) model in MB (10^6 bytes).
    """

    min_accuracy: float = 0.0
    max_robustness_drop: float = 0.0
    max_model_mb: float = 0.0

    def __post_init__(self) -> None:
        if min(self.min_accuracy, self.max_robustness_drop, self.max_model_mb) < 0 or self.min_accuracy > 1:
            raise ConfigError(f"gate limits must be >= 0 (min_accuracy <= 1); got min_accuracy={self.min_accuracy}, "
                              f"max_robustness_drop={self.max_robustness_drop}, max_model_mb={self.max_model_mb}")


@dataclass(frozen=True)
class GateDecision:
    """Whether a model may be registered, and why not."""

    passed: bool
    reasons: tuple[str, ...]


def robustness_gate(test_accuracy: float, worst_drop_points: float, model_bytes: int, min_accuracy: float = 0.0,
                    max_robustness_drop: float = 0.0, max_model_mb: float = 0.0) -> GateDecision:
    """The registration gate: each limit 0 is off; every limit a model misses is a reason.

    Args:
        test_accuracy: The model's test accuracy.
        worst_drop_points: Its largest robustness drop, in accuracy points.
        model_bytes: Size of what would be served.
        min_accuracy: Lowest accepted test accuracy (0-1).
        max_robustness_drop: Largest accepted drop in points of any suite.
        max_model_mb: Largest accepted model size in MB (10^6 bytes).

    Raises:
        ConfigError: A negative limit, or ``min_accuracy`` above 1.
    """
    RegistrationLimits(min_accuracy, max_robustness_drop, max_model_mb)
    reasons = []
    if min_accuracy and test_accuracy < min_accuracy:
        reasons.append(f"test accuracy {test_accuracy:.4f} is below min_accuracy {min_accuracy:.4f}")
    if max_robustness_drop and worst_drop_points > max_robustness_drop:
        reasons.append(f"the worst robustness suite drops {worst_drop_points:.2f} points, more than "
                       f"max_robustness_drop {max_robustness_drop:.2f}")
    if max_model_mb and model_bytes / 1e6 > max_model_mb:
        reasons.append(f"the model is {model_bytes / 1e6:.1f} MB, more than max_model_mb {max_model_mb:.1f}")
    return GateDecision(not reasons, tuple(reasons))


def gate_evaluation(evaluation_dir: str | Path, onnx_dir: str | Path, min_accuracy: float = 0.0,
                    max_robustness_drop: float = 0.0, max_model_mb: float = 0.0) -> GateDecision:
    """:func:`robustness_gate` on an evaluate-stage directory (its test accuracy on the whole test split and its
    ``robustness.json``) and an export-stage bundle (the size of its INT8 model, what the CPU server loads).

    Raises:
        DataValidationError: ``metrics.json`` or the INT8 model is missing.
    """
    from textclf.evaluate.evaluate import METRICS_FILE
    from textclf.serving.contract import INT8_ONNX_FILE

    evaluation_dir, onnx_dir = Path(evaluation_dir), Path(onnx_dir)
    for path in (evaluation_dir / METRICS_FILE, onnx_dir / INT8_ONNX_FILE):
        if not path.is_file():
            raise DataValidationError(f"{path} not found; the gate needs the evaluate and export stages' outputs")
    accuracy = float(read_json(evaluation_dir / METRICS_FILE)["test"]["accuracy"])
    robustness = evaluation_dir / ROBUSTNESS_FILE
    worst = float(read_json(robustness)["worst_drop_points"]) if robustness.is_file() else None
    decision = robustness_gate(accuracy, worst or 0.0, (onnx_dir / INT8_ONNX_FILE).stat().st_size, min_accuracy,
                               max_robustness_drop, max_model_mb)
    if max_robustness_drop and worst is None:
        return GateDecision(False, (*decision.reasons, f"max_robustness_drop is set but {evaluation_dir} has no "
                                    f"{ROBUSTNESS_FILE} (the evaluate step ran with robustness_suites=none)"))
    return decision
