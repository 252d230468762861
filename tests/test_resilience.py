"""The engine's promises, tested as a user meets them: the CLI in a subprocess against our fake
server — killed with SIGKILL mid-run, stopped with SIGTERM, capped by a budget, hit by faults —
and every row of the final dataset checked against the answer the server gives for its prompt."""

import json
import signal
import subprocess
import sys
import time

import datasets
import pytest
from fake_openai import FakeOpenAI, Script, answer_for

N = 120


def prompts_file(tmp_path, n=N):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Explain topic number {i}.", "language": "en"}) + "\n" for i in range(n)))
    return path


def args(server, out, prompts, *extra):
    return [
        "teacher=[openai_compat]",
        f"teacher.openai_compat.base_url={server.url}",
        "teacher.openai_compat.model=good",
        "teacher.openai_compat.max_concurrency=4",
        "source=jsonl",
        f"source.path={prompts}",
        f"n_prompts={N}",
        "filters=none",
        "diversity.embedding_spread=false",
        "progress=false",
        f"out={out}",
        *extra,
    ]


def command(*a):
    return [sys.executable, "-m", "arbitrage.cli", *a]


def run(*a):
    return subprocess.run(command(*a), capture_output=True, text=True, timeout=300)


def journal_lines(out):
    path = out / "journal" / "calls.jsonl"
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def start_and_wait_for(out, a, lines):
    """Start a run and return it once the journal holds `lines` finished calls."""
    process = subprocess.Popen(command(*a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while journal_lines(out) < lines:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, "the run never got going"
        time.sleep(0.05)
    return process


def assert_every_prompt_once_and_correct(out, server, script, n=N):
    sft = datasets.load_dataset(str(out), "sft", split="train")
    texts = [row["messages"][-2]["content"] for row in sft]
    assert sorted(texts) == sorted(f"Explain topic number {i}." for i in range(n))  # lost = duplicated = 0
    wrong = [row for row in sft if row["messages"][-1]["content"] != answer_for("good", row["messages"][-2]["content"], script)]
    assert not wrong  # wrong = 0


@pytest.fixture
def slow():
    script = Script(latency_s=0.05)
    with FakeOpenAI(script) as server:
        yield server, script


def test_kill_9_mid_run_then_resume_keeps_every_prompt_exactly_once(slow, tmp_path):
    server, script = slow
    out, prompts = tmp_path / "run", prompts_file(tmp_path)
    process = start_and_wait_for(out, args(server, out, prompts), N // 2)
    process.kill()  # SIGKILL: no handler runs, nothing is flushed but what already was
    process.wait()
    answered_before = journal_lines(out)
    assert answered_before < N, "the run finished before it could be killed"

    result = run(*args(server, out, prompts))
    assert result.returncode == 0, result.stderr[-2000:]
    assert_every_prompt_once_and_correct(out, server, script)
    repeated = sum(count - 1 for count in server.seen.values())
    assert repeated <= 4  # at most the requests in flight at the kill (max_concurrency) are sent twice
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teachers"]["openai_compat"]["resumed"] >= answered_before - 1


def test_sigterm_stops_gracefully_writes_finished_rows_and_a_rerun_finishes(slow, tmp_path):
    server, script = slow
    out, prompts = tmp_path / "run", prompts_file(tmp_path)
    process = start_and_wait_for(out, args(server, out, prompts), 20)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "stopped (interrupted)" in stdout and "rerun the same command" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "interrupted" and 0 < summary["prompts_finished"] < N
    sft = datasets.load_dataset(str(out), "sft", split="train")
    assert len(sft) == summary["prompts_finished"] == journal_lines(out)  # every finished call is a row

    result = run(*args(server, out, prompts))
    assert result.returncode == 0, result.stderr[-2000:]
    assert_every_prompt_once_and_correct(out, server, script)
    assert sum(server.seen.values()) == N  # the graceful stop wasted no request


def test_retries_through_429_5xx_and_garbage_lose_nothing(tmp_path):
    script = Script(fail_first=1, fail_status=429, retry_after="0.01", garbage_first=1)
    with FakeOpenAI(script) as server:
        out = tmp_path / "run"
        result = run(*args(server, out, prompts_file(tmp_path), "engine.base_delay_s=0.01"))
        assert result.returncode == 0, result.stderr[-2000:]
        assert_every_prompt_once_and_correct(out, server, script)
    teacher = json.loads((out / "summary.json").read_text())["teachers"]["openai_compat"]
    assert teacher["retries"] == 2 * N and teacher["requests_sent"] == 3 * N and teacher["failed"] == 0


def test_budget_stops_the_run_and_a_higher_budget_continues(tmp_path):
    script = Script()
    price = "teacher.openai_compat.price={input_per_mtok:200,output_per_mtok:1000}"  # $0.0002 / $0.001 per token
    with FakeOpenAI(script) as server:
        out, prompts = tmp_path / "run", prompts_file(tmp_path)
        first = run(*args(server, out, prompts, price, "budget_usd=0.5", "teacher.openai_compat.sampling.max_tokens=20"))
        assert first.returncode == 0, first.stderr[-2000:]
        assert "budget_usd reached" in first.stdout
        summary = json.loads((out / "summary.json").read_text())
        assert summary["stopped"] == "budget" and summary["spent_usd"] <= 0.5 and 0 < summary["prompts_finished"] < N
        sent = len(server.requests)
        more = run(*args(server, out, prompts, price, "budget_usd=100", "teacher.openai_compat.sampling.max_tokens=20"))
        assert more.returncode == 0, more.stderr[-2000:]
        assert_every_prompt_once_and_correct(out, server, script)
        assert len(server.requests) == N and sent < N  # the second run sent only what the first did not


def test_estimate_counts_calls_tokens_and_dollars_without_sending(tmp_path):
    result = run(
        "estimate",
        "teacher=[smollm2,api]",
        "teacher.api.model=openai/gpt-4o-mini",
        "n_prompts=40",
        "personas=all",
        f"out={tmp_path / 'never'}",
    )  # no key set and no network: an estimate sends nothing
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "smollm2" in text and "api" in text and "40" in text and "$" in text
    assert not (tmp_path / "never").exists()  # an estimate writes nothing


def test_a_bad_prompts_file_line_is_one_clear_error(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n{"text": "no prompt key"}\n')
    result = run(
        "teacher=[openai_compat]",
        "teacher.openai_compat.base_url=http://127.0.0.1:9/v1",
        "teacher.openai_compat.model=m",
        "source=jsonl",
        f"source.path={path}",
        f"out={tmp_path / 'o'}",
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "line 2" in lines[0] and "needs 'prompt'" in lines[0]


def answered_calls(out):
    """Calls the journal answered (the last record of a call wins)."""
    latest = {}
    for line in (out / "journal" / "calls.jsonl").read_text().splitlines():
        record = json.loads(line)
        latest[record["call_id"]] = record
    return sum(1 for r in latest.values() if r["error"] is None and r["text"])


def killed_mid_run(server, out, prompts):
    """A run killed with SIGKILL halfway: its answers are no prefix of the prompt order (4 in flight)."""
    process = start_and_wait_for(out, args(server, out, prompts), N // 2)
    process.kill()
    process.wait()
    return answered_calls(out)


def test_a_stopped_rerun_never_writes_fewer_rows_than_the_journal_answers(tmp_path):
    """After a kill -9, a rerun stopped at once by a budget already spent used to write only the
    prompts it replayed before stopping (65 rows for 83 answered calls): now every answer is in."""
    with FakeOpenAI(Script(latency_s=0.02, jitter_s=0.2)) as server:  # answers land out of order
        out, prompts = tmp_path / "run", prompts_file(tmp_path)
        price = "teacher.openai_compat.price={input_per_mtok:200,output_per_mtok:1000}"
        wide = "teacher.openai_compat.max_concurrency=16"
        process = start_and_wait_for(out, args(server, out, prompts, price, wide), N // 2)
        process.kill()
        process.wait()
        answered, sent = answered_calls(out), len(server.requests)
        result = run(*args(server, out, prompts, price, wide, "budget_usd=0.0001"))  # already spent: stops before sending
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(server.requests) == sent and "budget_usd reached" in result.stdout
    sft = datasets.load_dataset(str(out), "sft", split="train")
    assert len(sft) == answered  # every answered call is a row, however the answers were spread
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "budget" and summary["prompts_unfinished"] == N - answered


def test_ctrl_c_during_the_replay_keeps_every_answered_prompt(tmp_path):
    """A rerun interrupted while it reads the journal back used to write only what it had read so
    far, replacing a full dataset with a partial one: now it still writes every answered prompt."""
    with FakeOpenAI() as server:
        n = 1500
        out, prompts = tmp_path / "run", prompts_file(tmp_path, n)
        a = [x if not x.startswith("n_prompts=") else f"n_prompts={n}" for x in args(server, out, prompts)]
        assert run(*a).returncode == 0
        sent = len(server.requests)
        rerun = subprocess.Popen(command(*a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in rerun.stderr:  # the stream has started: signals are handled from here on
            if "prompts to" in line:
                rerun.send_signal(signal.SIGINT)
                break
        stdout, stderr = rerun.communicate(timeout=120)
        assert len(server.requests) == sent
    assert rerun.returncode == 130, stderr[-2000:]
    sft = datasets.load_dataset(str(out), "sft", split="train")
    assert len(sft) == n == answered_calls(out)


def test_two_runs_on_one_folder_never_interleave(tmp_path):
    with FakeOpenAI(Script(latency_s=0.5)) as server:  # the first run still holds the folder when the second starts
        out, prompts = tmp_path / "run", prompts_file(tmp_path)
        first = start_and_wait_for(out, args(server, out, prompts), 5)
        second = run(*args(server, out, prompts))
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"{out} is in use by another arbitrage run (pid {first.pid})" in lines[0]
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
        assert run(*args(server, out, prompts)).returncode == 0  # the lock goes with the run that held it
