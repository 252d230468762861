"""Teachers answer prompts. One small protocol; local vLLM and API implementations compose it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from arbitrage.rows import Completion, Prompt, stable_hash


def prompt_seed(seed: int, prompt: Prompt) -> int:
    """A per-prompt sampling seed: an answer is reproducible whatever batch or retry it lands in."""
    return int(stable_hash(seed, prompt.prompt_id, length=8), 16)


@runtime_checkable
class Teacher(Protocol):
    name: str
    batch_size: int  # prompts per complete() call: large for a local engine, 1 for an API
    max_concurrency: int  # complete() calls in flight at once

    def check(self) -> None:
        """Raise ConfigError naming the fix (missing key, missing model) — before any model loads."""

    def generation_key(self) -> dict:
        """What changes the answers (model, sampling, template): part of every call id.

        Not the endpoint or the key: a server that moves keeps its journaled answers."""

    async def start(self) -> None: ...

    async def complete(self, prompts: Sequence[Prompt]) -> list[Completion]:
        """One Completion per prompt, in order. Failures come back as Completion(error=...)."""

    async def close(self) -> None: ...
