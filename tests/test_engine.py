import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from conftest import make_candidate, make_prompt
from fake_openai import FakeOpenAI, Script

from arbitrage.cost import Price
from arbitrage.engine import Engine, Journal, RateLimit, RetryPolicy, TokenBucket, execute, make_call
from arbitrage.errors import ArbitrageError, ConfigError
from arbitrage.rows import Completion
from arbitrage.teachers.litellm_api import LiteLLMTeacher
from arbitrage.teachers.openai_compat import OpenAICompatTeacher, parse_reset, ratelimit_headers

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05)


def prompts(n):
    return [make_prompt(prompt_id=f"p{i}", text=f"Explain topic number {i}.") for i in range(n)]


def run_calls(teacher, ps, journal, policy=FAST, **options):
    async def go():
        await teacher.start()
        try:
            calls = [make_call(p, teacher) for p in ps]
            return await execute(calls, {teacher.name: teacher}, journal, policy, progress=False, **options)
        finally:
            await teacher.close()

    return asyncio.run(go())


def test_retry_policy_backoff_and_retry_after():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    assert policy.delay(1, retry_after=2.5) == 2.5
    assert policy.delay(1, retry_after=100) == 8.0
    assert all(0 <= policy.delay(4, None) <= 8.0 for _ in range(100))
    assert policy.retryable(Completion(None, error="timeout"))
    assert policy.retryable(Completion(None, error="x", status=429))
    assert not policy.retryable(Completion(None, error="x", status=400))


def test_token_bucket_waits_for_what_it_lacks_and_obeys_the_server():
    bucket = TokenBucket(per_minute=60)  # one per second
    assert bucket.wait_time(60) == 0
    bucket.level = 0
    assert 0.9 < bucket.wait_time(1) <= 1.01
    assert 59 < bucket.wait_time(500) <= 60.01  # more than the capacity waits for a full bucket, not forever
    bucket = TokenBucket(per_minute=60)
    bucket.sync(remaining=0, reset_s=30.0)  # full in 30 s, but one request fits after 1 s
    assert 0.9 < bucket.wait_time(1) <= 1.0
    bucket.sync(remaining=None, reset_s=None, limit=120)
    assert bucket.capacity == 120 and bucket.rate == 2


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


@pytest.mark.parametrize("kind", ["openai_compat", "litellm", "litellm_fast_path"])
def test_api_teachers_retry_429_5xx_and_garbage_then_succeed(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("FAKE_KEY", "sk-secret-value")
    script = Script(fail_first=1, fail_status=429, retry_after="0.01", garbage_first=1)
    with FakeOpenAI(script) as server:
        if kind == "openai_compat":
            teacher = OpenAICompatTeacher("t", "m", server.url, api_key_env="FAKE_KEY", max_concurrency=4)
        else:
            fast = kind == "litellm_fast_path"
            teacher = LiteLLMTeacher(
                "t", "openai/m", api_key_env="FAKE_KEY", api_base=server.url, max_concurrency=4, fast_path=fast
            )
            assert teacher.direct == fast
        teacher.check()
        journal = Journal(tmp_path)
        engine = run_calls(teacher, prompts(5), journal)
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
        engine = run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal)
    bad = {r.call_id: r for r in journal.records()}[make_call(ps[0], OpenAICompatTeacher("t", "m", server.url)).call_id]
    assert bad.error.startswith("HTTP 400") and bad.attempts == 1 and bad.last_status == 400
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
        delivered = []
        engine = run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal, on_done=delivered.append)
        assert len(server.requests) == first_pass == 4  # 2 failures retried + 2 new; then nothing
    assert engine.stats["t"].resumed == 4 and sorted(c.prompt_id for c in delivered) == ["p0", "p1", "p2", "p3"]
    assert all(c.ok for c in delivered)


def test_unreachable_server_is_a_failure_not_a_crash(tmp_path):
    journal = Journal(tmp_path)
    engine = run_calls(
        OpenAICompatTeacher("t", "m", "http://127.0.0.1:9", timeout_s=2),
        prompts(2),
        journal,
        RetryPolicy(max_attempts=2, base_delay_s=0.01),
    )
    assert all(r.error and "Connect" in r.error for r in journal.records())
    assert engine.stats["t"].failures == {"connection": 2}


