"""Write selections as a dataset folder that `datasets.load_dataset(out, "sft"|"dpo")` opens and
TRL's SFTTrainer / DPOTrainer train on as is (conversational `messages`; `prompt`/`chosen`/`rejected`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from arbitrage.select import Selection

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

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
    ("score_details", pa.string()),  # JSON: per-check / per-scorer breakdown of the chosen answer
]

SCHEMAS = {
    "sft": pa.schema([("messages", MESSAGES), *PROVENANCE]),
    "dpo": pa.schema([("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES), *PROVENANCE]),
    "candidates": pa.schema(
        [
            ("prompt_id", pa.string()),
            ("call_id", pa.string()),
            ("teacher", pa.string()),
            ("response", pa.string()),
            ("finish_reason", pa.string()),
            ("tokens_in", pa.int64()),
            ("tokens_out", pa.int64()),
            ("latency_s", pa.float64()),
            ("attempts", pa.int32()),
            ("error", pa.string()),
            ("last_status", pa.int32()),
            ("score", pa.float64()),
            ("score_details", pa.string()),
            ("chosen", pa.bool_()),
            ("filtered", pa.string()),  # why the quality stage kept it from being chosen
            ("language", pa.string()),
            ("task", pa.string()),
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
        ]
    ),
}


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _provenance(s: Selection) -> dict:
    p, chosen, rejected = s.prompt, s.chosen, s.rejected
    return {
        "prompt_id": p.prompt_id,
        "persona_id": p.persona_id,
        "language": p.language,
        "domain": p.domain,
        "task": p.task,
        "teacher_chosen": chosen.candidate.teacher,
        "teacher_rejected": rejected.candidate.teacher if rejected else None,
        "score_chosen": chosen.score,
        "score_rejected": rejected.score if rejected else None,
        "margin": s.margin,
        "n_candidates": len(s.candidates),
        "router_decision": s.route.decision,
        "constraints": json.dumps(list(p.constraints), ensure_ascii=False),
        "score_details": json.dumps(chosen.breakdown, ensure_ascii=False),
    }


def build_rows(selections: list[Selection]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {name: [] for name in SCHEMAS}
    for s in selections:
        p = s.prompt
        for scored in s.candidates:
            c = scored.candidate
            rows["candidates"].append(
                {
                    "prompt_id": p.prompt_id,
                    "call_id": c.call_id,
                    "teacher": c.teacher,
                    "response": c.text,
                    "finish_reason": c.finish_reason,
                    "tokens_in": c.tokens_in,
                    "tokens_out": c.tokens_out,
                    "latency_s": c.latency_s,
                    "attempts": c.attempts,
                    "error": c.error,
                    "last_status": c.last_status,
                    "score": scored.score if c.ok else None,
                    "score_details": json.dumps(scored.breakdown, ensure_ascii=False),
                    "chosen": scored is s.chosen,
                    "filtered": scored.filtered,
                    "language": p.language,
                    "task": p.task,
                }
            )
        if s.chosen is None:
            rows["rejected_rows"].append(
                {
                    "prompt_id": p.prompt_id,
                    "persona_id": p.persona_id,
                    "language": p.language,
                    "domain": p.domain,
                    "task": p.task,
                    "prompt": list(p.messages),
                    "reason": s.reason,
                }
            )
            continue
        provenance = _provenance(s)
        rows["sft"].append({"messages": [*p.messages, *_assistant(s.chosen.candidate.text)], **provenance})
        if s.rejected is not None:
            rows["dpo"].append(
                {
                    "prompt": list(p.messages),
                    "chosen": _assistant(s.chosen.candidate.text),
                    "rejected": _assistant(s.rejected.candidate.text),
                    **provenance,
                }
            )
    return rows


class CardStats:
    """What the card says about the rows, gathered as they stream past (flat in the row count)."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.languages: set[str] = set()
        self.wins: Counter = Counter()
        self.by_language: Counter = Counter()
        self.by_task: Counter = Counter()
        self.rejected_reasons: Counter = Counter()
        self.checks: dict[tuple[str, str], list[int]] = {}  # (check, teacher) → [passed, seen]
        self.sample: dict[str, dict] = {}  # first row of each config

    def add(self, rows: dict[str, list[dict]]) -> None:
        for name, batch in rows.items():
            self.counts[name] += len(batch)
            if batch and name not in self.sample:
                self.sample[name] = batch[0]
        for r in rows["sft"]:
            self.languages.add(r["language"])
            self.wins[r["teacher_chosen"]] += 1
            self.by_language[r["language"]] += 1
            self.by_task[r["task"]] += 1
        for r in rows["rejected_rows"]:
            self.languages.add(r["language"])
            self.rejected_reasons[r["reason"].split(" (")[0]] += 1
        for c in rows["candidates"]:
            details = json.loads(c["score_details"] or "{}")
            checks = details.get("checks") or details.get("verifiable", {}).get("checks") or {}
            for check, ok in checks.items():
                tally = self.checks.setdefault((check, c["teacher"]), [0, 0])
                tally[0] += bool(ok)
                tally[1] += 1


