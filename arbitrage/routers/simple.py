"""The routers that need no model: all teachers, fixed maps, random draws, turns."""

from __future__ import annotations

import random
from collections.abc import Sequence

from arbitrage.errors import ConfigError
from arbitrage.routers import Route, known
from arbitrage.rows import Prompt, stable_hash
from arbitrage.settings import number, text


class AllTeachers:
    """Every teacher answers every prompt; the reward picks the best (the arbitrage default)."""

    name = "all"

    def check(self, teachers: Sequence[str]) -> None:
        return None

    def identity(self) -> dict:
        return {"router": "all"}

    def route(self, prompts: Sequence[Prompt], teachers: Sequence[str]) -> list[Route]:
        route = Route(tuple(teachers), "all")
        return [route] * len(prompts)


class FixedRouter:
    """One teacher per prompt: by language, then by task, else the default teacher."""

    name = "fixed"

    def __init__(self, teacher: str | None = None, by_language: dict | None = None, by_task: dict | None = None):
        self.teacher = text("router.teacher", teacher)
        self.by_language = dict(by_language or {})
        self.by_task = dict(by_task or {})

    def check(self, teachers: Sequence[str]) -> None:
        if self.teacher is not None:
            known(self.teacher, teachers, "router.teacher")
        for key, name in {**self.by_language, **self.by_task}.items():
            known(name, teachers, f"router map entry '{key}'")

    def identity(self) -> dict:
        return {"router": "fixed", "teacher": self.teacher, "by_language": self.by_language, "by_task": self.by_task}

    def route(self, prompts: Sequence[Prompt], teachers: Sequence[str]) -> list[Route]:
        return [self._one(p, teachers) for p in prompts]

    def _one(self, prompt: Prompt, teachers: Sequence[str]) -> Route:
        if prompt.language in self.by_language:
            return Route((self.by_language[prompt.language],), f"fixed:language={prompt.language}")
        if prompt.task in self.by_task:
            return Route((self.by_task[prompt.task],), f"fixed:task={prompt.task}")
        return Route((self.teacher or teachers[0],), "fixed:default")


class RandomRouter:
    """k teachers drawn per prompt; seeded by the prompt id, so a rerun routes identically."""

    name = "random"

    def __init__(self, k: int = 1, seed: int = 0):
        self.k = number("router.k", k, int, 1)
        self.seed = number("router.seed", seed, int)

    def check(self, teachers: Sequence[str]) -> None:
        if not isinstance(self.k, int) or not 1 <= self.k <= len(teachers):
            raise ConfigError(f"router.k must be between 1 and the number of teachers ({len(teachers)}), got {self.k!r}")

    def identity(self) -> dict:
        return {"router": "random", "k": self.k, "seed": self.seed}

    def route(self, prompts: Sequence[Prompt], teachers: Sequence[str]) -> list[Route]:
        routes = []
        for prompt in prompts:
            rng = random.Random(stable_hash(self.seed, prompt.prompt_id))
            routes.append(Route(tuple(rng.sample(list(teachers), self.k)), f"random:k={self.k}"))
        return routes


class RoundRobinRouter:
    """One teacher per prompt, taken in turn: an even split with no randomness. Turns follow the
    prompt order, which a rerun repeats, so a resumed run routes every prompt the same way."""

    name = "round_robin"

    def __init__(self):
        self._turn = 0

    def check(self, teachers: Sequence[str]) -> None:
        return None

    def identity(self) -> dict:
        return {"router": "round_robin"}

    def route(self, prompts: Sequence[Prompt], teachers: Sequence[str]) -> list[Route]:
        routes = []
        for _ in prompts:
            routes.append(Route((teachers[self._turn % len(teachers)],), "round_robin"))
            self._turn += 1
        return routes
