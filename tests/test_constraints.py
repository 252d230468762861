"""The constraint layer: our extensions, the names of old releases, instruction text in every
language, the sampler, and the IFEval interop. IFEval's own semantics: tests/test_ifeval.py."""

import random

import pytest

from arbitrage import constraints as C
from arbitrage import ifeval

LANGS = ["en", "es", "fr", "de", "pt", "it"]


@pytest.mark.parametrize(
    "constraint, good, bad",
    [
        ({"type": "arbitrage:lowercase"}, "tout est en minuscules ici.", "Tout n'est pas en minuscules."),
        ({"type": "arbitrage:no_comma"}, "Sin comas aquí.", "全角的逗号，不行"),
        ({"type": "arbitrage:quotation"}, "«réponse entre guillemets»", "«réponse"),
        ({"type": "arbitrage:quotation"}, "“curly quotes”", "“mismatched»"),
        ({"type": "arbitrage:paragraphs", "num_paragraphs": 2}, "First paragraph.\n\nSecond one.", "One.\nStill one."),
        (
            {"type": "arbitrage:code_block"},
            "Here:\n```python\ndef f(x):\n    return x + 1\n```",
            "```python\ndef f(x)\n    return\n```",
        ),
        ({"type": "arbitrage:final_number", "answer": "1,234"}, "12 × 100 = 1200, plus 34:\n**1,234**", "1234 or maybe 1235"),
        ({"type": "arbitrage:final_number", "answer": "744"}, "22 × 13 = 286\n286 + 458 = 744", "744 is close to 745"),
    ],
)
def test_extensions_accept_good_and_reject_bad(constraint, good, bad):
    assert C.check(constraint, good) is True
    assert C.check(constraint, bad) is False


@pytest.mark.parametrize(
    "old, new",
    [
        ({"type": "max_words", "n": 5}, {"type": "length_constraints:number_words", "num_words": 5, "relation": "less than"}),
        ({"type": "min_words", "n": 6}, {"type": "length_constraints:number_words", "num_words": 6, "relation": "at least"}),
        ({"type": "bullets", "n": 3}, {"type": "detectable_format:number_bullet_lists", "num_bullets": 3}),
        ({"type": "include_keyword", "word": "soil"}, {"type": "keywords:existence", "keywords": ["soil"]}),
        ({"type": "avoid_keyword", "word": "soil"}, {"type": "keywords:forbidden_words", "forbidden_words": ["soil"]}),
        ({"type": "lowercase"}, {"type": "arbitrage:lowercase"}),
        ({"type": "no_commas"}, {"type": "arbitrage:no_comma"}),
        ({"type": "end_phrase", "phrase": "Fin."}, {"type": "startend:end_checker", "end_phrase": "Fin."}),
        ({"type": "json"}, {"type": "detectable_format:json_format"}),
        ({"type": "language", "language": "de"}, {"type": "language:response_language", "language": "de"}),
    ],
)
def test_names_of_earlier_releases_read_as_the_constraint_they_meant(old, new):
    assert C.normalise(old) == new
    assert C.check(old, "a few words") == C.check(new, "a few words")


def test_unknown_types_and_missing_arguments_are_one_line():
    with pytest.raises(ValueError, match="unknown constraint type 'keywords:vibes'"):
        C.check({"type": "keywords:vibes"}, "x")
    with pytest.raises(ValueError, match="constraint 'length_constraints:number_words' needs the argument 'num_words'"):
        C.check({"type": "length_constraints:number_words", "relation": "at least"}, "x")


def test_every_ifeval_id_and_extension_is_known_with_its_argument_names():
    assert len(ifeval.IDS) == 25 and set(ifeval.IDS) <= set(C.KWARGS)
    assert C.KWARGS["keywords:letter_frequency"] == ("letter", "let_frequency", "let_relation")
    assert {k for k in C.KWARGS if k.startswith("arbitrage:")} == {
        "arbitrage:lowercase",
        "arbitrage:no_comma",
        "arbitrage:quotation",
        "arbitrage:paragraphs",
        "arbitrage:code_block",
        "arbitrage:final_number",
    }


