"""Write selections as a dataset folder that `datasets.load_dataset(out, "sft"|"dpo")` opens and
TRL's SFTTrainer / DPOTrainer train on as is (conversational `messages`; `prompt`/`chosen`/`rejected`).

Rows stream into parquet files beside the previous run's data; `commit()` swaps the new dataset in
with one rename of the card, whose `configs:` name the files (see DatasetWriter).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from arbitrage import constraints, settings
from arbitrage.rows import Candidate, Prompt, Scored
from arbitrage.runpaths import RunPaths
from arbitrage.select import Conversation, Selection
from arbitrage.teachers import reasoning as think

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
# output.reasoning=separate: every message gains a nullable `reasoning_content` (null but on a thinking
# teacher's answers), so all rows share one schema; the name chat templates of thinking models read.
MESSAGES_REASONING = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string()), ("reasoning_content", pa.string())]))
# A thinking teacher's reasoning in the rows: its own field of the assistant message, inline in
# <think> tags before the answer, or left out (the candidates table keeps it in every case).
REASONING = ("separate", "inline", "drop")
# output.dpo_turns: a conversation's DPO pairs, one per turn (the conversation so far as `prompt`) or its last turn's.
DPO_TURNS = ("all", "last")

PROVENANCE = [
    ("prompt_id", pa.string()),
    ("persona_id", pa.string()),
    ("language", pa.string()),
    ("domain", pa.string()),
    ("task", pa.string()),
    ("teacher_chosen", pa.string()),
    ("teacher_rejected", pa.string()),
    ("score_chosen", pa.float64()),
    ("score_rejected", pa.float64()),
    ("margin", pa.float64()),
    ("n_candidates", pa.int32()),
    ("router_decision", pa.string()),
    ("constraints", pa.string()),  # JSON: the checks the prompt carries
    # The same checks in IFEval / Tulu 3 form, so the rows also serve as RLVR data
    ("instruction_id_list", pa.list_(pa.string())),
    ("kwargs", pa.string()),  # JSON list, one object per instruction id
    ("score_details", pa.string()),  # JSON: the chosen answer's checks, which are gates, per-scorer details (score_details())
    # Conversations: its id (the first turn's prompt id), the turn (sft: how many assistant turns
    # the row holds; dpo: the turn the pair answers), and per turn so far: the teacher chosen, its
    # score and that turn's checks (`constraints` and the IFEval columns are the row's last turn's).
    ("conversation_id", pa.string()),
    ("turn", pa.int32()),
    ("turn_teachers", pa.list_(pa.string())),
    ("turn_scores", pa.list_(pa.float64())),
    ("turn_constraints", pa.list_(pa.string())),  # JSON each, as `constraints`
]

SCHEMAS = {
    "sft": pa.schema([("messages", MESSAGES_REASONING), *PROVENANCE]),
    "dpo": pa.schema(
        [("prompt", MESSAGES_REASONING), ("chosen", MESSAGES_REASONING), ("rejected", MESSAGES_REASONING), *PROVENANCE]
    ),
    "candidates": pa.schema(
        [
            ("prompt_id", pa.string()),
            ("call_id", pa.string()),
            ("teacher", pa.string()),
            ("response", pa.string()),  # the answer: what the checks and the reward saw
            ("reasoning", pa.string()),  # a thinking teacher's reasoning, apart from the answer
            ("finish_reason", pa.string()),
            ("tokens_in", pa.int64()),
            ("tokens_out", pa.int64()),  # reasoning tokens included
            ("reasoning_tokens", pa.int64()),
            ("latency_s", pa.float64()),
            ("attempts", pa.int32()),
            ("sample", pa.int32()),
            ("error", pa.string()),
            ("last_status", pa.int32()),
            ("score", pa.float64()),
            ("score_details", pa.string()),
            ("chosen", pa.bool_()),
            ("filtered", pa.string()),  # why the quality stage kept it from being chosen
            ("language", pa.string()),
            ("task", pa.string()),
            ("conversation_id", pa.string()),
            ("turn", pa.int32()),
        ]
    ),
    "rejected_rows": pa.schema(
        [
            ("prompt_id", pa.string()),
            ("persona_id", pa.string()),
            ("language", pa.string()),
            ("domain", pa.string()),
            ("task", pa.string()),
            ("prompt", MESSAGES),
            ("reason", pa.string()),
            ("constraints", pa.string()),  # JSON: the checks the prompt carries
            ("conversation_id", pa.string()),
            ("turn", pa.int32()),  # the turn that had no usable answer (the prompt is the conversation up to it)
        ]
    ),
}


def schemas(reasoning: str = REASONING[0]) -> dict[str, pa.Schema]:
    """The tables' schemas for an output.reasoning mode: messages carry `reasoning_content` only when separate."""
    if reasoning == "separate":
        return SCHEMAS
    plain = {"sft": [("messages", MESSAGES)], "dpo": [("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES)]}
    return {name: pa.schema([*plain[name], *PROVENANCE]) if name in plain else schema for name, schema in SCHEMAS.items()}


def _assistant(candidate: Candidate, reasoning: str) -> list[dict]:
    if reasoning == "separate":
        return [{"role": "assistant", "content": candidate.text, "reasoning_content": candidate.reasoning}]
    text = think.inline(candidate.text, candidate.reasoning) if reasoning == "inline" else candidate.text
    return [{"role": "assistant", "content": text}]


def _prompt_facts(p: Prompt) -> dict:
    """The columns an sft, dpo and rejected row share: which prompt, its facets, its checks, its turn."""
    return {
        "prompt_id": p.prompt_id,
        "persona_id": p.persona_id,
        "language": p.language,
        "domain": p.domain,
        "task": p.task,
        "constraints": _constraints_json(p),  # the checks the prompt carries
        "conversation_id": p.conversation,
        "turn": p.turn,
    }


def _provenance(s: Selection, turns: list[Selection] | None = None) -> dict:
    """`turns`: a conversation's turns up to and with `s` (None: `s` alone)."""
    p, chosen, rejected = s.prompt, s.chosen, s.rejected
    turns = turns or [s]
    ids, kwargs = constraints.to_ifeval(p.constraints)
    return {
        **_prompt_facts(p),
        "teacher_chosen": chosen.candidate.teacher,
        "teacher_rejected": rejected.candidate.teacher if rejected else None,
        "score_chosen": chosen.score,
        "score_rejected": rejected.score if rejected else None,
        "margin": s.margin,
        "n_candidates": len(s.candidates),
        "router_decision": s.route.decision,
        "instruction_id_list": ids,
        "kwargs": json.dumps(kwargs, ensure_ascii=False),
        "score_details": score_details(chosen),
        "turn_teachers": [t.chosen.candidate.teacher for t in turns],
        "turn_scores": [t.chosen.score for t in turns],
        "turn_constraints": [_constraints_json(t.prompt) for t in turns],
    }


def _constraints_json(p: Prompt) -> str:
    return json.dumps(list(p.constraints), ensure_ascii=False)


def score_details(scored: Scored) -> str:
    """The `score_details` JSON of an answer: `checks` (check id → strict verdict) first, as the
    viewer's search expects, `gates` (those checks that say it is correct), then the scorer's
    details (`loose` verdicts, per-part scores of a weighted reward) and any scoring error."""
    out = {"checks": scored.checks} if scored.checks else {}
    if scored.gates:
        out["gates"] = sorted(scored.gates)
    out |= scored.details
    if scored.error:
        out["error"] = scored.error
    return json.dumps(out, ensure_ascii=False)


def build_rows(
    items: list[Selection | Conversation], reasoning: str = REASONING[0], dpo_turns: str = DPO_TURNS[0]
) -> dict[str, list[dict]]:
    """`reasoning`: how a thinking teacher's reasoning goes into the sft and dpo rows (REASONING);
    `dpo_turns`: which turns of a conversation give DPO pairs (DPO_TURNS)."""
    rows: dict[str, list[dict]] = {name: [] for name in SCHEMAS}
    for item in items:
        if isinstance(item, Conversation):
            _conversation_rows(item, rows, reasoning, dpo_turns)
            continue
        _candidate_rows(item, rows)
        if item.chosen is None:
            rows["rejected_rows"].append(_rejected_row(item.prompt, item.reason))
            continue
        provenance = _provenance(item)
        rows["sft"].append({"messages": [*item.prompt.messages, *_assistant(item.chosen.candidate, reasoning)], **provenance})
        if item.rejected is not None:
            rows["dpo"].append(_dpo_row(item, provenance, reasoning))
    return rows


def _conversation_rows(c: Conversation, rows: dict[str, list[dict]], reasoning: str, dpo_turns: str) -> None:
    """One sft row for the whole conversation kept; a DPO pair per turn (its prefix as `prompt`);
    every turn's candidates; a rejected row at the turn that had no answer to choose (its prompt is
    the conversation up to it), whether the turns before it are kept or were too few.
    A conversation a stop left too short to keep writes nothing: the rerun finishes it."""
    if not c.finished:
        return
    for s in c.turns:
        _candidate_rows(s, rows)
    if c.failed is not None or not c.written:  # the turn it ended at, with why (kept before it or not)
        rows["rejected_rows"].append(_rejected_row((c.failed or c.turns[-1]).prompt, c.reason))
    if not c.written:
        return
    kept = c.kept
    messages = list(kept[0].prompt.messages)
    for k, s in enumerate(kept):
        if k:
            messages.append(s.prompt.messages[-1])  # turn k's user message (the rest is the prefix)
        messages += _assistant(s.chosen.candidate, reasoning)
        if s.rejected is not None and (dpo_turns == "all" or k == len(kept) - 1):
            rows["dpo"].append(_dpo_row(s, _provenance(s, kept[: k + 1]), reasoning))
    rows["sft"].append({"messages": messages, **_provenance(kept[-1], kept)})


def _dpo_row(s: Selection, provenance: dict, reasoning: str) -> dict:
    return {
        "prompt": list(s.prompt.messages),
        "chosen": _assistant(s.chosen.candidate, reasoning),
        "rejected": _assistant(s.rejected.candidate, reasoning),
        **provenance,
    }


def _rejected_row(p: Prompt, reason) -> dict:
    return {**_prompt_facts(p), "prompt": list(p.messages), "reason": None if reason is None else str(reason)}


def _candidate_rows(s: Selection, rows: dict[str, list[dict]]) -> None:
    p = s.prompt
    for scored in s.candidates:
        c = scored.candidate
        rows["candidates"].append(
            {
                "prompt_id": p.prompt_id,
                "call_id": c.call_id,
                "teacher": c.teacher,
                "response": c.text,
                "reasoning": c.reasoning,
                "finish_reason": c.finish_reason,
                "tokens_in": c.tokens_in,
                "tokens_out": c.tokens_out,
                "reasoning_tokens": c.reasoning_tokens,
                "latency_s": c.latency_s,
                "attempts": c.attempts,
                "sample": c.sample,
                "error": c.error,
                "last_status": c.last_status,
                "score": scored.score if scored.usable else None,
                "score_details": score_details(scored),
                "chosen": scored is s.chosen,
                "filtered": scored.filtered,
                "language": p.language,
                "task": p.task,
                "conversation_id": p.conversation,
                "turn": p.turn,
            }
        )


class DatasetWriter:
    """Appends rows to one parquet file per config as selections arrive, in row groups of
    `flush_rows`, beside the previous run's files; `commit()` swaps the new dataset in.

    The swap: the new files get names from their content hash (so `datasets`, which caches a local
    folder by its card's patterns, never serves stale rows) and are fsynced; the new card, which
    names them, replaces the old one in one rename; then the old files go. `load_dataset` reads the
    files the card names, so a crash or a second Ctrl-C at any instant leaves the old or the new
    dataset whole, never a mix and never none.
    """

    def __init__(self, out_dir: Path, flush_rows: int = 4096, reasoning: str = REASONING[0], dpo_turns: str = DPO_TURNS[0]):
        # pyarrow imports pandas on its first conversion (~0.5 s here): done in the background while
        # the first requests are in flight, not after the last one.
        threading.Thread(target=pa.array, args=([0],), daemon=True).start()
        self.out_dir = out_dir
        self.paths = RunPaths(out_dir)
        self.data = self.paths.data
        self.data.mkdir(parents=True, exist_ok=True)
        self.flush_rows = flush_rows
        self.reasoning = settings.choice("output.reasoning", reasoning, REASONING)
        self.dpo_turns = settings.choice("output.dpo_turns", dpo_turns, DPO_TURNS)
        self.schemas = schemas(self.reasoning)
        self.samples: dict[str, dict] = {}  # first row of each config, for the card
        self._buffers: dict[str, list[dict]] = {name: [] for name in SCHEMAS}
        self._writers: dict[str, pq.ParquetWriter] = {}

    def _tmp(self, name: str) -> Path:
        return self.data / f".{name}.{os.getpid()}.parquet.tmp"

    def add(self, items: list[Selection | Conversation]) -> None:
        rows = build_rows(items, self.reasoning, self.dpo_turns)
        for name, batch in rows.items():
            if batch and name not in self.samples:
                self.samples[name] = batch[0]
            self._buffers[name].extend(batch)
            if len(self._buffers[name]) >= self.flush_rows:
                self._flush(name)

    def _flush(self, name: str) -> None:
        if not self._buffers[name]:
            return
        if name not in self._writers:
            self._writers[name] = pq.ParquetWriter(self._tmp(name), self.schemas[name])
        self._writers[name].write_table(pa.Table.from_pylist(self._buffers[name], schema=self.schemas[name]))
        self._buffers[name] = []

    def commit(self, card: Callable[[dict[str, str]], str]) -> dict[str, str]:
        """Finish the files and swap them in; `card(paths)` renders the card that names them.
        Returns config → relative path for the configs that have rows (datasets cannot load a
        0-row split, so an empty config is left out)."""
        for name in SCHEMAS:
            self._flush(name)
        for writer in self._writers.values():
            writer.close()
        paths = {}
        for name in SCHEMAS:
            if name not in self._writers:
                continue
            tmp = self._tmp(name)
            final = f"{name}-{_file_hash(tmp)}.parquet"
            _fsync(tmp)
            tmp.replace(self.data / final)
            paths[name] = RunPaths.data_file(final)
        self._writers = {}
        _fsync(self.data)
        write_atomic(self.paths.card, card(paths))  # the switch
        keep = {Path(p).name for p in paths.values()}
        for old in self.data.glob("*.parquet"):
            if old.name not in keep:
                old.unlink()
        return paths

    def abort(self) -> None:
        """Drop what this run wrote; the previous dataset stays as it was."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
        for name in SCHEMAS:
            self._tmp(name).unlink(missing_ok=True)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write beside, fsync, rename over: readers see the old text or the new, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:  # a full disk, text that is not Unicode, a signal: the old text stays, no temporary file
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


# `DatasetWriter._tmp` and `write_atomic`'s temporary names: `.<name>.<pid>.parquet.tmp`, `.<name>.<pid>.tmp`
TEMPORARY = re.compile(r"\..+\.(\d+)(\.parquet)?\.tmp")


def sweep_temporary(folders: list[Path]) -> list[Path]:
    """Remove the temporary files left by writers that died (SIGKILL, a full disk, a second Ctrl-C);
    a file whose process still runs (`arbitrage report` beside the run) is left to it. Call it with
    the folder locked. Returns what was removed."""
    removed = []
    for folder in folders:
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            match = TEMPORARY.fullmatch(path.name)
            if match and not _alive(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def data_files(out_dir: Path) -> dict[str, str]:
    """config → file, as the card names them (what load_dataset reads); {} without a card."""
    card = RunPaths(out_dir).card
    if not card.exists():
        return {}
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    front = yaml.safe_load(text[4 : text.index("\n---", 4)]) or {}
    return {c["config_name"]: c["data_files"][0]["path"] for c in front.get("configs", [])}
