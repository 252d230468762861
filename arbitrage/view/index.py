"""The prompt index of a run folder: one compact row per prompt, built with vectorised column reads.

List order is the dataset's: sft rows in file order (prompts with a chosen answer), then
rejected_rows (prompts without). A position in that order is the viewer's handle on a prompt. The
index keeps per prompt only what the filters and the detail view need to find it again: facet codes,
the chosen score and margin, its DPO rows, where its candidates sit in the candidates file (a run
writes them contiguously, prompt by prompt) and facts read off its candidates (a tie at the top,
which answer filters fired). Text stays in the parquet files; 1M prompts take ~60 MB here.

A multi-turn run (conversation.turns > 1) writes one sft row per conversation kept and one
rejected row at the turn a conversation ended at (kept before it or not): a list entry is then a
conversation, keyed by its `conversation_id`, and a kept conversation's rejected row is not an entry
of its own (it is the conversation's last turn, shown there). Its turns' candidates are contiguous
too (one run of rows per turn), and its DPO rows (one per turn) follow each other in the dpo file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from arbitrage.view.tables import indices

FACETS = ("language", "task", "domain", "persona_id", "winner", "decision", "reason", "turns", "teachers")
TURN_FACETS = ("turns", "teachers")  # shown for multi-turn runs only: turns kept, teachers chosen per turn
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
    # Conversations (a single-turn prompt is a conversation of one turn, its id its prompt id):
    conversations: pa.Array | None = None  # the conversation id per position
    dpo_count: np.ndarray | None = None  # int32, its DPO rows from dpo_row on (one per turn with a pair)
    kept: np.ndarray | None = None  # int16, leading turns with a chosen answer
    answered: np.ndarray | None = None  # int16, turns with candidates (kept, plus the one that failed)
    listed: np.ndarray | None = None  # bool: a list entry (False: a kept conversation's rejected last turn)
    ending: np.ndarray | None = None  # int32, a kept conversation's rejected row (its position; -1: none)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_listed(self) -> int:
        return int(np.count_nonzero(self.listed))

    @property
    def multi_turn(self) -> bool:
        return bool(len(self) and max(int(self.answered.max()), int(self.kept.max())) > 1)

    def position(self, key: str) -> int | None:
        """The list position of a prompt id, or of a conversation id (a conversation's row carries
        its last turn's prompt id; a link may name either)."""
        hits = np.flatnonzero(pc.equal(self.prompt_ids, key).to_numpy(zero_copy_only=False))
        if len(hits) and self.listed[hits[0]]:
            return int(hits[0])
        if len(hits):  # the turn a kept conversation ended at: the conversation's entry
            key = self.conversations[int(hits[0])].as_py()
        hits = np.flatnonzero(pc.equal(self.conversations, key).to_numpy(zero_copy_only=False))
        return int(hits[0]) if len(hits) else None  # sft rows come first: a kept conversation's entry

    def facet_counts(self) -> dict:
        hidden = () if self.multi_turn else TURN_FACETS
        listed = self.listed
        out = {name: Facet(f.values, f.codes[listed]).counts() for name, f in self.facets.items() if name not in hidden}
        bits = self.filtered_bits[listed]
        out["filtered"] = {k: int(np.count_nonzero(bits & (1 << i))) for i, k in enumerate(self.filtered_kinds)}
        out["status"] = {s: int(np.count_nonzero(self.status_mask(s) & listed)) for s in STATUSES}
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
        keep = self.listed.copy()
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
    # Every answered turn of a conversation is in a row (sft, or rejected at the turn it ended at):
    # rows all at turn 1 make a single-turn run, whose conversation ids are its prompt ids.
    multi = any(max_turn(files.get(name)) > 1 for name in ("sft", "rejected_rows"))
    base = ["prompt_id", "language", "task", "domain", "persona_id", "turn", *(["conversation_id"] if multi else [])]
    sft = _read(files.get("sft"), [*base, "teacher_chosen", "router_decision", "score_chosen", "margin", "turn_teachers"])
    rejected = _read(files.get("rejected_rows"), [*base, "reason"])
    n_sft = sft.num_rows if sft is not None else 0
    n_rejected = rejected.num_rows if rejected is not None else 0
    n = n_sft + n_rejected
    ids = pa.chunked_array([*_column(sft, "prompt_id").chunks, *_column(rejected, "prompt_id").chunks], pa.string())
    prompt_ids = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.string())
    conversations = prompt_ids  # a single-turn prompt is its own conversation
    if multi:  # (a run from before conversations has no conversation_id)
        parts = [*_column(sft, "conversation_id").chunks, *_column(rejected, "conversation_id").chunks]
        conversations = pc.coalesce(pa.chunked_array(parts, pa.string()), ids).combine_chunks()
    # an sft row holds `turn` assistant turns; a rejected row's count comes from its candidates below
    listed, ending = np.ones(n, dtype=bool), np.full(n, -1, dtype=np.int32)
    if multi and n_sft and n_rejected:  # a kept conversation's rejected row: the turn it ended at, not an entry
        where = pc.index_in(conversations.slice(n_sft), value_set=conversations.slice(0, n_sft))
        where = where.to_numpy(zero_copy_only=False).astype(np.float64)
        found = np.flatnonzero(~np.isnan(where))
        listed[n_sft + found] = False
        ending[where[found].astype(np.int64)] = n_sft + found
    kept = np.concatenate([_ints(_column(sft, "turn"), n_sft, 1), np.zeros(n_rejected, np.int16)])
    none = pa.chunked_array([pa.nulls(n_rejected, pa.string())])
    reason_kind = pc.replace_substring_regex(_column(rejected, "reason"), r"(?s)\s*\(.*$", "")
    facets = {name: _facet(_column(sft, name), _column(rejected, name)) for name in ("language", "task", "domain", "persona_id")}
    for name, column in SFT_COLUMNS.items():
        facets[name] = _facet(_column(sft, column), none)
    facets["reason"] = _facet(pa.chunked_array([pa.nulls(n_sft, pa.string())]), reason_kind)
    path = _column(sft, "turn_teachers")
    if multi and len(path) and pa.types.is_list(path.type):
        facets["teachers"] = _facet(pc.binary_join(path, " → "), none)
    else:
        facets["teachers"] = Facet([], np.full(n, -1, dtype=np.int32))
    score = np.concatenate([_floats(_column(sft, "score_chosen"), n_sft), np.full(n_rejected, np.nan, np.float32)])
    margin = np.concatenate([_floats(_column(sft, "margin"), n_sft), np.full(n_rejected, np.nan, np.float32)])
    del sft, rejected

    dpo_row, dpo_count = np.full(n, -1, dtype=np.int32), np.zeros(n, dtype=np.int32)
    if files.get("dpo") is not None and n_sft:
        dpo = _read(files["dpo"], ["prompt_id", *(["conversation_id"] if multi else [])])
        dpo_keys = pc.coalesce(_column(dpo, "conversation_id"), dpo.column("prompt_id")) if multi else dpo.column("prompt_id")
        where = pc.index_in(dpo_keys.combine_chunks(), value_set=conversations.slice(0, n_sft)).to_numpy(zero_copy_only=False)
        found = ~np.isnan(where.astype(np.float64))
        owners, rows = where[found].astype(np.int64), np.flatnonzero(found).astype(np.int32)
        if multi:  # a conversation's rows, one per turn with a pair: the first and how many
            first = np.full(n, np.iinfo(np.int32).max, dtype=np.int32)
            np.minimum.at(first, owners, rows)
            np.add.at(dpo_count, owners, 1)
            dpo_row = np.where(dpo_count > 0, first, -1).astype(np.int32)
        else:
            dpo_row[owners], dpo_count[owners] = rows, 1

    index = PromptIndex(
        n_sft, prompt_ids, facets, score, margin, dpo_row,
        np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int32), np.zeros(n, dtype=bool),
        [], np.zeros(n, dtype=np.int64), conversations, dpo_count, kept, np.zeros(n, dtype=np.int16), listed, ending,
    )  # fmt: skip
    if files.get("candidates") is not None and n:
        _read_candidates(files["candidates"], index, multi)
    index.facets["turns"] = _count_facet(index.kept)
    return index


