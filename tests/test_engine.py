import asyncio
import json

import pytest
from conftest import make_candidate, make_prompt
from fake_openai import FakeOpenAI, Script

from arbitrage.engine import Journal, RetryPolicy, execute, make_call
from arbitrage.errors import ConfigError
from arbitrage.rows import Completion
from arbitrage.teachers.litellm_api import LiteLLMTeacher
from arbitrage.teachers.openai_compat import OpenAICompatTeacher

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05)


def prompts(n):
    return [make_prompt(prompt_id=f"p{i}", text=f"Explain topic number {i}.") for i in range(n)]


def run_calls(teacher, ps, journal, policy=FAST):
    async def go():
        await teacher.start()
        try:
            await execute([make_call(p, teacher) for p in ps], {teacher.name: teacher}, journal, policy)
        finally:
            await teacher.close()

    asyncio.run(go())


def test_retry_policy_backoff_and_retry_after():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    assert policy.delay(1, retry_after=2.5) == 2.5
    assert policy.delay(1, retry_after=100) == 8.0
    assert all(0 <= policy.delay(4, None) <= 8.0 for _ in range(100))
    assert policy.retryable(Completion(None, error="timeout"))
    assert policy.retryable(Completion(None, error="x", status=429))
    assert not policy.retryable(Completion(None, error="x", status=400))


def test_journal_survives_a_torn_last_line_and_last_record_wins(tmp_path):
    journal = Journal(tmp_path)
    journal.append([make_candidate(None, error="HTTP 500"), make_candidate("ok", teacher="t2")])
    journal.append([make_candidate("fixed")])
    journal.close()
    with (tmp_path / "calls.jsonl").open("a") as f:
        f.write('{"call_id": "p1-t3", "prompt_id"')  # kill -9 mid-write
    reopened = Journal(tmp_path)
    assert reopened.answered("p1-t1") and reopened.records["p1-t1"].text == "fixed"
    assert "p1-t3" not in reopened.records
    reopened.append([make_candidate("later", teacher="t4")])
    reopened.close()
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines) and len(lines) == 3


@pytest.mark.parametrize("kind", ["openai_compat", "litellm"])
def test_api_teachers_retry_429_5xx_and_garbage_then_succeed(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("FAKE_KEY", "sk-secret-value")
    script = Script(fail_first=1, fail_status=429, retry_after="0.01", garbage_first=1)
    with FakeOpenAI(script) as server:
        if kind == "openai_compat":
            teacher = OpenAICompatTeacher("t", "m", server.url, api_key_env="FAKE_KEY", max_concurrency=4)
        else:
            teacher = LiteLLMTeacher("t", "openai/m", api_key_env="FAKE_KEY", api_base=server.url, max_concurrency=4)
        teacher.check()
        journal = Journal(tmp_path)
        run_calls(teacher, prompts(5), journal)
        journal.close()
        auth = {r["auth"] for r in server.requests}
    records = list(journal.records.values())
    assert len(records) == 5 and all(r.ok and r.attempts == 3 for r in records)
    assert records[0].text.startswith("Answer ") and records[0].tokens_out > 0
    assert auth == {"Bearer sk-secret-value"}
    assert "sk-secret-value" not in (tmp_path / "calls.jsonl").read_text()


def test_non_retryable_and_exhausted_calls_become_failure_rows(tmp_path):
    ps = prompts(3)
    ps[0] = make_prompt(prompt_id="bad", text="POISON please")
    with FakeOpenAI(Script(always_fail_marker="POISON")) as server:
        journal = Journal(tmp_path)
        run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal)
    bad = journal.records[make_call(ps[0], OpenAICompatTeacher("t", "m", server.url)).call_id]
    assert bad.error.startswith("HTTP 400") and bad.attempts == 1 and bad.last_status == 400
    with FakeOpenAI(Script(fail_first=99, fail_status=503)) as server:
        journal = Journal(tmp_path / "b")
        run_calls(OpenAICompatTeacher("t", "m", server.url), prompts(2), journal)
        assert len(server.requests) == 2 * FAST.max_attempts
    assert all(r.error and r.attempts == FAST.max_attempts and r.last_status == 503 for r in journal.records.values())


def test_resume_skips_answered_calls_and_retries_failures(tmp_path):
    ps = prompts(4)
    with FakeOpenAI(Script(fail_first=99)) as server:
        journal = Journal(tmp_path)
        run_calls(OpenAICompatTeacher("t", "m", server.url), ps[:2], journal, RetryPolicy(max_attempts=1))
        journal.close()
    with FakeOpenAI() as server:
        journal = Journal(tmp_path)
        run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal)
        journal.close()
        first_pass = len(server.requests)
        journal = Journal(tmp_path)
        run_calls(OpenAICompatTeacher("t", "m", server.url), ps, journal)
        assert len(server.requests) == first_pass == 4  # 2 failures retried + 2 new; then nothing
    assert len(journal.records) == 4 and all(r.ok for r in journal.records.values()), journal.records


def test_unreachable_server_is_a_failure_not_a_crash(tmp_path):
    journal = Journal(tmp_path)
    run_calls(
        OpenAICompatTeacher("t", "m", "http://127.0.0.1:9", timeout_s=2),
        prompts(2),
        journal,
        RetryPolicy(max_attempts=2, base_delay_s=0.01),
    )
    assert all(r.error and "Connect" in r.error for r in journal.records.values())


def test_missing_api_key_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable NOPE_KEY is not set — export NOPE_KEY"):
        LiteLLMTeacher("api", "openai/gpt-4o-mini", api_key_env="NOPE_KEY").check()
    with pytest.raises(ConfigError, match="needs a provider prefix"):
        LiteLLMTeacher("api", "gpt-4o-mini", api_key_env=None).check()
