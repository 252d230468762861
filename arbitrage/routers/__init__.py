"""Routers decide which teachers answer each prompt (Multilingual Arbitrage, arXiv 2408.14960).

`all` sends every prompt to every teacher and lets the reward pick (the arbitrage default);
`fixed`, `random` and `round_robin` call one teacher per prompt — the single-teacher and random
baselines; `learned` calls the teacher a model trained on an `all` run predicts will win; `bandit`
learns online which teacher wins, from the scores of earlier waves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from arbitrage.errors import ConfigError
from arbitrage.rows import Candidate, Prompt, Route


@dataclass(frozen=True)
class Observation:
    """What one call was worth to the dataset: `reward` is None when its answer can never be chosen
    (it failed, its scoring failed, or a filter dropped it)."""

    prompt: Prompt
    candidate: Candidate
    reward: float | None


@runtime_checkable
class Router(Protocol):
    name: str

    def check(self, teachers: Sequence[str]) -> None:
        """Raise ConfigError when the router names a teacher that is not configured."""

    def identity(self) -> dict:
        """What decides its routes: part of the run's identity."""

    def route(self, prompts: Sequence[Prompt], teachers: Sequence[str]) -> list[Route]:
        """One route per prompt, in order; a batch at a time (the learned router embeds it at once)."""


@runtime_checkable
class OnlineRouter(Router, Protocol):
    """A router that learns during the run: the pipeline routes, generates and scores `wave_size`
    prompts at a time, and shows it every scored call before it routes the next wave."""

    wave_size: int

    def observe(self, observations: Sequence[Observation]) -> None: ...


def known(teacher: str, teachers: Sequence[str], where: str) -> None:
    if teacher not in teachers:
        raise ConfigError(f"{where} names teacher '{teacher}', which is not configured — configured: {', '.join(teachers)}")


__all__ = ["OnlineRouter", "Observation", "Route", "Router", "known"]
