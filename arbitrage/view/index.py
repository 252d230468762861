"""The prompt index of a run folder: one compact row per prompt, built with vectorised column reads.

List order is the dataset's: sft rows in file order (prompts with a chosen answer), then
rejected_rows (prompts without). A position in that order is the viewer's handle on a prompt. The
index keeps per prompt only what the filters and the detail view need to find it again: facet codes,
the chosen score and margin, its DPO row, where its candidates sit in the candidates file (a run
writes them contiguously, prompt by prompt) and two facts read off its candidates (a tie at the top,
which answer filters fired). Text stays in the parquet files; 1M prompts take ~60 MB here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from arbitrage.view.tables import indices

FACETS = ("language", "task", "domain", "persona_id", "winner", "decision", "reason")
SFT_COLUMNS = {"winner": "teacher_chosen", "decision": "router_decision"}
STATUSES = ("pair", "no_pair", "rejected", "tie")
MAX_KINDS = 63  # answer-filter kinds fit one int64 bitmask; more are folded into the last bit
BATCH_ROWS = 1 << 18


@dataclass
class Facet:
    """A dictionary-encoded column: codes index `values`; -1 is no value."""

    values: list[str]
    codes: np.ndarray

    def counts(self) -> dict[str, int]:
        valid = self.codes[self.codes >= 0]
        tally = np.bincount(valid, minlength=len(self.values)) if len(valid) else np.zeros(len(self.values), dtype=int)
        return {v: int(n) for v, n in sorted(zip(self.values, tally, strict=True), key=lambda x: -x[1]) if n}


@dataclass
class PromptIndex:
    n_sft: int
    prompt_ids: pa.Array
    facets: dict[str, Facet]
    score: np.ndarray  # float32, the chosen answer's score (NaN: no chosen answer)
    margin: np.ndarray  # float32, the DPO pair's margin (NaN: no pair)
    dpo_row: np.ndarray  # int32, the prompt's row in the dpo file (-1: none)
    cand_start: np.ndarray  # int64, first candidates row of the prompt (-1: none)
    cand_count: np.ndarray  # int32
    tie: np.ndarray  # bool: two or more choosable answers share the best score (the tie-break decided)
    filtered_kinds: list[str] = field(default_factory=list)
    filtered_bits: np.ndarray | None = None  # int64, bit k: an answer was kept from being chosen by kind k

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def position(self, prompt_id: str) -> int | None:
        hits = np.flatnonzero(pc.equal(self.prompt_ids, prompt_id).to_numpy(zero_copy_only=False))
        return int(hits[0]) if len(hits) else None

    def facet_counts(self) -> dict:
        out = {name: f.counts() for name, f in self.facets.items()}
        bits = self.filtered_bits
        out["filtered"] = {k: int(np.count_nonzero(bits & (1 << i))) for i, k in enumerate(self.filtered_kinds)}
        out["status"] = {s: int(np.count_nonzero(self.status_mask(s))) for s in STATUSES}
        return out

    def status_mask(self, status: str) -> np.ndarray:
        rejected = np.arange(len(self)) >= self.n_sft
        if status == "rejected":
            return rejected
        if status == "pair":
            return self.dpo_row >= 0
        if status == "no_pair":
            return ~rejected & (self.dpo_row < 0)
        if status == "tie":
            return self.tie
        raise ValueError(f"unknown status {status!r} — known: {', '.join(STATUSES)}")

    def mask(self, filters: dict[str, str]) -> np.ndarray:
        """Prompts that pass every facet filter (name → value); unknown values match nothing."""
        keep = np.ones(len(self), dtype=bool)
        for name, value in filters.items():
            if name in self.facets:
                facet = self.facets[name]
                code = facet.values.index(value) if value in facet.values else -2
                keep &= facet.codes == code
            elif name == "status":
                keep &= self.status_mask(value)
            elif name == "filtered":
                bit = self.filtered_kinds.index(value) if value in self.filtered_kinds else None
                keep &= False if bit is None else (self.filtered_bits & (1 << bit)) != 0
            else:
                raise ValueError(f"unknown filter {name!r}")
        return keep


# Low-cardinality strings are read as parquet stores them, dictionary-encoded: no per-row string.
DICTIONARY_COLUMNS = ["language", "task", "domain", "persona_id", "teacher_chosen", "router_decision", "filtered"]


def _open(path: Path) -> pq.ParquetFile:
    # ParquetFile, not pq.read_table: that imports pyarrow.dataset (and pandas), ~1 s.
    names = pq.read_schema(path).names
    return pq.ParquetFile(path, read_dictionary=[c for c in DICTIONARY_COLUMNS if c in names])


def _read(path: Path | None, columns: list[str]) -> pa.Table | None:
    if path is None:
        return None
    file = _open(path)
    present = [c for c in columns if c in file.schema_arrow.names]  # older runs lack some provenance columns
    return file.read(columns=present)


def _column(table: pa.Table | None, name: str) -> pa.ChunkedArray:
    if table is None:
        return pa.chunked_array([], pa.string())
    if name not in table.column_names:
        return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    return table.column(name)


def _encoded(chunk: pa.Array) -> pa.DictionaryArray:
    return chunk if pa.types.is_dictionary(chunk.type) else chunk.cast(pa.string()).dictionary_encode()


def _facet(*parts: pa.ChunkedArray) -> Facet:
    """One code space over several columns: each chunk's small dictionary is mapped, not its rows."""
    values: dict[str, int] = {}
    codes = []
    for part in parts:
        if not len(part):
            continue
        # one array per part (row groups' dictionaries unified): per-chunk calls cost more than the work
        for chunk in [part.combine_chunks()]:
            encoded = _encoded(chunk)
            lookup = np.array([values.setdefault(v, len(values)) for v in encoded.dictionary.to_pylist()] + [-1], dtype=np.int32)
            indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            codes.append(lookup[indices])
    return Facet(list(values), np.concatenate(codes) if codes else np.zeros(0, dtype=np.int32))


