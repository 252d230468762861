"""arbitrage: SFT and DPO datasets by arbitrage between teacher models.

From Python, without Hydra:

    import arbitrage
    from arbitrage.prompts import JsonlSource
    from arbitrage.teachers.openai_compat import OpenAICompatTeacher

    summary = arbitrage.run(
        source=JsonlSource("prompts.jsonl", n_prompts=100),
        teachers={"local": OpenAICompatTeacher("local", "Qwen/Qwen2.5-7B-Instruct", "http://127.0.0.1:8000/v1")},
        out_dir="runs/mine",
    )

Any object that has the `Teacher` protocol's attributes and methods is a teacher; router, scorer,
filters, selection, budget and the rest are the keyword arguments of `pipeline.RunSpec`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arbitrage.prompts.source import Source
    from arbitrage.stats import RunSummary
    from arbitrage.teachers import Teacher


def run(source: Source, teachers: dict[str, Teacher], out_dir: str | Path, **options) -> RunSummary:
    """Build the dataset in `out_dir` (resuming it if it holds this run) and return its summary."""
    from arbitrage.pipeline import RunSpec
    from arbitrage.pipeline import run as run_pipeline

    return asyncio.run(run_pipeline(RunSpec(out_dir=Path(out_dir), source=source, teachers=teachers, **options)))
