"""The offline default reward: the fraction of a prompt's verifiable checks a response passes.

Tulu 3 RLVR style: constraints attached at synthesis time (and known answers for math) are
checked programmatically. Deterministic, cheap, and it separates good from bad answers where the
packaged 135M/270M models cannot judge (../shared/FACTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from arbitrage import constraints as C
from arbitrage.rows import Candidate, Prompt
from arbitrage.scoring import Score


class VerifiableScorer:
    name = "verifiable"

    def __init__(self, truncated_penalty: float = 0.0):
        # A response cut off at max_tokens rarely satisfies "end with…"; optionally mark it down further.
        self.truncated_penalty = truncated_penalty

    def check(self) -> None:
        return None

    def score_one(self, prompt: Prompt, candidate: Candidate) -> Score:
        text = candidate.text or ""
        results = {c["type"]: C.check(c, text) for c in prompt.constraints}
        value = sum(results.values()) / len(results) if results else 1.0
        if candidate.finish_reason == "length":
            value = max(0.0, value - self.truncated_penalty)
        return Score(round(value, 6), {"checks": results})

    async def score(self, items: Sequence[tuple[Prompt, Candidate]]) -> list[Score]:
        return [self.score_one(p, c) for p, c in items]

    async def close(self) -> None:
        return None
