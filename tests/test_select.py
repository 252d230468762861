import math

import pytest
from conftest import make_candidate, make_prompt

from arbitrage.errors import ConfigError
from arbitrage.routers import Route
from arbitrage.rows import Scored
from arbitrage.select import SelectionSpec, select

ROUTE = Route(("a", "b", "c"), "all")


def scored(teacher, score, text=None, **kw):
    return Scored(make_candidate(text or f"answer from {teacher}", teacher=teacher, **kw), score)


def test_best_and_worst_pair_with_margin():
    s = select(make_prompt(), ROUTE, [scored("a", 0.5), scored("b", 1.0), scored("c", 0.0)], SelectionSpec())
    assert s.chosen.candidate.teacher == "b" and s.rejected.candidate.teacher == "c" and s.margin == 1.0


def test_random_lower_picks_a_lower_answer_deterministically():
    cands = [scored("a", 0.5), scored("b", 1.0), scored("c", 0.0)]
    picks = {
        select(make_prompt(prompt_id=f"p{i}"), ROUTE, cands, SelectionSpec(pairs="random_lower")).rejected.candidate.teacher
        for i in range(30)
    }
    assert picks == {"a", "c"}
    again = select(make_prompt(prompt_id="p3"), ROUTE, cands, SelectionSpec(pairs="random_lower")).rejected
    assert again is select(make_prompt(prompt_id="p3"), ROUTE, cands, SelectionSpec(pairs="random_lower")).rejected


def test_ties_and_small_margins_give_no_pair():
    s = select(make_prompt(), ROUTE, [scored("a", 0.5), scored("b", 0.5)], SelectionSpec())
    assert s.chosen is not None and s.rejected is None and s.pair_reason == "all candidates tie"
    s = select(make_prompt(), ROUTE, [scored("a", 0.5), scored("b", 0.45)], SelectionSpec(min_margin=0.1))
    assert s.rejected is None and "below output.min_margin" in s.pair_reason


def test_tie_break_prefers_complete_answers_and_does_not_favour_config_order():
    s = select(make_prompt(), ROUTE, [scored("a", 1.0, finish_reason="length"), scored("b", 1.0)], SelectionSpec())
    assert s.chosen.candidate.teacher == "b"
    winners = {
        select(
            make_prompt(prompt_id=f"p{i}"), ROUTE, [scored("a", 1.0), scored("b", 1.0)], SelectionSpec()
        ).chosen.candidate.teacher
        for i in range(20)
    }
    assert winners == {"a", "b"}


def test_failures_are_never_chosen_and_empty_prompts_get_a_reason():
    failed = Scored(make_candidate(None, teacher="a", error="HTTP 500: boom"), math.nan)
    s = select(make_prompt(), ROUTE, [failed, scored("b", 0.0)], SelectionSpec())
    assert s.chosen.candidate.teacher == "b" and s.rejected is None
    s = select(make_prompt(), ROUTE, [failed], SelectionSpec())
    assert s.chosen is None and "HTTP 500" in s.reason


def test_filtered_answers_are_never_chosen_but_can_be_rejected():
    refusal = scored("a", 0.9)
    refusal.filtered = "refusal: matches 'as an AI'"
    low = scored("c", 0.1)
    low.filtered = "wrong_language: answer is 'en', prompt is 'es'"
    s = select(make_prompt(), ROUTE, [refusal, scored("b", 0.5), low], SelectionSpec())
    assert s.chosen.candidate.teacher == "b" and s.rejected.candidate.teacher == "c"
    s = select(make_prompt(), ROUTE, [refusal], SelectionSpec())
    assert s.chosen is None and s.reason.startswith("every answer filtered (a: refusal")


def test_a_nan_or_missing_score_is_a_failure_never_a_winner():
    nan = scored("a", math.nan)
    unjudged = Scored(make_candidate("answer from c", teacher="c"), None, error="judge: HTTP 429")
    s = select(make_prompt(), ROUTE, [nan, scored("b", 0.2), unjudged], SelectionSpec())
    assert s.chosen.candidate.teacher == "b" and s.rejected is None  # neither unscored answer is the negative
    s = select(make_prompt(), ROUTE, [nan, unjudged], SelectionSpec())
    assert s.chosen is None and "judge: HTTP 429" in s.reason


def test_chosen_and_rejected_never_carry_the_same_text():
    same = [scored("a", 1.0, text="Paris."), scored("b", 0.0, text=" Paris. "), scored("c", 0.5, text="Lyon.")]
    s = select(make_prompt(), ROUTE, same, SelectionSpec())
    assert s.chosen.candidate.teacher == "a" and s.rejected.candidate.teacher == "c"
    s = select(make_prompt(), ROUTE, same[:2], SelectionSpec())
    assert s.rejected is None


def test_random_lower_picks_only_among_answers_that_clear_the_margin():
    cands = [scored("a", 1.0), scored("b", 0.98), scored("c", 0.2)]
    picks = {
        select(
            make_prompt(prompt_id=f"p{i}"), ROUTE, cands, SelectionSpec(pairs="random_lower", min_margin=0.1)
        ).rejected.candidate.teacher
        for i in range(30)
    }
    assert picks == {"c"}  # b is lower but within the margin


def test_selection_settings_validate_themselves():
    with pytest.raises(ConfigError, match="output.pairs must be one of worst, random_lower, got 'wrost'"):
        SelectionSpec(pairs="wrost")
    with pytest.raises(ConfigError, match="output.min_margin"):
        SelectionSpec(min_margin=-1)