def test_calls_stream_in_no_faster_than_the_teacher_takes_them(tmp_path):
    """Backpressure: a 10,000-call generator is pulled only a queue's worth ahead of the workers."""
    pulled = 0

    def calls(teacher):
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield make_call(make_prompt(prompt_id=f"p{i}", text=f"Q {i}"), teacher)

    async def go(server):
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=4)
        engine = Engine({"t": teacher}, Journal(tmp_path), FAST, progress=False)
        done = []

        def on_done(candidate):
            done.append(candidate)
            if len(done) == 40:
                engine.stop("enough")

        await teacher.start()
        await engine.run(calls(teacher), on_done)
        await teacher.close()
        return engine, done

    with FakeOpenAI(Script(latency_s=0.02)) as server:
        engine, done = asyncio.run(go(server))
        sent = len(server.requests)
    # The queue holds 2 × concurrency; everything pulled was either answered, in flight, or queued.
    assert engine.stop_reason == "enough" and pulled <= sent + 2 * 4 + 2
    assert len(done) == sent and len(list(Journal(tmp_path).records())) == sent


def test_budget_stops_sending_and_a_higher_budget_continues(tmp_path):
    price = Price(input_per_token=0.0, output_per_token=0.001, source="test")  # $0.001 per output token
    ps = prompts(30)
    with FakeOpenAI() as server:
        teacher = OpenAICompatTeacher("t", "m", server.url, max_tokens=20, max_concurrency=2)
        journal = Journal(tmp_path)
        engine = run_calls(teacher, ps, journal, prices={"t": price}, budget_usd=0.1)
        journal.close()
        first = len(server.requests)
        assert engine.stop_reason == "budget" and 0 < first < 30
        assert engine.spent_usd <= 0.1  # in-flight calls are reserved at max_tokens: never over the cap
        journal = Journal(tmp_path)
        engine = run_calls(teacher, ps, journal, prices={"t": price}, budget_usd=100)
        assert engine.stop_reason is None and engine.stats["t"].resumed == first
        assert len(server.requests) == 30  # every prompt answered once across the two runs


def test_missing_api_key_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable NOPE_KEY is not set — export NOPE_KEY"):
        LiteLLMTeacher("api", "openai/gpt-4o-mini", api_key_env="NOPE_KEY").check()
    with pytest.raises(ConfigError, match="needs a provider prefix"):
        LiteLLMTeacher("api", "gpt-4o-mini", api_key_env=None).check()


def test_a_failing_call_source_lets_calls_in_flight_finish_then_raises(tmp_path):
    def calls(teacher):
        for i in range(6):
            yield make_call(make_prompt(prompt_id=f"p{i}", text=f"Q {i}"), teacher)
        raise ConfigError("prompts.jsonl line 7: needs 'prompt'")

    async def go(server):
        teacher = OpenAICompatTeacher("t", "m", server.url, max_concurrency=2)
        engine = Engine({"t": teacher}, Journal(tmp_path), FAST, progress=False)
        done = []
        await teacher.start()
        try:
            await engine.run(calls(teacher), done.append)
        finally:
            await teacher.close()

    with FakeOpenAI(Script(latency_s=0.05)) as server:
        with pytest.raises(ConfigError, match="line 7"):
            asyncio.run(go(server))
        sent = len(server.requests)
    journaled = list(Journal(tmp_path).records())
    assert sent > 0 and len(journaled) == sent and all(r.ok for r in journaled)  # nothing sent was lost


def test_the_engine_learns_a_servers_rate_limit_from_its_headers(tmp_path):
    """The server allows 120 requests/minute and says so in x-ratelimit-* headers, which nobody
    configured here: the engine adopts the limit and paces itself instead of hammering into 429s."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import fake_server

    url, stop = fake_server.start_in_thread(rpm=120, latency_ms=5)
    try:
        teacher = OpenAICompatTeacher("t", "fake", url, max_concurrency=8)
        started = time.perf_counter()
        engine = run_calls(teacher, prompts(126), Journal(tmp_path), RetryPolicy(max_attempts=6, base_delay_s=0.05))
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
