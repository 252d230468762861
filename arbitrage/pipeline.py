"""One run, top to bottom: personas → prompts → route → generate → score → select → write."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from arbitrage import dataset, personas
from arbitrage.engine import Journal, RetryPolicy, execute, make_call
from arbitrage.errors import ConfigError
from arbitrage.routing import Router
from arbitrage.rows import Prompt, Scored, stable_hash
from arbitrage.scoring import Scorer
from arbitrage.select import SelectionSpec, select
from arbitrage.teachers import Teacher

log = logging.getLogger(__name__)

EMPTY_HINTS = {
    "sft": "no prompt has a usable answer — see the rejected_rows config and summary.json",
    "dpo": "no two answers to a prompt differ by output.min_margin — add teachers, prompts, or lower it",
}
HYDRA_FILES = {".hydra", "arbitrage.log"}  # what Hydra writes into out/ before the run starts


@dataclass
class RunSpec:
    out_dir: Path
    persona_files: list[Path]
    synthesis: personas.SynthesisSpec
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    config: dict = field(default_factory=dict)  # resolved config, for the card (no secrets in it)
    prompt_writer: str | None = None  # a teacher that writes the requests (PersonaHub style)


def _claim_out_dir(out_dir: Path, identity: dict) -> None:
    """Same run → resume; a different run in the same folder → refuse, naming what differs."""
    run_file = out_dir / "run.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        differs = sorted(k for k in identity if previous.get(k) != identity[k])
        if differs:
            raise ConfigError(
                f"{out_dir} already holds a different run (differs in: {', '.join(differs)}) — "
                f"choose another out=... or delete {out_dir}"
            )
    elif out_dir.exists() and any(p.name not in HYDRA_FILES for p in out_dir.iterdir()):
        raise ConfigError(f"{out_dir} exists and is not an arbitrage run — choose another out=... or empty it")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(identity, indent=2))


async def _write_prompts(prompts: list[Prompt], persona_list: list, writer: Teacher, spec: RunSpec) -> list[Prompt]:
    """PersonaHub style: `writer` writes each request; template text stays where it fails."""
    requests = personas.writer_requests(prompts, persona_list)
    calls = {w.original.prompt_id: make_call(w.request, writer) for w in requests}
    journal = Journal(spec.out_dir / "journal")
    try:
        if not all(journal.answered(c.call_id) for c in calls.values()):
            await writer.start()
        await execute(list(calls.values()), {writer.name: writer}, journal, spec.retry)
    finally:
        journal.close()
    written = []
    for prompt in prompts:
        record = journal.records.get(calls[prompt.prompt_id].call_id) if prompt.prompt_id in calls else None
        written.append(personas.with_written_request(prompt, record.text) if record is not None and record.ok else prompt)
    kept = sum(1 for a, b in zip(prompts, written, strict=True) if a is not b)
    log.info("prompt writer %s wrote %d of %d prompts (math and failures keep their template)", writer.name, kept, len(prompts))
    return written


async def run(spec: RunSpec, teachers: dict[str, Teacher], router: Router, scorer: Scorer) -> dict:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. Prompts, and every check that can fail before a model loads.
    persona_list = personas.load_personas(spec.persona_files)
    prompts = personas.synthesise(persona_list, spec.synthesis)
    names = list(teachers)
    router.check(names)
    for teacher in teachers.values():
        teacher.check()
    scorer.check()
    if spec.prompt_writer is not None and spec.prompt_writer not in teachers:
        raise ConfigError(
            f"personas.prompt_writer names teacher '{spec.prompt_writer}', which is not configured — configured: {', '.join(names)}"
        )
    identity = {
        "prompts": stable_hash(sorted(p.prompt_id for p in prompts)),
        "teachers": {n: stable_hash(t.generation_key()) for n, t in teachers.items()},
        "routes": stable_hash(
            sorted(make_call(p, teachers[t]).call_id for p in prompts for t in router.route(p, names).teachers)
        ),
        "prompt_writer": spec.prompt_writer,
    }
    _claim_out_dir(spec.out_dir, identity)
    (spec.out_dir / "config.yaml").write_text(yaml.safe_dump(spec.config, sort_keys=False, allow_unicode=True))
    if spec.prompt_writer:
        prompts = await _write_prompts(prompts, persona_list, teachers[spec.prompt_writer], spec)
    routes = {p.prompt_id: router.route(p, names) for p in prompts}
    calls = [make_call(p, teachers[t]) for p in prompts for t in routes[p.prompt_id].teachers]
    timings["synthesise_s"] = time.perf_counter() - t0
    log.info("%d prompts, %d calls to %s", len(prompts), len(calls), ", ".join(names))

    # 2. Generate: every finished call lands in the journal as it finishes.
    t1 = time.perf_counter()
    journal = Journal(spec.out_dir / "journal")
    try:
        needed = {c.teacher for c in calls if not journal.answered(c.call_id)}
        for name in needed:
            await teachers[name].start()
        timings["load_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        await execute(calls, teachers, journal, spec.retry)
        timings["generate_s"] = time.perf_counter() - t2
    finally:
        journal.close()
        for teacher in teachers.values():
            await teacher.close()

    # 3. Score every usable answer; failures are kept with no score.
    t3 = time.perf_counter()
    prompt_by_id = {p.prompt_id: p for p in prompts}
    candidates = [journal.records[c.call_id] for c in calls if c.call_id in journal.records]
    usable = [c for c in candidates if c.ok]
    scores = await scorer.score([(prompt_by_id[c.prompt_id], c) for c in usable])
    await scorer.close()
    score_of = {c.call_id: s for c, s in zip(usable, scores, strict=True)}
    timings["score_s"] = time.perf_counter() - t3

    # 4. Select the best per prompt, pair it with a worse one, write the dataset.
    t4 = time.perf_counter()
    by_prompt: dict[str, list[Scored]] = defaultdict(list)
    for c in candidates:
        s = score_of.get(c.call_id)
        by_prompt[c.prompt_id].append(Scored(c, s.value if s else float("nan"), s.details if s else {}))
    selections = [select(p, routes[p.prompt_id], by_prompt[p.prompt_id], spec.selection) for p in prompts]
    rows = dataset.build_rows(selections)
    paths = dataset.write_parquet(spec.out_dir, rows)
    counts = {name: len(r) for name, r in rows.items()}
    for name, hint in EMPTY_HINTS.items():
        if not counts[name]:
            log.warning("no %s rows: %s", name, hint)
    timings["write_s"] = time.perf_counter() - t4
    timings["total_s"] = time.perf_counter() - t0

    summary = _summary(spec, prompts, candidates, selections, teachers, router, scorer, counts, timings)
    dataset.write_card(spec.out_dir, rows, paths, summary, spec.config)
    (spec.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def _summary(spec, prompts, candidates, selections, teachers, router, scorer, counts, timings) -> dict:
    per_teacher = {}
    for name, teacher in teachers.items():
        mine = [c for c in candidates if c.teacher == name]
        scores = [s.score for sel in selections for s in sel.candidates if s.candidate.teacher == name and s.candidate.ok]
        stats = dict(getattr(teacher, "stats", {}))
        tokens_out = sum(c.tokens_out for c in mine)
        busy = stats.get("generate_s")
        per_teacher[name] = {
            "calls": len(mine),
            "failed": sum(1 for c in mine if not c.ok),
            "tokens_in": sum(c.tokens_in for c in mine),
            "tokens_out": tokens_out,
            "wins": sum(1 for s in selections if s.chosen and s.chosen.candidate.teacher == name),
            "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
            **({"tok_per_s": round(tokens_out / busy, 1), "prompts_per_s": round(len(mine) / busy, 2)} if busy else {}),
            **{k: round(v, 2) for k, v in stats.items()},
        }
    dropped: dict[str, int] = defaultdict(int)
    for s in selections:
        if s.chosen and s.rejected is None:
            dropped[s.pair_reason.split(" below")[0]] += 1
    return {
        "out_dir": str(spec.out_dir),
        "prompts": len(prompts),
        "rows": counts,
        "router": router.name,
        "reward": scorer.name,
        "teachers": per_teacher,
        "pairs_dropped": dict(dropped),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
