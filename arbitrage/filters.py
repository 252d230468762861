"""The quality stage: filters that drop prompts before generation and answers after it.

Each filter looks at a whole stage at once (dedup needs every item) and returns what it drops,
with a reason: nothing is discarded silently. Stages:

- `prompt`: Prompt rows before routing — dedup and decontamination save teacher calls.
- `answer`: (Prompt, Candidate) of every scored answer — truncated, refusals, wrong language,
  loops. A filtered answer is never chosen but can still be a DPO `rejected`.
- `chosen`: (Prompt, Scored) of each prompt's chosen answer — reward below a threshold, and dedup
  of the answers we keep. When one drops the best answer, the next best is tried.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from itertools import islice
from typing import Any, Protocol, runtime_checkable

from arbitrage import constraints as C
from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt, Scored
from arbitrage.settings import number

# Multilingual refusal / assistant boilerplate (en, es, fr, de, pt, it).
REFUSALS = [
    r"\bas an ai\b",
    r"\bi(?: am|'m) (?:just )?an? (?:ai|language model)\b",
    r"\bi(?: am|'m) (?:sorry|afraid),? (?:but )?i (?:can(?:no|')t|am unable)",
    r"\bi can(?:no|')t (?:help|assist|provide|answer) (?:with )?(?:that|this)",
    r"\bcomo (?:una? )?(?:ia|inteligencia artificial|modelo de lenguaje)\b",
    r"\blo siento,? pero no puedo\b",
    r"\ben tant qu'(?:ia|intelligence artificielle|assistant)\b",
    r"\bje suis désolée?,? mais je ne peux pas\b",
    r"\bals (?:ki|künstliche intelligenz|sprachmodell)\b",
    r"\btut mir leid,? aber ich kann\b",
    r"\bcomo (?:uma )?(?:ia|inteligência artificial|modelo de linguagem)\b",
    r"\bdesculpe,? mas não posso\b",
    r"\bcome (?:un'?)?(?:ia|intelligenza artificiale|modello linguistico)\b",
    r"\bmi dispiace,? ma non posso\b",
]


# Every ASCII character that is not a word character (\w) becomes a space.
_ASCII_NON_WORD = str.maketrans({chr(c): " " for c in range(128) if not (chr(c).isalnum() or chr(c) == "_")})


def normalised_words(text: str) -> list[str]:
    r"""The words of a text, casefolded, punctuation dropped (\w+ after NFKC). ASCII text takes a
    path 5× faster that gives the same words: the quality stage reads every answer."""
    if text.isascii():
        return text.lower().translate(_ASCII_NON_WORD).split()
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())


def normalise(text: str) -> str:
    """Casefolded, accents and punctuation kept apart from words, whitespace collapsed."""
    return " ".join(normalised_words(text))


STAGES = ("prompt", "answer", "chosen")
FIELDS = ("prompt", "response")


def checked(name: str, stage: str, field: str = "prompt") -> tuple[str, str]:
    """A filter's stage and field, or one error naming the choices (a typo is not a silent default)."""
    if stage not in STAGES:
        raise ConfigError(f"filters.{name}.stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if field not in FIELDS:
        raise ConfigError(f"filters.{name}.field must be one of {', '.join(FIELDS)}, got {field!r}")
    if stage == "prompt" and field != "prompt":
        raise ConfigError(f"filters.{name}: a prompt-stage filter can only look at field=prompt")
    return stage, field


@runtime_checkable
class Filter(Protocol):
    name: str
    stage: str  # one of STAGES

    def check(self) -> None:
        """Raise ConfigError naming the fix (a missing eval file, a bad threshold)."""

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        """Indexes of the items to drop, each with a reason."""


def text_of(item: Prompt | tuple[Prompt, Scored], field: str) -> str:
    """The text a filter looks at: a prompt's user message, or an answer's text."""
    if isinstance(item, Prompt):
        return item.user_text
    prompt, scored = item
    return prompt.user_text if field == "prompt" else scored.candidate.text or ""


class _PerItem:
    """Base for filters that judge each item alone."""

    name = "per_item"
    stage = "answer"

    def __init__(self, name: str | None = None):
        self.name = name or self.name

    def check(self) -> None:
        return None

    def reason(self, item: Any) -> str | None:
        raise NotImplementedError

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        return {i: f"{self.name}: {why}" for i, item in enumerate(items) if (why := self.reason(item))}


class Truncated(_PerItem):
    """Answers cut off at max_tokens (finish_reason == "length")."""

    name = "truncated"

    def reason(self, item: Any) -> str | None:
        return "cut off at max_tokens" if item[1].candidate.finish_reason == "length" else None


class Length(_PerItem):
    name = "length"

    def __init__(self, min_words: int = 1, max_words: int = 2000, name: str | None = None):
        super().__init__(name)
        self.min_words = number(f"filters.{self.name}.min_words", min_words, int, 0)
        self.max_words = number(f"filters.{self.name}.max_words", max_words, int, self.min_words)

    def reason(self, item: Any) -> str | None:
        count = len(C.words(text_of(item, "response")))
        if count < self.min_words:
            return f"{count} words < {self.min_words}"
        if count > self.max_words:
            return f"{count} words > {self.max_words}"
        return None


class Refusal(_PerItem):
    """Refusals and "as an AI" boilerplate, in the six persona languages."""

    name = "refusal"

    def __init__(self, patterns: Sequence[str] | None = None, name: str | None = None):
        super().__init__(name)
        self.pattern = re.compile("|".join(patterns or REFUSALS), re.IGNORECASE)

    def reason(self, item: Any) -> str | None:
        match = self.pattern.search(text_of(item, "response"))
        return f"matches '{match.group(0)}'" if match else None


# Language ID reads at most this many characters of an answer: py3langid's cost grows with the
# text (about 3 ms for a 470-word answer, 0.3 ms for its first 200 characters) and on the benchmark
# set the cut changed no prediction (BENCHMARKS.md, "Language ID for the quality stage").
LANGID_MAX_CHARS = 200
FENCED_CODE = re.compile(r"```.*?```", re.DOTALL)


@cache
def _langid() -> Any:
    """py3langid's identifier over its 97 languages; the model ships in the wheel (loaded once)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def _iso639_1(label: str) -> str | None:
    """'__label__en', 'EN', 'pt-BR', 'zh_Hans' -> 'en', 'pt', 'zh'; unknown labels ('und', 'un') -> None."""
    code = label.removeprefix("__label__").replace("_", "-").split("-")[0].strip().lower()
    return code if len(code) == 2 and code.isalpha() and code != "un" else None


def detect_answer_language(text: str) -> str | None:
    """ISO 639-1 code of an answer's language (py3langid, about 0.3 ms), or None without letters.
    The `language:response_language` check keeps langdetect (arbitrage/ifeval), as IFEval does."""
    text = text.strip()
    if not any(ch.isalpha() for ch in text):
        return None
    if len(text) > LANGID_MAX_CHARS:
        text = text[:LANGID_MAX_CHARS].rsplit(None, 1)[0]  # cut at a space, as the benchmark did
    return _iso639_1(_langid().classify(text)[0])


class WrongLanguage(_PerItem):
    """The answer is not in the prompt's language. Short, code and math answers are skipped:
    language ID is unreliable on them. Fenced code is removed before counting and detecting."""

    name = "wrong_language"

    def __init__(self, min_words: int = 8, skip_tasks: Sequence[str] = ("code", "math"), name: str | None = None):
        super().__init__(name)
        self.min_words, self.skip_tasks = number(f"filters.{self.name}.min_words", min_words, int, 0), set(skip_tasks)

    def reason(self, item: Any) -> str | None:
        prompt, _ = item
        if prompt.task in self.skip_tasks:
            return None
        text = FENCED_CODE.sub(" ", text_of(item, "response"))
        if sum(1 for _ in islice(C.WORD.finditer(text), self.min_words)) < self.min_words:  # stops at min_words
            return None
        found = detect_answer_language(text)
        return f"answer is '{found}', prompt is '{prompt.language}'" if found and found != prompt.language else None


class Repetition(_PerItem):
    """Empty answers and degenerate loops: too large a share of repeated word n-grams."""

    name = "repetition"

    def __init__(self, n: int = 4, max_repeated: float = 0.3, name: str | None = None):
        super().__init__(name)
        self.n = number(f"filters.{self.name}.n", n, int, 1)
        self.max_repeated = number(f"filters.{self.name}.max_repeated", max_repeated, float, 0, 1)

    def repeated_share(self, text: str) -> float:
        words = normalised_words(text)
        grams = [" ".join(words[i : i + self.n]) for i in range(len(words) - self.n + 1)]
        return 1 - len(set(grams)) / len(grams) if grams else 0.0

    def reason(self, item: Any) -> str | None:
        text = text_of(item, "response")
        if not text.strip():
            return "empty answer"
        share = self.repeated_share(text)
        return f"{share:.0%} of {self.n}-grams repeated" if share > self.max_repeated else None


class MinReward(_PerItem):
    """Chosen answers whose reward is below `threshold`: the prompt goes to rejected_rows.
    Only the chosen side is filtered; a low-reward answer is still a useful DPO `rejected`."""

    name = "min_reward"
    stage = "chosen"

    def __init__(self, threshold: float, name: str | None = None):
        super().__init__(name)
        self.threshold = number(f"filters.{self.name}.threshold", threshold, float)

    def reason(self, item: Any) -> str | None:
        score = item[1].score
        return f"reward {score:.3f} < {self.threshold}" if score < self.threshold else None


def apply(filters: Sequence[Filter], stage: str, items: list, counts: dict[str, int]) -> tuple[list, dict[int, str]]:
    """Run a stage's filters in order; returns the kept items and {original index: reason}."""
    assert stage in STAGES, stage
    reasons: dict[int, str] = {}
    index = list(range(len(items)))
    for f in filters:
        if f.stage != stage:
            continue
        current = [items[i] for i in index]
        dropped = f.drop(current)
        counts[f.name] = counts.get(f.name, 0) + len(dropped)
        for j, why in dropped.items():
            reasons[index[j]] = why
        index = [i for j, i in enumerate(index) if j not in dropped]
    return [items[i] for i in index], reasons
