"""The run folder's layout, spelt out once: every module that reads or writes a run's files asks here.

    out/
    ├── journal/calls.jsonl        every finished call, append-only: the source of truth for resume
    │   ├── calls-<shard>.jsonl    one shard per Ray actor (every journal reads them all)
    │   └── batches.jsonl          the batch ledger of `mode: batch` teachers
    ├── data/<config>-<hash>.parquet   sft, dpo, candidates, rejected_rows
    ├── README.md                  the dataset card (its `configs:` name the parquet files)
    ├── run.json                   what decides the calls (the identity) and each teacher's resolved facts
    ├── config.yaml                the resolved config (no secrets)
    ├── summary.json               counts, spend and timings, written at the end of each run
    ├── report.md, *.svg           `arbitrage report`; router_eval.md / .json from `arbitrage eval-router`
    ├── router.pt                  `arbitrage train-router`
    ├── logs/<name>.log            servers' and libraries' own logs
    └── .lock                      held while a run owns the folder

The report, the viewer and `estimate` read the facts a run wrote (run.json, summary.json), never
the shape of config.yaml, so a new kind of teacher needs nothing in them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

JOURNAL_FILES = "calls*.jsonl"  # the run's own file and every shard
# What may be in a folder before its first run: Hydra's output and log, our lock, the logs folder.
BEFORE_FIRST_RUN = frozenset({".hydra", "arbitrage.log", ".lock", "logs"})


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # the journal ------------------------------------------------------------------------------------
    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @staticmethod
    def journal_file(journal: Path, shard: str | None = None) -> Path:
        """The file one writer appends to: `calls.jsonl`, or `calls-<shard>.jsonl` on Ray."""
        return journal / (f"calls-{shard}.jsonl" if shard else "calls.jsonl")

    @staticmethod
    def journal_files(journal: Path) -> list[Path]:
        return sorted(journal.glob(JOURNAL_FILES)) if journal.is_dir() else []

    @staticmethod
    def batch_ledger(journal: Path) -> Path:
        return journal / "batches.jsonl"

    # the dataset ------------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    @staticmethod
    def data_file(name: str) -> str:
        """A dataset file as the card names it (relative to the folder)."""
        return f"data/{name}"

    @property
    def card(self) -> Path:
        return self.root / "README.md"

    # what a run records -----------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # offline analysis -------------------------------------------------------------------------------
    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def router_eval(self) -> Path:
        return self.root / "router_eval.md"

    @property
    def router_eval_data(self) -> Path:
        return self.root / "router_eval.json"

    @property
    def router_model(self) -> Path:
        return self.root / "router.pt"

    def is_run(self) -> bool:
        """Anything a run leaves: a card, its identity or a journal."""
        return any(p.exists() for p in (self.card, self.run_json, self.journal))

    # the facts a run wrote --------------------------------------------------------------------------
    def facts(self) -> dict:
        """run.json's `facts`: each teacher's resolved kind, model, endpoint, price and sampling, the
        selection settings and the persona files ({} for a folder written before they were recorded)."""
        try:
            return json.loads(self.run_json.read_text(encoding="utf-8")).get("facts") or {}
        except (OSError, ValueError, AttributeError):
            return {}
