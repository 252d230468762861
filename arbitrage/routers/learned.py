"""The `learned` router: calls the one teacher whose reward a model predicts highest.

Build the model with `arbitrage train-router RUN_DIR` on an `all` run (routers/model.py). Each batch
of prompts is embedded at once and routed; nothing is kept per prompt, so memory stays flat in N.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from arbitrage.errors import ConfigError
from arbitrage.routers import Route
from arbitrage.rows import Prompt


class LearnedRouter:
    name = "learned"

    def __init__(self, model: str):
        self.path = Path(model)
        self._model = None  # loaded by check(); the embedding model on the first prompts routed

    def _load(self):
        from arbitrage.routers.model import RouterModel

        if self._model is None:
            self._model = RouterModel.load(self.path)
        return self._model

    def check(self, teachers: Sequence[str]) -> None:
        if not self.path.is_file():
            raise ConfigError(
                f"router.model {self.path} does not exist — build it with `arbitrage train-router RUN_DIR` (writes RUN_DIR/router.pt)"
            )
        model = self._load()
        if not set(model.teachers) & set(teachers):
            raise ConfigError(
                f"router.model {self.path} was trained for {', '.join(model.teachers)}, none of which is configured — "
                f"configured: {', '.join(teachers)}; train it on a run with these teachers"
            )

    def identity(self) -> dict:
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16] if self.path.is_file() else str(self.path)
        return {"router": "learned", "model": digest}

    def route(self, prompts: Sequence[Prompt], teachers: Sequence[str]) -> list[Route]:
        from arbitrage.routers.model import embed

        if not prompts:
            return []
        model = self._load()
        predicted = model.predict(prompts, embed(prompts))
        routes = []
        for row in predicted:
            known = [(float(row[j]), t) for j, t in enumerate(model.teachers) if t in teachers]
            best, teacher = max(known, key=lambda pair: pair[0])  # ties: the first teacher the model knows
            routes.append(Route((teacher,), f"learned:{best:.3f}"))
        return routes
