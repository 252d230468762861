import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from conftest import make_candidate, make_prompt
from fake_openai import FakeOpenAI, Script

from arbitrage.cost import Price
from arbitrage.engine import Budget, Engine, Journal, RateLimit, RetryPolicy, TokenBucket
from arbitrage.errors import ArbitrageError, ConfigError, TeacherUnusable
from arbitrage.rows import Candidate, Completion, make_call
from arbitrage.teachers import teacher_key
from arbitrage.teachers.factory import api_teacher
from arbitrage.teachers.litellm_api import LiteLLMTeacher
from arbitrage.teachers.openai_compat import OpenAICompatTeacher, parse_reset, ratelimit_headers

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05)


def prompts(n, text="Explain topic number {i}."):
    return [make_prompt(prompt_id=f"p{i}", text=text.format(i=i)) for i in range(n)]


def calls(teacher, ps):
    key = teacher_key(teacher)
    return [make_call(p, teacher.name, key) for p in ps]


def run_calls(teacher, ps, journal, policy=FAST, budget=None):
    """Every prompt through a fresh engine; returns the engine and the candidates in order."""

    async def go():
        async with Engine({teacher.name: teacher}, journal, policy, budget) as engine:
            return engine, await engine.run(calls(teacher, ps))

    return asyncio.run(go())


def test_retry_policy_backoff_and_retry_after():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    assert policy.delay(1, retry_after=2.5) == 2.5
    assert policy.delay(1, retry_after=100) == 100  # the server's wish, not our backoff's max_delay_s
    assert policy.delay(1, retry_after=86_400) == 600  # up to a sane ceiling
    assert all(0 <= policy.delay(4, None) <= 8.0 for _ in range(100))
    assert policy.retryable(Completion(None, error="timeout"))
    assert policy.retryable(Completion(None, error="x", status=429))
    assert not policy.retryable(Completion(None, error="x", status=400))
    with pytest.raises(ConfigError, match="engine.max_attempts must be an integer ≥ 1, got 'ten'"):
        RetryPolicy(max_attempts="ten")


def test_token_bucket_waits_for_what_it_lacks_and_obeys_the_server():
    bucket = TokenBucket(per_minute=60)  # one per second
    assert bucket.wait_time(60) == 0
    bucket.level = 0
    assert 0.9 < bucket.wait_time(1) <= 1.01
    assert 59 < bucket.wait_time(500) <= 60.01  # more than the capacity waits for a full bucket, not forever
    bucket = TokenBucket(per_minute=60)
    bucket.sync(remaining=0, reset_s=30.0)  # full in 30 s, but one request fits after 1 s
    assert 0.9 < bucket.wait_time(1) <= 1.0


def test_the_stricter_of_the_users_limit_and_the_servers_wins():
    configured = TokenBucket(per_minute=60)
    configured.sync(remaining=None, reset_s=None, limit=10_000)  # a looser server never loosens the user's rpm
    assert configured.capacity == 60 and configured.rate == 1
    configured.sync(remaining=None, reset_s=None, limit=30)  # a stricter one wins
    assert configured.capacity == 30 and configured.level <= 30
    limit = RateLimit(rpm=60)
    limit.observe({"limit_requests": 10_000, "remaining_requests": 9_999})
    assert limit.requests.capacity == 60
    learnt = TokenBucket(per_minute=100, configured=False)  # learnt from headers: follows the server
    learnt.sync(remaining=None, reset_s=None, limit=500)
    assert learnt.capacity == 500


