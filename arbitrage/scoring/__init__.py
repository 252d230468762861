"""Scorers grade candidates. One protocol; `WeightedScorer` composes several into one score.

A scorer that needs a model behind an API (the judge) does not call it: `calls(items)` says what to
ask, the pipeline sends those calls through the engine (retries, rate limits, budget, journal),
and `score(items, answers)` reads the answers. A judgment that fails is a failure with its reason
(`Score.error`), never a number, so it can never make an answer chosen or rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from arbitrage.errors import ConfigError
from arbitrage.rows import Call, Candidate, Prompt
from arbitrage.teachers import Teacher

Item = tuple[Prompt, Candidate]


@dataclass(frozen=True)
class Score:
    """One answer's grade. `checks` are the pass/fail verdicts behind it; `gates` name those that
    say whether the answer is correct (a known final answer, its tests) rather than well formatted:
    selection keeps no answer that fails one (arbitrage/select.py, issue 23). `details` is what the
    scorer shows beside them (a rating, the loose verdicts)."""

    value: float | None  # None: no score, see `error`
    details: dict = field(default_factory=dict)
    error: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    gates: frozenset[str] = frozenset()

    @classmethod
    def failed(cls, error: str, details: dict | None = None) -> Score:
        return cls(None, details or {}, error)


@runtime_checkable
class Scorer(Protocol):
    name: str
    teachers: dict[str, Teacher]  # the models it asks through the engine ({} for local scorers)

    def check(self) -> None:
        """Raise ConfigError naming the fix, before any model loads."""

    def calls(self, items: Sequence[Item]) -> list[Call]:
        """The engine calls that scoring these items needs ([] for local scorers)."""

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate]) -> list[Score]:
        """One Score per (prompt, candidate), in order; higher is better. `answers`: call id → the
        engine's answer to each of `calls(items)`."""

    async def close(self) -> None: ...


class WeightedScorer:
    """Σ weight·score / Σ weight. Scales differ (a reward model's logits vs a pass rate in [0, 1]):
    choose weights with that in mind. If any part fails, the combined score fails. The parts'
    checks and gates are merged (a check id two parts share is kept apart as `part/id`)."""

    name = "weighted"

    def __init__(self, scorers: dict[str, dict]):
        # Each entry: {"scorer": Scorer, "weight": float} — the shape Hydra instantiates.
        self.parts = {name: (entry["scorer"], float(entry.get("weight", 1.0))) for name, entry in scorers.items()}
        self.teachers = {}
        for scorer, _ in self.parts.values():
            clash = set(scorer.teachers) & set(self.teachers)
            if clash:
                raise ConfigError(f"reward=weighted: two scorers use a model named {', '.join(sorted(clash))} — rename one")
            self.teachers |= scorer.teachers

    def check(self) -> None:
        if not self.parts or sum(w for _, w in self.parts.values()) <= 0:
            raise ConfigError("reward=weighted needs at least one scorer with a positive weight")
        for scorer, _ in self.parts.values():
            scorer.check()

    def calls(self, items: Sequence[Item]) -> list[Call]:
        return [call for scorer, _ in self.parts.values() for call in scorer.calls(items)]

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate]) -> list[Score]:
        total = sum(w for _, w in self.parts.values())
        per_part = {name: await scorer.score(items, answers) for name, (scorer, _) in self.parts.items()}
        combined = []
        for i in range(len(items)):
            parts = {name: per_part[name][i] for name in self.parts}
            details = {
                name: {"score": s.value, **s.details, **({"error": s.error} if s.error else {})} for name, s in parts.items()
            }
            checks, gates = merge_checks(parts)
            failed = [f"{name}: {s.error}" for name, s in parts.items() if s.value is None]
            if failed:
                combined.append(Score(None, details, "; ".join(failed), checks, gates))
                continue
            value = sum(parts[name].value * w for name, (_, w) in self.parts.items()) / total
            combined.append(Score(value, details, None, checks, gates))
        return combined

    async def close(self) -> None:
        for scorer, _ in self.parts.values():
            await scorer.close()


def merge_checks(parts: Mapping[str, Score]) -> tuple[dict[str, bool], frozenset[str]]:
    """Every part's verdicts in one dict, and which of them are gates."""
    checks: dict[str, bool] = {}
    gates: set[str] = set()
    for name, s in parts.items():
        for check, ok in s.checks.items():
            key = check if check not in checks else f"{name}/{check}"
            checks[key] = ok
            if check in s.gates:
                gates.add(key)
    return checks, frozenset(gates)
