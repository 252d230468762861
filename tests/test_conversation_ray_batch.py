"""Conversations (conversation.turns=3) on the other ways a run sends its calls: executor=ray, where
each turn is a Ray Data pass of its own, and mode=batch, where each turn's calls are a provider
batch that the next turn waits for. Either way the rows must be those of a local, online run; a Ray
run killed after turn 1 resumes on executor=local from the Ray journal shards. The CLI in a
subprocess, real Hydra, a local Ray (2 CPUs), API teachers on our fake server."""

import json
import os
import signal
import subprocess
import sys
import time

import datasets
from fake_openai import FakeOpenAI, Script
from test_cli import jsonl_args

LOWER = {"type": "change_case:english_lowercase"}
# "good" answers in lowercase (passes LOWER), "chatty" with capitals (fails it): a winner and a pair each turn
ANSWERS = {"good": "a plain answer {digest} in lowercase"}
SIMULATED = "You are playing a user"  # how the user simulator's request begins
RAY = ["executor=ray", "executor.num_cpus=2"]


def conversations(path, given: int, simulated: int = 0) -> str:
    """`given` lines with their 3 user turns (each asking for lowercase), `simulated` with an opening only."""
    records = [
        {
            "id": f"given{i}",
            "messages": [{"role": "user", "content": f"question {i} turn {t}", "constraints": [LOWER]} for t in (1, 2, 3)],
        }
        for i in range(given)
    ]
    records += [{"id": f"sim{i}", "prompt": f"opening {i}, in lowercase", "constraints": [LOWER]} for i in range(simulated)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def args(server, out, prompts, *extra):
    return jsonl_args(server, out, prompts, "conversation.turns=3", "engine.base_delay_s=0.01", *extra)


ENV = {**os.environ, "FAKE_KEY": "sk-fake", "HF_HUB_OFFLINE": "1"}


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "arbitrage.cli", *argv], capture_output=True, text=True, env=ENV, timeout=600)


def rows(out, name):
    return list(datasets.load_dataset(str(out), name, split="train"))


def answer_key(out) -> dict:
    """What a run wrote, wall times aside: sft conversations, dpo pairs, every candidate by call id."""
    return {
        "sft": sorted((r["conversation_id"], r["turn"], json.dumps(r["messages"]), r["turn_teachers"]) for r in rows(out, "sft")),
        "dpo": sorted(
            (r["conversation_id"], r["turn"], json.dumps([r["prompt"], r["chosen"], r["rejected"]])) for r in rows(out, "dpo")
        ),
        "candidates": sorted(
            (c["call_id"], c["conversation_id"], c["turn"], c["teacher"], c["response"], c["score"])
            for c in rows(out, "candidates")
        ),
    }


def turn_of(messages: list[dict]) -> int:
    return (len(messages) + 1) // 2


def teacher_requests(server) -> list[list[dict]]:
    """The messages of every teacher request the fake answered (the simulator's left out)."""
    return [r["body"]["messages"] for r in server.requests if not r["body"]["messages"][0]["content"].startswith(SIMULATED)]


def test_a_3_turn_ray_run_writes_the_rows_of_a_local_run(tmp_path):
    # Given turns for 3 conversations, the user simulator ("api") for 3 more: both ways to a next turn.
    prompts = conversations(tmp_path / "p.jsonl", given=3, simulated=3)
    with FakeOpenAI(Script(answers=ANSWERS)) as server:
        local = cli(*args(server, tmp_path / "local", prompts, "conversation.user=api"))
        assert local.returncode == 0, local.stderr[-3000:]
        sent_local = len(server.requests)
        on_ray = cli(*args(server, tmp_path / "ray", prompts, "conversation.user=api", *RAY))
        assert on_ray.returncode == 0, on_ray.stderr[-3000:]
        assert len(server.requests) - sent_local == sent_local  # the same calls, each sent once
    want, got = answer_key(tmp_path / "local"), answer_key(tmp_path / "ray")
    assert got == want
    turns = {cid: turn for cid, turn, _, _ in got["sft"]}
    assert [turns[f"given{i}"] for i in range(3)] == [3, 3, 3] and len(got["dpo"]) > 9  # a pair each given turn, and more
    assert len(got["candidates"]) >= 2 * sum(turns.values())  # both teachers answered every turn kept
    users = {r["conversation_id"]: [m["content"] for m in r["messages"][::2]] for r in rows(tmp_path / "ray", "sft")}
    assert users["given0"] == ["question 0 turn 1", "question 0 turn 2", "question 0 turn 3"]
    assert turns["sim0"] == 3 and all("from chatty" in u for u in users["sim0"][1:])  # the simulator's words
    # the teachers' calls ran in Ray actors (a shard per teacher per turn), the simulator's on the driver
    shards = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "ray" / "journal").glob("calls-*.jsonl"))
    assert shards == ["calls-api"] * 3 + ["calls-openai_compat"] * 3
    on_driver = [json.loads(line) for line in (tmp_path / "ray" / "journal" / "calls.jsonl").read_text().splitlines()]
    assert len(on_driver) == 3 * 2 and {r["teacher"] for r in on_driver} == {"api"}  # 3 follow-ups for turns 2 and 3
    summary = {k: json.loads((tmp_path / k / "summary.json").read_text()) for k in ("local", "ray")}
    for key in ("rows", "prompts_finished", "wins_by_turn", "turns_kept"):
        assert summary["ray"][key] == summary["local"][key], key