def test_rate_limit_learns_limits_from_headers_and_settles_token_estimates():
    headers = ratelimit_headers(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert headers["reset_tokens_s"] == 360 and headers["reset_requests_s"] == pytest.approx(0.12)
    limit = RateLimit()
    limit.observe(headers)
    assert limit.requests.capacity == 500 and limit.tokens.capacity == 30000 and limit.tokens.level <= 100
    limit.settle(estimated=10, used=110)  # used 100 more than reserved: the bucket owes it
    assert limit.tokens.level < 1
    assert parse_reset("1h2m3.5s") == pytest.approx(3723.5) and parse_reset("2") == 2 and parse_reset("soon") is None


def test_rate_limit_paces_requests_once_the_burst_is_spent():
    async def go():
        limit = RateLimit(rpm=120)  # two per second after a burst of 120
        started = time.perf_counter()
        for _ in range(120):
            await limit.acquire(0)
        burst = time.perf_counter() - started
        for _ in range(2):
            await limit.acquire(0)
        return burst, time.perf_counter() - started - burst

    burst, paced = asyncio.run(go())
    assert burst < 0.5 and 0.8 < paced < 2.0


def test_journal_survives_a_torn_last_line_and_last_record_wins(tmp_path):
    journal = Journal(tmp_path)
    journal.append([make_candidate(None, error="HTTP 500"), make_candidate("ok", teacher="t2")])
    journal.append([make_candidate("fixed")])
    journal.close()
    with (tmp_path / "calls.jsonl").open("a") as f:
        f.write('{"call_id": "p1-t3", "prompt_id"')  # kill -9 mid-write
    reopened = Journal(tmp_path)
    assert reopened.answered("p1-t1") and reopened.get("p1-t1").text == "fixed"
    assert not reopened.answered("p1-t3") and reopened.get("p1-t3") is None and len(reopened) == 2
    assert reopened.tokens["t1"] == [20, 40]  # both t1 records count toward spend
    reopened.append([make_candidate("later", teacher="t4")])
    reopened.close()
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines) and len(lines) == 4
    assert {r.call_id: r.text for r in Journal(tmp_path).records()} == {"p1-t1": "fixed", "p1-t2": "ok", "p1-t4": "later"}


def test_a_corrupt_line_inside_the_journal_is_one_clear_error(tmp_path):
    (tmp_path / "calls.jsonl").write_text('{"call_id": "a"\n' + json.dumps(make_candidate("ok").__dict__) + "\n")
    with pytest.raises(ArbitrageError, match="is corrupt"):
        Journal(tmp_path)


def test_the_journal_counts_what_a_run_has_not_read_back(tmp_path):
    journal = Journal(tmp_path)
    journal.append([make_candidate("a", teacher="t1"), make_candidate("b", teacher="t2", prompt_id="p2")])
    journal.close()
    reopened = Journal(tmp_path)
    assert reopened.undelivered(["t1", "t2"]) == 2 and reopened.undelivered(["t1"]) == 1
    reopened.get("p1-t1")
    reopened.get("p1-t1")  # read twice, counted once
    assert reopened.undelivered(["t1", "t2"]) == 1 and reopened.undelivered(["t1"]) == 0


@pytest.mark.parametrize("kind", ["openai_compat", "litellm", "litellm_fast_path"])
def test_api_teachers_retry_429_5xx_and_garbage_then_succeed(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("FAKE_KEY", "sk-secret-value")
    script = Script(fail_first=1, fail_status=429, retry_after="0.01", garbage_first=1)
    with FakeOpenAI(script) as server:
        if kind == "openai_compat":
            teacher = OpenAICompatTeacher("t", "m", server.url, api_key_env="FAKE_KEY", max_concurrency=4)
        else:
            fast = kind == "litellm_fast_path"
            teacher = api_teacher("t", "openai/m", api_key_env="FAKE_KEY", api_base=server.url, max_concurrency=4, fast_path=fast)
            assert isinstance(teacher, OpenAICompatTeacher if fast else LiteLLMTeacher)
        teacher.check()
        journal = Journal(tmp_path)
        engine, _ = run_calls(teacher, prompts(5), journal)
        journal.close()
        auth = {r["auth"] for r in server.requests}
    records = list(journal.records())
    assert len(records) == 5 and all(r.ok and r.attempts == 3 for r in records)
    assert records[0].text.startswith("Answer ") and records[0].tokens_out > 0
    assert engine.stats["t"].retries == 10 and engine.stats["t"].sent == 15
    assert auth == {"Bearer sk-secret-value"}
    assert "sk-secret-value" not in (tmp_path / "calls.jsonl").read_text()


def test_non_retryable_and_exhausted_calls_become_failure_rows(tmp_path):
    ps = prompts(3)
    ps[0] = make_prompt(prompt_id="bad", text="POISON please")
    with FakeOpenAI(Script(always_fail_marker="POISON")) as server:
        journal = Journal(tmp_path)
        engine, results = run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal)
    bad = results[0]
    assert bad.error.startswith("HTTP 400") and bad.attempts == 1 and bad.last_status == 400 and not bad.final
    assert engine.stats["t"].failures == {"HTTP 400": 1}
    with FakeOpenAI(Script(fail_first=99, fail_status=503)) as server:
        journal = Journal(tmp_path / "b")
        run_calls(OpenAICompatTeacher("t", "m", server.url), prompts(2), journal)
        assert len(server.requests) == 2 * FAST.max_attempts
    assert all(r.error and r.attempts == FAST.max_attempts and r.last_status == 503 for r in journal.records())


