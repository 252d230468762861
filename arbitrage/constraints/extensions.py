"""Our own checks, under `arbitrage:*` ids: what IFEval does not check, or checks for English only.

An IFEval id always means exactly what IFEval means (arbitrage/ifeval/); these extensions carry
their own ids so nobody mistakes one for the other:

- `arbitrage:lowercase`   lowercase in any language (IFEval's english_lowercase also demands English)
- `arbitrage:no_comma`    no comma in any script: `,` and the full-width `，` and `、`
- `arbitrage:quotation`   wrapped in straight, curly or guillemet quotes (IFEval: `"` only)
- `arbitrage:paragraphs`  exactly N paragraphs separated by blank lines (IFEval's uses `***`)
- `arbitrage:code_block`  exactly one ```python block, and it parses
- `arbitrage:final_number` the answer's final result equals the known answer (math), by math-verify
  (arbitrage/verify/math.py): integers, fractions, decimals, LaTeX, percentages, answer sets

`GATES` are the checks that say whether an answer is *correct* rather than well formatted (issue
23): selection never keeps an answer that fails one (arbitrage/select.py). `final_number` and
`code_block` are.
"""

from __future__ import annotations

import ast
import re

from arbitrage.verify import math as verify_math

NUMBER = re.compile(r"-?\d[\d,. ]*\d|-?\d")
CODE_BLOCK = re.compile(r"```(?:python|py)\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)
QUOTES = {'"': '"', "“": "”", "«": "»", "„": "“"}


def lowercase(text: str) -> bool:
    return text == text.lower() and any(ch.isalpha() for ch in text)


def no_comma(text: str) -> bool:
    return not any(comma in text for comma in (",", "，", "、"))


def quotation(text: str) -> bool:
    text = text.strip()
    return len(text) > 1 and QUOTES.get(text[0]) == text[-1]


def paragraphs(text: str, num_paragraphs: int) -> bool:
    return len([p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]) == int(num_paragraphs)


def code_block(text: str) -> bool:
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


def final_number_is(text: str, answer) -> bool:
    """math-verify's verdict. One addition for whole-number answers: math-verify reads `2.381` as
    a decimal, which in de/es/fr/it/pt is two thousand three hundred eighty-one, so a last number
    written with thousands separators that equals the answer counts too."""
    if verify_math.matches(text, str(answer)):
        return True
    reference = parse_number(str(answer))
    return reference is not None and reference.is_integer() and final_number(text) == reference


CHECKS = {
    "arbitrage:lowercase": lambda text, a: lowercase(text),
    "arbitrage:no_comma": lambda text, a: no_comma(text),
    "arbitrage:quotation": lambda text, a: quotation(text),
    "arbitrage:paragraphs": lambda text, a: paragraphs(text, a["num_paragraphs"]),
    "arbitrage:code_block": lambda text, a: code_block(text),
    "arbitrage:final_number": lambda text, a: final_number_is(text, a["answer"]),
}
# Correctness, not format: a known final answer, and code that is there and parses (a code request
# answered with prose, "1." or a block that does not parse has no code to learn from). Code tests
# are reward=tests' gate (scoring/tests.py).
GATES = frozenset({"arbitrage:final_number", "arbitrage:code_block"})
KWARGS = {
    "arbitrage:lowercase": (),
    "arbitrage:no_comma": (),
    "arbitrage:quotation": (),
    "arbitrage:paragraphs": ("num_paragraphs",),
    "arbitrage:code_block": (),
    "arbitrage:final_number": ("answer",),
}
