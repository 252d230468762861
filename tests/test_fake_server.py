"""bench/fake_server.py: deterministic answers, injected faults and /stats, against a real server."""

import hashlib
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import fake_server  # noqa: E402


@pytest.fixture
def serve():
    stops = []

    def start(**options):
        url, stop = fake_server.start_in_thread(**options)
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


def post(url, model="m", content="What is 2+2?", timeout=5.0):
    body = {"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}]}
    req = urllib.request.Request(
        url + "/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_answer_is_the_digest(serve):
    url = serve()
    status, _, raw = post(url, model="teacher-a", content="What is 2+2?")
    assert status == 200
    data = json.loads(raw)
    digest = hashlib.sha256(b"teacher-a\nWhat is 2+2?").hexdigest()[:16]
    assert data["choices"][0]["message"] == {"role": "assistant", "content": f"answer {digest}"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["model"] == "teacher-a"
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert fake_server.answer_text("teacher-a", "What is 2+2?") == f"answer {digest}"
    assert get_json(url + "/models")["data"][0]["id"] == "fake"


def test_answer_words_pad_deterministically(serve):
    url = serve(answer_words=5)
    text = json.loads(post(url)[2])["choices"][0]["message"]["content"]
    assert text == fake_server.answer_text("m", "What is 2+2?", answer_words=5)
    assert len(text.split()) == 7


def test_error_rate_one_gives_500(serve):
    url = serve(error_rate=1.0)
    assert post(url)[0] == 500
    assert fake_server.fetch_stats(url)["by_status"] == {"500": 1}


def test_burst_429_has_both_retry_headers(serve):
    url = serve(burst_429_every=1, burst_429_len=1, retry_after_ms=250)
    assert post(url)[0] == 200  # cycle: 1 served, then 1 rejected
    status, headers, _ = post(url)
    assert status == 429
    assert headers["Retry-After"] == "0.25"
    assert headers["retry-after-ms"] == "250"
    assert post(url)[0] == 200


def test_rpm_sends_ratelimit_headers_and_429(serve):
    url = serve(rpm=2)
    status, headers, _ = post(url)
    assert status == 200 and headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"
    assert post(url)[0] == 200
    status, headers, _ = post(url)
    assert status == 429 and float(headers["Retry-After"]) > 1  # one request refills in 30 s


def test_garbage_is_truncated_json(serve):
    url = serve(garbage_rate=1.0)
    status, _, raw = post(url)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert fake_server.fetch_stats(url)["garbage"] == 1


def test_hang_needs_a_client_timeout(serve):
    url = serve(hang_rate=1.0)
    with pytest.raises(TimeoutError):
        post(url, timeout=0.3)
    assert fake_server.fetch_stats(url)["hangs"] == 1


def test_stats_count_and_reset(serve):
    url = serve()
    for content in ("a", "b", "a", "a"):
        assert post(url, content=content)[0] == 200
    stats = fake_server.fetch_stats(url)
    assert stats["total"] == 4 and stats["ok"] == 4
    assert stats["by_status"] == {"200": 4}
    assert stats["unique_ok"] == 2
    assert stats["repeated_ok"] == 1  # "a" answered 3 times
    fake_server.reset_stats(url)
    stats = fake_server.fetch_stats(url)
    assert stats["total"] == 0 and stats["unique_ok"] == 0 and stats["by_status"] == {}


def test_faults_are_seeded_and_a_retry_can_succeed(serve):
    url = serve(error_rate=0.5, seed=1)
    statuses = [post(url, content="same prompt")[0] for _ in range(20)]
    assert set(statuses) == {200, 500}
    url2 = serve(error_rate=0.5, seed=1)
    assert [post(url2, content="other prompt")[0] for _ in range(20)] == statuses


def test_cli_prints_listening_line_first():
    url, proc = fake_server.spawn("--latency-ms", "0")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert post(url)[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
