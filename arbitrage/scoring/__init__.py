"""Scorers grade candidates. One protocol; `WeightedScorer` composes several into one score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from arbitrage.rows import Candidate, Prompt


@dataclass(frozen=True)
class Score:
    value: float
    details: dict = field(default_factory=dict)


@runtime_checkable
class Scorer(Protocol):
    name: str

    def check(self) -> None:
        """Raise ConfigError naming the fix, before any model loads."""

    async def score(self, items: Sequence[tuple[Prompt, Candidate]]) -> list[Score]:
        """One Score per (prompt, candidate), in order; higher is better."""

    async def close(self) -> None: ...


class WeightedScorer:
    """Σ weight·score / Σ weight. Scales differ (a reward model's logits vs a pass rate in [0, 1]):
    choose weights with that in mind."""

    name = "weighted"

    def __init__(self, scorers: dict[str, dict]):
        # Each entry: {"scorer": Scorer, "weight": float} — the shape Hydra instantiates.
        self.parts = {name: (entry["scorer"], float(entry.get("weight", 1.0))) for name, entry in scorers.items()}

    def check(self) -> None:
        from arbitrage.errors import ConfigError

        if not self.parts or sum(w for _, w in self.parts.values()) <= 0:
            raise ConfigError("reward=weighted needs at least one scorer with a positive weight")
        for scorer, _ in self.parts.values():
            scorer.check()

    async def score(self, items: Sequence[tuple[Prompt, Candidate]]) -> list[Score]:
        total = sum(w for _, w in self.parts.values())
        per_part = {name: await scorer.score(items) for name, (scorer, _) in self.parts.items()}
        combined = []
        for i in range(len(items)):
            value = sum(per_part[name][i].value * w for name, (_, w) in self.parts.items()) / total
            details = {name: {"score": per_part[name][i].value, **per_part[name][i].details} for name in self.parts}
            combined.append(Score(value, details))
        return combined

    async def close(self) -> None:
        for scorer, _ in self.parts.values():
            await scorer.close()
