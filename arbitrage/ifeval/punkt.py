"""Punkt sentence splitting with NLTK's English model, without NLTK.

IFEval's reference counts sentences with ``nltk.data.load("nltk:tokenizers/punkt/english.pickle")``,
which NLTK >= 3.9 serves as ``PunktTokenizer("english")`` (the ``punkt_tab`` model), and its
``word_tokenize`` splits sentences with the same model. This module re-implements the tokenizing
half of Punkt (Kiss & Strunk 2006) as NLTK 3.10 runs it, decision for decision, with the English
parameters shipped beside it in ``punkt_english.tsv``. The algorithm follows NLTK's
``nltk/tokenize/punkt.py`` (Copyright NLTK Project, Apache License 2.0).

NLTK 3.10 compiles these patterns with the third-party ``regex`` engine, whose ``\\w``, ``\\s`` and
``\\b`` differ from ``re`` on combining marks (Devanagari, Thai, ...), so ``regex`` is used here too.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from importlib.resources import files
from itertools import pairwise

import regex

# Orthographic-context flags (punkt_english.tsv stores their sums per word type).
_BEG_UC, _MID_UC, _UNK_UC, _BEG_LC, _MID_LC, _UNK_LC = 2, 4, 8, 16, 32, 64
_UPPER = _BEG_UC | _MID_UC | _UNK_UC
_LOWER = _BEG_LC | _MID_LC | _UNK_LC

_SENT_END_CHARS = (".", "?", "!")
# Tokens that never start a sentence in the orthographic heuristic.
_PUNCTUATION = tuple(";:,.!?")

# Characters that cannot appear within words; NLTK 3.10 added the curly quotes and guillemets
# (3.9 lacks them, so there a period glued to a closing curly quote never ends a sentence).
_NON_WORD = r"(?:[)\";}\]\*:@\'\({\[\u2018\u2019\u201c\u201d\xab\xbb?!])"
_MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"  # dashes, ellipses, spaced ellipses
_WORD_START = r"[^\(\"\`{\[:;&\#\*@\)}\]\-,]"

_WORD_RE = regex.compile(
    rf"""(
        {_MULTI_CHAR}
        |
        (?={_WORD_START})\S+?
        (?=\s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR}))
        |
        \S
    )""",
    regex.UNICODE | regex.VERBOSE,
)
# A candidate boundary: . ? or ! followed by other punctuation or by whitespace and a token.
_PERIOD_CONTEXT_RE = regex.compile(
    rf"[\.\?!](?=(?P<after_tok>{_NON_WORD}|\s+(?P<next_tok>\S+)))",
    regex.UNICODE | regex.VERBOSE,
)
# Closing punctuation after a boundary that belongs to the sentence before it.
_REALIGN_RE = regex.compile(r'["\')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)', regex.MULTILINE)

_ELLIPSIS_RE = regex.compile(r"\.\.+$")
_NUMERIC_RE = regex.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_INITIAL_RE = regex.compile(r"[^\W\d]\.$", regex.UNICODE)


@dataclass(frozen=True)
class _Params:
    abbrev_types: frozenset[str]
    collocations: frozenset[tuple[str, str]]
    sent_starters: frozenset[str]
    ortho_context: dict[str, int]


@functools.cache
def _english() -> _Params:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    names = {"[abbrev_types]", "[collocations]", "[sent_starters]", "[ortho_context]"}
    text = files("arbitrage.ifeval").joinpath("punkt_english.tsv").read_text(encoding="utf-8")
    for line in text.split("\n"):
        if line in names:
            current = sections.setdefault(line.strip("[]"), [])
        elif current is not None and line:
            current.append(line)
    ortho = {}
    for line in sections["ortho_context"]:
        word, flags = line.split("\t")
        ortho[word] = int(flags)
    return _Params(
        # ". . " (spaced ellipsis less its period) is in the model too; see the data file header.
        abbrev_types=frozenset([*sections["abbrev_types"], ". . "]),
        collocations=frozenset(tuple(line.split("\t")) for line in sections["collocations"]),
        sent_starters=frozenset(sections["sent_starters"]),
        ortho_context=ortho,
    )


class _Token:
    """One Punkt word token with its boundary annotations."""

    __slots__ = ("tok", "type", "period_final", "sentbreak", "abbr", "ellipsis")

    def __init__(self, tok: str) -> None:
        self.tok = tok
        self.type = _NUMERIC_RE.sub("##number##", tok.lower())
        self.period_final = tok.endswith(".")
        self.sentbreak = self.abbr = self.ellipsis = False

    @property
    def type_no_period(self) -> str:
        return self.type[:-1] if len(self.type) > 1 and self.type[-1] == "." else self.type

    @property
    def type_no_sentperiod(self) -> str:
        return self.type_no_period if self.sentbreak else self.type

    @property
    def first_upper(self) -> bool:
        return self.tok[0].isupper()

    @property
    def first_lower(self) -> bool:
        return self.tok[0].islower()

    @property
    def is_initial(self) -> bool:
        return bool(_INITIAL_RE.match(self.tok))


def _word_tokens(text: str) -> list[_Token]:
    return [_Token(tok) for line in text.split("\n") if line.strip() for tok in _WORD_RE.findall(line)]


def _first_pass(token: _Token, params: _Params) -> None:
    """Type-based guess: ?, ! and period-final non-abbreviations end sentences."""
    tok = token.tok
    if tok in _SENT_END_CHARS:
        token.sentbreak = True
    elif _ELLIPSIS_RE.match(tok):
        token.ellipsis = True
    elif token.period_final and not tok.endswith(".."):
        base = tok[:-1].lower()
        if base in params.abbrev_types or base.split("-")[-1] in params.abbrev_types:
            token.abbr = True
        else:
            token.sentbreak = True


def _ortho_heuristic(token: _Token, params: _Params) -> bool | str:
    """Whether `token` starts a sentence judging by how its type was capitalized in training."""
    if token.tok in _PUNCTUATION:
        return False
    context = params.ortho_context.get(token.type_no_sentperiod, 0)
    if token.first_upper and context & _LOWER and not context & _MID_UC:
        return True
    if token.first_lower and (context & _UPPER or not context & _BEG_LC):
        return False
    return "unknown"


def _second_pass(token: _Token, following: _Token, params: _Params) -> None:
    """Revise a period-final token's guess from the token after it (collocations, orthography)."""
    if not token.period_final:
        return
    typ = token.type_no_period
    next_typ = following.type_no_sentperiod
    is_initial = token.is_initial
    if (typ, next_typ) in params.collocations:
        token.sentbreak, token.abbr = False, True
        return
    if (token.abbr or token.ellipsis) and not is_initial:
        if _ortho_heuristic(following, params) is True:
            token.sentbreak = True
            return
        if following.first_upper and next_typ in params.sent_starters:
            token.sentbreak = True
            return
    if is_initial or typ == "##number##":
        starts = _ortho_heuristic(following, params)
        if starts is False:
            token.sentbreak, token.abbr = False, True
            return
        if starts == "unknown" and is_initial and following.first_upper and not params.ortho_context.get(next_typ, 0) & _LOWER:
            token.sentbreak, token.abbr = False, True


