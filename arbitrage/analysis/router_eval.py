"""`arbitrage eval-router RUN_DIR`: replay a finished `all` run offline, one router at a time.

An `all` run knows every teacher's reward on every prompt, so any router can be scored without
generating again: the reward of the teacher it would have called, against the oracle (the best
answer per prompt, which `all` pays for with one call per teacher) and the best single teacher.
This is the comparison Multilingual Arbitrage (arXiv 2408.14960) makes for its learned router.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from arbitrage.analysis.scoretable import ScoreTable
from arbitrage.errors import ConfigError
from arbitrage.routers import Observation, OnlineRouter, Router
from arbitrage.routers import model as router_model
from arbitrage.routers.learned import CallBudget
from arbitrage.routers.simple import FixedRouter, RandomRouter, RoundRobinRouter
from arbitrage.rows import Candidate
from arbitrage.runpaths import RunPaths

SELECTIVE_MIN_GAINS = (0.1, 0.05, 0.02)  # eval-router's selective rows: fewer to more second calls
SELECTIVE_BUDGET = 1.5  # and one with a call budget (router.calls_per_prompt)


@dataclass
class Result:
    router: str
    mean_reward: float
    win_rate: float  # share of prompts where the chosen answer is as good as the best one
    regret: float  # oracle − mean reward
    gain_captured: float | None  # (mean − best single) / (oracle − best single)
    calls_per_prompt: float
    calls_saved: float  # against `all`, which calls every teacher
    choices: list[str]  # the teacher called per prompt ("all" for arbitrage); the first seed's
    spread: float = 0.0  # standard deviation of mean_reward over seeds (0: deterministic)


def replay(router: Router, table: ScoreTable) -> list[tuple[str, ...]]:
    """Route the run's prompts in order through the run's own wave loop (stages.waves, stages.route):
    an online router sees each wave's rewards, read from the table, before it routes the next."""
    from arbitrage.stages import Seat, route, waves

    col = {t: j for j, t in enumerate(table.teachers)}
    row = {p.prompt_id: i for i, p in enumerate(table.prompts)}
    choices: list[tuple[str, ...]] = []
    seats = {t: Seat(teacher=None, key="", samples=1) for t in table.teachers}  # replayed: nothing is sent

    async def go():
        async for wave in waves(table.prompts, router):
            observations = []
            async for group in route(wave, router, seats):
                choices.append(group.route.teachers)
                i = row[group.prompt.prompt_id]
                for t in group.route.teachers:
                    j = col[t]
                    worthless = bool(table.failed[i, j] or table.filtered[i, j])
                    observations.append(
                        Observation(group.prompt, _candidate(table, i, j), None if worthless else float(table.reward[i, j]))
                    )
            if isinstance(router, OnlineRouter):
                router.observe(observations)

    asyncio.run(go())
    return choices


def _candidate(table: ScoreTable, i: int, j: int) -> Candidate:
    return Candidate(
        call_id="",
        prompt_id=table.prompts[i].prompt_id,
        teacher=table.teachers[j],
        text=None,
        finish_reason=None,
        tokens_in=int(table.tokens_in[i, j]),
        tokens_out=int(table.tokens_out[i, j]),
        latency_s=float(table.latency_s[i, j]),
        attempts=1,
        error="failed" if table.failed[i, j] else None,
    )


