"""What runs inside the Ray cluster for `executor=ray` (the driver is arbitrage/executors/ray.py).

Rows flowing through Ray Data are prompts on their way (`stages.Group`, pickled): the feed's read
task puts them in, each teacher's stage appends its answers, the score stage adds the scores. A row
passes through a teacher's stage untouched when its route does not name that teacher.

Each stage actor runs the engine a local run uses, over a journal shard of its own
(`journal/calls-<teacher>-<id>.jsonl`) that reads every other shard first: a call any actor (or an
earlier run) settled is read back, never sent again. A restarted actor therefore answers the batch
Ray retries on it from the journal, except the calls that were in flight when its predecessor died.
"""

from __future__ import annotations

import asyncio
import pickle
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from arbitrage.engine import Budget, Engine, Journal, RetryPolicy
from arbitrage.engine.streams import TeacherStats
from arbitrage.executors.shared import ClusterBudget, ClusterRateLimit
from arbitrage.scoring import Scorer
from arbitrage.stages import Group, Seat, score, teacher_calls
from arbitrage.teachers import Teacher

SCHEMA = pa.schema([("prompt_id", pa.string()), ("group", pa.binary()), ("scored", pa.binary()), ("notes", pa.binary())])


@ray.remote(num_cpus=0)
class Feed:
    """The driver's routed prompts, a bounded queue of pickled batches: the driver waits for room
    (backpressure), the read task waits for work. `stop` also tells every stage to stop sending."""

    def __init__(self, size: int):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=size)
        self.stop_reason: str | None = None

    async def put(self, rows: list[tuple[str, bytes]]) -> None:
        await self.queue.put(rows)

    async def take(self) -> list[tuple[str, bytes]] | None:
        return await self.queue.get()

    async def close(self, stop_reason: str | None = None) -> None:
        """No more prompts. A stop drops the queued ones: they are left for the rerun."""
        if stop_reason is not None:
            self.stop_reason = stop_reason
            while not self.queue.empty():
                self.queue.get_nowait()
        await self.queue.put(None)

    async def stopped(self) -> str | None:
        return self.stop_reason


class FeedSource(Datasource):
    """One read task that streams the feed into Ray Data until the driver closes it."""

    def __init__(self, feed):
        super().__init__()
        self.feed = feed

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        feed = self.feed

        def read() -> Iterator[pa.Table]:
            while (rows := ray.get(feed.take.remote())) is not None:
                ids, blobs = zip(*rows, strict=True) if rows else ((), ())
                yield pa.table(
                    {"prompt_id": list(ids), "group": list(blobs), "scored": [None] * len(ids), "notes": [None] * len(ids)},
                    schema=SCHEMA,
                )

        return [ReadTask(read, BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None))]


@dataclass
class Note:
    """An actor's running figures, riding on its output rows to the driver (the latest `seq` wins)."""

    shard: str
    seq: int
    stats: dict[str, TeacherStats]
    teacher_stats: dict[str, dict] = field(default_factory=dict)
    stopped: str | None = None
    error: BaseException | None = None


def notes(batch: pa.Table) -> list[Note]:
    """Every actor's figures a batch carries (each stage adds its own to the first row)."""
    return [note for blob in batch.column("notes").to_pylist() if blob for note in pickle.loads(blob)]


def _output(batch: pa.Table, groups: list[Group], scored: list | None, note: Note) -> pa.Table:
    carried = [*notes(batch), note]
    n = len(groups)
    return pa.table(
        {
            "prompt_id": batch.column("prompt_id"),
            "group": [pickle.dumps(g) for g in groups],
            "scored": batch.column("scored") if scored is None else [None if s is None else pickle.dumps(s) for s in scored],
            "notes": [pickle.dumps(carried)] + [None] * (n - 1),
        },
        schema=SCHEMA,
    )


class _Stage:
    """An engine over a journal shard of its own, entered on the first batch."""

    def __init__(self, label: str, teachers: dict[str, Teacher], journal_dir: str, retry: RetryPolicy, ledger, feed, cap_usd):
        self.shard = f"{label}-{uuid.uuid4().hex[:8]}"
        self.feed, self.seq = feed, 0
        budget = Budget() if ledger is None else ClusterBudget(ledger, cap_usd)
        limited = {
            n: ClusterRateLimit(ledger, n, bool(t.limits.rpm or t.limits.tpm))
            for n, t in teachers.items()
            if ledger is not None and (t.limits.rpm or t.limits.tpm or t.limits.from_headers)
        }
        self.engine = Engine(teachers, Journal(Path(journal_dir), shard=self.shard), retry, budget, rate_limits=limited)
        self._entered: asyncio.Future | None = None

    async def ready(self) -> None:
        if self._entered is None:
            self._entered = asyncio.ensure_future(self.engine.__aenter__())
        await self._entered
        if self.engine.stop_reason is None and (reason := await self.feed.stopped.remote()):
            self.engine.stop(reason)  # Ctrl-C or a stop on the driver: no new requests here either

    def note(self) -> Note:
        self.seq += 1
        e = self.engine
        stats = {name: e.stats[name] for name in e.teachers}
        teacher_stats = {name: t.stats() for name, t in e.teachers.items()}
        return Note(self.shard, self.seq, stats, teacher_stats, e.stop_reason, e.error)


class GenerateStage(_Stage):
    """One teacher's replica: asks it for every sample of the prompts routed to it."""

    def __init__(self, name: str, seat: Seat, journal_dir: str, retry, ledger, feed, cap_usd):
        super().__init__(name, {name: seat.teacher}, journal_dir, retry, ledger, feed, cap_usd)
        self.name, self.seat = name, seat

    async def __call__(self, batch: pa.Table) -> pa.Table:
        await self.ready()
        groups: list[Group] = [pickle.loads(b) for b in batch.column("group").to_pylist()]
        calls = [c for g in groups if self.name in g.route.teachers for c in teacher_calls(g, self.name, self.seat)]
        if calls:
            for call, candidate in zip(calls, await self.engine.run(calls), strict=True):
                call.context.candidates.append(candidate)
        return _output(batch, groups, None, self.note())


class ScoreStage(_Stage):
    """The reward: scores every prompt whose answers all landed; a judge's calls go through its engine."""

    def __init__(self, scorer: Scorer, journal_dir: str, retry, ledger, feed, cap_usd):
        super().__init__("score", dict(scorer.teachers), journal_dir, retry, ledger, feed, cap_usd)
        self.scorer = scorer

    async def __call__(self, batch: pa.Table) -> pa.Table:
        await self.ready()
        groups: list[Group] = [pickle.loads(b) for b in batch.column("group").to_pylist()]
        done = [i for i, g in enumerate(groups) if complete(g)]
        scored: list = [None] * len(groups)
        for i, row in zip(done, await score([groups[i] for i in done], self.scorer, self.engine) if done else [], strict=True):
            scored[i] = row
        return _output(batch, groups, scored, self.note())


def complete(group: Group) -> bool:
    """Every answer the prompt waits for landed (a stop leaves calls unsent: attempts 0, no record)."""
    return len(group.candidates) == group.expected and all(c.attempts or c.error is None for c in group.candidates)
