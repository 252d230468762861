"""IFEval's 25 verifiable instructions (Zhou et al. 2023, "Instruction-Following Evaluation for
Large Language Models"), with the reference implementation's strict and loose verdicts.

The reference is google-research ``instruction_following_eval``, as vendored in EleutherAI's
lm-evaluation-harness (``lm_eval/tasks/ifeval``; Copyright 2023 The Google Research Authors,
Apache License 2.0) and run with NLTK 3.10. This is an independent implementation of its behaviour
that needs neither NLTK nor its downloadable data: `arbitrage.ifeval.punkt` carries the Punkt
English model. A constraint is ``{"type": "<instruction id>", **kwargs}`` with the kwargs named as
in the reference's ``build_description``::

    check({"type": "keywords:frequency", "keyword": "sea", "frequency": 2, "relation": "at least"}, text)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from arbitrage.ifeval import checks
from arbitrage.ifeval.text import count_words, split_sentences

__all__ = ["CONFLICTS", "IDS", "KWARGS", "check", "check_loose", "count_words", "loose_variants", "split_sentences"]

_CHECKS: dict[str, Callable[..., bool]] = {
    "keywords:existence": checks.keywords_existence,
    "keywords:frequency": checks.keywords_frequency,
    "keywords:forbidden_words": checks.keywords_forbidden_words,
    "keywords:letter_frequency": checks.keywords_letter_frequency,
    "language:response_language": checks.language_response_language,
    "length_constraints:number_sentences": checks.length_constraints_number_sentences,
    "length_constraints:number_paragraphs": checks.length_constraints_number_paragraphs,
    "length_constraints:number_words": checks.length_constraints_number_words,
    "length_constraints:nth_paragraph_first_word": checks.length_constraints_nth_paragraph_first_word,
    "detectable_content:number_placeholders": checks.detectable_content_number_placeholders,
    "detectable_content:postscript": checks.detectable_content_postscript,
    "detectable_format:number_bullet_lists": checks.detectable_format_number_bullet_lists,
    "detectable_format:constrained_response": checks.detectable_format_constrained_response,
    "detectable_format:number_highlighted_sections": checks.detectable_format_number_highlighted_sections,
    "detectable_format:multiple_sections": checks.detectable_format_multiple_sections,
    "detectable_format:json_format": checks.detectable_format_json_format,
    "detectable_format:title": checks.detectable_format_title,
    "combination:two_responses": checks.combination_two_responses,
    "combination:repeat_prompt": checks.combination_repeat_prompt,
    "startend:end_checker": checks.startend_end_checker,
    "change_case:capital_word_frequency": checks.change_case_capital_word_frequency,
    "change_case:english_capital": checks.change_case_english_capital,
    "change_case:english_lowercase": checks.change_case_english_lowercase,
    "punctuation:no_comma": checks.punctuation_no_comma,
    "startend:quotation": checks.startend_quotation,
}

IDS: tuple[str, ...] = tuple(_CHECKS)
# Each check's keyword-only parameters are the reference's build_description arguments.
KWARGS: dict[str, tuple[str, ...]] = {
    instruction_id: tuple(
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )
    for instruction_id, function in _CHECKS.items()
}


def _conflicts() -> dict[str, frozenset[str]]:
    """The reference's INSTRUCTION_CONFLICTS, closed as its conflict_make does (symmetric, reflexive)."""
    everything = set(IDS)
    table: dict[str, set[str]] = {instruction_id: {instruction_id} for instruction_id in IDS}
    table["language:response_language"] |= {
        "detectable_format:multiple_sections",
        "keywords:existence",
        "keywords:frequency",
        "keywords:forbidden_words",
        "startend:end_checker",
        "change_case:english_capital",
        "change_case:english_lowercase",
    }
    table["length_constraints:number_paragraphs"] |= {
        "length_constraints:nth_paragraph_first_word",
        "length_constraints:number_sentences",
    }
    table["length_constraints:nth_paragraph_first_word"].add("length_constraints:number_paragraphs")
    table["detectable_format:constrained_response"] = set(everything)
    table["detectable_format:multiple_sections"] |= {
        "language:response_language",
        "detectable_format:number_highlighted_sections",
    }
    table["detectable_format:json_format"] = everything - {"keywords:forbidden_words", "keywords:existence"}
    table["combination:two_responses"] = everything - {
        "keywords:forbidden_words",
        "keywords:existence",
        "language:response_language",
        "detectable_format:title",
        "punctuation:no_comma",
    }
    table["combination:repeat_prompt"] = everything - {
        "keywords:existence",
        "detectable_format:title",
        "punctuation:no_comma",
    }
    table["change_case:capital_word_frequency"] |= {"change_case:english_lowercase", "change_case:english_capital"}
    table["change_case:english_lowercase"].add("change_case:english_capital")
    table["startend:quotation"].add("detectable_format:title")
    for instruction_id, others in list(table.items()):
        for other in others:
            table[other].add(instruction_id)
    return {instruction_id: frozenset(others) for instruction_id, others in table.items()}


