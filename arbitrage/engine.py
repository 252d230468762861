"""Execute Calls against teachers as a stream: bounded queues, rate limits, retries, a journal.

Calls are pulled from a (possibly endless) source only as fast as the teachers take them, so
memory stays flat in the number of prompts. Each teacher has its own bounded queue, workers
(`max_concurrency`), optional requests/tokens-per-minute buckets corrected by the server's
`x-ratelimit-*` headers, and retries with full-jitter backoff that honour Retry-After. Every
finished call — answer or failure — is appended to `journal/calls.jsonl` as it lands, so a crash
loses at most the calls in flight, and a rerun skips every call already answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from arbitrage.cost import Spend
from arbitrage.errors import ArbitrageError
from arbitrage.rows import Candidate, Completion, Prompt, stable_hash
from arbitrage.teachers import Teacher

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Call:
    call_id: str
    prompt: Prompt
    teacher: str


def make_call(prompt: Prompt, teacher: Teacher) -> Call:
    return Call(stable_hash(prompt.prompt_id, teacher.name, teacher.generation_key()), prompt, teacher.name)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def retryable(self, completion: Completion) -> bool:
        # No status: timeout or connection error. 200 with an error: a body we could not parse.
        return completion.status is None or completion.status == 200 or completion.status in RETRYABLE_STATUS

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay_s)
        # Full jitter (AWS architecture blog): spreads retries of a burst of failures apart.
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def failure_reason(error: str | None, status: int | None) -> str:
    """A short bucket for a failure, for the summary table: 'HTTP 503', 'timeout', 'invalid body'…"""
    if error is None:
        return "empty answer"
    if status and status != 200:
        return f"HTTP {status}"
    text = (error or "").lower()
    for needle, label in (("stopped", "stopped"), ("timeout", "timeout"), ("connect", "connection"), ("invalid", "invalid body")):
        if needle in text:
            return label
    return (error or "error").split(":")[0][:40]


# -- rate limits ------------------------------------------------------------------------------------


class TokenBucket:
    """`per_minute` units refilled continuously; callers wait their turn in order (FIFO)."""

    def __init__(self, per_minute: float):
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.updated = time.monotonic()
        self.blocked_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float) -> float:
        self._refill()
        blocked = max(0.0, self.blocked_until - time.monotonic())
        short = max(0.0, min(amount, self.capacity) - self.level)
        return max(blocked, short / self.rate)

    async def take(self, amount: float = 1.0) -> None:
        """Wait until `amount` is available, then take it. More than the capacity waits for a full bucket."""
        async with self._lock:
            while (wait := self.wait_time(amount)) > 0:
                await asyncio.sleep(wait)
            self.level -= amount  # may go below zero for an oversized request: later callers wait it off

    def charge(self, amount: float) -> None:
        """Correct an estimate after the fact (positive: used more than taken)."""
        self._refill()
        self.level -= amount

    def sync(self, remaining: float | None, reset_s: float | None, limit: float | None = None) -> None:
        """The server's view wins when it is stricter: fewer remaining, or empty until a reset."""
        self._refill()
        if limit and limit != self.capacity and limit > 0:
            self.capacity, self.rate = float(limit), float(limit) / 60.0
        if remaining is not None and remaining < self.level:
            self.level = float(remaining)
        if remaining is not None and remaining <= 0 and reset_s:
            # OpenAI's reset is when the bucket is *full* again; one request fits after 1/rate.
            self.blocked_until = max(self.blocked_until, time.monotonic() + min(reset_s, 1 / self.rate))


