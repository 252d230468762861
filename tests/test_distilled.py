"""Cheap scorers learned from expensive ones (issue 26): train-scorer, reward=distilled, reward=cascade and
filters=prompt_quality, from the CLI (a subprocess, real Hydra) and from Python, with our fake server as
the judge. Its "words" rule rates an answer by the sentences in it (tests/fake_openai.py
`answer_rating`) and its rubric rater gives code requests the most points (`prompt_points`): functions
of the text a head on the packaged MiniLM embeddings can learn, so what is measured is real learning."""

import asyncio
import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
from conftest import make_candidate, make_prompt
from fake_openai import SENTENCES, FakeOpenAI, Script, answer_rating, prompt_points

from arbitrage.analysis import train_scorer as T
from arbitrage.errors import ConfigError
from arbitrage.heads import HeadModel

KEY = "sk-never-write-me-26"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def arbitrage(*args):
    # One BLAS thread: on this shared 2-core box numpy's threads thrash under load (embedding 40
    # prompts took 12–30 s with them, 2 s without); what is tested is the same either way.
    env = {**os.environ, "FAKE_KEY": KEY, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True, env=env, timeout=600)


def run_args(server, out, *extra, n_prompts=96, seed=0):
    """Two teachers × 2 samples: four answers per prompt, each a few of the fake's sentences."""
    return [
        "teacher=[openai_compat,api]",
        f"teacher.openai_compat.base_url={server.url}",
        "teacher.openai_compat.model=alpha",
        "teacher.openai_compat.sampling.n=2",
        "teacher.api.model=openai/beta",
        f"teacher.api.api_base={server.url}",
        "teacher.api.api_key_env=FAKE_KEY",
        "teacher.api.sampling.n=2",
        "personas=all",
        f"n_prompts={n_prompts}",
        f"seed={seed}",
        "diversity.embedding_spread=false",
        "filters=none",
        "report=false",
        "progress=false",
        f"out={out}",
        *extra,
    ]


def judge_args(server, prefix="reward.judge"):
    return [f"{prefix}.model=openai/judge-model", f"{prefix}.api_base={server.url}", f"{prefix}.api_key_env=FAKE_KEY"]


def judge_texts(server):
    return [r["body"]["messages"][-1]["content"] for r in server.requests if r["body"]["model"] == "judge-model"]


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI(Script(judge_rule="words", varied=True)) as fake:
        yield fake


@pytest.fixture(scope="module")
def judged(server, tmp_path_factory):
    """A judged run (96 prompts, 384 answers) and the scorer train-scorer fits on it."""
    out = tmp_path_factory.mktemp("judged")
    ok(arbitrage(*run_args(server, out, "reward=judge", *judge_args(server))))
    printed = ok(arbitrage("train-scorer", str(out))).stdout
    return out, printed


def test_train_scorer_learns_the_judge_on_held_out_prompts(judged):
    out, printed = judged
    model = HeadModel.load(out / "scorer.pt", "answer")
    card, held = model.card, model.card["held_out"]
    assert model.target == "judge" and card["source"] == str(out) and len(model.train_prompts) == 96
    # 20 % of the prompts held out, every answer of a prompt on one side of the split
    assert held["prompts"] == 19 and held["items"] == 76 and card["train"] == {"prompts": 77, "items": 308}
    # Measured: pairwise accuracy 0.99 over 92 pairs, Kendall tau 0.90, RMSE 0.05 against a target sd of 0.27,
    # macro-F1 0.93. Chance is 0.5 / 0 / the sd / about 0.5.
    assert held["pairwise_accuracy"] >= 0.85 and held["pairs"] >= 60
    assert held["kendall_tau"] >= 0.6
    assert held["rmse"] < 0.5 * held["target_sd"]
    assert held[f"macro_f1@{card['threshold']:g}"] >= 0.75
    assert held["cascade"]["k=1"]["judge_calls_saved"] == 0.75 and held["cascade"]["k=2"]["judge_calls_saved"] == 0.5
    assert held["cascade"]["k=2"]["same_choice"] >= held["cascade"]["k=1"]["same_choice"] >= 0.7
    assert "pairwise accuracy" in printed and "reward=distilled reward.model=" in printed