def cross_validated(
    table: ScoreTable,
    embeddings,
    folds: int = 5,
    seed: int = 0,
    max_calls: int = 1,
    min_gain: float = 0.05,
    calls_per_prompt: float | None = None,
) -> list[tuple[str, ...]]:
    """The learned router, k-fold: every prompt is routed by a model that never saw it
    (with max_calls > 1: selective arbitrage, routers/model.py `plan`; with calls_per_prompt, each
    fold's model sets its own min_gain from its training prompts, and the budget caps the run as
    it would a real one, in the run's prompt order)."""
    n = len(table.prompts)
    if n < folds:
        raise ConfigError(f"{table.run_dir} has {n} prompts, fewer than --folds {folds} — use a bigger run or fewer folds")
    order = np.random.default_rng(seed).permutation(n)
    choices: list[tuple[str, ...]] = [()] * n
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        model = router_model.train(
            [table.prompts[i] for i in train], table.reward[train], table.teachers, embeddings[train], str(table.run_dir)
        )
        predicted = model.predict([table.prompts[i] for i in test], embeddings[test])
        if calls_per_prompt is not None:
            min_gain = model.min_gain_for(calls_per_prompt, table.teachers, max_calls)
        for i, plan in zip(test, model.plan(predicted, table.teachers, max_calls, min_gain), strict=True):
            choices[i] = tuple(plan)
    if calls_per_prompt is not None:
        budget = CallBudget(calls_per_prompt)
        choices = [tuple(budget.trim(list(plan))) for plan in choices]
    return choices


def measure(name: str, choices: list[tuple[str, ...]], table: ScoreTable) -> Result:
    col = {t: j for j, t in enumerate(table.teachers)}
    got = np.array([max(table.reward[i, col[t]] for t in c) for i, c in enumerate(choices)])
    oracle = table.oracle()
    best_single = float(np.max(table.reward.mean(axis=0)))
    mean, top = float(got.mean()), float(oracle.mean())
    calls = float(np.mean([len(c) for c in choices]))
    return Result(
        router=name,
        mean_reward=mean,
        win_rate=float(np.mean(got >= oracle - 1e-9)),
        regret=top - mean,
        gain_captured=(mean - best_single) / (top - best_single) if top > best_single + 1e-12 else None,
        calls_per_prompt=calls,
        calls_saved=1.0 - calls / len(table.teachers),
        choices=["all" if len(c) > 1 else c[0] for c in choices],
    )


def evaluate(table: ScoreTable, extra: dict[str, Callable[[int], Router]], folds: int = 5, repeats: int = 5) -> list[Result]:
    """Every baseline, the cross-validated learned router and the `extra` routers (seed → router:
    bandits, a router.pt). Routers that draw random numbers are replayed with `repeats` seeds and
    averaged: on a few hundred prompts one seed can be off by more than the gaps between routers."""
    if not table.complete:
        raise ConfigError(
            f"{table.run_dir} is not an `all` run: some teachers did not answer some prompts — "
            "eval-router replays a run made with router=all"
        )
    n = len(table.prompts)
    fixed: dict[str, list[tuple[str, ...]]] = {
        "all (arbitrage)": [tuple(table.teachers)] * n,
        "oracle (hindsight, 1 call)": [(table.teachers[j],) for j in np.argmax(table.reward, axis=1)],
        **{f"fixed: {t}": replay(FixedRouter(teacher=t), table) for t in table.teachers},
        "round_robin": replay(RoundRobinRouter(), table),
    }
    vectors = router_model.embed(table.prompts)
    seeded: dict[str, Callable[[int], list[tuple[str, ...]]]] = {
        "random": lambda seed: replay(RandomRouter(k=1, seed=seed), table),
        f"learned ({folds}-fold CV)": lambda seed: cross_validated(table, vectors, folds, seed),
        **{
            f"selective, min_gain {g} ({folds}-fold CV)": lambda seed, g=g: cross_validated(table, vectors, folds, seed, 2, g)
            for g in SELECTIVE_MIN_GAINS
        },
        f"selective, ≤ {SELECTIVE_BUDGET} calls / prompt ({folds}-fold CV)": lambda seed: cross_validated(
            table, vectors, folds, seed, 2, calls_per_prompt=SELECTIVE_BUDGET
        ),
    }
    for name, make in extra.items():
        make(0).check(table.teachers)
        seeded[name] = lambda seed, make=make: replay(make(seed), table)
    results = [measure(name, choices, table) for name, choices in fixed.items()]
    for name, run in seeded.items():
        results.append(_average([measure(name, run(seed), table) for seed in range(max(1, repeats))]))
    return results


