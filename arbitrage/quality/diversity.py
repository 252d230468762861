"""Diversity of a set of texts: distinct-n (Li et al. 2016), embedding spread, coverage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from arbitrage.quality.text import normalised_words


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams over the corpus: 1.0 when nothing repeats."""
    return distinct([normalised_words(t) for t in texts], (n,))[n]


class GramCounts:
    """Word 1- and 2-gram counts of a changing set of texts: distinct-1/2 at any moment."""

    def __init__(self):
        self.counts = {1: Counter(), 2: Counter()}
        self.totals = {1: 0, 2: 0}

    def _grams(self, text: str) -> dict[int, list]:
        words = normalised_words(text)
        return {1: words, 2: list(zip(words, words[1:], strict=False))}

    def add(self, text: str) -> None:
        for n, grams in self._grams(text).items():
            self.counts[n].update(grams)
            self.totals[n] += len(grams)

    def remove(self, text: str) -> None:
        for n, grams in self._grams(text).items():
            counts = self.counts[n]
            counts.subtract(grams)
            for gram in grams:
                if counts[gram] <= 0:
                    del counts[gram]
            self.totals[n] -= len(grams)

    def distinct(self) -> dict[str, float]:
        return {f"distinct_{n}": round(len(c) / self.totals[n], 4) if self.totals[n] else 0.0 for n, c in self.counts.items()}


def distinct(tokenised: Sequence[list[str]], ns: Sequence[int] = (1, 2)) -> dict[int, float]:
    """distinct-n for each n, over texts already split into words (normalised once, not per n)."""
    out = {}
    for n in ns:
        unique, total = set(), 0
        for words in tokenised:
            grams = list(zip(*(words[i:] for i in range(n)), strict=False))  # the n-grams, shortest slice ends them
            unique.update(grams)
            total += len(grams)
        out[n] = round(len(unique) / total, 4) if total else 0.0
    return out


def embedding_spread(texts: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> float:
    """Mean pairwise cosine distance of the texts' embeddings: higher is more spread out."""
    return spread(embed(list(texts))) if len(texts) >= 2 else 0.0


def spread(vectors: Sequence[np.ndarray] | np.ndarray) -> float:
    """Mean pairwise cosine distance of embedding vectors."""
    if len(vectors) < 2:
        return 0.0
    vectors = np.asarray(vectors, dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    sims = vectors @ vectors.T
    n = len(vectors)
    mean_off_diagonal = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return round(float(1 - mean_off_diagonal), 4)


def metrics(
    texts: Sequence[str], facets: dict[str, Sequence[str]], embed: Callable[[list[str]], np.ndarray] | None = None
) -> dict:
    """distinct-1/2, optional embedding spread, and how many distinct values each facet covers."""
    d = distinct([normalised_words(t) for t in texts])
    result = {"n": len(texts), "distinct_1": d[1], "distinct_2": d[2]}
    if embed is not None:
        result["embedding_spread"] = embedding_spread(texts, embed)
    result["coverage"] = {name: len(set(values)) for name, values in facets.items()}
    return result
