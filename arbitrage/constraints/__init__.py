"""Verifiable constraints: IFEval's 25 instruction types, exactly as IFEval checks them, plus our
`arbitrage:*` extensions; instruction text for each in every persona language.

Tulu 3's precise instruction following (and IFEval before it) attaches checkable constraints to
prompts, so a response can be scored without a reward model. A constraint is a plain dict with
IFEval's argument names, ``{"type": "length_constraints:number_words", "num_words": 40,
"relation": "less than"}``, so it survives JSON/parquet round trips and converts to and from
IFEval's ``instruction_id_list`` + ``kwargs`` (see `to_ifeval` / `from_ifeval`).

`check` is IFEval's strict verdict, `check_loose` its loose one (the response with its first
and/or last line, or its asterisks, removed). Names from before IFEval ids (`max_words`,
`lowercase`, ...) are read as the constraint they always meant (`ALIASES`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from arbitrage import ifeval
from arbitrage.constraints import extensions
from arbitrage.constraints.catalog import CONFLICTS, SAMPLED, TASK_EXCLUDES, WORD, Context, sample, texts

__all__ = [
    "CONFLICTS",
    "SAMPLED",
    "TASK_EXCLUDES",
    "Context",
    "sample",
    "texts",
    "KWARGS",
    "check",
    "check_loose",
    "instruction",
    "normalise",
    "to_ifeval",
    "from_ifeval",
    "words",
    "WORD",
    "detect_language",
    "GATES",
    "FINAL_ANSWER",
    "is_gate",
    "keyed",
]

KWARGS: dict[str, tuple[str, ...]] = {**ifeval.KWARGS, **extensions.KWARGS}
# Gates say whether an answer is correct (a known final answer); every other id is a preference (a
# format, as IFEval's are). A prompts-file line can make any check a gate: `"gate": true` (issue 23).
GATES = extensions.GATES
FINAL_ANSWER = "arbitrage:final_number"  # the known-answer check (math-verify), a gate

# The names our first releases used, and the constraint each meant.
ALIASES = {
    "max_words": lambda a: {"type": "length_constraints:number_words", "num_words": a["n"], "relation": "less than"},
    "min_words": lambda a: {"type": "length_constraints:number_words", "num_words": a["n"], "relation": "at least"},
    "bullets": lambda a: {"type": "detectable_format:number_bullet_lists", "num_bullets": a["n"]},
    "include_keyword": lambda a: {"type": "keywords:existence", "keywords": [a["word"]]},
    "avoid_keyword": lambda a: {"type": "keywords:forbidden_words", "forbidden_words": [a["word"]]},
    "lowercase": lambda a: {"type": "arbitrage:lowercase"},
    "no_commas": lambda a: {"type": "arbitrage:no_comma"},
    "end_phrase": lambda a: {"type": "startend:end_checker", "end_phrase": a["phrase"]},
    "quotation": lambda a: {"type": "arbitrage:quotation"},
    "json": lambda a: {"type": "detectable_format:json_format"},
    "paragraphs": lambda a: {"type": "arbitrage:paragraphs", "num_paragraphs": a["n"]},
    "title": lambda a: {"type": "detectable_format:title"},
    "language": lambda a: {"type": "language:response_language", "language": a["language"]},
    "code_block": lambda a: {"type": "arbitrage:code_block"},
    "final_number": lambda a: {"type": "arbitrage:final_number", "answer": a["answer"]},
}


def words(text: str) -> list[str]:
    return WORD.findall(text)


def detect_language(text: str) -> str | None:
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # langdetect is random unless seeded
    try:
        return detect(text)
    except LangDetectException:
        return None


def normalise(constraint: dict) -> dict:
    """The constraint under its id today; ValueError (one line) for an unknown type or a missing argument."""
    kind = constraint.get("type")
    if constraint.get("gate") is not None and not isinstance(constraint["gate"], bool):
        raise ValueError(f"constraint {kind!r}: 'gate' must be true or false, got {constraint['gate']!r}")
    if kind in ALIASES:
        try:
            renamed = ALIASES[kind](constraint)
        except KeyError as exc:
            raise ValueError(f"constraint {kind!r} needs the argument {exc.args[0]!r}") from None
        return {**renamed, "gate": constraint["gate"]} if "gate" in constraint else renamed
    if kind not in KWARGS:
        raise ValueError(
            f"unknown constraint type {kind!r} — known: IFEval ids (e.g. punctuation:no_comma) and arbitrage:* (docs/constraints.md)"
        )
    missing = [k for k in KWARGS[kind] if constraint.get(k) is None]
    if missing:
        raise ValueError(f"constraint {kind!r} needs the argument {missing[0]!r}")
    return constraint


def type_ids(constraints: Iterable[dict]) -> list[str]:
    """The constraints' check ids, names of earlier releases read as today's (routers learn per id)."""
    kinds = []
    for c in constraints:
        try:
            kinds.append(normalise(c)["type"])
        except ValueError:
            kinds.append(str(c.get("type")))
    return kinds


def is_gate(constraint: dict) -> bool:
    """Does failing this check make an answer wrong (not just worse)? The constraint's own `gate`
    key when it has one, else what its id declares (`GATES`)."""
    if constraint.get("gate") is not None:
        return bool(constraint["gate"])
    return normalise(constraint)["type"] in GATES


def keyed(constraints: Iterable[dict]) -> list[tuple[str, dict]]:
    """Each constraint under the key its verdict is stored by: its type, `type#2` for a second one
    of the same type (two keyword checks)."""
    out, taken = [], set()
    for c in constraints:
        key, n = c["type"], 1
        while key in taken:
            n += 1
            key = f"{c['type']}#{n}"
        taken.add(key)
        out.append((key, c))
    return out


def check(constraint: dict, text: str) -> bool:
    """IFEval's strict verdict for its ids; ours for `arbitrage:*`."""
    constraint = normalise(constraint)
    kind = constraint["type"]
    if kind in extensions.CHECKS:
        return extensions.CHECKS[kind](text, constraint)
    return ifeval.check(constraint, text)


