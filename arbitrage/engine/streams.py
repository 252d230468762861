"""What the engine keeps per call in flight (`_Pending`) and per consumer (`_Stream`), and what it
hands back (`Finished`)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from arbitrage.rows import Call, Candidate, Completion
from arbitrage.teachers.samples import next_sample


class Finished(NamedTuple):
    call: Call
    candidate: Candidate


@dataclass
class TeacherStats:
    sent: int = 0  # requests, retries included
    ok: int = 0
    failed: int = 0
    retries: int = 0
    resumed: int = 0  # settled by an earlier run, read back from the journal
    unsent: int = 0  # left for a rerun by a stop
    tokens_in: int = 0
    tokens_out: int = 0
    busy_s: float = 0.0
    failures: Counter = field(default_factory=Counter)

    def add(self, more: TeacherStats) -> None:
        """Another engine's figures for the same teacher (a Ray actor's), added in."""
        for f in fields(TeacherStats):
            if f.name == "failures":
                self.failures.update(more.failures)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(more, f.name))


@dataclass
class Pending:
    call: Call
    stream: Stream
    held_usd: float = 0.0  # the most this call can cost, held against the budget until it finishes
    attempts: int = 0
    started: float = 0.0
    estimate: float = 0.0  # tokens taken from the TPM bucket
    last: Completion | None = None
    handed_on: bool = False  # finished, dropped or waiting for a retry: no longer the worker's


class CallQueue(asyncio.Queue):
    """A teacher's queue of calls. A batch never ends inside a prompt's run of samples: a teacher
    with native `n` sends them as one request, and a cut would split that prompt into two requests,
    and every prompt after it too (batches would stay out of step with prompts after one retry)."""

    def batch(self, first: Pending, size: int) -> list[Pending]:
        batch = [first]
        while not self.empty() and (len(batch) < size or next_sample(batch[-1].call, self._queue[0].call)):
            batch.append(self.get_nowait())
        return batch


class Stream:
    """One consumer's calls: how many are out, and the finished ones not yet taken (bounded)."""

    def __init__(self, limit: int | None, fail_unsent: bool):
        self.items: deque[Finished] = deque()
        self.limit = limit
        self.fail_unsent = fail_unsent  # run(): a call a stop leaves unsent comes back as a failure
        self.outstanding = 0
        self.fed_all = False
        self.teachers: set[str] = set()
        self.ready, self.room = asyncio.Event(), asyncio.Event()
        self.room.set()

    async def put(self, item: Finished) -> None:
        while self.limit is not None and len(self.items) >= self.limit:
            self.room.clear()
            await self.room.wait()
        self.items.append(item)
        self.ready.set()

    def take(self) -> list[Finished]:
        batch = list(self.items)
        self.items.clear()
        self.room.set()
        return batch


def bar_interval() -> float:
    """Live on a terminal; a line every 30 s in a log (CI), not one per redraw."""
    return 0.5 if sys.stderr.isatty() else 30.0


def bar_postfix(stats: Iterable[TeacherStats], usd: float | None) -> str:
    """The calls bar's tail: answers (read back included), failures, retries, and $ where priced."""
    stats = list(stats)
    text = (
        f"ok={sum(x.ok + x.resumed for x in stats)} failed={sum(x.failed for x in stats)} retries={sum(x.retries for x in stats)}"
    )
    return text if usd is None else f"{text} ${usd:.4f}"


def unsent(call: Call, reason: str | None) -> Candidate:
    return Candidate(call.call_id, call.prompt.prompt_id, call.teacher, None, None, 0, 0, 0.0, 0, f"not sent: stopped ({reason})")


async def aiter_calls(calls):
    if hasattr(calls, "__aiter__"):
        async for call in calls:
            yield call
    else:
        for i, call in enumerate(calls):
            if i % 256 == 255:
                await asyncio.sleep(0)  # let workers run while a long list is fed
            yield call
