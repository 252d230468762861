"""Which constraints the persona sampler attaches, with what arguments, and which never go together.

Arguments use IFEval's own names, drawn the way IFEval's prompts use them (relations "less than" /
"at least", counts in its ranges) and localised where the text is the prompt's language (keywords
from the topic, the end phrase, the section word, a paragraph's first word).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from arbitrage import ifeval

WORD = re.compile(r"\w+(?:['’-]\w+)*", re.UNICODE)  # a word, contractions and hyphenations whole


@cache
def texts() -> dict:
    path = Path(__file__).parent.parent / "i18n" / "constraints.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Context:
    """What a constraint may draw its arguments from."""

    language: str
    topic: str
    task: str


def _topic_words(ctx: Context) -> list[str]:
    found = WORD.findall(ctx.topic)
    return [w.lower() for w in found if len(w) >= 5] or [w.lower() for w in found] or ["idea"]


def _relation(rng: random.Random, less_than: list[int], at_least: list[int]) -> tuple[str, int]:
    if rng.random() < 0.5:
        return "less than", rng.choice(less_than)
    return "at least", rng.choice(at_least)


def _keywords(rng, ctx):
    words = _topic_words(ctx)
    return {"keywords": rng.sample(words, min(len(words), rng.choice([1, 2])))}


def _frequency(rng, ctx):
    return {"keyword": rng.choice(_topic_words(ctx)), "frequency": rng.choice([2, 3]), "relation": "at least"}


def _forbidden(rng, ctx):
    # Words a writer reaches for without thinking: avoiding them is the test.
    common = {"en": ["very", "really"], "es": ["muy", "cosa"], "fr": ["très", "chose"]}
    common |= {"de": ["sehr", "wirklich"], "pt": ["muito", "coisa"], "it": ["molto", "cosa"]}
    return {"forbidden_words": rng.sample(common[ctx.language], rng.choice([1, 2]))}


def _letters(rng, ctx):
    relation, n = _relation(rng, [40, 60], [10, 20])
    return {"letter": rng.choice(texts()["letters"][ctx.language]), "let_frequency": n, "let_relation": relation}


def _sentences(rng, ctx):
    relation, n = _relation(rng, [5, 8, 10], [3, 5])
    return {"num_sentences": n, "relation": relation}


def _words(rng, ctx):
    relation, n = _relation(rng, [50, 80, 120], [60, 100, 150])
    return {"num_words": n, "relation": relation}


def _nth_paragraph(rng, ctx):
    n = rng.choice([2, 3])
    return {
        "num_paragraphs": n,
        "nth_paragraph": rng.randint(1, n),
        "first_word": rng.choice(texts()["first_words"][ctx.language]),
    }


def _capitals(rng, ctx):
    relation, n = _relation(rng, [3, 5], [2, 3])
    return {"capital_frequency": n, "capital_relation": relation}


ARGS: dict[str, Callable[[random.Random, Context], dict]] = {
    "keywords:existence": _keywords,
    "keywords:frequency": _frequency,
    "keywords:forbidden_words": _forbidden,
    "keywords:letter_frequency": _letters,
    "length_constraints:number_sentences": _sentences,
    "length_constraints:number_paragraphs": lambda rng, ctx: {"num_paragraphs": rng.choice([2, 3, 4])},
    "length_constraints:number_words": _words,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_content:number_placeholders": lambda rng, ctx: {"num_placeholders": rng.choice([1, 2, 3])},
    "detectable_content:postscript": lambda rng, ctx: {"postscript_marker": rng.choice(["P.S.", "P.P.S"])},
    "detectable_format:number_bullet_lists": lambda rng, ctx: {"num_bullets": rng.choice([2, 3, 4, 5])},
    "detectable_format:number_highlighted_sections": lambda rng, ctx: {"num_highlights": rng.choice([1, 2, 3])},
    "detectable_format:multiple_sections": lambda rng, ctx: {
        "section_spliter": texts()["section_word"][ctx.language],
        "num_sections": rng.choice([2, 3, 4]),
    },
    "detectable_format:json_format": lambda rng, ctx: {},
    "detectable_format:title": lambda rng, ctx: {},
    "combination:two_responses": lambda rng, ctx: {},
    "startend:end_checker": lambda rng, ctx: {"end_phrase": texts()["end_phrase_text"][ctx.language]},
    "change_case:capital_word_frequency": _capitals,
    "change_case:english_capital": lambda rng, ctx: {},
    "change_case:english_lowercase": lambda rng, ctx: {},
    "punctuation:no_comma": lambda rng, ctx: {},
    "startend:quotation": lambda rng, ctx: {},
    "arbitrage:lowercase": lambda rng, ctx: {},
}
# Not sampled: `constrained_response` (yes/no/maybe fits none of our tasks), `repeat_prompt`
# (a written request would change the text to repeat), `response_language`, `code_block` and
# `final_number` (attached by the synthesiser), the other extensions (checkable from files).
SAMPLED = tuple(ARGS)

# English-only checks go to English prompts; the extension stands in for the others.
ONLY_FOR = {
    "change_case:english_capital": {"en"},
    "change_case:english_lowercase": {"en"},
    "arbitrage:lowercase": {"es", "fr", "de", "pt", "it"},
}

# Constraints that make no sense for a task (code must keep its syntax; a number must stay one).
FORMATS = {
    "detectable_format:json_format",
    "startend:quotation",
    "length_constraints:number_paragraphs",
    "length_constraints:nth_paragraph_first_word",
    "detectable_format:number_bullet_lists",
    "detectable_format:multiple_sections",
    "combination:two_responses",
}
CASES = {
    "change_case:english_capital",
    "change_case:english_lowercase",
    "arbitrage:lowercase",
    "change_case:capital_word_frequency",
}
TASK_EXCLUDES = {
    "code": FORMATS | CASES | {"punctuation:no_comma", "keywords:forbidden_words", "keywords:letter_frequency"},
    "math": FORMATS | {"startend:end_checker", "keywords:forbidden_words", "length_constraints:number_sentences"},
}


def _conflicts() -> dict[str, set[str]]:
    """IFEval's own conflict table, minus its response_language row (that row is there because
    IFEval's keywords and end phrases are English; ours are in the prompt's language), plus the
    pairs our extensions add. Symmetric."""
    table = {name: set(ifeval.CONFLICTS.get(name, ())) for name in SAMPLED}
    for name in table:
        table[name].discard("language:response_language")
    table["arbitrage:lowercase"] = {
        "change_case:capital_word_frequency",
        "change_case:english_capital",
        "detectable_format:json_format",
    }
    table["detectable_format:json_format"] |= set(SAMPLED) - {"keywords:existence", "keywords:forbidden_words"}
    for name in list(table):
        table[name].add(name)
        for other in list(table[name]):
            table.setdefault(other, set()).add(name)
    return table


CONFLICTS = _conflicts()


def sample(rng: random.Random, ctx: Context, count: int) -> list[dict]:
    """Draw `count` mutually compatible constraints for one prompt."""
    excluded = set(TASK_EXCLUDES.get(ctx.task, ()))
    excluded |= {name for name, languages in ONLY_FOR.items() if ctx.language not in languages}
    chosen: list[dict] = []
    pool = [name for name in SAMPLED if name not in excluded]
    rng.shuffle(pool)
    for name in pool:
        if len(chosen) == count:
            break
        if name in excluded:
            continue
        chosen.append({"type": name, **ARGS[name](rng, ctx)})
        excluded |= CONFLICTS[name]
    return chosen
