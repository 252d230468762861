"""Counting helpers with the IFEval reference's semantics (its ``instructions_util``).

- words: ``nltk.tokenize.RegexpTokenizer(r"\\w+")``, which NLTK 3.10 runs on the ``regex`` engine,
  so a Devanagari or Thai word with combining marks is one word (``re`` would cut it apart);
- sentences: NLTK's English Punkt model (see `arbitrage.ifeval.punkt`);
- capital words: tokens of ``nltk.word_tokenize`` for which ``str.isupper()`` holds.
"""

from __future__ import annotations

import regex

from arbitrage.ifeval.punkt import sent_tokenize
from arbitrage.ifeval.treebank import word_tokenize

# RegexpTokenizer's default flags; none changes what \w+ matches, kept to mirror it.
_WORD_RE = regex.compile(r"\w+", regex.UNICODE | regex.MULTILINE | regex.DOTALL)


def count_words(text: str) -> int:
    """Number of ``\\w+`` runs: "don't" is 2 words, "3.14" is 2, "state-of-the-art" is 4."""
    return len(_WORD_RE.findall(text))


def split_sentences(text: str) -> list[str]:
    """Sentences as the reference's Punkt tokenizer cuts them ("Mr. Smith left." is one)."""
    return sent_tokenize(text)


def count_sentences(text: str) -> int:
    return len(sent_tokenize(text))


def count_capital_words(text: str) -> int:
    """Tokens of ``nltk.word_tokenize`` that are all upper case ("DON'T" counts twice: DO, N'T)."""
    return sum(1 for token in word_tokenize(text) if token.isupper())