class RateLimit:
    """Requests and tokens per minute for one teacher. A limit left unset is learnt from the
    server's `x-ratelimit-limit-*` headers the first time it sends them."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None

    async def acquire(self, tokens: float) -> None:
        if self.requests:
            await self.requests.take(1)
        if self.tokens:
            await self.tokens.take(tokens)

    def settle(self, estimated: float, used: int) -> None:
        if self.tokens and used:
            self.tokens.charge(used - estimated)

    def observe(self, headers: dict | None) -> None:
        if not headers:
            return
        for kind in ("requests", "tokens"):
            limit, remaining = headers.get(f"limit_{kind}"), headers.get(f"remaining_{kind}")
            bucket = getattr(self, kind)
            if bucket is None and limit:
                bucket = TokenBucket(limit)
                setattr(self, kind, bucket)
            if bucket is not None:
                bucket.sync(remaining, headers.get(f"reset_{kind}_s"), limit)


# -- journal ------------------------------------------------------------------------------------------


def _key(call_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "little")


class Journal:
    """Append-only JSONL of finished calls; the last record of a call id wins.

    Only a compact index of what an earlier run answered stays in memory (two 8-byte integers per
    call: id → file offset); records are read back from disk when a resumed prompt needs them.
    Calls finished in this run are handed to the pipeline directly and never looked up.
    """

    def __init__(self, directory: Path, read_only: bool = False):
        """`read_only` (for `arbitrage estimate`): never cut a torn line or open for appending, so
        reading beside a live run cannot damage its journal."""
        if not read_only:
            directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "calls.jsonl"
        self.read_only = read_only
        self.tokens: dict[str, list[int]] = {}  # teacher → [tokens in, tokens out] over every record, for spend
        self.failed_before = 0
        self._keys = np.empty(0, dtype=np.uint64)
        self._offsets = np.empty(0, dtype=np.int64)
        if self.path.exists():
            self._load()
        self._file = self.path.open("rb" if read_only else "ab")
        self._reader = self.path.open("rb")
        self._last_sync = time.monotonic()
        self.appended = 0

    def _load(self) -> None:
        answered: dict[int, int] = {}
        failed: set[int] = set()
        offset = 0
        with self.path.open("rb") as f:
            lines = iter(f)
            line = next(lines, None)
            while line is not None:
                following = next(lines, None)
                try:
                    record = json.loads(line)
                    key = _key(record["call_id"])
                except (ValueError, KeyError, TypeError) as exc:
                    if following is not None:
                        raise ArbitrageError(
                            f"{self.path} line {offset} (byte offset) is corrupt ({exc}) — move the file away to start the run afresh"
                        ) from None
                    record = None
                if record is None or not line.endswith(b"\n"):
                    # A crash mid-write leaves a torn last line: cut it off, and that call reruns.
                    if not self.read_only:
                        log.warning("journal: cutting a torn last line from %s", self.path)
                        os.truncate(self.path, offset)
                    break
                if record.get("error") is None and record.get("text"):
                    answered[key] = offset
                    failed.discard(key)
                else:
                    answered.pop(key, None)
                    failed.add(key)
                used = self.tokens.setdefault(record.get("teacher", "?"), [0, 0])
                used[0] += int(record.get("tokens_in") or 0)
                used[1] += int(record.get("tokens_out") or 0)
                offset += len(line)
                line = following
        self.failed_before = len(failed)
        keys = np.fromiter(answered.keys(), dtype=np.uint64, count=len(answered))
        offsets = np.fromiter(answered.values(), dtype=np.int64, count=len(answered))
        order = np.argsort(keys)
        self._keys, self._offsets = keys[order], offsets[order]

    def __len__(self) -> int:
        return len(self._keys)

    def _find(self, call_id: str) -> int | None:
        if not len(self._keys):
            return None
        key = np.uint64(_key(call_id))
        i = int(np.searchsorted(self._keys, key))
        return int(self._offsets[i]) if i < len(self._keys) and self._keys[i] == key else None

    def answered(self, call_id: str) -> bool:
        """Answered by an earlier run (this run's answers are delivered, not looked up)."""
        return self._find(call_id) is not None

    def get(self, call_id: str) -> Candidate | None:
        offset = self._find(call_id)
        if offset is None:
            return None
        self._reader.seek(offset)
        return Candidate(**json.loads(self._reader.readline()))

    def records(self) -> Iterator[Candidate]:
        """Every record on disk, last one per call id winning (reads the whole file: tests, tools)."""
        if not self._file.closed and not self.read_only:
            self._file.flush()
        latest: dict[str, Candidate] = {}
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):  # torn (read-only beside a crash or a live run)
                    break
                record = Candidate(**json.loads(line))
                latest[record.call_id] = record
        return iter(latest.values())

    def append(self, candidates: Iterable[Candidate]) -> None:
        assert not self.read_only, "a read-only journal takes no records"
        for candidate in candidates:
            self._file.write((json.dumps(asdict(candidate), ensure_ascii=False) + "\n").encode())
            self.appended += 1
        self._file.flush()  # in the OS after every batch: a kill -9 of this process loses nothing flushed
        if time.monotonic() - self._last_sync > 1.0:  # fsync in batches: durable without a sync per row
            os.fsync(self._file.fileno())
            self._last_sync = time.monotonic()

    def sync(self) -> None:
        if not self._file.closed and not self.read_only:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()
            self._reader.close()


