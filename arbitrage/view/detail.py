"""One prompt as the viewer shows it: persona, constraints with their arguments, every teacher's
answers with scores, per-check verdicts, latency, tokens, cost and filter reasons, and why one
answer became `chosen` and another `rejected` (the rules of arbitrage/select.py, re-read from rows).

A conversation (conversation.turns > 1) is shown turn by turn: each turn's user message, every
teacher's answers at that turn, the chosen one and the rejected side of that turn's DPO pair, and
for the turn that failed, why no answer could be chosen there."""

from __future__ import annotations

import json
import logging
import re
from functools import cached_property
from pathlib import Path

from arbitrage.cost import Price
from arbitrage.runpaths import RunPaths

log = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ("call_id", "teacher", "response", "finish_reason", "tokens_in", "tokens_out", "latency_s", "attempts")
CANDIDATE_COLUMNS += ("sample", "error", "last_status", "score", "score_details", "chosen", "filtered", "prompt_id", "turn")
DPO_COLUMNS = ("rejected", "teacher_rejected", "score_rejected", "margin")  # what names the rejected answer
DPO_TURN_COLUMNS = (*DPO_COLUMNS, "conversation_id", "prompt_id", "turn", "constraints")
PERSONA_FILES_MAX_BYTES = 64 << 20  # bigger persona sets are not read just to show one line


class RunFacts:
    """What the detail view reads from the facts the run wrote (run.json, arbitrage/runpaths.py):
    selection settings, each teacher's price as the run priced it, the persona files. Nothing is
    worked out again from the config's shape, so a new kind of teacher shows its price as is."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.facts = RunPaths(run_dir).facts()

    @property
    def output(self) -> dict:
        return self.facts.get("selection") or {}

    @cached_property
    def prices(self) -> dict[str, Price | None]:
        out = {}
        for name, teacher in (self.facts.get("teachers") or {}).items():
            price = (teacher or {}).get("price")
            out[name] = None if price is None else Price(price["input_per_token"], price["output_per_token"], price["source"])
        return out

    @cached_property
    def personas(self) -> dict[str, str]:
        found = [Path(f) for f in (self.facts.get("source") or {}).get("files") or [] if Path(f).is_file()]
        if sum(p.stat().st_size for p in found) > PERSONA_FILES_MAX_BYTES:
            return {}
        out = {}
        for path in found:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    out[str(record["id"])] = str(record.get("persona") or "")
                except (ValueError, KeyError, TypeError):
                    continue
        return out


def constraints_of(raw: str | None) -> list[dict]:
    """[{"id": "keywords:frequency", "args": {...}}] from the rows' `constraints` JSON."""
    out = []
    for c in json.loads(raw or "[]"):
        args = {k: v for k, v in c.items() if k != "type"}
        out.append({"id": c.get("type"), "args": args})
    return out


def _verdicts(details: dict) -> tuple[dict, dict, set, dict]:
    """(strict checks, loose checks, gates, other scorer details) of one score_details object. Rows
    from before typed verdicts (issue 23) keep a weighted reward's checks under its `verifiable`
    part; a weighted reward's loose verdicts sit under its verifiable part, whatever its name."""
    nested = [v for v in details.values() if isinstance(v, dict)]
    checks = details.get("checks") or next((v["checks"] for v in nested if isinstance(v.get("checks"), dict)), {})
    loose = details.get("loose") or next((v["loose"] for v in nested if isinstance(v.get("loose"), dict)), {})
    gates = set(details.get("gates") or [])
    other = {k: v for k, v in details.items() if k not in ("checks", "loose", "gates")}
    return checks, loose, gates, other


def candidate(row: dict, price: Price | None) -> dict:
    details = json.loads(row.get("score_details") or "{}")
    checks, loose, gates, other = _verdicts(details)
    usd = None if price is None else price.cost(row["tokens_in"] or 0, row["tokens_out"] or 0)
    return {
        **{k: row.get(k) for k in CANDIDATE_COLUMNS if k not in ("score_details", "chosen", "turn")},
        "turn": row.get("turn") or 1,
        "chosen": bool(row.get("chosen")),
        "rejected": False,
        "checks": [{"id": k, "ok": bool(v), "loose": loose.get(k), "gate": k in gates} for k, v in checks.items()],
        "failed_gates": sorted(g for g in gates if not checks.get(g)),
        "scorer": other,
        "usd": usd,
    }


def _label(c: dict) -> str:
    return f"{c['teacher']}#{c['sample'] or 0}"


