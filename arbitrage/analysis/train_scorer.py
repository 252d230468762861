"""`arbitrage train-scorer RUN_DIR` and `arbitrage train-prompt-scorer`: cheap heads learned from expensive scorers.

FineWeb-Edu (arXiv 2406.17557) rated 450k pages with Llama-3-70B on an additive 0–5 rubric and fitted
a regression head on a frozen embedding model to the ratings (20 epochs, lr 3e-4), then ran only the
head. The same recipe, twice:

- answers: a finished run's candidates already carry its expensive scorer's scores (a judge's
  ratings, a reward model's logits) in data/candidates-*.parquet, read with the score table's reader
  (analysis/scoretable.py). The head predicts them from the prompt's and the answer's embeddings
  (arbitrage/heads.py); `reward=distilled` scores with it alone, `reward=cascade` sends only each
  prompt's top k to the judge.
- prompts: a judge rates a sample of the prompt stream on a rubric (quality/prompt_quality.py
  `PromptRater`, its calls through the engine and journaled in OUT/journal, so a rerun asks nothing
  twice), and the head predicts the points; `filters=prompt_quality` drops low prompts before any
  teacher is called.

Heads: `ridge` (default: closed form, its penalty picked by exact leave-one-out error as the learned
router's is, routers/model.py; best where a run gives a few hundred to a few thousand examples) or
`mlp` (one hidden layer, AdamW, FineWeb-Edu's lr 3e-4 and 20 epochs; for large rated sets).

Metrics are measured on held-out *prompts* (a seeded split by prompt id: no answer of a test prompt
is seen in training), with the head fitted on the other prompts; the head written is then refitted
on every prompt. What selection needs is the within-prompt order, so beside RMSE and macro-F1 at a
threshold the card has pairwise accuracy and Kendall τ-b against the expensive scorer, and the share
of prompts whose chosen answer (select.py's rule, ties and answer filters included) is the same as
the expensive scorer's alone: with the head alone, and with the cascade at k = 1, 2, against the
judge calls each saves.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arbitrage import embeddings
from arbitrage.analysis import scoretable
from arbitrage.errors import ConfigError
from arbitrage.heads import HEADS, HeadModel, answer_features, embedder, prompt_features
from arbitrage.routers.model import fit_ridge_loo
from arbitrage.rows import Candidate, Prompt, Route, Scored
from arbitrage.runpaths import RunPaths
from arbitrage.scoring.cascade import BELOW
from arbitrage.select import SelectionSpec, select

HELD_OUT = 0.2  # share of prompts held out for the card's metrics
CASCADE_KS = (1, 2)


@dataclass
class Examples:
    """What a head is fitted on: one row per rated item, grouped by prompt."""

    prompts: list[Prompt]  # per row: the prompt (for answers: the prompt the answer is to)
    y: np.ndarray  # the expensive scorer's score
    x: np.ndarray  # features
    candidates: list[Candidate] | None = None  # answers only
    filtered: list[str | None] | None = None  # the run's answer-filter verdict per candidate (select needs it)

    def take(self, rows: np.ndarray) -> Examples:
        pick = rows.tolist()
        return Examples(
            [self.prompts[i] for i in pick],
            self.y[rows],
            self.x[rows],
            None if self.candidates is None else [self.candidates[i] for i in pick],
            None if self.filtered is None else [self.filtered[i] for i in pick],
        )


# ---- reading a run ----


def _target_value(row: dict, target: str) -> float | None:
    """The run's score, or one part of a weighted score (score_details[target]["score"])."""
    details = json.loads(row.get("score_details") or "{}")
    if details.get("judged") is False:  # a cascade's unjudged candidate: a cheap score, not the target
        return None
    if target == "score":
        return row["score"]
    part = details.get(target)
    return part.get("score") if isinstance(part, dict) else None


