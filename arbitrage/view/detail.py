"""One prompt as the viewer shows it: persona, constraints with their arguments, every teacher's
answers with scores, per-check verdicts, latency, tokens, cost and filter reasons, and why one
answer became `chosen` and another `rejected` (the rules of arbitrage/select.py, re-read from rows)."""

from __future__ import annotations

import json
import logging
from functools import cached_property
from pathlib import Path

from arbitrage.cost import Price
from arbitrage.runpaths import RunPaths

log = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ("call_id", "teacher", "response", "finish_reason", "tokens_in", "tokens_out", "latency_s", "attempts")
CANDIDATE_COLUMNS += ("sample", "error", "last_status", "score", "score_details", "chosen", "filtered")
DPO_COLUMNS = ("rejected", "teacher_rejected", "score_rejected", "margin")  # what names the rejected answer
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
        **{k: row.get(k) for k in CANDIDATE_COLUMNS if k not in ("score_details", "chosen")},
        "chosen": bool(row.get("chosen")),
        "rejected": False,
        "checks": [{"id": k, "ok": bool(v), "loose": loose.get(k), "gate": k in gates} for k, v in checks.items()],
        "failed_gates": sorted(g for g in gates if not checks.get(g)),
        "scorer": other,
        "usd": usd,
    }


def _label(c: dict) -> str:
    return f"{c['teacher']}#{c['sample'] or 0}"


def explain(candidates: list[dict], dpo: dict | None, output: dict, reason: str | None) -> list[str]:
    """Why this answer is `chosen` and that one `rejected`, in the order select.py decides."""
    usable = [c for c in candidates if c["score"] is not None]
    gated = output.get("gates", True) not in (False, "off")
    wrong = [c for c in usable if gated and c.get("failed_gates")]
    eligible = [c for c in usable if not c["filtered"] and c not in wrong]
    lines = []
    if not eligible:
        return [f"No answer could be chosen: {reason or 'every answer failed or was filtered'}."]
    chosen = next((c for c in candidates if c["chosen"]), None)
    if chosen is None:
        return ["The dataset names no chosen answer for this prompt."]
    best = chosen["score"]
    lines.append(f"Chosen: {_label(chosen)}, the best score among {len(eligible)} answer(s) that could be chosen ({best:.3f}).")
    above = [c for c in usable if (c["filtered"] or c in wrong) and c["score"] > best + 1e-9]
    for c in above:
        why = c["filtered"] or "fails the gate " + ", ".join(c["failed_gates"])
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
        lines.append(
            f"Rejected: {dpo['teacher_rejected']} ({dpo['score_rejected']:.3f}), an answer that fails the gate "
            f"{', '.join(rejected['failed_gates'])}: a correct-vs-wrong pair, whatever the margin."
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
    lower = [c for c in usable if c["score"] < best and (c["response"] or "").strip() != text]
    if not lower:
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


def describe(run, config: RunFacts, position: int) -> dict:
    """Everything about the prompt at a list position (`run` is a pager.RunData)."""
    index = run.index()
    name, row_number = run.locate(position)
    row = run.tables[name].take([row_number], tuple(run.tables[name].names))[0]
    dpo = None
    if index.dpo_row[position] >= 0:
        dpo = run.tables["dpo"].take([int(index.dpo_row[position])], DPO_COLUMNS)[0]
    start, count = int(index.cand_start[position]), int(index.cand_count[position])
    rows = run.tables["candidates"].span(start, start + count, CANDIDATE_COLUMNS).to_pylist() if count else []
    candidates = [candidate(r, config.prices.get(r["teacher"])) for r in rows]
    candidates.sort(key=lambda c: (c["teacher"], c["sample"] or 0))
    mark_rejected(candidates, dpo)
    messages = row["messages"] if name == "sft" else row["prompt"]
    return {
        "pos": position,
        "prompt_id": row["prompt_id"],
        "status": "rejected" if name == "rejected_rows" else ("pair" if dpo else "no_pair"),
        "language": row["language"],
        "task": row["task"],
        "domain": row.get("domain"),
        "persona_id": row["persona_id"],
        "persona": config.personas.get(row["persona_id"]),
        "decision": row.get("router_decision"),
        "messages": [m for m in messages if m["role"] != "assistant"],
        "constraints": constraints_of(row.get("constraints")),
        "reason": row.get("reason"),
        "margin": dpo["margin"] if dpo else None,
        "tie": bool(index.tie[position]),
        "candidates": candidates,
        "explain": explain(candidates, dpo, config.output, row.get("reason")),
    }
