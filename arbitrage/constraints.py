"""Verifiable constraints: instruction text per language + a deterministic checker per type.

Tulu 3's precise instruction following (and IFEval before it) attaches checkable constraints to
persona prompts, so a response can be scored without a reward model. A constraint is stored as a
plain dict, ``{"type": "max_words", "n": 40}``, so it survives JSON/parquet round trips; this
module owns what each type means.
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

WORD = re.compile(r"\w+(?:['’-]\w+)*", re.UNICODE)
BULLET = re.compile(r"^\s*[*\-•]\s+\S", re.MULTILINE)
NUMBER = re.compile(r"-?\d[\d,. ]*\d|-?\d")
CODE_BLOCK = re.compile(r"```(?:python|py)\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)
FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.DOTALL)
QUOTES = {'"': '"', "“": "”", "«": "»", "„": "“"}


@cache
def texts() -> dict:
    path = Path(__file__).parent / "i18n" / "constraints.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def words(text: str) -> list[str]:
    return WORD.findall(text)


def _has_word(text: str, word: str) -> bool:
    pattern = r"(?<!\w)" + re.escape(word.casefold()) + r"(?!\w)"
    return re.search(pattern, text.casefold()) is not None


def _strip_fence(text: str) -> str:
    match = FENCE.match(text.strip())
    return match.group(1) if match else text.strip()


def _is_json(text: str) -> bool:
    try:
        json.loads(_strip_fence(text))
    except ValueError:
        return False
    return True


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def _quoted(text: str) -> bool:
    text = text.strip()
    return len(text) > 1 and QUOTES.get(text[0]) == text[-1]


def _code_parses(text: str) -> bool:
    blocks = CODE_BLOCK.findall(text)
    if len(blocks) != 1:
        return False
    try:
        ast.parse(blocks[0])
    except SyntaxError:
        return False
    return True


def parse_number(token: str) -> float | None:
    """'1,234' / '1 234' / '1.234' (thousands) and '12.5' → float; None if not a number."""
    token = token.replace(" ", "")
    if re.fullmatch(r"-?\d{1,3}([,.]\d{3})+", token):
        token = re.sub(r"[,.]", "", token)
    token = token.replace(",", ".")
    try:
        return float(token)
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The last number in the response: where 'answer on the last line' puts it."""
    numbers = NUMBER.findall(text.replace("**", ""))
    return parse_number(numbers[-1]) if numbers else None


def detect_language(text: str) -> str | None:
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # langdetect is random unless seeded
    try:
        return detect(text)
    except LangDetectException:
        return None


@dataclass(frozen=True)
class Context:
    """What a constraint may draw its arguments from."""

    language: str
    topic: str
    task: str


@dataclass(frozen=True)
class ConstraintType:
    name: str
    check: Callable[[str, dict], bool]
    make_args: Callable[[random.Random, Context], dict]
    conflicts: frozenset[str] = frozenset()
    # Attached by the task itself (math answer, code block) rather than sampled.
    sampled: bool = True


def _keyword(rng: random.Random, ctx: Context) -> dict:
    candidates = [w for w in words(ctx.topic) if len(w) >= 6] or words(ctx.topic)
    return {"word": rng.choice(candidates)}


def _none(rng: random.Random, ctx: Context) -> dict:
    return {}


FORMAT_HEAVY = frozenset({"json", "quotation", "bullets", "paragraphs", "title", "end_phrase"})

