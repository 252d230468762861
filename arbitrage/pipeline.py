"""One run, top to bottom, as a stream of stages (arbitrage/stages.py):

    source → written → PromptFilter → waves → route → executor.answer → Chooser → write

A conversation (`conversation.turns` > 1) runs that chain once per turn: a wave of conversations is
answered and chosen at turn k, each chosen answer and the next user turn (the prompts file's, or the
user simulator's, arbitrage/prompts/conversation.py) make turn k+1's prompt, and the next turn is
routed as a wave of its own. A conversation is written once it ends.

`executor.answer` is engine.stream → by_prompt → score in this process (`executor=local`), or the
same stages on Ray actors (`executor=ray`, arbitrage/executors/ray.py).

Prompts are drawn lazily; each prompt is scored the moment its last answer lands (scoring overlaps
generation) and its rows are appended to the dataset at once, so memory stays flat in n_prompts.
Backpressure comes from the engine's bounded queues and the pace of this loop. Every finished call
is in the journal: the same command again resumes. Ctrl-C / SIGTERM / `budget_usd` stop sending,
let the calls in flight finish, read every settled call back, and still write the dataset.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from arbitrage import embeddings, settings
from arbitrage.engine import Budget, Engine, Journal, RetryPolicy, TeacherStats, bar_interval, stop_on_signals
from arbitrage.errors import ConfigError
from arbitrage.executors import Executor, Local, Report, Resources
from arbitrage.output import card, runfolder
from arbitrage.output.dataset import DPO_TURNS, REASONING, DatasetWriter
from arbitrage.prompts import PromptWriter, Source
from arbitrage.prompts.conversation import ConversationSpec, UserSimulator, given_next
from arbitrage.quality import Filter
from arbitrage.routers import OnlineRouter, Router
from arbitrage.routers.simple import AllTeachers
from arbitrage.rows import Call, Candidate, Prompt, Reason
from arbitrage.runpaths import RunPaths
from arbitrage.scoring import Scorer
from arbitrage.scoring.verifiable import VerifiableScorer
from arbitrage.select import Conversation, Selection, SelectionSpec
from arbitrage.stages import Chooser, PromptFilter, as_stream, calls_of, roster, route, waves, written
from arbitrage.stats import RunStats, RunSummary
from arbitrage.teachers import Preflight, Teacher, teacher_facts

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """Everything a run needs, as objects: usable from Python without Hydra (`arbitrage.run`)."""

    out_dir: Path
    source: Source
    teachers: dict[str, Teacher]
    router: Router = field(default_factory=AllTeachers)
    scorer: Scorer = field(default_factory=VerifiableScorer)
    filters: list[Filter] = field(default_factory=list)  # the quality stage, in order (arbitrage.quality.filters)
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    budget_usd: float | None = None  # stop sending once the run folder's spend would pass it
    prompt_writer: str | None = None  # a teacher that writes the requests (PersonaHub style)
    retry_failed: bool = False  # send final failures (empty answers) again
    embedding_spread: bool = False  # add embedding spread to the diversity metrics (loads MiniLM)
    progress: bool = False  # live progress bars on stderr
    config: dict = field(default_factory=dict)  # the resolved config, for config.yaml and the card (no secrets)
    executor: Executor = field(default_factory=Local)  # where calls are answered: this process, or Ray
    reasoning: str = "separate"  # output.reasoning: a thinking teacher's reasoning in the rows (dataset.REASONING)
    conversation: ConversationSpec = field(default_factory=ConversationSpec)  # turns, the user simulator
    dpo_turns: str = "all"  # output.dpo_turns: a conversation's pairs, every turn's or the last one's

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        settings.choice("output.reasoning", self.reasoning, REASONING)
        settings.choice("output.dpo_turns", self.dpo_turns, DPO_TURNS)


class Output:
    """The end of the chain: rows to the dataset, counts to the stats, ticks to the progress bar."""

    def __init__(self, writer: DatasetWriter, stats: RunStats, total: int, progress: bool):
        self.writer, self.stats = writer, stats
        self.bar = tqdm(
            total=total, desc="prompts done", unit="prompt", disable=not progress, mininterval=bar_interval(), position=1
        )

    def add(self, items: list[Selection | Conversation]) -> None:
        with self.stats.timer("write"):
            self.writer.add(items)
            self.stats.add(items)
        self.bar.update(len(items))

    async def take_dropped(self, items: AsyncIterable[Prompt | Selection]) -> AsyncIterator[Prompt]:
        """The prompt filter's stream split in two: prompts go on to the router, the rows of the
        prompts it dropped come here at once (they wait for no answer)."""
        async for item in items:
            if isinstance(item, Selection):
                self.add([item])
            else:
                yield item


async def run(spec: RunSpec) -> RunSummary:
    started = time.perf_counter()
    teachers = check(spec)  # every check that can fail before a model loads or a request is sent
    identity = run_identity(spec, teachers)
    paths = RunPaths(spec.out_dir)
    runfolder.check(spec.out_dir, identity)  # read-only: a folder with another run is named before any endpoint is asked
    await preflight(teachers)  # a rejected key or nothing listening: refused before the folder is touched
    with runfolder.claim(spec.out_dir, identity, spec.config, run_facts(spec, teachers)):
        journal = Journal(paths.journal, retry_failed=spec.retry_failed)
        budget = Budget(spec.budget_usd, spent_before=_spent_before(journal, teachers))
        stats = RunStats(list(spec.teachers), dpo_turns=spec.dpo_turns)
        writer = DatasetWriter(spec.out_dir, reasoning=spec.reasoning, dpo_turns=spec.dpo_turns)
        out = Output(writer, stats, spec.source.n_prompts, spec.progress)
        seats = roster(spec.teachers)
        prompt_writer = PromptWriter(spec.prompt_writer, spec.source) if spec.prompt_writer else None
        engine = Engine(teachers, journal, spec.retry, budget, spec.progress)
        screen, choose = PromptFilter(spec.filters), Chooser(spec.filters, spec.selection)
        res = Resources(seats, spec.scorer, paths.journal, spec.retry, budget, control=engine, engine=engine)
        # Held until the card swap: a signal after the last call still lets the dataset be written.
        with stop_on_signals(engine) as signals:
            try:
                async with engine:
                    with stats.timer("generate"):
                        log.info(
                            "%d prompts to %s (router %s, reward %s)",
                            spec.source.n_prompts,
                            ", ".join(spec.teachers),
                            spec.router.name,
                            spec.scorer.name,
                        )
                        key = seats[prompt_writer.teacher].key if prompt_writer else None
                        prompts = out.take_dropped(screen.run(written(spec.source, prompt_writer, engine.run, key)))
                        talk = spec.conversation
                        async for wave in waves(prompts, spec.router, talk.wave_size if talk.multi else None):
                            if engine.finished(spec.teachers):  # an online router's later waves: nothing to send or read back
                                break
                            if talk.multi:
                                async for ended in conversations(wave, spec, res, choose, stats):
                                    out.add(ended)
                            else:
                                async for selections in answered(single_turn(wave), spec, res, choose, stats):
                                    out.add(selections)
            except BaseException:
                out.writer.abort()  # the previous dataset stays whole; the journal has every finished call
                raise
            finally:
                out.bar.close()
                journal.close()
                await spec.scorer.close()
                await spec.executor.close()  # Ray stays up between a run's waves (a conversation's turns)
            with stats.timer("stats"):  # a first signal skips the embedding spread (it loads a model)
                stages = Stages(screen, choose, res.report)
                summary = summarise(spec, identity, stats, engine, budget, stages, spread=signals.received is None)
            with stats.timer("write"):
                try:
                    out.writer.commit(lambda paths: card.render(spec.out_dir, paths, summary, spec.config, _sample(out.writer)))
                except BaseException:
                    out.writer.abort()  # no temporary file left behind (a full disk); the previous dataset stays whole
                    raise
            summary.timings_s = _timings(gathered(stats, stages), engine, time.perf_counter() - started)
            summary.signal = signals.name
            summary.save(paths.summary)
    if engine.error is not None:
        log.warning(
            "the run folder keeps the %d prompts finished before the error (%d sft rows); rerun after the fix for the rest",
            stats.finished,
            stats.rows["sft"],
        )
        raise engine.error
    return summary


async def single_turn(prompts: AsyncIterable[Prompt]) -> AsyncIterator[Prompt]:
    """The prompts of a run with conversation.turns=1; a prompts file's later user turns are named once."""
    warned = False
    async for prompt in prompts:
        if prompt.later_turns and not warned:
            warned = True
            log.warning(
                "prompt %s gives %d more user turns; conversation.turns=1 answers only its first — set conversation.turns=%d for all",
                prompt.prompt_id,
                len(prompt.later_turns),
                len(prompt.later_turns) + 1,
            )
        yield prompt


