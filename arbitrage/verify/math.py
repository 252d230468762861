"""Known final answers checked by Hugging Face's `math-verify` (the verifier behind Open R1 and
lighteval), not by "the last number": it extracts the answer the way graders do (`\\boxed{}` first,
then "the final answer is …", then the last expression), parses LaTeX and plain expressions into
SymPy, and compares them symbolically and numerically. So `0.5` equals `\\frac{1}{2}`, `1,234`
equals `1234`, `25%` equals `0.25`, `\\boxed{3, 2}` equals the answer set `2, 3`.

The reference is parsed as math-verify's own gold answers are (wrapped in `$…$`) and cached: a
run's math prompts share a few thousand references at most. A verdict costs ~1 ms, a few tens of
ms when SymPy has to simplify (BENCHMARKS.md, "Gates: rows you can trust"). math-verify bounds
each parse and comparison with `signal.alarm`, which works only in the main thread; elsewhere
(a thread pool) it runs without the bound rather than fail.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from arbitrage.errors import ConfigError

TIMEOUT_S = 2  # math-verify's per-parse and per-comparison bound (whole seconds: signal.alarm)
INSTALL = "pip install 'math-verify[antlr4_9_3]' (make install does; antlr 4.9 is the one Hydra needs)"

try:
    import math_verify
except ImportError:  # the scorer says so in one line (require), before any model loads
    math_verify = None


def available() -> bool:
    return math_verify is not None


def require() -> None:
    """One line naming the fix when math-verify is not installed."""
    if math_verify is None:
        raise ConfigError(f"math-verify is not installed: the known-answer check (arbitrage:final_number) needs it — {INSTALL}")


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=8192)
def gold(reference: str) -> tuple:
    """The reference parsed as math-verify parses gold answers: as LaTeX, `$…$` around it."""
    require()
    return tuple(math_verify.parse(f"${reference.strip()}$", parsing_timeout=_timeout()))


# A full stop right after a number ends the sentence: math-verify reads `23/30.` as 23/30.0, a float
# that then fails to equal 23/30 exactly.
FULL_STOP = re.compile(r"(?<=\d)\.(?!\d)")


def extracted(text: str) -> list:
    """What math-verify reads as the answer of a response ([] if nothing). Markdown bold and full
    stops after numbers are dropped first: small models write `**7/4**`, which math-verify reads
    as 7, and `23/30.`, which it reads as a float."""
    require()
    return math_verify.parse(FULL_STOP.sub("", text.replace("**", "")), parsing_timeout=_timeout())


def matches(text: str, reference: str) -> bool:
    """Does the response's final answer equal the reference (math-verify's verdict)?"""
    target = gold(str(reference))
    if not target:
        return False
    return bool(math_verify.verify(list(target), extracted(text), timeout_seconds=_timeout()))
