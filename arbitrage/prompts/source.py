"""Where a run's prompts come from: the `Source` protocol every prompt source has.

A source is checked before anything loads (a bad line is one error naming it), has a `digest()`
that identifies its prompt stream for resume, and iterates lazily: memory stays flat in its length.
`n_prompts` is not part of the digest: the stream does not depend on it, so a larger `n_prompts`
extends a run. The sources: persona synthesis (personas.py) and JSONL prompt files (jsonl.py);
`PromptWriter` (writer.py) is the PersonaHub stage that has a teacher write each request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt


@runtime_checkable
class Source(Protocol):
    n_prompts: int

    def check(self) -> None:
        """Raise ConfigError naming the fix (a bad persona file, a bad prompt line)."""

    def digest(self) -> str:
        """What identifies the prompt stream (not how much of it is drawn)."""

    def facts(self) -> dict:
        """What the viewer shows of the source (its kind; the persona files, where there are some)."""

    def __iter__(self) -> Iterator[Prompt]: ...


def check_n_prompts(n_prompts) -> int:
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts <= 0:
        raise ConfigError(f"n_prompts must be a positive integer, got {n_prompts!r} — e.g. n_prompts=32")
    return n_prompts
