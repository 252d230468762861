"""One run, top to bottom, as a stream: prompts → route → generate → score → select → write.

Prompts are drawn lazily, a chunk at a time. Each prompt is scored the moment its last answer
lands (scoring overlaps generation), and its rows are appended to the dataset at once, so memory
stays flat in n_prompts. Every finished call is in the journal: the same command again resumes.
Ctrl-C / SIGTERM / `budget_usd` stop sending, let the calls in flight finish, and still write the
dataset of every finished prompt.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from arbitrage import dataset, diversity, embeddings, filters, personas, report
from arbitrage.engine import Call, Engine, Journal, RetryPolicy, bar_interval, make_call
from arbitrage.errors import ConfigError
from arbitrage.routing import Route, Router
from arbitrage.rows import Candidate, Prompt, Scored, stable_hash
from arbitrage.scoring import Score, Scorer
from arbitrage.select import Selection, SelectionSpec, select
from arbitrage.teachers import Teacher

log = logging.getLogger(__name__)

EMPTY_HINTS = {
    "sft": "no prompt has a usable answer — see the rejected_rows config and summary.json",
    "dpo": "no two answers to a prompt differ by output.min_margin — add teachers, prompts, or lower it",
}
HYDRA_FILES = {".hydra", "arbitrage.log"}  # what Hydra writes into out/ before the run starts
FACETS = ("language", "task", "domain", "persona_id")


@dataclass
class RunSpec:
    out_dir: Path
    persona_files: list[Path]
    synthesis: personas.SynthesisSpec
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    config: dict = field(default_factory=dict)  # resolved config, for the card (no secrets in it)
    prompt_writer: str | None = None  # a teacher that writes the requests (PersonaHub style)
    filters: list = field(default_factory=list)  # the quality stage, in order (arbitrage.filters)
    embedding_spread: bool = False  # add embedding spread to the diversity metrics (loads MiniLM)
    prompts_file: Path | None = None  # bring-your-own prompts (JSONL) instead of persona synthesis
    prices: dict = field(default_factory=dict)  # teacher → arbitrage.cost.Price (None: unknown)
    budget_usd: float | None = None  # stop sending once the run folder's spend would pass it
    progress: bool = True  # live progress bars on stderr
    chunk_size: int = 512  # prompts drawn, filtered and routed at a time
    diversity_sample: int = 2000  # texts kept (reservoir) for the diversity metrics
    report_max_prompts: int = 50_000  # larger runs skip the automatic report (`arbitrage report` builds it)


def _claim_out_dir(out_dir: Path, identity: dict) -> None:
    """Same run → resume; a different run in the same folder → refuse, naming what differs."""
    run_file = out_dir / "run.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        differs = sorted(k for k in identity if previous.get(k) != identity[k])  # run_id follows from these
        if differs:
            raise ConfigError(
                f"{out_dir} already holds a different run (differs in: {', '.join(differs)}) — "
                f"choose another out=... or delete {out_dir}"
            )
    elif out_dir.exists() and any(p.name not in HYDRA_FILES for p in out_dir.iterdir()):
        raise ConfigError(f"{out_dir} exists and is not an arbitrage run — choose another out=... or empty it")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({**identity, "run_id": run_id(identity)}, indent=2))


def run_id(identity: dict) -> str:
    """A short id for what decides the calls: a run with other prompts, teachers or router gets another."""
    return stable_hash(identity, length=12)


def _file_digest(path: Path) -> str:
    return stable_hash(path.read_bytes().decode("utf-8", "replace"))


def _identity(spec: RunSpec, teachers: dict[str, Teacher], prompts_digest: str) -> dict:
    """What decides the calls: the prompt stream, the teachers' generation settings, the router.

    `n_prompts` is not part of it: the prompt stream does not depend on it, so rerunning with a
    larger n_prompts extends the run and reuses every journaled answer."""
    router_cfg = dict(spec.config.get("router") or {})
    model = router_cfg.get("model")
    if model and Path(model).is_file():
        router_cfg["model"] = _file_digest(Path(model))
    return {
        "prompts": prompts_digest,
        "teachers": {n: stable_hash(t.generation_key()) for n, t in teachers.items()},
        "routes": stable_hash(router_cfg),
        "prompt_writer": spec.prompt_writer,
    }


def _prompt_source(spec: RunSpec, persona_list: list) -> tuple[str, Iterator[Prompt]]:
    if spec.prompts_file is not None:
        digest = personas.check_prompt_file(spec.prompts_file)
        stream = itertools.islice(personas.iter_prompt_file(spec.prompts_file), spec.synthesis.n_prompts)
        return stable_hash("file", digest), stream
    personas.validate(persona_list, spec.synthesis)
    synthesis = {k: v for k, v in vars(spec.synthesis).items() if k != "n_prompts"}
    digest = stable_hash("personas", synthesis, sorted(_file_digest(p) for p in spec.persona_files))
    return digest, personas.iter_prompts(persona_list, spec.synthesis)


def _chunks(items: Iterable[Prompt], size: int) -> Iterator[list[Prompt]]:
    """Chunks of unique prompts: a repeated id (a prompts file listing one twice) is skipped.

    `seen` holds the ids' 64-bit hashes: ~85 bytes per prompt, the one thing that grows with N."""
    seen: set[int] = set()
    chunk: list[Prompt] = []
    repeated = 0
    for prompt in items:
        key = hash(prompt.prompt_id)
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        chunk.append(prompt)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
    if repeated:
        log.warning("skipped %d prompts whose id was already seen", repeated)


