"""Routers decide which teachers answer a prompt (Multilingual Arbitrage, arXiv 2408.14960).

`all` sends every prompt to every teacher and lets the reward pick (the arbitrage default);
`fixed`, `random` and `round_robin` call one teacher per prompt — the single-teacher and random
baselines; `learned` calls the teacher a model trained on an `all` run predicts will win.
The online `bandit` router lives in bandit.py.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt, stable_hash


@dataclass(frozen=True)
class Route:
    teachers: tuple[str, ...]
    decision: str  # why, recorded with every dataset row


@runtime_checkable
class Router(Protocol):
    """Optional, looked up by the pipeline: `prepare(prompts)` before a batch of prompts is routed
    (to embed them at once); `wave_size` and `observe(prompt, candidate, reward)` for a router that
    learns from scores during the run (the pipeline then routes, generates and scores in waves)."""

    name: str

    def check(self, teachers: list[str]) -> None:
        """Raise ConfigError when the router names a teacher that is not configured."""

    def route(self, prompt: Prompt, teachers: list[str]) -> Route: ...


class AllTeachers:
    name = "all"

    def check(self, teachers: list[str]) -> None:
        return None

    def route(self, prompt: Prompt, teachers: list[str]) -> Route:
        return Route(tuple(teachers), "all")


def _known(teacher: str, teachers: list[str], where: str) -> None:
    if teacher not in teachers:
        raise ConfigError(f"{where} names teacher '{teacher}', which is not configured — configured: {', '.join(teachers)}")


class FixedRouter:
    """One teacher per prompt: by language, then by task, else the default teacher."""

    name = "fixed"

    def __init__(self, teacher: str | None = None, by_language: dict | None = None, by_task: dict | None = None):
        self.teacher = teacher
        self.by_language = dict(by_language or {})
        self.by_task = dict(by_task or {})

    def check(self, teachers: list[str]) -> None:
        if self.teacher is not None:
            _known(self.teacher, teachers, "router.teacher")
        for key, name in {**self.by_language, **self.by_task}.items():
            _known(name, teachers, f"router map entry '{key}'")

    def route(self, prompt: Prompt, teachers: list[str]) -> Route:
        if prompt.language in self.by_language:
            return Route((self.by_language[prompt.language],), f"fixed:language={prompt.language}")
        if prompt.task in self.by_task:
            return Route((self.by_task[prompt.task],), f"fixed:task={prompt.task}")
        return Route((self.teacher or teachers[0],), "fixed:default")


class RandomRouter:
    """k teachers drawn per prompt; seeded by the prompt id, so a rerun routes identically."""

    name = "random"

    def __init__(self, k: int = 1, seed: int = 0):
        self.k = k
        self.seed = seed

    def check(self, teachers: list[str]) -> None:
        if not 1 <= self.k <= len(teachers):
            raise ConfigError(f"router.k must be between 1 and the number of teachers ({len(teachers)}), got {self.k}")

    def route(self, prompt: Prompt, teachers: list[str]) -> Route:
        rng = random.Random(stable_hash(self.seed, prompt.prompt_id))
        return Route(tuple(rng.sample(teachers, self.k)), f"random:k={self.k}")


class RoundRobinRouter:
    """One teacher per prompt, taken in turn: an even split with no randomness."""

    name = "round_robin"

    def __init__(self):
        self._turns: dict[str, int] = {}  # prompt id → its turn: routing a prompt again gives the same teacher

    def check(self, teachers: list[str]) -> None:
        return None

    def route(self, prompt: Prompt, teachers: list[str]) -> Route:
        turn = self._turns.setdefault(prompt.prompt_id, len(self._turns))
        return Route((teachers[turn % len(teachers)],), "round_robin")


class LearnedRouter:
    """Calls the one teacher whose reward a model (`arbitrage train-router RUN_DIR`) predicts highest."""

    name = "learned"

    def __init__(self, model: str):
        self.path = Path(model)
        self._model = None  # loaded by check(); the embedding model on the first prompts routed
        self._embedded: dict = {}

    def _load(self):
        from arbitrage.router_model import RouterModel

        if self._model is None:
            self._model = RouterModel.load(self.path)
        return self._model

    def check(self, teachers: list[str]) -> None:
        if not self.path.is_file():
            raise ConfigError(
                f"router.model {self.path} does not exist — build it with `arbitrage train-router RUN_DIR` (writes RUN_DIR/router.pt)"
            )
        model = self._load()
        if not set(model.teachers) & set(teachers):
            raise ConfigError(
                f"router.model {self.path} was trained for {', '.join(model.teachers)}, none of which is configured — "
                f"configured: {', '.join(teachers)}; train it on a run with these teachers"
            )

    def prepare(self, prompts: Sequence[Prompt]) -> None:
        from arbitrage.router_model import embed

        todo = [p for p in prompts if p.prompt_id not in self._embedded]
        self._embedded.update(zip((p.prompt_id for p in todo), embed(todo), strict=True))

    def route(self, prompt: Prompt, teachers: list[str]) -> Route:
        model = self._load()
        if prompt.prompt_id not in self._embedded:
            self.prepare([prompt])
        predicted = model.predict([prompt], self._embedded[prompt.prompt_id][None])[0]
        known = [(float(predicted[j]), t) for j, t in enumerate(model.teachers) if t in teachers]
        best, teacher = max(known, key=lambda pair: pair[0])  # ties: the first teacher the model knows
        return Route((teacher,), f"learned:{best:.3f}")