def batch_mode(teacher: str) -> list[str]:
    return [
        f"teacher.{teacher}.mode=batch",
        f"teacher.{teacher}.batch.linger_s=0.5",  # a turn's calls land within it: one batch per turn
        f"teacher.{teacher}.batch.poll_first_s=0.05",
        f"teacher.{teacher}.batch.poll_max_s=0.2",
    ]


def test_a_3_turn_batch_run_sends_one_batch_per_teacher_per_turn_and_writes_the_rows_of_an_online_run(tmp_path):
    prompts = conversations(tmp_path / "p.jsonl", given=3, simulated=3)
    with FakeOpenAI(Script(answers=ANSWERS)) as server:
        online = cli(*args(server, tmp_path / "online", prompts, "conversation.user=api"))
        assert online.returncode == 0, online.stderr[-3000:]
        sent_online = len(server.requests)
        batch = cli(
            *args(server, tmp_path / "batch", prompts, "conversation.user=api", *batch_mode("openai_compat"), *batch_mode("api"))
        )
        assert batch.returncode == 0, batch.stderr[-3000:]
        assert len(server.requests) - sent_online == sent_online  # every batch line is one request, each sent once
        made = list(server.batches.batches.values())  # in order of creation
        lines = [[json.loads(x) for x in server.batches.files[b["input_file_id"]].splitlines() if x.strip()] for b in made]
        assert sorted(server.batches.carried.values()) == [1] * sent_online
    assert answer_key(tmp_path / "batch") == answer_key(tmp_path / "online")

    def what(batch: dict, carried: list[dict]) -> tuple[int, str]:
        """A batch as (turn, whose): the turn its lines answer (or follow up on), the teacher's tag."""
        teacher = batch["metadata"]["arbitrage_tag"].rsplit("-", 1)[0]
        first = carried[0]["body"]["messages"]
        if first[0]["content"].startswith(SIMULATED):
            assert all(line["body"]["messages"][0]["content"].startswith(SIMULATED) for line in carried)
            return first[0]["content"].count("Assistant:") + 1, "simulator"  # writes the user turn of the next turn
        assert {turn_of(line["body"]["messages"]) for line in carried} == {turn_of(first)}  # one turn per batch
        return turn_of(first), teacher

    order = [what(b, carried) for b, carried in zip(made, lines, strict=True)]
    # Each turn: one batch per teacher with all 6 conversations; the 3 simulated ones' next user turn
    # is a batch of the simulator's teacher; a turn is sent only once the batch before it is back.
    assert order[:2] in ([(1, "openai_compat"), (1, "api")], [(1, "api"), (1, "openai_compat")])
    assert order[2] == (2, "simulator")
    assert sorted(order[3:5]) == [(2, "api"), (2, "openai_compat")]
    assert order[5] == (3, "simulator")
    assert sorted(order[6:]) == [(3, "api"), (3, "openai_compat")]
    sizes = [len(carried) for carried in lines]
    assert sizes == [6, 6, 3, 6, 6, 3, 6, 6]


def answered_in_shards(out) -> int:
    return sum('"error": null' in line for p in (out / "journal").glob("calls-*-*.jsonl") for line in p.read_text().splitlines())


def test_a_ray_run_killed_after_turn_1_resumes_on_executor_local_without_sending_turn_1_again(tmp_path):
    n = 6
    prompts = conversations(tmp_path / "p.jsonl", given=n)
    with FakeOpenAI(Script(answers=ANSWERS)) as server:
        whole = tmp_path / "whole"
        assert cli(*args(server, whole, prompts)).returncode == 0
        server.requests.clear()
        out = tmp_path / "killed"
        argv = [sys.executable, "-m", "arbitrage.cli", *args(server, out, prompts, *RAY)]
        proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 300
        while answered_in_shards(out) < 2 * n:  # both teachers' turn-1 answers are in the Ray shards
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "turn 1 never finished on Ray"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its local Ray and the actors, at once
        proc.wait()
        sent = teacher_requests(server)
        assert sorted(turn_of(m) for m in sent if turn_of(m) == 1) == [1] * (2 * n) and not any(turn_of(m) == 3 for m in sent)
        server.requests.clear()
        resumed = cli(*args(server, out, prompts))  # executor=local on the Ray run's folder
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        again = teacher_requests(server)
    assert not any(turn_of(m) == 1 for m in again)  # turn 1 was read back from the Ray shards, never sent again
    assert sum(turn_of(m) == 3 for m in again) == 2 * n
    # turn 2: whatever the killed run had not journaled (nothing, unless its turn-2 pass had begun)
    assert sum(turn_of(m) == 2 for m in again) + sum(turn_of(m) == 2 for m in sent) >= 2 * n
    assert answer_key(out) == answer_key(whole)
