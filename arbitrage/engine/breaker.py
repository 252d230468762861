"""The circuit breaker: a teacher that never answered and fails alike again and again (a bad key,
URL or model; nothing listening) stops the run in one line; a rerun after the fix retries.

It counts requests, not samples (a native-n request's samples fail together), and only failures
of a kind that can mean the teacher is unusable (`teachers.diagnose.breaks_after`).

A 400 can also be about its prompt alone: vLLM refuses an over-long prompt at once, so the first
answers to come back from a healthy teacher can be a run of fast 400s while the slower answers to
the other prompts are still being generated. 400s therefore stop a teacher only when they come
from `breaks_after` *distinct* prompts and no request among the last `window` (more than are in
flight at once) was answered. `engine.breaker=false` turns the breaker off.
"""

from __future__ import annotations

from arbitrage.rows import Completion
from arbitrage.teachers.diagnose import breaks_after


def refusal_window(max_concurrency: int, limit: int = 5) -> int:
    """Requests without an answer before 400s can stop a teacher: the requests in flight when the
    refusals began have had time to come back twice over."""
    return max(2 * limit, limit + 2 * max_concurrency)


class Breaker:
    """One teacher's breaker: `observe` each request's completion; True means stop the teacher."""

    def __init__(self, window: int = 10, enabled: bool = True) -> None:
        self.window, self.enabled = window, enabled
        self.streak = 0  # failures in a row of a kind that can stop a teacher
        self.unanswered = 0  # requests since the last answer, of any kind
        self.refused: set[str] = set()  # distinct prompts refused with a 400 since the last answer
        self.answered = False  # an answer in this run: its failures are about their prompts
        self.answered_before = False  # an answer read back from the journal (an earlier run)

    def observe(self, completion: Completion, prompt_id: str | None = None) -> bool:
        if completion.ok:
            self.streak = self.unanswered = 0
            self.refused.clear()
            self.answered = True
            return False
        self.unanswered += 1
        limit = breaks_after(completion)
        if not self.enabled or limit is None or self.answered:
            return False
        if completion.status == 400:
            if self.answered_before:
                return False  # it answered in an earlier run: these 400s are about their prompts (a rerun retries just them)
            self.refused.add(prompt_id or f"#{self.unanswered}")
            return len(self.refused) >= limit and self.unanswered >= self.window
        self.streak += 1
        return self.streak >= limit