async def answered(
    prompts: AsyncIterable[Prompt], spec: RunSpec, res: Resources, choose: Chooser, stats: RunStats
) -> AsyncIterator[list[Selection]]:
    """route → executor.answer → Chooser: the selections of each batch of prompts answered; an
    online router observes what each call was worth before the next wave is routed."""
    async for done, scored in spec.executor.answer(route(prompts, spec.router, res.roster), res):
        with stats.timer("quality"):
            chosen = choose(done, scored)
        if isinstance(spec.router, OnlineRouter):
            spec.router.observe(chosen.observations)
        yield chosen.selections


async def conversations(
    wave: AsyncIterable[Prompt], spec: RunSpec, res: Resources, choose: Chooser, stats: RunStats
) -> AsyncIterator[list[Conversation]]:
    """A wave of conversations, turn by turn: each turn is answered and chosen like any prompt (the
    same `answered` chain), then the conversations that go on get their next user turn and the next
    turn is a wave of its own. Yields the conversations that ended at each turn."""
    talk = spec.conversation
    simulator = UserSimulator.of(talk.user, spec.source, talk.follow_ups) if talk.user else None
    asked = {p.prompt_id: p async for p in wave}  # conversation id → its prompt at the current turn
    open_ = {cid: Conversation([], talk.min_turns) for cid in asked}
    control = res.control
    while asked:
        if control.stop_reason is not None and res.engine.finished(spec.teachers):
            break  # stopped, and nothing settled is left to read back: the rest is the rerun's
        async for selections in answered(as_stream(asked.values()), spec, res, choose, stats):
            for s in selections:
                open_[s.prompt.conversation].turns.append(s)
        going, follow, ended = {}, [], []
        for cid, prompt in asked.items():
            c = open_[cid]
            last = c.turns[-1] if c.turns and c.turns[-1].prompt.prompt_id == prompt.prompt_id else None
            if last is None:
                c.stopped = True  # the run stopped before this turn was answered
            elif last.chosen is not None and prompt.turn < talk.turns:
                answer = last.chosen.candidate.text
                if prompt.later_turns:
                    going[cid] = given_next(prompt, answer)
                    continue
                if simulator is not None:
                    follow.append(simulator.follow_up(prompt, answer))
                    continue
                c.ended = Reason("no next user turn", f"the prompt gives {prompt.turn}; set conversation.user to simulate more")
            ended.append(cid)
        if follow:
            seat = res.roster[simulator.teacher]
            written_ = await res.engine.run([simulator.call(f, seat.key) for f in follow])
            for f, candidate in zip(follow, written_, strict=True):
                cid, text = f.prompt.conversation, simulator.written(candidate)
                repeated = text is not None and f.repeats(text)
                if text is not None and not repeated:
                    going[cid] = f.next(text)
                    continue
                if control.stop_reason is not None and not candidate.ok:
                    open_[cid].stopped = True
                else:
                    why = candidate.error or (
                        "a follow-up that repeats the conversation so far"
                        if repeated
                        else "an empty follow-up, or one that echoes the simulator's instructions"
                    )
                    open_[cid].ended = Reason("the user simulator wrote no follow-up", f"{simulator.teacher}: {why}"[:300])
                ended.append(cid)
        if ended:
            yield [open_.pop(cid) for cid in ended]
        asked = going
    if open_:
        for c in open_.values():
            c.stopped = True
        yield list(open_.values())


