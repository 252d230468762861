"""The circuit breaker: a teacher that never answered and fails alike again and again (a bad key,
URL or model; nothing listening) stops the run in one line; a rerun after the fix retries.

It counts requests, not samples (a native-n request's samples fail together), and only failures
of a kind that can mean the teacher is unusable (`teachers.diagnose.breaks_after`).
"""

from __future__ import annotations

from arbitrage.rows import Completion
from arbitrage.teachers.diagnose import breaks_after


class Breaker:
    """One teacher's breaker: `observe` each request's completion; True means stop the teacher."""

    def __init__(self) -> None:
        self.streak = 0  # failures in a row of a kind that can stop a teacher
        self.answered = False  # an answer in this run: its failures are about their prompts
        self.answered_before = False  # an answer read back from the journal (an earlier run)

    def observe(self, completion: Completion) -> bool:
        if completion.ok:
            self.streak = 0
            self.answered = True
            return False
        limit = breaks_after(completion)
        if limit is None or self.answered:
            return False
        if completion.status == 400 and self.answered_before:
            return False  # it answered in an earlier run: these 400s are about their prompts (a rerun retries just them)
        self.streak += 1
        return self.streak >= limit
