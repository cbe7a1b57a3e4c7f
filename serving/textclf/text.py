"""The one text-normalisation function shared by training and serving.

Training applies :func:`normalise_text` before tokenising and the serving predictor applies the very same function
to every request, so there is no train/serve skew. This module must stay dependency-free (standard library only):
the serving image imports it without torch or transformers.
"""

from __future__ import annotations

import html
import re
import unicodedata

#: Bumped whenever :func:`normalise_text` changes behaviour; recorded in model metadata so serving can refuse a
#: model trained with a different normalisation.
NORMALISATION_VERSION = "1"

# AG News stores HTML entities with the leading '&' stripped ("#39;", " quot;") and uses '\' both as an escape
# ("\$") and as a line-break marker between words ("to\U.N.").
_NUMERIC_ENTITY = re.compile(r"&?#(\d{1,5});")
_NAMED_ENTITY = re.compile(r"(?:&|(?<![A-Za-z]))(quot|amp|lt|gt|nbsp|apos);")
_HTML_TAG = re.compile(r"<\s*/?\s*[A-Za-z][^<>]{0,200}>")
_ESCAPED_SYMBOL = re.compile(r"\\+(?=[$&%#'\"])")
_BACKSLASH = re.compile(r"\\+")
_WHITESPACE = re.compile(r"\s+")
_NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "nbsp": " ", "apos": "'"}


def _numeric_entity(match: re.Match[str]) -> str:
    code = int(match.group(1))
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return " "
    return chr(code)


def normalise_text(text: str) -> str:
    """Return the canonical form of one news text, as seen by the model.

    Args:
        text: Raw text (for AG News, the title and description joined by a space).

    Returns:
        The text with AG News escapes decoded (``#39;`` -> ``'``, ``quot;`` -> ``"``, ``\\$`` -> ``$``), HTML entities
        and tags removed, backslash line-break markers turned into spaces, Unicode in NFC form and whitespace
        collapsed.

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalise_text expects str, got {type(text).__name__}")
    out = _NUMERIC_ENTITY.sub(_numeric_entity, text)
    out = _NAMED_ENTITY.sub(lambda m: _NAMED[m.group(1)], out)
    out = html.unescape(out)
    out = _HTML_TAG.sub(" ", out)
    out = _ESCAPED_SYMBOL.sub("", out)
    out = _BACKSLASH.sub(" ", out)
    out = unicodedata.normalize("NFC", out)
    return _WHITESPACE.sub(" ", out).strip()


def dedup_key(text: str) -> str:
    """Key under which two texts count as the same story for duplicate and leakage checks.

    Args:
        text: Raw text.

    Returns:
        The normalised text, case-folded, with everything but letters and digits removed.
    """
    folded = normalise_text(text).casefold()
    return "".join(ch for ch in folded if ch.isalnum())