async def plan(spec: RunSpec, screen: PromptFilter | None = None) -> AsyncIterator[Call]:
    """The calls a run would send, without sending any (`arbitrage estimate`): the same prompt
    stages as `run`. A written request's text is not known in advance, so its prompt keeps the
    template; a judge's call counts an answer of max_tokens; an online router routes without
    feedback, which spreads its calls as it would on average. Keys are not needed: nothing is sent.
    `screen` (the prompt filter stage) counts the prompts drawn and those the filters drop.

    Conversations are planned turn by turn as `conversations` runs them, every turn answered: turn
    k+1's prefix holds each earlier answer at its routed teachers' longest max_tokens and the next
    user turn as the prompts file gives it, or the user simulator's call (one per conversation and
    turn) and a follow-up as long as the run would keep from it. A conversation whose given turns
    end, with no simulator, ends there. Each call's `context` is the turn it belongs to: a judge's,
    the turn it judges; the prompt writer's, turn 1; the simulator's, the turn it writes."""
    spec.source.check()
    spec.router.check(list(spec.teachers))
    seats = roster(spec.teachers)
    screen = screen or PromptFilter(spec.filters)
    writer = PromptWriter(spec.prompt_writer, spec.source) if spec.prompt_writer else None
    talk = spec.conversation
    simulator = UserSimulator.of(talk.user, spec.source, talk.follow_ups) if talk.user else None
    asked: list[Call] = []

    async def count(calls: list[Call]) -> list[Candidate]:
        asked.extend(calls)
        return [Candidate(c.call_id, c.prompt.prompt_id, c.teacher, None, None, 0, 0, 0.0, 0, "planned") for c in calls]

    def longest(call: Call) -> Candidate:
        answer = "word " * spec.teachers[call.teacher].sampling.max_tokens
        return Candidate(call.call_id, call.prompt.prompt_id, call.teacher, answer, "length", 0, 0, 0.0, 1)

    def at(call: Call, turn: int) -> Call:
        return Call(call.call_id, call.prompt, call.teacher, call.sample, context=turn)

    screened = screen.run(written(spec.source, writer, count, seats[writer.teacher].key if writer else None))
    prompts = (p async for p in screened if not isinstance(p, Selection))  # a dropped prompt costs nothing
    async for wave in waves(prompts, spec.router, talk.wave_size if talk.multi else None):
        turn: AsyncIterable[Prompt] | None = wave
        while turn is not None:
            answers: dict[str, tuple[Prompt, str]] = {}  # this turn's prompts, each with its longest answer
            async for call in calls_of(route(turn, spec.router, seats), seats):
                for extra in asked:
                    yield at(extra, 1)
                asked.clear()
                yield at(call, call.prompt.turn)
                placeholder = longest(call)
                for judged in spec.scorer.calls([(call.prompt, placeholder)]):
                    yield at(judged, call.prompt.turn)
                longest_so_far = answers.get(call.prompt.prompt_id, (call.prompt, ""))[1]
                if talk.multi and len(placeholder.text) > len(longest_so_far):
                    answers[call.prompt.prompt_id] = (call.prompt, placeholder.text)
            following = []
            for prompt, answer in answers.values():
                if prompt.turn >= talk.turns:
                    continue
                if prompt.later_turns:
                    following.append(given_next(prompt, answer))
                elif simulator is not None:
                    follow = simulator.follow_up(prompt, answer)
                    user_call = simulator.call(follow, seats[simulator.teacher].key)
                    yield at(user_call, prompt.turn + 1)
                    following.append(follow.next(simulator.written(longest(user_call))))
            turn = as_stream(following) if following else None
    for extra in asked:  # requests written for prompts the filters then dropped
        yield at(extra, 1)


