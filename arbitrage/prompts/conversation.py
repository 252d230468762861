"""Conversations: turn k's chosen answer and the next user turn make turn k+1's prompt.

The next user turn comes from the prompts file (a line's later user turns, MT-Bench style) or from
a user simulator: a configured teacher that writes the follow-up the persona would send, having
read the conversation so far (UltraChat / SmolTalk style). Each follow-up has a kind, drawn per
conversation and turn: ask deeper, challenge a point, change the constraint (the new turn carries a
new checkable constraint, IFEval's multi-turn style), or switch task. Turn k+1's prompt id hashes
the conversation's id and its whole prefix, so every call's identity covers what it answers; it
also names the conversation and the turn in the open (`turn_prompt_id`), so `arbitrage estimate`
can tell a resumed folder's later turns apart without knowing the answers chosen before them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from arbitrage import constraints as C
from arbitrage.errors import ConfigError
from arbitrage.prompts.personas import PersonaSource, with_instructions
from arbitrage.prompts.source import Source
from arbitrage.rows import Call, Candidate, Prompt, make_call, stable_hash
from arbitrage.settings import number

# What the simulated user does next; `constraint` also puts a new checkable constraint on the turn.
FOLLOW_UPS = {
    "deeper": "a follow-up question that goes deeper into one thing the assistant's last answer said",
    "challenge": "a message that doubts or challenges one specific point of the assistant's last answer",
    "constraint": "a request to redo the assistant's last answer in another form",
    "switch": "a request for help with a different task on a related subject",
}
SIMULATOR_TEMPLATE = (
    "You are playing a user who talks with an AI assistant. The user is {persona}.\n\n"
    "The conversation so far:\n{transcript}\n\n"
    "Write the user's next message: {kind}. Write it in {language_name}, in the first person, in one or two "
    "sentences. Output only the message, nothing else."
)
TRANSCRIPT_CHARS = 700  # of each message shown to the simulator: the gist, not the whole prefix again
FOLLOW_UP_CHARS = 1000  # a follow-up longer than this is cut at a sentence end
DEFAULT_PERSONA = "a curious person"


def turn_prompt_id(conversation: str, turn: int, *prefix) -> str:
    """A later turn's prompt id: `<conversation>~t<turn>~<hash of the prefix>`."""
    return f"{conversation}~t{turn}~{stable_hash(*prefix)}"


def turn_slot(prompt_id: str) -> str | None:
    """What a later turn's prompt id names before its prefix hash (the conversation and the turn,
    and `user-` on the simulator's request for it): the same for every prefix that turn could have.
    None for a first turn's id."""
    slot, _, _ = prompt_id.rpartition("~")
    return slot if "~t" in slot else None


@dataclass(frozen=True)
class ConversationSpec:
    """`turns`: assistant turns per conversation (1: single exchanges). `user`: the teacher that
    simulates the user when the prompt gives no next turn (None: only given turns). A conversation
    that cannot go on (no usable answer, no follow-up) is kept if it has `min_turns` turns.
    `wave_size`: conversations carried forward together, turn by turn (memory is bounded by it)."""

    turns: int = 1
    user: str | None = None
    min_turns: int = 1
    follow_ups: tuple[str, ...] = tuple(FOLLOW_UPS)
    wave_size: int = 1000

    def __post_init__(self):
        number("conversation.turns", self.turns, int, 1)
        number("conversation.min_turns", self.min_turns, int, 1)
        number("conversation.wave_size", self.wave_size, int, 1)
        if self.min_turns > self.turns:
            raise ConfigError(
                f"conversation.min_turns ({self.min_turns}) is more than conversation.turns ({self.turns}) — lower it"
            )
        if self.user is not None and (not isinstance(self.user, str) or not self.user):
            raise ConfigError(f"conversation.user must name a configured teacher, got {self.user!r}")
        kinds = tuple(self.follow_ups) if isinstance(self.follow_ups, Sequence) and not isinstance(self.follow_ups, str) else None
        unknown = [k for k in kinds or () if k not in FOLLOW_UPS]
        if not kinds or unknown:
            raise ConfigError(
                f"conversation.follow_ups must be a non-empty list of {', '.join(FOLLOW_UPS)}, got {self.follow_ups!r}"
            )
        object.__setattr__(self, "follow_ups", kinds)

    @property
    def multi(self) -> bool:
        return self.turns > 1


