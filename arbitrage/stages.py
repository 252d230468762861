"""The stages of a run, each an (async) iterator over the one before it (see pipeline.py):

    source → written → PromptFilter → waves → route → calls_of → engine.stream → by_prompt → score → Chooser

Stages take data and yield data; nothing calls back up the chain. A stage that counts owns its
counts (datatrove's steps own their stats): `PromptFilter` the prompts drawn and dropped, `Chooser`
the answers its filters drop; the pipeline reads them when the run ends. A prompt's `Group` rides
along with its calls (`Call.context`), so `by_prompt` knows when a prompt has every answer without
asking anyone. A run's teachers come as one `Roster` (teacher, call-id key, samples per prompt).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from arbitrage import quality as F
from arbitrage.engine import Engine, Finished
from arbitrage.prompts.writer import PromptWriter
from arbitrage.routers import Observation, OnlineRouter, Route, Router
from arbitrage.rows import Call, Candidate, Prompt, Scored, make_call
from arbitrage.scoring import Scorer
from arbitrage.select import Selection, SelectionSpec, select
from arbitrage.teachers import Teacher, teacher_key

CHUNK = 512  # prompts drawn, written, filtered and routed at a time


@dataclass(frozen=True)
class Seat:
    """A teacher as a run seats it: the teacher, its call-id key, how many answers it gives a prompt."""

    teacher: Teacher
    key: str
    samples: int


Roster = dict[str, Seat]


def roster(teachers: dict[str, Teacher]) -> Roster:
    return {name: Seat(t, teacher_key(t), t.sampling.n) for name, t in teachers.items()}


@dataclass
class Group:
    """A prompt on its way through a run: its route, how many answers it waits for, those it has."""

    prompt: Prompt
    route: Route
    expected: int
    candidates: list[Candidate] = field(default_factory=list)


async def as_stream(items: Iterable | AsyncIterable) -> AsyncIterator:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def chunks(items: Iterable | AsyncIterable, size: int) -> AsyncIterator[list]:
    chunk = []
    async for item in as_stream(items):
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


class PromptFilter:
    """Dedup and decontamination before any teacher is paid to answer. Yields each prompt it keeps,
    and each it drops as a Selection with the reason: a dropped prompt has nothing to wait for, so
    it goes straight to the output. Owns its counts: prompts drawn, drops per filter, its time."""

    def __init__(self, filters: Sequence[F.Filter]):
        self.filters = list(filters)
        self.drawn = 0
        self.exhausted = False  # the source ran out before the run ended
        self.dropped: Counter[str] = Counter()  # filter → prompts dropped
        self.seconds = 0.0

    async def run(self, prompts: AsyncIterable[Prompt]) -> AsyncIterator[Prompt | Selection]:
        async for chunk in chunks(prompts, CHUNK):
            self.drawn += len(chunk)
            started = time.perf_counter()
            kept, why = F.apply(self.filters, "prompt", chunk, self.dropped)
            self.seconds += time.perf_counter() - started
            for i, reason in why.items():
                yield Selection(chunk[i], Route((), "filtered"), [], reason=reason)
            for prompt in kept:
                yield prompt
        self.exhausted = True


async def waves(prompts: AsyncIterable[Prompt], router: Router, size: int | None = None) -> AsyncIterator[AsyncIterator[Prompt]]:
    """One endless wave for a router that does not learn; waves of `wave_size` for one that does
    (each is generated and scored before the router sees the next). `size`: conversations carried
    forward together turn by turn (conversation.wave_size; an online router's wave if smaller)."""
    if isinstance(router, OnlineRouter):
        size = min(size or int(router.wave_size), int(router.wave_size))
    if size is None:
        yield as_stream(prompts)
        return
    async for wave in chunks(prompts, int(size)):
        yield as_stream(wave)


async def route(prompts: AsyncIterable[Prompt], router: Router, teachers: Roster) -> AsyncIterator[Group]:
    """A batch of prompts routed at a time; each group waits for its teachers' samples."""
    names = list(teachers)
    async for chunk in chunks(prompts, CHUNK):
        for prompt, r in zip(chunk, router.route(chunk, names), strict=True):
            yield Group(prompt, r, sum(teachers[t].samples for t in r.teachers))


def teacher_calls(group: Group, name: str, seat: Seat) -> list[Call]:
    """One teacher's calls for a routed prompt, one per sample, the group riding along."""
    return [make_call(group.prompt, name, seat.key, sample, context=group) for sample in range(seat.samples)]


async def calls_of(groups: AsyncIterable[Group], teachers: Roster) -> AsyncIterator[Call]:
    """Each routed teacher's calls for the prompt, in route order."""
    async for group in groups:
        for name in group.route.teachers:
            for call in teacher_calls(group, name, teachers[name]):
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


@dataclass
class Chosen:
    """What the quality stage and selection make of a batch of scored prompts: the selections for
    the output, and what each call was worth to the dataset (what an online router observes)."""

    selections: list[Selection]
    observations: list[Observation]


class Chooser:
    """Answer filters, then best-of-n and DPO pairs. When a filter on chosen answers drops the best
    answer (a duplicate of one already kept), the next best is chosen instead of losing the prompt.
    Owns its counts: answers each filter dropped."""

    def __init__(self, filters: Sequence[F.Filter], spec: SelectionSpec):
        self.filters, self.spec = list(filters), spec
        self.dropped: Counter[str] = Counter()  # filter → answers dropped

    def __call__(self, groups: list[Group], scored: list[list[Scored]]) -> Chosen:
        usable = [(g.prompt, s) for g, row in zip(groups, scored, strict=True) for s in row if s.usable]
        _, why = F.apply(self.filters, "answer", usable, self.dropped)
        for i, reason in why.items():
            usable[i][1].filtered = reason
        observations = [
            Observation(g.prompt, s.candidate, s.score if s.usable and not s.filtered else None)
            for g, row in zip(groups, scored, strict=True)
            for s in row
        ]
        selections = [select(g.prompt, g.route, row, self.spec) for g, row in zip(groups, scored, strict=True)]
        for selection in selections:
            selection.first_choice = selection.chosen  # before the filters on chosen answers (diversity before/after)
        pending = list(range(len(selections)))
        while pending := [i for i in pending if selections[i].chosen is not None]:
            chosen = [(selections[i].prompt, selections[i].chosen) for i in pending]
            _, why = F.apply(self.filters, "chosen", chosen, self.dropped)
            retry = []
            for j, reason in why.items():
                i = pending[j]
                selections[i].chosen.filtered = reason
                first = selections[i].first_choice
                selections[i] = select(groups[i].prompt, groups[i].route, scored[i], self.spec)
                selections[i].first_choice = first
                if selections[i].chosen is None:
                    selections[i].reason = reason
                retry.append(i)
            pending = retry
        return Chosen(selections, observations)