CONFLICTS: dict[str, frozenset[str]] = _conflicts()

_INT_ARGS = frozenset(
    {
        "frequency",
        "let_frequency",
        "num_sentences",
        "num_paragraphs",
        "num_words",
        "nth_paragraph",
        "num_placeholders",
        "num_bullets",
        "num_highlights",
        "num_sections",
        "capital_frequency",
    }
)
_RELATION_ARGS = frozenset({"relation", "let_relation", "capital_relation"})
_LIST_ARGS = frozenset({"keywords", "forbidden_words"})


def _argument(instruction_id: str, name: str, value: Any) -> Any:
    """`value` converted to what the check expects; ValueError naming `name` when it cannot be."""
    where = f"{instruction_id}: argument {name!r}"
    if name in _INT_ARGS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{where} must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise ValueError(f"{where} must be an integer, got {value!r}")
        if name == "nth_paragraph" and number < 1:
            raise ValueError(f"{where} counts from 1, got {value!r}")
        return int(number)
    if name in _RELATION_ARGS:
        if value not in checks.RELATIONS:
            raise ValueError(f"{where} must be one of {checks.RELATIONS}, got {value!r}")
        return value
    if name in _LIST_ARGS:
        words = (value,) if isinstance(value, str) else tuple(value)
        if not words or not all(isinstance(word, str) and word for word in words):
            raise ValueError(f"{where} must be a non-empty list of non-empty strings, got {value!r}")
        return words
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    if name == "letter":
        if len(value) != 1 or not ("a" <= value.lower() <= "z"):
            raise ValueError(f"{where} must be one ASCII letter, got {value!r}")
        return value.lower()
    return value


def _prepare(constraint: Mapping[str, Any]) -> tuple[Callable[..., bool], dict[str, Any]]:
    if "type" not in constraint:
        raise KeyError(f"IFEval constraint has no 'type': {dict(constraint)!r}")
    instruction_id = constraint["type"]
    if instruction_id not in _CHECKS:
        raise KeyError(f"unknown IFEval instruction id {instruction_id!r}; known ids: {', '.join(IDS)}")
    kwargs = {}
    for name in KWARGS[instruction_id]:
        value = constraint.get(name)
        # The reference drops empty values and draws random ones instead; here they are missing.
        if value is None or value == "" or (isinstance(value, list | tuple) and not value):
            raise ValueError(f"{instruction_id}: missing argument {name!r}")
        kwargs[name] = _argument(instruction_id, name, value)
    return _CHECKS[instruction_id], kwargs


def check(constraint: Mapping[str, Any], response: str) -> bool:
    """The reference's strict verdict: does `response`, as is, follow the instruction?

    Keys of `constraint` other than "type" and the instruction's kwargs are ignored (IFEval rows
    carry every instruction's kwargs, mostly None). A blank response follows nothing."""
    function, kwargs = _prepare(constraint)
    return bool(response.strip()) and function(response, **kwargs)


def loose_variants(response: str) -> list[str]:
    """The eight texts the reference's loose verdict tries, in its order.

    Dropping the first and/or last line (the variants are then stripped), each also with every
    "*" removed; a one-line response gives empty variants, which never pass."""
    lines = response.split("\n")
    without_first = "\n".join(lines[1:]).strip()
    without_last = "\n".join(lines[:-1]).strip()
    without_both = "\n".join(lines[1:-1]).strip()
    variants = [response, without_first, without_last, without_both]
    return [
        response,
        response.replace("*", ""),
        without_first,
        without_last,
        without_both,
        *(variant.replace("*", "") for variant in variants[1:]),
    ]


def check_loose(constraint: Mapping[str, Any], response: str) -> bool:
    """The reference's loose verdict: does any of `loose_variants(response)` follow it? Each
    distinct text is checked once: without an asterisk, half the variants repeat the others, and a
    check such as language detection (~6 ms) should not run twice on one text."""
    function, kwargs = _prepare(constraint)
    distinct = dict.fromkeys(loose_variants(response))
    return any(variant.strip() and function(variant, **kwargs) for variant in distinct)
