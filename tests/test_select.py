import math

from conftest import make_candidate, make_prompt

from arbitrage.routing import Route
from arbitrage.rows import Scored
from arbitrage.select import SelectionSpec, select

ROUTE = Route(("a", "b", "c"), "all")


def scored(teacher, score, **kw):
    return Scored(make_candidate(f"answer from {teacher}", teacher=teacher, **kw), score)


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