def _floats(column: pa.ChunkedArray, n: int) -> np.ndarray:
    if len(column) == 0:
        return np.full(n, np.nan, dtype=np.float32)
    return column.cast(pa.float32()).fill_null(np.nan).to_numpy().astype(np.float32)


def build(files: dict[str, Path]) -> PromptIndex:
    """The index of a dataset folder's files (config → path; a config without rows is absent)."""
    base = ["prompt_id", "language", "task", "domain", "persona_id"]
    sft = _read(files.get("sft"), [*base, "teacher_chosen", "router_decision", "score_chosen", "margin"])
    rejected = _read(files.get("rejected_rows"), [*base, "reason"])
    n_sft = sft.num_rows if sft is not None else 0
    n_rejected = rejected.num_rows if rejected is not None else 0
    n = n_sft + n_rejected
    ids = pa.chunked_array([*_column(sft, "prompt_id").chunks, *_column(rejected, "prompt_id").chunks], pa.string())
    prompt_ids = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.string())
    none = pa.chunked_array([pa.nulls(n_rejected, pa.string())])
    reason_kind = pc.replace_substring_regex(_column(rejected, "reason"), r"(?s)\s*\(.*$", "")
    facets = {name: _facet(_column(sft, name), _column(rejected, name)) for name in ("language", "task", "domain", "persona_id")}
    for name, column in SFT_COLUMNS.items():
        facets[name] = _facet(_column(sft, column), none)
    facets["reason"] = _facet(pa.chunked_array([pa.nulls(n_sft, pa.string())]), reason_kind)
    score = np.concatenate([_floats(_column(sft, "score_chosen"), n_sft), np.full(n_rejected, np.nan, np.float32)])
    margin = np.concatenate([_floats(_column(sft, "margin"), n_sft), np.full(n_rejected, np.nan, np.float32)])
    del sft, rejected

    dpo_row = np.full(n, -1, dtype=np.int32)
    if files.get("dpo") is not None and n_sft:
        dpo_ids = _open(files["dpo"]).read(columns=["prompt_id"]).column("prompt_id").combine_chunks()
        where = pc.index_in(dpo_ids, value_set=prompt_ids.slice(0, n_sft)).to_numpy(zero_copy_only=False)
        found = ~np.isnan(where.astype(np.float64))
        dpo_row[where[found].astype(np.int64)] = np.flatnonzero(found).astype(np.int32)

    index = PromptIndex(
        n_sft, prompt_ids, facets, score, margin, dpo_row,
        np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int32), np.zeros(n, dtype=bool),
        [], np.zeros(n, dtype=np.int64),
    )  # fmt: skip
    if files.get("candidates") is not None and n:
        _read_candidates(files["candidates"], index)
    return index