class DatasetWriter:
    """Appends rows to one parquet file per config as selections arrive, in row groups of
    `flush_rows`; `close()` names each file by its content hash and replaces the previous data.

    `datasets` caches a local folder by its card's config patterns, not by the files, so a
    fixed file name would let `load_dataset` serve stale rows after a rerun. A content-hashed
    name changes the card, and with it the cache key, whenever the data changes. Until `close()`
    the previous run's files stay in place, so a crash never leaves a folder without data.
    """

    def __init__(self, out_dir: Path, flush_rows: int = 4096):
        self.data = out_dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.flush_rows = flush_rows
        self.stats = CardStats()
        self._buffers: dict[str, list[dict]] = {name: [] for name in SCHEMAS}
        self._writers: dict[str, pq.ParquetWriter] = {}

    def _tmp(self, name: str) -> Path:
        return self.data / f".{name}.parquet.tmp"

    def add(self, selections: list[Selection]) -> None:
        rows = build_rows(selections)
        self.stats.add(rows)
        for name, batch in rows.items():
            self._buffers[name].extend(batch)
            if len(self._buffers[name]) >= self.flush_rows:
                self._flush(name)

    def _flush(self, name: str) -> None:
        if not self._buffers[name]:
            return
        if name not in self._writers:
            self._writers[name] = pq.ParquetWriter(self._tmp(name), SCHEMAS[name])
        self._writers[name].write_table(pa.Table.from_pylist(self._buffers[name], schema=SCHEMAS[name]))
        self._buffers[name] = []

    def close(self) -> dict[str, str]:
        """Finish the files; returns config → relative path for the configs that have rows."""
        for name in SCHEMAS:
            self._flush(name)
        for writer in self._writers.values():
            writer.close()
        for old in self.data.glob("*.parquet"):
            old.unlink()  # the dataset is derived from the journal: each run rewrites it whole
        paths = {}
        for name in SCHEMAS:  # datasets cannot load a 0-row split ("corresponds to no data"): leave it out
            if name not in self._writers:
                continue
            digest = hashlib.sha256()
            with self._tmp(name).open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            final = f"{name}-{digest.hexdigest()[:12]}.parquet"
            self._tmp(name).replace(self.data / final)
            paths[name] = f"data/{final}"
        return paths


def markdown_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in body]
    return "\n".join(lines)


def _schemas(paths: dict[str, str]) -> str:
    return "\n".join(f"- `{name}`: " + ", ".join(f"`{f.name}` {f.type}" for f in SCHEMAS[name]) for name in paths)


def quality_section(quality: dict | None) -> str:
    if not quality:
        return ""
    dropped = ", ".join(f"{name} {n}" for name, n in quality["dropped"].items()) or "no filters"
    keys = ["n", "distinct_1", "distinct_2", "embedding_spread"]
    body = [
        [label, *(quality[key].get(k, "—") for k in keys)]
        for label, key in [
            ("prompts, synthesised", "prompts_before"),
            ("prompts, kept", "prompts_after"),
            ("answers, best before filters", "answers_before"),
            ("answers, kept", "answers_after"),
        ]
    ]
    coverage = [
        [facet, quality["prompts_before"]["coverage"][facet], quality["prompts_after"]["coverage"][facet]]
        for facet in quality["prompts_before"]["coverage"]
    ]
    return (
        "## Quality stage\n"
        f"Dropped (count per filter; reasons in `rejected_rows` and the candidates' `filtered` column): {dropped}.\n\n"
        + markdown_table(["", *keys], body)
        + "\n\n"
        + markdown_table(["distinct", "synthesised", "kept"], coverage)
        + "\n"
    )


def _check_rates(stats: CardStats) -> str:
    """Pass rate of each verifiable check per teacher, when the reward recorded checks."""
    if not stats.checks:
        return ""
    teachers = sorted({t for _, t in stats.checks})
    body = [
        [check, *(f"{v[0] / v[1]:.0%} of {v[1]}" if (v := stats.checks.get((check, t))) else "—" for t in teachers)]
        for check in sorted({c for c, _ in stats.checks})
    ]
    return "## Verifiable checks passed\n" + markdown_table(["check", *teachers], body) + "\n"


