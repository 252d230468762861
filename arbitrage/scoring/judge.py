"""An LLM judge: a teacher (API, OpenAI-compatible server or local vLLM) rates each answer 1–10.

With first-token log-probs (OpenAI-compatible servers, vLLM) the score is the expected rating
over the digit tokens, which separates close answers better than the sampled digit (G-Eval,
arXiv 2303.16634). Without them, the first integer in the reply is used. The packaged 135M/270M
models cannot judge (../shared/FACTS.md), so this is never the offline default.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import replace

from arbitrage.errors import ConfigError
from arbitrage.rows import Candidate, Prompt
from arbitrage.scoring import Score
from arbitrage.teachers import Teacher

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
        self._started = False

    def check(self) -> None:
        if "{request}" not in self.template or "{answer}" not in self.template:
            raise ConfigError("reward.template must contain {request} and {answer}")
        self.judge.check()

    def _judge_prompt(self, prompt: Prompt, candidate: Candidate) -> Prompt:
        text = self.template.replace("{request}", prompt.user_text).replace("{answer}", candidate.text or "")
        return replace(prompt, prompt_id=f"judge-{candidate.call_id}", messages=({"role": "user", "content": text},))

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

    async def score(self, items: Sequence[tuple[Prompt, Candidate]]) -> list[Score]:
        if not self._started:
            await self.judge.start()
            self._started = True
        judge_prompts = [self._judge_prompt(p, c) for p, c in items]
        size = self.judge.batch_size
        chunks = [judge_prompts[i : i + size] for i in range(0, len(judge_prompts), size)]
        limit = asyncio.Semaphore(max(1, self.judge.max_concurrency))

        async def judge_chunk(chunk: list[Prompt]):
            async with limit:
                return await self.judge.complete(chunk)

        completions = [c for chunk in await asyncio.gather(*map(judge_chunk, chunks)) for c in chunk]
        scores = []
        for completion in completions:
            value, source = self.rating(completion.text, completion.logprobs)
            # Normalised to [0, 1] so it mixes with the verifiable pass rate; unparsed counts as 0.
            normalised = 0.0 if value is None else (value - 1) / (self.scale_max - 1)
            scores.append(Score(round(normalised, 6), {"rating": value, "source": source, "error": completion.error}))
        return scores

    async def close(self) -> None:
        await self.judge.close()
