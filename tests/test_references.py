"""Known answers become gates: persona math prompts with exact non-integer answers, and prompts
files carrying a reference in the forms datasets ship it (GSM8K, MATH, a plain answer)."""

import json
import random
import re
from fractions import Fraction

import pytest
import yaml

from arbitrage import constraints as C
from arbitrage.errors import ConfigError
from arbitrage.prompts import jsonl
from arbitrage.prompts.personas import SynthesisSpec, exact_problem, load_personas, synthesise


@pytest.fixture
def tasks(root):
    return {name: spec["templates"] for name, spec in yaml.safe_load((root / "conf/tasks/default.yaml").read_text()).items()}


@pytest.fixture
def all_personas(root):
    return load_personas([root / f"personas/{lang}.jsonl" for lang in ("en", "es", "fr", "de", "pt", "it")])


def _value(expression: str) -> Fraction:
    """The prompt's expression evaluated exactly, independently of exact_problem's own arithmetic."""
    text = expression.replace(",", ".")
    if m := re.fullmatch(r"(\d+)/(\d+) \+ (\d+)/(\d+)", text):
        a, b, c, d = map(int, m.groups())
        return Fraction(a, b) + Fraction(c, d)
    if m := re.fullmatch(r"([\d.]+) × (\d+)", text):
        return Fraction(m.group(1)) * int(m.group(2))
    a, b = map(int, re.fullmatch(r"(\d+) ÷ (\d+)", text).groups())
    return Fraction(a, b)


@pytest.mark.parametrize("language", ["en", "de"])
def test_exact_problems_have_non_integer_answers_known_by_construction(language):
    rng = random.Random(7)
    for _ in range(300):
        expression, reference = exact_problem(rng, language)
        value = _value(expression)
        assert value.denominator != 1
        assert Fraction(reference) == value  # "37.5" or "13/12": exact either way
        if language == "de" and "×" in expression:
            assert "," in expression and "." not in expression
        assert C.check({"type": "arbitrage:final_number", "answer": reference}, f"The result is {reference}.")


def test_persona_math_prompts_include_exact_answers_and_keep_the_integer_ones(all_personas, tasks):
    prompts = [p for p in synthesise(all_personas, SynthesisSpec(tasks=tasks, n_prompts=300, seed=3)) if p.task == "math"]
    whole = [p for p in prompts if re.search(r"\d+ × \d+ \+ \d+", p.user_text)]
    exact = [p for p in prompts if p not in whole]
    assert whole and len(exact) > 5
    for p in exact:
        assert Fraction(p.reference).denominator != 1
    for p in prompts:
        assert {"type": "arbitrage:final_number", "answer": p.reference} in p.constraints
        assert C.is_gate(next(c for c in p.constraints if c["type"] == "arbitrage:final_number"))
    assert any("/" in p.reference for p in prompts) and any("." in p.reference for p in prompts)


def _line(**record) -> str:
    return json.dumps({"prompt": "Solve it.", **record})


@pytest.mark.parametrize(
    "record, reference",
    [
        ({"answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"}, "72"),  # GSM8K
        ({"answer": "#### 1,600"}, "1,600"),
        ({"solution": "So $f(-2)+f(-1)+f(0)=\\boxed{\\frac{14}{3}}$."}, "\\frac{14}{3}"),  # MATH
        (
            {"solution": "first \\boxed{1}, then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}"},
            "\\left( 3, \\frac{\\pi}{2} \\right)",
        ),
        ({"answer": "0.5"}, "0.5"),
        ({"answer": 42}, "42"),
        ({"reference": "13/12", "answer": "#### 1"}, "13/12"),  # ours first
        ({"answer": "\\frac{1}{2}", "solution": "\\boxed{0.5}"}, "\\frac{1}{2}"),  # MATH-500 has both
    ],
)
def test_a_prompts_file_reference_becomes_a_known_answer_gate(tmp_path, record, reference):
    path = tmp_path / "p.jsonl"
    path.write_text(_line(**record) + "\n", encoding="utf-8")
    [prompt] = jsonl.iter_prompt_file(path)
    assert prompt.reference == reference
    check = {"type": "arbitrage:final_number", "answer": reference}
    assert list(prompt.constraints) == [check] and C.is_gate(check)


def test_references_that_are_not_math_and_files_without_one(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        _line(answer="Paris"),  # kept as the reference, not checked: math-verify compares math
        _line(),
        _line(solution="no box here"),
        _line(answer="12", constraints=[{"type": "arbitrage:final_number", "answer": "12", "gate": False}]),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    paris, plain, unboxed, own = jsonl.iter_prompt_file(path)
    assert paris.reference == "Paris" and paris.constraints == ()
    assert plain.reference is None and plain.constraints == () and unboxed.reference is None
    assert own.constraints == ({"type": "arbitrage:final_number", "answer": "12", "gate": False},)  # the line's own wins
    assert not C.is_gate(own.constraints[0])


def test_a_bad_reference_or_gate_flag_is_one_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_line(answer=["4"]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 1: 'answer' must be a string or a number"):
        jsonl.check_prompt_file(path)
    path.write_text(_line(constraints=[{"type": "punctuation:no_comma", "gate": "yes"}]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 1: constraint 'punctuation:no_comma': 'gate' must be true or false"):
        jsonl.check_prompt_file(path)


def test_gate_flag_survives_old_names_and_stays_out_of_ifeval_kwargs():
    c = C.normalise({"type": "no_commas", "gate": True})
    assert c == {"type": "arbitrage:no_comma", "gate": True} and C.is_gate(c)
    ids, kwargs = C.to_ifeval(
        [{"type": "length_constraints:number_words", "num_words": 9, "relation": "less than", "gate": True}]
    )
    assert kwargs == [{"num_words": 9, "relation": "less than"}]
    assert C.check({"type": "punctuation:no_comma", "gate": True}, "no commas here")
