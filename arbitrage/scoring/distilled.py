"""`reward=distilled reward.model=scorer.pt`: the cheap scorer alone, a head learned from an expensive one.

`arbitrage train-scorer RUN_DIR` fits the head on a finished run's (prompt, answer) pairs to
predict that run's scores (a judge's ratings, a reward model's logits), FineWeb-Edu style
(arbitrage/heads.py). Scoring a candidate is then one embedding and a dot product on the CPU, no
engine call: the judge's scale, at the price of the head's error (its card: `reward.model`'s
held-out RMSE and within-prompt order agreement, printed by train-scorer). `reward=cascade` keeps
the judge for the answers the head cannot settle (scoring/cascade.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from arbitrage.heads import HeadModel
from arbitrage.rows import Call, Candidate
from arbitrage.scoring import Item, Score
from arbitrage.settings import text


class DistilledScorer:
    name = "distilled"

    def __init__(self, model: str):
        self.path = Path(text("reward.model", model, optional=False))
        self.teachers = {}  # local: no engine calls
        self._model: HeadModel | None = None

    @property
    def model(self) -> HeadModel:
        if self._model is None:
            self._model = HeadModel.load(self.path, "answer")
        return self._model

    def check(self) -> None:
        """A missing or wrong file is one error line before any teacher is called."""
        self._model = HeadModel.load(self.path, "answer")

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        """The head's score of each (prompt, answer), rounded as scores are stored (a resume ranks alike)."""
        return np.round(self.model.score_answers(items), 6)

    def calls(self, items: Sequence[Item]) -> list[Call]:
        return []

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate] | None = None) -> list[Score]:
        values = await asyncio.to_thread(self.predict, items)
        return [Score(float(v), {"distilled": str(self.path.name)}) for v in values]

    async def close(self) -> None:
        return None