def max_turn(path: Path | None) -> int:
    """The highest `turn` of a file, from its row groups' statistics where written (else the column)."""
    if path is None or "turn" not in pq.read_schema(path).names:
        return 1
    file = pq.ParquetFile(path)
    schema = file.metadata.schema  # statistics are per leaf column: a nested column has several
    column = next(i for i in range(len(schema)) if schema.column(i).path == "turn")
    highest = 1
    for g in range(file.metadata.num_row_groups):
        stats = file.metadata.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max:
            return int(pc.max(file.read(columns=["turn"]).column("turn")).as_py() or 1)
        highest = max(highest, int(stats.max))
    return highest


def _ints(column: pa.ChunkedArray, n: int, missing: int) -> np.ndarray:
    if len(column) == 0 or pa.types.is_null(column.type) or pa.types.is_string(column.type):
        return np.full(n, missing, dtype=np.int16)
    return column.fill_null(missing).to_numpy().astype(np.int16)


def _count_facet(counts: np.ndarray) -> Facet:
    """A facet over small counts (turns kept): its values are the counts as text, in order."""
    values, codes = np.unique(counts, return_inverse=True)
    return Facet([str(int(v)) for v in values], codes.astype(np.int32).reshape(-1))


class _Runs:
    """Per prompt run of candidate rows (one turn of a conversation): where it starts, how long it
    is, its conversation, and its aggregates."""

    def __init__(self):
        self.ids: list[pa.Array] = []
        self.starts, self.counts, self.ties, self.bits, self.chosen = [], [], [], [], []
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
        if "chosen" in batch.schema.names:  # read for conversations only: a rejected one's kept turns
            chosen = batch.column("chosen").slice(0, end).fill_null(False).to_numpy(zero_copy_only=False)
            self.chosen.append(np.logical_or.reduceat(chosen, starts))
        # the run's conversation: its conversation_id (runs from before conversations: its prompt id)
        key = ids if "conversation_id" not in batch.schema.names else pc.coalesce(batch.column("conversation_id"), ids)
        self.ids.append(key.take(indices(starts)))
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