def unmet(c: dict, output: dict) -> str | None:
    """What keeps a scored answer from being chosen under the run's selection settings, or None:
    select.SelectionSpec.unmet read off a candidate row (gates off asks nothing)."""
    if output.get("gates", True) in (False, "off"):
        return None
    if c.get("failed_gates"):
        return "fails the gate " + ", ".join(c["failed_gates"])
    require = output.get("require", "gates")
    if require == "all_checks" and not all(x["ok"] for x in c.get("checks") or []):
        failing = ", ".join(x["id"] for x in c["checks"] if not x["ok"])
        return f"fails the check {failing} (selection.require=all_checks)"
    min_reward = output.get("min_reward", 0.01)
    if require == "min_reward" and c["score"] < min_reward:
        return f"scores below selection.min_reward {min_reward}"
    return None


def why_none(candidates: list[dict], output: dict) -> str:
    """Why no answer was chosen, worded as select.py words a rejected row's reason (for a turn that
    ended a kept conversation: no row records its reason)."""
    usable = [c for c in candidates if c["score"] is not None]
    eligible = [c for c in usable if not c["filtered"]]
    if not eligible:
        problems = sorted({f"{c['teacher']}: {c['filtered'] or c['error'] or 'empty answer'}" for c in candidates})
        return f"{'every answer filtered' if usable else 'no usable candidate'} ({'; '.join(problems)[:300]})"
    gated = output.get("gates", True) not in (False, "off")
    if gated and all(c.get("failed_gates") for c in eligible):
        gates = sorted(set.intersection(*(set(c["failed_gates"]) for c in eligible)))
        return f"gate {', '.join(gates)} failed on every answer" if gates else "each answer failed some gate"
    best = max(c["score"] for c in eligible)
    if output.get("require") == "all_checks":
        return f"no answer passes every check (selection.require=all_checks; best reward {best:.3f})"
    return f"no answer reaches selection.min_reward {output.get('min_reward', 0.01)} (best reward {best:.3f})"


def explain(
    candidates: list[dict], dpo: dict | None, output: dict, reason: str | None, conversation: str | None = None
) -> list[str]:
    """Why this answer is `chosen` and that one `rejected`, in the order select.py decides.
    `conversation`: the candidates are one turn of a conversation that is "kept" (the run may
    leave a turn's pair out: output.dpo_turns=last) or "rejected" (none of its turns gives rows)."""
    usable = [c for c in candidates if c["score"] is not None]
    wrong = [c for c in usable if unmet(c, output)]
    eligible = [c for c in usable if not c["filtered"] and c not in wrong]
    lines = []
    if not eligible:
        return [f"No answer could be chosen: {reason or why_none(candidates, output)}."]
    chosen = next((c for c in candidates if c["chosen"]), None)
    if chosen is None:
        return ["The dataset names no chosen answer for this prompt."]
    best = chosen["score"]
    lines.append(f"Chosen: {_label(chosen)}, the best score among {len(eligible)} answer(s) that could be chosen ({best:.3f}).")
    above = [c for c in usable if (c["filtered"] or c in wrong) and c["score"] > best + 1e-9]
    for c in above:
        why = c["filtered"] or unmet(c, output)
        lines.append(f"{_label(c)} scored higher ({c['score']:.3f}) but was kept from being chosen: {why}.")
    tied = [c for c in eligible if abs(c["score"] - best) <= 1e-9]
    if len(tied) > 1:
        names = ", ".join(_label(c) for c in tied)
        truncated = any(c["finish_reason"] == "length" for c in tied) and chosen["finish_reason"] != "length"
        how = "an answer cut off at max_tokens loses a tie" if truncated else "a draw seeded by the prompt id"
        lines.append(f"Tie: {names} share the best score; {how} decided it (reruns pick the same).")
    min_margin = output.get("min_margin", 0.01)
    rejected = next((c for c in candidates if c.get("rejected")), None)
    if dpo is not None and rejected is not None and rejected in wrong:
        why = unmet(rejected, output)
        tail = "a correct-vs-wrong pair" if why.startswith("fails the gate") else "it misses what a chosen answer must meet"
        lines.append(
            f"Rejected: {dpo['teacher_rejected']} ({dpo['score_rejected']:.3f}), an answer that {why}: {tail}, whatever the margin."
        )
        return lines
    if dpo is not None:
        rule = "the worst" if output.get("pairs", "worst") == "worst" else "a random"
        lines.append(
            f"Rejected: {dpo['teacher_rejected']} ({dpo['score_rejected']:.3f}), {rule} lower-scored answer with another text; "
            f"margin {dpo['margin']:.3f} ≥ output.min_margin {min_margin}."
        )
        return lines
    text = (chosen["response"] or "").strip()
    others = [c for c in usable if (c["response"] or "").strip() != text]
    lower = [c for c in others if c["score"] < best]
    pairable = any(c in wrong or best - c["score"] >= min_margin for c in others)
    if conversation == "rejected":
        lines.append("No DPO pair: the conversation is not kept, so none of its turns gives a row.")
    elif conversation == "kept" and pairable:
        lines.append(
            "No DPO pair written for this turn, though its answers make one: "
            "the run keeps the last turn's pair only (output.dpo_turns=last)."
        )
    elif not lower:
        lines.append("No DPO pair: " + ("single candidate." if len(usable) == 1 else "all candidates tie."))
    else:
        gap = best - min(c["score"] for c in lower)
        lines.append(f"No DPO pair: margin {gap:.3f} below output.min_margin {min_margin}.")
    return lines


