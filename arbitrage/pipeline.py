"""One run, top to bottom: personas → prompts → route → generate → score → select → write."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from arbitrage import dataset, diversity, embeddings, filters, personas, report
from arbitrage.engine import Call, Journal, RetryPolicy, execute, make_call
from arbitrage.errors import ConfigError
from arbitrage.routing import Route, Router
from arbitrage.rows import Candidate, Prompt, Scored, stable_hash
from arbitrage.scoring import Score, Scorer
from arbitrage.select import Selection, SelectionSpec, select
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
    filters: list = field(default_factory=list)  # the quality stage, in order (arbitrage.filters)
    embedding_spread: bool = False  # add embedding spread to the diversity metrics (loads MiniLM)


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
    timings: dict[str, float] = defaultdict(float)
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
    # A router that learns from scores (bandit) is online: it routes a wave of prompts at a time, and
    # each wave is scored before the next is routed. Its routes are not known up front, so only its
    # name is part of the run's identity.
    online = getattr(router, "wave_size", None) is not None
    planned = {} if online else _route(router, prompts, names)
    identity = {
        "prompts": stable_hash(sorted(p.prompt_id for p in prompts)),
        "teachers": {n: stable_hash(t.generation_key()) for n, t in teachers.items()},
        "routes": stable_hash("online", router.name)
        if online
        else stable_hash(sorted(c.call_id for c in _calls(prompts, planned, teachers))),
        "prompt_writer": spec.prompt_writer,
    }
    _claim_out_dir(spec.out_dir, identity)
    (spec.out_dir / "config.yaml").write_text(yaml.safe_dump(spec.config, sort_keys=False, allow_unicode=True))
    if spec.prompt_writer:
        prompts = await _write_prompts(prompts, persona_list, teachers[spec.prompt_writer], spec)
    synthesised = prompts
    # Quality stage, prompts: dedup and decontamination before any teacher is paid to answer.
    quality: dict[str, int] = {}
    prompts, dropped = filters.apply(spec.filters, "prompt", prompts, quality)
    filtered_out = [Selection(synthesised[i], Route((), "filtered"), [], reason=why) for i, why in dropped.items()]
    # Route once: only prompts a writer rewrote (new ids) still need a route.
    unplanned = [p for p in prompts if not online and p.prompt_id not in planned]
    routes = planned | _route(router, unplanned, names) if unplanned else planned
    calls = _calls(prompts, routes, teachers)
    timings["synthesise_s"] = time.perf_counter() - t0
    if online:
        log.info("%d prompts to %s, routed online in waves of %d", len(prompts), ", ".join(names), router.wave_size)
    else:
        log.info("%d prompts, %d calls to %s", len(prompts), len(calls), ", ".join(names))

    # 2. Generate: every finished call lands in the journal as it finishes. An online router gets
    #    each wave's scores (observe) before it routes the next wave.
    prompt_by_id = {p.prompt_id: p for p in prompts}
    score_of: dict[str, Score] = {}
    journal = Journal(spec.out_dir / "journal")
    try:
        await _generate(calls, teachers, journal, spec.retry, timings)
        for wave in _waves(prompts, router.wave_size) if online else []:
            routes |= _route(router, wave, names)
            wave_calls = _calls(wave, routes, teachers)
            calls += wave_calls
            await _generate(wave_calls, teachers, journal, spec.retry, timings)
            score_of |= await _feedback(router, wave_calls, journal, prompt_by_id, scorer, spec.filters, timings)
    finally:
        journal.close()
        for teacher in teachers.values():
            await teacher.close()

    # 3. Score every usable answer not scored yet; failures are kept with no score.
    t3 = time.perf_counter()
    candidates = [journal.records[c.call_id] for c in calls if c.call_id in journal.records]
    score_of |= await _score([c for c in candidates if c.call_id not in score_of], prompt_by_id, scorer)
    await scorer.close()
    timings["score_s"] += time.perf_counter() - t3

    # 4. Quality stage, answers: those filtered cannot be chosen but stay eligible as DPO rejected.
    t4 = time.perf_counter()
    usable = [c for c in candidates if c.ok]
    _, why_filtered = filters.apply(spec.filters, "completion", [(prompt_by_id[c.prompt_id], c) for c in usable], quality)
    filtered_calls = {usable[i].call_id: why for i, why in why_filtered.items()}

    # 5. Select the best per prompt, pair it with a worse one, filter the chosen answers, write.
    by_prompt: dict[str, list[Scored]] = defaultdict(list)
    for c in candidates:
        s = score_of.get(c.call_id)
        by_prompt[c.prompt_id].append(
            Scored(c, s.value if s else float("nan"), s.details if s else {}, filtered_calls.get(c.call_id))
        )
    selections = [select(p, routes[p.prompt_id], by_prompt[p.prompt_id], spec.selection) for p in prompts]
    chosen = [s for s in selections if s.chosen]
    answers_before = [s.chosen.candidate.text for s in chosen]
    _, dropped = filters.apply(spec.filters, "output", [(s.prompt, s.chosen) for s in chosen], quality)
    for i, why in dropped.items():
        chosen[i].chosen, chosen[i].rejected, chosen[i].reason = None, None, why
    selections += filtered_out
    quality_summary = _quality(spec, quality, synthesised, answers_before, selections)
    timings["quality_s"] = time.perf_counter() - t4
    t5 = time.perf_counter()
    rows = dataset.build_rows(selections)
    paths = dataset.write_parquet(spec.out_dir, rows)
    counts = {name: len(r) for name, r in rows.items()}
    for name, hint in EMPTY_HINTS.items():
        if not counts[name]:
            log.warning("no %s rows: %s", name, hint)
    timings["write_s"] = time.perf_counter() - t5
    timings["total_s"] = time.perf_counter() - t0

    summary = _summary(spec, prompts, candidates, selections, teachers, router, scorer, counts, timings)
    summary["quality"] = quality_summary
    dataset.write_card(spec.out_dir, rows, paths, summary, spec.config)
    (spec.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    report.write(spec.out_dir)
    return summary


def _quality(
    spec: RunSpec, dropped: dict[str, int], synthesised: list[Prompt], answers_before: list[str], selections: list[Selection]
) -> dict:
    """What each filter dropped, and diversity before and after the quality stage."""
    kept = [s for s in selections if s.chosen]
    embed = embeddings.embed_texts if spec.embedding_spread else None
    facets_before = {k: [getattr(p, k) for p in synthesised] for k in ("language", "task", "domain", "persona_id")}
    facets_after = {k: [getattr(s.prompt, k) for s in kept] for k in ("language", "task", "domain", "persona_id")}
    return {
        "dropped": dropped,
        "prompts_before": diversity.metrics([p.user_text for p in synthesised], facets_before, embed),
        "prompts_after": diversity.metrics([s.prompt.user_text for s in kept], facets_after, embed),
        "answers_before": diversity.metrics(answers_before, {}, embed),
        "answers_after": diversity.metrics([s.chosen.candidate.text for s in kept], {}, embed),
    }


def _route(router: Router, prompts: list[Prompt], names: list[str]) -> dict[str, Route]:
    prepare = getattr(router, "prepare", None)
    if prepare is not None:  # e.g. the learned router embeds the whole batch at once
        prepare(prompts)
    return {p.prompt_id: router.route(p, names) for p in prompts}


def _calls(prompts: list[Prompt], routes: dict[str, Route], teachers: dict[str, Teacher]) -> list[Call]:
    return [make_call(p, teachers[t]) for p in prompts if p.prompt_id in routes for t in routes[p.prompt_id].teachers]


def _waves(prompts: list[Prompt], size: int) -> list[list[Prompt]]:
    return [prompts[i : i + size] for i in range(0, len(prompts), max(1, int(size)))]


async def _generate(calls: list[Call], teachers: dict[str, Teacher], journal: Journal, retry: RetryPolicy, timings) -> None:
    """Start only the engines with calls left to answer (none on a full resume), then run the calls."""
    t = time.perf_counter()
    for name in {c.teacher for c in calls if not journal.answered(c.call_id)}:
        await teachers[name].start()
    timings["load_s"] += time.perf_counter() - t
    t = time.perf_counter()
    await execute(calls, teachers, journal, retry)
    timings["generate_s"] += time.perf_counter() - t


async def _score(candidates: list[Candidate], prompt_by_id: dict[str, Prompt], scorer: Scorer) -> dict[str, Score]:
    usable = [c for c in candidates if c.ok]
    if not usable:
        return {}
    scores = await scorer.score([(prompt_by_id[c.prompt_id], c) for c in usable])
    return {c.call_id: s for c, s in zip(usable, scores, strict=True)}


async def _feedback(
    router, calls: list[Call], journal: Journal, prompt_by_id, scorer: Scorer, quality, timings
) -> dict[str, Score]:
    """Score one wave and tell the online router what each call is worth to the dataset: reward None
    for a failed answer or one the answer filters drop (it can never be chosen)."""
    t = time.perf_counter()
    candidates = [journal.records[c.call_id] for c in calls]
    scores = await _score(candidates, prompt_by_id, scorer)
    timings["score_s"] += time.perf_counter() - t
    scored = [c for c in candidates if c.call_id in scores]
    _, dropped = filters.apply(quality, "completion", [(prompt_by_id[c.prompt_id], c) for c in scored], {})  # counted in step 4
    worthless = {scored[i].call_id for i in dropped}
    for c in calls:
        value = scores[c.call_id].value if c.call_id in scores and c.call_id not in worthless else None
        router.observe(c.prompt, journal.records[c.call_id], value)
    return scores


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
