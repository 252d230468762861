"""`mode: batch` for API teachers: calls go through the provider's Batch API, at about half the price.

The engine's contract is unchanged: workers call `complete(calls)` and await one Completion per
call. Here those calls join an open batch; the batch is submitted when it is full (requests or
bytes per file) or when no call arrived for `linger_s`; each `complete` resolves when the output
of its batch lands. A large `limits.batch_size` × `max_concurrency` (= `max_pending`) keeps
thousands of calls waiting at once.

Native `n` as online (samples.py): a run of consecutive samples of one prompt is one batch line with
`n` and the first sample's seed, its custom_id the first call's id; the line's choices go back to its
calls in order. A line that comes back with fewer choices turns native `n` off (the missing calls
are retried as lines of their own), as online.

The batch ledger (batch_ledger.py) records every batch and the calls it carries before the batch
is created, so a crash, Ctrl-C or kill -9 never submits a call twice: the rerun polls the batches
still running and collects their answers. Ctrl-C does not cancel a batch: it keeps running at the
provider, and the same command picks it up. Failed lines, expired and cancelled batches come back
as failed Completions, which the engine retries (in a new batch) up to `engine.max_attempts`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from arbitrage.cost import Price
from arbitrage.errors import ArbitrageError
from arbitrage.rows import Call, Completion
from arbitrage.teachers import Limits
from arbitrage.teachers.batch.api import CREATE_REFUSED, BatchAPI, BatchAPIError, missing_completion
from arbitrage.teachers.batch.ledger import TERMINAL, BatchLedger, BatchRecord
from arbitrage.teachers.batch.settings import BatchSettings
from arbitrage.teachers.openai_compat import OpenAICompatTeacher, api_key_from_env
from arbitrage.teachers.samples import NativeN

log = logging.getLogger(__name__)
CALLS_PER_WORKER = 1000  # calls one engine worker hands over per complete()


@dataclass
class _Batch:
    """Calls waiting on one batch: still open (no tag yet), being submitted, or polled."""

    futures: dict[str, asyncio.Future] = field(default_factory=dict)
    lines: list[bytes] = field(default_factory=list)
    shared: dict[str, list[str]] = field(default_factory=dict)  # custom_id → its line's calls, where several (native n)
    size: int = 0
    opened: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    record: BatchRecord | None = None


class BatchTeacher:
    """An OpenAI-compatible teacher whose calls go through the Files + Batches endpoints."""

    def __init__(self, online: OpenAICompatTeacher, settings: BatchSettings, price: Price | None):
        self.online, self.settings, self.price = online, settings, price
        self.name, self.model, self.sampling = online.name, online.model, online.sampling
        per_worker = min(CALLS_PER_WORKER, settings.max_pending)
        workers = math.ceil(settings.max_pending / per_worker)
        # The provider's batch queue paces it; native_n: the estimate and the breaker count lines, not samples.
        self.limits = Limits(workers, per_worker, native_n=online.limits.native_n, where=f"teacher.{self.name}")
        self._native = NativeN.of(self)
        self._journal_dir: Path | None = None
        self._ledger: BatchLedger | None = None
        self._api: BatchAPI | None = None
        self._session: aiohttp.ClientSession | None = None
        self._open: _Batch | None = None
        self._waiting: dict[str, asyncio.Future] = {}  # every call this teacher holds, open or submitted
        self._polled: dict[str, _Batch] = {}  # tag → batch being polled
        self._tasks: set[asyncio.Task] = set()
        self._submitting: set[asyncio.Task] = set()
        self._outputs: dict[str, asyncio.Task] = {}  # tag → answers of a finished batch, read again after a crash
        self._lookups: dict[str, asyncio.Future] = {}  # tag → a lookup of a batch whose create failed
        self._halted: str | None = None
        self.answered = self.failed_lines = 0

    # the Teacher protocol -------------------------------------------------------------------------
    def identity(self) -> dict:
        return self.online.identity()  # the same answers as online: a run can switch modes and resume

    def check(self) -> None:
        self.online.check()

    def stats(self) -> dict[str, float]:
        return {}

    def diagnose(self, completion: Completion) -> str:
        return self.online.diagnose(completion)

    def attach_journal(self, directory: Path) -> None:
        """The run folder's journal directory, where the batch ledger lives (the Engine calls this)."""
        self._journal_dir = directory

    async def preflight(self) -> None:
        """The online endpoint's checks (GET /models) before the run folder is claimed."""
        await self.online.preflight()

    async def start(self) -> None:
        if self._ledger is not None:
            return
        if self._journal_dir is None:
            raise ArbitrageError(f"teacher '{self.name}': mode=batch needs a run folder (run it through the Engine)")
        await self.online.start()  # GET /models: a wrong key or URL costs no batch
        headers = {}
        key = api_key_from_env(self.name, self.online.api_key_env, required=True)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # No total timeout: an output file can take minutes to stream; a stalled read still fails.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self.online.timeout_s)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout)
        self._api = BatchAPI(self._session, self.online.base_url)
        self._ledger = BatchLedger(self._journal_dir, self.name)
        await self._ledger.resolve(self._api)
        counts = self._ledger.counts()
        if counts["running"]:
            log.info(
                "teacher %s: %d batches of an earlier run are still running: their calls are collected, not sent again",
                self.name,
                counts["running"],
            )

    async def complete(self, calls: Sequence[Call]) -> list[Completion]:
        placed = [await self._place(call) for call in calls]
        # Only the calls still to send are cut into lines: one an earlier run sent is never in a line again.
        fresh = [call for call, future in zip(calls, placed, strict=True) if future is None]
        added = iter([future for run in self._native.runs(fresh) for future in self._add([fresh[i] for i in run])])
        return list(await asyncio.gather(*(future if future is not None else next(added) for future in placed)))

    def halt(self, reason: str) -> None:
        """The engine stopped. A budget stop submits the open batch (its calls fit the budget) and
        waits; any other stop leaves every submitted batch running for the rerun, and sends no more."""
        if self._halted is not None:
            return
        self._halted = reason
        if reason == "budget":
            self._flush()
            return
        if self._open is not None:
            self._settle(
                self._open, lambda _: Completion(None, error=f"not sent: stopped ({reason}) before its batch was submitted")
            )
            self._open = None
        running = [b for b in self._polled.values() if b.futures]
        for batch in running:
            self._settle(batch, self._left_running)
        if running or self._submitting:
            log.warning(
                "teacher %s: %d batches keep running at the provider (not cancelled) — the same command collects them",
                self.name,
                len(running) + len(self._submitting),
            )

    def _left_running(self, batch: _Batch) -> Completion:
        batch_id = batch.record.batch_id if batch.record else "being submitted"
        return Completion(
            None, error=f"stopped ({self._halted}): batch {batch_id} keeps running at the provider — rerun to collect it"
        )

    async def close(self) -> None:
        if self._submitting:  # a batch half submitted: let it get its id on record (or fail) first
            await asyncio.wait(self._submitting, timeout=60)
        for task in [*self._tasks, *self._outputs.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._outputs.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._ledger is not None:
            self._ledger.close()
        await self.online.close()

    # placing a call ------------------------------------------------------------------------------
    async def _place(self, call: Call) -> asyncio.Future | None:
        """The call's answer if it is waiting, stopped, or an earlier run's batch carries it; None: send it."""
        if call.call_id in self._waiting:
            return self._waiting[call.call_id]
        future = asyncio.get_running_loop().create_future()
        if self._halted not in (None, "budget"):
            future.set_result(Completion(None, error=f"not sent: stopped ({self._halted})"))
            return future
        carrier = self._ledger.carrier(call.call_id)
        if carrier is not None and carrier.live:  # submitted by an earlier run: poll it, never send again
            self._track(call.call_id, future, self._follow(carrier))
            return future
        if carrier is not None and carrier.unresolved:  # its create failed in a way that may have made it
            if await self._look_up(carrier) is None:
                future.set_result(self._unresolved(carrier, "create failed and no batch with its tag is listed"))
                return future
            self._track(call.call_id, future, self._follow(carrier))
            return future
        if carrier is not None and carrier.output_file_id and call.call_id not in carrier.failed:
            answer = await self._answer_from_output(carrier, call.call_id)  # downloaded before a crash, not journaled
            if answer is not None:
                future.set_result(answer)
                return future
        return None

    def _track(self, call_id: str, future: asyncio.Future, batch: _Batch) -> None:
        batch.futures[call_id] = future
        self._waiting[call_id] = future
        future.add_done_callback(lambda _, c=call_id, f=future: self._waiting.pop(c, None) if self._waiting.get(c) is f else None)

    def _add(self, calls: Sequence[Call]) -> list[asyncio.Future]:
        """One line for consecutive samples of one prompt (`n` = how many), named by the first call."""
        futures = [asyncio.get_running_loop().create_future() for _ in calls]
        line = self._api.line(calls[0].call_id, self.online._body(calls[0], len(calls)))
        if len(line) > self.settings.max_bytes:
            failed = Completion(None, error=f"request of {len(line)} bytes is over batch.max_bytes", status=400)
            for future in futures:
                future.set_result(failed)
            return futures
        batch = self._open
        if batch is not None and (
            len(batch.lines) >= self.settings.max_requests or batch.size + len(line) > self.settings.max_bytes
        ):
            self._flush()
            batch = None
        if batch is None:
            batch = self._open = _Batch()
            self._spawn(self._linger(batch))
        batch.lines.append(line)
        batch.size += len(line)
        batch.last = time.monotonic()
        if len(calls) > 1:
            batch.shared[calls[0].call_id] = [call.call_id for call in calls]
        for call, future in zip(calls, futures, strict=True):
            self._track(call.call_id, future, batch)
        if self._halted == "budget":
            self._flush()
        return futures

    async def _linger(self, batch: _Batch) -> None:
        while self._open is batch:
            due = min(batch.last + self.settings.linger_s, batch.opened + self.settings.max_open_s)
            wait = due - time.monotonic()
            if wait <= 0:
                self._flush()
                return
            await asyncio.sleep(wait)

    def _flush(self) -> None:
        batch, self._open = self._open, None
        if batch is not None and batch.lines:
            task = self._spawn(self._submit(batch))
            self._submitting.add(task)
            task.add_done_callback(self._submitting.discard)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # submitting and polling ------------------------------------------------------------------------
    async def _submit(self, batch: _Batch) -> None:
        try:
            await self._submit_and_poll(batch)
        except Exception as exc:  # a full disk under the ledger, a bug: the calls fail as data, nothing hangs
            failed = Completion(None, error=f"batch not submitted: {type(exc).__name__}: {exc}"[:400])
            self._settle(batch, lambda _: failed)

    async def _submit_and_poll(self, batch: _Batch) -> None:
        """Ledger first (fsynced), then upload and create: a crash anywhere never sends a call twice."""
        tag = f"{self.name}-{uuid.uuid4().hex[:16]}"
        batch.record = self._ledger.prepared(tag, batch.futures, batch.shared)
        data, batch.lines = b"".join(batch.lines), []
        try:
            file_id = await self._api.upload(data, f"arbitrage-{tag}.jsonl")
        except BatchAPIError as exc:  # no input file: no batch can exist
            self._abandon(batch, exc)
            return
        try:
            created = await self._api.create(file_id, self.settings.completion_window, tag)
        except BatchAPIError as exc:
            if exc.status in CREATE_REFUSED:
                self._abandon(batch, exc)
                return
            created = await self._look_up(batch.record)  # made before the failure? its tag says
            if created is None:  # unresolved: its calls wait for a lookup that finds it, or the next start's
                unresolved = self._unresolved(batch.record, f"create failed ({exc})")
                self._settle(batch, lambda _: unresolved)
                return
        await self._submitted(batch, created, len(data))

    def _abandon(self, batch: _Batch, exc: BatchAPIError) -> None:
        self._ledger.abandoned(batch.record.tag, str(exc)[:300])
        failed = Completion(None, error=f"batch not submitted: {exc}"[:400], status=exc.status)
        self._settle(batch, lambda _: failed)

    async def _look_up(self, record: BatchRecord) -> dict | None:
        """The provider's batch with this record's tag (recorded as submitted), or None: not listed
        (yet), or the list failed. One lookup per tag at a time: a batch's calls share it."""
        if record.tag not in self._lookups:

            async def look_up() -> dict | None:
                try:
                    found = (await self._api.find_tagged({record.tag}, record.prepared_at - 300)).get(record.tag)
                except BatchAPIError as exc:
                    log.warning("teacher %s: cannot list batches to find %s (%s)", self.name, record.tag, exc)
                    return None
                if found is not None and record.unresolved:
                    self._ledger.submitted(record.tag, found["id"], found.get("input_file_id"))
                return found

            self._lookups[record.tag] = asyncio.ensure_future(look_up())
            self._lookups[record.tag].add_done_callback(lambda _, tag=record.tag: self._lookups.pop(tag, None))
        return await asyncio.shield(self._lookups[record.tag])

    def _unresolved(self, record: BatchRecord, why: str) -> Completion:
        said = f"batch {record.tag}: {why}; it may exist at the provider: its calls are not sent again until a lookup"
        return Completion(None, error=f"{said[:340]} finds it or the next start decides")

    async def _submitted(self, batch: _Batch, created: dict, size: int) -> None:
        tag = batch.record.tag
        if batch.record.unresolved:
            self._ledger.submitted(tag, created["id"], created.get("input_file_id"))
        self._submitting.discard(asyncio.current_task())  # on record: from here on a stop need not wait for it
        self._polled[tag] = batch
        self._progress(f"batch {created['id']} submitted ({len(batch.futures):,} calls, {size / 1e6:.1f} MB)")
        if self._halted not in (None, "budget"):
            self._settle(batch, self._left_running)
        await self._poll(batch)

    def _follow(self, record: BatchRecord) -> _Batch:
        """The in-memory batch for a ledger record still running (an earlier run's), polled once."""
        if record.tag not in self._polled:
            self._polled[record.tag] = _Batch(record=record)
            self._spawn(self._poll(self._polled[record.tag]))
        return self._polled[record.tag]

    async def _poll(self, batch: _Batch) -> None:
        try:
            await self._poll_until_done(batch)
        except Exception as exc:  # a corrupt output file, a full disk: its calls fail as data (the engine retries them)
            self._polled.pop(batch.record.tag, None)
            failed = Completion(None, error=f"batch {batch.record.batch_id}: {type(exc).__name__}: {exc}"[:400])
            self._settle(batch, lambda _: failed)

    async def _poll_until_done(self, batch: _Batch) -> None:
        delay, record = self.settings.poll_first_s, batch.record
        while True:
            try:
                state = await self._api.retrieve(record.batch_id)
                if state.get("status") in TERMINAL:
                    await self._collect(batch, state)
                    return
            except BatchAPIError as exc:
                if exc.status in (401, 403, 404):  # the key or the account changed: the batch stays on record
                    failed = Completion(None, error=f"batch {record.batch_id}: {exc}"[:400], status=exc.status)
                    self._settle(batch, lambda _, failed=failed: failed)
                log.warning("teacher %s: batch %s: %s (polling again)", self.name, record.batch_id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.poll_max_s)

    async def _collect(self, batch: _Batch, state: dict) -> None:
        """Stream the output and error files into the waiting calls, then record the batch done."""
        record, status = batch.record, state["status"]
        answered, failed = set(), set()
        for file_id in (state.get("output_file_id"), state.get("error_file_id")):
            if not file_id:
                continue
            async for call_ids, completions in self._api.answers(file_id, record.calls_of):
                if None in completions:  # the provider ignored `n`: its missing samples go again, one per line
                    got = len(call_ids) - completions.count(None)
                    self._native.stop_native(f"a batch line returned {got} of {len(call_ids)} choices")
                    lacking = Completion(None, error=f"batch line returned {got} of {len(call_ids)} choices")
                    completions = [c if c is not None else lacking for c in completions]
                for call_id, completion in zip(call_ids, completions, strict=True):
                    (failed if completion.error else answered).add(call_id)
                    future = batch.futures.pop(call_id, None)
                    if future is not None and not future.done():
                        future.set_result(completion)
        missing = set(record.calls) - answered - failed
        why = missing_completion(record.batch_id, state)
        self._settle(batch, lambda _: why)
        self._ledger.done(record.tag, status, state.get("output_file_id"), state.get("error_file_id"), failed | missing)
        self.answered += len(answered)
        self.failed_lines += len(failed | missing)
        self._polled.pop(record.tag, None)
        self._progress(f"batch {record.batch_id} {status}: {len(answered):,} answered, {len(failed | missing):,} failed")

    async def _answer_from_output(self, record: BatchRecord, call_id: str) -> Completion | None:
        """A finished batch's answer for a call the journal lacks (a crash between download and journal)."""
        if record.tag not in self._outputs:
            self._outputs[record.tag] = asyncio.ensure_future(self._read_output(record))
        answers = await self._outputs[record.tag]
        return answers.pop(call_id, None)

    async def _read_output(self, record: BatchRecord) -> dict[str, Completion]:
        answers: dict[str, Completion | None] = {}
        try:
            async for call_ids, completions in self._api.answers(record.output_file_id, record.calls_of):
                answers.update(zip(call_ids, completions, strict=True))
        except BatchAPIError as exc:  # the provider deleted it (files expire): the call is sent again
            log.warning(
                "teacher %s: output of batch %s is gone (%s): its unjournaled calls are sent again",
                self.name,
                record.batch_id,
                exc,
            )
            return {}
        return {call_id: c for call_id, c in answers.items() if c is not None and c.ok}

    def _settle(self, batch: _Batch, completion_for) -> None:
        for future in batch.futures.values():
            if not future.done():
                future.set_result(completion_for(batch))
        batch.futures = {}

    def _progress(self, event: str) -> None:
        counts = self._ledger.counts()
        log.info(
            "teacher %s: %s · batches %d submitted, %d running, %d done · %d rows so far, %d failed lines",
            self.name,
            event,
            counts["submitted"],
            counts["running"],
            counts["done"],
            self.answered,
            self.failed_lines,
        )