def check(spec: RunSpec) -> dict[str, Teacher]:
    """Every teacher the run calls (the scorer's judge too), each checked; the source and router checked."""
    clash = set(spec.teachers) & set(spec.scorer.teachers)
    if clash:
        raise ConfigError(f"the reward's model is named {', '.join(sorted(clash))}, like a teacher — rename one")
    teachers = {**spec.teachers, **spec.scorer.teachers}
    for teacher in teachers.values():
        teacher.check()
    spec.router.check(list(spec.teachers))
    spec.scorer.check()
    for f in spec.filters:
        f.check()
    spec.executor.check(spec)
    Budget(spec.budget_usd)  # budget_usd's type and sign, before the folder is claimed
    if spec.prompt_writer is not None and spec.prompt_writer not in spec.teachers:
        raise ConfigError(
            f"personas.prompt_writer names teacher '{spec.prompt_writer}', which is not configured — configured: {', '.join(spec.teachers)}"
        )
    user = spec.conversation.user
    if user is not None and user not in spec.teachers:
        raise ConfigError(
            f"conversation.user names teacher '{user}', which is not configured — configured: {', '.join(spec.teachers)}"
        )
    spec.source.check()
    return teachers


async def preflight(teachers: dict[str, Teacher]) -> None:
    """The endpoint checks (`GET /models`: a rejected key, nothing listening, a pasted
    /chat/completions URL) of every teacher that has them, before the run folder is claimed."""
    for teacher in teachers.values():
        if isinstance(teacher, Preflight):
            await teacher.preflight()