def next_prompt(prompt: Prompt, answer: str, user: str, constraints: Sequence[dict] = ()) -> Prompt:
    """Turn k+1: the conversation so far, the chosen answer (its text alone: no earlier reasoning is
    sent back), the next user message. Its checks are the new turn's own; a known answer and tests
    belong to the turn that asked for them."""
    messages = (*prompt.messages, {"role": "assistant", "content": answer}, {"role": "user", "content": user})
    conversation = prompt.conversation
    return replace(
        prompt,
        prompt_id=turn_prompt_id(conversation, prompt.turn + 1, "turn", conversation, messages),
        messages=messages,
        constraints=tuple(constraints),
        reference=None,
        tests=None,
        turn=prompt.turn + 1,
        conversation_id=conversation,
        later_turns=prompt.later_turns[1:],
        later_checks=prompt.later_checks[1:],
    )


def given_next(prompt: Prompt, answer: str) -> Prompt:
    """Turn k+1 from the prompts file: its next user turn, with that turn's own constraints."""
    checks = prompt.later_checks[0] if prompt.later_checks else ()
    return next_prompt(prompt, answer, prompt.later_turns[0], checks)


def follow_up_kind(prompt: Prompt, kinds: Sequence[str]) -> str:
    """Drawn from the prefix's id: the same conversation asks the same kind on a rerun."""
    return random.Random(stable_hash("follow-up", prompt.prompt_id)).choice(list(kinds))


CARRIED = ("language:response_language",)  # checks that hold for the whole conversation, not one message


def new_constraints(prompt: Prompt, kind: str) -> list[dict]:
    """The simulated turn's checks: the conversation's language carries over (a Spanish conversation
    is answered in Spanish at every turn); a `constraint` follow-up adds one new checkable constraint."""
    carried = [c for c in prompt.constraints if c["type"] in CARRIED]
    if kind != "constraint":
        return carried
    rng = random.Random(stable_hash("follow-up constraint", prompt.prompt_id))
    ctx = C.Context(language=prompt.language, topic=prompt.topic or "this", task=prompt.task)
    drawn = [c for c in C.sample(rng, ctx, 1 + len(carried)) if c["type"] not in CARRIED][:1]
    return carried + drawn


def transcript(messages: Sequence[dict]) -> str:
    lines = []
    for m in messages:
        if m["role"] == "system":
            continue
        text = " ".join(m["content"].split())
        if len(text) > TRANSCRIPT_CHARS:
            text = text[:TRANSCRIPT_CHARS] + " […]"
        lines.append(f"{'User' if m['role'] == 'user' else 'Assistant'}: {text}")
    return "\n".join(lines)


LABEL = re.compile(r"^\s*(?:\*\*)?(?:user|the user|next message|message)(?:'s next message)?\s*(?:\*\*)?\s*:\s*", re.IGNORECASE)


def clean_follow_up(text: str | None) -> str | None:
    """The simulator's message as the user would send it: no label, no quotes, its first paragraph
    (after a lead-in that ends with a colon), at most FOLLOW_UP_CHARS; None when nothing is left."""
    if not text:
        return None
    text = LABEL.sub("", text.strip())
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    while paragraphs and paragraphs[0].endswith(":"):  # a lead-in ("Here's a possible response:"), not the message
        paragraphs = paragraphs[1:]
    text = (paragraphs[0] if paragraphs else "").strip('"“”«»').strip()
    if len(text) > FOLLOW_UP_CHARS:
        cut = text[:FOLLOW_UP_CHARS]
        end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
        text = cut[: end + 1] if end > 0 else cut
    return text or None


