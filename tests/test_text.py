"""The shared normalisation function: AG News escapes, HTML, whitespace, and its contract."""

import pytest

from textclf.text import dedup_key, normalise_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("It#39;s #36;5 now", "It's $5 now"),
        ("the  quot;horror quot; of war", 'the "horror " of war'),
        ("authorizing \\$24 million", "authorizing $24 million"),
        ("approval for Cambodia to\\former Khmer Rouge", "approval for Cambodia to former Khmer Rouge"),
        ("Unrest &lt;p&gt;&lt;/p&gt;&lt;p&gt; By Joseph", "Unrest By Joseph"),
        ("Sudan &lt;b&gt;...&lt;/b&gt; Sudanese", "Sudan ... Sudanese"),
        ("  tabs\tand\nnewlines  ", "tabs and newlines"),
        ("caf\u0065\u0301", "caf\u00e9"),  # NFC
        ("", ""),
    ],
)
def test_normalise_text_decodes_ag_news_escapes(raw, expected):
    assert normalise_text(raw) == expected


def test_normalise_text_is_idempotent_on_real_text():
    once = normalise_text("Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, Wall Street#39;s")
    assert normalise_text(once) == once
    assert "#39;" not in once


def test_normalise_text_rejects_non_strings():
    with pytest.raises(TypeError, match="expects str, got int"):
        normalise_text(42)


def test_dedup_key_ignores_case_punctuation_and_escapes():
    assert dedup_key("Oil prices RISE!  quot;again quot;") == dedup_key("oil prices rise \"again\"")
    assert dedup_key("Oil prices rise") != dedup_key("Oil prices fall")


@pytest.mark.parametrize("raw, expected", [
    (r"We reach $O(n^2)$ time, 3$\times$ faster ($\alpha=0.5$).", "We reach O(n2) time, 3 × faster ( α =0.5 )."),
    (r"\textbf{A}ttention is \emph{all} you need $\unicode{x2013}$ really", "Attention is all you need – really"),
    ("Code: https://github.com/a/b.git. See Fig.~1 and www.example.org/x, too.",
     "Code: URL . See Fig. 1 and URL , too."),
    (r"``quoted'' with \(x_i\) and $$\sum_k w_k$$", '"quoted" with xi and ∑ k wk'),
])
def test_abstract_profile_cleans_latex_and_urls(raw, expected):
    from textclf.text import TextProfile

    assert normalise_text(raw, TextProfile.ABSTRACT) == expected
    assert normalise_text(raw, "abstract") == expected


def test_news_profile_is_unchanged_by_abstract_rules():
    text = "Stocks rose $5 to $10 on Monday; see www.example.com"
    assert normalise_text(text) == text  # dollars and URLs are news content
    assert normalise_text(text, "news") == text


def test_a_models_profile_comes_from_its_metadata():
    from textclf.text import TextProfile, text_profile_of

    assert text_profile_of({}) is TextProfile.NEWS  # every model before profiles
    assert text_profile_of({"text_profile": "abstract"}) is TextProfile.ABSTRACT
    with pytest.raises(ValueError, match="unknown text profile 'tweets'"):
        text_profile_of({"text_profile": "tweets"})