def run_examples(run_dir: Path, target: str = "score", embedder_name: str = embeddings.PACKAGE) -> tuple[Examples, str]:
    """Every scored answer of a finished run, with its features; and the name of the run's reward."""
    run_dir = Path(run_dir)
    table = scoretable.load(run_dir)  # the prompts as the run wrote them (sft and rejected_rows)
    prompts = {p.prompt_id: p for p in table.prompts}
    rows = [r for r in scoretable.read_config(run_dir, "candidates") if r["response"] and not r["error"]]
    rows = [(r, v) for r in rows if (v := _target_value(r, target)) is not None and v == v]
    if not rows:
        known = "score, or a part of a weighted reward (e.g. judge)"
        raise ConfigError(f"{run_dir} has no answers scored as --target {target} — choose one of: {known}")
    candidates = [
        Candidate(
            r["call_id"],
            r["prompt_id"],
            r["teacher"],
            r["response"],
            r["finish_reason"],
            r["tokens_in"] or 0,
            r["tokens_out"] or 0,
            r["latency_s"] or 0.0,
            r["attempts"] or 1,
            sample=r["sample"] or 0,
        )  # fmt: skip
        for r, _ in rows
    ]
    items = [(prompts[c.prompt_id], c) for c in candidates]
    embed = embedder(embedder_name)
    texts = list(dict.fromkeys(p.user_text for p, _ in items))
    index = {t: i for i, t in enumerate(texts)}
    prompt_vectors = embed(texts)[[index[p.user_text] for p, _ in items]]
    x = answer_features(prompt_vectors, embed([c.text for c in candidates]), candidates)
    summary = RunPaths(run_dir).summary
    reward = json.loads(summary.read_text()).get("reward", "") if summary.is_file() else ""
    return (
        Examples(
            [p for p, _ in items],
            np.array([v for _, v in rows], dtype=np.float64),
            x,
            candidates,
            [r["filtered"] for r, _ in rows],
        ),
        reward if target == "score" else target,
    )


def prompt_examples(prompts: Sequence[Prompt], ratings: Sequence[float], embedder_name: str = embeddings.PACKAGE) -> Examples:
    vectors = embedder(embedder_name)([p.user_text for p in prompts])
    return Examples(list(prompts), np.asarray(ratings, dtype=np.float64), prompt_features(vectors, prompts))


def split(prompt_ids: Sequence[str], held_out: float = HELD_OUT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and the held-out prompts: every answer of a prompt on one side."""
    unique = sorted(set(prompt_ids))
    if len(unique) < 4:
        raise ConfigError(f"{len(unique)} prompts are too few to hold some out — train on a run with 20 prompts or more")
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = min(len(unique) - 2, max(2, round(held_out * len(unique))))
    test = {unique[i] for i in order[:n_test]}
    is_test = np.array([pid in test for pid in prompt_ids])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


# ---- fitting ----


def fit(x: np.ndarray, y: np.ndarray, head: str = "ridge", epochs: int = 20, lr: float = 3e-4, hidden: int = 256, seed: int = 0):
    """The head's parameters and how they were fitted."""
    import torch

    if head not in HEADS:
        raise ConfigError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    xt, yt = torch.from_numpy(np.asarray(x, dtype=np.float64)), torch.from_numpy(np.asarray(y, dtype=np.float64))
    if head == "ridge":
        weight, bias, alpha, loo = fit_ridge_loo(xt, yt)
        return {"weight": weight.numpy(), "bias": np.array([bias])}, {"alpha": alpha, "loo_rmse": round(loo, 6)}
    torch.manual_seed(seed)
    mean, sd = float(yt.mean()), float(yt.std()) or 1.0
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)).double()
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    target = (yt - mean) / sd  # standardised: lr 3e-4 means the same on logits and on [0, 1] ratings
    batch = 32
    for _ in range(epochs):
        for rows in torch.randperm(len(yt)).split(batch):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(xt[rows]).squeeze(-1), target[rows])
            loss.backward()
            opt.step()
    first, last = net[0], net[2]
    params = {
        "w1": first.weight.detach().T.numpy().copy(),
        "b1": first.bias.detach().numpy().copy(),
        "w2": (last.weight.detach()[0] * sd).numpy().copy(),
        "b2": (last.bias.detach() * sd + mean).numpy().copy(),
    }
    return params, {"epochs": epochs, "lr": lr, "hidden": hidden, "batch": batch}


# ---- metrics ----


def macro_f1(y: np.ndarray, pred: np.ndarray, threshold: float) -> float:
    """Mean F1 of the two classes `≥ threshold` and `< threshold` (FineWeb-Edu's F1 at 3)."""
    truth, guess = y >= threshold, pred >= threshold
    scores = []
    for cls in (True, False):
        tp = np.sum((guess == cls) & (truth == cls))
        fp, fn = np.sum((guess == cls) & (truth != cls)), np.sum((guess != cls) & (truth == cls))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 1.0


