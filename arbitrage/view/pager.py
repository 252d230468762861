"""A run folder's dataset as pages of prompts: opened from the parquet footers alone, filtered on
the prompt index (built in the background when the folder opens) and, for text search and check
verdicts, by scanning row groups from a cursor until a page is full or a time budget is spent."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arbitrage.output.dataset import data_files
from arbitrage.view import search
from arbitrage.view.detail import opening_length
from arbitrage.view.index import FACETS, STATUSES, PromptIndex, build, max_turn
from arbitrage.view.tables import RowGroups

log = logging.getLogger(__name__)

SFT_LIST = ("prompt_id", "language", "task", "domain", "persona_id", "teacher_chosen", "score_chosen", "margin")
SFT_LIST += ("router_decision", "n_candidates", "messages", "conversation_id", "turn", "turn_teachers")
REJECTED_LIST = ("prompt_id", "language", "task", "domain", "persona_id", "reason", "prompt", "conversation_id", "turn")
SNIPPET = 240  # characters of the prompt shown in the list
MAX_LIMIT = 500


@dataclass
class Query:
    """What the list shows: facet filters (name → value), then text and check verdicts (scanned)."""

    facets: dict[str, str] = field(default_factory=dict)
    text: str = ""
    check: str = ""  # a check id, e.g. `punctuation:no_comma`
    verdict: str = "fail"  # pass | fail
    on: str = "chosen"  # chosen: the chosen answer's verdict; any: some answer's

    def __post_init__(self):
        known = {*FACETS, "status", "filtered"}
        unknown = [k for k in self.facets if k not in known]
        if unknown:
            raise ValueError(f"unknown filter {unknown[0]!r} — known: {', '.join(sorted(known))}")
        if self.facets.get("status") not in (None, *STATUSES):
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.verdict not in ("pass", "fail") or self.on not in ("chosen", "any"):
            raise ValueError("verdict must be pass|fail and on must be chosen|any")
        self.text = self.text.strip()

    @property
    def scans(self) -> bool:
        return bool(self.text or self.check)

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Query:
        facets = {k: v for k, v in params.items() if k in (*FACETS, "status", "filtered") and v != ""}
        return cls(
            facets, params.get("q", ""), params.get("check", ""), params.get("verdict", "fail"), params.get("on", "chosen")
        )


class RunData:
    """The dataset of one run folder as the card names it (what load_dataset reads)."""

    def __init__(self, run_dir: Path, background: bool = True):
        self.run_dir = Path(run_dir)
        self.paths = {name: self.run_dir / rel for name, rel in data_files(self.run_dir).items()}
        self.tables = {name: RowGroups(path) for name, path in self.paths.items() if path.exists()}
        self.n_sft = self.tables["sft"].num_rows if "sft" in self.tables else 0
        self.n_rejected = self.tables["rejected_rows"].num_rows if "rejected_rows" in self.tables else 0
        self.n = self.n_sft + self.n_rejected
        # from the footers: rows past turn 1 make a multi-turn run, whose rejected rows may be kept
        # conversations' last turns (not list entries of their own)
        self.multi_turn = any(max_turn(self.paths[name]) > 1 for name in ("sft", "rejected_rows") if name in self.tables)
        self._index: PromptIndex | None = None
        self.index_error: str | None = None
        self.index_s: float | None = None
        self._ready = threading.Event()
        if background:
            threading.Thread(target=self._build, name="view-index", daemon=True).start()
        else:
            self._build()

    def _build(self) -> None:
        started = time.perf_counter()
        try:
            self._index = build({k: p for k, p in self.paths.items() if k in self.tables})
        except Exception as exc:  # shown in the page; the unfiltered list still works
            log.exception("view: building the prompt index failed")
            self.index_error = f"{type(exc).__name__}: {exc}"
        self.index_s = round(time.perf_counter() - started, 3)
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def index(self) -> PromptIndex:
        self._ready.wait()
        if self._index is None:
            raise RuntimeError(f"the prompt index could not be built: {self.index_error}")
        return self._index

    def locate(self, position: int) -> tuple[str, int]:
        """(config, row) of a list position."""
        return ("sft", position) if position < self.n_sft else ("rejected_rows", position - self.n_sft)

    def list_rows(self, positions) -> list[dict]:
        positions = np.asarray(positions, dtype=np.int64)
        sft = positions[positions < self.n_sft]
        rejected = positions[positions >= self.n_sft] - self.n_sft
        rows = {}
        if len(sft):
            for pos, r in zip(sft, self.tables["sft"].take(sft, SFT_LIST), strict=True):
                rows[int(pos)] = _sft_row(r)
        if len(rejected):
            for pos, r in zip(rejected, self.tables["rejected_rows"].take(rejected, REJECTED_LIST), strict=True):
                rows[int(pos) + self.n_sft] = _rejected_row(r)
        index = self._index if self.ready else None
        out = []
        for pos in positions.tolist():
            row = {"pos": pos, **rows[pos]}
            if index is not None:
                row["pair"] = bool(index.dpo_row[pos] >= 0)
                row["tie"] = bool(index.tie[pos])
                row["turns"] = int(index.kept[pos])  # a rejected conversation's kept turns come from its candidates
                row["answered"] = int(index.answered[pos])
            out.append(row)
        return out

    def query(self, query: Query, cursor: int = 0, limit: int = 50, budget_s: float = 1.0) -> dict:
        """A page of the list from `cursor` (a position). `next` is where the following page starts
        (None at the end); `total` is the number of matches when known without a full scan."""
        limit = max(1, min(int(limit), MAX_LIMIT))
        cursor = max(0, int(cursor))
        early = not self.ready and (not self.multi_turn or cursor + limit + 1 <= self.n_sft)
        if not query.facets and not query.scans and early:
            # pages before the index is built: every row is an entry, but for a multi-turn run's
            # rejected rows (those of kept conversations are not), so its total is at most this
            hits, total, reached = np.arange(cursor, min(self.n, cursor + limit + 1)), self.n, self.n
        elif not query.facets and not query.scans:
            listed = self.index().listed
            hits, total, reached = cursor + np.flatnonzero(listed[cursor:])[: limit + 1], int(listed.sum()), self.n
        else:
            index = self.index()
            mask = index.mask(query.facets)
            if query.scans:
                hits, reached = search.scan(self, index, mask, query, cursor, limit + 1, budget_s)
                total = None
            else:
                hits, reached = cursor + np.flatnonzero(mask[cursor:])[: limit + 1], self.n
                total = int(mask.sum())
        page, more = hits[:limit], len(hits) > limit
        nxt = int(hits[limit]) if more else (None if reached >= self.n else int(reached))
        return {"rows": self.list_rows(page), "next": nxt, "total": total, "scanned": int(reached), "n": self.n}

    def meta(self) -> dict:
        out = {
            "mode": "dataset",
            "n": self._index.n_listed if self.ready and self._index is not None else self.n,  # list entries
            "counts": {name: t.num_rows for name, t in self.tables.items()},
            "indexed": self.ready and self._index is not None,
            "index_error": self.index_error,
            "index_s": self.index_s,
        }
        if out["indexed"]:
            out["facets"] = self._index.facet_counts()
            out["conversations"] = self._index.multi_turn
        return out


def _snippet(messages: list[dict], turns: int = 1, answered: bool = True) -> str:
    """The opening user message (a conversation is listed by how it starts)."""
    opening = (messages or [])[: opening_length(messages, turns, answered)]
    users = [m["content"] or "" for m in opening if m["role"] == "user"]
    text = users[-1] if users else ""
    return text[:SNIPPET] + ("…" if len(text) > SNIPPET else "")


def _sft_row(r: dict) -> dict:
    return {
        "prompt_id": r["prompt_id"],
        "language": r["language"],
        "task": r["task"],
        "domain": r.get("domain"),
        "persona_id": r["persona_id"],
        "winner": r["teacher_chosen"],
        "score": r["score_chosen"],
        "margin": r.get("margin"),
        "decision": r.get("router_decision"),
        "n_candidates": r.get("n_candidates"),
        "text": _snippet(r["messages"], r.get("turn") or 1, answered=True),
        "reason": None,
        "conversation_id": r.get("conversation_id") or r["prompt_id"],
        "turns": r.get("turn") or 1,
        "turn_teachers": r.get("turn_teachers") or [r["teacher_chosen"]],
        "teachers": " → ".join(r.get("turn_teachers") or [r["teacher_chosen"]]),
    }


def _rejected_row(r: dict) -> dict:
    return {
        "prompt_id": r["prompt_id"],
        "language": r["language"],
        "task": r["task"],
        "domain": r.get("domain"),
        "persona_id": r["persona_id"],
        "winner": None,
        "score": None,
        "margin": None,
        "decision": None,
        "n_candidates": None,
        "text": _snippet(r["prompt"], r.get("turn") or 1, answered=False),
        "reason": r["reason"],
        "conversation_id": r.get("conversation_id") or r["prompt_id"],
        "turn_teachers": [],
        "teachers": None,
    }
