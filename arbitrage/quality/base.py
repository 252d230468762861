"""The quality stage's contract: filters that drop prompts before generation and answers after it.

Each filter looks at a whole stage at once (dedup needs every item) and returns what it drops,
with a reason: nothing is discarded silently. Stages:

- `prompt`: Prompt rows before routing — dedup and decontamination save teacher calls.
- `answer`: (Prompt, Candidate) of every scored answer — truncated, refusals, wrong language,
  loops. A filtered answer is never chosen but can still be a DPO `rejected`.
- `chosen`: (Prompt, Scored) of each prompt's chosen answer — reward below a threshold, and dedup
  of the answers we keep. When one drops the best answer, the next best is tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt, Scored

STAGES = ("prompt", "answer", "chosen")
FIELDS = ("prompt", "response")


def checked(name: str, stage: str, field: str = "prompt") -> tuple[str, str]:
    """A filter's stage and field, or one error naming the choices (a typo is not a silent default)."""
    if stage not in STAGES:
        raise ConfigError(f"filters.{name}.stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if field not in FIELDS:
        raise ConfigError(f"filters.{name}.field must be one of {', '.join(FIELDS)}, got {field!r}")
    if stage == "prompt" and field != "prompt":
        raise ConfigError(f"filters.{name}: a prompt-stage filter can only look at field=prompt")
    return stage, field


@runtime_checkable
class Filter(Protocol):
    name: str
    stage: str  # one of STAGES

    def check(self) -> None:
        """Raise ConfigError naming the fix (a missing eval file, a bad threshold)."""

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        """Indexes of the items to drop, each with a reason."""


def text_of(item: Prompt | tuple[Prompt, Scored], field: str) -> str:
    """The text a filter looks at: a prompt's user message, or an answer's text."""
    if isinstance(item, Prompt):
        return item.user_text
    prompt, scored = item
    return prompt.user_text if field == "prompt" else scored.candidate.text or ""


def apply(filters: Sequence[Filter], stage: str, items: list, counts: dict[str, int]) -> tuple[list, dict[int, str]]:
    """Run a stage's filters in order; returns the kept items and {original index: reason}."""
    assert stage in STAGES, stage
    reasons: dict[int, str] = {}
    index = list(range(len(items)))
    for f in filters:
        if f.stage != stage:
            continue
        current = [items[i] for i in index]
        dropped = f.drop(current)
        counts[f.name] = counts.get(f.name, 0) + len(dropped)
        for j, why in dropped.items():
            reasons[index[j]] = why
        index = [i for j, i in enumerate(index) if j not in dropped]
    return [items[i] for i in index], reasons