def kendall_tau_b(t: np.ndarray, p: np.ndarray) -> float | None:
    """τ-b of two orderings of one prompt's candidates; None when either is constant."""
    n = len(t)
    concordant = discordant = tied_t = tied_p = 0
    for i in range(n):
        for j in range(i + 1, n):
            dt, dp = (
                np.sign(t[i] - t[j]) if abs(t[i] - t[j]) > 1e-9 else 0,
                np.sign(p[i] - p[j]) if abs(p[i] - p[j]) > 1e-9 else 0,
            )
            tied_t += dt == 0
            tied_p += dp == 0
            concordant += dt * dp > 0
            discordant += dt * dp < 0
    pairs = n * (n - 1) / 2
    denominator = ((pairs - tied_t) * (pairs - tied_p)) ** 0.5
    return None if denominator == 0 else float((concordant - discordant) / denominator)


def _groups(prompts: Sequence[Prompt]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.prompt_id, []).append(i)
    return list(groups.values())


def _chosen(prompt: Prompt, rows: list[int], scores: Sequence[float], ex: Examples) -> str | None:
    """The call id select.py chooses among these candidates with these scores (ties, filters included)."""
    scored = [Scored(ex.candidates[i], float(s), filtered=ex.filtered[i]) for i, s in zip(rows, scores, strict=True)]
    chosen = select(prompt, Route((), ""), scored, SelectionSpec()).chosen
    return None if chosen is None else chosen.candidate.call_id


def cascade_scores(truth: np.ndarray, cheap: np.ndarray, k: int) -> np.ndarray:
    """One prompt's scores as reward=cascade gives them: the top k by the cheap score judged, the rest
    capped below the lowest judged (scoring/cascade.py)."""
    if len(truth) <= k:
        return truth.copy()
    top = sorted(range(len(truth)), key=lambda i: -cheap[i])[:k]
    out = np.minimum(cheap, round(float(truth[top].min()) - BELOW, 6))
    out[top] = truth[top]
    return out


def ranking(ex: Examples, pred: np.ndarray, ks: Sequence[int] = CASCADE_KS) -> dict:
    """Within-prompt agreement with the expensive scorer, over prompts with two answers or more."""
    agree = pairs = 0.0
    taus, same, as_good = [], [], []
    cascade = {k: {"judged": 0, "same": []} for k in ks}
    candidates = 0
    for rows in _groups(ex.prompts):
        t, p = ex.y[rows], pred[rows]
        candidates += len(rows)
        for k in ks:
            cascade[k]["judged"] += min(k, len(rows))
        if len(rows) < 2:
            continue
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                if abs(t[i] - t[j]) > 1e-9:
                    pairs += 1
                    agree += 1.0 if (t[i] - t[j]) * (p[i] - p[j]) > 0 else 0.5 if abs(p[i] - p[j]) <= 1e-9 else 0.0
        tau = kendall_tau_b(t, p)
        if tau is not None:
            taus.append(tau)
        if ex.candidates is None:
            continue
        prompt = ex.prompts[rows[0]]
        judge_choice = _chosen(prompt, rows, t, ex)
        head_choice = _chosen(prompt, rows, np.round(p, 6), ex)
        same.append(head_choice == judge_choice)
        truth_of = {ex.candidates[i].call_id: ex.y[i] for i in rows}
        both = head_choice is not None and judge_choice is not None
        as_good.append(head_choice == judge_choice or (both and truth_of[head_choice] >= truth_of[judge_choice] - 1e-9))
        for k in ks:
            cascade[k]["same"].append(_chosen(prompt, rows, cascade_scores(t, np.round(p, 6), k), ex) == judge_choice)
    out = {
        "pairwise_accuracy": round(agree / pairs, 4) if pairs else None,
        "pairs": int(pairs),
        "kendall_tau": round(float(np.mean(taus)), 4) if taus else None,
        "ranked_prompts": len(taus),
    }
    if ex.candidates is not None:
        out["same_choice"] = round(float(np.mean(same)), 4) if same else None
        out["as_good_choice"] = round(float(np.mean(as_good)), 4) if as_good else None
        out["cascade"] = {
            f"k={k}": {
                "judge_calls_saved": round(1 - c["judged"] / candidates, 4) if candidates else 0.0,
                "same_choice": round(float(np.mean(c["same"])), 4) if c["same"] else None,
            }
            for k, c in cascade.items()
        }
    return out