def winner_persistence(table: ScoreTable) -> float | None:
    """How far a prompt's winner persists from one sample to the next. Held out one sample at a
    time, each prompt goes to the teacher with the best mean reward over its other samples, and is
    scored on the held-out sample: the share of that sample's arbitrage gain over the best teacher
    overall it keeps. Near 0, which teacher wins a prompt is mostly sampling luck on these
    teachers, and a one-call router keeps little of the gain however good its model (with few
    samples the estimate is noisy: a model pooling many prompts can do a little better). None with
    one sample per teacher."""
    x = table.per_sample
    if x is None or x.shape[2] < 2 or np.isnan(x).any():
        return None
    overall = int(np.argmax(x.mean(axis=(0, 2))))
    prefer = np.zeros(x.shape[1])
    prefer[overall] = 1e-9  # a tie goes to the best teacher overall, as a learned router's would
    got = single = best = 0.0
    for s in range(x.shape[2]):
        pick = np.argmax(np.delete(x, s, axis=2).mean(axis=2) + prefer, axis=1)
        held_out = x[:, :, s]
        got += held_out[np.arange(len(held_out)), pick].mean()
        single += held_out[:, overall].mean()
        best += held_out.max(axis=1).mean()
    return float((got - single) / (best - single)) if best > single + 1e-12 else None


def _average(runs: list[Result]) -> Result:
    gains = [r.gain_captured for r in runs]
    return replace(
        runs[0],
        mean_reward=float(np.mean([r.mean_reward for r in runs])),
        win_rate=float(np.mean([r.win_rate for r in runs])),
        regret=float(np.mean([r.regret for r in runs])),
        gain_captured=None if None in gains else float(np.mean(gains)),
        calls_per_prompt=float(np.mean([r.calls_per_prompt for r in runs])),
        calls_saved=float(np.mean([r.calls_saved for r in runs])),
        spread=float(np.std([r.mean_reward for r in runs])),
    )


def markdown(results: list[Result], table: ScoreTable) -> str:
    header = "| router | mean reward | ± sd over seeds | win rate vs oracle | regret | gain captured | calls / prompt | calls saved vs all |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        gain = "—" if r.gain_captured is None else f"{r.gain_captured:.0%}"
        spread = f"{r.spread:.3f}" if r.spread > 1e-9 else "—"
        lines.append(
            f"| {r.router} | {r.mean_reward:.3f} | {spread} | {r.win_rate:.0%} | {r.regret:.3f} | {gain} | "
            f"{r.calls_per_prompt:.2f} | {r.calls_saved:.0%} |"
        )
    means = table.reward.mean(axis=0)
    best = int(np.argmax(means))
    lines += [
        "",
        f"{len(table.prompts)} prompts of `{table.run_dir}`, teachers {', '.join(table.teachers)}. Best single teacher: "
        f"{table.teachers[best]} ({means[best]:.3f}); oracle {table.oracle().mean():.3f}. Win rate: share of prompts where "
        "the router's teacher scored as high as the best answer (ties count). Gain captured: share of the oracle's gain over "
        "the best single teacher that the router keeps. Routers with a spread were replayed with several seeds "
        "(fold shuffles, exploration draws) and averaged.",
    ]
    persistence = winner_persistence(table)
    if persistence is not None:
        lines += [
            "",
            f"Winner persistence: {persistence:.0%}. Routed by its teachers' other samples ({table.samples - 1} of "
            f"{table.samples}), a prompt's held-out sample keeps {persistence:.0%} of that sample's arbitrage gain over the best "
            "teacher. Near 0, which teacher wins a prompt is mostly sampling luck on these teachers, and a one-call router "
            "keeps little of the gain however good its model.",
        ]
    return "\n".join(lines) + "\n"


def write(run_dir: Path, results: list[Result], table: ScoreTable) -> str:
    """router_eval.md (the table) and router_eval.json (what the run report plots)."""
    text = markdown(results, table)
    RunPaths(run_dir).router_eval.write_text(text, encoding="utf-8")
    payload = {
        "prompts": [p.prompt_id for p in table.prompts],
        "teachers": table.teachers,
        "results": [asdict(r) for r in results],
        "winner_persistence": winner_persistence(table),
    }
    RunPaths(run_dir).router_eval_data.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return text
