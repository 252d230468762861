"""Routers decide which teachers answer a prompt (Multilingual Arbitrage, arXiv 2408.14960).

`all` sends every prompt to every teacher and lets the reward pick (the arbitrage default);
`fixed` and `random` call one teacher per prompt — the single-teacher and random baselines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt, stable_hash


@dataclass(frozen=True)
class Route:
    teachers: tuple[str, ...]
    decision: str  # why, recorded with every dataset row


@runtime_checkable
class Router(Protocol):
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
