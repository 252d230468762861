"""The `learned` router: calls the one teacher whose reward a model predicts highest.

Selective arbitrage (`router.max_calls=2`): also calls the next teacher where the model's
expected gain from a second answer clears `router.min_gain` (routers/model.py `plan`), so the
calls go to the prompts where the teachers are close or the prediction is unsure. Or give it a
budget, `router.calls_per_prompt=1.5`: `min_gain` is then the bar at which the training prompts,
predicted unseen, would average that many calls, and the run never exceeds the budget.

Build the model with `arbitrage train-router RUN_DIR` on an `all` run (routers/model.py). Each batch
of prompts is embedded at once and routed; nothing is kept per prompt, so memory stays flat in N.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt, Route
from arbitrage.settings import number


@dataclass
class CallBudget:
    """At most `per_prompt` calls per prompt over a run, as a hard cap: a prompt gets its further
    calls only while the calls so far leave room for them (routing order decides at the edge)."""

    per_prompt: float
    calls: int = 0
    prompts: int = 0

    def trim(self, plan: list[str]) -> list[str]:
        self.prompts += 1
        room = max(1, math.floor(self.per_prompt * self.prompts + 1e-9) - self.calls)  # per_prompt ≥ 1: always ≥ 1
        plan = plan[:room]
        self.calls += len(plan)
        return plan


class LearnedRouter:
    name = "learned"

    def __init__(self, model: str, max_calls: int = 1, min_gain: float = 0.05, calls_per_prompt: float | None = None):
        self.path = Path(model)
        self.max_calls = number("router.max_calls", max_calls, int, 1)
        self.min_gain = number("router.min_gain", min_gain, float, 0)
        self.budget = None
        if calls_per_prompt is not None:
            self.budget = CallBudget(number("router.calls_per_prompt", calls_per_prompt, float, 1))
            if self.max_calls < 2:
                raise ConfigError(
                    f"router.calls_per_prompt={calls_per_prompt} needs router.max_calls=2 or more (the most teachers one prompt may get)"
                )
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
        if self.budget is not None:
            self.min_gain = model.min_gain_for(self.budget.per_prompt, teachers, self.max_calls)

    def identity(self) -> dict:
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16] if self.path.is_file() else str(self.path)
        if self.budget is not None:
            selective = {"max_calls": self.max_calls, "calls_per_prompt": self.budget.per_prompt}
        else:
            selective = {"max_calls": self.max_calls, "min_gain": self.min_gain} if self.max_calls > 1 else {}
        return {"router": "learned", "model": digest, **selective}

    def route(self, prompts: Sequence[Prompt], teachers: Sequence[str]) -> list[Route]:
        from arbitrage.routers.model import embed

        if not prompts:
            return []
        model = self._load()
        predicted = model.predict(prompts, embed(prompts))
        plans = model.plan(predicted, teachers, self.max_calls, self.min_gain)
        if self.budget is not None:
            plans = [self.budget.trim(plan) for plan in plans]
        col = {t: j for j, t in enumerate(model.teachers)}
        routes = []
        for row, plan in zip(predicted.tolist(), plans, strict=True):
            kind = "selective" if len(plan) > 1 else "learned"
            routes.append(Route(tuple(plan), f"{kind}:" + ",".join(f"{row[col[t]]:.3f}" for t in plan)))
        return routes
