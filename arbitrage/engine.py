"""Execute Calls against teachers: bounded concurrency per teacher, retries, an append-only journal.

Every finished call — answer or failure — is appended to `journal/calls.jsonl` as it lands, so a
crash loses at most the calls in flight, and a rerun skips every call already answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

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


class Journal:
    """Append-only JSONL of finished calls. The last record of a call id wins."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "calls.jsonl"
        self.records: dict[str, Candidate] = {}
        if self.path.exists():
            self._load()
        self._file = self.path.open("a", encoding="utf-8")
        self._last_sync = time.monotonic()

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            try:
                record = Candidate(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                if i == len(lines) - 1:  # a crash mid-write leaves a torn last line: that call reruns
                    log.warning("journal: ignoring a torn last line in %s", self.path)
                    continue
                raise
            self.records[record.call_id] = record
        # Rewrite without the torn tail so the next append starts on a fresh line.
        with self.path.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in self.records.values())

    def answered(self, call_id: str) -> bool:
        record = self.records.get(call_id)
        return record is not None and record.error is None

    def append(self, candidates: Iterable[Candidate]) -> None:
        for candidate in candidates:
            self.records[candidate.call_id] = candidate
            self._file.write(json.dumps(asdict(candidate), ensure_ascii=False) + "\n")
        self._file.flush()
        if time.monotonic() - self._last_sync > 1.0:  # fsync in batches: durable without a sync per row
            os.fsync(self._file.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


@dataclass
class _Pending:
    call: Call
    attempts: int = 0
    started: float = 0.0


async def _run_teacher(teacher: Teacher, calls: list[Call], journal: Journal, policy: RetryPolicy, bar: tqdm) -> None:
    queue: asyncio.Queue[list[_Pending]] = asyncio.Queue()
    for i in range(0, len(calls), teacher.batch_size):
        queue.put_nowait([_Pending(c) for c in calls[i : i + teacher.batch_size]])
    outstanding = len(calls)
    done = asyncio.Event()
    if outstanding == 0:
        return

    def finish(items: list[Candidate]) -> None:
        nonlocal outstanding
        journal.append(items)
        outstanding -= len(items)
        bar.update(len(items))
        failed = sum(1 for c in items if c.error)
        if failed:
            bar.set_postfix_str(f"failures={sum(1 for r in journal.records.values() if r.error)}", refresh=False)
        if outstanding == 0:
            done.set()

    async def retry_later(item: _Pending, delay: float) -> None:
        await asyncio.sleep(delay)
        queue.put_nowait([item])

    async def worker() -> None:
        while True:
            batch = await queue.get()
            for item in batch:
                item.attempts += 1
                item.started = time.perf_counter()
            try:
                completions = await teacher.complete([item.call.prompt for item in batch])
            except Exception as exc:  # a teacher bug fails its batch as data, never the whole run
                completions = [Completion(text=None, error=f"{type(exc).__name__}: {exc}") for _ in batch]
            finished: list[Candidate] = []
            for item, completion in zip(batch, completions, strict=True):
                latency = time.perf_counter() - item.started
                if not completion.ok and policy.retryable(completion) and item.attempts < policy.max_attempts:
                    asyncio.get_running_loop().create_task(retry_later(item, policy.delay(item.attempts, completion.retry_after)))
                    continue
                finished.append(
                    Candidate(
                        call_id=item.call.call_id,
                        prompt_id=item.call.prompt.prompt_id,
                        teacher=teacher.name,
                        text=completion.text,
                        finish_reason=completion.finish_reason,
                        tokens_in=completion.tokens_in,
                        tokens_out=completion.tokens_out,
                        latency_s=round(latency, 4),
                        attempts=item.attempts,
                        error=completion.error,
                        last_status=completion.status,
                    )
                )
            if finished:
                finish(finished)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, teacher.max_concurrency))]
    try:
        await done.wait()
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def execute(calls: list[Call], teachers: dict[str, Teacher], journal: Journal, policy: RetryPolicy) -> None:
    """Run every call not yet answered in the journal; teachers work concurrently."""
    todo = [c for c in calls if not journal.answered(c.call_id)]
    skipped = len(calls) - len(todo)
    if skipped:
        log.info("resume: %d of %d calls already answered in the journal", skipped, len(calls))
    by_teacher: dict[str, list[Call]] = {name: [] for name in teachers}
    for call in todo:
        by_teacher[call.teacher].append(call)
    with tqdm(total=len(todo), desc="generate", unit="call", disable=not todo) as bar:
        await asyncio.gather(
            *(_run_teacher(teachers[name], group, journal, policy, bar) for name, group in by_teacher.items() if group)
        )
