"""Conversations before, during and after a run: `arbitrage estimate` counts every turn as the run
sends it (the fake server counts what a real run then sends), `budget_usd` stops a multi-turn run
and a higher budget finishes it without sending a finished turn again, and routers see the turn."""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import torch
from fake_openai import FakeOpenAI, Script
from test_cli import jsonl_args

from arbitrage import cli, pipeline
from arbitrage.analysis import planned as planned_calls
from arbitrage.analysis import router_eval
from arbitrage.analysis.scoretable import ScoreTable
from arbitrage.prompts.conversation import FOLLOW_UP_CHARS, SIMULATOR_TEMPLATE, next_prompt
from arbitrage.routers import model as router_model
from arbitrage.routers.bandit import BanditRouter, contexts
from arbitrage.rows import Prompt

LOWER = {"type": "change_case:english_lowercase"}
ANSWERS = {"good": "a plain answer {digest} in lowercase"}
MAX_TOKENS = 40
SIMULATOR_HEAD = SIMULATOR_TEMPLATE.split("{")[0]  # how a request to the user simulator begins


def write_prompts(path: Path, given: list[int]) -> str:
    """One conversation per entry, with that many user turns given (each asking for lowercase)."""
    records = [
        {
            "id": f"conv{i}",
            "messages": [{"role": "user", "content": f"question {i} turn {t}", "constraints": [LOWER]} for t in range(1, n + 1)],
        }
        for i, n in enumerate(given)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def args(url: str, out, prompts: str, *extra) -> list[str]:
    caps = (f"teacher.openai_compat.sampling.max_tokens={MAX_TOKENS}", f"teacher.api.sampling.max_tokens={MAX_TOKENS}")
    return jsonl_args(url, out, prompts, *caps, *extra)


def run(*argv):
    env = {**os.environ, "FAKE_KEY": "sk-fake", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "arbitrage.cli", *argv], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def estimated_turns(capsys, argv) -> dict[int, tuple[int, int, int]]:
    """`arbitrage estimate`'s per-turn lines: turn → (calls, tokens in, tokens in per call)."""
    cli._estimate(argv)
    out = capsys.readouterr().out
    assert "prompt tokens grow with the prefix" in out
    found = re.findall(r"^turn (\d+): ([\d,]+) calls, ~([\d,]+) tokens in \(~([\d,]+) per call\)", out, re.MULTILINE)
    return {int(k): tuple(int(x.replace(",", "")) for x in rest) for k, *rest in found}


def turn_of(request: dict) -> int:
    """Which turn a request to the fake server belongs to: a teacher's answers the conversation so
    far (one user message per turn); the simulator's writes the turn after the transcript it shows."""
    messages = request["body"]["messages"]
    if messages[-1]["content"].startswith(SIMULATOR_HEAD):
        return messages[-1]["content"].count("\nUser: ") + 1  # one "\nUser: …" line per turn so far
    return sum(m["role"] == "user" for m in messages)


def sent_per_turn(server: FakeOpenAI) -> dict[int, int]:
    return dict(sorted(Counter(turn_of(r) for r in server.requests).items()))


def planned(argv) -> list:
    return list(planned_calls.blocking(pipeline.plan(cli.build(cli.check_overrides(argv)))))


# --- estimate ----------------------------------------------------------------------------------


def test_estimate_counts_given_turns_as_the_run_sends_them_and_a_conversation_without_more_ends(tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", [3, 3, 3, 3, 1])  # conv4 gives one turn, and nothing simulates more
    argv = args("http://127.0.0.1:9/v1", tmp_path / "never", prompts, "conversation.turns=3")
    turns = estimated_turns(capsys, argv)
    assert {k: calls for k, (calls, _, _) in turns.items()} == {1: 10, 2: 8, 3: 8}
    per_call = [turns[k][2] for k in (1, 2, 3)]
    assert per_call[0] < per_call[1] < per_call[2]  # the prefix grows by an answer and a user turn each turn
    assert not (tmp_path / "never").exists()  # an estimate writes nothing

    # Turn 3's prefix: turn 1 and 2 as given, each earlier answer at max_tokens.
    third = [c for c in planned(argv) if c.context == 3 and c.prompt.conversation == "conv0"]
    assert len(third) == 2
    messages = third[0].prompt.messages
    assert [m["content"] for m in messages[::2]] == [f"question 0 turn {t}" for t in (1, 2, 3)]
    assert all(m["role"] == "assistant" and m["content"].split() == ["word"] * MAX_TOKENS for m in messages[1::2])

    with FakeOpenAI(Script(answers=ANSWERS)) as server:
        run(*args(server.url, tmp_path / "run", prompts, "conversation.turns=3"))
        assert sent_per_turn(server) == {1: 10, 2: 8, 3: 8}  # the run sent what the estimate counted, turn by turn


def test_estimate_counts_the_user_simulator_in_the_turn_it_writes(tmp_path, capsys):
    # conv0–2 give one turn (the simulator writes turns 2 and 3); conv3 gives two (the simulator writes turn 3)
    prompts = write_prompts(tmp_path / "p.jsonl", [1, 1, 1, 2])
    more = ("conversation.turns=3", "conversation.user=openai_compat", "conversation.follow_ups=[deeper]")
    argv = args("http://127.0.0.1:9/v1", tmp_path / "never", prompts, *more)
    turns = estimated_turns(capsys, argv)
    assert {k: calls for k, (calls, _, _) in turns.items()} == {1: 8, 2: 8 + 3, 3: 8 + 4}
    assert turns[1][2] < turns[2][2] < turns[3][2]

    calls = planned(argv)
    (request,) = [c for c in calls if c.context == 2 and c.prompt.messages[-1]["content"].startswith(SIMULATOR_HEAD)][:1]
    assert request.teacher == "openai_compat" and "Assistant: word word" in request.prompt.messages[-1]["content"]
    # Turn 3 answers a simulated turn 2 as long as the run would keep one (FOLLOW_UP_CHARS), not max_tokens of text.
    third = next(c for c in calls if c.context == 3 and c.prompt.conversation == "conv0" and c.teacher == "api")
    simulated = third.prompt.messages[2]["content"]
    assert simulated.startswith("word word") and len(simulated) <= FOLLOW_UP_CHARS

    with FakeOpenAI(Script(answers=ANSWERS)) as server:
        run(*args(server.url, tmp_path / "run", prompts, *more))
        assert sent_per_turn(server) == {1: 8, 2: 11, 3: 12}


# --- budget_usd ----------------------------------------------------------------------------------

PRICED = (
    "teacher.openai_compat.price={input_per_mtok:200,output_per_mtok:1000}",  # $0.0002 / $0.001 per token
    "teacher.api.price={input_per_mtok:200,output_per_mtok:1000}",
    "teacher.openai_compat.max_concurrency=2",
    "teacher.api.max_concurrency=2",
    "conversation.turns=3",
    "conversation.user=openai_compat",  # turn 3 is simulated: the stop and the rerun cover its calls too
    "conversation.follow_ups=[deeper]",
)


def conversations(out) -> dict[str, list]:
    return {
        r["conversation_id"]: [m["content"] for m in r["messages"]] for r in datasets.load_dataset(str(out), "sft", split="train")
    }


def test_budget_stops_a_multi_turn_run_and_a_higher_budget_finishes_it_sending_no_turn_twice(tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", [2] * 12)
    with FakeOpenAI(Script(answers=ANSWERS)) as reference:  # the same run, never stopped
        run(*args(reference.url, tmp_path / "whole", prompts, *PRICED))
        whole = conversations(tmp_path / "whole")
    assert len(whole) == 12 and all(len(messages) == 6 for messages in whole.values())

    with FakeOpenAI(Script(answers=ANSWERS)) as server:
        out = tmp_path / "run"
        first = run(*args(server.url, out, prompts, *PRICED, "budget_usd=0.3"))
        assert "budget_usd reached" in first.stdout
        summary = json.loads((out / "summary.json").read_text())
        assert summary["stopped"] == "budget" and summary["spent_usd"] <= 0.3
        cut = conversations(out)  # what it finished: each conversation's turns answered before the stop
        assert cut and any(len(messages) < 6 for messages in cut.values())
        short = sum(len(messages) < 6 for messages in cut.values())
        assert summary["prompts_unfinished"] == short + 12 - len(cut)  # cut short or not written: the rerun's
        assert f"with {summary['prompts_unfinished']} prompts unfinished" in first.stdout
        assert all(messages == whole[cid][: len(messages)] for cid, messages in cut.items())
        sent = len(server.requests)
        assert 0 < sent < len(reference.requests)

        # The estimate on the stopped folder counts what the rerun then sends, turn by turn: a later
        # turn's calls already in the journal are known by their conversation and turn, whatever the
        # answers chosen before them (which the plan does not know).
        rest = estimated_turns(capsys, args(server.url, out, prompts, *PRICED, "budget_usd=100"))
        run(*args(server.url, out, prompts, *PRICED, "budget_usd=100"))
        sent_by_rerun = Counter(turn_of(r) for r in server.requests[sent:])
        assert {k: calls for k, (calls, _, _) in rest.items()} == dict(sorted(sent_by_rerun.items()))
        assert conversations(out) == whole  # the rerun finished every conversation as the whole run did
        summary = json.loads((out / "summary.json").read_text())
        assert summary["stopped"] is None and summary["turns_kept"] == {"3": 12}
        asked = Counter((r["body"]["model"], json.dumps(r["body"]["messages"])) for r in server.requests)
        assert max(asked.values()) == 1  # no finished turn (nor simulator call) was sent again
        assert len(server.requests) == len(reference.requests)


# --- routers see the turn ------------------------------------------------------------------------


def turn_one(i: int) -> Prompt:
    return Prompt(f"p{i:03d}", "en-x-01", "en", "science", "explain", "t", ({"role": "user", "content": f"prompt {i}"},))


def follow_up(p: Prompt, turn: int = 2) -> Prompt:
    """A later turn of `p`'s conversation whose user message repeats turn 1's: only the turn differs."""
    for _ in range(turn - 1):
        p = next_prompt(p, "an answer", p.user_text)
    return p


def random_vectors(n: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(
        torch.randn(n, 384, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1
    )


def test_a_follow_up_gets_another_feature_vector_and_single_turn_models_keep_their_features():
    first = [turn_one(i) for i in range(6)]
    prompts = first + [follow_up(p) for p in first]
    vectors = random_vectors(6).repeat(2, 1)  # the same text: the same embedding
    model = router_model.train(prompts, np.ones((12, 2)), ["a", "b"], vectors)
    assert model.vocab["turns"] == [1, 2]
    x = router_model.features(prompts, vectors, model.vocab)
    for k in range(6):
        assert not torch.equal(x[k], x[6 + k])  # turn 2 of a conversation is not its turn 1
        assert torch.equal(x[k, :-2], x[6 + k, :-2])  # …by the turn alone
    assert torch.equal(router_model.features([follow_up(first[0], 5)], vectors[:1], model.vocab)[0], x[6])  # later: like turn 2

    single = router_model.train(first, np.ones((6, 2)), ["a", "b"], vectors[:6])
    assert "turns" not in single.vocab  # no turn block: the same model file as before conversations
    assert router_model.features(first, vectors[:6], single.vocab).shape == (6, 384 + 3)  # embedding, language, task, domain


def test_the_learned_router_learns_that_another_teacher_wins_follow_ups():
    first = [turn_one(i) for i in range(60)]
    prompts = first + [follow_up(p) for p in first] + [follow_up(p, 3) for p in first]
    reward = [[1.0, 0.3] if p.turn == 1 else [0.2, 0.9] for p in prompts]
    vectors = random_vectors(180)
    model = router_model.train(prompts[::2], np.array(reward[::2]), ["a", "b"], vectors[::2])
    best = [["a", "b"][int(row.argmax())] for row in model.predict(prompts[1::2], vectors[1::2])]
    assert best == ["a" if p.turn == 1 else "b" for p in prompts[1::2]]


def table(prompts: list[Prompt], reward) -> ScoreTable:
    reward = np.asarray(reward, dtype=float)
    return ScoreTable(
        Path("synthetic"), prompts, ["a", "b"], reward, np.ones(reward.shape), np.full(reward.shape, 10.0),
        np.full(reward.shape, 100.0), np.zeros(reward.shape, bool), np.zeros(reward.shape, bool), ["all"] * len(prompts),
    )  # fmt: skip


def test_the_bandit_keeps_turn_one_contexts_and_learns_the_follow_ups_winner():
    p = turn_one(0)
    assert contexts(p) == [("cluster", "en", "explain")]  # turn 1: the contexts single-turn runs always had
    assert contexts(follow_up(p)) == [("cluster", "en", "explain", 2)]  # a follow-up's cluster of its own
    # Conversations in waves, turn 1 then turn 2: `a` wins first turns, `b` follow-ups.
    prompts = [
        q
        for i in range(0, 400, 10)
        for q in [turn_one(j) for j in range(i, i + 10)] + [follow_up(turn_one(j)) for j in range(i, i + 10)]
    ]
    reward = [[1.0, 0.2] if q.turn == 1 else [0.2, 1.0] for q in prompts]
    choices = router_eval.replay(BanditRouter(strategy="epsilon", epsilon=0.1, seed=0), table(prompts, reward))
    late = [c[0] == ("a" if q.turn == 1 else "b") for q, c in zip(prompts[-200:], choices[-200:], strict=True)]
    assert np.mean(late) > 0.85, np.mean(late)