def test_resume_skips_answered_calls_and_retries_failures(tmp_path):
    ps = prompts(4)
    with FakeOpenAI(Script(fail_first=99)) as server:
        journal = Journal(tmp_path)
        run_calls(OpenAICompatTeacher("t", "m", server.url), ps[:2], journal, RetryPolicy(max_attempts=1))
        journal.close()
    with FakeOpenAI() as server:
        journal = Journal(tmp_path)
        assert journal.failed_before == 2 and len(journal) == 0
        run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal)
        journal.close()
        first_pass = len(server.requests)
        journal = Journal(tmp_path)
        engine, delivered = run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal)
        assert len(server.requests) == first_pass == 4  # 2 failures retried + 2 new; then nothing
    assert engine.stats["t"].resumed == 4 and [c.prompt_id for c in delivered] == ["p0", "p1", "p2", "p3"]
    assert all(c.ok for c in delivered)


def test_an_empty_answer_is_a_final_failure_that_a_resume_does_not_send_again(tmp_path):
    ps = [make_prompt(prompt_id="e", text="EMPTY please"), *prompts(2)]
    with FakeOpenAI(Script(empty_marker="EMPTY")) as server:
        journal = Journal(tmp_path)
        engine, results = run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal)
        journal.close()
        assert results[0].error == "empty answer" and results[0].final and results[0].attempts == 1
        assert engine.stats["t"].failures == {"empty answer": 1}
        sent = len(server.requests)
        _, again = run_calls(OpenAICompatTeacher("t", "m", server.url), ps, Journal(tmp_path))
        assert len(server.requests) == sent and again[0].error == "empty answer"  # read back, not re-sent
        _, forced = run_calls(OpenAICompatTeacher("t", "m", server.url), ps, Journal(tmp_path, retry_failed=True))
        assert len(server.requests) == sent + 1 and forced[0].final  # retry_failed=true sends it once more


def test_unreachable_server_stops_the_engine_with_one_reason_and_sends_nothing(tmp_path):
    """The preflight finds the closed port before any prompt is sent (the run then ends in one line)."""
    journal = Journal(tmp_path)
    engine, results = run_calls(
        OpenAICompatTeacher("t", "m", "http://127.0.0.1:9", timeout_s=2),
        prompts(2),
        journal,
        RetryPolicy(max_attempts=2, base_delay_s=0.01),
    )
    assert isinstance(engine.error, TeacherUnusable) and "cannot connect to http://127.0.0.1:9" in str(engine.error)
    assert all(r.error for r in results) and not list(journal.records())  # unsent, so a rerun sends them


def test_calls_stream_in_no_faster_than_the_teacher_takes_them(tmp_path):
    """Backpressure: a 10,000-call generator is pulled only a queue's worth ahead of the workers."""
    pulled = 0

    def source(teacher):
        nonlocal pulled
        key = teacher_key(teacher)
        for i in range(10_000):
            pulled += 1
            yield make_call(make_prompt(prompt_id=f"p{i}", text=f"Q {i}"), "t", key)

    async def go(server):
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=4)
        done = []
        async with Engine({"t": teacher}, Journal(tmp_path), FAST) as engine:
            async for batch in engine.stream(source(teacher)):
                done += batch
                if len(done) >= 40:
                    engine.stop("enough")
        return engine, done

    with FakeOpenAI(Script(latency_s=0.02)) as server:
        engine, done = asyncio.run(go(server))
        sent = len(server.requests)
    # The queue holds 2 × concurrency; everything pulled was either answered, in flight, or queued.
    assert engine.stop_reason == "enough" and pulled <= sent + 2 * 4 + 2
    assert len(done) == sent and len(list(Journal(tmp_path).records())) == sent


