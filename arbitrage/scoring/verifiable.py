"""The offline default reward: the fraction of a prompt's verifiable checks a response passes.

Tulu 3 RLVR style: constraints attached at synthesis time (and known answers for math) are
checked programmatically. Deterministic, cheap, and it separates good from bad answers where the
packaged 135M/270M models cannot judge (their ratings move ≤ 0.2 points between good and bad answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from arbitrage import constraints as C
from arbitrage.rows import Call, Candidate, Prompt
from arbitrage.scoring import Item, Score
from arbitrage.settings import number


class VerifiableScorer:
    name = "verifiable"

    def __init__(self, truncated_penalty: float = 0.0):
        # A response cut off at max_tokens rarely satisfies "end with…"; optionally mark it down further.
        self.truncated_penalty = number("reward.truncated_penalty", truncated_penalty, float, 0, 1)
        self.teachers = {}

    def check(self) -> None:
        return None

    def score_one(self, prompt: Prompt, candidate: Candidate) -> Score:
        text = candidate.text or ""
        results = {c["type"]: C.check(c, text) for c in prompt.constraints}
        value = sum(results.values()) / len(results) if results else 1.0
        if candidate.finish_reason == "length":
            value = max(0.0, value - self.truncated_penalty)
        return Score(round(value, 6), {"checks": results})

    def calls(self, items: Sequence[Item]) -> list[Call]:
        return []

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate] | None = None) -> list[Score]:
        return [self.score_one(p, c) for p, c in items]

    async def close(self) -> None:
        return None
