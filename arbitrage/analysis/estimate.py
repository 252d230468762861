"""`arbitrage estimate`: calls, tokens and $ per teacher before anything is sent (prices and token
counts from arbitrage/cost.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from arbitrage.cost import Price, Tokenizer, count_prompt_tokens, format_usd
from arbitrage.errors import ConfigError


@dataclass(frozen=True)
class TeacherInfo:
    """What an estimate needs to know about one teacher."""

    model: str
    max_tokens: int
    price: Price | None
    mean_tokens_out: float | None = None  # observed in an earlier run; None → max_tokens bound
    mean_reasoning_tokens: float = 0.0  # of mean_tokens_out: a thinking teacher's reasoning
    tokenizer: Tokenizer | None = None  # for local teachers, when one is at hand

    @property
    def is_local(self) -> bool:
        return self.price is not None and self.price.source == "local"


def observed_means(candidates: Iterable) -> dict[str, tuple[float, float]]:
    """Mean completion tokens and mean reasoning tokens (part of them) per teacher, over answered
    calls and calls cut at max_tokens while thinking (billed, no answer), e.g. an earlier run's journal."""
    totals: dict[str, list[int]] = {}
    for candidate in candidates:
        billed = candidate.error is None or (candidate.finish_reason == "length" and candidate.reasoning)
        if billed and candidate.tokens_out:
            count_and_sums = totals.setdefault(candidate.teacher, [0, 0, 0])
            count_and_sums[0] += 1
            count_and_sums[1] += candidate.tokens_out
            count_and_sums[2] += candidate.reasoning_tokens
    return {teacher: (out / count, thought / count) for teacher, (count, out, thought) in totals.items()}


def mean_tokens_out(candidates: Iterable) -> dict[str, float]:
    """Mean completion length per teacher (`observed_means`, reasoning included)."""
    return {teacher: out for teacher, (out, _) in observed_means(candidates).items()}


@dataclass
class TeacherEstimate:
    teacher: str
    calls: int
    tokens_in: int
    tokens_out_expected: int
    tokens_out_max: int
    usd: float | None  # None: no price for this model
    price_source: str | None
    out_is_upper_bound: bool  # no observed mean: completion tokens are max_tokens per call
    reasoning_expected: int = 0  # of tokens_out_expected: reasoning, as observed


def estimate(
    calls: Iterable[tuple[str, Sequence[dict] | None]], teacher_info: Mapping[str, TeacherInfo]
) -> list[TeacherEstimate]:
    """Cost of the calls a run would make, one row per teacher, in `teacher_info` order. Messages
    None: a call whose prompt is billed with another's (a later sample in one request with native n).

    Streams: `calls` is consumed once, so a generator of millions of calls needs flat memory."""
    rows, _ = estimate_by_turn(((1, teacher, messages) for teacher, messages in calls), teacher_info)
    return rows


@dataclass
class TurnEstimate:
    """One conversation turn's calls (its teachers', their judges', the user simulator's that wrote
    its user message) and their tokens: every call of turn k sends the conversation so far."""

    turn: int
    calls: int = 0
    tokens_in: int = 0
    tokens_out_expected: int = 0
    out_is_upper_bound: bool = False  # some of its calls' completions are counted at max_tokens

    @property
    def tokens_in_per_call(self) -> float:
        return self.tokens_in / self.calls if self.calls else 0.0


def estimate_by_turn(
    calls: Iterable[tuple[int, str, Sequence[dict] | None]], teacher_info: Mapping[str, TeacherInfo]
) -> tuple[list[TeacherEstimate], list[TurnEstimate]]:
    """`estimate` for calls that name their conversation turn (turn, teacher, messages): the rows
    per teacher, and one per turn in turn order. Streams like `estimate`."""
    calls_per_teacher = dict.fromkeys(teacher_info, 0)
    tokens_in = dict.fromkeys(teacher_info, 0)
    turns: dict[int, TurnEstimate] = {}
    for turn, teacher, messages in calls:
        info = teacher_info.get(teacher)
        if info is None:
            raise ConfigError(f"estimate: unknown teacher '{teacher}' — known: {', '.join(teacher_info)}")
        calls_per_teacher[teacher] += 1
        tokens = count_prompt_tokens(_counter_for(info), messages) if messages is not None else 0
        tokens_in[teacher] += tokens
        row = turns.get(turn) or turns.setdefault(turn, TurnEstimate(turn))
        row.calls += 1
        row.tokens_in += tokens
        row.tokens_out_expected += info.max_tokens if info.mean_tokens_out is None else info.mean_tokens_out
        row.out_is_upper_bound |= info.mean_tokens_out is None
    for row in turns.values():
        row.tokens_out_expected = round(row.tokens_out_expected)
    rows = [_teacher_estimate(name, info, calls_per_teacher[name], tokens_in[name]) for name, info in teacher_info.items()]
    return rows, [turns[k] for k in sorted(turns)]