def _contains_sentbreak(context: str, params: _Params) -> bool:
    """True when some token of `context` other than the last one ends a sentence."""
    tokens = _word_tokens(context)
    for token in tokens:
        _first_pass(token, params)
    for token, following in pairwise(tokens):
        _second_pass(token, following, params)
        if token.sentbreak:
            return True
    return False


def _last_ascii_whitespace(text: str) -> int:
    # NLTK returns 0 both for "none" and for "at index 0"; callers rely on that.
    for index in range(len(text) - 1, -1, -1):
        if text[index] in string.whitespace:
            return index
    return 0


def _candidate_contexts(text: str):
    """Yield (match, context) for each candidate boundary, context = word before + match + after."""
    previous_slice = slice(0, 0)
    previous_match = None
    for match in _PERIOD_CONTEXT_RE.finditer(text):
        before = text[previous_slice.stop : match.start()]
        word_start = _last_ascii_whitespace(before)
        word_start = word_start + previous_slice.stop + 1 if word_start else previous_slice.start
        word_slice = slice(word_start, match.start())
        # Overlapping candidates ("!!!") keep only the last one.
        if previous_match and previous_slice.stop <= word_slice.start:
            yield previous_match, text[previous_slice] + previous_match.group() + previous_match.group("after_tok")
        previous_match, previous_slice = match, word_slice
    if previous_match:
        yield previous_match, text[previous_slice] + previous_match.group() + previous_match.group("after_tok")


def _slices(text: str, params: _Params):
    last_break = 0
    for match, context in _candidate_contexts(text):
        if _contains_sentbreak(context, params):
            yield slice(last_break, match.end())
            last_break = match.start("next_tok") if match.group("next_tok") else match.end()
    yield slice(last_break, len(text.rstrip()))


def _realigned(text: str, slices: list[slice]):
    """Move closing quotes/brackets after a boundary onto the sentence they close."""
    realign = 0
    for index, current in enumerate(slices):
        current = slice(current.start + realign, current.stop)
        following = slices[index + 1] if index + 1 < len(slices) else None
        if following is None:
            if text[current]:
                yield current
            continue
        match = _REALIGN_RE.match(text[following])
        if match:
            yield slice(current.start, following.start + len(match.group(0).rstrip()))
            realign = match.end()
        else:
            realign = 0
            if text[current]:
                yield current


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, as nltk's English PunktTokenizer.span_tokenize gives them."""
    params = _english()
    return [(s.start, s.stop) for s in _realigned(text, list(_slices(text, params)))]


def sent_tokenize(text: str) -> list[str]:
    """Sentences of `text`, as ``nltk.sent_tokenize(text)`` (English punkt_tab model) returns them."""
    return [text[start:end] for start, end in sentence_spans(text)]
