"""Behaviour unchanged by the layout (issue 21): the same config writes the same rows as the code
before it did. tests/data/rows_before_layout.json was written by commit b2664e2 (the last one
before the layout) running exactly this config against this fake server: every candidate's
prompt id, teacher, sample and a hash of its answer, and every prompt id."""

import hashlib
import json
from pathlib import Path

import datasets
from fake_openai import FakeOpenAI, Script
from test_cli import arbitrage

BEFORE = Path(__file__).parent / "data" / "rows_before_layout.json"


def test_a_fake_server_run_writes_the_rows_it_wrote_before_the_layout(tmp_path):
    script = Script(answers={"good": "a short plain answer without any punctuation marks"}, always_fail_marker="Soy ")
    out = tmp_path / "run"
    with FakeOpenAI(script) as server:
        result = arbitrage(
            "teacher=[openai_compat,api]",
            f"teacher.openai_compat.base_url={server.url}",
            "teacher.openai_compat.model=good",
            "teacher.api.model=openai/chatty",
            f"teacher.api.api_base={server.url}",
            "teacher.api.api_key_env=FAKE_KEY",
            "personas=all",
            "n_prompts=40",
            "diversity.embedding_spread=false",
            f"out={out}",
            "teacher.api.sampling.n=2",
        )
    assert result.returncode == 0, result.stderr[-2000:]
    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    rejected = datasets.load_dataset(str(out), "rejected_rows", split="train")
    rows = sorted(
        [c["prompt_id"], c["teacher"], c["sample"], hashlib.sha256((c["response"] or "").encode()).hexdigest()[:12]]
        for c in candidates
    )
    before = json.loads(BEFORE.read_text())
    assert len(rows) == 120 and rows == before["candidates"]
    assert sorted({r[0] for r in rows} | {r["prompt_id"] for r in rejected}) == before["prompts"]
