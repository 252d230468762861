"""arbitrage: SFT and DPO datasets by arbitrage between teacher models.

From Python, without Hydra (docs/python-api.md):

    import arbitrage

    summary = arbitrage.run(
        source=arbitrage.JsonlSource("prompts.jsonl", n_prompts=100),
        teachers={"local": arbitrage.OpenAICompatTeacher("local", "Qwen/Qwen2.5-7B-Instruct", "http://127.0.0.1:8000/v1")},
        out_dir="runs/mine",
        router=arbitrage.AllTeachers(),
    )

Any object that has the `Teacher` protocol's attributes and methods is a teacher; router, scorer,
filters, selection, budget and the rest are the keyword arguments of `RunSpec`.

Every public name is imported on first use (module `__getattr__`), so `import arbitrage` loads
none of the run's modules, and never vLLM, torch or litellm.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~8 ms, most of this module's cost)

# public name → the module that defines it; imported when the name is first read
_EXPORTS = {
    # the run
    "RunSpec": "arbitrage.pipeline",
    "RunSummary": "arbitrage.stats",
    "SelectionSpec": "arbitrage.select",
    "ConversationSpec": "arbitrage.prompts.conversation",
    "RetryPolicy": "arbitrage.engine.policy",
    # prompt sources
    "Source": "arbitrage.prompts.source",
    "PersonaSource": "arbitrage.prompts.personas",
    "JsonlSource": "arbitrage.prompts.jsonl",
    # teachers
    "Teacher": "arbitrage.teachers",
    "Sampling": "arbitrage.teachers",
    "Limits": "arbitrage.teachers",
    "VLLMTeacher": "arbitrage.teachers.vllm_local",
    "OpenAICompatTeacher": "arbitrage.teachers.openai_compat",
    "LiteLLMTeacher": "arbitrage.teachers.litellm_api",
    "api_teacher": "arbitrage.teachers.factory",
    "openai_compat_teacher": "arbitrage.teachers.factory",
    # scorers
    "Scorer": "arbitrage.scoring",
    "Score": "arbitrage.scoring",
    "VerifiableScorer": "arbitrage.scoring.verifiable",
    "JudgeScorer": "arbitrage.scoring.judge",
    "RewardModelScorer": "arbitrage.scoring.reward_model",
    "WeightedScorer": "arbitrage.scoring",
    # routers
    "Router": "arbitrage.routers",
    "AllTeachers": "arbitrage.routers.simple",
    "FixedRouter": "arbitrage.routers.simple",
    "RandomRouter": "arbitrage.routers.simple",
    "RoundRobinRouter": "arbitrage.routers.simple",
    "LearnedRouter": "arbitrage.routers.learned",
    "BanditRouter": "arbitrage.routers.bandit",
    # the quality stage
    "Filter": "arbitrage.quality",
    # the rows a custom source or teacher makes
    "Prompt": "arbitrage.rows",
    "Completion": "arbitrage.rows",
}

__all__ = [  # the same names as _EXPORTS, spelt out for linters and `from arbitrage import *`
    "run",
    "RunSpec",
    "RunSummary",
    "SelectionSpec",
    "ConversationSpec",
    "RetryPolicy",
    "Source",
    "PersonaSource",
    "JsonlSource",
    "Teacher",
    "Sampling",
    "Limits",
    "VLLMTeacher",
    "OpenAICompatTeacher",
    "LiteLLMTeacher",
    "api_teacher",
    "openai_compat_teacher",
    "Scorer",
    "Score",
    "VerifiableScorer",
    "JudgeScorer",
    "RewardModelScorer",
    "WeightedScorer",
    "Router",
    "AllTeachers",
    "FixedRouter",
    "RandomRouter",
    "RoundRobinRouter",
    "LearnedRouter",
    "BanditRouter",
    "Filter",
    "Prompt",
    "Completion",
]

if TYPE_CHECKING:
    from pathlib import Path

    from arbitrage.engine.policy import RetryPolicy
    from arbitrage.pipeline import RunSpec
    from arbitrage.prompts.conversation import ConversationSpec
    from arbitrage.prompts.jsonl import JsonlSource
    from arbitrage.prompts.personas import PersonaSource
    from arbitrage.prompts.source import Source
    from arbitrage.quality import Filter
    from arbitrage.routers import Router
    from arbitrage.routers.bandit import BanditRouter
    from arbitrage.routers.learned import LearnedRouter
    from arbitrage.routers.simple import AllTeachers, FixedRouter, RandomRouter, RoundRobinRouter
    from arbitrage.rows import Completion, Prompt
    from arbitrage.scoring import Score, Scorer, WeightedScorer
    from arbitrage.scoring.judge import JudgeScorer
    from arbitrage.scoring.reward_model import RewardModelScorer
    from arbitrage.scoring.verifiable import VerifiableScorer
    from arbitrage.select import SelectionSpec
    from arbitrage.stats import RunSummary
    from arbitrage.teachers import Limits, Sampling, Teacher
    from arbitrage.teachers.factory import api_teacher, openai_compat_teacher
    from arbitrage.teachers.litellm_api import LiteLLMTeacher
    from arbitrage.teachers.openai_compat import OpenAICompatTeacher
    from arbitrage.teachers.vllm_local import VLLMTeacher


def run(source: Source, teachers: dict[str, Teacher], out_dir: str | Path, **options) -> RunSummary:
    """Build the dataset in `out_dir` (resuming it if it holds this run) and return its summary.
    `options` are the other fields of `RunSpec`: router, scorer, filters, selection, retry, budget_usd, …"""
    import asyncio
    from pathlib import Path

    from arbitrage.pipeline import RunSpec
    from arbitrage.pipeline import run as run_pipeline

    return asyncio.run(run_pipeline(RunSpec(out_dir=Path(out_dir), source=source, teachers=teachers, **options)))


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:  # not ours: lets `from arbitrage import view` fall through to the submodule
        raise AttributeError(f"module 'arbitrage' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next read is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