def run_identity(spec: RunSpec, teachers: dict[str, Teacher]) -> dict:
    """What decides the calls: the prompt stream, every teacher's identity, the router, the writer.
    Selection, filters and the reward's weights are not in it: change them and rerun to re-select
    from the journal without generating again."""
    identity = {
        "prompts": spec.source.digest(),
        "teachers": {name: t.identity() for name, t in teachers.items()},
        "router": spec.router.identity(),
        "prompt_writer": spec.prompt_writer,
    }
    # The simulator writes the user turns; `turns` is not in the identity: 2 → 3 extends the conversations.
    if spec.conversation.user is not None:
        identity["conversation"] = {"user": spec.conversation.user, "follow_ups": list(spec.conversation.follow_ups)}
    return identity


def run_facts(spec: RunSpec, teachers: dict[str, Teacher]) -> dict:
    """What the report and the viewer read back (run.json): every teacher as resolved, the
    selection settings, the source. Not part of the identity: a price change is no other run."""
    return {
        "teachers": {name: teacher_facts(t) for name, t in teachers.items()},
        "selection": asdict(spec.selection),
        "source": spec.source.facts(),
    }


def _spent_before(journal: Journal, teachers: dict[str, Teacher]) -> float:
    return sum(t.price.cost(*journal.tokens[n]) for n, t in teachers.items() if t.price is not None and n in journal.tokens)


def _sample(writer: DatasetWriter) -> dict | None:
    return writer.samples.get("dpo") or writer.samples.get("sft")


def _timings(timings: dict, engine: Engine, total_s: float) -> dict:
    return {k: round(v, 2) for k, v in {**timings, "load_s": engine.load_s, "total_s": total_s}.items()}


@dataclass
class Stages:
    """What the stages and the executor counted (each owns its figures), for the summary."""

    screen: PromptFilter
    choose: Chooser
    report: Report


def summarise(
    spec: RunSpec, identity: dict, stats: RunStats, engine: Engine, budget: Budget, stages: Stages, spread: bool = True
) -> RunSummary:
    screen, report = stages.screen, stages.report
    timings = gathered(stats, stages)
    calls = {name: _plus(s, report.calls.get(name)) for name, s in engine.stats.items()}  # this process's, and Ray's
    sent = sum(s.sent for s in calls.values())
    left = (screen.drawn if screen.exhausted else spec.source.n_prompts) - stats.finished
    return RunSummary(
        out_dir=str(spec.out_dir),
        run_id=runfolder.run_id(identity),
        router=spec.router.name,
        reward=spec.scorer.name,
        prompts=screen.drawn,
        prompts_finished=stats.finished,
        prompts_unfinished=max(0, left) + stats.cut_short if engine.stop_reason else 0,
        stopped=engine.stop_reason,
        error=None if engine.error is None else str(engine.error),
        budget_usd=budget.cap,
        spent_usd=round(budget.total, 6),
        rows={name: stats.rows[name] for name in ("sft", "dpo", "candidates", "rejected_rows")},
        teachers={
            name: stats.teacher_summary(name, t.price, calls[name], report.teachers.get(name) or t.stats())
            for name, t in engine.teachers.items()
        },
        requests_per_s=round(sent / timings["generate_s"], 2) if timings.get("generate_s") else None,
        timings_s=_timings(timings, engine, 0.0),
        quality=stats.quality_summary(
            embeddings.embed_texts if spec.embedding_spread and spread else None, _dropped(screen, stages.choose)
        ),
        **stats.coverage(),
    )


def _dropped(screen: PromptFilter, choose: Chooser) -> dict[str, int]:
    """What each filter dropped, every filter named (0 included: it ran); Counter's + would drop zeros."""
    return {name: screen.dropped.get(name, 0) + choose.dropped.get(name, 0) for name in {**screen.dropped, **choose.dropped}}


def gathered(stats: RunStats, stages: Stages) -> Counter:
    """The pipeline's timings with those the stages and the executor kept."""
    timings = Counter(stats.timings)
    timings["quality_s"] += stages.screen.seconds
    timings["score_s"] += stages.report.score_s
    timings.update(stages.report.timings)
    return timings


def _plus(mine: TeacherStats, elsewhere: TeacherStats | None) -> TeacherStats:
    if elsewhere is None:
        return mine
    total = TeacherStats()
    total.add(mine)
    total.add(elsewhere)
    return total
