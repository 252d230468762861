"""The engine: Calls in, finished Calls out, as a stream.

Calls are pulled from a (possibly endless) source only as fast as the teachers take them, so memory
stays flat in the number of prompts. Each teacher has its own bounded queue, `max_concurrency`
workers, optional requests/tokens-per-minute buckets tightened by the server's `x-ratelimit-*`
headers, and retries with full-jitter backoff that honour Retry-After. Every finished call is
journaled as it lands; a call an earlier run settled is read back from the journal, never sent.

One engine serves every stream of a run (the teachers' calls, the prompt writer's, the judge's),
so they share the journal, the budget, the rate limits and the progress bar.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable

from tqdm import tqdm

from arbitrage.cost import Spend, heuristic_tokens, max_prompt_tokens
from arbitrage.engine import streams
from arbitrage.engine.breaker import Breaker, refusal_window
from arbitrage.engine.budget import Budget
from arbitrage.engine.journal import Journal
from arbitrage.engine.policy import RetryPolicy, failure_reason
from arbitrage.engine.ratelimit import RateLimit
from arbitrage.engine.streams import CallQueue, Finished, Pending, Stream, TeacherStats, aiter_calls, bar_interval, unsent
from arbitrage.errors import TeacherUnusable
from arbitrage.rows import Call, Candidate, Completion
from arbitrage.runpaths import RunPaths
from arbitrage.teachers import KeepsLog, Teacher, WaitsElsewhere
from arbitrage.teachers.samples import request_starts

log = logging.getLogger(__name__)


class Engine:
    """`async with Engine(...) as engine:` then `engine.stream(calls)` or `await engine.run(calls)`.

    `stop(reason)` stops sending: requests in flight finish and are journaled, calls waiting for a
    retry are journaled as failures (a rerun retries them), queued calls are left for the rerun. A
    stopped stream still reads every call an earlier run settled back from the journal, so a
    stopped rerun never writes fewer rows than the journal holds. The budget stops the same way.
    """

    def __init__(
        self,
        teachers: dict[str, Teacher],
        journal: Journal,
        policy: RetryPolicy | None = None,
        budget: Budget | None = None,
        progress: bool = False,
        label: str = "calls",
        rate_limits: dict[str, RateLimit] | None = None,  # shared with other engines (Ray: one per cluster)
    ):
        self.teachers, self.journal = teachers, journal
        self.policy = policy or RetryPolicy()
        self.budget = budget or Budget()
        self.stats = {name: TeacherStats() for name in teachers}
        self.spend = Spend({name: teacher.price for name, teacher in teachers.items()})
        self.stop_reason: str | None = None
        self._stopped = asyncio.Event()  # set with stop_reason: long waits give up on it
        self._progress, self._label = progress, label
        self._queues: dict[str, CallQueue[Pending]] = {}
        self._limits: dict[str, RateLimit] = dict(rate_limits or {})
        self._started: dict[str, asyncio.Future] = {}
        self._load_span = [float("inf"), float("-inf")]
        self._tasks: list[asyncio.Task] = []
        self._retrying: dict[asyncio.Task, Pending] = {}
        self._streams: set[Stream] = set()
        self._inflation = dict.fromkeys(teachers, 1.0)  # prompt tokens billed / bound, when a server bills more
        self._out_inflation = dict.fromkeys(teachers, 1.0)  # completion tokens billed / max_tokens, when over
        self._breakers = {
            name: Breaker(refusal_window(teacher.limits.max_concurrency), enabled=self.policy.breaker)
            for name, teacher in teachers.items()
        }
        self.error: BaseException | None = None  # what ended the run early (see fail)
        self._bar: tqdm | None = None
        self._last_postfix = 0.0

    # lifecycle ----------------------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        for name, teacher in self.teachers.items():
            self._queues[name] = CallQueue(maxsize=teacher.limits.queue_size)
            if isinstance(teacher, WaitsElsewhere):  # a batch teacher keeps its batch ledger beside the journal
                teacher.attach_journal(self.journal.path.parent)
            if isinstance(teacher, KeepsLog):  # a server's own log goes in the run folder: logs/<teacher>.log
                teacher.log_to(RunPaths(self.journal.path.parent.parent).log(name))
            limits = teacher.limits
            if (limits.rpm or limits.tpm or limits.from_headers) and name not in self._limits:
                self._limits[name] = RateLimit(limits.rpm, limits.tpm)
            self._tasks += [asyncio.ensure_future(self._worker(name)) for _ in range(limits.max_concurrency)]
        self._bar = tqdm(desc=self._label, unit="call", disable=not self._progress, mininterval=bar_interval(), position=0)
        return self

    async def __aexit__(self, *exc) -> None:
        for task in [*self._tasks, *self._retrying]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._retrying, return_exceptions=True)
        self._retrying.clear()
        if self._bar is not None:
            self._bar.close()
        for teacher in self.teachers.values():
            await teacher.close()

    def finished(self, teachers: Iterable[str]) -> bool:
        """Stopped, and every call an earlier run settled for these teachers has been read back:
        drawing more calls would send nothing and read nothing."""
        return self.stop_reason is not None and not self.journal.undelivered(teachers)

    @property
    def load_s(self) -> float:
        """Wall time from the first engine load to the last (loads overlap generation)."""
        first, last = self._load_span
        return max(0.0, last - first)

    # the streams ------------------------------------------------------------------------------------
    async def stream(self, calls: AsyncIterable[Call] | Iterable[Call]) -> AsyncIterator[list[Finished]]:
        """Send every call the journal has not settled; yield finished calls as they land, in
        batches of whatever finished since the last one. Ends when every call pulled has finished
        (after a stop: every call sent, and every settled one read back)."""
        async for batch in self._stream(calls, Stream(limit=self._stream_room(), fail_unsent=False)):
            yield batch

    async def run(self, calls: Iterable[Call]) -> list[Candidate]:
        """Every call's candidate, in order (for the prompt writer and the judge). A call a stop
        leaves unsent comes back as a failure; it is not journaled, so a rerun sends it."""
        unique = list({c.call_id: c for c in calls}.values())
        by_id = {}
        async for batch in self._stream(unique, Stream(limit=None, fail_unsent=True)):
            by_id.update((f.call.call_id, f.candidate) for f in batch)
        return [by_id[c.call_id] for c in calls]

    def _stream_room(self) -> int:
        return max(256, sum(t.limits.queue_size for t in self.teachers.values()))

    async def _stream(self, calls, stream: Stream) -> AsyncIterator[list[Finished]]:
        self._streams.add(stream)
        feeder = asyncio.ensure_future(self._feed(calls, stream))
        try:
            while True:
                if stream.items:
                    yield stream.take()
                    continue
                if stream.fed_all and stream.outstanding <= 0:
                    return
                stream.ready.clear()
                await stream.ready.wait()
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            self._streams.discard(stream)

    async def _feed(self, calls, stream: Stream) -> None:
        try:
            async for call in aiter_calls(calls):
                stream.teachers.add(call.teacher)
                record = self.journal.get(call.call_id)
                if record is not None:  # settled by an earlier run: read back, not sent
                    self.stats[call.teacher].resumed += 1
                    if record.error is None:
                        self._breakers[call.teacher].answered_before = True
                    self._tick(1)
                    await stream.put(Finished(call, record))
                    continue
                held = None if self.stop_reason is not None else await self._hold(call)
                if held is None:  # stopped (or the budget cannot fit it): left for the rerun
                    await self._leave(call, stream)
                    if not stream.fail_unsent and self.finished(stream.teachers):
                        break  # nothing settled is left to read back: stop drawing calls
                    continue
                stream.outstanding += 1
                await self._queues[call.teacher].put(Pending(call, stream, held))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the source failed (a bad prompt line): finish what is in flight
            self.fail(exc)
        finally:
            stream.fed_all = True
            stream.ready.set()

    async def _hold(self, call: Call) -> float | None:
        """Hold the call's worst case against the budget; None (and a stop) when it can never fit."""
        worst = self._worst(call)
        if worst == 0.0 or await self.budget.hold(worst):
            return worst
        self.stop("budget")
        return None

    def _worst(self, call: Call) -> float:
        """The most a call can cost, as far as this run has seen the teacher's server bill."""
        teacher = self.teachers[call.teacher]
        if self.budget.cap is None or teacher.price is None:
            return 0.0
        tokens_in = max_prompt_tokens(call.prompt.messages) * self._inflation[call.teacher]
        # max_tokens bounds a thinking model's reasoning tokens too (servers count them as completion
        # tokens), unless a server billed more than max_tokens once: then every call holds that much more
        tokens_out = teacher.sampling.max_tokens * self._out_inflation[call.teacher]
        return teacher.price.cost(tokens_in, tokens_out)

    def _hold_more(self, batch: list[Pending]) -> bool:
        """Bring each hold up to the worst case as now known (a server billed over a bound since the
        call was queued); False, and a budget stop, when that no longer fits."""
        for item in batch:
            more = self._worst(item.call) - item.held_usd
            if more > 0:
                if not self.budget.hold_now(more):
                    self.stop("budget")
                    return False
                item.held_usd += more
        return True

    async def _leave(self, call: Call, stream: Stream) -> None:
        self.stats[call.teacher].unsent += 1
        if stream.fail_unsent:
            await stream.put(Finished(call, unsent(call, self.stop_reason)))

    # control --------------------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Graceful stop: no new requests; in-flight ones finish; nothing finished is lost."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self._stopped.set()
        for teacher in self.teachers.values():
            if isinstance(teacher, WaitsElsewhere):  # batches keep running at the provider; a rerun collects them
                teacher.halt(reason)
        for queue in self._queues.values():
            while not queue.empty():
                self._drop(queue.get_nowait())
        waiting = list(self._retrying.items())
        for task, _ in waiting:
            task.cancel()
            self._retrying.pop(task, None)
        if waiting:  # journaled as failures: a rerun retries them
            results = [
                (item, item.last or Completion(None, error="stopped"), f"stopped before retry ({reason})") for _, item in waiting
            ]
            self._tasks.append(asyncio.ensure_future(self._finish_all(results)))
        for stream in self._streams:
            stream.ready.set()

    def _drop(self, item: Pending) -> None:
        """A queued call that a stop leaves unsent."""
        item.handed_on = True
        self.budget.release(item.held_usd)
        item.stream.outstanding -= 1
        self.stats[item.call.teacher].unsent += 1
        if item.stream.fail_unsent:
            item.stream.items.append(Finished(item.call, unsent(item.call, self.stop_reason)))
        item.stream.ready.set()

    # workers ----------------------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The first error that ends a run (a source that fails, a teacher that cannot start): stop
        gracefully — calls in flight finish, settled calls are still read back — and keep it for
        the caller, who writes what is done and then reports it."""
        if self.error is None:
            self.error = exc
            log.debug("engine error", exc_info=exc)
        self.stop(f"error: {exc}")

    async def _start(self, name: str) -> None:
        if name not in self._started:

            async def start(teacher=self.teachers[name]):
                self._load_span[0] = min(self._load_span[0], time.perf_counter())
                await teacher.start()
                self._load_span[1] = max(self._load_span[1], time.perf_counter())

            self._started[name] = asyncio.ensure_future(start())
        await self._started[name]

    async def _worker(self, name: str) -> None:
        teacher, queue = self.teachers[name], self._queues[name]
        while True:
            batch = queue.batch(await queue.get(), teacher.limits.batch_size)
            for item in batch:
                item.handed_on = False
            try:
                await self._serve(name, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a teacher that cannot start, or a bug: stop the run, lose nothing
                self.fail(exc)
                for item in batch:
                    if not item.handed_on:
                        self._drop(item)

    async def _serve(self, name: str, batch: list[Pending]) -> None:
        teacher, stats, limit = self.teachers[name], self.stats[name], self._limits.get(name)
        if self.stop_reason is not None:  # queued before the stop: left for the rerun
            for item in batch:
                self._drop(item)
            return
        await self._start(name)  # a vLLM engine can take minutes to load: the run may stop meanwhile
        if self.stop_reason is not None or not self._hold_more(batch):  # the budget cannot hold them now: left for the rerun
            for item in batch:
                self._drop(item)
            return
        starts_request = request_starts([i.call for i in batch], teacher)  # native n: one request, several calls
        acquired = []
        for item, starts in zip(batch, starts_request, strict=True):
            if limit is None or self.stop_reason is not None:
                break
            item.estimate = heuristic_tokens(item.call.prompt.messages) + teacher.sampling.max_tokens
            if not await self._unless_stopped(limit.acquire(item.estimate, requests=int(starts))):
                break
            acquired.append(item)
        if self.stop_reason is not None:  # stopped during a long wait (an engine load, a rate limit): send nothing
            for item in acquired:
                limit.settle(item.estimate, 0, failed=True)
            for item in batch:
                self._drop(item)
            return
        for item in batch:
            item.attempts += 1
            item.started = item.started or time.perf_counter()
        stats.sent += len(batch)
        t = time.perf_counter()
        try:
            completions = await teacher.complete([item.call for item in batch])
        except Exception as exc:  # a teacher bug fails its batch as data, never the whole run
            completions = [Completion(text=None, error=f"{type(exc).__name__}: {exc}") for _ in batch]
        stats.busy_s += time.perf_counter() - t
        finished = []
        for item, completion, starts in zip(batch, completions, starts_request, strict=True):
            self._account(name, item, completion, limit)
            if starts:  # the breaker counts requests: a native-n request's samples fail together
                self._watch(name, completion, item.call.prompt.prompt_id)
            if not completion.ok and completion.error and self._retry(name, item, completion):
                item.handed_on = True
                continue
            finished.append((item, completion, None))
        if finished:
            await self._finish_all(finished)
        if self.budget.exhausted:
            self.stop("budget")

    async def _unless_stopped(self, wait) -> bool:
        """Await a wait that can be long (a rate limit's); False, the wait given up, when the run stops first."""
        waiting, stopped = asyncio.ensure_future(wait), asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
        if waiting.cancelled():
            return False
        waiting.result()  # a wait that failed raises here
        return self.stop_reason is None

    def _account(self, name: str, item: Pending, completion: Completion, limit: RateLimit | None) -> None:
        stats = self.stats[name]
        stats.tokens_in += completion.tokens_in
        stats.tokens_out += completion.tokens_out
        self.budget.spend(self.spend.add(name, completion.tokens_in, completion.tokens_out) or 0.0)
        bound = max_prompt_tokens(item.call.prompt.messages)
        if completion.tokens_in > bound * self._inflation[name]:  # a server that bills more than any tokenizer can
            self._inflation[name] = completion.tokens_in / bound
            log.warning(
                "teacher %s: billed %d prompt tokens, over the bound %d — holding more per call",
                name,
                completion.tokens_in,
                bound,
            )
        cap = self.teachers[name].sampling.max_tokens
        if completion.tokens_out > cap * self._out_inflation[name]:  # hidden reasoning billed beyond max_tokens
            self._out_inflation[name] = completion.tokens_out / cap
            log.warning(
                "teacher %s: billed %d completion tokens, over max_tokens %d (reasoning the server does not cap?) — "
                "holding more per call",
                name,
                completion.tokens_out,
                cap,
            )
        if limit is not None:
            limit.settle(item.estimate, completion.tokens_in + completion.tokens_out, failed=not completion.ok)
            limit.observe(completion.ratelimit)

    def _watch(self, name: str, completion: Completion, prompt_id: str) -> None:
        if self._breakers[name].observe(completion, prompt_id):
            said = self.teachers[name].diagnose(completion)
            if completion.status == 400:  # it may be the prompts after all: the way to send every one anyway
                said += " (if only these prompts are refused: engine.breaker=false)"
            self.fail(TeacherUnusable(said))

    def _retry(self, name: str, item: Pending, completion: Completion) -> bool:
        if not self.policy.retryable(completion) or item.attempts >= self.policy.max_attempts or self.stop_reason:
            return False
        self.stats[name].retries += 1
        item.last = completion
        task = asyncio.ensure_future(self._retry_later(name, item, self.policy.delay(item.attempts, completion.retry_after)))
        self._retrying[task] = item
        return True

    async def _retry_later(self, name: str, item: Pending, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retrying.pop(asyncio.current_task(), None)
        if self.stop_reason is None:
            await self._queues[name].put(item)
        else:
            self._drop(item)

    async def _finish_all(self, results: list[tuple[Pending, Completion, str | None]]) -> None:
        finished = [self._candidate(item, completion, error) for item, completion, error in results]
        self.journal.append(finished)
        for (item, _, _), candidate in zip(results, finished, strict=True):
            item.handed_on = True
            stats = self.stats[item.call.teacher]
            if candidate.ok:
                stats.ok += 1
            else:
                stats.failed += 1
                stats.failures[failure_reason(candidate.error, candidate.last_status)] += 1
            self.budget.release(item.held_usd)
            await item.stream.put(Finished(item.call, candidate))
            item.stream.outstanding -= 1
            item.stream.ready.set()
        self._tick(len(finished))

    def _candidate(self, item: Pending, completion: Completion, error: str | None) -> Candidate:
        error = error or completion.error
        final = False
        if error is None and not (completion.text or "").strip():
            # The model answered nothing; the same request would get nothing again (same seed). A length
            # cut inside a thinking model's reasoning is one too: no answer, never a winner.
            unusual = completion.finish_reason not in (None, "stop", "length")
            error, final = "empty answer" + (f" (finish_reason {completion.finish_reason})" if unusual else ""), True
            if completion.reasoning and completion.finish_reason == "length":
                error = "empty answer (max_tokens reached while thinking)"
        call = item.call
        return Candidate(
            call_id=call.call_id,
            prompt_id=call.prompt.prompt_id,
            teacher=call.teacher,
            text=completion.text if error is None else None,
            finish_reason=completion.finish_reason,
            tokens_in=completion.tokens_in,
            tokens_out=completion.tokens_out,
            latency_s=round(time.perf_counter() - item.started, 4),
            attempts=item.attempts,
            error=error,
            last_status=completion.status,
            sample=call.sample,
            final=final,
            logprobs=completion.logprobs,
            reasoning=completion.reasoning,
            reasoning_tokens=completion.reasoning_tokens,
        )

    def _tick(self, n: int) -> None:
        if self._bar is None:
            return
        self._bar.update(n)
        now = time.monotonic()
        if now - self._last_postfix > 0.5:
            self._last_postfix = now
            usd = self.budget.total if any(t.price for t in self.teachers.values()) else None
            self._bar.set_postfix_str(streams.bar_postfix(self.stats.values(), usd), refresh=False)
