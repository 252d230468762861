"""Where a run's calls are answered and scored: `Local` (this process, today's path) or `RayExecutor`
(arbitrage/executors/ray.py: the same stages on a Ray cluster). Everything before (source, prompt
filters, routing) and after (answer filters, selection, writing) is the pipeline's, the same for both.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from arbitrage.engine import Budget, Engine, RetryPolicy, TeacherStats
from arbitrage.rows import Scored
from arbitrage.scoring import Scorer
from arbitrage.stages import Group, Roster, by_prompt, calls_of, score


class Control(Protocol):
    """The run's stop signal as an executor sees it (the driver's engine has this shape): read it to
    stop feeding, and stop or fail the run through it."""

    stop_reason: str | None
    error: BaseException | None

    def stop(self, reason: str) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


@dataclass
class Report:
    """What an executor reports back about work done away from the driver's engine; the summary
    adds it to the driver's own figures."""

    calls: dict[str, TeacherStats] = field(default_factory=dict)  # teacher → requests, tokens, failures elsewhere
    teachers: dict[str, dict] = field(default_factory=dict)  # teacher → engine-side figures (load_s, generate_s)
    timings: Counter = field(default_factory=Counter)  # e.g. ray_first_block_s
    score_s: float = 0.0


@dataclass
class Resources:
    """What a run hands its executor, as one plain bundle: the teachers as a roster (each with its
    call-id key and samples per prompt), the scorer, where the journal is, the retry policy, the
    budget (its cap, and the spend an executor records), the stop signal, and the report it fills.
    `engine` is this process's engine, which `Local` sends through (Ray builds one per actor)."""

    roster: Roster
    scorer: Scorer
    journal_dir: Path
    retry: RetryPolicy
    budget: Budget
    control: Control
    engine: Engine
    report: Report = field(default_factory=Report)


class Executor(Protocol):
    name: str

    def check(self, spec) -> None:
        """Raise ConfigError for a run this executor cannot do (before the folder is claimed)."""

    def answer(self, groups: AsyncIterable[Group], res: Resources) -> AsyncIterator[tuple[list[Group], list[list[Scored]]]]:
        """Routed prompts in; prompts with every answer landed and scored out, a batch at a time.
        Called once per wave (a conversation's turn is one), all with the run's one `res`."""

    async def close(self) -> None:
        """The run is over: free what it kept between waves (Ray's cluster and ledger)."""


class Local:
    """One process: the engine streams the calls, each prompt is scored when its last answer lands."""

    name = "local"

    def check(self, spec) -> None:
        pass

    async def answer(self, groups: AsyncIterable[Group], res: Resources) -> AsyncIterator[tuple[list[Group], list[list[Scored]]]]:
        async for done in by_prompt(res.engine.stream(calls_of(groups, res.roster))):
            started = time.perf_counter()
            scored = await score(done, res.scorer, res.engine)
            res.report.score_s += time.perf_counter() - started
            yield done, scored

    async def close(self) -> None:
        pass  # the engine is the pipeline's: it closes it
