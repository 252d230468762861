"""A finished run folder → a table of every teacher's reward per prompt, read from the parquet alone.

`train-router`, `eval-router` and the run report all start here, so they work on any run folder,
long after the run (and without its config or models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from arbitrage.errors import ConfigError
from arbitrage.output.dataset import data_files
from arbitrage.rows import Prompt


@dataclass
class ScoreTable:
    """Rows are prompts in run order, columns are teachers. NaN: the teacher was not called.

    The reward is what the answer is worth to the dataset: its score, or 0 when it failed or the
    answer filters dropped it (it can never be chosen) — the value a router should maximise.
    """

    run_dir: Path
    prompts: list[Prompt]  # rebuilt from the dataset: ids, language, task, domain, messages
    teachers: list[str]
    reward: np.ndarray
    latency_s: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    failed: np.ndarray  # bool: no usable answer (an error or empty text), so its reward is 0
    filtered: np.ndarray  # bool: an answer filter dropped it (the candidates' `filtered` column), reward 0
    decisions: list[str | None]  # the run's router_decision per prompt
    # With n samples per teacher, `reward` is the best of them (what calling the teacher is worth
    # to the dataset) and `first` the first sample's alone (one call): their gap is the gain from
    # more samples, the columns' gap the gain from more teachers.
    first: np.ndarray | None = None
    samples: int = 1
    per_sample: np.ndarray | None = None  # [prompts, teachers, samples]: each sample's reward (NaN: none)

    @property
    def complete(self) -> bool:
        """Every teacher answered every prompt: an `all` run, which offline replays need."""
        return bool(self.prompts) and not np.isnan(self.reward).any()

    def oracle(self) -> np.ndarray:
        """Best reward per prompt among the teachers that were called."""
        return np.nanmax(self.reward, axis=1)

    def subset(self, prompt_ids: list[str]) -> ScoreTable:
        index = {p.prompt_id: i for i, p in enumerate(self.prompts)}
        rows = [index[pid] for pid in prompt_ids if pid in index]
        return ScoreTable(
            self.run_dir,
            [self.prompts[i] for i in rows],
            self.teachers,
            self.reward[rows],
            self.latency_s[rows],
            self.tokens_in[rows],
            self.tokens_out[rows],
            self.failed[rows],
            self.filtered[rows],
            [self.decisions[i] for i in rows],
            None if self.first is None else self.first[rows],
            self.samples,
            None if self.per_sample is None else self.per_sample[rows],
        )


def read_config(run_dir: Path, name: str) -> list[dict]:
    """Rows of one dataset config (sft, dpo, candidates, rejected_rows), from the file the card
    names (what load_dataset reads); [] when it has none."""
    path = data_files(run_dir).get(name)
    return pq.read_table(Path(run_dir) / path).to_pylist() if path else []


def load(run_dir: Path | str) -> ScoreTable:
    run_dir = Path(run_dir)
    candidates = read_config(run_dir, "candidates")
    if not candidates:
        raise ConfigError(f"{run_dir} has no data/candidates-*.parquet — give the folder of a finished arbitrage run")
    prompts = _prompts(run_dir)
    order = list(dict.fromkeys(c["prompt_id"] for c in candidates))  # candidates are written in prompt order
    teachers = list(dict.fromkeys(c["teacher"] for c in candidates))
    row = {pid: i for i, pid in enumerate(order)}
    col = {t: j for j, t in enumerate(teachers)}
    shape = (len(order), len(teachers))
    latency, tok_in, tok_out = (np.full(shape, np.nan) for _ in range(3))
    failed, filtered = np.ones(shape, dtype=bool), np.ones(shape, dtype=bool)
    samples = 1 + max(c.get("sample") or 0 for c in candidates)
    per_sample = np.full((*shape, samples), np.nan)
    for c in candidates:
        i, j = row[c["prompt_id"]], col[c["teacher"]]
        sample = c.get("sample") or 0
        bad, dropped = c["score"] is None, bool(c.get("filtered"))  # runs before the filters lack `filtered`
        value = 0.0 if bad or dropped else c["score"]
        per_sample[i, j, sample] = value
        if sample == 0:
            latency[i, j], tok_in[i, j], tok_out[i, j] = c["latency_s"], c["tokens_in"], c["tokens_out"]
        # a teacher failed (was filtered) on a prompt only if every sample did
        failed[i, j] &= bad
        filtered[i, j] &= dropped
    reward, first = np.fmax.reduce(per_sample, axis=2), per_sample[:, :, 0].copy()  # best sample (NaN: not called), first
    called = ~np.isnan(reward)
    failed &= called
    filtered &= called
    missing = [pid for pid in order if pid not in prompts]
    if missing:
        raise ConfigError(
            f"{run_dir}: {len(missing)} candidate prompts are in neither sft nor rejected_rows — rerun the run to rewrite its data"
        )
    return ScoreTable(
        run_dir,
        [prompts[pid][0] for pid in order],
        teachers,
        reward,
        latency,
        tok_in,
        tok_out,
        failed,
        filtered,
        [prompts[pid][1] for pid in order],
        first,
        samples,
        per_sample,
    )


def _prompts(run_dir: Path) -> dict[str, tuple[Prompt, str | None]]:
    """Every prompt is in sft (it has an answer) or in rejected_rows (it has none)."""
    out: dict[str, tuple[Prompt, str | None]] = {}
    for r in read_config(run_dir, "sft"):
        messages = tuple(m for m in r["messages"] if m["role"] != "assistant")
        out[r["prompt_id"]] = (_prompt(r, messages, json.loads(r["constraints"] or "[]")), r["router_decision"])
    for r in read_config(run_dir, "rejected_rows"):
        out[r["prompt_id"]] = (_prompt(r, tuple(r["prompt"]), []), None)
    return out


def _prompt(r: dict, messages: tuple, constraints: list) -> Prompt:
    return Prompt(
        prompt_id=r["prompt_id"],
        persona_id=r["persona_id"],
        language=r["language"],
        domain=r.get("domain") or "",  # rejected_rows gained `domain` with the learned router
        task=r["task"],
        topic="",
        messages=messages,
        constraints=tuple(constraints),
    )


# ---- what the report and its figures read off a table ----

TIE = "tie"


def winners(table: ScoreTable) -> list[str]:
    """Per prompt: the teacher with the strictly best reward, `tie` when several share it, or the
    only teacher called (a one-call router's choice)."""
    out = []
    for row in table.reward:
        called = ~np.isnan(row)
        best = np.flatnonzero(called & (row >= np.nanmax(row) - 1e-9))
        out.append(table.teachers[best[0]] if len(best) == 1 else TIE)
    return out


def shares(labels: list[str], keys: list[str]) -> dict[str, float]:
    n = max(1, len(labels))
    return {k: labels.count(k) / n for k in keys}


def groups(table: ScoreTable, labels: list[str], attr: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for p, label in zip(table.prompts, labels, strict=True):
        groups.setdefault(getattr(p, attr), []).append(label)
    return dict(sorted(groups.items()))


def margins(table: ScoreTable) -> np.ndarray:
    """Best − worst reward per prompt with two or more answers: what a `worst` DPO pair would get."""
    several = (~np.isnan(table.reward)).sum(axis=1) >= 2
    rows = table.reward[several]
    return np.nanmax(rows, axis=1) - np.nanmin(rows, axis=1) if len(rows) else np.zeros(0)


def routed_reward(table: ScoreTable, ref: ScoreTable) -> np.ndarray:
    """The reference run's reward for the teacher this run called (same call id: same answer)."""
    col = {t: j for j, t in enumerate(ref.teachers)}
    out = []
    for i, row in enumerate(table.reward):
        called = [table.teachers[j] for j in np.flatnonzero(~np.isnan(row))]
        out.append(max(ref.reward[i, col[t]] for t in called))
    return np.array(out)