def evaluate(ex: Examples, pred: np.ndarray, threshold: float) -> dict:
    return {
        "prompts": len({p.prompt_id for p in ex.prompts}),
        "items": len(ex.y),
        "rmse": round(float(np.sqrt(np.mean((pred - ex.y) ** 2))), 4),
        "target_sd": round(float(ex.y.std()), 4),  # the RMSE of predicting the mean, for scale
        f"macro_f1@{threshold:g}": round(macro_f1(ex.y, pred, threshold), 4),
        **ranking(ex, pred),
    }


def train(
    ex: Examples,
    kind: str,
    target: str,
    source: str,
    embedder_name: str = embeddings.PACKAGE,
    head: str = "ridge",
    threshold: float | None = None,
    held_out: float = HELD_OUT,
    seed: int = 0,
    epochs: int = 20,
    lr: float = 3e-4,
    extra_card: dict | None = None,
) -> HeadModel:
    """Fit on the training prompts, measure on the held-out ones, refit on all: the head and its card."""
    train_rows, test_rows = split([p.prompt_id for p in ex.prompts], held_out, seed)
    train_ex, test_ex = ex.take(train_rows), ex.take(test_rows)
    # default: the middle of the scale seen (0.5 for a judge's or a pass rate's [0, 1]; 2.5 on 0–5 points)
    threshold = float(train_ex.y.min() + train_ex.y.max()) / 2 if threshold is None else float(threshold)
    params, how = fit(train_ex.x, train_ex.y, head, epochs, lr, seed=seed)
    probe = HeadModel(kind, head, params, embedder_name, target)
    held = evaluate(test_ex, probe.apply(test_ex.x), threshold)
    params, how = fit(ex.x, ex.y, head, epochs, lr, seed=seed)
    card = {
        "source": source,
        "target": target,
        "embedder": embedder_name,
        "head": head,
        "fit": how,
        "threshold": threshold,
        "train": {"prompts": len({p.prompt_id for p in train_ex.prompts}), "items": len(train_ex.y)},
        "held_out": held,
        "written": f"refitted on all {len({p.prompt_id for p in ex.prompts})} prompts ({len(ex.y)} items)",
        **(extra_card or {}),
    }
    return HeadModel(kind, head, params, embedder_name, target, card, sorted({p.prompt_id for p in ex.prompts}))


def train_scorer(
    run_dir: Path | str,
    out: Path | str | None = None,
    target: str = "score",
    embedder_name: str = embeddings.PACKAGE,
    head: str = "ridge",
    threshold: float | None = None,
    held_out: float = HELD_OUT,
    seed: int = 0,
) -> HeadModel:
    """Fit a head on a finished run's scored answers; write it to `out` (default RUN_DIR/scorer.pt)."""
    ex, reward = run_examples(Path(run_dir), target, embedder_name)
    model = train(ex, "answer", reward or target, str(run_dir), embedder_name, head, threshold, held_out, seed)
    model.save(Path(out) if out else Path(run_dir) / "scorer.pt")
    return model


# ---- prompts: a judge rates a sample, the head learns the ratings ----


def reservoir(prompts, size: int, seed: int) -> list[Prompt]:
    """A uniform sample of `size` prompts of a stream of any length (Algorithm R), in stream order."""
    rng, kept = random.Random(seed), []
    for n, prompt in enumerate(prompts):
        if n < size:
            kept.append((n, prompt))
        elif (j := rng.randrange(n + 1)) < size:
            kept[j] = (n, prompt)
    return [p for _, p in sorted(kept, key=lambda pair: pair[0])]


