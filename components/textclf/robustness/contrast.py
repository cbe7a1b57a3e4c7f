"""Contrast sets: small edits of test rows that should change their label (Gardner et al., 2020, "Evaluating
Models' Local Decision Boundaries via Contrast Sets"). A perturbation suite asks "does the answer stay the same when
it should"; a contrast set asks "does it change when it should".

Procedure (reproducible; docs/trust.md has the long form):

1. Rows are real test rows, chosen by reading the official AG News test file in order, short rows first, a few per
   class, skipping rows whose topic is already ambiguous (health, oil prices in politics, ...).
2. Each edit replaces one to four spans of the row (the title and its matching phrase in the description) so that
   the text reads as a news item of another class, keeping its form: length, tone, the agency tag, the numbers.
   Every replaced span must occur exactly once in the original, and the original's sha256 is recorded, so an edit
   applies only to the very text it was written for (another dataset, or a changed test file, leaves it out).
3. The new label is the class an AG News annotator would give the edited text; the edits were written before any
   model was scored on them, and none has been changed after.
4. About a third of the edits are **held out** by a fixed rule on their id (:func:`is_held_out`: sha256 of the id
   mod 3 == 0): their numbers are recorded in ``robustness.json`` for an honest final check, and are never logged
   as metrics, shown in a report, used by a gate, by hyper-parameter search or by any other decision.

The repository holds only the edits (row ids, spans, labels and hashes), not the test texts: they are read from the
test split at run time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from textclf.errors import ConfigError

#: Contrast sets shipped with the package, by dataset name.
CONTRAST_SETS = {"ag_news": "contrast_ag_news.json"}
#: The two parts of a contrast set: scored and reported, and held out from every decision.
REPORT, HELD_OUT = "report", "held_out"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_held_out(edit_id: str) -> bool:
    """The fixed rule that puts an edit in the held-out part (about a third of the ids)."""
    return int(hashlib.sha256(edit_id.encode("utf-8")).hexdigest(), 16) % 3 == 0


@dataclass(frozen=True)
class ContrastEdit:
    """One edit: test row ``row`` (whose text has ``text_sha256``) with each ``old`` span replaced by ``new``
    reads as a text of class ``label``."""

    id: str
    row: int
    text_sha256: str
    label: str
    spans: tuple[tuple[str, str], ...]

    @property
    def held_out(self) -> bool:
        return is_held_out(self.id)

    def apply(self, text: str) -> str | None:
        """The edited text, or ``None`` when ``text`` is not the text the edit was written for."""
        if text_sha256(text) != self.text_sha256:
            return None
        for old, new in self.spans:
            if text.count(old) != 1:
                raise ConfigError(f"contrast edit {self.id}: span {old!r} must occur exactly once in row {self.row}")
            text = text.replace(old, new)
        return text


def load_contrast_set(name: str = "ag_news") -> list[ContrastEdit]:
    """The packaged contrast set ``name`` (a key of :data:`CONTRAST_SETS`)."""
    if name not in CONTRAST_SETS:
        raise ConfigError(f"no contrast set {name!r}; known: {sorted(CONTRAST_SETS)}")
    raw = json.loads(resources.files("textclf.robustness").joinpath(CONTRAST_SETS[name]).read_text("utf-8"))
    return [ContrastEdit(e["id"], int(e["row"]), e["text_sha256"], e["label"],
                         tuple((old, new) for old, new in e["spans"])) for e in raw["edits"]]


def contrast_rows(test: pd.DataFrame, edits: list[ContrastEdit]) -> pd.DataFrame:
    """One row per edit that applies to ``test`` (matched by row id and text hash): ``id``, ``row``, ``original``,
    ``label`` (the original's), ``text`` (edited), ``contrast_label`` and ``held_out``."""
    by_row = dict(zip(test["row"].astype(int), zip(test["text"], test["label"], strict=True), strict=True))
    rows = []
    for edit in edits:
        if edit.row not in by_row:
            continue
        original, label = by_row[edit.row]
        edited = edit.apply(original)
        if edited is not None:
            rows.append({"id": edit.id, "row": edit.row, "original": original, "label": label, "text": edited,
                         "contrast_label": edit.label, "held_out": edit.held_out})
    return pd.DataFrame(rows, columns=["id", "row", "original", "label", "text", "contrast_label", "held_out"])


def score_contrast(predict: Callable[[list[str]], np.ndarray], test: pd.DataFrame, labels: list[str],
                   name: str = "ag_news") -> dict[str, Any]:
    """Per part (:data:`REPORT`, :data:`HELD_OUT`): rows, accuracy on the originals, on the edits (against their
    new labels) and ``consistency`` (both right: the model follows the edit). Empty parts when no edit applies."""
    edits = load_contrast_set(name)
    frame = contrast_rows(test, edits)
    out: dict[str, Any] = {"name": name, "edits": len(edits), "applicable": len(frame)}
    index = {label: i for i, label in enumerate(labels)}
    frame = frame[frame["label"].isin(index) & frame["contrast_label"].isin(index)]
    for part, chosen in ((REPORT, frame[~frame["held_out"]]), (HELD_OUT, frame[frame["held_out"]])):
        if chosen.empty:
            out[part] = {"rows": 0, "accuracy_original": None, "accuracy_contrast": None, "consistency": None}
            continue
        before = np.asarray(predict(chosen["original"].tolist())) == chosen["label"].map(index).to_numpy()
        after = np.asarray(predict(chosen["text"].tolist())) == chosen["contrast_label"].map(index).to_numpy()
        out[part] = {"rows": len(chosen), "accuracy_original": float(before.mean()),
                     "accuracy_contrast": float(after.mean()), "consistency": float((before & after).mean())}
    return out
