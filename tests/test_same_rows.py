"""Behaviour unchanged by the layout (issue 21): the same config writes the same rows as the code
before it did. tests/data/rows_before_layout.json was written by commit b2664e2 (the last one
before the layout) running exactly this config against this fake server: every candidate's
prompt id, teacher, sample and a hash of its answer, and every prompt id."""

import hashlib
import json
from pathlib import Path

import datasets
from fake_openai import FakeOpenAI, Script
from test_cli import api_args, arbitrage

BEFORE = Path(__file__).parent / "data" / "rows_before_layout.json"


def test_a_fake_server_run_writes_the_rows_it_wrote_before_the_layout(tmp_path):
    script = Script(answers={"good": "a short plain answer without any punctuation marks"}, always_fail_marker="Soy ")
    out = tmp_path / "run"
    with FakeOpenAI(script) as server:
        # test_cli's API run, at 40 prompts, the default filters and two samples from the api teacher
        result = arbitrage(*api_args(server, out, "n_prompts=40", "filters=default", "teacher.api.sampling.n=2"))
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
