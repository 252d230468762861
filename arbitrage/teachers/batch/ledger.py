"""The batch ledger, `journal/batches.jsonl`: which calls each provider batch carries, written before
the batch exists, so that no crash ever submits a call twice.

One append-only JSONL, fsynced per record. The order of a batch's records makes kill -9 safe:

    prepared (tag, call ids, lines with native n)  →  upload, create with metadata {arbitrage_tag: tag}  →  submitted (batch id)
    → … poll …  →  done (status, output/error file ids, the calls that failed)

A crash before `prepared` lost nothing; between `prepared` and `submitted` the batch may or may not
exist, and the rerun looks it up by its tag (`resolve`, listing the provider's batches) before any
of its calls is sent again; after `submitted` the rerun polls it. A create request that fails
without a clear refusal (a 502 from a gateway that timed out after the provider made the batch) is
the same case: the batch is looked up by its tag, and while it is not found the record stays
unresolved and its calls are not sent again; only `resolve` at the next start abandons it. Answers are journaled in
`calls.jsonl` as they are parsed; a call whose answer was downloaded but not journaled is read again
from the batch's output file, never paid for twice.

A line's `custom_id` is its first call's id. A line that asks for a prompt's samples with native `n`
carries several calls; `prepared` lists them under `shared` (custom_id → call ids), so the rerun
maps each choice back to its call.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from arbitrage.errors import ArbitrageError, disk_error
from arbitrage.runpaths import RunPaths
from arbitrage.teachers.batch.api import BatchAPI, BatchAPIError

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchRecord:
    """What the ledger knows about one batch, by its client-side tag."""

    tag: str
    teacher: str
    calls: list[str]
    prepared_at: float
    batch_id: str | None = None
    input_file_id: str | None = None
    status: str | None = None  # set once terminal
    output_file_id: str | None = None
    error_file_id: str | None = None
    failed: set[str] = field(default_factory=set)  # calls whose line failed (they are free to go again)
    abandoned: bool = False  # prepared, but the provider never created it: its calls are free
    shared: dict[str, list[str]] = field(default_factory=dict)  # custom_id → its line's calls, where several

    def calls_of(self, custom_id: str) -> list[str]:
        """The calls one line carries, in choice order."""
        return self.shared.get(custom_id, [custom_id])

    @property
    def live(self) -> bool:
        """Submitted and not finished: its calls are awaited by polling, never sent again."""
        return self.batch_id is not None and self.status is None

    @property
    def unresolved(self) -> bool:
        """Prepared, with no batch id on record: it may exist at the provider (a crash after create)."""
        return self.batch_id is None and not self.abandoned


class BatchLedger:
    """The batches of one teacher, read from and appended to `journal/batches.jsonl`."""

    def __init__(self, directory: Path, teacher: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = RunPaths.batch_ledger(directory)
        self.teacher = teacher
        self.batches: dict[str, BatchRecord] = {}
        self._carrier: dict[str, str] = {}  # call id → tag of the latest batch that carries it
        if self.path.exists():
            self._load()
        # O_APPEND, one write per record: two batch teachers of a run can share the file.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        offset = 0
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):  # torn by a crash mid-write: the step it guards never ran
                    log.warning("batch ledger: cutting a torn last line from %s", self.path)
                    os.truncate(self.path, offset)  # else the next record would be glued onto it
                    break
                offset += len(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    log.warning("batch ledger %s: skipping a corrupt line", self.path)
                    continue
                if record.get("teacher") == self.teacher:
                    self._apply(record)

    def _apply(self, record: dict) -> None:
        event, tag = record["event"], record["tag"]
        if event == "prepared":
            self.batches[tag] = BatchRecord(
                tag, record["teacher"], record["calls"], record["time"], shared=record.get("shared") or {}
            )
            for call_id in record["calls"]:
                self._carrier[call_id] = tag
            return
        batch = self.batches.get(tag)
        if batch is None:
            return
        if event == "submitted":
            batch.batch_id, batch.input_file_id = record["batch_id"], record.get("input_file_id")
        elif event == "abandoned":
            batch.abandoned = True
        elif event == "done":
            batch.batch_id = batch.batch_id or record.get("batch_id")
            batch.status = record["status"]
            batch.output_file_id, batch.error_file_id = record.get("output_file_id"), record.get("error_file_id")
            batch.failed = set(record.get("failed") or ())

    def _write(self, record: dict) -> None:
        record = {"teacher": self.teacher, **record}
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)  # durable before the step it guards: a batch is never created unrecorded
        except OSError as exc:
            raise disk_error(exc, self.path) from None
        self._apply(record)

    # the steps of a batch ------------------------------------------------------------------------
    def prepared(self, tag: str, calls: Iterable[str], shared: Mapping[str, list[str]] | None = None) -> BatchRecord:
        record = {"event": "prepared", "tag": tag, "time": round(time.time(), 3), "calls": list(calls)}
        self._write(record | ({"shared": dict(shared)} if shared else {}))
        return self.batches[tag]

    def submitted(self, tag: str, batch_id: str, input_file_id: str | None) -> None:
        self._write({"event": "submitted", "tag": tag, "batch_id": batch_id, "input_file_id": input_file_id})

    def abandoned(self, tag: str, why: str) -> None:
        self._write({"event": "abandoned", "tag": tag, "why": why})

    def done(self, tag: str, status: str, output_file_id: str | None, error_file_id: str | None, failed: Iterable[str]) -> None:
        batch = self.batches[tag]
        record = {"event": "done", "tag": tag, "batch_id": batch.batch_id, "status": status}
        record |= {"output_file_id": output_file_id, "error_file_id": error_file_id, "failed": sorted(failed)}
        self._write(record)

    # what the rerun reads ------------------------------------------------------------------------
    def carrier(self, call_id: str) -> BatchRecord | None:
        """The latest batch that carries this call, if any."""
        tag = self._carrier.get(call_id)
        return None if tag is None else self.batches[tag]

    def unresolved(self) -> list[BatchRecord]:
        return [b for b in self.batches.values() if b.unresolved]

    async def resolve(self, api: BatchAPI) -> None:
        """Batches prepared before a crash with no id on record: created or not? Ask the provider."""
        unresolved = self.unresolved()
        if not unresolved:
            return
        since = min(b.prepared_at for b in unresolved) - 300  # clocks differ a little
        try:
            found = await api.find_tagged({b.tag for b in unresolved}, since)
        except BatchAPIError as exc:
            if exc.status not in (404, 405, 501):
                raise ArbitrageError(
                    f"teacher '{self.teacher}': cannot list batches to resume ({exc}) — rerun when it answers"
                ) from None
            log.warning(
                "teacher %s: the server cannot list batches; %d unrecorded batches are sent again", self.teacher, len(unresolved)
            )
            found = {}
        for batch in unresolved:
            if batch.tag in found:
                self.submitted(batch.tag, found[batch.tag]["id"], found[batch.tag].get("input_file_id"))
            else:
                self.abandoned(batch.tag, "not at the provider: never created")

    def counts(self) -> dict[str, int]:
        """Batches submitted (ever), still running, and finished."""
        submitted = [b for b in self.batches.values() if b.batch_id is not None]
        return {
            "submitted": len(submitted),
            "running": sum(b.live for b in submitted),
            "done": sum(b.status is not None for b in submitted),
        }

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