# -- the engine -----------------------------------------------------------------------------------------


@dataclass
class TeacherStats:
    sent: int = 0  # requests, retries included
    ok: int = 0
    failed: int = 0
    retries: int = 0
    resumed: int = 0  # answered by an earlier run, taken from the journal
    tokens_in: int = 0
    tokens_out: int = 0
    busy_s: float = 0.0
    failures: Counter = field(default_factory=Counter)


@dataclass
class _Pending:
    call: Call
    attempts: int = 0
    started: float = 0.0
    estimate: float = 0.0  # tokens reserved in the TPM bucket
    reserved_usd: float = 0.0  # the most this call can cost, held against the budget until it finishes
    last: Completion | None = None


def bar_interval() -> float:
    """Live on a terminal; a line every 30 s in a log (CI), not one per redraw."""
    return 0.5 if sys.stderr.isatty() else 30.0


def _estimate_tokens(prompt: Prompt, max_tokens: int) -> float:
    # ~4 characters per token is close enough to reserve rate limit and budget before a request.
    return sum(len(m["content"]) for m in prompt.messages) / 4 + max_tokens


class Engine:
    """Streams Calls to teachers and hands every finished call to `on_done` as it lands.

    `stop(reason)` stops sending: requests in flight finish and are journaled, calls waiting for a
    retry are recorded as failures (a rerun retries them), queued calls are left for the rerun.
    `budget_usd` stops the same way once the spend of the whole run folder — earlier runs
    included — plus what is in flight could pass it.
    """

    def __init__(
        self,
        teachers: dict[str, Teacher],
        journal: Journal,
        policy: RetryPolicy,
        prices: dict | None = None,
        budget_usd: float | None = None,
        progress: bool = True,
        label: str = "generate",
        total: int | None = None,
    ):
        self.teachers, self.journal, self.policy = teachers, journal, policy
        self.prices = {n: p for n, p in (prices or {}).items() if p is not None}
        self.budget_usd = budget_usd
        self.stats = {name: TeacherStats() for name in teachers}
        self.spend = Spend(self.prices)  # this run's requests, retries included
        self.stop_reason: str | None = None
        self._load_span = [float("inf"), float("-inf")]
        self.spent_before = sum(self._cost(t, *used) for t, used in journal.tokens.items())
        self._reserved = 0.0
        self._label, self._total, self._progress = label, total, progress
        self._queues: dict[str, asyncio.Queue[_Pending]] = {}
        self._limits: dict[str, RateLimit] = {}
        self._started: dict[str, asyncio.Task] = {}
        self._retrying: dict[asyncio.Task, tuple[str, _Pending]] = {}
        self._outstanding = 0
        self._fed_all = False
        self._done = asyncio.Event()
        self._bar: tqdm | None = None
        self._on_done: Callable[[Candidate], None] = lambda c: None
        self._last_postfix = 0.0
        self._error: BaseException | None = None
        self._released = asyncio.Event()

    # spend --------------------------------------------------------------------------------------
    def _cost(self, teacher: str, tokens_in: float, tokens_out: float) -> float:
        price = self.prices.get(teacher)
        return price.cost(tokens_in, tokens_out) if price is not None else 0.0

    @property
    def spent_usd(self) -> float:
        return self.spent_before + self.spend.total_usd

    @property
    def load_s(self) -> float:
        """Wall time from the first engine load to the last (loads overlap generation)."""
        first, last = self._load_span
        return max(0.0, last - first)

    def _over_budget(self, extra: float = 0.0) -> bool:
        return self.budget_usd is not None and self.spent_usd + self._reserved + extra >= self.budget_usd

    # control --------------------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Graceful stop: no new requests; in-flight ones finish; nothing finished is lost."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        for queue in self._queues.values():
            while not queue.empty():
                self._release([queue.get_nowait()])
                self._outstanding -= 1
        for task, (teacher, item) in list(self._retrying.items()):
            task.cancel()
            self._retrying.pop(task, None)
            self._finish(teacher, [(item, item.last or Completion(None, error="stopped"), f"stopped before retry: {reason}")])
        self._check_done()

    def _release(self, items: list[_Pending]) -> None:
        self._reserved -= sum(item.reserved_usd for item in items)
        self._released.set()

    def _check_done(self) -> None:
        if self._outstanding <= 0 and (self._fed_all or self.stop_reason is not None):
            self._done.set()

    # workers ----------------------------------------------------------------------------------------
    async def _ensure_started(self, name: str) -> None:
        if name not in self._started:

            async def start(teacher=self.teachers[name]):
                self._load_span[0] = min(self._load_span[0], time.perf_counter())
                await teacher.start()
                self._load_span[1] = max(self._load_span[1], time.perf_counter())

            self._started[name] = asyncio.ensure_future(start())
        await self._started[name]

    def _finish(self, name: str, results: list[tuple[_Pending, Completion, str | None]]) -> None:
        stats = self.stats[name]
        finished = []
        for item, completion, error_override in results:
            error = error_override or completion.error
            candidate = Candidate(
                call_id=item.call.call_id,
                prompt_id=item.call.prompt.prompt_id,
                teacher=name,
                text=completion.text if error is None else None,
                finish_reason=completion.finish_reason,
                tokens_in=completion.tokens_in,
                tokens_out=completion.tokens_out,
                latency_s=round(time.perf_counter() - item.started, 4),
                attempts=item.attempts,
                error=error,
                last_status=completion.status,
            )
            if candidate.ok:
                stats.ok += 1
            else:
                stats.failed += 1
                stats.failures[failure_reason(candidate.error, candidate.last_status)] += 1
            finished.append(candidate)
        self.journal.append(finished)
        self._outstanding -= len(finished)
        self._release([item for item, _, _ in results])
        for candidate in finished:
            self._on_done(candidate)
        self._tick(len(finished))
        self._check_done()

    def _tick(self, n: int) -> None:
        if self._bar is None:
            return
        self._bar.update(n)
        now = time.monotonic()
        if now - self._last_postfix > 0.5:
            self._last_postfix = now
            s = self.stats.values()
            postfix = (
                f"ok={sum(x.ok + x.resumed for x in s)} failed={sum(x.failed for x in s)} retries={sum(x.retries for x in s)}"
            )
            if self.prices:
                postfix += f" ${self.spent_usd:.4f}"
            self._bar.set_postfix_str(postfix, refresh=False)

    async def _guarded(self, work) -> None:
        """A worker that dies (a teacher that cannot start) ends the run with its error, not a hang."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = self._error or exc
            self._done.set()

    async def _retry_later(self, name: str, item: _Pending, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retrying.pop(asyncio.current_task(), None)
        if self.stop_reason is None:
            await self._queues[name].put(item)

    async def _worker(self, name: str) -> None:
        teacher, queue, stats = self.teachers[name], self._queues[name], self.stats[name]
        limit = self._limits.get(name)
        max_tokens = int(getattr(teacher, "max_tokens", 0) or 0)
        while True:
            batch = [await queue.get()]
            while len(batch) < teacher.batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            if self.stop_reason is not None:  # queued after the stop: left for the rerun
                self._release(batch)
                self._outstanding -= len(batch)
                self._check_done()
                continue
            await self._ensure_started(name)
            for item in batch:
                if limit is not None:
                    item.estimate = _estimate_tokens(item.call.prompt, max_tokens)
                    await limit.acquire(item.estimate)
                item.attempts += 1
                item.started = item.started or time.perf_counter()
            stats.sent += len(batch)
            t = time.perf_counter()
            try:
                completions = await teacher.complete([item.call.prompt for item in batch])
            except Exception as exc:  # a teacher bug fails its batch as data, never the whole run
                completions = [Completion(text=None, error=f"{type(exc).__name__}: {exc}") for _ in batch]
            stats.busy_s += time.perf_counter() - t
            finished = []
            for item, completion in zip(batch, completions, strict=True):
                stats.tokens_in += completion.tokens_in
                stats.tokens_out += completion.tokens_out
                self.spend.add(name, completion.tokens_in, completion.tokens_out)
                if limit is not None:
                    limit.settle(item.estimate, completion.tokens_in + completion.tokens_out)
                    limit.observe(completion.ratelimit)
                if not completion.ok and self.policy.retryable(completion) and item.attempts < self.policy.max_attempts:
                    stats.retries += 1
                    item.last = completion
                    if self.stop_reason is not None:
                        finished.append((item, completion, f"stopped before retry ({self.stop_reason}): {completion.error}"))
                        continue
                    task = asyncio.ensure_future(
                        self._retry_later(name, item, self.policy.delay(item.attempts, completion.retry_after))
                    )
                    self._retrying[task] = (name, item)
                    continue
                finished.append((item, completion, None))
            if finished:
                self._finish(name, finished)
            if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
                self.stop("budget")

    # the stream -----------------------------------------------------------------------------------
    async def run(self, calls: AsyncIterable[Call] | Iterable[Call], on_done: Callable[[Candidate], None]) -> None:
        """Send every call the journal has not answered; hand each finished call to `on_done`.

        Calls answered by an earlier run are read back from the journal and handed over at once.
        Returns when every call pulled from `calls` has finished, or after a stop.
        """
        self._on_done = on_done
        self._done.clear()
        self._fed_all = False
        for name, teacher in self.teachers.items():
            # Room for two rounds of work per teacher: enough to keep it busy, little to hold.
            self._queues[name] = asyncio.Queue(maxsize=2 * max(1, teacher.max_concurrency) * max(1, teacher.batch_size))
            rpm, tpm = getattr(teacher, "rpm", None), getattr(teacher, "tpm", None)
            if rpm or tpm or getattr(teacher, "batch_size", 1) == 1:  # API teachers also learn limits from headers
                self._limits[name] = RateLimit(rpm, tpm)
        self._bar = tqdm(total=self._total, desc=self._label, unit="call", disable=not self._progress, mininterval=bar_interval())
        workers = [
            asyncio.ensure_future(self._guarded(self._worker(name)))
            for name, teacher in self.teachers.items()
            for _ in range(max(1, teacher.max_concurrency))
        ]
        feeder = asyncio.ensure_future(self._feed(calls))
        try:
            await self._done.wait()
            if self._error is not None:
                raise self._error
        finally:
            feeder.cancel()
            for task in [*workers, *self._retrying]:
                task.cancel()
            await asyncio.gather(feeder, *workers, *self._retrying, return_exceptions=True)
            self._retrying.clear()
            self._bar.close()
            self._bar = None

    async def _feed(self, calls) -> None:
        try:
            async for call in _aiter(calls):
                if self.stop_reason is not None:
                    break
                if self.journal.answered(call.call_id):
                    record = self.journal.get(call.call_id)
                    self.stats[call.teacher].resumed += 1
                    self._on_done(record)
                    self._tick(1)
                    continue
                teacher = self.teachers[call.teacher]
                most = self._cost(call.teacher, _estimate_tokens(call.prompt, 0), getattr(teacher, "max_tokens", 0) or 0)
                if self.budget_usd is not None:
                    # Wait while calls in flight might still fit under the cap; stop once spend alone cannot.
                    while self._over_budget(most) and self.spent_usd + most < self.budget_usd and self._reserved > 0:
                        self._released.clear()
                        await self._released.wait()
                    if self._over_budget(most):
                        self.stop("budget")
                        break
                self._outstanding += 1
                self._reserved += most
                await self._queues[call.teacher].put(_Pending(call, reserved_usd=most))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the source failed (a bad prompt line): finish what is in flight, then raise
            self._error = self._error or exc
            self.stop(f"error: {exc}")
        self._fed_all = True
        self._check_done()


async def _aiter(calls):
    if hasattr(calls, "__aiter__"):
        async for call in calls:
            yield call
    else:
        for i, call in enumerate(calls):
            if i % 256 == 255:
                await asyncio.sleep(0)  # let workers run while a long list is fed
            yield call


async def execute(
    calls: Iterable[Call] | AsyncIterable[Call],
    teachers: dict[str, Teacher],
    journal: Journal,
    policy: RetryPolicy,
    on_done: Callable[[Candidate], None] | None = None,
    **options,
) -> Engine:
    """Run calls to completion (a convenience over Engine for one batch of calls)."""
    engine = Engine(teachers, journal, policy, **options)
    await engine.run(calls, on_done or (lambda c: None))
    return engine
