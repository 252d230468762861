"""An LLM judge: a teacher (API, OpenAI-compatible server or local vLLM) rates each answer 1–9.

With first-token log-probs (OpenAI-compatible servers, vLLM) the score is the expected rating
over the digit tokens, which separates close answers better than the sampled digit (G-Eval,
arXiv 2303.16634). Without them, the first integer in the reply is used. The judge's calls go
through the engine like any teacher's: retried, rate limited, budgeted, journaled (a resume reuses
every judgment). A judgment that fails or cannot be read is a failure, never a score. The packaged
135M/270M models cannot judge (measured: their ratings move ≤ 0.2 points between good and bad
answers), so this is never the offline default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from arbitrage.errors import ConfigError
from arbitrage.rows import Call, Candidate, Prompt, make_call, stable_hash
from arbitrage.scoring import Item, Score
from arbitrage.teachers import Teacher, teacher_key

DEFAULT_TEMPLATE = """You are grading an assistant's answer to a user's request.

[Request]
{request}

[Answer]
{answer}

Rate how helpful, correct and faithful to every instruction in the request the answer is, on a scale from 1 (useless) to 9 (perfect). Reply with a single digit only."""


class JudgeScorer:
    name = "judge"

    def __init__(self, judge: Teacher, template: str = DEFAULT_TEMPLATE, scale_max: int = 9):
        self.judge = judge
        self.template = template
        self.scale_max = scale_max
        self.teachers = {judge.name: judge}
        self._key: str | None = None

    def check(self) -> None:
        if "{request}" not in self.template or "{answer}" not in self.template:
            raise ConfigError("reward.template must contain {request} and {answer}")
        if not isinstance(self.scale_max, int) or not 2 <= self.scale_max <= 9:
            raise ConfigError(f"reward.scale_max must be an integer from 2 to 9 (one digit), got {self.scale_max!r}")
        self.judge.check()

    def request(self, prompt: Prompt, candidate: Candidate) -> Prompt:
        """The judge's prompt for one answer; its id hashes its text, so a resume finds its judgment."""
        text = self.template.replace("{request}", prompt.user_text).replace("{answer}", candidate.text or "")
        messages = ({"role": "user", "content": text},)
        return Prompt(
            "judge-" + stable_hash(messages), prompt.persona_id, prompt.language, prompt.domain, prompt.task, "", messages
        )

    def calls(self, items: Sequence[Item]) -> list[Call]:
        self._key = self._key or teacher_key(self.judge)
        return [make_call(self.request(p, c), self.judge.name, self._key) for p, c in items]

    def rating(self, text: str | None, logprobs: list | None) -> tuple[float | None, str]:
        if logprobs:
            weights = {}
            for entry in logprobs:
                token = entry["token"].strip()
                if token.isdigit() and 1 <= int(token) <= self.scale_max:
                    weights[int(token)] = weights.get(int(token), 0.0) + math.exp(entry["logprob"])
            if weights:
                total = sum(weights.values())
                return sum(k * w for k, w in weights.items()) / total, "logprobs"
        match = re.search(r"\d+", text or "")
        if match and 1 <= int(match.group()) <= self.scale_max:
            return float(match.group()), "text"
        return None, "unparsed"

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate]) -> list[Score]:
        scores = []
        for call in self.calls(items):
            answer = answers.get(call.call_id)
            if answer is None or answer.error:
                scores.append(Score.failed(f"judge: {answer.error if answer else 'no answer'}"))
                continue
            value, source = self.rating(answer.text, answer.logprobs)
            if value is None:
                scores.append(Score.failed(f"judge: no rating in its reply {(answer.text or '')[:40]!r}"))
                continue
            # Normalised to [0, 1] so it mixes with the verifiable pass rate.
            scores.append(Score(round((value - 1) / (self.scale_max - 1), 6), {"rating": round(value, 6), "source": source}))
        return scores

    async def close(self) -> None:
        return None  # the engine closes the judge with the other teachers
