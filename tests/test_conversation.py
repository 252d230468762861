"""Conversations (conversation.turns > 1): every turn arbitraged, rows whole conversations and per-turn
pairs, resume after kill -9 mid-turn, and turns 2 → 3 extending a run folder. The CLI as a user runs
it (a subprocess, real Hydra), API teachers on our fake server."""

import json
import os
import signal
import subprocess
import sys
import time

import datasets
import pytest
from fake_openai import FakeOpenAI, Script
from test_cli import jsonl_args

from arbitrage.errors import ConfigError
from arbitrage.prompts.conversation import FOLLOW_UPS, ConversationSpec, UserSimulator, clean_follow_up, next_prompt
from arbitrage.prompts.jsonl import iter_prompt_file
from arbitrage.rows import Prompt

LOWER = {"type": "change_case:english_lowercase"}
# "good" answers in lowercase (passes LOWER), "chatty" with capitals (fails it): a clear winner and a pair
ANSWERS = {"good": "a plain answer {digest} in lowercase"}


def lines(n: int, turns: int = 3) -> list[dict]:
    """MT-Bench-like lines: `turns` user turns each, every turn asking for lowercase (so each has a pair)."""
    return [
        {
            "id": f"conv{i}",
            "messages": [
                {"role": "user", "content": f"question {i} turn {t}", "constraints": [LOWER]} for t in range(1, turns + 1)
            ],
        }
        for i in range(n)
    ]


def write_prompts(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def args(server, out, prompts, *extra):
    return jsonl_args(server, out, prompts, *extra)


def cli(*argv, **kwargs):
    env = {**os.environ, "FAKE_KEY": "sk-fake", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "arbitrage.cli", *argv], capture_output=True, text=True, env=env, timeout=300, **kwargs
    )


def rows(out, name):
    return list(datasets.load_dataset(str(out), name, split="train"))


def chat_requests(server) -> list[list[dict]]:
    return [r["body"]["messages"] for r in server.requests]


@pytest.fixture
def server():
    with FakeOpenAI(Script(answers=ANSWERS)) as fake:
        yield fake