def _example_args(kind):
    values = {
        "keywords": ["cultura", "suelo"],
        "forbidden_words": ["muy"],
        "keyword": "suelo",
        "frequency": 2,
        "relation": "at least",
        "letter": "e",
        "let_frequency": 5,
        "let_relation": "less than",
        "language": "es",
        "num_sentences": 3,
        "num_paragraphs": 3,
        "num_words": 50,
        "nth_paragraph": 2,
        "first_word": "además",
        "num_placeholders": 2,
        "postscript_marker": "P.S.",
        "num_bullets": 3,
        "num_highlights": 2,
        "section_spliter": "SECCIÓN",
        "num_sections": 3,
        "prompt_to_repeat": "Explica la rotación de cultivos.",
        "end_phrase": "¿Algo más?",
        "capital_frequency": 2,
        "capital_relation": "at least",
        "answer": "42",
    }
    return {"type": kind, **{k: values[k] for k in C.KWARGS[kind]}}


@pytest.mark.parametrize("language", LANGS)
def test_every_constraint_has_an_instruction_in_every_language(language):
    for kind in C.KWARGS:
        text = C.instruction(_example_args(kind), language)
        assert text and "{" not in text and "'" + "]" not in text, (kind, language, text)
    assert C.texts()["end_phrase_text"][language]
    relation = C.instruction({"type": "length_constraints:number_words", "num_words": 50, "relation": "less than"}, language)
    assert C.texts()["relation"][language]["less than"] in relation  # relations read in the prompt's language


def test_list_arguments_read_as_quoted_words():
    text = C.instruction({"type": "keywords:existence", "keywords": ["soil", "rotation"]}, "en")
    assert text == 'Include the keywords "soil", "rotation" in your response.'


def test_sampled_constraints_never_conflict_and_fit_the_task_and_language():
    rng = random.Random(0)
    seen = set()
    for i in range(1500):
        ctx = C.Context(
            language=LANGS[i % 6], topic="la rotazione delle colture", task=["explain", "code", "math", "email"][i % 4]
        )
        chosen = C.sample(rng, ctx, 3)
        names = [c["type"] for c in chosen]
        seen |= set(names)
        assert len(names) == len(set(names))
        for c in chosen:
            assert not (C.CONFLICTS[c["type"]] & (set(names) - {c["type"]})), names
            assert c["type"] not in C.TASK_EXCLUDES.get(ctx.task, ())
            assert C.normalise(c) == c  # every argument IFEval needs is there
            C.instruction(c, ctx.language)
        if ctx.language != "en":
            assert not {"change_case:english_capital", "change_case:english_lowercase"} & set(names)
        else:
            assert "arbitrage:lowercase" not in names
    assert seen == set(C.SAMPLED)  # every sampled type turns up


def test_keywords_come_from_the_topic():
    ctx = C.Context(language="de", topic="Fruchtfolge im kleinen Gemüsebeet", task="explain")
    for seed in range(20):
        args = C.sample(random.Random(seed), ctx, 25)
        for c in args:
            if c["type"] == "keywords:existence":
                assert all(w in ctx.topic.lower() for w in c["keywords"])


def test_ifeval_form_round_trips():
    ours = [
        {"type": "punctuation:no_comma"},
        {"type": "keywords:frequency", "keyword": "soil", "frequency": 3, "relation": "at least"},
    ]
    ids, kwargs = C.to_ifeval(ours)
    assert ids == ["punctuation:no_comma", "keywords:frequency"]
    assert kwargs == [{}, {"keyword": "soil", "frequency": 3, "relation": "at least"}]
    assert C.from_ifeval(ids, kwargs) == ours
    with_nones = [{"num_highlights": None}, {"keyword": "soil", "frequency": 3, "relation": "at least", "num_words": None}]
    assert C.from_ifeval(ids, with_nones) == ours  # IFEval's data carries None for unused arguments


def test_loose_verdict_forgives_an_intro_line():
    answer = "Sure, here it is:\nthe soil stays healthy without any comma"
    no_comma = {"type": "punctuation:no_comma"}
    assert not C.check(no_comma, answer) and C.check_loose(no_comma, answer)
    lower = {"type": "arbitrage:lowercase"}
    assert not C.check(lower, answer) and C.check_loose(lower, answer)