class Reservoir:
    """A uniform sample of at most `size` items from a stream (Algorithm R), plus the count seen."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seen, self.items = size, 0, []
        self._rng = random.Random(seed)

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        elif (j := self._rng.randrange(self.seen)) < self.size:
            self.items[j] = item


@dataclass
class _Open:
    """A prompt whose calls are out: it is finished when `left` reaches zero."""

    prompt: Prompt
    route: Route
    left: int
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class _Tally:
    """Per-teacher and per-stage counts gathered as prompts finish (flat in the prompt count)."""

    prompts: int = 0
    finished: int = 0
    calls: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    tokens_in: Counter = field(default_factory=Counter)
    tokens_out: Counter = field(default_factory=Counter)
    score_sum: Counter = field(default_factory=Counter)
    scored: Counter = field(default_factory=Counter)
    pairs_dropped: Counter = field(default_factory=Counter)
    quality: dict = field(default_factory=dict)
    facets_before: dict = field(default_factory=lambda: {k: set() for k in FACETS})
    facets_after: dict = field(default_factory=lambda: {k: set() for k in FACETS})


class Run:
    """The state of one run; `run()` below drives it."""

    def __init__(
        self, spec: RunSpec, teachers: dict[str, Teacher], router: Router, scorer: Scorer, out: dataset.DatasetWriter, bar
    ):
        self.spec, self.teachers, self.router, self.scorer = spec, teachers, router, scorer
        self.out, self.bar = out, bar  # the dataset being written; the "prompts done" progress bar
        self.names = list(teachers)
        self.online = getattr(router, "wave_size", None) is not None
        self.tally = _Tally()
        self.samples = {
            k: Reservoir(spec.diversity_sample, seed=i)
            for i, k in enumerate(("prompts_before", "prompts_after", "answers_before", "answers_after"))
        }
        self.open: dict[str, _Open] = {}
        self.ready: asyncio.Queue[_Open | None] = asyncio.Queue()
        self.room = asyncio.Event()
        self.wave_done = asyncio.Event()
        self.timings: dict[str, float] = defaultdict(float)
        self.failure: BaseException | None = None
        self.scoring = False  # a batch is being scored right now (an online wave is not done yet)

    # -- feeding the engine ---------------------------------------------------------------------------
    async def calls(self, chunks: Iterator[list[Prompt]], writer: Engine | None, persona_list: list) -> AsyncIterator[Call]:
        """Draw, (write,) filter and route a chunk of prompts at a time; yield their calls."""
        limit = max(1024, 4 * sum(max(1, t.max_concurrency) * max(1, t.batch_size) for t in self.teachers.values()))
        for chunk in chunks:
            t = time.perf_counter()
            if writer is not None:
                chunk = await _write_prompts(chunk, persona_list, writer)
            self.tally.prompts += len(chunk)
            for p in chunk:
                self.samples["prompts_before"].add(p.user_text)
                for k in FACETS:
                    self.tally.facets_before[k].add(getattr(p, k))
            # Quality stage, prompts: dedup and decontamination before any teacher is paid to answer.
            kept, dropped = filters.apply(self.spec.filters, "prompt", chunk, self.tally.quality)
            if dropped:
                self.write([Selection(chunk[i], Route((), "filtered"), [], reason=why) for i, why in dropped.items()])
            routes = _route(self.router, kept, self.names)
            self.timings["synthesise_s"] += time.perf_counter() - t
            for prompt in kept:
                calls = [make_call(prompt, self.teachers[name]) for name in routes[prompt.prompt_id].teachers]
                while len(self.open) + self.ready.qsize() >= limit:  # the scorer is behind: hold the stream
                    self.room.clear()
                    await self.room.wait()
                entry = _Open(prompt, routes[prompt.prompt_id], len(calls))
                if not calls:  # routed to no teacher: finished as it stands (no candidate)
                    self.ready.put_nowait(entry)
                    continue
                self.open[prompt.prompt_id] = entry
                for call in calls:
                    yield call
            if self.online:  # a learning router sees this wave's rewards before it routes the next
                while self._wave_open(kept):
                    self.wave_done.clear()
                    await self.wave_done.wait()

    def _wave_open(self, wave: list[Prompt]) -> bool:
        return any(p.prompt_id in self.open for p in wave) or self.ready.qsize() > 0 or self.scoring

    def on_done(self, candidate: Candidate) -> None:
        """Engine callback: a call finished (or was read back from the journal)."""
        entry = self.open.get(candidate.prompt_id)
        if entry is None:
            return
        entry.candidates.append(candidate)
        entry.left -= 1
        if entry.left <= 0:
            del self.open[candidate.prompt_id]
            self.ready.put_nowait(entry)

    # -- finishing prompts ------------------------------------------------------------------------------
    async def score_loop(self, engine: Engine) -> None:
        """Score, filter, select and write prompts as they finish, a batch of what is ready at a time."""
        while True:
            entry = await self.ready.get()
            if entry is None:
                return
            batch = [entry]
            while len(batch) < 256 and not self.ready.empty():
                more = self.ready.get_nowait()
                if more is None:
                    self.ready.put_nowait(None)
                    break
                batch.append(more)
            self.scoring = True
            try:
                await self.finish(batch)
            except Exception as exc:  # keep what is done; stop sending; the run reports the error
                self.failure = self.failure or exc
                engine.stop(f"error while scoring: {exc}")
                return
            finally:
                self.scoring = False
                self.room.set()
                self.wave_done.set()

    async def finish(self, batch: list[_Open]) -> None:
        t = time.perf_counter()
        prompt_of = {e.prompt.prompt_id: e.prompt for e in batch}
        for e in batch:  # route order, so ties and pairs never depend on which answer landed first
            e.candidates.sort(key=lambda c: e.route.teachers.index(c.teacher) if c.teacher in e.route.teachers else 99)
        candidates = [c for e in batch for c in e.candidates]
        scores = await _score(candidates, prompt_of, self.scorer)
        self.timings["score_s"] += time.perf_counter() - t

        # Quality stage, answers: those filtered cannot be chosen but stay eligible as DPO rejected.
        t = time.perf_counter()
        usable = [c for c in candidates if c.call_id in scores]
        _, why = filters.apply(self.spec.filters, "completion", [(prompt_of[c.prompt_id], c) for c in usable], self.tally.quality)
        filtered = {usable[i].call_id: reason for i, reason in why.items()}
        if self.online:  # what each call is worth to the dataset: None when it can never be chosen
            for c in candidates:
                value = scores[c.call_id].value if c.call_id in scores and c.call_id not in filtered else None
                self.router.observe(prompt_of[c.prompt_id], c, value)

        selections = []
        for e in batch:
            scored = []
            for c in e.candidates:
                s: Score | None = scores.get(c.call_id)
                scored.append(Scored(c, s.value if s else float("nan"), s.details if s else {}, filtered.get(c.call_id)))
            selections.append(select(e.prompt, e.route, scored, self.spec.selection))
        chosen = [s for s in selections if s.chosen]
        for s in chosen:
            self.samples["answers_before"].add(s.chosen.candidate.text)
        _, dropped = filters.apply(self.spec.filters, "output", [(s.prompt, s.chosen) for s in chosen], self.tally.quality)
        for i, reason in dropped.items():
            chosen[i].chosen, chosen[i].rejected, chosen[i].reason = None, None, reason
        self.timings["quality_s"] += time.perf_counter() - t
        self.write(selections)

    def write(self, selections: list[Selection]) -> None:
        t = time.perf_counter()
        tally = self.tally
        for s in selections:
            tally.finished += 1
            for scored in s.candidates:
                c = scored.candidate
                tally.calls[c.teacher] += 1
                tally.failed[c.teacher] += not c.ok
                tally.tokens_in[c.teacher] += c.tokens_in
                tally.tokens_out[c.teacher] += c.tokens_out
                if c.ok:
                    tally.score_sum[c.teacher] += scored.score
                    tally.scored[c.teacher] += 1
            if s.chosen is None:
                continue
            if s.rejected is None:
                tally.pairs_dropped[s.pair_reason.split(" below")[0]] += 1
            self.samples["prompts_after"].add(s.prompt.user_text)
            self.samples["answers_after"].add(s.chosen.candidate.text)
            for k in FACETS:
                tally.facets_after[k].add(getattr(s.prompt, k))
        self.out.add(selections)
        self.timings["write_s"] += time.perf_counter() - t
        self.bar.update(len(selections))


async def run(spec: RunSpec, teachers: dict[str, Teacher], router: Router, scorer: Scorer) -> dict:
    t0 = time.perf_counter()

    # 1. Every check that can fail before a model loads or a request is sent.
    persona_list = personas.load_personas(spec.persona_files) if spec.prompts_file is None else []
    router.check(list(teachers))
    for teacher in teachers.values():
        teacher.check()
    scorer.check()
    if spec.prompt_writer is not None and spec.prompt_writer not in teachers:
        raise ConfigError(
            f"personas.prompt_writer names teacher '{spec.prompt_writer}', which is not configured — configured: {', '.join(teachers)}"
        )
    if spec.prompt_writer is not None and spec.prompts_file is not None:
        raise ConfigError("personas.prompt_writer rewrites synthesised prompts — drop it, or prompts_file, from the command")
    prompts_digest, source = _prompt_source(spec, persona_list)
    identity = _identity(spec, teachers, prompts_digest)
    _claim_out_dir(spec.out_dir, identity)
    (spec.out_dir / "config.yaml").write_text(yaml.safe_dump(spec.config, sort_keys=False, allow_unicode=True))

    n = spec.synthesis.n_prompts
    bar = tqdm(total=n, desc="prompts done", unit="prompt", disable=not spec.progress, mininterval=bar_interval(), position=1)
    state = Run(spec, teachers, router, scorer, dataset.DatasetWriter(spec.out_dir), bar)
    journal = Journal(spec.out_dir / "journal")
    if len(journal):
        log.info("resume: %d answered calls in the journal (%d failures to retry)", len(journal), journal.failed_before)
    calls_per_prompt = len(teachers) if router.name == "all" else 1
    engine = Engine(
        teachers,
        journal,
        spec.retry,
        prices=spec.prices,
        budget_usd=spec.budget_usd,
        progress=spec.progress,
        total=n * calls_per_prompt,
    )
    writer = None
    if spec.prompt_writer:
        writer_teachers = {spec.prompt_writer: teachers[spec.prompt_writer]}
        writer = Engine(writer_teachers, journal, spec.retry, prices=spec.prices, progress=False, label="write prompts")
    log.info("%d prompts to %s (router %s%s)", n, ", ".join(teachers), router.name, ", online" if state.online else "")

    # 2. Generate, score and write as a stream. A first Ctrl-C / SIGTERM stops sending; a second exits now.
    loop = asyncio.get_running_loop()

    def interrupt(signame: str) -> None:
        if engine.stop_reason is None:
            log.warning("%s: finishing the calls in flight, then writing the dataset (again to exit at once)", signame)
            engine.stop("interrupted")
            if writer is not None:
                writer.stop("interrupted")
            return
        journal.sync()  # every finished call is on disk; the rerun resumes from it
        os._exit(130)

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, interrupt, sig.name)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or Windows
            pass
    scoring = asyncio.ensure_future(state.score_loop(engine))
    t_gen = time.perf_counter()
    try:
        chunk = int(router.wave_size) if state.online else spec.chunk_size  # an online router learns between waves
        await engine.run(state.calls(_chunks(source, chunk), writer, persona_list), state.on_done)
    except Exception as exc:  # a bad prompt line or a teacher that cannot start: write what is done, then report
        state.failure = state.failure or exc
    finally:
        state.ready.put_nowait(None)
        await scoring
        for sig in handled:
            loop.remove_signal_handler(sig)
        journal.close()
        for teacher in teachers.values():
            await teacher.close()
        await scorer.close()
        state.bar.close()
    state.timings["generate_s"] = time.perf_counter() - t_gen  # wall time of the stream, scoring overlapped
    state.timings["load_s"] = engine.load_s

    # 3. Close the dataset, then the card, summary and report.
    t = time.perf_counter()
    paths = state.out.close()
    counts = {name: state.out.stats.counts[name] for name in dataset.SCHEMAS}
    for name, hint in EMPTY_HINTS.items():
        if not counts[name]:
            log.warning("no %s rows: %s", name, hint)
    state.timings["write_s"] += time.perf_counter() - t
    state.timings["total_s"] = time.perf_counter() - t0
    summary = {"run_id": run_id(identity), **_summary(spec, state, engine, writer, counts)}
    dataset.write_card(spec.out_dir, state.out.stats, paths, summary, spec.config)
    (spec.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    if state.tally.finished <= spec.report_max_prompts:
        report.write(spec.out_dir)
    else:
        log.info("%d prompts: skipped the automatic report — `arbitrage report %s` builds it", state.tally.finished, spec.out_dir)
    if state.failure is not None:
        log.warning("the dataset holds the %d prompts finished before the error", state.tally.finished)
        raise state.failure
    return summary


def plan(spec: RunSpec, teachers: dict[str, Teacher], router: Router) -> Iterator[Call]:
    """The calls a run would send, without sending any (for `arbitrage estimate`): prompts drawn,
    prompt filters applied, routed. An online router is not known in advance: its prompts are
    spread over the teachers one call each, as it would on average."""
    persona_list = personas.load_personas(spec.persona_files) if spec.prompts_file is None else []
    router.check(list(teachers))
    _, source = _prompt_source(spec, persona_list)
    names, online = list(teachers), getattr(router, "wave_size", None) is not None
    quality: dict[str, int] = {}
    count = 0
    for chunk in _chunks(source, spec.chunk_size):
        if spec.prompt_writer:
            writer = teachers[spec.prompt_writer]
            yield from (make_call(w.request, writer) for w in personas.writer_requests(chunk, persona_list))
        kept, _ = filters.apply(spec.filters, "prompt", chunk, quality)
        routes = {} if online else _route(router, kept, names)
        for prompt in kept:
            chosen = [names[count % len(names)]] if online else routes[prompt.prompt_id].teachers
            count += 1
            yield from (make_call(prompt, teachers[name]) for name in chosen)


async def _write_prompts(prompts: list[Prompt], persona_list: list, writer: Engine) -> list[Prompt]:
    """PersonaHub style: a teacher writes each request; template text stays where it fails."""
    requests = personas.writer_requests(prompts, persona_list)
    (teacher,) = writer.teachers.values()
    calls = {w.original.prompt_id: make_call(w.request, teacher) for w in requests}
    wanted = {c.call_id: pid for pid, c in calls.items()}
    texts: dict[str, str] = {}

    def keep(candidate: Candidate) -> None:
        if candidate.ok and candidate.call_id in wanted:
            texts[wanted[candidate.call_id]] = candidate.text

    await writer.run(list(calls.values()), keep)
    written = [personas.with_written_request(p, texts[p.prompt_id]) if p.prompt_id in texts else p for p in prompts]
    log.info(
        "prompt writer %s wrote %d of %d prompts (math and failures keep their template)", teacher.name, len(texts), len(prompts)
    )
    return written


def _route(router: Router, prompts: list[Prompt], names: list[str]) -> dict[str, Route]:
    prepare = getattr(router, "prepare", None)
    if prepare is not None and prompts:  # e.g. the learned router embeds the whole chunk at once
        prepare(prompts)
    return {p.prompt_id: router.route(p, names) for p in prompts}


async def _score(candidates: list[Candidate], prompt_by_id: dict[str, Prompt], scorer: Scorer) -> dict[str, Score]:
    usable = [c for c in candidates if c.ok]
    if not usable:
        return {}
    scores = await scorer.score([(prompt_by_id[c.prompt_id], c) for c in usable])
    return {c.call_id: s for c, s in zip(usable, scores, strict=True)}


def _quality(spec: RunSpec, state: Run) -> dict:
    """What each filter dropped, and diversity before and after the quality stage (on a uniform
    sample of at most `diversity_sample` texts; `n` counts them all)."""
    embed = embeddings.embed_texts if spec.embedding_spread else None

    def metrics(key: str, facets: dict | None = None) -> dict:
        sample = state.samples[key]
        result = diversity.metrics(sample.items, {}, embed)
        result["n"] = sample.seen
        if sample.seen > len(sample.items):
            result["sample"] = len(sample.items)
        result["coverage"] = {k: len(v) for k, v in (facets or {}).items()}
        return result

    return {
        "dropped": dict(state.tally.quality),
        "prompts_before": metrics("prompts_before", state.tally.facets_before),
        "prompts_after": metrics("prompts_after", state.tally.facets_after),
        "answers_before": metrics("answers_before"),
        "answers_after": metrics("answers_after"),
    }


def _summary(spec: RunSpec, state: Run, engine: Engine, writer: Engine | None, counts: dict) -> dict:
    tally, timings = state.tally, state.timings
    per_teacher = {}
    for name, teacher in state.teachers.items():
        live = engine.stats[name]
        extra = dict(getattr(teacher, "stats", {}))
        busy = extra.get("generate_s") or None
        price = spec.prices.get(name)
        usd = price.cost(tally.tokens_in[name], tally.tokens_out[name]) if price is not None else None
        per_teacher[name] = {
            "calls": tally.calls[name],
            "failed": tally.failed[name],
            "tokens_in": tally.tokens_in[name],
            "tokens_out": tally.tokens_out[name],
            "usd": None if usd is None else round(usd, 6),
            "wins": state.out.stats.wins[name],  # counted once, as the sft rows are written
            "mean_score": round(tally.score_sum[name] / tally.scored[name], 4) if tally.scored[name] else None,
            "requests_sent": live.sent,
            "retries": live.retries,
            "resumed": live.resumed,
            "failures": dict(live.failures),
            **(
                {"tok_per_s": round(tally.tokens_out[name] / busy, 1), "prompts_per_s": round(tally.calls[name] / busy, 2)}
                if busy
                else {}
            ),
            **{k: round(v, 2) for k, v in extra.items()},
        }
    sent = sum(s.sent for s in engine.stats.values())
    return {
        "out_dir": str(spec.out_dir),
        "prompts": tally.prompts,
        "prompts_finished": tally.finished,
        "prompts_unfinished": len(state.open),
        "stopped": engine.stop_reason,
        "budget_usd": spec.budget_usd,
        "spent_usd": round(engine.spent_usd + (writer.spent_usd - writer.spent_before if writer else 0.0), 6),
        "rows": counts,
        "router": state.router.name,
        "reward": state.scorer.name,
        "teachers": per_teacher,
        "pairs_dropped": dict(tally.pairs_dropped),
        "requests_per_s": round(sent / timings["generate_s"], 2) if timings.get("generate_s") else None,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "quality": _quality(spec, state),
    }