async def rate_prompts(prompts: Sequence[Prompt], rater, out_dir: Path, retry=None, budget_usd: float | None = None):
    """The rater's judgments of `prompts`, through the engine (journaled in OUT/journal: a rerun
    sends nothing twice). Returns (prompt, rating) for the prompts it could rate, and the failures."""
    from arbitrage.engine import Budget, Engine, Journal

    journal = Journal(RunPaths(out_dir).journal)
    try:
        async with Engine(rater.teachers, journal, retry, Budget(budget_usd)) as engine:
            answers = await engine.run(rater.calls(prompts))
    finally:
        journal.close()
    rated, failed = [], []
    for p, a in zip(prompts, answers, strict=True):
        value = None if a.error else rater.rating(a.text)
        if value is None:
            failed.append((p, a.error or f"no score in {(a.text or '')[:60]!r}"))
        else:
            rated.append((p, value))
    return rated, failed


def write_ratings(path: Path, rated: Sequence[tuple[Prompt, float]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p, value in rated:
            row = {"prompt_id": p.prompt_id, "language": p.language, "task": p.task, "rating": value, "prompt": p.user_text}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


PROMPT_THRESHOLD = 2.5  # the card's macro-F1 on 0–5 points: "3 or more", FineWeb-Edu's cut


async def train_prompt_scorer(
    source, rater, out_dir: Path | str, retry=None, budget_usd: float | None = None, seed: int | None = None
):
    """A reservoir sample of the source rated by the rater (through the engine), a head fitted to the
    ratings: OUT/prompt_ratings.jsonl and OUT/prompt_scorer.pt. Returns (model, its path, a summary line)."""
    from arbitrage.rows import stable_hash

    out_dir = Path(out_dir)
    seed = rater.seed if seed is None else seed
    sample = reservoir(source, rater.sample, seed)
    rated, failed = await rate_prompts(sample, rater, out_dir, retry, budget_usd)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_ratings(out_dir / "prompt_ratings.jsonl", rated)
    if len(rated) < 4:
        first = f" (first: {failed[0][1]})" if failed else ""
        raise ConfigError(
            f"only {len(rated)} of {len(sample)} prompts were rated{first} — too few to fit a scorer; rerun after the fix"
        )
    counts = {str(int(v)): sum(1 for _, r in rated if int(r) == int(v)) for v in sorted({r for _, r in rated})}
    extra = {"scale_max": rater.scale_max, "rubric": stable_hash(rater.template), "rated": len(rated), "ratings": counts}
    ex = prompt_examples([p for p, _ in rated], [v for _, v in rated])
    model = train(ex, "prompt", "rubric", str(out_dir), threshold=PROMPT_THRESHOLD, seed=seed, extra_card=extra)
    path = out_dir / "prompt_scorer.pt"
    model.save(path)
    line = f"{len(rated)} of {len(sample)} prompts rated (points: {counts}); ratings in {out_dir / 'prompt_ratings.jsonl'}"
    if failed:
        line += f"; {len(failed)} got no rating (first: {failed[0][1]}): a rerun sends those again"
    return model, path, line


def describe(model: HeadModel, path: Path) -> str:
    """What train-scorer prints: sizes, held-out metrics, and how to use the head."""
    card, held = model.card, model.card["held_out"]
    f1 = next(k for k in held if k.startswith("macro_f1@"))
    lines = [
        f"wrote {path}: a {model.head} head on {model.embedder} predicting {model.target or 'the score'} "
        f"({card['train']['prompts']} training prompts, {card['train']['items']} items; {card['written']})",
        f"held-out prompts: {held['prompts']} ({held['items']} items): RMSE {held['rmse']} (target sd {held['target_sd']}), "
        f"macro-F1 at {card['threshold']:g} {held[f1]}",
    ]
    if held.get("pairwise_accuracy") is not None:
        lines.append(
            f"within-prompt order: pairwise accuracy {held['pairwise_accuracy']} over {held['pairs']} pairs, "
            f"Kendall tau {held['kendall_tau']} over {held['ranked_prompts']} prompts"
        )
    if "cascade" in held:
        lines.append(
            f"chosen answer as the expensive scorer's: head alone {held['same_choice']} (as good: {held['as_good_choice']}); "
            + "; ".join(
                f"cascade {k}: {c['same_choice']} at {c['judge_calls_saved']:.0%} of judge calls saved"
                for k, c in held["cascade"].items()
            )
        )
        lines.append(f"use it with: arbitrage reward=distilled reward.model={path} ... (or reward=cascade reward.model={path})")
    else:
        lines.append(f"use it with: arbitrage filters=prompt_quality filters.prompt_quality.model={path} ...")
    return "\n".join(lines)