def check_loose(constraint: dict, text: str) -> bool:
    """IFEval's loose verdict: strict on any of the response's variants (first/last line or `*` removed)."""
    constraint = normalise(constraint)
    kind = constraint["type"]
    if kind in extensions.CHECKS:
        return any(extensions.CHECKS[kind](variant, constraint) for variant in dict.fromkeys(ifeval.loose_variants(text)))
    return ifeval.check_loose(constraint, text)


def _shown(key: str, value, language: str) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(f'"{v}"' for v in value)
    if key in ("relation", "let_relation", "capital_relation"):
        return texts()["relation"][language].get(value, value)
    return str(value)


def instruction(constraint: dict, language: str) -> str:
    """The sentence appended to the user prompt, in the prompt's language."""
    constraint = normalise(constraint)
    kind = constraint["type"]
    args = {k: _shown(k, v, language) for k, v in constraint.items() if k not in ("type", "gate")}
    if kind == "language:response_language":
        args["language_name"] = texts()["language_name"][language].get(constraint["language"], constraint["language"])
    return texts()[kind][language].format(**args)


def to_ifeval(constraints: Iterable[dict]) -> tuple[list[str], list[dict]]:
    """IFEval / Tulu 3 form: (instruction_id_list, kwargs), so our rows also serve as RLVR data."""
    ids, kwargs = [], []
    for c in map(normalise, constraints):
        ids.append(c["type"])
        kwargs.append({k: v for k, v in c.items() if k not in ("type", "gate")})
    return ids, kwargs


def from_ifeval(instruction_id_list: Sequence[str], kwargs: Sequence[dict] | None) -> list[dict]:
    """IFEval's annotations as our constraint dicts (None-valued kwargs dropped, as IFEval does)."""
    kwargs = list(kwargs or [{}] * len(instruction_id_list))
    if len(kwargs) != len(instruction_id_list):
        raise ValueError(f"'kwargs' has {len(kwargs)} entries for {len(instruction_id_list)} instruction ids")
    return [
        normalise({"type": kind, **{k: v for k, v in (kw or {}).items() if v is not None}})
        for kind, kw in zip(instruction_id_list, kwargs, strict=True)
    ]


def validate_texts(languages: set[str]) -> None:
    """Every constraint needs an instruction in every language we synthesise."""
    from arbitrage.errors import ConfigError

    table = texts()
    for name in KWARGS:
        missing = languages - set(table.get(name, {}))
        if missing:
            raise ConfigError(
                f"constraint '{name}' has no instruction text for {sorted(missing)} — add it to arbitrage/i18n/constraints.yaml"
            )
