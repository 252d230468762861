"""Best-of-n selection and DPO pairing, per prompt."""

from __future__ import annotations

import random
from dataclasses import dataclass

from arbitrage.routing import Route
from arbitrage.rows import Prompt, Scored, stable_hash


@dataclass(frozen=True)
class SelectionSpec:
    pairs: str = "worst"  # worst | random_lower: which lower-scored answer becomes `rejected`
    min_margin: float = 0.01  # pairs closer than this are dropped (ties teach nothing)


@dataclass
class Selection:
    prompt: Prompt
    route: Route
    candidates: list[Scored]  # every candidate, usable or not
    chosen: Scored | None = None
    rejected: Scored | None = None
    reason: str | None = None  # why there is no chosen answer
    pair_reason: str | None = None  # why there is no DPO pair

    @property
    def margin(self) -> float | None:
        if self.chosen is None or self.rejected is None:
            return None
        return round(self.chosen.score - self.rejected.score, 6)


def _rank(prompt: Prompt, scored: list[Scored]) -> list[Scored]:
    # Ties: an answer cut off at max_tokens loses; then a draw seeded by the prompt id, so no
    # teacher wins ties just by coming first in the config, and reruns pick the same answer.
    return sorted(
        scored,
        key=lambda s: (
            -s.score,
            s.candidate.finish_reason == "length",
            stable_hash("tie", prompt.prompt_id, s.candidate.teacher),
        ),
    )


def select(prompt: Prompt, route: Route, scored: list[Scored], spec: SelectionSpec) -> Selection:
    """Best unfiltered answer is chosen; any lower-scored answer, filtered ones included (a
    refusal or a wrong-language answer is a fine DPO negative), can be rejected."""
    selection = Selection(prompt, route, scored)
    usable = [s for s in scored if s.candidate.ok]
    eligible = [s for s in usable if not s.filtered]
    if not eligible:
        problems = [f"{s.candidate.teacher}: {s.filtered or s.candidate.error or 'empty answer'}" for s in scored]
        label = "every answer filtered" if usable else "no usable candidate"
        selection.reason = f"{label} (" + "; ".join(sorted(set(problems)))[:300] + ")" if problems else "no candidate"
        return selection
    best = _rank(prompt, eligible)[0]
    selection.chosen = best
    lower = [s for s in _rank(prompt, usable) if s.score < best.score]
    if not lower:
        selection.pair_reason = "single candidate" if len(usable) == 1 else "all candidates tie"
        return selection
    if spec.pairs == "worst":
        rejected = lower[-1]
    else:
        rejected = random.Random(stable_hash("pair", prompt.prompt_id)).choice(lower)
    if best.score - rejected.score < spec.min_margin:
        selection.pair_reason = f"margin {best.score - rejected.score:.3f} below output.min_margin {spec.min_margin}"
        return selection
    selection.rejected = rejected
    return selection