def _stopped_note(summary: dict) -> str:
    if not summary.get("stopped"):
        return ""
    return (
        f" — **partial**: the run stopped ({summary['stopped']}) with {summary.get('prompts_unfinished', 0)} prompts "
        "unfinished; rerunning the same command finishes them"
    )


def write_card(out_dir: Path, stats: CardStats, paths: dict[str, str], summary: dict, config: dict) -> None:
    """README.md: `configs:` front matter for load_dataset, then what a user needs to trust the data."""
    languages = sorted(stats.languages)
    counts = stats.counts
    front = {
        "configs": [
            {
                "config_name": name,
                **({"default": True} if name == next(iter(paths)) else {}),
                "data_files": [{"split": "train", "path": paths[name]}],
            }
            for name in paths
        ],
        "language": languages,
        "tags": ["synthetic", "arbitrage", "sft", "dpo", "persona"],
    }
    wins = stats.wins
    teachers = summary.get("teachers", {})
    teacher_rows = [
        [
            name,
            t.get("calls", 0),
            t.get("failed", 0),
            wins.get(name, 0),
            f"{wins.get(name, 0) / max(1, counts['sft']):.0%}",
            "—" if t.get("mean_score") is None else f"{t['mean_score']:.3f}",
            t.get("tokens_in", 0),
            t.get("tokens_out", 0),
            "—" if t.get("usd") is None else f"${t['usd']:,.4f}",
        ]
        for name, t in teachers.items()
    ]
    by_lang, by_task, rejected_reasons = stats.by_language, stats.by_task, stats.rejected_reasons
    sample = stats.sample.get("dpo") or stats.sample.get("sft")
    out = out_dir.as_posix()
    body = f"""# Arbitrage dataset: {out_dir.name}

Synthetic SFT and preference data made by *arbitrage between teachers* (Multilingual Arbitrage,
arXiv 2408.14960): persona-driven prompts (PersonaHub / Tulu 3 style) were routed to teachers
(router `{summary.get("router")}`), every answer was scored (reward `{summary.get("reward")}`), and
the best answer was kept. Lower-scored answers become the `rejected` side of DPO pairs.
Run id `{summary.get("run_id", "?")}`{_stopped_note(summary)}.

## Configs
A config with 0 rows is left out of `configs:` (datasets cannot load an empty split).

| config | rows | what |
|---|---|---|
| `sft` | {counts["sft"]} | `messages`: the prompt and the best answer |
| `dpo` | {counts["dpo"]} | `prompt` / `chosen` / `rejected` (conversational), `score_chosen`, `score_rejected` |
| `candidates` | {counts["candidates"]} | every teacher answer with score, latency, tokens, error |
| `rejected_rows` | {counts["rejected_rows"]} | prompts with no usable answer, and why |

Provenance columns on `sft` and `dpo`: prompt_id, persona_id, language, domain, task,
teacher_chosen, teacher_rejected, score_chosen, score_rejected, margin, n_candidates,
router_decision, constraints (JSON), score_details (JSON).

## Teachers
{markdown_table(["teacher", "calls", "failed", "wins", "win share", "mean score", "tokens in", "tokens out", "$"], teacher_rows)}

{_check_rates(stats)}
{quality_section(summary.get("quality"))}
## Coverage
{markdown_table(["language", "sft rows"], sorted(by_lang.items()))}

{markdown_table(["task", "sft rows"], sorted(by_task.items()))}

Prompts without a chosen answer: {dict(rejected_reasons) or "none"}. DPO pairs dropped: {summary.get("pairs_dropped", {}) or "none"}.

## Report
Per-language and per-task win rates, reward and margin distributions, latency and tokens per
teacher: [report.md](report.md) (`arbitrage report {out}` rebuilds it from this folder).

![win rate per teacher](win_rate.png)
![reward per teacher](rewards.png)

## Schema
{_schemas(paths)}

## Load and train
```python
from datasets import load_dataset
sft = load_dataset("{out}", "sft", split="train")
dpo = load_dataset("{out}", "dpo", split="train")

from trl import SFTConfig, SFTTrainer  # on CPU add bf16=False to the config
SFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", args=SFTConfig(output_dir="sft-out"), train_dataset=sft).train()
```
```bash
trl sft --model_name_or_path <model> --dataset_name {out} --dataset_config sft --output_dir sft-out
trl dpo --model_name_or_path <model> --dataset_name {out} --dataset_config dpo --output_dir dpo-out
```

## Sample row
```json
{json.dumps(sample, ensure_ascii=False, indent=2) if sample else "{}"}
```

## Resolved configuration
API keys are never recorded: teachers name the environment variable that holds theirs.
```yaml
{yaml.safe_dump(config, sort_keys=False, allow_unicode=True).strip()}
```
"""
    card = "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body
    (out_dir / "README.md").write_text(card, encoding="utf-8")
