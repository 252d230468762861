"""Diversity of a set of texts: distinct-n (Li et al. 2016), embedding spread, coverage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from arbitrage.filters import normalise


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams over the corpus: 1.0 when nothing repeats."""
    grams = Counter()
    for text in texts:
        words = normalise(text).split()
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return round(len(grams) / total, 4) if total else 0.0


def embedding_spread(texts: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> float:
    """Mean pairwise cosine distance of the texts' embeddings: higher is more spread out."""
    if len(texts) < 2:
        return 0.0
    vectors = np.asarray(embed(list(texts)), dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    sims = vectors @ vectors.T
    n = len(texts)
    mean_off_diagonal = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return round(float(1 - mean_off_diagonal), 4)


def metrics(
    texts: Sequence[str], facets: dict[str, Sequence[str]], embed: Callable[[list[str]], np.ndarray] | None = None
) -> dict:
    """distinct-1/2, optional embedding spread, and how many distinct values each facet covers."""
    result = {"n": len(texts), "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)}
    if embed is not None:
        result["embedding_spread"] = embedding_spread(texts, embed)
    result["coverage"] = {name: len(set(values)) for name, values in facets.items()}
    return result
