"""The journal: an append-only JSONL of finished calls, the source of truth for resume.

Every finished call — answer or failure — is appended as it lands and flushed, so a crash loses at
most the calls in flight. Of a call's settled records the last one read wins. A rerun skips every
call an earlier run settled: answered, or failed for good (an empty answer: the same request gets it
again).

A local run appends to `calls.jsonl`; on Ray each actor appends to a shard of its own,
`calls-<shard>.jsonl`, and every journal reads all of them: a call settled in any file is settled,
and a failure in any file (the run's own included) never un-settles it. The order the files are
read in then does not matter: a local run that failed a call, then a Ray actor that answered it,
then a local resume, keeps the answer and sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from arbitrage.errors import ArbitrageError, disk_error
from arbitrage.rows import Candidate
from arbitrage.runpaths import RunPaths

log = logging.getLogger(__name__)


def _key(call_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "little")


def settled(record: dict, retry_failed: bool = False) -> bool:
    """Answered, or a failure that sending again cannot change (unless the user asks to retry it)."""
    if record.get("error") is None and record.get("text"):
        return True
    return bool(record.get("final")) and not retry_failed


class Journal:
    """Only a compact index of what earlier runs settled stays in memory: per call, 8 bytes of id,
    8 of file offset, 2 of teacher and 1 delivered flag. Records are read back from disk by offset
    when the run needs them; calls finished in this run are handed over directly, never looked up.
    """

    def __init__(self, directory: Path, read_only: bool = False, retry_failed: bool = False, shard: str | None = None):
        """`read_only` (for `arbitrage estimate`): never cut a torn line or open for appending, so
        reading beside a live run cannot damage its journal. `retry_failed`: final failures are
        sent again. `shard`: append to `calls-<shard>.jsonl` (one writer per file on Ray)."""
        if not read_only:
            directory.mkdir(parents=True, exist_ok=True)
        self.path = RunPaths.journal_file(directory, shard)
        self.read_only, self.retry_failed = read_only, retry_failed
        self.tokens: dict[str, list[int]] = {}  # teacher → [tokens in, tokens out] over every record, for spend
        self.failed_before = 0  # failures an earlier run left to retry
        self.teacher_names: list[str] = []
        self._keys = np.empty(0, dtype=np.uint64)
        self._offsets = np.empty(0, dtype=np.int64)
        self._files = np.empty(0, dtype=np.uint16)  # which of self.paths holds the record
        self._teachers = np.empty(0, dtype=np.uint16)
        self._delivered = np.empty(0, dtype=bool)
        self._undelivered = np.empty(0, dtype=np.int64)  # per teacher id
        others = [p for p in RunPaths.journal_files(directory) if p != self.path]
        self.paths = [*others, self.path]  # the own file last: of two settled records, its record wins
        self._load()
        # Unbuffered: each batch is one os.write we can undo, with no leftover buffer that a
        # later flush could write after a failure.
        # A shard is created with its first record: actors that answer nothing leave no empty files.
        self._file = None if read_only or shard else self.path.open("ab", buffering=0)
        self._readers: dict[int, object] = {}
        self._last_sync = time.monotonic()
        self.appended = 0

    def _load(self) -> None:
        done: dict[int, tuple[int, int, int]] = {}  # key → (file, offset, teacher id)
        failed: set[int] = set()
        teacher_ids: dict[str, int] = {}
        for file_id, path in enumerate(self.paths):
            if path.exists():
                self._load_file(file_id, path, done, failed, teacher_ids)
        self.failed_before = len(failed)
        self.teacher_names = list(teacher_ids)
        keys = np.fromiter(done.keys(), dtype=np.uint64, count=len(done))
        files = np.fromiter((v[0] for v in done.values()), dtype=np.uint16, count=len(done))
        offsets = np.fromiter((v[1] for v in done.values()), dtype=np.int64, count=len(done))
        teachers = np.fromiter((v[2] for v in done.values()), dtype=np.uint16, count=len(done))
        order = np.argsort(keys)
        self._keys, self._files, self._offsets, self._teachers = keys[order], files[order], offsets[order], teachers[order]
        self._delivered = np.zeros(len(done), dtype=bool)
        self._undelivered = np.bincount(teachers, minlength=len(teacher_ids)).astype(np.int64)

    def _load_file(self, file_id: int, path: Path, done: dict, failed: set, teacher_ids: dict) -> None:
        own = path == self.path
        offset = 0
        with path.open("rb") as f:
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
                            f"{path} line {offset} (byte offset) is corrupt ({exc}) — move the file away to start the run afresh"
                        ) from None
                    record = None
                if record is None or not line.endswith(b"\n"):
                    # A crash mid-write leaves a torn last line: cut it off, and that call reruns.
                    # Another shard's may be a live writer's line in progress: only read up to it.
                    if own and not self.read_only:
                        log.warning("journal: cutting a torn last line from %s", path)
                        os.truncate(path, offset)
                    break
                teacher = record.get("teacher", "?")
                if settled(record, self.retry_failed):
                    done[key] = (file_id, offset, teacher_ids.setdefault(teacher, len(teacher_ids)))
                    failed.discard(key)
                elif key not in done:  # a failure never un-settles a call a file settled
                    failed.add(key)
                used = self.tokens.setdefault(teacher, [0, 0])
                used[0] += int(record.get("tokens_in") or 0)
                used[1] += int(record.get("tokens_out") or 0)
                offset += len(line)
                line = following

    @staticmethod
    def exists(directory: Path) -> bool:
        """A journal with at least one record in it (any shard)."""
        return any(p.stat().st_size for p in RunPaths.journal_files(directory))

    def __len__(self) -> int:
        return len(self._keys)

    def _find(self, call_id: str) -> int | None:
        if not len(self._keys):
            return None
        key = np.uint64(_key(call_id))
        i = int(np.searchsorted(self._keys, key))
        return i if i < len(self._keys) and self._keys[i] == key else None

    def answered(self, call_id: str) -> bool:
        """Settled by an earlier run (this run's answers are delivered, not looked up)."""
        return self._find(call_id) is not None

    def get(self, call_id: str) -> Candidate | None:
        """An earlier run's record of this call, marked delivered; None when it has none."""
        i = self._find(call_id)
        if i is None:
            return None
        if not self._delivered[i]:
            self._delivered[i] = True
            self._undelivered[self._teachers[i]] -= 1
        file_id = int(self._files[i])
        if file_id not in self._readers:
            self._readers[file_id] = self.paths[file_id].open("rb")
        reader = self._readers[file_id]
        reader.seek(int(self._offsets[i]))
        record = Candidate(**json.loads(reader.readline()))
        if record.call_id != call_id:  # two ids alike in 64 bits of hash, or a file rewritten under the run
            log.warning("journal: the record at %s byte %d is call %s, not %s: sent again", self.paths[file_id],
                        int(self._offsets[i]), record.call_id, call_id)  # fmt: skip
            return None
        return record

    def undelivered(self, teachers: Iterable[str]) -> int:
        """Settled calls of these teachers that this run has not read back yet."""
        wanted = set(teachers)
        return int(sum(self._undelivered[i] for i, name in enumerate(self.teacher_names) if name in wanted))

    def records(self) -> Iterator[Candidate]:
        """Every record on disk, last one per call id winning, a settled one over any failure
        (reads every file: tests, tools)."""
        latest: dict[str, Candidate] = {}
        for path in self.paths:
            if not path.exists():
                continue
            with path.open("rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):  # torn (read-only beside a crash or a live run)
                        break
                    record = Candidate(**json.loads(line))
                    before = latest.get(record.call_id)
                    if before is None or not settled(vars(before)) or settled(vars(record)):
                        latest[record.call_id] = record
        return iter(latest.values())

    def append(self, candidates: Iterable[Candidate]) -> None:
        assert not self.read_only, "a read-only journal takes no records"
        data = b"".join((json.dumps(vars(c), ensure_ascii=False) + "\n").encode() for c in candidates)
        if self._file is None:
            self._file = self.path.open("ab", buffering=0)
        end = self._file.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # a raw write may be partial
                view = view[self._file.write(view) :]
        except OSError as exc:
            os.truncate(self.path, end)  # back to whole records: no torn line after a full disk
            self._file.seek(end)
            raise disk_error(exc, self.path) from None
        self.appended += data.count(b"\n")
        if time.monotonic() - self._last_sync > 1.0:  # fsync in batches: durable without a sync per row
            os.fsync(self._file.fileno())
            self._last_sync = time.monotonic()

    def sync(self) -> None:
        if self._file is not None and not self._file.closed and not self.read_only:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self.sync()
            self._file.close()
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
