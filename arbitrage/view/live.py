"""A run still going: its journal (append-only JSONL of finished calls) read incrementally.

Before a run writes its dataset the journal is all there is: the answers so far, per prompt, and
per-teacher counts. Each request reads only the bytes appended since the last one; per call the
view keeps 16 bytes (a prompt key and a file offset), never the text.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from arbitrage.runpaths import RunPaths

SNIPPET = 240


def _key(prompt_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(prompt_id.encode(), digest_size=8).digest(), "little")


class JournalView:
    def __init__(self, run_dir: Path):
        self.directory = RunPaths(run_dir).journal
        self.files: list[Path] = []  # the run's journal file, or one shard per actor on Ray
        self.read_to: list[int] = []  # bytes parsed per file: whole lines only (a line being written waits)
        self._keys = np.empty(0, dtype=np.uint64)
        self._offsets = np.empty(0, dtype=np.int64)
        self._file_ids = np.empty(0, dtype=np.uint16)
        self._order: np.ndarray | None = None  # prompt keys in order of first appearance, cached
        self.teachers: dict[str, Counter] = {}
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return bool(RunPaths.journal_files(self.directory))

    def refresh(self) -> None:
        if not self.directory.is_dir():
            return
        with self._lock:
            for path in RunPaths.journal_files(self.directory):
                if path not in self.files:
                    self.files.append(path)
                    self.read_to.append(0)
            for file_id, path in enumerate(self.files):
                self._read(file_id, path)

    def _read(self, file_id: int, path: Path) -> None:
        with path.open("rb") as f:
            f.seek(self.read_to[file_id])
            keys, offsets, offset = [], [], self.read_to[file_id]
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    offset += len(line)
                    continue
                keys.append(_key(str(record.get("prompt_id"))))
                offsets.append(offset)
                self._count(record)
                offset += len(line)
            if keys:
                self._keys = np.concatenate([self._keys, np.array(keys, dtype=np.uint64)])
                self._offsets = np.concatenate([self._offsets, np.array(offsets, dtype=np.int64)])
                self._file_ids = np.concatenate([self._file_ids, np.full(len(keys), file_id, dtype=np.uint16)])
                self._order = None
            self.read_to[file_id] = offset

    def _count(self, record: dict) -> None:
        tally = self.teachers.setdefault(str(record.get("teacher")), Counter())
        ok = record.get("error") is None and bool((record.get("text") or "").strip())
        tally["calls"] += 1
        tally["failed"] += not ok
        tally["tokens_in"] += int(record.get("tokens_in") or 0)
        tally["tokens_out"] += int(record.get("tokens_out") or 0)
        tally["latency_ms"] += int(1000 * (record.get("latency_s") or 0))

    @property
    def calls(self) -> int:
        return len(self._keys)

    def order(self) -> np.ndarray:
        if self._order is None:
            _, first = np.unique(self._keys, return_index=True)
            self._order = np.sort(first)  # the first record of each prompt, in journal order
        return self._order

    def _records(self, rows) -> list[dict]:
        """Records by their number in this view (file and offset), in the order given."""
        handles: dict[int, object] = {}
        out = []
        try:
            for row in rows:
                file_id = int(self._file_ids[row])
                f = handles.get(file_id) or handles.setdefault(file_id, self.files[file_id].open("rb"))
                f.seek(int(self._offsets[row]))
                out.append(json.loads(f.readline()))
        finally:
            for f in handles.values():
                f.close()
        return out

    def page(self, cursor: int, limit: int) -> dict:
        self.refresh()
        first = self.order()
        picked = first[cursor : cursor + limit]
        rows = []
        for pos, record in zip(range(cursor, cursor + len(picked)), self._records(picked), strict=True):
            calls = self._keys == self._keys[first[pos]]
            text = record.get("text") or record.get("error") or ""
            rows.append(
                {
                    "pos": pos,
                    "prompt_id": record.get("prompt_id"),
                    "winner": None,
                    "n_candidates": int(calls.sum()),
                    "text": text[:SNIPPET] + ("…" if len(text) > SNIPPET else ""),
                }
            )
        nxt = cursor + limit if cursor + limit < len(first) else None
        return {"rows": rows, "next": nxt, "total": int(len(first)), "scanned": len(first), "n": int(len(first))}

    def position(self, prompt_id: str) -> int | None:
        hits = np.flatnonzero(self._keys[self.order()] == np.uint64(_key(prompt_id)))
        return int(hits[0]) if len(hits) else None

    def describe(self, position: int) -> dict:
        """A prompt's answers so far: the last record per call id wins, as in a resume."""
        self.refresh()
        key = self._keys[self.order()[position]]
        latest = {r["call_id"]: r for r in self._records(np.flatnonzero(self._keys == key))}
        candidates = [
            {
                "teacher": r.get("teacher"),
                "sample": r.get("sample") or 0,
                "call_id": r.get("call_id"),
                "response": r.get("text"),
                "finish_reason": r.get("finish_reason"),
                "tokens_in": r.get("tokens_in"),
                "tokens_out": r.get("tokens_out"),
                "latency_s": r.get("latency_s"),
                "attempts": r.get("attempts"),
                "error": r.get("error"),
                "last_status": r.get("last_status"),
                "score": None,
                "checks": [],
                "scorer": {},
                "filtered": None,
                "chosen": False,
                "rejected": False,
                "usd": None,
            }
            for r in sorted(latest.values(), key=lambda r: (str(r.get("teacher")), r.get("sample") or 0))
        ]
        prompt_id = next(iter(latest.values())).get("prompt_id") if latest else None
        return {
            "pos": position,
            "prompt_id": prompt_id,
            "status": "live",
            "messages": [],
            "constraints": [],
            "candidates": candidates,
            "explain": ["The run is still going: answers so far, from the journal (scores come when the prompt is written)."],
        }

    def stats(self) -> dict:
        self.refresh()
        teachers = {}
        for name, t in self.teachers.items():
            teachers[name] = {**{k: t[k] for k in ("calls", "failed", "tokens_in", "tokens_out")}}
            teachers[name]["mean_latency_s"] = round(t["latency_ms"] / 1000 / t["calls"], 3) if t["calls"] else None
        return {"calls": self.calls, "prompts": int(len(self.order())), "teachers": teachers}
