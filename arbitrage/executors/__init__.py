"""Where a run's calls are answered and scored: `Local` (this process, today's path) or `RayExecutor`
(arbitrage/executors/ray.py: the same stages on a Ray cluster). Everything before (source, prompt
filters, routing) and after (answer filters, selection, writing) is the pipeline's, the same for both.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from arbitrage.engine import Engine
from arbitrage.rows import Scored
from arbitrage.scoring import Scorer
from arbitrage.stages import Group, by_prompt, calls_of, score
from arbitrage.stats import RunStats


@dataclass
class Context:
    """What a run hands its executor: the driver's engine (its journal, budget and stop), each
    teacher's call-id key and samples per prompt, the scorer and the stats."""

    engine: Engine
    keys: dict[str, str]
    samples: dict[str, int]
    scorer: Scorer
    stats: RunStats


class Executor(Protocol):
    name: str
    teacher_stats: dict[str, dict]  # teacher → engine-side figures (load_s, generate_s) where the teachers ran elsewhere

    def check(self, spec) -> None:
        """Raise ConfigError for a run this executor cannot do (before the folder is claimed)."""

    def answer(self, groups: AsyncIterable[Group], ctx: Context) -> AsyncIterator[tuple[list[Group], list[list[Scored]]]]:
        """Routed prompts in; prompts with every answer landed and scored out, a batch at a time."""


class Local:
    """One process: the engine streams the calls, each prompt is scored when its last answer lands."""

    name = "local"
    teacher_stats: dict[str, dict] = {}  # the teachers run here: their own stats() say it

    def check(self, spec) -> None:
        pass

    async def answer(self, groups: AsyncIterable[Group], ctx: Context) -> AsyncIterator[tuple[list[Group], list[list[Scored]]]]:
        async for done in by_prompt(ctx.engine.stream(calls_of(groups, ctx.keys, ctx.samples))):
            with ctx.stats.timer("score"):
                scored = await score(done, ctx.scorer, ctx.engine)
            yield done, scored
