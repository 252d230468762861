"""A thinking teacher's reasoning, kept apart from its answer (issue 23, section 4).

Reasoning arrives in one of two ways: in its own field of the message (`reasoning_content`, as
vLLM's reasoning parsers, DeepSeek's API and litellm put it; `reasoning` in vLLM >= 0.10), or as a
`<think>…</think>` block at the start of the text (a server without a reasoning parser, an
in-process vLLM engine). Either way the answer is what follows the thinking: checks, the reward
and the rows see only that. An unterminated `<think>` is thinking cut off (or never finished): the
whole text is reasoning and there is no answer, so it can never be chosen.

The chat templates of DeepSeek-R1 and QwQ open the block themselves (the generation prompt ends in
`<think>\n`): their text has a `</think>` and no `<think>`, which vLLM's `deepseek_r1` parser reads
the same way; `opened=True` says the prompt opened it (then a text without `</think>` is all thinking).
"""

from __future__ import annotations

from collections.abc import Sequence

OPEN, CLOSE = "<think>", "</think>"


def split(text: str | None, reasoning: str | None = None, opened: bool = False) -> tuple[str, str | None]:
    """(answer, reasoning) of one choice; reasoning None when there is none (or it is empty, as
    Qwen3's `<think>\\n\\n</think>` with thinking switched off)."""
    answer = (text or "").strip()
    thought = None
    if answer.startswith(OPEN):
        thought, closed, rest = answer[len(OPEN) :].partition(CLOSE)
        answer = rest.strip() if closed else ""
    elif CLOSE in answer and (opened or OPEN not in answer.partition(CLOSE)[0]):
        thought, _, rest = answer.partition(CLOSE)
        answer = rest.strip()
    elif opened:
        thought, answer = answer, ""
    parts = [p.strip() for p in (reasoning, thought) if p and p.strip()]
    return answer, "\n\n".join(parts) or None


def reasoning_share(tokens: int, reasoning: str | None, answer: str, reported: int | None = None) -> int:
    """The completion tokens spent on reasoning: the server's count where it reports one
    (`usage.completion_tokens_details.reasoning_tokens`), else all of them when there is no answer,
    else a share by characters (the same estimate `split_usage` makes across choices)."""
    if not reasoning:
        return 0
    if reported is not None:
        return min(int(reported), tokens)
    if not answer:
        return tokens
    return round(tokens * len(reasoning) / (len(reasoning) + len(answer)))


def spread(total: int, reasonings: Sequence[str | None]) -> list[int]:
    """A request's reported reasoning tokens over its choices, by each one's reasoning characters."""
    from arbitrage.teachers.samples import split_usage

    if not any(reasonings):
        return [0] * len(reasonings)
    return split_usage(total, [r or "" for r in reasonings])


def inline(answer: str, reasoning: str | None) -> str:
    """The answer with its reasoning in front, in `<think>` tags (output.reasoning=inline): the form
    DeepSeek-R1 and QwQ were trained on, and what Qwen3's template renders `reasoning_content` as."""
    return f"{OPEN}\n{reasoning}\n{CLOSE}\n\n{answer}" if reasoning else answer