def _read_candidates(path: Path, index: PromptIndex, by_conversation: bool) -> None:
    """One pass over the candidates' prompt_id, score and filtered columns (and, `by_conversation`,
    conversation_id and chosen), batch by batch; a run of rows cut by a batch boundary is carried
    into the next batch."""
    runs = _Runs()
    offset, carry = 0, None
    file = _open(path)
    wanted = ("prompt_id", "score", "filtered", *(("chosen", "conversation_id") if by_conversation else ()))
    columns = [c for c in wanted if c in file.schema_arrow.names]
    for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        batch = pa.Table.from_batches([carry, batch]).combine_chunks().to_batches()[0] if carry is not None else batch
        used = runs.add(batch, offset, complete=False)
        offset += used
        carry = batch.slice(used)
    if carry is not None and carry.num_rows:
        runs.add(carry, offset, complete=True)
    if not runs.ids:
        return
    # A conversation's turns are consecutive runs with the same key: one span of rows per conversation.
    keys = pa.concat_arrays(runs.ids)
    starts, counts, ties, bits = (np.concatenate(x) for x in (runs.starts, runs.counts, runs.ties, runs.bits))
    if by_conversation and len(keys) > 1:
        first = np.ones(len(keys), dtype=bool)
        first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).fill_null(True).to_numpy(zero_copy_only=False)
        heads = np.flatnonzero(first)
        keys, starts, answered = keys.take(indices(heads)), starts[heads], np.diff(np.append(heads, len(keys)))
        counts, ties = np.add.reduceat(counts, heads), np.logical_or.reduceat(ties, heads)  # a tie at some turn
        bits, chosen = np.bitwise_or.reduceat(bits, heads), np.add.reduceat(np.concatenate(runs.chosen).astype(np.int16), heads)
    else:  # one turn per prompt: a run is a conversation
        answered, chosen = np.ones(len(keys), dtype=np.int16), None
    where = pc.index_in(keys, value_set=index.conversations).to_numpy(zero_copy_only=False).astype(np.float64)
    found = ~np.isnan(where)
    positions = where[found].astype(np.int64)
    index.cand_start[positions] = starts[found]
    index.cand_count[positions] = counts[found]
    index.tie[positions] = ties[found]
    index.filtered_bits[positions] = bits[found]
    index.answered[positions] = answered[found]
    if chosen is not None:  # an sft row says how many turns it keeps; a rejected one, its candidates
        rejected = positions >= index.n_sft
        index.kept[positions[rejected]] = chosen[found][rejected]
    kinds = sorted(runs.kinds, key=runs.kinds.get)
    index.filtered_kinds = kinds[: MAX_KINDS - 1] + (["other"] if len(kinds) >= MAX_KINDS else [])
