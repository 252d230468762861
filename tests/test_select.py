import math

import pytest
from conftest import make_candidate, make_prompt

from arbitrage.errors import ConfigError
from arbitrage.routers import Route
from arbitrage.rows import Reason, Scored
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
    assert s.chosen is not None and s.rejected is None and str(s.pair_reason) == "all candidates tie"
    s = select(make_prompt(), ROUTE, [scored("a", 0.5), scored("b", 0.45)], SelectionSpec(min_margin=0.1))
    assert s.rejected is None and "below output.min_margin" in str(s.pair_reason)


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
    assert s.chosen is None and "HTTP 500" in str(s.reason)


def test_filtered_answers_are_never_chosen_but_can_be_rejected():
    refusal = scored("a", 0.9)
    refusal.filtered = "refusal: matches 'as an AI'"
    low = scored("c", 0.1)
    low.filtered = "wrong_language: answer is 'en', prompt is 'es'"
    s = select(make_prompt(), ROUTE, [refusal, scored("b", 0.5), low], SelectionSpec())
    assert s.chosen.candidate.teacher == "b" and s.rejected.candidate.teacher == "c"
    s = select(make_prompt(), ROUTE, [refusal], SelectionSpec())
    assert s.chosen is None and str(s.reason).startswith("every answer filtered (a: refusal")


def test_a_nan_or_missing_score_is_a_failure_never_a_winner():
    nan = scored("a", math.nan)
    unjudged = Scored(make_candidate("answer from c", teacher="c"), None, error="judge: HTTP 429")
    s = select(make_prompt(), ROUTE, [nan, scored("b", 0.2), unjudged], SelectionSpec())
    assert s.chosen.candidate.teacher == "b" and s.rejected is None  # neither unscored answer is the negative
    s = select(make_prompt(), ROUTE, [nan, unjudged], SelectionSpec())
    assert s.chosen is None and "judge: HTTP 429" in str(s.reason)


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


# Gates (issue 23): correctness first, then the reward.
ANSWER = "arbitrage:final_number"


def graded(teacher, score, correct, text=None, formatted=True):
    """An answer to a math prompt: its known-answer gate and one format preference."""
    s = scored(teacher, score, text)
    s.checks = {ANSWER: correct, "punctuation:no_comma": formatted}
    s.gates = frozenset({ANSWER})
    return s


def test_the_chosen_answer_passes_every_gate_even_when_a_wrong_one_scores_higher():
    wrong, right = graded("a", 1.0, False), graded("b", 0.5, True, formatted=False)
    s = select(make_prompt(), ROUTE, [wrong, right], SelectionSpec())
    assert s.chosen is right
    # the wrong answer is the pair's rejected side although its reward is higher: correct vs wrong
    assert s.rejected is wrong and s.margin == -0.5


def test_a_prompt_whose_answers_all_fail_a_gate_is_rejected_with_the_gate_named():
    cands = [graded("a", 0.5, False), graded("b", 0.5, False), graded("c", 0.0, False)]
    s = select(make_prompt(), ROUTE, cands, SelectionSpec())
    assert s.chosen is None and s.rejected is None and s.gates_failed == (ANSWER,)
    assert s.reason == Reason(f"gate {ANSWER} failed on every answer", "3")
    assert str(s.reason) == f"gate {ANSWER} failed on every answer (3)"


def test_answers_failing_different_gates_name_every_gate():
    a, b = graded("a", 0.5, False), graded("b", 0.5, True)
    b.checks["tests"], b.gates = False, frozenset({ANSWER, "tests"})
    a.checks["tests"], a.gates = True, frozenset({ANSWER, "tests"})
    s = select(make_prompt(), ROUTE, [a, b], SelectionSpec())
    assert s.chosen is None and s.gates_failed == (ANSWER, "tests")
    assert str(s.reason) == f"gates {ANSWER}, tests each failed on some answer, none passed by all (2)"


def test_gates_off_is_the_reward_alone():
    wrong, right = graded("a", 1.0, False), graded("b", 0.5, True)
    s = select(make_prompt(), ROUTE, [wrong, right], SelectionSpec(gates="off"))
    assert s.chosen is wrong and s.rejected is right
    s = select(make_prompt(), ROUTE, [graded("a", 0.5, False)], SelectionSpec(gates=False))
    assert s.chosen is not None and s.reason is None
    # off asks nothing, whatever `require` says
    s = select(make_prompt(), ROUTE, [graded("a", 0.0, False, formatted=False)], SelectionSpec(gates=False, require="all_checks"))
    assert s.chosen is not None


def test_a_gate_without_a_verdict_fails():
    s = scored("a", 1.0)
    s.gates = frozenset({ANSWER})
    assert s.failed_gates == [ANSWER]
    assert select(make_prompt(), ROUTE, [s], SelectionSpec()).chosen is None


def test_require_all_checks_and_min_reward():
    sloppy, tidy = graded("a", 0.5, True, formatted=False), graded("b", 1.0, True)
    s = select(make_prompt(), ROUTE, [sloppy, tidy], SelectionSpec(require="all_checks"))
    assert s.chosen is tidy and s.rejected is sloppy
    s = select(make_prompt(), ROUTE, [sloppy], SelectionSpec(require="all_checks"))
    assert (
        s.chosen is None and str(s.reason) == "no answer passes every check (selection.require=all_checks) (1; best reward 0.500)"
    )
    assert s.gates_failed == ()
    s = select(make_prompt(), ROUTE, [sloppy], SelectionSpec(require="min_reward", min_reward=0.6))
    assert s.chosen is None and s.reason.code == "no answer reaches selection.min_reward 0.6"
    assert select(make_prompt(), ROUTE, [sloppy], SelectionSpec(require="min_reward", min_reward=0.5)).chosen is sloppy


def test_a_wrong_answer_filtered_for_its_language_is_still_a_negative():
    right, wrong = graded("a", 0.5, True), graded("b", 0.9, False)
    wrong.filtered = "wrong_language: answer is 'en', prompt is 'es'"
    s = select(make_prompt(), ROUTE, [right, wrong], SelectionSpec())
    assert s.chosen is right and s.rejected is wrong


def test_worst_pair_prefers_a_gate_failing_answer_to_a_lower_scored_correct_one():
    best, low, wrong = graded("a", 1.0, True), graded("b", 0.2, True, formatted=False), graded("c", 0.5, False)
    s = select(make_prompt(), ROUTE, [best, low, wrong], SelectionSpec())
    assert s.chosen is best and s.rejected is wrong


def test_gate_settings_validate_themselves():
    assert SelectionSpec(gates="on").gates is True and SelectionSpec(gates="off").gates is False
    with pytest.raises(ConfigError, match="selection.gates must be on or off, got 'maybe'"):
        SelectionSpec(gates="maybe")
    with pytest.raises(ConfigError, match="selection.require must be one of gates, all_checks, min_reward, got 'all'"):
        SelectionSpec(require="all")