def test_distilled_scores_without_a_judge_call(server, judged, tmp_path):
    model = judged[0] / "scorer.pt"
    before = len(judge_texts(server))
    ok(arbitrage(*run_args(server, tmp_path / "d", "reward=distilled", f"reward.model={model}", n_prompts=24, seed=1)))
    assert len(judge_texts(server)) == before
    candidates = datasets.load_dataset(str(tmp_path / "d"), "candidates", split="train")
    assert len(candidates) == 96 and all(c["score"] is not None for c in candidates)
    # the head tracks the judge on prompts it never saw: the fake's rating of each answer, 1–9 → [0, 1]
    truth = np.array([(answer_rating(c["response"]) - 1) / 8 for c in candidates])
    predicted = np.array([c["score"] for c in candidates])
    assert np.corrcoef(truth, predicted)[0, 1] > 0.8


def test_cascade_sends_only_the_top_k_to_the_judge_and_a_resume_sends_no_judgment_twice(server, judged, tmp_path):
    model = judged[0] / "scorer.pt"
    out = tmp_path / "cascade"
    args = run_args(
        server,
        out,
        "reward=cascade",
        f"reward.model={model}",
        *judge_args(server, "reward.expensive.judge"),
        n_prompts=24,
        seed=1,
    )
    # The first run's judge refuses answers with the lorem ipsum sentence (HTTP 400): those prompts fail
    # as a whole, none of their answers is chosen on the cheap score alone.
    server.script.always_fail_marker = "Lorem ipsum"
    before = len(judge_texts(server))
    try:
        first = ok(arbitrage(*args))
    finally:
        server.script.always_fail_marker = None
    first_texts = judge_texts(server)[before:]
    assert len(first_texts) == 24  # top_k=1: one judgment per prompt instead of 4
    failed = [t for t in first_texts if "Lorem ipsum" in t]
    rejected = datasets.load_dataset(str(out), "rejected_rows", split="train")
    assert failed and len(rejected) == len(failed) and all("cascade: none of the top 1" in r["reason"] for r in rejected)
    assert "judge" in first.stdout

    # Resume: only the refused judgments go again; no teacher call and no settled judgment is re-sent.
    teacher_before = len(server.requests) - len(judge_texts(server))
    ok(arbitrage(*args))
    resumed = judge_texts(server)[before + len(first_texts) :]
    assert sorted(resumed) == sorted(failed)
    assert len(server.requests) - len(judge_texts(server)) == teacher_before
    again = len(server.requests)
    ok(arbitrage(*args))
    assert len(server.requests) == again  # a finished cascade run resumes with no request at all

    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    sft = datasets.load_dataset(str(out), "sft", split="train")
    assert len(sft) == 24
    by_prompt = {}
    for c in candidates:
        by_prompt.setdefault(c["prompt_id"], []).append(c)
    for rows in by_prompt.values():
        details = [json.loads(c["score_details"]) for c in rows]
        judged_rows = [c for c, d in zip(rows, details, strict=True) if d["judged"]]
        assert len(judged_rows) == 1 and judged_rows[0]["chosen"]
        # the judged answer is the one the head ranked highest; the others never beat it
        assert json.loads(judged_rows[0]["score_details"])["cheap"] == max(d["cheap"] for d in details)
        assert all(c["score"] < judged_rows[0]["score"] for c in rows if c is not judged_rows[0])

    # top_k=2 in a new folder: two judgments per prompt, and the chosen answer is one of them
    out2 = tmp_path / "cascade2"
    before = len(judge_texts(server))
    ok(arbitrage(*[a.replace(f"out={out}", f"out={out2}") for a in args], "reward.top_k=2"))
    assert len(judge_texts(server)) - before == 48
    chosen = [
        json.loads(c["score_details"]) for c in datasets.load_dataset(str(out2), "candidates", split="train") if c["chosen"]
    ]
    assert len(chosen) == 24 and all(d["judged"] for d in chosen)


