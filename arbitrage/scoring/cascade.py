"""`reward=cascade`: every candidate scored by the cheap head, only each prompt's top k by the judge.

With several teachers × n samples the judge is the largest cost of a run, yet selection only needs
to know which answer is best. The head distilled from that judge (`arbitrage train-scorer`,
scoring/distilled.py) ranks a prompt's candidates; the `reward.top_k` it ranks highest go to the
expensive scorer (a judge, configured as in conf/reward/judge.yaml, or any Scorer), which decides.
Its calls go through the engine like the judge's own: retried, rate limited, budgeted and
journaled, and the ranking is a deterministic function of the answers, so a resume asks for the same
judgments and the journal has them all.

How the two scales meet: a judged candidate's score is the expensive scorer's. An unjudged one keeps
its cheap score, capped just below the lowest judged score of its prompt,
`min(cheap, lowest judged − 1e-6)`, so it can never beat a judged answer; it can still be chosen
when every judged answer is filtered out (a refusal, a wrong language), and still be a DPO
`rejected`. Every score's details say which it is (`judged`, `cheap`, `capped`). A prompt none of
whose top k got a judgment (the judge failed) fails as a whole, as with the judge alone: no
answer is chosen on the cheap score only (retry_failed=true sends the failed judgments again).

A prompt with at most k candidates needs no ranking: all of them go to the judge, and the head is
not run. `arbitrage estimate` plans one candidate at a time, so it counts one judgment per
candidate, as for the judge: an upper bound (a run sends min(top_k, candidates) per prompt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from arbitrage.errors import ConfigError
from arbitrage.rows import Call, Candidate
from arbitrage.scoring import Item, Score, Scorer
from arbitrage.scoring.distilled import DistilledScorer
from arbitrage.settings import number

BELOW = 1e-6  # how far under a prompt's lowest judged score an unjudged candidate is capped


class CascadeScorer:
    name = "cascade"

    def __init__(self, model: str, expensive: Scorer, top_k: int = 1):
        self.cheap = DistilledScorer(model)
        self.expensive = expensive
        self.top_k = number("reward.top_k", top_k, int, 1)
        self.teachers = dict(expensive.teachers)
        self._cheap: dict[str, float] = {}  # candidate call id → cheap score, from calls() to score()

    def check(self) -> None:
        if not isinstance(self.expensive, Scorer) or isinstance(self.expensive, CascadeScorer):
            raise ConfigError("reward.expensive must be a scorer such as the judge of conf/reward/judge.yaml")
        self.cheap.check()
        self.expensive.check()

    def split(self, items: Sequence[Item]) -> tuple[dict[int, float], list[int]]:
        """The cheap score of each item whose prompt has more than k candidates (the others all go
        to the judge: nothing to rank), and the indices of every prompt's top k. Ties go to the
        candidate that comes first (route order, then sample), so a rerun picks the same ones."""
        by_prompt: dict[str, list[int]] = {}
        for i, (p, _) in enumerate(items):
            by_prompt.setdefault(p.prompt_id, []).append(i)
        ranked = [i for rows in by_prompt.values() if len(rows) > self.top_k for i in rows]
        missing = [i for i in ranked if items[i][1].call_id not in self._cheap]
        if missing:
            for i, v in zip(missing, self.cheap.predict([items[i] for i in missing]), strict=True):
                self._cheap[items[i][1].call_id] = float(v)
        values = {i: self._cheap[items[i][1].call_id] for i in ranked}
        top = [i for rows in by_prompt.values() for i in sorted(rows, key=lambda i: -values.get(i, 0.0))[: self.top_k]]
        return values, sorted(top)

    def calls(self, items: Sequence[Item]) -> list[Call]:
        _, top = self.split(items)
        return self.expensive.calls([items[i] for i in top])

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate]) -> list[Score]:
        values, top = self.split(items)
        for _, c in items:  # flat memory: a prompt is scored once
            self._cheap.pop(c.call_id, None)
        judged = dict(zip(top, await self.expensive.score([items[i] for i in top], answers), strict=True))
        lowest: dict[str, float] = {}
        failures: dict[str, str] = {}
        for i, s in judged.items():
            pid = items[i][0].prompt_id
            if s.value is not None:
                lowest[pid] = min(lowest.get(pid, s.value), s.value)
            else:
                failures.setdefault(pid, s.error or "no judgment")
        scores = []
        for i, (p, _) in enumerate(items):
            cheap = values.get(i)
            if i in judged:
                s = judged[i]
                scores.append(replace(s, details={"judged": True, "cheap": cheap, **s.details}))  # its checks too
            elif p.prompt_id in lowest:
                capped = min(cheap, round(lowest[p.prompt_id] - BELOW, 6))
                scores.append(Score(capped, {"judged": False, "cheap": cheap, "capped": capped < cheap}))
            else:
                scores.append(
                    Score.failed(
                        f"cascade: none of the top {self.top_k} got a judgment ({failures.get(p.prompt_id)})",
                        {"judged": False, "cheap": cheap},
                    )
                )
        return scores

    async def close(self) -> None:
        await self.expensive.close()
