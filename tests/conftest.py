import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # no model hub here: anything that tries it must fail loudly
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pytest  # noqa: E402

from arbitrage.rows import Candidate, Prompt  # noqa: E402


def make_prompt(
    constraints=(), task="explain", language="en", reference=None, prompt_id="p1", text="Explain photosynthesis."
) -> Prompt:
    return Prompt(
        prompt_id=prompt_id,
        persona_id="en-test-01",
        language=language,
        domain="science",
        task=task,
        topic="photosynthesis in desert plants",
        messages=({"role": "user", "content": text},),
        constraints=tuple(constraints),
        reference=reference,
    )


def make_candidate(text, teacher="t1", prompt_id="p1", finish_reason="stop", error=None) -> Candidate:
    return Candidate(
        call_id=f"{prompt_id}-{teacher}",
        prompt_id=prompt_id,
        teacher=teacher,
        text=text,
        finish_reason=finish_reason,
        tokens_in=10,
        tokens_out=20,
        latency_s=0.1,
        attempts=1,
        error=error,
    )


@pytest.fixture
def root() -> Path:
    return ROOT
