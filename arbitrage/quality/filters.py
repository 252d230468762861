"""Filters that judge each answer alone: truncated, length, refusals, wrong language, loops, min reward
(the contract, stages and `apply` are in base.py; dedup and decontamination in dedup.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from itertools import islice
from typing import Any

from arbitrage import constraints as C
from arbitrage.errors import ConfigError
from arbitrage.quality.base import text_of
from arbitrage.quality.text import normalised_words
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
    """Answers outside the word bounds. `min_words_by_task` raises the floor for tasks that ask for
    a text (an email, a story, advice): "1", "No." or "Sì, per la gestione dello stress." answers
    none of them, and a copy of the request's language passes its language check."""

    name = "length"

    def __init__(
        self,
        min_words: int = 1,
        max_words: int = 2000,
        min_words_by_task: Mapping[str, int] | None = None,
        name: str | None = None,
    ):
        super().__init__(name)
        self.min_words = number(f"filters.{self.name}.min_words", min_words, int, 0)
        self.max_words = number(f"filters.{self.name}.max_words", max_words, int, self.min_words)
        by_task = min_words_by_task or {}
        if not isinstance(by_task, Mapping):
            raise ConfigError(f"filters.{self.name}.min_words_by_task must map a task to its word floor, got {by_task!r}")
        self.min_words_by_task = {
            task: number(f"filters.{self.name}.min_words_by_task.{task}", n, int, 0, self.max_words)
            for task, n in by_task.items()
        }

    def reason(self, item: Any) -> str | None:
        prompt, _ = item
        count = len(C.words(text_of(item, "response")))
        floor = max(self.min_words, self.min_words_by_task.get(prompt.task, 0))
        if count < floor:
            return f"{count} words < {floor}" + (f" (task {prompt.task})" if floor > self.min_words else "")
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


class Echo(_PerItem):
    """The answer says the conversation back instead of answering it: more than `max_copied` of its
    word n-grams are the prompt's (a small model copies the request, and a copy passes the keyword
    and language checks it carries; at a later turn, the user's message or its own earlier answer).
    Fenced code is left out (a completion repeats its signature and docstring), and so are the
    `skip_tasks` and prompts with tests (the tests judge those)."""

    name = "echo"

    def __init__(self, n: int = 5, max_copied: float = 0.5, skip_tasks: Sequence[str] = ("code",), name: str | None = None):
        super().__init__(name)
        self.n = number(f"filters.{self.name}.n", n, int, 1)
        self.max_copied = number(f"filters.{self.name}.max_copied", max_copied, float, 0, 1)
        self.skip_tasks = set(skip_tasks)

    def grams(self, text: str) -> set[tuple[str, ...]]:
        words = normalised_words(text)
        return {tuple(words[i : i + self.n]) for i in range(len(words) - self.n + 1)}

    def reason(self, item: Any) -> str | None:
        prompt, _ = item
        if prompt.task in self.skip_tasks or prompt.tests:
            return None
        answer = self.grams(FENCED_CODE.sub(" ", text_of(item, "response")))
        if len(answer) < 2:
            return None  # too short to tell a copy from an answer that quotes a phrase
        said = set().union(*(self.grams(m["content"]) for m in prompt.messages))
        share = len(answer & said) / len(answer)
        return f"{share:.0%} of its {self.n}-grams are the prompt's" if share > self.max_copied else None


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