def test_a_stopped_stream_still_reads_back_every_settled_call(tmp_path):
    """After a kill -9 the journal holds answers that are no prefix of the prompt order; a rerun
    stopped at once (here: a budget already spent) must still hand back every one of them."""
    ps = prompts(40)
    price = Price(input_per_token=0.001, output_per_token=0.001, source="test")
    with FakeOpenAI() as server:
        teacher = OpenAICompatTeacher("t", "m", server.url, price=price)
        journal = Journal(tmp_path)
        run_calls(teacher, ps[::3], journal)  # every third prompt answered
        journal.close()
        answered = len(ps[::3])

        async def rerun():
            spent = Budget(0.01, spent_before=1.0)  # over the cap before anything is sent
            out = []
            async with Engine({"t": teacher}, Journal(tmp_path), FAST, spent) as engine:
                async for batch in engine.stream(calls(teacher, ps)):
                    out += batch
            return engine, out

        sent = len(server.requests)
        engine, out = asyncio.run(rerun())
        assert len(server.requests) == sent  # nothing sent
    assert engine.stop_reason == "budget" and len(out) == answered and all(f.candidate.ok for f in out)
    assert engine.stats["t"].resumed == answered


def test_budget_stops_sending_and_a_higher_budget_continues(tmp_path):
    price = Price(input_per_token=0.0005, output_per_token=0.001, source="test")
    ps = prompts(30)
    with FakeOpenAI() as server:
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=2, price=price, sampling={"max_tokens": 20})
        journal = Journal(tmp_path)
        engine, _ = run_calls(teacher, ps, journal, budget=Budget(0.3))
        journal.close()
        first = len(server.requests)
        assert engine.stop_reason == "budget" and 0 < first < 30
        assert engine.budget.total <= 0.3  # in-flight calls hold their worst case: never over the cap
        journal = Journal(tmp_path)
        spent_before = sum(price.cost(*tokens) for tokens in journal.tokens.values())
        engine, _ = run_calls(teacher, ps, journal, budget=Budget(100, spent_before))
        assert engine.stop_reason is None and engine.stats["t"].resumed == first
        assert len(server.requests) == 30  # every prompt answered once across the two runs


@pytest.mark.parametrize(
    "text", ["解释一下光合作用的第{i}个阶段是怎样进行的，请详细说明。", "Explain topic number {i} in plain words."]
)
def test_the_budget_holds_whatever_the_script_and_however_much_the_server_bills(tmp_path, text):
    """Chinese is ~1 token per character (chars/4 undercounted it 4×), and this server bills every
    answer at max_tokens: with real input and output prices the spend still never passes the cap."""
    price = Price(input_per_token=2e-5, output_per_token=6e-5, source="test")
    with FakeOpenAI(Script(tokens_per_char=1.0)) as server:
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=8, price=price, sampling={"max_tokens": 50})
        engine, results = run_calls(teacher, prompts(200, text), Journal(tmp_path), budget=Budget(0.05))
        sent = len(server.requests)
    assert engine.stop_reason == "budget" and 0 < sent < 200
    assert engine.budget.total <= 0.05 and engine.budget.held == 0
    assert engine.budget.total > 0.05 * 0.5  # the bound is safe without wasting most of the budget
    assert sum(1 for r in results if r.ok) == sent and all(r.error.startswith("not sent") for r in results if not r.ok)


def test_run_returns_unsent_calls_as_failures_that_are_not_journaled(tmp_path):
    with FakeOpenAI() as server:
        teacher = OpenAICompatTeacher("t", "m", server.url)

        async def go():
            async with Engine({"t": teacher}, Journal(tmp_path), FAST) as engine:
                engine.stop("interrupted")
                return await engine.run(calls(teacher, prompts(3)))

        results = asyncio.run(go())
        assert not server.requests
    assert [r.error for r in results] == ["not sent: stopped (interrupted)"] * 3
    assert not list(Journal(tmp_path).records())