def mark_rejected(candidates: list[dict], dpo: dict | None) -> None:
    """The dpo row names the rejected answer by teacher, score and text: find it among the candidates."""
    if dpo is None:
        return
    text = (dpo.get("rejected") or [{}])[-1].get("content")
    for c in candidates:
        same_score = c["score"] is not None and abs(c["score"] - (dpo["score_rejected"] or 0)) <= 1e-6
        if c["teacher"] == dpo["teacher_rejected"] and same_score and c["response"] == text:
            c["rejected"] = True
            return


def _tie(candidates: list[dict]) -> bool:
    """Two or more choosable answers share the best score (as the index counts it)."""
    scores = [c["score"] for c in candidates if c["score"] is not None and not c["filtered"]]
    return bool(scores) and sum(1 for x in scores if x >= max(scores) - 1e-9) >= 2


def describe(run, config: RunFacts, position: int) -> dict:
    """Everything about the prompt (or conversation) at a list position (`run` is a pager.RunData)."""
    index = run.index()
    name, row_number = run.locate(position)
    row = run.tables[name].take([row_number], tuple(run.tables[name].names))[0]
    conversation = row.get("conversation_id") or row["prompt_id"]
    dpos = []
    first = int(index.dpo_row[position])
    if first >= 0:
        span = run.tables["dpo"].span(first, first + max(1, int(index.dpo_count[position])), DPO_TURN_COLUMNS).to_pylist()
        dpos = [d for d in span if (d.get("conversation_id") or d.get("prompt_id")) == conversation]
    ending = None  # a kept conversation's rejected row: the turn it ended at, and why
    if index.ending[position] >= 0:
        table = run.tables["rejected_rows"]
        ending = table.take([run.locate(int(index.ending[position]))[1]], tuple(table.names))[0]
    start, count = int(index.cand_start[position]), int(index.cand_count[position])
    rows = run.tables["candidates"].span(start, start + count, CANDIDATE_COLUMNS).to_pylist() if count else []
    candidates = [candidate(r, config.prices.get(r["teacher"])) for r in rows]
    candidates.sort(key=lambda c: (c["turn"], c["teacher"], c["sample"] or 0))
    messages = row["messages"] if name == "sft" else row["prompt"]
    out = {
        "pos": position,
        "prompt_id": row["prompt_id"],
        "conversation_id": conversation,
        "status": "rejected" if name == "rejected_rows" else ("pair" if dpos else "no_pair"),
        "language": row["language"],
        "task": row["task"],
        "domain": row.get("domain"),
        "persona_id": row["persona_id"],
        "persona": config.personas.get(row["persona_id"]),
        "decision": row.get("router_decision"),
        "messages": [m for m in messages if m["role"] != "assistant"],
        "constraints": constraints_of(row.get("constraints")),
        "reason": row.get("reason"),
        "margin": dpos[-1]["margin"] if dpos else None,
        "tie": bool(index.tie[position]),
        "candidates": candidates,
    }
    if (row.get("turn") or 1) == 1 and all(c["turn"] == 1 for c in candidates) and ending is None:
        dpo = dpos[0] if dpos else None
        mark_rejected(candidates, dpo)
        return {**out, "explain": explain(candidates, dpo, config.output, row.get("reason"))}
    kept, ended = (row, ending) if name == "sft" else (None, row)
    return {**out, **_conversation(kept, ended, candidates, dpos, config.output)}


def opening_length(messages: list[dict], turns: int, answered: bool) -> int:
    """How many of a conversation's messages are its first turn's prompt: an sft row's messages are
    that prompt, then an answer, then (user, answer) per later turn; a prompt that asks turn k
    (`answered` False) ends with turn k's user message."""
    tail = 2 * turns - 1 if answered else 2 * (turns - 1)
    head = len(messages or []) - tail
    return head if head >= 1 else len(messages or [])


