"""The rows that flow through a run: Prompt → Call → Candidate → Scored (see docs/architecture.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Deterministic id from JSON-serialisable parts: the key for dedup, caching and resume."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    persona_id: str
    language: str
    domain: str
    task: str
    topic: str
    messages: tuple[dict, ...]  # optional system message, then the user message
    constraints: tuple[dict, ...] = ()
    reference: str | None = None  # known answer, for tasks generated with one
    # Code tests run by reward=tests (arbitrage/verify/code.py TestSpec.to_dict()): HumanEval's
    # test + entry_point or MBPP's test_list, from the prompts file.
    tests: dict | None = None
    # Conversations (arbitrage/prompts/conversation.py): which turn of which conversation this prompt
    # asks. Turn 1 is the prompt as drawn (its id is the conversation's); turn k's messages are the
    # conversation so far, its id the hash of that prefix, so a call's identity covers the prefix.
    turn: int = 1
    conversation_id: str = ""  # "" on turn 1: the prompt's own id
    later_turns: tuple[str, ...] = ()  # user turns a prompts file gives for turns 2, 3, …
    later_checks: tuple[tuple[dict, ...], ...] = ()  # their constraints, one tuple per later turn (or none)

    @property
    def user_text(self) -> str:
        return self.messages[-1]["content"]

    @property
    def conversation(self) -> str:
        """The id of the conversation this prompt belongs to (its own id on turn 1)."""
        return self.conversation_id or self.prompt_id

    def to_row(self) -> dict:
        row = asdict(self)
        row["messages"] = list(self.messages)
        row["constraints"] = json.dumps(list(self.constraints), ensure_ascii=False)
        row["tests"] = json.dumps(self.tests, ensure_ascii=False) if self.tests else None
        return row


@dataclass(frozen=True)
class Route:
    """Which teachers answer a prompt, and why (the router's decision, recorded with every row)."""

    teachers: tuple[str, ...]
    decision: str


@dataclass(frozen=True)
class Call:
    """One request to one teacher: the unit of work, of caching and of resume.

    `call_id` hashes the prompt, the teacher's identity (model, endpoint or weights, sampling) and
    the sample index. `context` belongs to whoever made the call: the engine hands it back with the
    answer untouched (the pipeline keeps the prompt's group there)."""

    call_id: str
    prompt: Prompt
    teacher: str
    sample: int = 0
    context: Any = field(default=None, compare=False, repr=False)


def make_call(prompt: Prompt, teacher: str, teacher_key: str, sample: int = 0, context: Any = None) -> Call:
    """`teacher_key` is `stable_hash(teacher.identity())`, computed once per teacher."""
    return Call(stable_hash(prompt.prompt_id, teacher_key, sample), prompt, teacher, sample, context)


@dataclass(frozen=True)
class Completion:
    """What a teacher returns for one call: text, or an error that is kept as data."""

    text: str | None
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    error: str | None = None
    status: int | None = None  # HTTP status of the last attempt, when there was one
    retry_after: float | None = None  # seconds the server asked us to wait
    logprobs: list | None = None  # first-token top logprobs, when asked for (judges)
    ratelimit: dict | None = None  # the server's x-ratelimit-* headers, parsed (see RateLimit.observe)
    # A thinking teacher's reasoning, apart from `text`, the answer (arbitrage/teachers/reasoning.py);
    # its tokens are part of tokens_out (servers bill them as completion tokens) and counted here too.
    reasoning: str | None = None
    reasoning_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.text and self.text.strip())


@dataclass
class Candidate:
    """A finished call: one teacher's answer to one prompt, or its failure (a journal record)."""

    call_id: str
    prompt_id: str
    teacher: str
    text: str | None
    finish_reason: str | None
    tokens_in: int
    tokens_out: int
    latency_s: float
    attempts: int
    error: str | None = None
    last_status: int | None = None
    sample: int = 0
    # A failure that sending again cannot change (the model answered nothing, deterministically):
    # a resume does not re-send it unless told to (retry_failed=true).
    final: bool = False
    logprobs: list | None = None  # first-token top logprobs (judge calls)
    # The teacher's thinking, kept apart from `text` (the answer, all that checks and the reward see),
    # also when a length cut inside it left no answer. Old journal lines lack both: None and 0.
    reasoning: str | None = None
    reasoning_tokens: int = 0  # of tokens_out

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.text and self.text.strip())


@dataclass
class Scored:
    candidate: Candidate
    score: float | None  # None: scoring failed (its reason in `error`): never chosen nor rejected
    details: dict = field(default_factory=dict)  # what the scorer shows beside its verdicts (per-part scores, ratings)
    filtered: str | None = None  # why the quality stage kept this answer from being chosen
    error: str | None = None  # why there is no score
    checks: dict[str, bool] = field(default_factory=dict)  # check id → passed (the scorer's verdicts)
    gates: frozenset[str] = frozenset()  # the checks that say the answer is correct (see select.py)

    @property
    def usable(self) -> bool:
        """Answered and scored with a real number: may be chosen (unless filtered) or rejected."""
        return self.candidate.ok and self.score is not None and self.score == self.score  # NaN ≠ NaN

    @property
    def failed_gates(self) -> list[str]:
        """The gates this answer fails (a gate without a verdict fails)."""
        return sorted(g for g in self.gates if not self.checks.get(g, False))


@dataclass(frozen=True)
class Reason:
    """Why a prompt has no chosen answer, or no DPO pair: a code to count by, a detail to read.
    `str()` is the text rows and logs have always shown: `code (detail)`."""

    code: str  # e.g. "no usable candidate", "gate arbitrage:final_number failed on every answer", a filter's verdict
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.code} ({self.detail})" if self.detail else self.code