def test_missing_api_key_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable NOPE_KEY is not set — export NOPE_KEY"):
        api_teacher("api", "openai/gpt-4o-mini", api_key_env="NOPE_KEY").check()
    with pytest.raises(ConfigError, match="needs a provider prefix"):
        api_teacher("api", "gpt-4o-mini", api_key_env=None)


def test_a_failing_call_source_lets_calls_in_flight_finish_then_reports_the_error(tmp_path):
    async def source(teacher):
        key = teacher_key(teacher)
        for i in range(6):
            yield make_call(make_prompt(prompt_id=f"p{i}", text=f"Q {i}"), "t", key)
        await asyncio.sleep(0.3)  # the first requests are in flight (a call still waiting for the teacher's start is not)
        raise ConfigError("prompts.jsonl line 7: needs 'prompt'")

    async def go(server):
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=2)
        done = []
        async with Engine({"t": teacher}, Journal(tmp_path), FAST) as engine:
            async for batch in engine.stream(source(teacher)):
                done += batch
        return engine, done

    with FakeOpenAI(Script(latency_s=0.5)) as server:
        engine, done = asyncio.run(go(server))
        sent = len(server.requests)
    assert isinstance(engine.error, ConfigError) and "line 7" in str(engine.error) and engine.stop_reason.startswith("error")
    journaled = list(Journal(tmp_path).records())
    assert sent > 0 and len(journaled) == sent == len(done) and all(r.ok for r in journaled)  # nothing sent was lost


def test_a_teacher_that_cannot_start_stops_the_run_with_its_error(tmp_path):
    class Broken(OpenAICompatTeacher):
        async def start(self):
            raise RuntimeError("no GPU memory left")

    async def go():
        teacher = Broken("t", "m", "http://127.0.0.1:9")
        async with Engine({"t": teacher}, Journal(tmp_path), FAST) as engine:
            out = [f async for batch in engine.stream(calls(teacher, prompts(5))) for f in batch]
        return engine, out

    engine, out = asyncio.run(asyncio.wait_for(go(), 30))  # ends, never hangs
    assert str(engine.error) == "no GPU memory left" and out == [] and engine.stats["t"].unsent == 5


