"""A finished run folder → a table of every teacher's reward per prompt, read from the parquet alone.

`train-router`, `eval-router` and the run report all start here, so they work on any run folder,
long after the run (and without its config or models).

Conversations (conversation.turns > 1): each turn was routed, scored and chosen like a prompt, so a
row is one turn (its candidates grouped by conversation_id and turn) and its prompt is the
conversation so far, rebuilt from the sft row or rejected row that holds it.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from arbitrage.errors import ConfigError
from arbitrage.output.dataset import data_files
from arbitrage.rows import Prompt


@dataclass
class TurnSummary:
    """One turn of a run's conversations, over every conversation answered at it."""

    turn: int
    reached: int  # conversations answered at this turn
    kept: int  # of them, those the dataset keeps up to this turn: its chosen answer is a training target
    wins: dict[str, int]  # teacher → turns kept whose chosen answer is its
    mean_reward: dict[str, float]  # teacher → mean reward of its answers at this turn (NaN: never called)

    def share(self, teacher: str) -> float:
        """Of the turns kept, the share whose chosen answer is this teacher's: they add up to 1."""
        return self.wins.get(teacher, 0) / self.kept if self.kept else 0.0


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
    # Conversations (a run with turns > 1; empty otherwise), over the whole run: per turn, and
    # assistant turns → conversations kept with that many. `unlisted`: turns answered after the last
    # turn their conversation kept; no row holds their user message, so they are rows of `turns` only.
    turns: list[TurnSummary] = field(default_factory=list)
    turns_kept: dict[int, int] = field(default_factory=dict)
    unlisted: int = 0

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
            self.turns,
            self.turns_kept,
            self.unlisted,
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
    sft, rejected = read_config(run_dir, "sft"), read_config(run_dir, "rejected_rows")
    keys = [_turn_key(c) for c in candidates]
    order = list(dict.fromkeys(keys))  # candidates are written in prompt order (a conversation's turns in turn order)
    teachers = list(dict.fromkeys(c["teacher"] for c in candidates))
    row = {key: i for i, key in enumerate(order)}
    col = {t: j for j, t in enumerate(teachers)}
    shape = (len(order), len(teachers))
    latency, tok_in, tok_out = (np.full(shape, np.nan) for _ in range(3))
    failed, filtered = np.ones(shape, dtype=bool), np.ones(shape, dtype=bool)
    samples = 1 + max(c.get("sample") or 0 for c in candidates)
    per_sample = np.full((*shape, samples), np.nan)
    for key, c in zip(keys, candidates, strict=True):
        i, j = row[key], col[c["teacher"]]
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

    ids = {key: c["prompt_id"] for key, c in zip(keys, candidates, strict=True)}
    prompts = _prompts(sft, rejected, read_config(run_dir, "dpo"), ids)
    chosen = {(_conversation(r), k): t for r in sft for k, t in enumerate(_turn_teachers(r), 1)}
    # The turn after the last one a kept conversation kept (no answer good enough): no row holds its
    # user message, so it has no prompt here; it still counts in the per-turn figures.
    after_last = {(_conversation(r), len(_turn_teachers(r)) + 1) for r in sft}
    missing = [key for key in order if key not in prompts and key not in after_last]
    if missing:
        raise ConfigError(
            f"{run_dir}: {len(missing)} candidate prompts are in neither sft nor rejected_rows — rerun the run to rewrite its data"
        )
    turns = _per_turn(order, teachers, reward, chosen) if any(k > 1 for _, k in order) else []
    listed = [i for i, key in enumerate(order) if key in prompts]
    return ScoreTable(
        run_dir,
        [prompts[order[i]][0] for i in listed],
        teachers,
        reward[listed],
        latency[listed],
        tok_in[listed],
        tok_out[listed],
        failed[listed],
        filtered[listed],
        [prompts[order[i]][1] for i in listed],
        first[listed],
        samples,
        per_sample[listed],
        turns,
        dict(sorted(Counter(len(_turn_teachers(r)) for r in sft).items())) if turns else {},
        len(order) - len(listed),
    )


