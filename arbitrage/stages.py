"""The stages of a run, each an (async) iterator over the one before it (see pipeline.py):

    source → written → filter_prompts → waves → route → calls_of → engine.stream → by_prompt → score → choose

Nothing calls back up the chain. A prompt's `Group` rides along with its calls (`Call.context`), so
`by_prompt` knows when a prompt has every answer without asking anyone.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from arbitrage import quality as F
from arbitrage.engine import Engine, Finished
from arbitrage.prompts.writer import PromptWriter
from arbitrage.routers import Observation, OnlineRouter, Route, Router
from arbitrage.rows import Call, Candidate, Prompt, Scored, make_call
from arbitrage.scoring import Scorer
from arbitrage.select import Selection, SelectionSpec, select
from arbitrage.stats import RunStats

CHUNK = 512  # prompts drawn, written, filtered and routed at a time


@dataclass
class Group:
    """A prompt on its way through a run: its route, how many answers it waits for, those it has."""

    prompt: Prompt
    route: Route
    expected: int
    candidates: list[Candidate] = field(default_factory=list)


async def _aiter(items: Iterable | AsyncIterable) -> AsyncIterator:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def chunks(items: Iterable | AsyncIterable, size: int) -> AsyncIterator[list]:
    chunk = []
    async for item in _aiter(items):
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def written(
    prompts: Iterable[Prompt],
    writer: PromptWriter | None,
    ask: Callable[[list[Call]], Awaitable[list[Candidate]]],
    key: str | None,
) -> AsyncIterator[Prompt]:
    """PersonaHub style: the writer teacher writes each chunk's requests; `ask` is `engine.run` (the
    calls are journaled like any other), or what `plan` counts."""
    async for chunk in chunks(prompts, CHUNK):
        if writer is not None:
            calls = writer.calls(chunk, key)
            answers = await ask(list(calls.values()))
            chunk = writer.rewrite(chunk, {pid: a.text for pid, a in zip(calls, answers, strict=True) if a.ok})
        for prompt in chunk:
            yield prompt


async def filter_prompts(
    prompts: AsyncIterable[Prompt], filters: Sequence[F.Filter], stats: RunStats, dropped: Callable
) -> AsyncIterator[Prompt]:
    """Dedup and decontamination before any teacher is paid to answer. The prompts they drop have
    nothing to wait for: `dropped(selections)` takes them straight to the output."""
    async for chunk in chunks(prompts, CHUNK):
        stats.drew(chunk)
        with stats.timer("quality"):
            kept, why = F.apply(filters, "prompt", chunk, stats.quality)
        if why:
            dropped([Selection(chunk[i], Route((), "filtered"), [], reason=reason) for i, reason in why.items()])
        for prompt in kept:
            yield prompt
    stats.exhausted = True


async def waves(prompts: AsyncIterable[Prompt], router: Router) -> AsyncIterator[AsyncIterator[Prompt]]:
    """One endless wave for a router that does not learn; waves of `wave_size` for one that does
    (each is generated and scored before the router sees the next)."""
    if not isinstance(router, OnlineRouter):
        yield _aiter(prompts)
        return
    async for wave in chunks(prompts, int(router.wave_size)):
        yield _aiter(wave)


async def route(prompts: AsyncIterable[Prompt], router: Router, samples: dict[str, int]) -> AsyncIterator[Group]:
    """A batch of prompts routed at a time; `samples`: teacher → answers it gives each prompt."""
    names = list(samples)
    async for chunk in chunks(prompts, CHUNK):
        for prompt, r in zip(chunk, router.route(chunk, names), strict=True):
            yield Group(prompt, r, sum(samples[t] for t in r.teachers))


def teacher_calls(group: Group, name: str, key: str, samples: int) -> list[Call]:
    """One teacher's calls for a routed prompt, one per sample, the group riding along."""
    return [make_call(group.prompt, name, key, sample, context=group) for sample in range(samples)]


async def calls_of(groups: AsyncIterable[Group], keys: dict[str, str], samples: dict[str, int]) -> AsyncIterator[Call]:
    """Each routed teacher's calls for the prompt, in route order."""
    async for group in groups:
        for name in group.route.teachers:
            for call in teacher_calls(group, name, keys[name], samples[name]):
                yield call


async def by_prompt(finished: AsyncIterable[list[Finished]]) -> AsyncIterator[list[Group]]:
    """The prompts whose every answer has landed, a batch of whatever finished together."""
    async for batch in finished:
        done = []
        for call, candidate in batch:
            group: Group = call.context
            group.candidates.append(candidate)
            if len(group.candidates) == group.expected:
                done.append(group)
        if done:
            yield done


async def score(groups: list[Group], scorer: Scorer, engine: Engine) -> list[list[Scored]]:
    """Every usable answer scored at once; a model-backed scorer's calls go through the engine."""
    for g in groups:  # route order, so ties and pairs never depend on which answer landed first
        order = {t: i for i, t in enumerate(g.route.teachers)}
        g.candidates.sort(key=lambda c: (order.get(c.teacher, len(order)), c.sample))
    items = [(g.prompt, c) for g in groups for c in g.candidates if c.ok]
    calls = scorer.calls(items) if items else []
    answers = await engine.run(calls) if calls else []
    scores = iter(await scorer.score(items, {a.call_id: a for a in answers}) if items else [])
    out = []
    for g in groups:
        row = []
        for c in g.candidates:
            s = next(scores) if c.ok else None
            if s is None:
                row.append(Scored(c, None))
            else:
                row.append(Scored(c, s.value, s.details, error=s.error, checks=s.checks, gates=s.gates))
        out.append(row)
    return out


def choose(
    groups: list[Group],
    scored: list[list[Scored]],
    filters: Sequence[F.Filter],
    spec: SelectionSpec,
    stats: RunStats,
    router: Router,
) -> list[Selection]:
    """Answer filters, then best-of-n and DPO pairs. When a filter on chosen answers drops the best
    answer (a duplicate of one already kept), the next best is chosen instead of losing the prompt."""
    usable = [(g.prompt, s) for g, row in zip(groups, scored, strict=True) for s in row if s.usable]
    _, why = F.apply(filters, "answer", usable, stats.quality)
    for i, reason in why.items():
        usable[i][1].filtered = reason
    if isinstance(router, OnlineRouter):  # what each call was worth to the dataset
        router.observe(
            [
                Observation(g.prompt, s.candidate, s.score if s.usable and not s.filtered else None)
                for g, row in zip(groups, scored, strict=True)
                for s in row
            ]
        )
    selections = [select(g.prompt, g.route, row, spec) for g, row in zip(groups, scored, strict=True)]
    stats.chose(selections)
    pending = list(range(len(selections)))
    while pending := [i for i in pending if selections[i].chosen is not None]:
        _, why = F.apply(filters, "chosen", [(selections[i].prompt, selections[i].chosen) for i in pending], stats.quality)
        retry = []
        for j, reason in why.items():
            i = pending[j]
            selections[i].chosen.filtered = reason
            selections[i] = select(groups[i].prompt, groups[i].route, scored[i], spec)
            if selections[i].chosen is None:
                selections[i].reason = reason
            retry.append(i)
        pending = retry
    return selections