def test_given_turns_make_whole_conversations_and_a_pair_per_turn(server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", lines(4))
    out = tmp_path / "run"
    result = cli(*args(server, out, prompts, "conversation.turns=3"))
    assert result.returncode == 0, result.stderr[-3000:]
    sft = rows(out, "sft")
    assert len(sft) == 4
    for row in sft:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] * 3
        assert [m["content"] for m in row["messages"][::2]] == [
            f"question {row['conversation_id'][4:]} turn {t}" for t in (1, 2, 3)
        ]
        assert all("lowercase" in m["content"] for m in row["messages"][1::2])  # the lowercase teacher won every turn
        assert row["turn"] == 3 and row["turn_teachers"] == ["openai_compat"] * 3
        assert row["turn_constraints"] == [json.dumps([LOWER])] * 3  # each turn's own checks
        assert len(row["turn_scores"]) == 3 and row["turn_scores"][-1] == row["score_chosen"]
        assert row["prompt_id"] != row["conversation_id"]  # the last turn's prompt (its candidates' id)
    dpo = rows(out, "dpo")
    assert sorted(r["turn"] for r in dpo) == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    for r in dpo:
        assert len(r["prompt"]) == 2 * r["turn"] - 1  # the conversation so far, ending with the user's turn
        assert r["prompt"][-1]["role"] == "user" and r["chosen"][0]["content"] != r["rejected"][0]["content"]
        assert r["teacher_chosen"] == "openai_compat" and r["teacher_rejected"] == "api"
        assert len(r["turn_teachers"]) == len(r["turn_scores"]) == len(r["turn_constraints"]) == r["turn"]
    candidates = rows(out, "candidates")
    assert sorted({(c["conversation_id"], c["turn"]) for c in candidates}) == [
        (f"conv{i}", t) for i in range(4) for t in (1, 2, 3)
    ]
    assert len(candidates) == 4 * 3 * 2
    # turn 2 was asked with turn 1's chosen answer in its prefix: the calls answered the conversation so far
    turn2 = [m for m in chat_requests(server) if len(m) == 3]
    assert len(turn2) == 8 and all(m[1]["role"] == "assistant" and "lowercase" in m[1]["content"] for m in turn2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wins_by_turn"] == {str(t): {"openai_compat": 4} for t in (1, 2, 3)}
    assert summary["turns_kept"] == {"3": 4} and summary["prompts_finished"] == 4


def test_dpo_turns_last_keeps_one_pair_per_conversation(server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", lines(3, turns=2))
    out = tmp_path / "run"
    result = cli(*args(server, out, prompts, "conversation.turns=2", "output.dpo_turns=last"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(r["turn"] for r in rows(out, "dpo")) == [2, 2, 2]
    assert len(rows(out, "sft")) == 3


def test_a_turn_without_a_usable_answer_ends_the_conversation_kept_or_rejected_by_min_turns(tmp_path):
    # Turn 2 of conv0 is refused by both teachers (HTTP 400): kept with 1 turn if min_turns=1, else rejected at turn 2.
    records = lines(2)
    records[0]["messages"][1]["content"] = "REFUSE this one"
    prompts = write_prompts(tmp_path / "p.jsonl", records)
    with FakeOpenAI(Script(answers=ANSWERS, always_fail_marker="REFUSE")) as server:
        kept = tmp_path / "kept"
        result = cli(*args(server, kept, prompts, "conversation.turns=3", "engine.breaker=false"))
        assert result.returncode == 0, result.stderr[-3000:]
        by_id = {r["conversation_id"]: r for r in rows(kept, "sft")}
        assert by_id["conv0"]["turn"] == 1 and len(by_id["conv0"]["messages"]) == 2
        assert by_id["conv1"]["turn"] == 3
        strict = tmp_path / "strict"
        result = cli(*args(server, strict, prompts, "conversation.turns=3", "conversation.min_turns=2", "engine.breaker=false"))
        assert result.returncode == 0, result.stderr[-3000:]
        assert [r["conversation_id"] for r in rows(strict, "sft")] == ["conv1"]
        (rejected,) = rows(strict, "rejected_rows")
        assert rejected["conversation_id"] == "conv0" and rejected["turn"] == 2
        assert rejected["reason"].startswith("turn 2: no usable candidate") and "1 of min_turns 2 kept" in rejected["reason"]
        assert rejected["prompt"][-1]["content"] == "REFUSE this one"  # the conversation up to the turn that failed


def test_given_turns_that_end_before_turns_end_the_conversation_there(server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", lines(2, turns=2))
    out = tmp_path / "run"
    result = cli(*args(server, out, prompts, "conversation.turns=3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["turn"] for r in rows(out, "sft")] == [2, 2]
    result = cli(*args(server, tmp_path / "strict", prompts, "conversation.turns=3", "conversation.min_turns=3"))
    assert result.returncode == 1  # no sft row at all: the CLI says why and exits 1
    reasons = {r["reason"] for r in rows(tmp_path / "strict", "rejected_rows")}
    assert reasons == {
        "turn 3: no next user turn (the prompt gives 2; set conversation.user to simulate more; 2 of min_turns 3 kept)"
    }


def test_the_user_simulator_writes_each_follow_up_from_the_conversation_so_far(server, tmp_path):
    # The api teacher ("chatty") is also the simulated user: its answer to the simulator's request is the follow-up.
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": f"s{i}", "prompt": f"opening {i}"} for i in range(3)])
    out = tmp_path / "run"
    result = cli(
        *args(server, out, prompts, "conversation.turns=3", "conversation.user=api", "conversation.follow_ups=[deeper,challenge]")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sft = rows(out, "sft")
    assert len(sft) == 3
    asks = [m[0]["content"] for m in chat_requests(server) if m[0]["content"].startswith("You are playing a user")]
    assert len(asks) == 3 * 2  # one follow-up per conversation per turn after the first
    assert all("The conversation so far:\nUser: opening" in a for a in asks)
    for row in sft:
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        assert users[0].startswith("opening") and len(users) == 3
        assert all(u.startswith("Answer ") and "from chatty" in u for u in users[1:])  # the simulator's words
        # turn 3's follow-up was written having read turn 2's question and chosen answer
        (ask,) = [a for a in asks if a.count("Assistant:") == 2 and users[0] in a]
        assert users[1][:40] in ask and row["messages"][3]["content"][:40] in ask


def test_a_simulator_that_asks_the_same_again_ends_the_conversation_and_the_summary_says_why(tmp_path):
    # "asker" writes one fixed follow-up: a new turn 2, then turn 2 again as turn 3. Turn 1 asks for
    # lowercase, so "good" answers it (asker's own answer would be its follow-up said back).
    script = Script(answers={**ANSWERS, "asker": "Could you tell me more about the second point you made there?"})
    lines_ = [{"id": f"s{i}", "prompt": f"opening {i}", "constraints": [LOWER]} for i in range(3)]
    prompts = write_prompts(tmp_path / "p.jsonl", lines_)
    out = tmp_path / "run"
    with FakeOpenAI(script) as server:
        more = (
            "teacher.api.model=openai/asker",
            "conversation.turns=3",
            "conversation.user=api",
            "conversation.follow_ups=[deeper]",
        )
        result = cli(*args(server, out, prompts, *more))
    assert result.returncode == 0, result.stderr[-3000:]
    sft = rows(out, "sft")
    assert [r["turn"] for r in sft] == [2, 2, 2]  # kept with the turns before the repeat
    assert all(r["messages"][2]["content"] == script.answers["asker"] for r in sft)
    why = "turn 3: the user simulator wrote no follow-up: api: a follow-up that repeats the conversation so far"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_early"] == {why: 3} and summary["turns_kept"] == {"2": 3}
    assert f"conversations ended early: {why} ×3" in result.stdout
    assert f"| {why} | 3 |" in (out / "README.md").read_text()  # the card's per-turn section


@pytest.mark.parametrize("kind", list(FOLLOW_UPS))
def test_a_follow_up_keeps_the_language_and_a_constraint_follow_up_adds_a_check(kind):
    es = {"type": "language:response_language", "language": "es"}
    prompt = Prompt(
        "t1",
        "p",
        "es",
        "d",
        "explain",
        "los ríos",
        ({"role": "user", "content": "hola"},),
        (es, {"type": "punctuation:no_comma"}),
    )
    follow = UserSimulator("u", {"p": "una ingeniera"}, (kind,)).follow_up(prompt, "una respuesta")
    assert "una ingeniera" in follow.request.messages[0]["content"] and "Spanish" in follow.request.messages[0]["content"]
    assert follow.constraints[0] == es
    assert len(follow.constraints) == (2 if kind == "constraint" else 1)
    turn2 = follow.next("¿Y por qué?")
    assert turn2.turn == 2 and turn2.conversation == "t1" and turn2.constraints == follow.constraints
    assert turn2.messages[1] == {"role": "assistant", "content": "una respuesta"}
    assert turn2.messages[2]["content"].startswith("¿Y por qué? ") and "español" in turn2.messages[2]["content"]


def test_a_turn_prompt_id_hashes_the_whole_prefix():
    p = Prompt("root", "", "en", "", "file", "", ({"role": "user", "content": "q"},))
    a, b = next_prompt(p, "answer one", "more?"), next_prompt(p, "answer two", "more?")
    assert a.prompt_id != b.prompt_id and a.conversation == b.conversation == "root"
    assert next_prompt(p, "answer one", "more?").prompt_id == a.prompt_id
    assert next_prompt(a, "x", "y").turn == 3


def test_a_simulator_that_echoes_its_instructions_wrote_no_follow_up():
    from arbitrage.rows import Candidate

    def said(text):
        return UserSimulator.written(Candidate("c", "p", "u", text, "stop", 1, 1, 0.0, 1))

    assert said("A follow-up question that goes deeper into one thing the assistant's last answer said. L'intera…") is None
    assert said("You are playing a user who talks with an AI assistant.") is None
    assert said("Can you go deeper into the second step?") == "Can you go deeper into the second step?"


def test_a_follow_up_that_repeats_the_conversation_is_no_new_turn():
    from arbitrage.prompts.conversation import FollowUp

    first = "I'm working on a Python project that involves fetching data from a REST API. What should I do?"
    p = Prompt("c", "", "en", "", "file", "", ({"role": "user", "content": first},))
    answer = "Start with the requests library, then read the API's documentation on paging and rate limits."
    f = FollowUp(p, answer, "deeper", (), p)
    assert f.repeats(first)  # SmolLM2 sent turn 1's message again as turn 3
    assert f.repeats("Start with the requests library, then read the API's documentation on paging.")  # the answer back
    # a challenge that quotes a phrase of the answer is a new turn
    assert not f.repeats("Why start with the requests library when my project already uses httpx for everything async?")
    assert not f.repeats("Why?")


def test_clean_follow_up():
    assert clean_follow_up('User: "Can you say more?"\n\nI hope so.') == "Can you say more?"
    assert clean_follow_up("   ") is None and clean_follow_up(None) is None
    assert len(clean_follow_up("Why? " * 400)) <= 1000


def test_conversation_settings_are_checked():
    with pytest.raises(ConfigError, match="min_turns"):
        ConversationSpec(turns=2, min_turns=3)
    with pytest.raises(ConfigError, match="follow_ups"):
        ConversationSpec(turns=2, follow_ups=["deeper", "gossip"])
    with pytest.raises(ConfigError, match="conversation.turns"):
        ConversationSpec(turns=0)


def test_a_prompts_file_gives_turns_and_their_own_checks(tmp_path):
    path = tmp_path / "p.jsonl"
    write_prompts(path, [*lines(1), {"id": "mt", "turns": ["first?", "second?"]}, {"prompt": "single"}])
    conv, mt, single = iter_prompt_file(path)
    assert conv.messages == ({"role": "user", "content": "question 0 turn 1"},) and conv.constraints == (LOWER,)
    assert conv.later_turns == ("question 0 turn 2", "question 0 turn 3") and conv.later_checks == ((LOWER,), (LOWER,))
    assert mt.later_turns == ("second?",) and mt.later_checks == ()
    assert single.later_turns == () and single.prompt_id  # one user turn: a prompt as before


def test_unknown_simulator_teacher_is_one_line(server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", lines(1))
    result = cli(*args(server, tmp_path / "run", prompts, "conversation.turns=2", "conversation.user=nobody"))
    assert result.returncode != 0
    assert "conversation.user names teacher 'nobody', which is not configured" in result.stderr
    assert "Traceback" not in result.stderr


def test_turns_1_on_a_file_with_later_turns_says_so(server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", lines(2))
    out = tmp_path / "run"
    result = cli(*args(server, out, prompts))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gives 2 more user turns; conversation.turns=1 answers only its first — set conversation.turns=3" in result.stderr
    assert [len(r["messages"]) for r in rows(out, "sft")] == [2, 2]


def test_turns_2_then_3_on_the_same_folder_extends_without_sending_turns_1_and_2_again(server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", lines(3))
    out = tmp_path / "run"
    assert cli(*args(server, out, prompts, "conversation.turns=2")).returncode == 0
    sent = len(server.requests)
    assert sent == 3 * 2 * 2
    result = cli(*args(server, out, prompts, "conversation.turns=3"))
    assert result.returncode == 0, result.stderr[-3000:]
    new = chat_requests(server)[sent:]
    assert len(new) == 3 * 2 and all(len(m) == 5 for m in new)  # only turn 3's calls were sent
    assert [r["turn"] for r in rows(out, "sft")] == [3, 3, 3]


def _answer_key(out) -> list:
    sft = sorted((r["conversation_id"], json.dumps(r["messages"])) for r in rows(out, "sft"))
    dpo = sorted(
        (r["conversation_id"], r["turn"], json.dumps([r["prompt"], r["chosen"], r["rejected"]])) for r in rows(out, "dpo")
    )
    candidates = sorted((c["call_id"], c["turn"], c["response"]) for c in rows(out, "candidates"))
    return [sft, dpo, candidates]


def test_a_3_turn_run_killed_mid_turn_2_resumes_to_the_same_rows(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", lines(40))
    with FakeOpenAI(Script(answers=ANSWERS, latency_s=0.05, jitter_s=0.05)) as server:
        whole = tmp_path / "whole"
        assert cli(*args(server, whole, prompts, "conversation.turns=3")).returncode == 0
        server.requests.clear()
        out = tmp_path / "killed"
        env = {**os.environ, "FAKE_KEY": "sk-fake", "HF_HUB_OFFLINE": "1"}
        argv = [
            sys.executable,
            "-m",
            "arbitrage.cli",
            *args(server, out, prompts, "conversation.turns=3", "teacher.openai_compat.max_concurrency=4"),
        ]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 120
        while sum(len(m) == 3 for m in chat_requests(server)) < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sent = chat_requests(server)
        assert sum(len(m) == 3 for m in sent) >= 10 and not any(len(m) == 5 for m in sent)  # killed in turn 2
        server.requests.clear()
        result = cli(*args(server, out, prompts, "conversation.turns=3"))
        assert result.returncode == 0, result.stderr[-3000:]
        resent = chat_requests(server)
        assert not any(len(m) == 1 for m in resent)  # turn 1 was read back from the journal, never sent again
        assert _answer_key(out) == _answer_key(whole)
