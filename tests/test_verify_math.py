"""The known-answer check is math-verify's verdict (arbitrage/verify/math.py). The expected verdicts
are math-verify's own: cases from its test suite (huggingface/Math-Verify tests/test_all.py) and
the forms our persona and prompts-file references take."""

import threading

import pytest

from arbitrage import constraints as C
from arbitrage.verify import math as M


@pytest.mark.parametrize(
    "reference, answer, verdict",
    [
        # integers, thousands separators, decimal commas (math-verify test_number_extraction)
        ("7425000", "7,425,000", True),
        ("1000", "1 000", True),
        ("1000.99", "1000,99", True),
        ("1000.99", "the number is not 10 which is 1,000.99€", True),
        ("2", "AZYUK2A", False),
        # fractions and LaTeX (test_simple_fraction_notation, test_latex_notation)
        ("10/9", "\\frac{10}{9}", True),
        ("-10/9", "-\\frac{10}{9}", True),
        ("1/3", "$\\frac13 $", True),
        ("1/3", "$k = \\frac{1}{3}$", True),
        ("\\frac{1}{2}", "0.5", True),
        ("0.5", "The answer is $\\frac{1}{2}$.", True),
        ("13/12", "So the sum is 13/12.", True),
        ("13/12", "So the sum is 1.0833", False),  # rounded: not equal at math-verify's 6 places
        ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt{3}}{2}}", True),
        # percentages (test_percent_notation)
        ("28\\%", "28 percent", True),
        ("28\\%", "28", True),
        ("0.28", "28", False),
        ("28/100", "28", False),
        # several answers: a set, in any order
        ("2, 3", "\\boxed{3, 2}", True),
        ("2, 3", "\\boxed{2}", False),
        # the final answer, not any number on the way
        ("655", "First, 68 × 5 = 340. Then 340 + 315 = 655.\n655", True),
        ("655", "530 + 315 = 965", False),
        ("70", "14 × 5 = 54", False),
        ("655", "La respuesta es 655.", True),
    ],
)
def test_verdicts_are_math_verifys(reference, answer, verdict):
    assert M.matches(answer, reference) is verdict


def test_markdown_bold_does_not_hide_the_answer():
    assert M.matches("**7/4**", "7/4")  # math-verify alone reads `7/4**` as 7


@pytest.mark.parametrize(
    "answer, verdict",
    [
        ("12 × 100 = 1200, plus 34:\n**1,234**", True),
        ("Das Ergebnis ist 1.234", True),  # math-verify reads 1.234; in German it is 1234
        ("1234 or maybe 1235", False),
        ("1.234 kg", True),
    ],
)
def test_final_number_accepts_thousands_separators_for_whole_answers(answer, verdict):
    assert C.check({"type": "arbitrage:final_number", "answer": "1234"}, answer) is verdict


def test_a_decimal_reference_is_not_read_as_thousands():
    assert not C.check({"type": "arbitrage:final_number", "answer": "1.5"}, "It is 1.500 or 1500")
    assert C.check({"type": "arbitrage:final_number", "answer": "1.5"}, "It is 1.50")


def test_the_check_runs_outside_the_main_thread_without_the_signal_timeout():
    out = []
    t = threading.Thread(target=lambda: out.append(M.matches("x = \\frac{3}{4}", "0.75")))
    t.start()
    t.join()
    assert out == [True]


def test_missing_math_verify_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setattr(M, "math_verify", None)
    with pytest.raises(Exception, match=r"^math-verify is not installed: .* pip install 'math-verify\[antlr4_9_3\]'"):
        M.require()
    from arbitrage.scoring.verifiable import VerifiableScorer

    with pytest.raises(Exception, match="math-verify is not installed"):
        VerifiableScorer().check()


def test_a_full_stop_after_the_answer_is_not_a_decimal_point():
    assert M.matches("The result is 23/30.", "23/30")  # math-verify alone reads 23/30.0
    assert M.matches("It is 3.5.", "7/2") and not M.matches("It is 35.", "3.5")