class _Runs:
    """Per prompt run of candidate rows: where it starts, how long it is, and its aggregates."""

    def __init__(self):
        self.ids: list[pa.Array] = []
        self.starts, self.counts, self.ties, self.bits = [], [], [], []
        self.kinds: dict[str, int] = {}

    def add(self, batch: pa.RecordBatch, offset: int, complete: bool) -> int:
        """Aggregate the whole runs of `batch` (all of them if `complete`); returns rows consumed."""
        ids = batch.column("prompt_id")
        n = len(ids)
        change = np.ones(n, dtype=bool)
        if n > 1:
            change[1:] = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).fill_null(True).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(change)
        end = n if complete else int(starts[-1])
        starts = starts[starts < end]
        if not len(starts):
            return 0
        counts = np.diff(np.append(starts, end))
        score = batch.column("score").slice(0, end).fill_null(np.nan).to_numpy(zero_copy_only=False)
        has = "filtered" in batch.schema.names  # runs before the answer filters lack the column
        filtered = batch.column("filtered").slice(0, end) if has else pa.nulls(end, pa.string())
        choosable = ~np.isnan(score) & filtered.is_null().to_numpy(zero_copy_only=False)
        best = np.maximum.reduceat(np.where(choosable, score, -np.inf), starts)
        at_best = choosable & (score >= np.repeat(best, counts) - 1e-9)
        self.ties.append(np.add.reduceat(at_best, starts) >= 2)
        self.bits.append(np.bitwise_or.reduceat(self._kind_bits(filtered), starts))
        self.ids.append(ids.take(indices(starts)))
        self.starts.append(offset + starts)
        self.counts.append(counts)
        return end

    def _kind_bits(self, filtered: pa.Array) -> np.ndarray:
        """Bit k per row: its answer was filtered by kind k (the reason up to its first `:` or `(`)."""
        encoded = _encoded(filtered)
        kinds = pc.replace_substring_regex(encoded.dictionary, r"(?s)\s*[:(].*$", "").to_pylist()
        lookup = np.array([min(self.kinds.setdefault(k, len(self.kinds)), MAX_KINDS - 1) for k in kinds] + [-1])
        bit = lookup[encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)]
        return np.where(bit >= 0, np.left_shift(np.int64(1), np.maximum(bit, 0)), 0).astype(np.int64)


def _read_candidates(path: Path, index: PromptIndex) -> None:
    """One pass over the candidates' prompt_id, score and filtered columns, batch by batch; a run
    of rows cut by a batch boundary is carried into the next batch."""
    runs = _Runs()
    offset, carry = 0, None
    file = _open(path)
    columns = [c for c in ("prompt_id", "score", "filtered") if c in file.schema_arrow.names]
    for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        batch = pa.Table.from_batches([carry, batch]).combine_chunks().to_batches()[0] if carry is not None else batch
        used = runs.add(batch, offset, complete=False)
        offset += used
        carry = batch.slice(used)
    if carry is not None and carry.num_rows:
        runs.add(carry, offset, complete=True)
    if not runs.ids:
        return
    run_ids = pa.concat_arrays(runs.ids)
    where = pc.index_in(run_ids, value_set=index.prompt_ids).to_numpy(zero_copy_only=False).astype(np.float64)
    found = ~np.isnan(where)
    positions = where[found].astype(np.int64)
    index.cand_start[positions] = np.concatenate(runs.starts)[found]
    index.cand_count[positions] = np.concatenate(runs.counts)[found]
    index.tie[positions] = np.concatenate(runs.ties)[found]
    index.filtered_bits[positions] = np.concatenate(runs.bits)[found]
    kinds = sorted(runs.kinds, key=runs.kinds.get)
    index.filtered_kinds = kinds[: MAX_KINDS - 1] + (["other"] if len(kinds) >= MAX_KINDS else [])