def test_the_engine_learns_a_servers_rate_limit_from_its_headers(tmp_path):
    """The server allows 120 requests/minute and says so in x-ratelimit-* headers, which nobody
    configured here: the engine adopts the limit and paces itself instead of hammering into 429s."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import fake_server

    url, stop = fake_server.start_in_thread(rpm=120, latency_ms=5)
    try:
        teacher = OpenAICompatTeacher("t", "fake", url, max_concurrency=8)
        started = time.perf_counter()
        engine, _ = run_calls(teacher, prompts(126), Journal(tmp_path), RetryPolicy(max_attempts=6, base_delay_s=0.05))
        elapsed = time.perf_counter() - started
        stats = stop.server.stats()
    finally:
        stop()
    records = list(Journal(tmp_path).records())
    assert len(records) == 126 and all(r.ok for r in records)
    assert 1.5 < elapsed < 10  # the 6 requests past the burst of 120 wait ~0.5 s each (2 per second)
    assert stats["rate_limited_429"] <= 8  # at most what was in flight before the first headers came back
    assert engine.stats["t"].retries == stats["rate_limited_429"]


def test_a_read_only_journal_leaves_a_torn_tail_for_its_writer(tmp_path):
    """`arbitrage estimate` reads a journal a live run may be writing: it must never cut it."""
    journal = Journal(tmp_path)
    journal.append([make_candidate("ok"), make_candidate("also", teacher="t2")])
    journal.close()
    with (tmp_path / "calls.jsonl").open("a") as f:
        f.write('{"call_id": "p1-t3", "prompt_id"')  # a record being written right now
    before = (tmp_path / "calls.jsonl").read_bytes()
    reader = Journal(tmp_path, read_only=True)
    assert reader.answered("p1-t1") and reader.get("p1-t2").text == "also" and len(reader) == 2
    assert {r.call_id for r in reader.records()} == {"p1-t1", "p1-t2"}
    reader.close()
    assert (tmp_path / "calls.jsonl").read_bytes() == before


def test_journal_shards_are_read_by_every_journal_and_written_by_one(tmp_path):
    """Ray actors append to shards of their own; every journal (actors, the driver, a local rerun)
    reads them all. A call settled in any shard is settled; another writer's torn last line is read
    up to, never cut (it may be a live actor's line in progress)."""
    ok = Candidate("c1", "p", "t", "answer", "stop", 1, 1, 0.1, 1)
    failed = Candidate("c2", "p", "t", None, None, 0, 0, 0.1, 4, error="HTTP 503")
    a = Journal(tmp_path, shard="t-a")
    a.append([ok, failed])
    a.close()
    assert not (tmp_path / "calls-t-b.jsonl").exists() or (tmp_path / "calls-t-b.jsonl").stat().st_size == 0
    b = Journal(tmp_path, shard="t-b")  # a replacement actor: reads a's shard first
    assert b.answered("c1") and not b.answered("c2") and b.failed_before == 1
    b.append([Candidate("c2", "p", "t", "later", "stop", 1, 1, 0.1, 5)])
    b.close()
    with (tmp_path / "calls-t-a.jsonl").open("ab") as torn:
        torn.write(b'{"call_id": "c3", "prom')  # a writer killed mid-line
    size = (tmp_path / "calls-t-a.jsonl").stat().st_size
    local = Journal(tmp_path)  # a local rerun of the folder
    assert local.answered("c1") and local.answered("c2") and not local.answered("c3")
    assert local.get("c2").text == "later" and local.failed_before == 0
    assert {r.call_id: r.text for r in local.records()} == {"c1": "answer", "c2": "later"}
    assert (tmp_path / "calls-t-a.jsonl").stat().st_size == size  # not its file: not cut
    local.close()
    assert Journal.exists(tmp_path) and not Journal.exists(tmp_path / "none")


def test_a_failure_in_the_local_file_never_unsettles_a_call_a_ray_shard_answered(tmp_path):
    """Local run: call K fails (HTTP 500, attempts spent). A Ray actor's shard (named as
    ray_stages.Stage names it: `calls-<teacher>-<8 hex>.jsonl`) answers K. A local resume of the
    folder sends nothing and keeps the shard's answer."""
    ps = prompts(3)
    with FakeOpenAI(Script(fail_first=1, fail_status=500)) as server:
        teacher = OpenAICompatTeacher("t", "m", server.url)
        _, first = run_calls(teacher, ps, Journal(tmp_path), RetryPolicy(max_attempts=1))
        assert all(not c.ok and "HTTP 500" in c.error for c in first)
        k = calls(teacher, ps)[0]
        shard = Journal(tmp_path, shard="t-0a1b2c3d")  # the Ray actor reads calls.jsonl first, then answers K
        assert not shard.answered(k.call_id)
        shard.append([Candidate(k.call_id, k.prompt.prompt_id, "t", "the shard's answer", "stop", 5, 7, 0.1, 2)])
        shard.close()
        assert (tmp_path / "calls-t-0a1b2c3d.jsonl").exists()
        sent = len(server.requests)
        local = Journal(tmp_path)
        assert local.answered(k.call_id) and local.failed_before == 2
        assert {r.call_id: r.text for r in local.records()}[k.call_id] == "the shard's answer"
        _, again = run_calls(OpenAICompatTeacher("t", "m", server.url), ps[:1], local)
        assert len(server.requests) == sent  # K was not sent again
    assert again[0].text == "the shard's answer"


def test_journal_get_checks_the_record_is_the_calls(tmp_path):
    journal = Journal(tmp_path)
    journal.append([make_candidate("a", prompt_id="p1")])
    journal.close()
    reader = Journal(tmp_path)
    # the file rewritten under the run: the same offset now holds another call's record
    (tmp_path / "calls.jsonl").write_text(json.dumps(vars(make_candidate("b", prompt_id="p2"))) + "\n")
    assert reader.answered("p1-t1") and reader.get("p1-t1") is None  # not p2's answer: sent again
    reader.close()


def refused_first(n, refused):
    """n prompts, the first `refused` of them carrying the fake's always-400 marker."""
    return [
        make_prompt(prompt_id=f"p{i}", text=f"{'OVERLONG ' if i < refused else ''}Explain topic number {i}.") for i in range(n)
    ]


def test_fast_400s_on_the_leading_prompts_do_not_stop_a_healthy_teacher(tmp_path):
    """The first 6 prompts are refused at once (vLLM and an over-long prompt); the others take a
    while to answer. The breaker waits for answers before blaming the teacher."""
    with FakeOpenAI(Script(latency_s=0.3, always_fail_marker="OVERLONG")) as server:
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=4)
        engine, results = run_calls(teacher, refused_first(20, 6), Journal(tmp_path))
    assert engine.error is None and engine.stop_reason is None
    assert [c.ok for c in results] == [False] * 6 + [True] * 14
    assert all("HTTP 400" in c.error for c in results[:6])


