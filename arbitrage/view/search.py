"""Scanned filters: full-text search and check verdicts, evaluated one row group of prompts at a
time from a cursor, on the prompts the index filters left, until a page is full or the time budget
is spent. Only the text columns of one row group (and its candidates) are in memory at once."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from arbitrage.view.tables import indices

if TYPE_CHECKING:
    from arbitrage.view.index import PromptIndex
    from arbitrage.view.pager import Query, RunData


def check_pattern(check: str, verdict: str) -> str:
    """RE2 pattern for one check's strict verdict inside a score_details JSON (as json.dumps
    writes it: the `checks` object holds only booleans, so `[^}]*` stays inside it)."""
    key = re.escape(json.dumps(check, ensure_ascii=False))
    return r'"checks": \{[^}]*' + key + ": " + ("true" if verdict == "pass" else "false")


def _chunks(run: RunData, cursor: int):
    """[start, stop) position ranges aligned with the row groups of sft, then of rejected_rows."""
    for name, base in (("sft", 0), ("rejected_rows", run.n_sft)):
        table = run.tables.get(name)
        if table is None:
            continue
        for g in range(len(table.bounds) - 1):
            start, stop = base + int(table.bounds[g]), base + int(table.bounds[g + 1])
            if stop > cursor:
                yield name, g, max(start, cursor), stop


def scan(run: RunData, index: PromptIndex, mask: np.ndarray, query: Query, cursor: int, want: int, budget_s: float):
    """Matching positions from `cursor` in list order (at most `want`), and the position the scan
    reached: everything before it has been looked at."""
    deadline = time.perf_counter() + budget_s
    hits: list[np.ndarray] = []
    found = 0
    for name, group, start, stop in _chunks(run, cursor):
        picked = start + np.flatnonzero(mask[start:stop])
        if len(picked):
            keep = _evaluate(run, index, query, name, group, picked)
            hits.append(picked[keep])
            found += int(keep.sum())
        if found >= want or time.perf_counter() > deadline:
            out = np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)
            return out[:want], stop
    out = np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)
    return out[:want], run.n


def _evaluate(run: RunData, index: PromptIndex, query: Query, name: str, group: int, picked: np.ndarray) -> np.ndarray:
    """Which of `picked` (positions inside one row group of `name`) match every scanned filter."""
    table = run.tables[name]
    base = 0 if name == "sft" else run.n_sft
    local = picked - base - int(table.bounds[group])  # rows inside the row group
    keep = np.ones(len(picked), dtype=bool)
    if query.check:
        pattern = check_pattern(query.check, query.verdict)
        if query.on == "chosen" and index.multi_turn:
            # a conversation has a chosen answer per kept turn (a rejected one too, before the turn that failed)
            keep &= _candidate_matches(run, index, picked[keep], "score_details", pattern, regex=True, into=keep, chosen=True)
        elif query.on == "chosen":
            if name == "sft":
                details = table.group(group, ("score_details",)).column("score_details").take(indices(local))
                keep &= _matches(details, pattern, regex=True)
            else:
                keep[:] = False  # a rejected prompt has no chosen answer
        else:
            keep &= _candidate_matches(run, index, picked[keep], "score_details", pattern, regex=True, into=keep)
    if query.text and keep.any():
        needle = query.text
        by_id = pc.starts_with(index.prompt_ids.take(indices(picked)), needle.lower()).to_numpy(zero_copy_only=False)
        by_id |= pc.starts_with(index.conversations.take(indices(picked)), needle.lower()).to_numpy(zero_copy_only=False)
        column = "messages" if name == "sft" else "prompt"
        messages = table.group(group, (column,)).column(column).take(indices(local)).combine_chunks()
        contents = pc.struct_field(pc.list_flatten(messages), "content")
        hit = pc.match_substring(contents, needle, ignore_case=True).fill_null(False).to_numpy(zero_copy_only=False)
        in_prompt = np.zeros(len(picked), dtype=bool)
        parents = pc.list_parent_indices(messages).to_numpy(zero_copy_only=False)
        in_prompt[parents[hit]] = True
        text = by_id | in_prompt
        rest = keep & ~text
        if rest.any():
            text |= _candidate_matches(run, index, picked[rest], "response", needle, regex=False, into=rest)
        keep &= text
    return keep


def _candidate_matches(
    run: RunData, index: PromptIndex, positions, column: str, pattern: str, regex: bool, into, chosen: bool = False
):
    """A bool per slot of `into` (True slots, in order, are `positions`): some candidate of that
    prompt (some chosen one, if `chosen`) matches `pattern` in `column`."""
    out = np.zeros(len(into), dtype=bool)
    table = run.tables.get("candidates")
    if table is None or not len(positions):
        return out
    starts, counts = index.cand_start[positions], index.cand_count[positions]
    has = counts > 0
    if not has.any():
        return out
    lo, hi = int(starts[has].min()), int((starts[has] + counts[has]).max())
    span = table.span(lo, hi, (column, "chosen") if chosen else (column,))
    hit = _matches(span.column(column), pattern, regex)
    if chosen:
        hit &= np.asarray(span.column("chosen").fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    rows = lo + np.flatnonzero(hit)
    matched = np.zeros(len(positions), dtype=bool)
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    slot = np.searchsorted(sorted_starts, rows, side="right") - 1
    ok = slot >= 0
    owner = order[slot[ok]]
    inside = rows[ok] < starts[owner] + counts[owner]
    matched[owner[inside]] = True
    out[np.flatnonzero(into)] = matched
    return out


def _matches(values: pa.ChunkedArray | pa.Array, pattern: str, regex: bool) -> np.ndarray:
    if regex:
        result = pc.match_substring_regex(values, pattern)
    else:
        result = pc.match_substring(values, pattern, ignore_case=True)
    return np.asarray(result.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
