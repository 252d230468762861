"""Gates through the CLI (issue 23): a prompts file with known answers, two API teachers on the
fake server, one always right about 4 and one always answering 5."""

import json

import datasets
from fake_openai import FakeOpenAI, Script
from test_cli import arbitrage

LINES = [
    # GSM8K form; the no-comma preference is one only the wrong teacher follows
    {"id": "four", "prompt": "What is 2 + 2?", "answer": "#### 4", "constraints": [{"type": "punctuation:no_comma"}]},
    {"id": "seven", "prompt": "What is 3 + 4?", "solution": "3 + 4 = \\boxed{7}"},  # MATH form: both teachers wrong
    {"id": "plain", "prompt": "Say something without commas.", "constraints": [{"type": "punctuation:no_comma"}]},
]


def run(server, prompts, out, *extra):
    return arbitrage(
        "source=jsonl",
        f"source.path={prompts}",
        "n_prompts=3",
        "teacher=[openai_compat,api]",
        f"teacher.openai_compat.base_url={server.url}",
        "teacher.openai_compat.model=right",
        "teacher.api.model=openai/wrong",
        f"teacher.api.api_base={server.url}",
        "teacher.api.api_key_env=FAKE_KEY",
        "diversity.embedding_spread=false",
        "filters=none",
        "report=false",
        f"out={out}",
        *extra,
    )


def test_a_prompt_whose_answers_all_fail_their_known_answer_is_rejected_and_makes_no_sft_row(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in LINES), encoding="utf-8")
    # "wrong" formats better (no comma) but its answer is 5
    script = Script(answers={"right": "Adding them, the answer is 4", "wrong": "The answer is 5"})
    with FakeOpenAI(script) as server:
        out = tmp_path / "gated"
        result = run(server, prompts, out)
        assert result.returncode == 0, result.stderr[-2000:]
        sft = {r["prompt_id"]: r for r in datasets.load_dataset(str(out), "sft", split="train")}
        rejected = list(datasets.load_dataset(str(out), "rejected_rows", split="train"))
        candidates = list(datasets.load_dataset(str(out), "candidates", split="train"))
        dpo = {r["prompt_id"]: r for r in datasets.load_dataset(str(out), "dpo", split="train")}

        assert set(sft) == {"four", "plain"}
        assert [(r["prompt_id"], r["reason"]) for r in rejected] == [
            ("seven", "gate arbitrage:final_number failed on every answer (2)")
        ]
        assert sum(c["prompt_id"] == "seven" for c in candidates) == 2  # its answers stay in candidates
        assert sft["four"]["teacher_chosen"] == "openai_compat"
        # correct vs wrong: the wrong answer is the rejected side, though its reward is not lower
        assert dpo["four"]["teacher_rejected"] == "api" and dpo["four"]["margin"] == 0.0
        details = json.loads(sft["four"]["score_details"])
        assert details["checks"] == {"punctuation:no_comma": False, "arbitrage:final_number": True}
        assert details["gates"] == ["arbitrage:final_number"]

        summary = json.loads((out / "summary.json").read_text())
        assert summary["gates_dropped"] == {"arbitrage:final_number": 1}
        assert summary["rejected_reasons"] == {"gate arbitrage:final_number failed on every answer": 1}
        assert summary["sft_failing"] == {"a gate": 0, "a check": 1, "reward 0": 0}
        card = (out / "README.md").read_text()
        assert "## Gates" in card and "Prompts dropped because no answer passed a gate: `arbitrage:final_number` 1." in card

        # selection.gates=off: the reward alone, as before; the same journal, nothing sent again
        sent = len(server.requests)
        off = run(server, prompts, out, "selection.gates=off")
        assert off.returncode == 0, off.stderr[-2000:]
        assert len(server.requests) == sent
        sft = {r["prompt_id"]: r for r in datasets.load_dataset(str(out), "sft", split="train")}
        assert set(sft) == {"four", "seven", "plain"}
        summary = json.loads((out / "summary.json").read_text())
        assert summary["gates_dropped"] == {} and summary["sft_failing"]["a gate"] == 2
        assert "needs no gate passed (`selection.gates=off`)" in (out / "README.md").read_text()
