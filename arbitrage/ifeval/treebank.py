"""``nltk.word_tokenize`` without NLTK: Punkt sentences, then NLTK's improved Treebank rules.

IFEval's ``change_case:capital_word_frequency`` counts the tokens of ``nltk.word_tokenize`` that are
all upper case, so how the tokenizer cuts matters: "DON'T" is two capital words ("DO", "N'T"),
"CANNOT" is two ("CAN", "NOT"), "AT&T" is two ("AT", "T"), "AI's" is one ("AI", "'s").
The substitution rules below are those of NLTK 3.10's ``NLTKWordTokenizer`` (nltk/tokenize/
destructive.py, Copyright NLTK Project, Apache License 2.0), applied in the same order and, like
NLTK, with the ``regex`` engine except for the contraction rules, which NLTK compiles with ``re``.
"""

from __future__ import annotations

import re

import regex

from arbitrage.ifeval.punkt import sent_tokenize

_STARTING_QUOTES: list[tuple[regex.Pattern[str], str]] = [
    (regex.compile("([«“‘„]|[`]+)", regex.U), r" \1 "),
    (regex.compile(r"^\""), r"``"),
    (regex.compile(r"(``)"), r" \1 "),
    (regex.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (regex.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", regex.U), r"\1 "),
]

_PUNCTUATION: list[tuple[regex.Pattern[str], str]] = [
    (regex.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*+)\s*$", regex.U), r"\1 \2 \3 "),
    (regex.compile(r"([:,])([^\d])"), r" \1 \2"),
    (regex.compile(r"([:,])$"), r" \1 "),
    (regex.compile(r"\.{2,}", regex.U), r" \g<0> "),
    (regex.compile(r"[;@#$%&]"), r" \g<0> "),
    (regex.compile(r"[\u2012-\u2015]", regex.U), r" \g<0> "),  # figure/en/em dashes, bar
    (regex.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),  # the final period
    (regex.compile(r"[?!]"), r" \g<0> "),
    (regex.compile(r"([^'])' "), r"\1 ' "),
    (regex.compile(r"[*]", regex.U), r" \g<0> "),
    (regex.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> "),  # brackets
    (regex.compile(r"--"), r" -- "),
]

_ENDING_QUOTES: list[tuple[regex.Pattern[str], str]] = [
    (regex.compile("([»”’])", regex.U), r" \1 "),
    (regex.compile(r"''"), " '' "),
    (regex.compile(r'"'), " '' "),
    (regex.compile(r"\s+"), " "),
    (regex.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (regex.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]

# Robert MacIntyre's contractions, split in two ("cannot" -> "can not").
_CONTRACTIONS: list[re.Pattern[str]] = [
    re.compile(pattern)
    for pattern in (
        r"(?i)\b(can)(?#X)(not)\b",
        r"(?i)\b(d)(?#X)('ye)\b",
        r"(?i)\b(gim)(?#X)(me)\b",
        r"(?i)\b(gon)(?#X)(na)\b",
        r"(?i)\b(got)(?#X)(ta)\b",
        r"(?i)\b(lem)(?#X)(me)\b",
        r"(?i)\b(more)(?#X)('n)\b",
        r"(?i)\b(wan)(?#X)(na)(?=\s)",
        r"(?i) ('t)(?#X)(is)\b",
        r"(?i) ('t)(?#X)(was)\b",
    )
]


def treebank_tokenize(sentence: str) -> list[str]:
    """Tokens of one sentence, as ``nltk.tokenize.NLTKWordTokenizer().tokenize`` gives them."""
    text = sentence
    for pattern, replacement in _STARTING_QUOTES + _PUNCTUATION:
        text = pattern.sub(replacement, text)
    text = f" {text} "
    for pattern, replacement in _ENDING_QUOTES:
        text = pattern.sub(replacement, text)
    for pattern in _CONTRACTIONS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


def word_tokenize(text: str) -> list[str]:
    """Tokens of `text`, as ``nltk.word_tokenize(text)`` gives them (English)."""
    return [token for sentence in sent_tokenize(text) for token in treebank_tokenize(sentence)]
