"""The `bandit` router: learns online, from the scores of earlier prompts, which teacher wins.

It calls one teacher per prompt, so it needs no `all` run to train on. Its contexts are the
prompt's (language, task) cluster and each of its constraint types (the checks the verifiable
reward scores, where teachers differ most). A conversation's follow-up (turn 2, 3, …) has a cluster
of its own per turn, (language, task, turn): the teacher that answers first turns best need not
answer follow-ups best, and turn 1 keeps the cluster it always had, so single-turn runs route as
before and first turns are not averaged with follow-ups. Each context's estimate is shrunk toward the
teacher's estimate over every prompt, with `prior_strength` pseudo-observations, and a prompt's
estimate is the mean over its contexts: 6 languages × 6 tasks make 36 clusters, more than a small
run fills, so a context starts from what is known overall and specialises as its own scores arrive.

The value of a call is `reward − cost_weight·$ − latency_weight·seconds`, where $ comes from
`usd_per_mtok` (teacher → price per million tokens, in + out). A failed call is worth reward 0.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

from arbitrage.constraints import type_ids
from arbitrage.errors import ConfigError
from arbitrage.routers import Observation, Route
from arbitrage.rows import Candidate, Prompt
from arbitrage.settings import choice, number

STRATEGIES = ("epsilon", "thompson")


class _Stats:
    """Running mean and variance (Welford)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)


class BanditRouter:
    name = "bandit"

    def __init__(
        self,
        strategy: str = "epsilon",
        epsilon: float = 0.1,
        cost_weight: float = 0.0,
        latency_weight: float = 0.0,
        usd_per_mtok: dict | None = None,
        prior_strength: float = 2.0,
        wave_size: int = 10,
        seed: int = 0,
    ):
        self.strategy = choice("router.strategy", strategy, STRATEGIES)
        self.epsilon = number("router.epsilon", epsilon, float, 0, 1)
        self.cost_weight = number("router.cost_weight", cost_weight, float, 0)
        self.latency_weight = number("router.latency_weight", latency_weight, float, 0)
        self.usd_per_mtok = {t: number(f"router.usd_per_mtok.{t}", v, float, 0) for t, v in dict(usd_per_mtok or {}).items()}
        self.prior_strength = number("router.prior_strength", prior_strength, float, 0)
        self.wave_size = number("router.wave_size", wave_size, int, 1)  # prompts routed between two rounds of feedback
        self.seed = number("router.seed", seed, int)
        self.rng = random.Random(seed)
        self.overall: dict[str, _Stats] = defaultdict(_Stats)
        self.context: dict[tuple, _Stats] = defaultdict(_Stats)  # (context, teacher) → its calls' values
        self.routed: dict[str, int] = defaultdict(int)

    def identity(self) -> dict:
        keys = ("strategy", "epsilon", "cost_weight", "latency_weight", "usd_per_mtok", "prior_strength", "wave_size", "seed")
        return {"router": "bandit", **{k: getattr(self, k) for k in keys}}

    def check(self, teachers: Sequence[str]) -> None:
        unknown = sorted(set(self.usd_per_mtok) - set(teachers))
        if unknown:
            raise ConfigError(
                f"router.usd_per_mtok names {', '.join(unknown)}, not configured — configured: {', '.join(teachers)}"
            )

    def estimate(self, where: Sequence[tuple], teacher: str) -> tuple[float, float]:
        """(mean value, pseudo-count) for this teacher on a prompt's contexts (`contexts(prompt)`)."""
        overall = self.overall[teacher]
        if overall.n == 0:  # routed but not scored yet: assume the average of what has been seen
            seen = [s for s in self.overall.values() if s.n]
            return (sum(s.mean * s.n for s in seen) / sum(s.n for s in seen) if seen else 0.0), 0.0
        k, means, counts = self.prior_strength, [], []
        for context in where:
            local = self.context[(context, teacher)]
            means.append((local.n * local.mean + k * overall.mean) / (local.n + k))
            counts.append(local.n + k)
        return sum(means) / len(means), sum(counts) / len(counts)

    def _spread(self) -> float:
        """Pooled standard deviation of a call's value, for Thompson sampling's posterior width."""
        n = sum(s.n for s in self.overall.values())
        if n < 2:
            return 0.5
        return max(0.05, math.sqrt(sum(s.m2 for s in self.overall.values()) / (n - 1)))

    def route(self, prompts: Sequence[Prompt], teachers: Sequence[str]) -> list[Route]:
        return [self._one(p, list(teachers)) for p in prompts]

    def _one(self, prompt: Prompt, teachers: list[str]) -> Route:
        where = f"{prompt.language}/{prompt.task}"
        untried = [t for t in teachers if self.routed[t] == 0]
        if untried:  # every teacher once, before any estimate means anything
            return self._send(untried[0], f"bandit:first:{where}")
        where = contexts(prompt)  # once per prompt: the constraint ids are normalised here
        estimates = {t: self.estimate(where, t) for t in teachers}
        if self.strategy == "thompson":
            sigma = self._spread()
            draws = {t: self.rng.gauss(m, sigma / math.sqrt(max(n, 1.0))) for t, (m, n) in estimates.items()}
            return self._send(max(draws, key=draws.get), f"bandit:thompson:{where}")
        if self.rng.random() < self.epsilon:
            return self._send(self.rng.choice(teachers), f"bandit:explore:{where}")
        best = max(m for m, _ in estimates.values())
        return self._send(self.rng.choice([t for t, (m, _) in estimates.items() if m == best]), f"bandit:exploit:{where}")

    def _send(self, teacher: str, decision: str) -> Route:
        self.routed[teacher] += 1
        return Route((teacher,), decision)

    def value(self, candidate: Candidate, reward: float | None) -> float:
        usd = self.usd_per_mtok.get(candidate.teacher, 0.0) * (candidate.tokens_in + candidate.tokens_out) / 1e6
        return (reward if reward is not None else 0.0) - self.cost_weight * usd - self.latency_weight * candidate.latency_s

    def observe(self, observations: Sequence[Observation]) -> None:
        """Feedback from the pipeline: every scored (or failed) call of a wave."""
        for o in observations:
            v = self.value(o.candidate, o.reward)
            self.overall[o.candidate.teacher].add(v)
            for context in contexts(o.prompt):
                self.context[(context, o.candidate.teacher)].add(v)


def contexts(prompt: Prompt) -> list[tuple]:
    """What the bandit keeps estimates for: the (language, task) cluster — (language, task, turn)
    for a conversation's follow-up — and each constraint type."""
    cluster = ("cluster", prompt.language, prompt.task) + ((prompt.turn,) if prompt.turn > 1 else ())
    return [cluster] + [("check", kind) for kind in dict.fromkeys(type_ids(prompt.constraints))]
