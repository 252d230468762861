"""`mode=batch` through the CLI against our fake server's Files + Batches endpoints: a full run whose
rows match an online run's, kill -9 and Ctrl-C between submit and completion then resume (every call
submitted once), partial failures, a budget, a mixed batch + online run, and the batch price."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import datasets
import pytest
from conftest import make_prompt
from fake_openai import FakeOpenAI, Script, answer_for

from arbitrage import cli
from arbitrage.cost import batch_price, litellm_batch_price, litellm_price
from arbitrage.errors import ConfigError
from arbitrage.rows import make_call
from arbitrage.teachers.batch.ledger import BatchLedger
from arbitrage.teachers.factory import api_teacher
from arbitrage.teachers.samples import request_starts

N = 36
FAST = [  # tiny intervals: the tests wait on the fake server, not on production defaults
    "teacher.openai_compat.mode=batch",
    "teacher.openai_compat.batch.linger_s=0.05",
    "teacher.openai_compat.batch.poll_first_s=0.05",
    "teacher.openai_compat.batch.poll_max_s=0.2",
    "teacher.openai_compat.batch.max_requests=10",
]


def prompts_file(tmp_path, n=N):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Explain topic number {i}.", "language": "en"}) + "\n" for i in range(n)))
    return path


def args(server, out, prompts, *extra, n=N):
    return [
        "teacher=[openai_compat]",
        f"teacher.openai_compat.base_url={server.url}",
        "teacher.openai_compat.model=good",
        "source=jsonl",
        f"source.path={prompts}",
        f"n_prompts={n}",
        "filters=none",
        "diversity.embedding_spread=false",
        "progress=false",
        "report=false",
        "engine.base_delay_s=0.01",
        f"out={out}",
        *extra,
    ]


def command(*a):
    return [sys.executable, "-m", "arbitrage.cli", *a]


def run(*a, env=None):
    return subprocess.run(command(*a), capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def sft_rows(out):
    rows = datasets.load_dataset(str(out), "sft", split="train")
    return sorted((row["messages"][-2]["content"], row["messages"][-1]["content"]) for row in rows)


def assert_every_prompt_once_and_correct(out, script, n=N, model="good"):
    rows = sft_rows(out)
    assert [prompt for prompt, _ in rows] == sorted(f"Explain topic number {i}." for i in range(n))
    assert all(answer == answer_for(model, prompt, script) for prompt, answer in rows)


def ledger(out):
    path = out / "journal" / "batches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_batch_run_gives_the_rows_of_an_online_run_in_batches_within_the_limits(tmp_path):
    script = Script()
    with FakeOpenAI(script) as server:
        prompts = prompts_file(tmp_path)
        batch = run(*args(server, tmp_path / "batch", prompts, *FAST))
        assert batch.returncode == 0, batch.stderr[-3000:]
        carried = server.batches.carried
        assert len(server.batches.batches) == 4 and sorted(carried.values()) == [1] * N  # 10 + 10 + 10 + 6
        sizes = [b["request_counts"]["total"] for b in server.batches.batches.values()]
        assert max(sizes) <= 10 and sum(sizes) == N
        online = run(*args(server, tmp_path / "online", prompts))
        assert online.returncode == 0, online.stderr[-3000:]
    assert_every_prompt_once_and_correct(tmp_path / "batch", script)
    assert sft_rows(tmp_path / "batch") == sft_rows(tmp_path / "online")
    assert "batches 4 submitted, 0 running, 4 done" in batch.stderr and f"{N} rows so far" in batch.stderr
    events = [r["event"] for r in ledger(tmp_path / "batch")]
    assert events.count("prepared") == events.count("submitted") == events.count("done") == 4


def wait_until(process, done, what: str):
    """Poll `done()` while the run lives, for up to 60 s."""
    deadline = time.time() + 60
    while not done():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, what
        time.sleep(0.02)


def wait_for_submitted(process, out, batches):
    wait_until(process, lambda: sum(r["event"] == "submitted" for r in ledger(out)) >= batches, "no batch was submitted")


def journal(out):
    """The run's call records."""
    return [json.loads(line) for line in (out / "journal" / "calls.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lose_ids", [False, True], ids=["kill-9", "kill-9-before-the-batch-id-was-recorded"])
def test_kill_9_between_submit_and_completion_then_resume_submits_every_call_once(tmp_path, lose_ids):
    script = Script()
    with FakeOpenAI(script) as server:
        server.batches.script.delay_s = 2.0
        out, prompts = tmp_path / "run", prompts_file(tmp_path)
        process = subprocess.Popen(command(*args(server, out, prompts, *FAST)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_submitted(process, out, 4)
        process.kill()  # SIGKILL: the batches are running at the provider, nothing is journaled yet
        process.wait()
        assert not (out / "journal" / "calls.jsonl").exists() or not (out / "journal" / "calls.jsonl").read_text()
        if lose_ids:  # as if killed after create, before the batch id reached the ledger
            path = out / "journal" / "batches.jsonl"
            path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if '"submitted"' not in line))
        server.batches.finish_now()
        result = run(*args(server, out, prompts, *FAST))
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(server.batches.batches) == 4  # the rerun polled them, and submitted nothing
        assert sorted(server.batches.carried.values()) == [1] * N and sorted(server.seen.values()) == [1] * N
    assert_every_prompt_once_and_correct(out, script)
    assert "4 batches of an earlier run are still running" in result.stderr


def test_ctrl_c_leaves_the_batches_running_and_the_same_command_collects_them(tmp_path):
    script = Script()
    with FakeOpenAI(script) as server:
        server.batches.script.delay_s = 30.0
        out, prompts = tmp_path / "run", prompts_file(tmp_path)
        process = subprocess.Popen(command(*args(server, out, prompts, *FAST)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_submitted(process, out, 4)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr[-3000:]
        assert all(b["status"] == "in_progress" for b in server.batches.batches.values())  # it did not wait for them
        assert b"batches keep running at the provider (not cancelled)" in stderr
        assert not any(b["status"].startswith("cancel") for b in server.batches.batches.values())
        server.batches.finish_now()
        result = run(*args(server, out, prompts, *FAST))
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(server.batches.batches) == 4 and sorted(server.batches.carried.values()) == [1] * N
    assert_every_prompt_once_and_correct(out, script)


def test_failed_lines_and_expired_or_failed_batches_are_retried_in_new_batches_then_become_failure_rows(tmp_path):
    # every line fails once (HTTP 500); the 1st batch fails for a full token quota; the 2nd expires
    # half done; the prompt with 'number 7.' is refused (HTTP 400): failure rows, never retried.
    script = Script(fail_first=1, fail_status=500, always_fail_marker="number 7.")
    with FakeOpenAI(script) as server:
        server.batches.script.fail_first, server.batches.script.fail_code = 1, "token_limit_exceeded"
        server.batches.script.expire_first = 1
        out = tmp_path / "run"
        result = run(*args(server, out, prompts_file(tmp_path), *FAST, "engine.max_attempts=6"))
        assert result.returncode == 0, result.stderr[-3000:]
        statuses = [b["status"] for b in server.batches.batches.values()]
        assert statuses[:2] == ["failed", "expired"] and "completed" in statuses
    summary = json.loads((out / "summary.json").read_text())
    teacher = summary["teachers"]["openai_compat"]
    assert teacher["failed"] == 1 and teacher["retries"] >= N  # 500s, the quota and the expiry were retried
    rows = sft_rows(out)
    assert len(rows) == N - 1 and all(answer == answer_for("good", prompt, script) for prompt, answer in rows)
    rejected = datasets.load_dataset(str(out), "rejected_rows", split="train")
    assert len(rejected) == 1 and "number 7." in json.dumps(rejected[0])

    # a line that fails every time ends, after max_attempts, as a failure row with its reason
    script = Script(fail_first=99, fail_status=503)
    with FakeOpenAI(script) as server:
        out = tmp_path / "always"
        result = run(*args(server, out, prompts_file(tmp_path, 4), *FAST, "engine.max_attempts=2", n=4))
        assert result.returncode == 1, result.stderr[-3000:]  # nothing usable: one line, the folder kept
        assert sorted(server.batches.carried.values()) == [2] * 4
    records = journal(out)
    assert len(records) == 4 and all(r["attempts"] == 2 and "HTTP 503" in r["error"] for r in records)


def test_a_budget_holds_each_batch_and_a_higher_budget_continues(tmp_path):
    price = "teacher.openai_compat.price={input_per_mtok:200,output_per_mtok:1000}"  # × 0.5 in batch mode
    script = Script()
    with FakeOpenAI(script) as server:
        out, prompts = tmp_path / "run", prompts_file(tmp_path)
        a = args(server, out, prompts, *FAST, price, "teacher.openai_compat.sampling.max_tokens=20")
        first = run(*a, "budget_usd=0.15")
        assert first.returncode == 0, first.stderr[-3000:]
        assert "budget_usd reached" in first.stdout
        summary = json.loads((out / "summary.json").read_text())
        assert summary["stopped"] == "budget" and summary["spent_usd"] <= 0.15 and 0 < summary["prompts_finished"] < N
        tokens = summary["teachers"]["openai_compat"]
        assert summary["spent_usd"] == pytest.approx((tokens["tokens_in"] * 100 + tokens["tokens_out"] * 500) / 1e6, rel=1e-3)
        assert tokens["usd"] == pytest.approx(summary["spent_usd"], rel=1e-3)  # the card's $ is the batch price too
        more = run(*a, "budget_usd=100")
        assert more.returncode == 0, more.stderr[-3000:]
        assert sorted(server.batches.carried.values()) == [1] * N  # the second run sent only what the first did not
    assert_every_prompt_once_and_correct(out, script)


def test_a_batch_teacher_and_an_online_teacher_in_one_run(tmp_path):
    script = Script()
    with FakeOpenAI(script) as server:
        out = tmp_path / "run"
        extra = ["teacher=[openai_compat,api]", "teacher.api.model=openai/online-model", f"teacher.api.api_base={server.url}"]
        a = [x for x in args(server, out, prompts_file(tmp_path), *FAST) if not x.startswith("teacher=")]
        result = run(*a, *extra, env={"OPENAI_API_KEY": "sk-test"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(server.batches.carried.values()) == [1] * N  # only the batch teacher's calls went in batches
        assert len(server.requests) == 2 * N  # N online requests + N batch lines run by the fake
    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    by_teacher = {}
    for row in candidates:
        by_teacher.setdefault(row["teacher"], []).append(row)
    assert {t: len(rows) for t, rows in by_teacher.items()} == {"openai_compat": N, "api": N}
    for teacher, model in (("openai_compat", "good"), ("api", "online-model")):
        expected = {answer_for(model, f"Explain topic number {i}.", script) for i in range(N)}
        assert {row["response"] for row in by_teacher[teacher]} == expected


def test_the_batch_price_comes_from_the_price_map_or_the_discount():
    online, batch = litellm_price("gpt-4o-mini"), litellm_batch_price("gpt-4o-mini")
    assert batch.input_per_token == online.input_per_token / 2 and "batch" in batch.source
    assert api_teacher("a", "openai/gpt-4o-mini", mode="batch").price == batch
    assert api_teacher("a", "openai/gpt-4o-mini").price == online  # online unchanged
    configured = batch_price("m", None, {"input_per_mtok": 2, "output_per_mtok": 8, "batch_discount": 0.4})
    assert (configured.input_per_token, configured.output_per_token) == pytest.approx((0.8e-6, 3.2e-6))
    only_discount = batch_price("openai/gpt-4o-mini", None, {"batch_discount": 0.3})
    assert only_discount.output_per_token == pytest.approx(online.output_per_token * 0.3)
    assert api_teacher("a", "openai/gpt-4o-mini", price={"batch_discount": 0.3}).price == online  # online ignores it
    with pytest.raises(ConfigError, match="batch_discount must be a fraction"):
        batch_price("m", None, {"batch_discount": 2})
    with pytest.raises(ConfigError, match="mode=batch needs the OpenAI-compatible client"):
        api_teacher("a", "anthropic/claude-haiku-4-5", mode="batch")
    with pytest.raises(ConfigError, match="mode must be one of online, batch"):
        api_teacher("a", "openai/gpt-4o-mini", mode="offline")
    with pytest.raises(ConfigError, match="batch has no setting linger"):
        api_teacher("a", "openai/gpt-4o-mini", mode="batch", batch={"linger": 1})


def total_usd(text):
    total = next(line for line in text.splitlines() if line.startswith("| **total**"))
    return float(re.search(r"\$([0-9.,]+)", total).group(1).replace(",", ""))


def test_estimate_shows_the_batch_price(tmp_path, capsys):
    a = ["teacher=[api]", "teacher.api.model=openai/gpt-4o-mini", "teacher.api.sampling.max_tokens=16000", "n_prompts=10"]
    a += ["personas=all", f"out={tmp_path / 'never'}"]
    cli._estimate(a)
    online = capsys.readouterr().out
    cli._estimate([*a, "teacher.api.mode=batch"])
    batch = capsys.readouterr().out
    assert "(gpt-4o-mini, batch)" in batch and "batch" not in online
    assert total_usd(batch) == pytest.approx(total_usd(online) / 2, rel=3e-3)


def test_the_ledger_keeps_each_calls_latest_batch_and_cuts_a_torn_last_line(tmp_path):
    ledger = BatchLedger(tmp_path, "t")
    ledger.prepared("a", ["c1", "c2"])
    ledger.submitted("a", "batch_1", "file-1")
    ledger.done("a", "completed", "file-2", "file-3", ["c2"])
    ledger.prepared("b", ["c2"])  # c2 failed in a: retried in b
    ledger.close()
    with ledger.path.open("ab") as f:
        f.write(b'{"teacher":"t","event":"submitted","tag":"b","batch_')  # kill -9 mid-write
    again = BatchLedger(tmp_path, "t")
    assert again.carrier("c1").status == "completed" and again.carrier("c1").batch_id == "batch_1"
    assert again.carrier("c2").tag == "b" and again.carrier("c2").unresolved  # the rerun asks the provider
    again.submitted("b", "batch_2", "file-4")
    again.close()
    assert BatchLedger(tmp_path, "t").carrier("c2").live  # the record after the cut line reads back whole
    assert BatchLedger(tmp_path, "other").carrier("c1") is None  # each teacher reads its own batches
    shared = BatchLedger(tmp_path, "t")
    shared.prepared("c", ["c4", "c5", "c6"], {"c4": ["c4", "c5"]})  # one line with n=2, one alone
    shared.close()
    again = BatchLedger(tmp_path, "t").carrier("c5")
    assert again.tag == "c" and again.calls_of("c4") == ["c4", "c5"] and again.calls_of("c6") == ["c6"]


# native n: a prompt's samples in one batch line ---------------------------------------------------
SAMPLES = 3


def uploaded(server):
    """Every request line the fake received, in batch order."""
    files = (server.batches.files[b["input_file_id"]] for b in server.batches.batches.values())
    return [json.loads(line) for data in files for line in data.splitlines() if line.strip()]


def candidates(out):
    """(prompt_id, sample) → answer, every candidate of a run."""
    rows = datasets.load_dataset(str(out), "candidates", split="train")
    return {(row["prompt_id"], row["sample"]): row["response"] for row in rows}


def seeded_answers(line, script, model="good"):
    """What the seeded fake answers a line's n choices: choice i for the line's seed + i."""
    body = line["body"]
    text = body["messages"][-1]["content"]
    return [answer_for(model, f"{text}@{body['seed'] + i}", script) for i in range(body.get("n", 1))]


def test_a_prompts_samples_go_in_one_batch_line_with_n_and_give_the_answers_of_one_request_per_sample(tmp_path):
    script, n = Script(seeded=True), 6  # the fake's choice i answers for seed + i: a wrong seed shows
    samples = f"teacher.openai_compat.sampling.n={SAMPLES}"
    with FakeOpenAI(script) as server:
        prompts = prompts_file(tmp_path, n)
        batch = run(*args(server, tmp_path / "batch", prompts, *FAST, samples, n=n))
        assert batch.returncode == 0, batch.stderr[-3000:]
        lines = uploaded(server)
        online = run(*args(server, tmp_path / "online", prompts, samples, "teacher.openai_compat.native_n=false", n=n))
        assert online.returncode == 0, online.stderr[-3000:]
        singles = [r["body"] for r in server.requests[len(lines) :]]
    assert len(lines) == n and all(line["body"]["n"] == SAMPLES for line in lines)  # one line per prompt
    seeds = {}
    for body in singles:
        seeds.setdefault(body["messages"][-1]["content"], []).append(body["seed"])
    for line in lines:  # the first sample's seed; samples take consecutive ones
        first = min(seeds[line["body"]["messages"][-1]["content"]])
        assert line["body"]["seed"] == first and sorted(seeds[line["body"]["messages"][-1]["content"]]) == [
            first,
            first + 1,
            first + 2,
        ]
    got = candidates(tmp_path / "batch")
    assert sorted({s for _, s in got}) == list(range(SAMPLES)) and len(got) == n * SAMPLES
    assert len(set(got.values())) == n * SAMPLES  # distinct samples
    assert got == candidates(tmp_path / "online")  # each sample the answer a request of its own gets
    calls = journal(tmp_path / "batch")
    assert len(calls) == n * SAMPLES  # a journal record per sample
    assert [c > 0 for c in sorted((r["tokens_in"] for r in calls), reverse=True)] == [True] * n + [False] * (2 * n)


def test_kill_9_with_n_samples_per_line_then_resume_collects_every_sample_and_sends_nothing_again(tmp_path):
    script, n = Script(seeded=True), 12
    with FakeOpenAI(script) as server:
        server.batches.script.delay_s = 2.0
        out, prompts = tmp_path / "run", prompts_file(tmp_path, n)
        a = args(server, out, prompts, *FAST, f"teacher.openai_compat.sampling.n={SAMPLES}", n=n)
        process = subprocess.Popen(command(*a), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def all_submitted():  # every call in a batch the provider accepted
            prepared = {r["tag"]: len(r["calls"]) for r in ledger(out) if r["event"] == "prepared"}
            submitted = {r["tag"] for r in ledger(out) if r["event"] == "submitted"}
            return sum(prepared.values()) == n * SAMPLES and submitted == prepared.keys()

        wait_until(process, all_submitted, "not every call was submitted")
        process.kill()
        process.wait()
        submitted = len(server.batches.batches)
        server.batches.finish_now()
        result = run(*a)
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(server.batches.batches) == submitted  # the rerun polled them, and submitted nothing
        assert "of an earlier run are still running" in result.stderr
        lines = uploaded(server)
        assert len(lines) == n and sorted(server.batches.carried.values()) == [1] * n
        assert sorted(server.seen.values()) == [1] * n  # one request per prompt, its 3 samples in it
    shared = [ids for r in ledger(out) if r["event"] == "prepared" for ids in r.get("shared", {}).values()]
    assert len(shared) == n and all(len(ids) == SAMPLES for ids in shared)
    got = candidates(out)
    assert len(got) == n * SAMPLES and {s for _, s in got} == set(range(SAMPLES))
    assert set(got.values()) == {answer for line in lines for answer in seeded_answers(line, script)}


def test_native_n_false_gives_a_batch_line_per_sample(tmp_path):
    with FakeOpenAI(Script(seeded=True)) as server:
        extra = (f"teacher.openai_compat.sampling.n={SAMPLES}", "teacher.openai_compat.native_n=false")
        result = run(*args(server, tmp_path / "run", prompts_file(tmp_path, 4), *FAST, *extra, n=4))
        assert result.returncode == 0, result.stderr[-3000:]
        lines = uploaded(server)
    assert len(lines) == 4 * SAMPLES and not any("n" in line["body"] for line in lines)
    assert len({line["body"]["seed"] for line in lines}) == 4 * SAMPLES
    assert len(candidates(tmp_path / "run")) == 4 * SAMPLES


def test_a_line_short_of_choices_sends_the_missing_samples_again_and_a_refused_line_fails_all_its_samples(tmp_path):
    script, n = Script(seeded=True, ignore_n=True, always_fail_marker="number 2."), 6
    with FakeOpenAI(script) as server:
        out = tmp_path / "run"
        result = run(*args(server, out, prompts_file(tmp_path, n), *FAST, f"teacher.openai_compat.sampling.n={SAMPLES}", n=n))
        assert result.returncode == 0, result.stderr[-3000:]
        lines = uploaded(server)
    first = [line for line in lines if "n" in line["body"]]
    assert len(first) == n and all(line["body"]["n"] == SAMPLES for line in first)
    assert len(lines) - n == 2 * (n - 1)  # each answered line's two missing samples, one line each
    assert "mishandles n" in result.stderr
    expected = {
        answer
        for line in first
        if "number 2." not in line["body"]["messages"][-1]["content"]
        for answer in seeded_answers(line, script)
    }
    got = candidates(out)
    assert {answer for answer in got.values() if answer} == expected  # the retried samples kept their seeds
    records = journal(out)
    refused = [r for r in records if r["error"]]
    assert len(refused) == SAMPLES and all("HTTP 400" in r["error"] and r["attempts"] == 1 for r in refused)


def test_a_batch_teacher_counts_lines_as_requests_and_bills_a_prompt_once_per_line():
    with_n = api_teacher("a", "openai/gpt-4o-mini", mode="batch", sampling={"n": SAMPLES})
    alone = api_teacher("a", "openai/gpt-4o-mini", mode="batch", sampling={"n": SAMPLES}, native_n=False)
    calls = [make_call(make_prompt(prompt_id=f"p{i}"), "a", "k", s) for i in range(2) for s in range(SAMPLES)]
    assert with_n.limits.native_n and request_starts(calls, with_n) == [True, False, False] * 2  # estimate and rpm too
    assert not alone.limits.native_n and request_starts(calls, alone) == [True] * 6


# a create that answers 5xx after the provider made the batch ------------------------------------
def test_a_create_that_answers_502_after_making_the_batch_finds_it_by_its_tag_and_bills_each_call_once(tmp_path):
    with FakeOpenAI(Script()) as server:
        server.batches.script.create_then_fail = 1  # the 1st create makes its batch, then answers 502
        out = tmp_path / "run"
        result = run(*args(server, out, prompts_file(tmp_path, 5), *FAST, n=5))
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(server.batches.carried.values()) == [1] * 5 and sorted(server.seen.values()) == [1] * 5
        assert len(server.batches.batches) == 1
    assert "abandoned" not in [r["event"] for r in ledger(out)]
    assert_every_prompt_once_and_correct(out, Script(), n=5)


def test_a_batch_made_by_a_failing_create_and_not_listed_yet_is_held_for_the_next_start_never_sent_again(tmp_path):
    with FakeOpenAI(Script()) as server:
        server.batches.script.create_then_fail, server.batches.script.unlisted = 1, True
        out, prompts = tmp_path / "run", prompts_file(tmp_path, 5)
        first = run(*args(server, out, prompts, *FAST, "engine.max_attempts=3", n=5))
        assert first.returncode == 1, first.stderr[-3000:]  # no answer this run: its calls wait on the lookup
        assert len(server.batches.batches) == 1  # the retries looked it up, and sent nothing again
        assert [r["event"] for r in ledger(out)] == ["prepared"]  # unresolved: neither submitted nor abandoned
        server.batches.unlisted.clear()  # the provider's list catches up
        again = run(*args(server, out, prompts, *FAST, n=5))
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(server.batches.batches) == 1 and sorted(server.batches.carried.values()) == [1] * 5
    assert_every_prompt_once_and_correct(out, Script(), n=5)
