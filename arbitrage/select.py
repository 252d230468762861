"""Best-of-n selection and DPO pairing, per prompt.

Gates first, then the reward (issue 23): a check is a gate when it says whether the answer is
correct (a known final answer, its tests) rather than how well it is formatted. The chosen answer
must pass every gate of its prompt; among those the reward ranks. A prompt whose answers all fail
goes to `rejected_rows` with the gate named; a gate-failing answer is still a fine `rejected`
(a correct-vs-wrong pair is the most useful pair there is). `require` can ask more of the chosen
answer (every check, or a reward floor); `gates=false` is the reward alone, as before.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt, Reason, Route, Scored, stable_hash

PAIRS = ("worst", "random_lower")
REQUIRE = ("gates", "all_checks", "min_reward")


def _on_off(key: str, value) -> bool:
    # Hydra reads `selection.gates=off` as the string "off", YAML `off` as false.
    if isinstance(value, str) and value.lower() in ("on", "off"):
        return value.lower() == "on"
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be on or off, got {value!r}")
    return value


@dataclass(frozen=True)
class SelectionSpec:
    pairs: str = "worst"  # worst | random_lower: which lower-scored answer becomes `rejected`
    min_margin: float = 0.01  # pairs closer than this are dropped (ties teach nothing)
    gates: bool = True  # the chosen answer must pass every gate of its prompt and `require` (off: the reward alone)
    # gates | all_checks (every check, preferences too) | min_reward (reward ≥ min_reward). A reward floor
    # depends on the reward's scale, so the library's default is the scale-free rule; the CLI's
    # (conf/selection/default.yaml) pairs min_reward 0.01 with its default reward, as measured (BENCHMARKS.md).
    require: str = "gates"
    min_reward: float = 0.01  # for require=min_reward

    def __post_init__(self):
        if self.pairs not in PAIRS:
            raise ConfigError(f"output.pairs must be one of {', '.join(PAIRS)}, got {self.pairs!r}")
        if isinstance(self.min_margin, bool) or not isinstance(self.min_margin, int | float) or self.min_margin < 0:
            raise ConfigError(f"output.min_margin must be a number ≥ 0, got {self.min_margin!r}")
        object.__setattr__(self, "gates", _on_off("selection.gates", self.gates))
        if self.require not in REQUIRE:
            raise ConfigError(f"selection.require must be one of {', '.join(REQUIRE)}, got {self.require!r}")
        if isinstance(self.min_reward, bool) or not isinstance(self.min_reward, int | float):
            raise ConfigError(f"selection.min_reward must be a number, got {self.min_reward!r}")

    def unmet(self, s: Scored) -> str | None:
        """What keeps this (scored, unfiltered) answer from being chosen, or None. `gates=off` asks
        nothing (the reward alone, as before issue 23), whatever `require` says."""
        if not self.gates:
            return None
        if s.failed_gates:
            return "gate"
        if self.require == "all_checks" and not all(s.checks.values()):
            return "check"
        if self.require == "min_reward" and s.score < self.min_reward:
            return "reward"
        return None


@dataclass
class Selection:
    prompt: Prompt
    route: Route
    candidates: list[Scored]  # every candidate, usable or not
    chosen: Scored | None = None
    rejected: Scored | None = None
    reason: Reason | None = None  # why there is no chosen answer
    pair_reason: Reason | None = None  # why there is no DPO pair
    gates_failed: tuple[str, ...] = ()  # the gates that kept every answer out (counted on the card)
    first_choice: Scored | None = None  # chosen before the filters on chosen answers (stages.Chooser)

    def __setattr__(self, name, value):
        if name == "reason" and isinstance(value, str):  # a filter's verdict, as text
            value = Reason(value)
        object.__setattr__(self, name, value)

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
ALL_FILTERED = "every answer filtered"


def _gate_reason(eligible: list[Scored]) -> tuple[Reason, tuple[str, ...]]:
    """`gate X failed on every answer (3)`; when each answer fails a different gate, every gate
    that failed one is named."""
    failed = [set(s.failed_gates) for s in eligible]
    everywhere = sorted(set.intersection(*failed))
    named = everywhere or sorted(set.union(*failed))
    label = "gate" if len(named) == 1 else "gates"
    how = "failed on every answer" if everywhere else "each failed on some answer, none passed by all"
    return Reason(f"{label} {', '.join(named)} {how}", str(len(eligible))), tuple(named)


def _unmet_reason(eligible: list[Scored], spec: SelectionSpec) -> Reason:
    best = max(s.score for s in eligible)
    if spec.require == "all_checks":
        return Reason("no answer passes every check (selection.require=all_checks)", f"{len(eligible)}; best reward {best:.3f}")
    return Reason(f"no answer reaches selection.min_reward {spec.min_reward}", f"{len(eligible)}; best reward {best:.3f}")


def select(prompt: Prompt, route: Route, scored: list[Scored], spec: SelectionSpec) -> Selection:
    """The best unfiltered answer that meets the spec (every gate passed, by default) is chosen; a
    worse answer with another text can be rejected: one that misses the spec (a wrong final
    answer), or a lower-scored one — filtered ones included (a refusal or a wrong-language answer
    is a fine DPO negative). An answer without a score (it failed, or its scoring did) is neither."""
    selection = Selection(prompt, route, scored)
    usable = [s for s in scored if s.usable]
    eligible = [s for s in usable if not s.filtered]
    if not eligible:
        problems = sorted({_problem(s) for s in scored})
        label = ALL_FILTERED if usable else NO_CANDIDATE
        selection.reason = Reason(label, "; ".join(problems)[:300]) if problems else Reason("no candidate")
        return selection
    passing = [s for s in eligible if spec.unmet(s) is None]
    if not passing:
        if spec.gates and all(s.failed_gates for s in eligible):
            selection.reason, selection.gates_failed = _gate_reason(eligible)
        else:
            selection.reason = _unmet_reason(eligible, spec)
        return selection
    best = _rank(prompt, passing)[0]
    selection.chosen = best
    text = (best.candidate.text or "").strip()
    others = [s for s in _rank(prompt, usable) if (s.candidate.text or "").strip() != text]
    # Worse than the chosen answer: it misses the spec (whatever its reward), or it scores lower.
    missed = [s for s in others if spec.unmet(s)]
    lower = [s for s in others if s not in missed and s.score < best.score]
    if not missed and not lower:
        selection.pair_reason = Reason("single candidate" if len(usable) == 1 else "all candidates tie")
        return selection
    clear = [s for s in lower if best.score - s.score >= spec.min_margin]
    if not missed and not clear:
        gap = best.score - lower[-1].score  # the widest gap there is
        selection.pair_reason = Reason("margin below output.min_margin", f"{gap:.3f} < {spec.min_margin}")
        return selection
    worse = clear + missed  # best first, the answers that miss the spec last (the worst there is)
    if spec.pairs == "worst":
        selection.rejected = worse[-1]
    else:
        selection.rejected = random.Random(stable_hash("pair", prompt.prompt_id)).choice(worse)
    return selection


@dataclass
class Conversation:
    """A conversation's turns as they were answered: each a Selection (turn k's prompt is the
    conversation so far). The leading turns with a chosen answer are the conversation kept; a last
    turn without one (no usable answer) says why it ended there. `ended`: why it stopped before
    `conversation.turns` when no turn failed (the simulator wrote no follow-up); `stopped`: the run
    stopped before the next turn was answered (a rerun goes on from the journal)."""

    turns: list[Selection]
    min_turns: int = 1
    ended: Reason | None = None
    stopped: bool = False

    @property
    def kept(self) -> list[Selection]:
        kept = []
        for s in self.turns:
            if s.chosen is None:
                break
            kept.append(s)
        return kept

    @property
    def written(self) -> bool:
        """Kept as sft/dpo rows: at least `min_turns` turns have a chosen answer."""
        return len(self.kept) >= self.min_turns

    @property
    def finished(self) -> bool:
        """Written as rows of either kind (a stopped conversation too short to keep is left for the rerun)."""
        return self.written or not self.stopped

    @property
    def failed(self) -> Selection | None:
        """The turn that had no answer to choose (the conversation ended there), if one did."""
        return self.turns[len(self.kept)] if len(self.kept) < len(self.turns) else None

    @property
    def reason(self) -> Reason | None:
        """Why the conversation ended before conversation.turns, for a rejected row: the turn that
        failed and why, and whether the turns before it were kept. None when nothing failed."""
        failed = self.failed
        why = failed.reason if failed is not None else self.ended
        if why is None and self.written:
            return None
        n = len(self.kept)
        code = f"turn {n + 1}: {why.code}" if why else f"turn {n + 1}: no answer"
        detail = f"{why.detail}; " if why and why.detail else ""
        kept = f"kept with {n} turn{'s' if n > 1 else ''}" if self.written else f"{n} of min_turns {self.min_turns} kept"
        return Reason(code, detail + kept)
