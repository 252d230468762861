"""The 25 IFEval instruction checks, one function each: ``check(response, **kwargs) -> bool``.

Behaviour follows the reference ``check_following`` methods (google-research
``instruction_following_eval``, as vendored in lm-evaluation-harness ``lm_eval/tasks/ifeval``;
Copyright 2023 The Google Research Authors, Apache License 2.0), including its quirks, which the
comments point out. Arguments arrive validated by `arbitrage.ifeval.check`; the empty-response rule
(an empty or blank response follows nothing) is applied there too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from langdetect import DetectorFactory, LangDetectException, detect

from arbitrage.ifeval.text import count_capital_words, count_sentences, count_words

DetectorFactory.seed = 0  # langdetect samples at random; the reference does not seed it

LESS_THAN, AT_LEAST = "less than", "at least"
RELATIONS = (LESS_THAN, AT_LEAST)

CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == LESS_THAN else count >= threshold


def _regex(text: str, template: str = "{}", flags: int = re.IGNORECASE) -> re.Pattern[str]:
    # The reference pastes keywords, markers and splitters into patterns unescaped ("3.5" matches
    # "345"); text that makes no valid pattern would crash it, here it is matched literally.
    try:
        return re.compile(template.format(text), flags)
    except re.error:
        return re.compile(template.format(re.escape(text)), flags)


def _detect_language(text: str) -> str | None:
    try:
        return detect(text)
    except LangDetectException:
        return None  # e.g. no letters at all; the reference then counts the check as followed


# keywords


def keywords_existence(response: str, *, keywords: Sequence[str]) -> bool:
    # A case-insensitive pattern search without word boundaries: "cat" is found in "concatenate".
    return all(_regex(keyword).search(response) for keyword in keywords)


def keywords_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    # Non-overlapping substring matches, case-insensitive: "cat" occurs twice in "Cat catalog".
    occurrences = len(_regex(keyword.strip()).findall(response))
    return _compare(occurrences, relation, frequency)


def keywords_forbidden_words(response: str, *, forbidden_words: Sequence[str]) -> bool:
    # Unlike existence, forbidden words are matched on word boundaries: "cats" does not hit "cat".
    return not any(_regex(word, r"\b{}\b").search(response) for word in forbidden_words)


def keywords_letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(response.lower().count(letter), let_relation, let_frequency)


# language and case


def language_response_language(response: str, *, language: str) -> bool:
    detected = _detect_language(response)
    return detected is None or detected == language


def change_case_english_capital(response: str) -> bool:
    if not response.isupper():
        return False
    detected = _detect_language(response)
    return detected is None or detected == "en"


def change_case_english_lowercase(response: str) -> bool:
    if not response.islower():
        return False
    detected = _detect_language(response)
    return detected is None or detected == "en"


def change_case_capital_word_frequency(response: str, *, capital_frequency: int, capital_relation: str) -> bool:
    return _compare(count_capital_words(response), capital_relation, capital_frequency)


# length


def length_constraints_number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    return _compare(count_sentences(response), relation, num_sentences)


def length_constraints_number_words(response: str, *, num_words: int, relation: str) -> bool:
    return _compare(count_words(response), relation, num_words)


def length_constraints_number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    # Paragraphs are split on "***" (with at most one whitespace either side): "****" also
    # splits, leaving a stray "*". An empty paragraph is forgiven only at either end.
    paragraphs = re.split(r"\s?\*\*\*\s?", response)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def length_constraints_nth_paragraph_first_word(
    response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str
) -> bool:
    # Here paragraphs are split on "\n\n" and blank ones are not counted, yet the nth paragraph
    # is looked up in the list that still holds the blank ones.
    paragraphs = re.split(r"\n\n", response)
    count = sum(1 for paragraph in paragraphs if paragraph.strip())
    if nth_paragraph > count:
        return False
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    # The first word ends at the first . , ? ! ' or " ("Hello," -> "hello"; "**Hello**" stays).
    first = ""
    for char in word:
        if char in {".", ",", "?", "!", "'", '"'}:
            break
        first += char.lower()
    return count == num_paragraphs and first == first_word.lower()


# detectable content


def detectable_content_number_placeholders(response: str, *, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


# The two markers IFEval uses get their own patterns ("P.P.S" tolerates "P. P. S", no final dot).
_POSTSCRIPT_PATTERNS = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}


def detectable_content_postscript(response: str, *, postscript_marker: str) -> bool:
    # The marker may stand anywhere, not only at the start of a line; other markers are pasted in
    # unescaped and lower-cased: "p.s" also matches "pass".
    marker = postscript_marker.strip()
    if marker in _POSTSCRIPT_PATTERNS:
        pattern = re.compile(_POSTSCRIPT_PATTERNS[marker], re.MULTILINE)
    else:
        pattern = _regex(marker.lower(), r"\s*{}.*$", re.MULTILINE)
    return bool(pattern.search(response.lower()))


# detectable format


def detectable_format_number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    # "* item" and "- item" lines count, "**bold**" lines do not, "---" rules do; "[^\*]" can
    # match a newline, so a line holding just "*" counts too.
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


def detectable_format_constrained_response(response: str) -> bool:
    # Containment, not equality, and case-sensitive: "Well, My answer is yes. Because..." passes.
    return any(option in response.strip() for option in CONSTRAINED_RESPONSE_OPTIONS)


def detectable_format_number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    # Two scans, counted together: "*a*" is found by the single-star one, "**a**" only by the
    # double-star one (the single-star scan pairs its stars into empty "**"), "***a***" by both.
    count = sum(1 for found in re.findall(r"\*[^\n\*]*\*", response) if found.strip("*").strip())
    count += sum(1 for found in re.findall(r"\*\*[^\n\*]*\*\*", response) if found.removeprefix("**").removesuffix("**").strip())
    return count >= num_highlights


def detectable_format_multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    # Text before the first splitter is a chunk too, so the count is chunks - 1.
    chunks = _regex(section_spliter.strip(), r"\s?{}\s?\d+\s?", 0).split(response)
    return len(chunks) - 1 >= num_sections


def detectable_format_json_format(response: str) -> bool:
    # The fence tags stripped are exactly "```json", "```Json", "```JSON" and "```": after
    # "```json5" the "5" stays and the JSON fails.
    value = (
        response.strip()
        .removeprefix("```json")
        .removeprefix("```Json")
        .removeprefix("```JSON")
        .removeprefix("```")
        .removesuffix("```")
        .strip()
    )
    try:
        json.loads(value)
    except ValueError:
        return False
    except RecursionError:  # nesting deeper than Python's stack: the reference would crash
        return False
    return True


def detectable_format_title(response: str) -> bool:
    titles = re.findall(r"<<[^\n]+>>", response)
    return any(title.lstrip("<").rstrip(">").strip() for title in titles)


# combination


def combination_two_responses(response: str) -> bool:
    # Empty parts are allowed only at either end; "*******" (7 stars) leaves a stray "*".
    parts = response.split("******")
    valid = []
    for index, part in enumerate(parts):
        if part.strip():
            valid.append(part)
        elif index not in (0, len(parts) - 1):
            return False
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def combination_repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


# start and end


def startend_end_checker(response: str, *, end_phrase: str) -> bool:
    # Quotes around the whole response are stripped first.
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def startend_quotation(response: str) -> bool:
    value = response.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


# punctuation


def punctuation_no_comma(response: str) -> bool:
    return "," not in response  # ASCII only: "，" (fullwidth) and "、" pass
