"""`filters=prompt_quality`: drop the prompts no teacher should be paid for, before any is called.

FineWeb-Edu's recipe (arXiv 2406.17557) applied to the prompt stream: a judge rates a sample of it
on an additive 0–5 rubric (`PromptRater`: the judge and the rubric are conf/rater/prompt_quality.yaml,
which a user edits or copies), a head on frozen embeddings is fitted to the ratings (arbitrage/heads.py),
and only the head reads the whole stream: `arbitrage train-prompt-scorer` does the first two
(analysis/train_scorer.py, the judge's calls through the engine and its journal), this filter the
third. A prompt whose predicted points fall below `threshold` goes to rejected_rows with the
prediction in its reason; for a 1M-prompt file and 3 teachers each dropped prompt saves 3 calls, which
`arbitrage estimate` shows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from arbitrage.errors import ConfigError
from arbitrage.heads import HeadModel
from arbitrage.rows import Call, Prompt, make_call, stable_hash
from arbitrage.settings import number, text
from arbitrage.teachers import Teacher, teacher_key

SCORE = re.compile(r"score\s*:\s*\**\s*(\d+)", re.IGNORECASE)


class PromptRater:
    """A judge that rates prompts on a rubric: the template has `{prompt}` and asks for a line
    `... score: <points>` (FineWeb-Edu's "Educational score: <points>"); the last such line counts."""

    def __init__(self, judge: Teacher, template: str, scale_max: int = 5, sample: int = 500, seed: int = 0):
        self.judge = judge
        self.template = text("rater.template", template, optional=False)
        self.scale_max = number("rater.scale_max", scale_max, int, 1)
        self.sample = number("rater.sample", sample, int, 4)
        self.seed = number("rater.seed", seed, int)
        self.teachers = {judge.name: judge}

    def check(self) -> None:
        if "{prompt}" not in self.template:
            raise ConfigError("rater.template must contain {prompt}, where the request to rate goes")
        self.judge.check()

    def request(self, prompt: Prompt) -> Prompt:
        """The judge's prompt for one request; its id hashes its text, so a rerun finds its rating."""
        messages = ({"role": "user", "content": self.template.replace("{prompt}", prompt.user_text)},)
        return Prompt(
            "rate-" + stable_hash(messages), prompt.persona_id, prompt.language, prompt.domain, prompt.task, "", messages
        )

    def calls(self, prompts: Sequence[Prompt]) -> list[Call]:
        key = teacher_key(self.judge)
        return [make_call(self.request(p), self.judge.name, key) for p in prompts]

    def rating(self, reply: str | None) -> float | None:
        found = SCORE.findall(reply or "")
        if found and 0 <= int(found[-1]) <= self.scale_max:
            return float(found[-1])
        bare = (reply or "").strip()
        return float(bare) if bare.isdigit() and 0 <= int(bare) <= self.scale_max else None


class PromptQuality:
    """Prompt stage: drops a prompt whose predicted rubric points are below `threshold`."""

    stage = "prompt"

    def __init__(self, model: str, threshold: float = 2.5, name: str = "prompt_quality"):
        self.name = name
        self.path = Path(text(f"filters.{name}.model", model, optional=False))
        self.threshold = number(f"filters.{name}.threshold", threshold, float)
        self._model: HeadModel | None = None

    @property
    def model(self) -> HeadModel:
        if self._model is None:
            self._model = HeadModel.load(self.path, "prompt")
        return self._model

    def check(self) -> None:
        """A missing or wrong file is one error line before any teacher is called."""
        self._model = HeadModel.load(self.path, "prompt")

    def drop(self, items: Sequence[Prompt]) -> dict[int, str]:
        predicted = self.model.score_prompts(list(items))
        scale = self.model.card.get("scale_max", 5)
        return {
            i: f"{self.name}: predicted {v:.2f} of {scale} < {self.threshold}"
            for i, v in enumerate(predicted.tolist())
            if v < self.threshold
        }