def test_prompt_quality_drops_low_prompts_before_any_teacher_is_called(server, tmp_path):
    rater = tmp_path / "rater"
    rate = [
        "personas=all",
        "n_prompts=400",
        "rater.sample=160",
        "rater.judge.model=openai/rater-model",
        f"rater.judge.api_base={server.url}",
        "rater.judge.api_key_env=FAKE_KEY",
        "progress=false",
        f"out={rater}",
    ]
    before = len(server.requests)
    printed = ok(arbitrage("train-prompt-scorer", *rate)).stdout
    rated = [json.loads(line) for line in (rater / "prompt_ratings.jsonl").read_text().splitlines()]
    assert len(rated) == 160 and len(server.requests) - before == 160
    assert all(r["rating"] == prompt_points(r["prompt"]) for r in rated)
    model = HeadModel.load(rater / "prompt_scorer.pt", "prompt")
    assert model.card["rated"] == 160 and model.card["held_out"]["prompts"] == 32 and "Quality score" not in printed
    # measured 0.857 on the 32 held-out prompts: code requests are easy to tell apart
    assert model.card["held_out"]["macro_f1@2.5"] >= 0.8
    again = len(server.requests)
    ok(arbitrage("train-prompt-scorer", *rate))
    assert len(server.requests) == again  # the ratings come from the journal

    out = tmp_path / "run"
    args = [a for a in run_args(server, out, n_prompts=48, seed=3) if a != "filters=none"]
    args += ["filters=prompt_quality", f"filters.prompt_quality.model={rater / 'prompt_scorer.pt'}"]
    args += ["selection.gates=off"]  # the code prompts it keeps get the fake's prose, which fails the code-block gate
    estimate = ok(arbitrage("estimate", *args)).stdout
    before = len(server.requests)
    ok(arbitrage(*args))
    rejected = [
        r for r in datasets.load_dataset(str(out), "rejected_rows", split="train") if r["reason"].startswith("prompt_quality")
    ]
    sft = datasets.load_dataset(str(out), "sft", split="train")
    assert rejected and len(sft) + len(rejected) <= 48
    # rejected_rows keep the predicted points; what was dropped is what the rubric rates low
    for r in rejected:
        predicted = float(r["reason"].split("predicted ")[1].split(" ")[0])
        assert predicted < 2.5 and r["reason"].endswith("of 5 < 2.5")
    low = [prompt_points(r["prompt"][-1]["content"]) < 3 for r in rejected]
    high = [prompt_points([m for m in r["messages"] if m["role"] == "user"][-1]["content"]) >= 3 for r in sft]
    assert np.mean(low) >= 0.9 and np.mean(high) >= 0.9
    sent = {r["body"]["messages"][-1]["content"] for r in server.requests[before:]}
    assert not {r["prompt"][-1]["content"] for r in rejected} & sent  # no teacher saw a dropped prompt
    assert f"drop {len(rejected)} of 48 prompts (prompt_quality {len(rejected)})" in estimate
    assert f"about {len(rejected) * 4} teacher calls avoided" in estimate


def test_bad_input_is_one_error_line(tmp_path):
    missing = arbitrage("teacher=[smollm2]", "reward=distilled", f"reward.model={tmp_path / 'none.pt'}", f"out={tmp_path / 'r'}")
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert missing.returncode == 2 and len(lines) == 1 and "train-scorer RUN_DIR" in lines[0], missing.stderr[-2000:]
    not_a_run = arbitrage("train-scorer", str(tmp_path))
    assert not_a_run.returncode == 2 and not_a_run.stderr.startswith("error: ") and "candidates" in not_a_run.stderr
    (tmp_path / "x.pt").write_bytes(b"not a model")
    wrong = arbitrage("teacher=[smollm2]", "filters=prompt_quality", f"filters.prompt_quality.model={tmp_path / 'x.pt'}")
    assert wrong.returncode == 2 and "is not a scorer model" in wrong.stderr


