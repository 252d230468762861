"""`arbitrage estimate` on one run's spec: the calls `pipeline.plan` says the run would send, less
those its folder's journal already holds, counted per teacher and per turn and printed (prices and
token counts in estimate.py). The CLI only turns the overrides into the spec."""

from __future__ import annotations

import asyncio

from arbitrage import pipeline
from arbitrage.analysis import estimate
from arbitrage.engine import Journal
from arbitrage.prompts.conversation import turn_slot
from arbitrage.runpaths import RunPaths
from arbitrage.stages import PromptFilter
from arbitrage.teachers.samples import next_sample


def print_estimate(spec: pipeline.RunSpec) -> None:
    """Calls, tokens and $ per teacher (and per turn for conversations), before anything is sent."""
    teachers = {**spec.teachers, **spec.scorer.teachers}
    journal_dir = RunPaths(spec.out_dir).journal
    journal = Journal(journal_dir, read_only=True) if Journal.exists(journal_dir) else None
    observed = estimate.observed_means(journal.records()) if journal else {}
    infos = {
        name: estimate.TeacherInfo(t.model, t.sampling.max_tokens, t.price, *observed.get(name, (None, 0.0)))
        for name, t in teachers.items()
    }
    skipped = 0
    screen = PromptFilter(spec.filters)
    calls = dict.fromkeys(spec.teachers, 0)
    later = later_turns_answered(journal) if journal is not None and spec.conversation.multi else set()

    def answered(call) -> bool:
        if journal is None:
            return False
        if journal.answered(call.call_id):
            return True
        # A later turn's prefix holds the answers chosen before it, which the plan does not know:
        # its call is answered if the journal holds this teacher's call for the same conversation and turn.
        return (call.context or 1) > 1 and (turn_slot(call.prompt.prompt_id), call.teacher, call.sample) in later

    def pending():
        nonlocal skipped
        last = None
        for call in blocking(pipeline.plan(spec, screen)):
            calls[call.teacher] = calls.get(call.teacher, 0) + 1
            if answered(call):
                skipped += 1
                continue
            # native n: a prompt's next sample shares its request, so its prompt is billed once
            shared = teachers[call.teacher].limits.native_n and next_sample(last, call)
            last = call
            yield call.context, call.teacher, None if shared else list(call.prompt.messages)  # context: its turn

    rows, turns = estimate.estimate_by_turn(pending(), infos)
    print(estimate.format_estimate(rows))
    if spec.conversation.multi:
        print(estimate.format_turns(turns, spec.conversation.turns, spec.conversation.user))
    if skipped:
        print(f"({skipped} calls already answered in {journal_dir} are not counted)")
    prompt_filter_saving(spec, screen, calls)
    if spec.budget_usd is not None:
        print(f"budget_usd={spec.budget_usd}: the run stops sending once spend would pass it")


def later_turns_answered(journal) -> set[tuple[str, str, int]]:
    """(conversation and turn, teacher, sample) of every call the journal settled at a later turn."""
    slots = ((turn_slot(c.prompt_id), c.teacher, c.sample) for c in journal.records() if journal.answered(c.call_id))
    return {key for key in slots if key[0] is not None}


def prompt_filter_saving(spec: pipeline.RunSpec, screen: PromptFilter, calls: dict[str, int]) -> None:
    """What the prompt filters save: the prompts they drop never reach a teacher."""
    stage = {f.name for f in spec.filters if f.stage == "prompt"}
    dropped = {name: n for name, n in screen.dropped.items() if n and name in stage}
    if not dropped:
        return
    kept = screen.drawn - sum(dropped.values())
    per_prompt = sum(calls[t] for t in spec.teachers) / kept if kept else float(sum(t.sampling.n for t in spec.teachers.values()))
    print(
        f"prompt filters drop {sum(dropped.values())} of {screen.drawn} prompts ("
        + ", ".join(f"{name} {n}" for name, n in dropped.items())
        + f") before any teacher is called: about {round(sum(dropped.values()) * per_prompt)} teacher calls avoided "
        f"({per_prompt:.2f} per prompt kept)"
    )


def blocking(items):
    """An async iterator as a plain one (the estimate streams, whatever the run's size)."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(items.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()
