"""Best-of-n selection and DPO pairing, per prompt."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt, Route, Scored, stable_hash

PAIRS = ("worst", "random_lower")


@dataclass(frozen=True)
class SelectionSpec:
    pairs: str = "worst"  # worst | random_lower: which lower-scored answer becomes `rejected`
    min_margin: float = 0.01  # pairs closer than this are dropped (ties teach nothing)

    def __post_init__(self):
        if self.pairs not in PAIRS:
            raise ConfigError(f"output.pairs must be one of {', '.join(PAIRS)}, got {self.pairs!r}")
        if isinstance(self.min_margin, bool) or not isinstance(self.min_margin, int | float) or self.min_margin < 0:
            raise ConfigError(f"output.min_margin must be a number ≥ 0, got {self.min_margin!r}")


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
    def draw(s: Scored) -> bytes:
        return hashlib.blake2b(
            f"tie|{prompt.prompt_id}|{s.candidate.teacher}|{s.candidate.sample}".encode(), digest_size=8
        ).digest()

    return sorted(scored, key=lambda s: (-s.score, s.candidate.finish_reason == "length", draw(s)))


def _problem(s: Scored) -> str:
    c = s.candidate
    return f"{c.teacher}: {s.filtered or c.error or s.error or 'empty answer'}"


NO_CANDIDATE = "no usable candidate"  # every answer failed (or its scoring did)


def select(prompt: Prompt, route: Route, scored: list[Scored], spec: SelectionSpec) -> Selection:
    """The best unfiltered answer is chosen; a lower-scored answer with another text, filtered ones
    included (a refusal or a wrong-language answer is a fine DPO negative), can be rejected. An
    answer without a score (it failed, or its scoring did) is neither."""
    selection = Selection(prompt, route, scored)
    usable = [s for s in scored if s.usable]
    eligible = [s for s in usable if not s.filtered]
    if not eligible:
        problems = sorted({_problem(s) for s in scored})
        label = "every answer filtered" if usable else NO_CANDIDATE
        selection.reason = f"{label} (" + "; ".join(problems)[:300] + ")" if problems else "no candidate"
        return selection
    best = _rank(prompt, eligible)[0]
    selection.chosen = best
    text = (best.candidate.text or "").strip()
    lower = [s for s in _rank(prompt, usable) if s.score < best.score and (s.candidate.text or "").strip() != text]
    if not lower:
        selection.pair_reason = "single candidate" if len(usable) == 1 else "all candidates tie"
        return selection
    clear = [s for s in lower if best.score - s.score >= spec.min_margin]
    if not clear:
        gap = best.score - lower[-1].score  # the widest gap there is
        selection.pair_reason = f"margin {gap:.3f} below output.min_margin {spec.min_margin}"
        return selection
    if spec.pairs == "worst":
        selection.rejected = clear[-1]
    else:
        selection.rejected = random.Random(stable_hash("pair", prompt.prompt_id)).choice(clear)
    return selection