def test_400s_on_every_prompt_stop_the_teacher_after_a_window_and_breaker_false_sends_every_one(tmp_path):
    with FakeOpenAI(Script(always_fail_marker="Explain")) as server:
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=4)
        engine, _ = run_calls(teacher, prompts(200), Journal(tmp_path / "a"))
        assert isinstance(engine.error, TeacherUnusable) and "engine.breaker=false" in str(engine.error)
        assert 13 <= len(server.requests) <= 13 + 4  # the window (5 + 2 × 4), plus what was in flight
        sent = len(server.requests)
        off = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, breaker=False)
        engine, results = run_calls(OpenAICompatTeacher("t", "m", server.url), prompts(30), Journal(tmp_path / "b"), off)
        assert engine.error is None and len(server.requests) == sent + 30 and not any(c.ok for c in results)
    with pytest.raises(ConfigError, match="engine.breaker must be true or false"):
        RetryPolicy(breaker="no")


def test_a_failed_request_gives_its_token_estimate_back():
    async def go():
        limit = RateLimit(tpm=1000)
        await limit.acquire(800)
        limit.settle(800, 0, failed=True)  # a 429 or a 5xx with no usage: nothing was used
        started = time.perf_counter()
        await limit.acquire(800)  # without the refund: ~36 s until the bucket has 800 again
        waited = time.perf_counter() - started
        limit.settle(800, 0)  # an answer without usage keeps its estimate
        return waited, limit.tokens.level

    waited, level = asyncio.run(go())
    assert waited < 0.5 and level < 300


def test_a_stop_during_a_rate_limit_wait_sends_nothing_more(tmp_path):
    """rpm=2: two requests, then 30 s until the next. A stop meanwhile ends the wait: no request
    goes out after the stop, and the stream ends at once."""
    with FakeOpenAI() as server:
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=4, rpm=2)

        async def go():
            async with Engine({"t": teacher}, Journal(tmp_path), FAST) as engine:
                got = []
                started = time.perf_counter()
                async for batch in engine.stream(calls(teacher, prompts(6))):
                    got += batch
                    if len(got) == 2:
                        await asyncio.sleep(0.3)  # the other workers are waiting on the bucket now
                        engine.stop("test")
                return got, time.perf_counter() - started

        got, took = asyncio.run(go())
        assert len(server.requests) == 2 and len(got) == 2 and took < 5
    assert {r.call_id for r in Journal(tmp_path).records()} == {f.call.call_id for f in got}


def test_completion_tokens_billed_over_max_tokens_are_held_for_from_then_on(tmp_path):
    """A server bills 150 hidden reasoning tokens on top of each answer, over max_tokens=50: after the
    first such answer every call holds the larger amount, so the spend stays within the cap."""
    price = Price(input_per_token=0.0, output_per_token=1e-4, source="test")
    script = Script(hidden_reasoning=150, latency_s=0.02, answers={"m": "an answer of the same length every time"})
    with FakeOpenAI(script) as server:
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=8, price=price, sampling={"max_tokens": 50})
        engine, _ = run_calls(teacher, prompts(200), Journal(tmp_path), budget=Budget(0.6))
        sent = len(server.requests)
    assert engine.stop_reason == "budget" and 8 < sent < 200
    assert engine.budget.total <= 0.6 and engine.budget.held == pytest.approx(0, abs=1e-12)