REGISTRY: dict[str, ConstraintType] = {
    c.name: c
    for c in [
        ConstraintType(
            "max_words",
            lambda text, a: len(words(text)) < a["n"],
            lambda rng, ctx: {"n": rng.choice([30, 50, 80, 120])},
            frozenset({"min_words", "paragraphs"}),
        ),
        ConstraintType(
            "min_words",
            lambda text, a: len(words(text)) >= a["n"],
            lambda rng, ctx: {"n": rng.choice([60, 100, 150])},
            frozenset({"max_words"}),
        ),
        ConstraintType(
            "bullets",
            lambda text, a: len(BULLET.findall(text)) == a["n"],
            lambda rng, ctx: {"n": rng.choice([2, 3, 4, 5])},
            FORMAT_HEAVY - {"bullets", "title", "end_phrase"} | {"paragraphs"},
        ),
        ConstraintType(
            "include_keyword",
            lambda text, a: _has_word(text, a["word"]),
            _keyword,
            frozenset({"avoid_keyword"}),
        ),
        ConstraintType(
            "avoid_keyword",
            lambda text, a: not _has_word(text, a["word"]),
            _keyword,
            frozenset({"include_keyword"}),
        ),
        ConstraintType(
            "lowercase",
            lambda text, a: text == text.lower() and any(ch.isalpha() for ch in text),
            _none,
            frozenset({"title", "json"}),
        ),
        ConstraintType(
            "no_commas",
            lambda text, a: "," not in text and "，" not in text,
            _none,
            frozenset({"json"}),
        ),
        ConstraintType(
            "end_phrase",
            lambda text, a: text.strip().casefold().endswith(a["phrase"].casefold()),
            lambda rng, ctx: {"phrase": texts()["end_phrase_text"][ctx.language]},
            FORMAT_HEAVY - {"end_phrase", "bullets", "title", "paragraphs"} | {"lowercase"},
        ),
        ConstraintType(
            "quotation",
            lambda text, a: _quoted(text),
            _none,
            FORMAT_HEAVY - {"quotation"},
        ),
        ConstraintType(
            "json",
            lambda text, a: _is_json(text),
            _none,
            FORMAT_HEAVY - {"json"} | {"lowercase", "no_commas"},
        ),
        ConstraintType(
            "paragraphs",
            lambda text, a: len(_paragraphs(text)) == a["n"],
            lambda rng, ctx: {"n": rng.choice([2, 3, 4])},
            FORMAT_HEAVY - {"paragraphs", "title", "end_phrase"} | {"max_words", "bullets"},
        ),
        ConstraintType(
            "title",
            lambda text, a: re.search(r"<<[^\n<>]+>>", text) is not None,
            _none,
            frozenset({"json", "quotation", "lowercase"}),
        ),
        ConstraintType(
            "language",
            lambda text, a: detect_language(text) == a["language"],
            lambda rng, ctx: {"language": ctx.language},
            sampled=False,
        ),
        ConstraintType(
            "code_block",
            lambda text, a: _code_parses(text),
            _none,
            sampled=False,
        ),
        ConstraintType(
            "final_number",
            lambda text, a: final_number(text) == parse_number(str(a["answer"])),
            _none,
            sampled=False,
        ),
    ]
}

# Conflicts are symmetric whichever side declares them.
CONFLICTS: dict[str, set[str]] = {name: set(c.conflicts) for name, c in REGISTRY.items()}
for _name, _ctype in REGISTRY.items():
    for _other in _ctype.conflicts:
        CONFLICTS[_other].add(_name)

# Constraints that make no sense for a task (code must keep its syntax; a number must stay one).
TASK_EXCLUDES = {
    "code": {"lowercase", "no_commas", "json", "quotation", "paragraphs", "bullets", "avoid_keyword"},
    "math": {"json", "quotation", "paragraphs", "bullets", "end_phrase", "avoid_keyword"},
}


def instruction(constraint: dict, language: str) -> str:
    """The sentence appended to the user prompt, in the prompt's language."""
    kind = constraint["type"]
    template = texts()[kind][language]
    args = {k: v for k, v in constraint.items() if k != "type"}
    if kind == "language":
        args["language_name"] = texts()["language_name"][language][constraint["language"]]
    return template.format(**args)


def check(constraint: dict, text: str) -> bool:
    return REGISTRY[constraint["type"]].check(text, constraint)


def sample(rng: random.Random, ctx: Context, count: int) -> list[dict]:
    """Draw `count` mutually compatible sampled constraints for one prompt."""
    excluded = set(TASK_EXCLUDES.get(ctx.task, ()))
    excluded.add("language")  # attached to every non-English prompt by the synthesiser instead
    chosen: list[dict] = []
    pool = [c for c in REGISTRY.values() if c.sampled and c.name not in excluded]
    rng.shuffle(pool)
    for ctype in pool:
        if len(chosen) == count:
            break
        if ctype.name in excluded:
            continue
        chosen.append({"type": ctype.name, **ctype.make_args(rng, ctx)})
        excluded |= CONFLICTS[ctype.name] | {ctype.name}
    return chosen


def validate_texts(languages: set[str]) -> None:
    """Every constraint type needs an instruction in every language we synthesise."""
    from arbitrage.errors import ConfigError

    table = texts()
    for name in REGISTRY:
        missing = languages - set(table.get(name, {}))
        if missing:
            raise ConfigError(
                f"constraint '{name}' has no instruction text for {sorted(missing)} — add it to arbitrage/i18n/constraints.yaml"
            )
