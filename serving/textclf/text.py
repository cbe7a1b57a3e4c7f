"""The one text-normalisation function shared by training and serving.

Training applies :func:`normalise_text` before tokenising and the serving predictor applies the very same function
to every request, so there is no train/serve skew. This module must stay dependency-free (standard library only):
the serving image imports it without torch or transformers.
"""

from __future__ import annotations

import enum
import html
import re
import unicodedata

#: Bumped whenever :func:`normalise_text` changes behaviour; recorded in model metadata so serving can refuse a
#: model trained with a different normalisation.
NORMALISATION_VERSION = "1"


class TextProfile(str, enum.Enum):
    """Which kind of text :func:`normalise_text` cleans. A model's profile is recorded in its metadata and export
    bundle (absent: ``news``), and the server applies the bundle's profile to every request."""

    NEWS = "news"  # AG News escapes, HTML entities and tags (every model's rules)
    ABSTRACT = "abstract"  # the news rules after LaTeX (math, commands, \unicode) and URLs of scientific abstracts


#: Metadata key of a model's text profile (train, export and serving bundles).
TEXT_PROFILE_KEY = "text_profile"


def text_profile_of(metadata: dict) -> TextProfile:
    """The profile a model's metadata records (``news`` when it records none, as every model before profiles).

    Raises:
        ValueError: An unknown profile name.
    """
    name = metadata.get(TEXT_PROFILE_KEY) or TextProfile.NEWS.value
    try:
        return TextProfile(name)
    except ValueError:
        raise ValueError(f"unknown text profile {name!r}; known: {[p.value for p in TextProfile]}") from None

# AG News stores HTML entities with the leading '&' stripped ("#39;", " quot;") and uses '\' both as an escape
# ("\$") and as a line-break marker between words ("to\U.N.").
_NUMERIC_ENTITY = re.compile(r"&?#(\d{1,5});")
_NAMED_ENTITY = re.compile(r"(?:&|(?<![A-Za-z]))(quot|amp|lt|gt|nbsp|apos);")
_HTML_TAG = re.compile(r"<\s*/?\s*[A-Za-z][^<>]{0,200}>")
_ESCAPED_SYMBOL = re.compile(r"\\+(?=[$&%#'\"])")
_BACKSLASH = re.compile(r"\\+")
_WHITESPACE = re.compile(r"\s+")
_NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "nbsp": " ", "apos": "'"}


# Scientific abstracts (the arXiv API's summaries): URLs, inline LaTeX math and text-style commands.
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"]+?(?=[.,;:!?)\]]*(?:\s|$))")
_LATEX_UNICODE = re.compile(r"\\unicode\{x([0-9A-Fa-f]{2,6})\}")
_LATEX_TEXT_COMMAND = re.compile(
    r"\\(?:textbf|textit|emph|texttt|textsc|textrm|textsf|text|mathrm|mathbf|mathit|mathcal|mathbb|mathsf|"
    r"mathtt|boldsymbol|bm|operatorname|underline|overline)\s*\{([^{}]*)\}")
_LATEX_MATH = re.compile(r"\$\$?([^$]{0,400}?)\$\$?|\\\((.{0,400}?)\\\)|\\\[(.{0,400}?)\\\]")
_LATEX_COMMAND = re.compile(r"\\([A-Za-z]+)\s*")
_LATEX_MATH_MARKUP = re.compile(r"[{}^_]")
_LATEX_QUOTES = re.compile(r"``|''")
#: LaTeX commands written as the character they print (others become their name: ``\log`` -> ``log``).
LATEX_SYMBOLS = {
    "times": "×", "cdot": "·", "pm": "±", "mp": "∓", "sim": "~", "approx": "≈", "leq": "≤", "le": "≤",
    "geq": "≥", "ge": "≥", "neq": "≠", "ne": "≠", "rightarrow": "→", "to": "→", "leftarrow": "←",
    "Rightarrow": "⇒", "infty": "∞", "circ": "°", "ell": "ℓ", "partial": "∂", "nabla": "∇", "sum": "∑",
    "prod": "∏", "in": "∈", "subset": "⊂", "cup": "∪", "cap": "∩", "forall": "∀", "exists": "∃", "%": "%",
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "zeta": "ζ",
    "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π",
    "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ",
    "Omega": "Ω",
}


def _latex_command(match: re.Match[str]) -> str:
    name = match.group(1)
    return LATEX_SYMBOLS.get(name, name) + " "


def _latex_math(match: re.Match[str]) -> str:
    inner = next(group for group in match.groups() if group is not None)
    return " " + _LATEX_MATH_MARKUP.sub("", _LATEX_COMMAND.sub(_latex_command, inner)).strip() + " "


def clean_abstract_markup(text: str) -> str:
    """The ``abstract`` profile's first pass: URLs become ``URL``, ``\\unicode{x2013}`` its character, text-style
    commands their argument (``\\textbf{A}ttention`` -> ``Attention``), inline math its content with symbols
    written out and markup removed (``$O(n^2)$`` -> ``O(n2)``, ``$\\times$`` -> ``×``), other commands their
    name, ``~`` a space and TeX quotes ``"``."""
    out = _URL.sub(" URL ", text)
    out = _LATEX_UNICODE.sub(lambda m: _numeric_entity_code(int(m.group(1), 16)), out)
    out = _LATEX_TEXT_COMMAND.sub(lambda m: m.group(1), out)
    out = _LATEX_MATH.sub(_latex_math, out)
    out = _LATEX_COMMAND.sub(_latex_command, out)
    out = _LATEX_QUOTES.sub('"', out)
    return out.replace("~", " ")


def _numeric_entity_code(code: int) -> str:
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return " "
    return chr(code)


def _numeric_entity(match: re.Match[str]) -> str:
    return _numeric_entity_code(int(match.group(1)))


def normalise_text(text: str, profile: TextProfile | str = TextProfile.NEWS) -> str:
    """Return the canonical form of one text, as seen by the model.

    Args:
        text: Raw text (for AG News, the title and description joined by a space).
        profile: ``news`` (the rules below) or ``abstract`` (:func:`clean_abstract_markup` first).

    Returns:
        The text with AG News escapes decoded (``#39;`` -> ``'``, ``quot;`` -> ``"``, ``\\$`` -> ``$``), HTML entities
        and tags removed, backslash line-break markers turned into spaces, Unicode in NFC form and whitespace
        collapsed.

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalise_text expects str, got {type(text).__name__}")
    if TextProfile(profile) is TextProfile.ABSTRACT:
        text = clean_abstract_markup(text)
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
