"""Calls in, finished calls out: `Engine` (core), the `Journal`, rate limits and the `Budget`."""

from arbitrage.engine.budget import Budget
from arbitrage.engine.core import Engine
from arbitrage.engine.journal import Journal
from arbitrage.engine.policy import RetryPolicy, failure_reason
from arbitrage.engine.ratelimit import RateLimit, TokenBucket
from arbitrage.engine.signals import stop_on_signals
from arbitrage.engine.streams import Finished, TeacherStats, bar_interval

__all__ = [
    "Budget",
    "Engine",
    "Finished",
    "Journal",
    "RateLimit",
    "RetryPolicy",
    "TeacherStats",
    "TokenBucket",
    "bar_interval",
    "failure_reason",
    "stop_on_signals",
]