def test_python_api_trains_and_scores_with_the_cascade(server, judged, tmp_path):
    """The same pieces without Hydra: train_scorer(), the heads, the cascade over a JudgeScorer."""
    from arbitrage.engine import Engine, Journal
    from arbitrage.scoring.cascade import CascadeScorer
    from arbitrage.scoring.judge import JudgeScorer
    from arbitrage.teachers.openai_compat import OpenAICompatTeacher

    model = T.train_scorer(judged[0], tmp_path / "api.pt", held_out=0.25, seed=1)
    assert HeadModel.load(tmp_path / "api.pt", "answer").card["held_out"]["prompts"] == 24 == model.card["held_out"]["prompts"]

    prompt = make_prompt()
    sentences = list(SENTENCES)
    good, bad = " ".join(sentences[:2]), " ".join(sentences[4:6])
    items = [
        (prompt, make_candidate(bad, teacher="a")),
        (prompt, make_candidate(good, teacher="b")),
        (prompt, make_candidate("Answer.", teacher="c")),
    ]
    judge = OpenAICompatTeacher("judge", "judge-model", server.url, sampling={"temperature": 0.0, "max_tokens": 2, "logprobs": 5})
    cascade = CascadeScorer(str(tmp_path / "api.pt"), JudgeScorer(judge), top_k=1)
    cascade.check()

    async def score():
        async with Engine(cascade.teachers, Journal(tmp_path / "journal")) as engine:
            answers = await engine.run(cascade.calls(items))
            return await cascade.score(items, {a.call_id: a for a in answers})

    scores = asyncio.run(score())
    assert [s.details["judged"] for s in scores] == [False, True, False]
    assert scores[1].details["rating"] == pytest.approx(answer_rating(good), abs=0.2)
    assert max(scores, key=lambda s: s.value) is scores[1]


def test_the_rater_config_composes_and_instantiates():
    """conf/rater/ is not part of a run (build() never reads it): composed and instantiated here."""
    from arbitrage.cli import _compose, _instantiate
    from arbitrage.quality.prompt_quality import PromptRater
    from arbitrage.teachers import Teacher

    rater = _instantiate(_compose(["rater=prompt_quality", "rater.judge.model=openai/gpt-4o-mini", "seed=4"]).rater)
    assert isinstance(rater, PromptRater) and isinstance(rater.judge, Teacher) and rater.judge.name == "rater"
    assert rater.sample == 500 and rater.seed == 4 and rater.scale_max == 5
    with pytest.raises(ConfigError, match="must contain {prompt}"):
        PromptRater(rater.judge, "Rate this.").check()
    request = rater.request(make_prompt(text="Write a Python function that sorts a list."))
    assert "<request>\nWrite a Python function that sorts a list.\n</request>" in request.user_text
    assert rater.rating("Clear and checkable.\nQuality score: 4") == 4.0 and rater.rating("Quality score: 7") is None
    assert rater.rating("3") == 3.0 and rater.rating("no idea") is None


def test_metrics_and_the_cascade_rule():
    y, p = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.4, 0.3])
    assert T.kendall_tau_b(y, y) == 1.0 and T.kendall_tau_b(y, -y) == -1.0 and T.kendall_tau_b(y, np.zeros(3)) is None
    assert T.kendall_tau_b(y, p) == pytest.approx(1 / 3)
    assert T.macro_f1(np.array([0, 0, 1, 1.0]), np.array([0, 1, 1, 1.0]), 0.5) == pytest.approx((2 / 3 + 0.8) / 2)
    # k=1: the cheap top (index 1) takes the judge's 0.5; the others are capped below it
    assert T.cascade_scores(y, p, 1).tolist() == [0.2, 0.5, 0.3]
    assert T.cascade_scores(np.array([0.1, 0.2, 0.0]), np.array([0.9, 0.1, 0.5]), 1).tolist() == [0.1, 0.099999, 0.099999]
    assert T.cascade_scores(y, p, 3).tolist() == y.tolist()  # k ≥ n: every answer judged
    sample = T.reservoir(iter(range(1000)), 50, 0)
    assert len(sample) == 50 and sample == sorted(sample) and sample[-1] > 500 and T.reservoir(range(2), 3, 0) == [0, 1]