def _conversation(r: dict) -> str:
    return r.get("conversation_id") or r["prompt_id"]  # runs before conversations lack the column


TurnKey = tuple[str, int]  # (conversation_id, turn)


def _turn_key(r: dict) -> TurnKey:
    """(conversation_id, turn): one row of the table. A single-turn prompt is turn 1 of its own conversation."""
    return _conversation(r), r.get("turn") or 1


def _turn_teachers(r: dict) -> list[str]:
    """The teacher chosen at each turn an sft row holds."""
    return list(r.get("turn_teachers") or [r["teacher_chosen"]])


def _turn_prompts(messages: list[dict], turns: int) -> list[tuple[dict, ...]]:
    """The prompt of each of a conversation's last `turns` turns: what precedes each of the last `turns`
    assistant messages (earlier assistant messages are a prompt's own history)."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return [tuple(messages[:i]) for i in answers[len(answers) - turns :]] if turns else []


def _prompts(sft: list[dict], rejected: list[dict], dpo: list[dict], ids: dict) -> dict[TurnKey, tuple[Prompt, str | None]]:
    """Every turn answered is in sft (its conversation kept it) or in rejected_rows (the turn the
    conversation failed at, whose prompt holds the turns before it). `ids`: each turn's prompt id,
    from the candidates. A turn's own checks and router decision are known where a row is its own:
    the sft row's last turn, the dpo row of a turn with a pair."""
    pairs = {r["prompt_id"]: r for r in dpo}
    out: dict[TurnKey, tuple[Prompt, str | None]] = {}

    def add(r: dict, turn: int, messages: tuple, own: dict | None) -> None:
        key = (_conversation(r), turn)
        if key in ids:
            constraints = json.loads(own["constraints"] or "[]") if own else []
            out[key] = (_prompt(r, ids[key], turn, messages, constraints), own.get("router_decision") if own else None)

    for r in sft:
        prefixes = _turn_prompts(r["messages"], len(_turn_teachers(r)))
        for k, messages in enumerate(prefixes, 1):
            own = r if k == len(prefixes) else pairs.get(ids.get((_conversation(r), k)))
            add(r, k, messages, own)
    for r in rejected:
        turn = r.get("turn") or 1
        for k, messages in enumerate(_turn_prompts(r["prompt"], turn - 1), 1):
            add(r, k, messages, pairs.get(ids.get((_conversation(r), k))))
        add(r, turn, tuple(r["prompt"]), {"constraints": r.get("constraints")})  # older rejected_rows lack them
    return out


def _prompt(r: dict, prompt_id: str, turn: int, messages: tuple, constraints: list) -> Prompt:
    return Prompt(
        prompt_id=prompt_id,
        persona_id=r["persona_id"],
        language=r["language"],
        domain=r.get("domain") or "",  # rejected_rows gained `domain` with the learned router
        task=r["task"],
        topic="",
        messages=messages,
        constraints=tuple(constraints),
        turn=turn,
        conversation_id=_conversation(r) if turn > 1 else "",
    )


def _per_turn(order: list[TurnKey], teachers: list[str], reward: np.ndarray, chosen: dict) -> list[TurnSummary]:
    out = []
    for turn in sorted({k for _, k in order}):
        rows = [i for i, (_, k) in enumerate(order) if k == turn]
        won = Counter(chosen[order[i]] for i in rows if order[i] in chosen)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a teacher never called at this turn: NaN
            means = np.nanmean(reward[rows], axis=0)
        out.append(
            TurnSummary(
                turn,
                reached=len(rows),
                kept=sum(won.values()),
                wins={t: won[t] for t in teachers},
                mean_reward={t: float(means[j]) for j, t in enumerate(teachers)},
            )
        )
    return out


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
