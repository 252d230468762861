"""`executor=ray`: the run's generation and scoring stages on a Ray cluster, streaming on Ray Data.

    driver: source → prompt filters → route ─► Feed ─► Ray Data: [teacher A] → [teacher B] → … → [score]
                                                                  actor pools (one engine per replica)
    driver: ◄─ scored prompts → answer filters → selection → parquet, card, report (as a local run)

The driver keeps what must see every prompt: dedup and near-dedup of prompts and of chosen answers
stay global, as in a local run. Teachers and reward models, where the time goes, run as actor pools
sized per teacher (`executor.actors.<teacher>`); a budget and each teacher's rate limit are shared
by the whole cluster (arbitrage/executors/shared.py). Actors journal into shards of the run folder,
which must be on storage every node sees: a killed driver resumes from them, and Ray retries a dead
actor's batch on its replacement, which reads the answers back instead of asking again.

A run may answer in several waves (`answer` once per wave: a conversation's turn is one). Each wave
is a Ray Data pass of its own, with actor pools started for it: a pass ends only when its input
does, and the next turn's prompts exist only once this turn is chosen. Ray itself, the ledger
(budget and rate limits) and the teachers as shipped stay for the whole run, until `close`.

Not on Ray: online routers (bandit: they learn between waves) and the prompt writer — both refused
with one line. `ray.data.llm`'s vLLM processor is not used: it formats prompts and samples its own
way and has no per-call journal, so its answers would not be the calls (ids, seeds, resume) of a
local run; our `VLLMTeacher` runs in the actor instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass

from arbitrage import settings
from arbitrage.engine.streams import TeacherStats
from arbitrage.errors import ArbitrageError, ConfigError
from arbitrage.executors import Resources
from arbitrage.rows import Scored
from arbitrage.stages import Group, chunks

log = logging.getLogger(__name__)
ACTOR_KEYS = ("replicas", "num_cpus", "num_gpus")
DONE = object()
BLOCK_BYTES = 64 * 1024  # a few dozen prompts on their way


@dataclass
class _Run:
    """What a run keeps from its first wave to `close`: each wave (a conversation's turn is one) is
    a Ray Data pass of its own, but Ray, the cluster's ledger (budget and rate limits) and the
    teachers as shipped stay."""

    res: Resources
    shipped: bytes  # the roster and the scorer, pickled
    ledger: object
    started_ray: bool  # we called ray.init (undone at close), or the caller had (its Ray is left as it was)
    waves: int = 1


def _actor(where: str, value: Mapping | None, default: Mapping) -> dict:
    value = {**default, **dict(value or {})}
    unknown = sorted(set(value) - set(ACTOR_KEYS))
    if unknown:
        raise ConfigError(f"{where} has no setting {', '.join(unknown)} — known: {', '.join(ACTOR_KEYS)}")
    settings.number(f"{where}.replicas", value["replicas"], int, 1)
    settings.number(f"{where}.num_cpus", value["num_cpus"], float, 0)
    settings.number(f"{where}.num_gpus", value["num_gpus"], float, 0)
    return value


class RayExecutor:
    """Settings: `address` (None starts a local Ray; "auto" attaches to the running cluster; or
    "ray://host:10001"), `num_cpus` for a local Ray, `batch_size` prompts per block, `actor` (the
    default replicas / num_cpus / num_gpus of a teacher's pool), `actors` (per teacher), `scorer`
    (the reward's pool), `batches_per_actor` (blocks an actor works on at once: API teachers overlap
    them), `queue_batches` (blocks the driver may feed ahead)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        batch_size: int = 64,
        actor: Mapping | None = None,
        actors: Mapping | None = None,
        scorer: Mapping | None = None,
        batches_per_actor: int = 4,
        queue_batches: int = 8,
    ):
        self.address = settings.text("executor.address", address)
        self.num_cpus = None if num_cpus is None else settings.number("executor.num_cpus", num_cpus, int, 1)
        self.batch_size = settings.number("executor.batch_size", batch_size, int, 1)
        self.batches_per_actor = settings.number("executor.batches_per_actor", batches_per_actor, int, 1)
        self.queue_batches = settings.number("executor.queue_batches", queue_batches, int, 1)
        self.actor = _actor("executor.actor", actor, {"replicas": 1, "num_cpus": 1, "num_gpus": 0})
        self.actors = {name: _actor(f"executor.actors.{name}", v, self.actor) for name, v in dict(actors or {}).items()}
        self.scorer = _actor("executor.scorer", scorer, {"replicas": 1, "num_cpus": 1, "num_gpus": 0})
        self.passes = 0  # Ray Data passes the last run took (more than one: prompts were lost and fed again)
        self._since: float | None = None
        self._run: _Run | None = None

    def check(self, spec) -> None:
        from arbitrage.routers import OnlineRouter

        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            raise ConfigError("executor=ray needs Ray — pip install 'ray[data]' (or use executor=local)") from None
        unknown = sorted(set(self.actors) - set(spec.teachers))
        if unknown:
            raise ConfigError(
                f"executor.actors names {', '.join(unknown)}, not a teacher of this run — teachers: {', '.join(spec.teachers)}"
            )
        if isinstance(spec.router, OnlineRouter):
            raise ConfigError(
                f"router={spec.router.name} learns between waves and runs only with executor=local — use it there, or a router that does not learn online"
            )
        if spec.prompt_writer is not None:
            raise ConfigError("personas.prompt_writer runs only with executor=local — drop it, or use executor=local")

    def pool(self, name: str) -> dict:
        return self.actors.get(name, self.actor)

    # the run ------------------------------------------------------------------------------------------
    async def answer(self, groups: AsyncIterable[Group], res: Resources) -> AsyncIterator[tuple[list[Group], list[list[Scored]]]]:
        began = self._since = time.perf_counter()  # Ray's start and the actors' loads, until the first block is back
        first_block = res.report.timings["ray_first_block_s"]
        answered = 0
        run = self._open(res)
        latest: dict[str, object] = {}
        try:
            self.passes = 0
            lost: list[Group] | None = None
            source: AsyncIterable[Group] = groups
            while True:
                self.passes += 1
                pending: dict[str, Group] = {}
                async for done, scored in self._pass(source, res, run, pending, latest):
                    answered += len(done)
                    yield done, scored
                lost = list(pending.values())
                if not lost or res.control.stop_reason is not None:
                    break
                if self.passes >= 3:
                    raise ArbitrageError(f"{len(lost)} prompts came back from no Ray pass — rerun to resume them")
                log.warning("%d prompts fed to Ray never came back (a lost read task): feeding them again", len(lost))
                source = _aiter(lost)
        finally:
            self._settle(res, latest)  # the figures of what was done, also when the run ends early
            # Each call is a wave of its own (a conversation's turn is one): its fixed cost shows here.
            log.info(
                "Ray wave: %d prompts in %.1f s (%.1f s of it until the first block: the actor pools' start and loads%s)",
                answered,
                time.perf_counter() - began,
                res.report.timings["ray_first_block_s"] - first_block,
                ", Ray's start" if run.waves == 1 and run.started_ray else "",
            )

    def _open(self, res: Resources) -> _Run:
        """The run's Ray, ledger and shipped teachers: made at its first wave, kept until `close`."""
        import ray
        from ray import cloudpickle  # what Ray ships actors' arguments with: a lambda (a render function) too

        from arbitrage.executors.shared import Ledger

        if self._run is not None and self._run.res is res:
            self._run.waves += 1
            return self._run
        self._end()  # an earlier run's, never closed (an executor driven by hand)
        started = not ray.is_initialized()
        if started:
            ray.init(
                address=self.address,
                num_cpus=self.num_cpus if self.address is None else None,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
                runtime_env={"env_vars": _env()},
            )
        _context()
        limits = {n: (seat.teacher.limits.rpm, seat.teacher.limits.tpm) for n, seat in res.roster.items()}
        # The roster and scorer as they are at the run's first wave: the driver's own objects may start
        # later (the user simulator's calls run on the driver), and a started teacher (an open HTTP
        # session, a loaded model) does not pickle.
        shipped = cloudpickle.dumps((res.roster, res.scorer))
        self._run = _Run(res, shipped, Ledger.remote(res.budget.cap, res.budget.total, limits), started)
        return self._run

    async def close(self) -> None:
        self._end()

    def _end(self) -> None:
        import ray

        run, self._run = self._run, None
        if run is None or not ray.is_initialized():
            return
        if run.started_ray:
            ray.shutdown()
        else:
            ray.kill(run.ledger)  # the caller's Ray stays up: only our ledger goes

    async def _pass(self, groups: AsyncIterable[Group], res: Resources, run: _Run, pending: dict, latest: dict):
        """One Ray Data execution over `groups`; `pending` keeps those fed and not yet back."""

        from arbitrage.executors.ray_stages import Feed

        control, budget, ledger = res.control, res.budget, run.ledger
        # What the driver spent since the last pass (the user simulator's calls); no hold of a
        # finished pass is left. The rate limits' buckets carry over: a turn starts no fresh burst.
        await ledger.begin.remote(budget.total)
        feed = Feed.remote(self.queue_batches)
        dataset = self._dataset(res, run, feed)
        loop = asyncio.get_running_loop()
        results: asyncio.Queue = asyncio.Queue()

        def consume() -> None:  # Ray Data's iterator blocks: it runs in a thread, results go to the loop
            try:
                for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
                    loop.call_soon_threadsafe(results.put_nowait, batch)
            except BaseException as exc:  # noqa: BLE001 — handed to the loop, raised there
                loop.call_soon_threadsafe(results.put_nowait, exc)
            loop.call_soon_threadsafe(results.put_nowait, DONE)

        async def produce() -> None:
            try:
                async for chunk in chunks(groups, self.batch_size):
                    if control.stop_reason is not None:
                        break
                    rows = []
                    for g in chunk:
                        pending[g.prompt.prompt_id] = g
                        rows.append((g.prompt.prompt_id, pickle.dumps(g)))
                    await feed.put.remote(rows)
            except Exception as exc:  # the source failed (a bad prompt line): finish what was fed, as locally
                control.fail(exc)
            await feed.close.remote(control.stop_reason)

        reader = threading.Thread(target=consume, name="ray-data-reader", daemon=True)
        reader.start()
        producer = asyncio.ensure_future(produce())
        stopped_feed = False
        try:
            while (item := await results.get()) is not DONE:
                if isinstance(item, BaseException):
                    raise _ray_error(item)
                done, scored = [], []
                for pid, group_blob, scored_blob in zip(
                    *(item.column(c).to_pylist() for c in ("prompt_id", "group", "scored")), strict=True
                ):
                    if pid not in pending or scored_blob is None:  # a duplicate, or a prompt a stop left unfinished
                        pending.pop(pid, None)
                        continue
                    del pending[pid]
                    done.append(pickle.loads(group_blob))
                    scored.append(pickle.loads(scored_blob))
                if self._since is not None:
                    res.report.timings["ray_first_block_s"] += time.perf_counter() - self._since
                    self._since = None
                self._notice(res, item, latest)
                if control.stop_reason is not None and not stopped_feed:
                    stopped_feed = True
                    await feed.close.remote(control.stop_reason)
                if done:
                    yield done, scored
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
                await feed.close.remote(control.stop_reason or "stopped")
            budget.spent = await ledger.total.remote() - budget.spent_before
            reader.join(timeout=60)

    def _dataset(self, res: Resources, run: _Run, feed):
        import ray.data

        from arbitrage.executors.ray_stages import FeedSource, GenerateStage, ScoreStage

        journal_dir, ledger = str(res.journal_dir), run.ledger
        roster, scorer = pickle.loads(run.shipped)  # fresh copies: every pass builds its actors anew
        ds = ray.data.read_datasource(FeedSource(feed), override_num_blocks=1, num_cpus=0)  # it only waits on the feed
        for name, seat in roster.items():
            pool = self.pool(name)
            ds = ds.map_batches(
                GenerateStage,
                fn_constructor_kwargs={
                    "name": name,
                    "seat": seat,
                    "journal_dir": journal_dir,
                    "retry": res.retry,
                    "ledger": ledger,
                    "feed": feed,
                    "cap_usd": res.budget.cap,
                },
                **self._pool_args(pool),
            )
        return ds.map_batches(
            ScoreStage,
            fn_constructor_kwargs={
                "scorer": scorer,
                "journal_dir": journal_dir,
                "retry": res.retry,
                "ledger": ledger,
                "feed": feed,
                "cap_usd": res.budget.cap,
            },
            **self._pool_args(self.scorer),
        )

    def _pool_args(self, pool: dict) -> dict:
        import ray.data

        return {
            "batch_size": self.batch_size,
            "batch_format": "pyarrow",
            "zero_copy_batch": True,
            # Async stages overlap their blocks only if the actor takes that many calls at once
            # (Ray Data's actors default to one).
            "compute": ray.data.ActorPoolStrategy(
                size=pool["replicas"],
                max_tasks_in_flight_per_actor=self.batches_per_actor,
                max_concurrent_calls_per_actor=self.batches_per_actor,
            ),
            "num_cpus": pool["num_cpus"],
            "num_gpus": pool["num_gpus"] or None,
            # Ray Data's actor pools restart a dead actor and retry its batch on the replacement
            # (max_restarts=-1, max_task_retries=-1 by default): nothing to set here.
        }

    # what the actors report -----------------------------------------------------------------------------
    def _notice(self, res: Resources, batch, latest: dict) -> None:
        from arbitrage.executors.ray_stages import notes

        control = res.control
        for note in notes(batch):
            if note.seq > getattr(latest.get(note.shard), "seq", 0):
                latest[note.shard] = note
            if note.error is not None and control.error is None:
                control.fail(note.error)  # a teacher that cannot work (bad key, model that will not load)
            elif note.stopped and control.stop_reason is None:
                control.stop(note.stopped)  # the cluster's budget ran out

    def _settle(self, res: Resources, latest: dict) -> None:
        """The report's per-teacher figures are the sums of every actor's last report."""
        report = res.report
        for note in latest.values():
            for name, stats in note.stats.items():
                report.calls.setdefault(name, TeacherStats()).add(stats)
            for name, figures in note.teacher_stats.items():
                mine = report.teachers.setdefault(name, {})
                for key, value in figures.items():  # replicas load and generate in parallel: the longest counts
                    mine[key] = max(mine.get(key, 0.0), value)


async def _aiter(items):
    for item in items:
        yield item


def _env() -> dict[str, str]:
    """What the workers of a Ray we start must see as the driver does (offline hub, quiet tokenizers)."""
    keep = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME", "VLLM_CPU_KVCACHE_SPACE")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _context() -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    # Small blocks, so what the feed yields goes on at once: Ray Data would otherwise gather the read
    # task's output up to 128 MB, and the stages would see nothing until the feed closes. The
    # stages re-bundle blocks into batches of `batch_size` prompts.
    context.target_max_block_size = BLOCK_BYTES
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _ray_error(exc: BaseException) -> BaseException:
    """A stage's own error (a ConfigError from a teacher, say) as itself; Ray's wrappers as one line."""
    cause = exc
    while cause is not None:
        if isinstance(cause, ArbitrageError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ArbitrageError(f"the Ray stages failed: {first}")