@dataclass(frozen=True)
class FollowUp:
    """What the simulator is asked for one conversation, and how its answer becomes turn k+1."""

    prompt: Prompt  # turn k
    answer: str  # turn k's chosen answer
    kind: str
    constraints: tuple[dict, ...]
    request: Prompt  # what the simulator teacher receives

    def next(self, written: str) -> Prompt:
        user = with_instructions(written, list(self.constraints), self.prompt.language)
        return next_prompt(self.prompt, self.answer, user, self.constraints)

    def repeats(self, written: str) -> bool:
        """The follow-up is mostly the conversation so far said again (a small simulator copies the
        answer or an earlier user turn instead of asking something new): no new turn."""
        grams = _grams(_words(written), REPEAT_WORDS)
        if len(grams) < 2:
            return False  # too short to tell a copy from a quote
        texts = [m["content"] for m in self.prompt.messages] + [self.answer]
        said = set().union(*(_grams(_words(text), REPEAT_WORDS) for text in texts))
        return len(grams & said) >= REPEATED_SHARE * len(grams)


@dataclass
class UserSimulator:
    """The teacher that writes the user's next turn, as the persona (its calls go through the
    engine and the journal like any other)."""

    teacher: str
    personas: Mapping[str, str] = field(default_factory=dict)  # persona id → description
    kinds: tuple[str, ...] = tuple(FOLLOW_UPS)

    @classmethod
    def of(cls, teacher: str, source: Source, kinds: Sequence[str]) -> UserSimulator:
        personas = {p.id: p.persona for p in source.personas} if isinstance(source, PersonaSource) else {}
        return cls(teacher, personas, tuple(kinds))

    def follow_up(self, prompt: Prompt, answer: str) -> FollowUp:
        kind = follow_up_kind(prompt, self.kinds)
        constraints = tuple(new_constraints(prompt, kind))
        text = SIMULATOR_TEMPLATE.format(
            persona=self.personas.get(prompt.persona_id, DEFAULT_PERSONA),
            transcript=transcript([*prompt.messages, {"role": "assistant", "content": answer}]),
            kind=FOLLOW_UPS[kind],
            language_name=C.texts()["language_name"]["en"].get(prompt.language, prompt.language),
        )
        messages = ({"role": "user", "content": text},)
        # The prefix's id too: two conversations whose transcripts read alike once cut are still two calls.
        request_id = "user-" + turn_prompt_id(prompt.conversation, prompt.turn + 1, prompt.prompt_id, messages)
        request = replace(prompt, prompt_id=request_id, messages=messages, constraints=(), reference=None, tests=None)
        return FollowUp(prompt, answer, kind, constraints, request)

    def call(self, follow_up: FollowUp, teacher_key: str) -> Call:
        return make_call(follow_up.request, self.teacher, teacher_key)

    @staticmethod
    def written(candidate: Candidate) -> str | None:
        """The follow-up, or None: nothing written, or the simulator echoed its own instructions
        (a small model repeats "A follow-up question that goes deeper…" rather than asking one)."""
        text = clean_follow_up(candidate.text) if candidate.ok else None
        return None if text is None or echoes_instructions(text) else text


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _grams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


# Six words in a row from the simulator's own instructions (a kind's description, the template's
# fixed text). SmolLM2-135M repeats them, or paraphrases around them ("the user doubts or challenges
# one specific point of the assistant's previous answer"), instead of writing the user's message.
# Six, so that a user's own "in one or two sentences" is not one of them.
INSTRUCTION_WORDS = 6
INSTRUCTION_GRAMS = frozenset(
    g
    for part in (*FOLLOW_UPS.values(), *re.split(r"\{\w+\}", SIMULATOR_TEMPLATE))
    for g in _grams(_words(part), INSTRUCTION_WORDS)
)


# A follow-up whose five-word runs are half or more the conversation's own repeats it (a quote of a
# phrase to challenge is a few runs out of many).
REPEAT_WORDS, REPEATED_SHARE = 5, 0.5


def echoes_instructions(text: str) -> bool:
    return not INSTRUCTION_GRAMS.isdisjoint(_grams(_words(text), INSTRUCTION_WORDS))
