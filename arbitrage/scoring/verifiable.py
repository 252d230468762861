"""The offline default reward: the fraction of a prompt's verifiable checks a response passes.
Its verdicts are `Score.checks`; the ones that say the answer is correct (a known final answer,
or any check a prompts file marks `"gate": true`) are `Score.gates` (arbitrage/select.py).

Tulu 3 RLVR style: constraints attached at synthesis time (and known answers for math) are
checked programmatically. Deterministic, cheap, and it separates good from bad answers where the
packaged 135M/270M models cannot judge (their ratings move ≤ 0.2 points between good and bad answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from arbitrage import constraints as C
from arbitrage.rows import Call, Candidate, Prompt
from arbitrage.scoring import Item, Score
from arbitrage.settings import flag, number
from arbitrage.verify import math as verify_math


class VerifiableScorer:
    name = "verifiable"

    def __init__(self, truncated_penalty: float = 0.0, loose: bool = False):
        # A response cut off at max_tokens rarely satisfies "end with…"; optionally mark it down further.
        self.truncated_penalty = number("reward.truncated_penalty", truncated_penalty, float, 0, 1)
        self.loose = flag("reward.loose", loose)  # reward IFEval's loose verdicts instead of its strict ones
        self.teachers = {}

    def check(self) -> None:
        verify_math.require()  # the known-answer check: one line naming the install if it is missing

    def score_one(self, prompt: Prompt, candidate: Candidate) -> Score:
        text = candidate.text or ""
        strict, loose, gates = {}, {}, set()
        for key, c in C.keyed(prompt.constraints):
            strict[key] = C.check(c, text)
            # the loose variants start with the response itself: a strict pass is a loose pass
            loose[key] = strict[key] or C.check_loose(c, text)
            if C.is_gate(c):
                gates.add(key)
        results = loose if self.loose else strict
        value = sum(results.values()) / len(results) if results else 1.0
        if candidate.finish_reason == "length":
            value = max(0.0, value - self.truncated_penalty)
        # Gates are judged strictly whatever `loose` says: a known answer is right or it is not.
        return Score(round(value, 6), {"loose": loose}, checks=strict, gates=frozenset(gates))

    def calls(self, items: Sequence[Item]) -> list[Call]:
        return []

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate] | None = None) -> list[Score]:
        return [self.score_one(p, c) for p, c in items]

    async def close(self) -> None:
        return None
