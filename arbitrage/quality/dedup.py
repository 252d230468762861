"""Dedup and decontamination filters (the quality stage, see filters.py): exact, near (MinHash
LSH) and n-gram overlap with evaluation sets. Each keeps its state across the chunks a run streams
through it, so a duplicate is caught however far apart the two items are."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arbitrage.errors import ConfigError
from arbitrage.quality.base import checked, text_of
from arbitrage.quality.text import normalise, normalised_words
from arbitrage.settings import number


class ExactDedup:
    """Drops items whose normalised text was already seen (the first one stays)."""

    name = "exact_dedup"

    def __init__(self, stage: str = "prompt", field: str = "prompt", name: str | None = None):
        self.name = name or self.name
        self.stage, self.field = checked(self.name, stage, field)
        self._seen: dict[int, int] = {}  # text hash → the item number that kept it
        self._count = 0

    def check(self) -> None:
        return None

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        """Stateful across calls: a run streams its items through in chunks."""
        dropped = {}
        for i, item in enumerate(items):
            key = int(hashlib.sha256(normalise(text_of(item, self.field)).encode()).hexdigest()[:16], 16)
            if key in self._seen:
                dropped[i] = f"{self.name}: same {self.field} text as item {self._seen[key]}"
            else:
                self._seen[key] = self._count + i
        self._count += len(items)
        return dropped


def shingles(text: str, size: int) -> set[str]:
    words = normalised_words(text)
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


class MinHash:
    """MinHash signatures over word shingles (Broder 1997) with one universal hash family."""

    PRIME = (1 << 61) - 1

    def __init__(self, num_perm: int = 128, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, self.PRIME, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, self.PRIME, num_perm, dtype=np.uint64)

    def signature(self, items: set[str]) -> np.ndarray:
        if not items:
            return np.full(len(self.a), np.iinfo(np.uint64).max, dtype=np.uint64)
        x = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=7).digest(), "big") for s in items], dtype=np.uint64)
        # (a·x + b) mod p on 64 bits wraps, which is fine for hashing: only the order matters.
        return ((np.outer(x, self.a) + self.b) % self.PRIME).min(axis=0)


class NearDedup:
    """MinHash LSH near-duplicate removal: a later item whose estimated Jaccard similarity with a
    kept one reaches `threshold` is dropped. Bands × rows = num_perm set the LSH S-curve: 16 bands
    of 8 rows find a pair at Jaccard 0.9 with probability 0.9999 and at 0.85 with 0.994, while
    templated prompts (Jaccard ~0.6 with each other) rarely share a band — with 32 bands of 4
    they all did, and checking them cost 4× as much (BENCHMARKS.md)."""

    name = "near_dedup"

    def __init__(
        self,
        stage: str = "prompt",
        field: str = "prompt",
        threshold: float = 0.9,
        shingle: int = 3,
        num_perm: int = 128,
        bands: int = 16,
        name: str | None = None,
    ):
        self.name = name or self.name
        self.stage, self.field = checked(self.name, stage, field)
        where = f"filters.{self.name}"
        self.threshold = number(f"{where}.threshold", threshold, float, 0, 1)
        self.shingle = number(f"{where}.shingle", shingle, int, 1)
        self.num_perm = number(f"{where}.num_perm", num_perm, int, 1)
        self.bands = number(f"{where}.bands", bands, int, 1)
        # Stateful across calls (a run streams items through in chunks): ~1 KB per kept item.
        self._buckets: dict[tuple, list[int]] = defaultdict(list)  # band key → rows of `_sigs`
        self._sigs = np.empty((1024, num_perm), dtype=np.uint64)  # kept signatures, grown by doubling
        self._items: list[int] = []  # row → the item number that kept it
        self._hasher: MinHash | None = None
        self._count = 0

    def check(self) -> None:
        if not 0 < self.threshold <= 1 or self.num_perm % self.bands:
            raise ConfigError(
                f"near_dedup: threshold must be in (0, 1] and num_perm a multiple of bands, got {self.threshold}, {self.num_perm}/{self.bands}"
            )

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        self._hasher = self._hasher or MinHash(self.num_perm)
        rows = self.num_perm // self.bands
        dropped = {}
        for index, item in enumerate(items):
            sig = self._hasher.signature(shingles(text_of(item, self.field), self.shingle))
            keys = [(band, sig[band * rows : (band + 1) * rows].tobytes()) for band in range(self.bands)]
            match = self._match(sig, [self._buckets[k] for k in keys if k in self._buckets])
            if match is not None:
                row, similarity = match
                dropped[index] = f"{self.name}: ~{similarity:.2f} similar to item {self._items[row]}"
                continue
            self._keep(sig, keys, self._count + index)
        self._count += len(items)
        return dropped

    def _match(self, sig: np.ndarray, buckets: list[list[int]]) -> tuple[int, float] | None:
        """The earliest kept item that shares a band and reaches the threshold, compared at once
        (templated prompts share bands with most earlier ones: a loop per pair was O(N²) in Python)."""
        if not buckets:
            return None
        candidate = np.zeros(len(self._items), dtype=bool)
        for bucket in buckets:
            candidate[bucket] = True
        rows = np.flatnonzero(candidate)
        similarity = (self._sigs[rows] == sig).mean(axis=1)
        hits = np.flatnonzero(similarity >= self.threshold)
        return (int(rows[hits[0]]), float(similarity[hits[0]])) if len(hits) else None

    def _keep(self, sig: np.ndarray, keys: list[tuple], item: int) -> None:
        row = len(self._items)
        if row == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
        self._sigs[row] = sig
        self._items.append(item)
        for key in keys:
            self._buckets[key].append(row)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _eval_records(path: Path) -> Iterable[dict]:
    if path.is_dir():
        import datasets

        loaded = (
            datasets.load_from_disk(str(path))
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
            else datasets.load_dataset(str(path))
        )
        splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
        for split in splits:
            yield from split
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    else:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


class Decontaminate:
    """Drops items sharing an n-gram with an evaluation set (13 words, as Tulu 3 does)."""

    name = "decontaminate"

    def __init__(
        self, eval_files: Sequence[str] = (), n: int = 13, stage: str = "prompt", field: str = "prompt", name: str | None = None
    ):
        self.eval_files = [Path(p) for p in eval_files]
        self.name = name or self.name
        self.n = number(f"filters.{self.name}.n", n, int, 1)
        self.stage, self.field = checked(self.name, stage, field)
        self._index: dict[int, str] | None = None

    def check(self) -> None:
        for path in self.eval_files:
            if not path.exists():
                raise ConfigError(f"decontamination eval set '{path}' does not exist — fix filters.decontaminate.eval_files")

    def _ngrams(self, text: str) -> set[int]:
        words = normalised_words(text)
        return {hash(" ".join(words[i : i + self.n])) for i in range(len(words) - self.n + 1)}

    def index(self) -> dict[int, str]:
        if self._index is None:
            self._index = {}
            for path in self.eval_files:
                for record in _eval_records(path):
                    for text in _strings(record):
                        for gram in self._ngrams(text):
                            self._index.setdefault(gram, path.name)
        return self._index

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        index = self.index()
        dropped = {}
        for i, item in enumerate(items):
            hit = next((index[g] for g in self._ngrams(text_of(item, self.field)) if g in index), None)
            if hit:
                dropped[i] = f"{self.name}: {self.n}-gram overlap with {hit}"
        return dropped