def _counter_for(info: TeacherInfo) -> str | Tokenizer | None:
    if info.tokenizer is not None:
        return info.tokenizer
    return None if info.is_local else info.model  # a local model name never needs litellm


def _teacher_estimate(name: str, info: TeacherInfo, calls: int, tokens_in: int) -> TeacherEstimate:
    tokens_out_max = calls * info.max_tokens
    bound = info.mean_tokens_out is None
    tokens_out = tokens_out_max if bound else round(calls * info.mean_tokens_out)
    return TeacherEstimate(
        teacher=name,
        calls=calls,
        tokens_in=tokens_in,
        tokens_out_expected=tokens_out,
        tokens_out_max=tokens_out_max,
        usd=info.price.cost(tokens_in, tokens_out) if info.price else None,
        price_source=info.price.source if info.price else None,
        out_is_upper_bound=bound,
        reasoning_expected=0 if bound else round(calls * info.mean_reasoning_tokens),
    )


def format_estimate(rows: Sequence[TeacherEstimate]) -> str:
    """A markdown table, one line per teacher and a total; `≤` marks max_tokens bounds."""
    lines = [
        "| teacher | calls | prompt tokens | completion tokens | $ | price |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.teacher} | {row.calls:,} | {row.tokens_in:,} | {_completion_cell(row)} | {_usd_cell(row.usd, row.out_is_upper_bound)} "
            f"| {row.price_source or 'none'} |"
        )
    lines.append(_total_line(rows))
    return "\n".join(lines)


def _completion_cell(row: TeacherEstimate) -> str:
    if row.out_is_upper_bound:
        return f"≤ {row.tokens_out_max:,} (max_tokens)"
    thinking = f", ~{row.reasoning_expected:,} of it reasoning" if row.reasoning_expected else ""
    return f"~{row.tokens_out_expected:,} (observed mean{thinking})"


def _usd_cell(usd: float | None, upper_bound: bool) -> str:
    if usd is None:
        return "unknown (no price)"
    return f"{'≤ ' if upper_bound and usd > 0 else ''}{format_usd(usd)}"


def _total_line(rows: Sequence[TeacherEstimate]) -> str:
    priced = [row for row in rows if row.usd is not None]
    usd = _usd_cell(sum(row.usd for row in priced), any(row.out_is_upper_bound for row in priced))
    unpriced = [row.teacher for row in rows if row.usd is None and row.calls]
    if unpriced:
        usd += f" + unknown ({', '.join(unpriced)})"
    calls = sum(row.calls for row in rows)
    tokens_in = sum(row.tokens_in for row in rows)
    tokens_out = sum(row.tokens_out_expected for row in rows)
    marker = "≤ " if any(row.out_is_upper_bound for row in rows if row.calls) else "~"
    return f"| **total** | {calls:,} | {tokens_in:,} | {marker}{tokens_out:,} | {usd} | |"


def format_turns(turns: Sequence[TurnEstimate], planned: int, user: str | None) -> str:
    """The calls and tokens of each conversation turn, `planned` turns asked for; says why prompt
    tokens per call grow (each turn sends the conversation so far) and where conversations end early."""
    lines = [
        f"per turn (conversation.turns={planned}): prompt tokens grow with the prefix — each turn's calls send the "
        "conversation so far, every earlier answer counted at its teachers' max_tokens"
        + (f", and the user simulator ({user})'s calls are in the turn they write" if user else "")
    ]
    for row in turns:
        marker = "≤ " if row.out_is_upper_bound else "~"
        lines.append(
            f"turn {row.turn}: {row.calls:,} calls, ~{row.tokens_in:,} tokens in (~{row.tokens_in_per_call:,.0f} per call), "
            f"{marker}{row.tokens_out_expected:,} tokens out"
        )
    last = turns[-1].turn if turns else 0
    if last < planned:
        why = "the prompts give no more user turns" + ("" if user else " and conversation.user is not set")
        lines.append(f"no call reaches turn {last + 1}: {why}")
    return "\n".join(lines)