def turn_messages(messages: list[dict], turns: int, answered: bool) -> list[list[dict]]:
    """Each turn's user message(s) of an sft row's conversation (`answered`) or of a prompt asking
    turn `turns` (a rejected row): turn 1 is the opening prompt (its non-assistant messages), turn
    k its one user message. A turn the row does not reach is missing from the list."""
    head = opening_length(messages, turns, answered)
    out = [[m for m in messages[:head] if m["role"] != "assistant"]]
    for k in range(1, turns):
        at = head + 2 * k - 1
        if at < len(messages):
            out.append([messages[at]])
    return out


def _conversation(kept_row: dict | None, ended_row: dict | None, candidates: list[dict], dpos: list[dict], output: dict) -> dict:
    """A conversation turn by turn: per turn its user message, answers, chosen and rejected marks
    and why; and what became of the whole. `kept_row`: its sft row (None: not kept); `ended_row`:
    its rejected row, at the turn it ended at (None: it ran all its turns)."""
    written = kept_row is not None
    kept_turns = (kept_row.get("turn") or 1) if written else 0
    ended_turn = (ended_row.get("turn") or 1) if ended_row else 0
    # the rejected row's prompt reaches further (the conversation up to the turn that failed)
    if ended_row is not None:
        users = turn_messages(ended_row["prompt"], ended_turn, answered=False)
    else:
        users = turn_messages(kept_row["messages"], kept_turns, answered=True)
    ended_why = re.sub(r"^turn \d+: ", "", ended_row["reason"]) if ended_row and ended_row.get("reason") else None
    by_turn = {d.get("turn") or 1: d for d in dpos}
    numbers = sorted({c["turn"] for c in candidates} | set(range(1, max(kept_turns, ended_turn) + 1)))
    turns, chosen_teachers, failed = [], [], None
    for k in numbers:
        answers = [c for c in candidates if c["turn"] == k]
        dpo = by_turn.get(k)
        mark_rejected(answers, dpo)
        chosen = next((c for c in answers if c["chosen"]), None)
        if chosen is not None and failed is None:
            chosen_teachers.append(chosen["teacher"])
        elif failed is None:
            failed = k
        constraints = dpo.get("constraints") if dpo else None
        for r, turn in ((kept_row, kept_turns), (ended_row, ended_turn)):
            if constraints is None and r is not None and k == turn:
                constraints = r.get("constraints")
        prompt_id = answers[0]["prompt_id"] if answers else (ended_row["prompt_id"] if ended_row and k == ended_turn else None)
        why = ended_why if chosen is None and k == failed else None  # select's words for the turn that failed
        turns.append(
            {
                "turn": k,
                "prompt_id": prompt_id,
                "messages": users[k - 1] if k - 1 < len(users) else None,  # None: no row holds this turn's message
                "constraints": None if constraints is None else constraints_of(constraints),
                "chosen": chosen["teacher"] if chosen else None,
                "status": "pair" if dpo else ("no_pair" if chosen else "failed"),
                "margin": dpo["margin"] if dpo else None,
                "tie": _tie(answers),
                "n_candidates": len(answers),
                "explain": explain(answers, dpo, output, why, "kept" if written else "rejected")
                if answers
                else ["No answers: this turn was not asked."],
            }
        )
    teachers = list(kept_row.get("turn_teachers") or chosen_teachers) if written else chosen_teachers
    chain = " → ".join(teachers)
    if written:
        lines = [f"Kept: {len(teachers)} turn(s) in one sft row; the teacher chosen per turn: {chain}."]
        if failed is not None:
            answers = [c for c in candidates if c["turn"] == failed]
            why = ended_why or (why_none(answers, output) if answers else "no answers")
            lines.append(f"Turn {failed} had no answer that could be chosen ({why}): the conversation ends at turn {failed - 1}.")
    else:
        lines = [f"Not kept: {ended_row.get('reason') or 'too few turns kept'}."]
        if teachers:
            which = "turn 1" if len(teachers) == 1 else f"turns 1–{len(teachers)}"
            lines.append(f"Chosen before that: {chain} ({which}).")
    pairs = sorted(by_turn)
    lines.append(
        f"DPO pairs at turn(s) {', '.join(map(str, pairs))}: one row each, the conversation so far as its prompt."
        if pairs
        else "No DPO pair at any turn."
    )
    return {
        "messages": [m for t in turns for m in (t["messages"] or [])],
        "turns": turns,
        "turn_teachers": teachers,
        "kept": len(teachers),
        "answered": sum(1 for t in turns if t["n_candidates"]),
        "ended": ended_row.get("reason") if ended_row else None,
        "explain": lines,
    }
