"""When a failed call is sent again, and how long to wait first."""

from __future__ import annotations

import random
from dataclasses import dataclass

from arbitrage.errors import ConfigError
from arbitrage.rows import Completion
from arbitrage.teachers.diagnose import no_completion

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# The longest Retry-After honoured as given (a provider's minute-long rate-limit window is common);
# a longer one is clipped to this: a server asking for an hour is more likely wrong than meant.
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    breaker: bool = True  # stop a teacher that never answered and fails alike (engine/breaker.py)

    def __post_init__(self):
        if not isinstance(self.breaker, bool):
            raise ConfigError(f"engine.breaker must be true or false, got {self.breaker!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"engine.max_attempts must be an integer ≥ 1, got {self.max_attempts!r}")
        for key in ("base_delay_s", "max_delay_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"engine.{key} must be a number of seconds ≥ 0, got {value!r}")

    def retryable(self, completion: Completion) -> bool:
        # No status: timeout or connection error. 200 with an error: a body cut short (retried), or
        # JSON that is no chat completion (not: the same request gets it again, teachers/diagnose.py).
        if completion.status == 200:
            return not no_completion(completion)
        return completion.status is None or completion.status in RETRYABLE_STATUS

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server knows when it has room again: not capped at our own backoff's max
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
        # Full jitter (AWS architecture blog): spreads retries of a burst of failures apart.
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def failure_reason(error: str | None, status: int | None) -> str:
    """A short bucket for a failure, for the summary table: 'HTTP 503', 'timeout', 'empty answer'…"""
    if error is None:
        return "empty answer"
    if status and status != 200:
        return f"HTTP {status}"
    text = error.lower()
    for needle, label in (
        ("empty answer", "empty answer"),
        ("stopped", "stopped"),
        ("timeout", "timeout"),
        ("connect", "connection"),
        ("invalid", "invalid body"),
    ):
        if needle in text:
            return label
    return error.split(":")[0][:40]
