"""Fail fast and clearly, through the CLI as a subprocess: a server that rejects every call, a run
that produced nothing, a mistyped setting, folder and file trouble. Each case: the exit code, one
line naming the fix, and the folder's data intact."""

import json
import os
import resource
import signal
import subprocess
import sys
import time

import datasets
import pytest
from fake_openai import FakeOpenAI, Script

N = 60


def prompts_file(tmp_path, n=N, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"prompt": f"Explain topic number {i}."}) + "\n" for i in range(n)))
    return path


def args(url, out, prompts, *extra, key_env="FAKE_KEY"):
    return [
        "teacher=[openai_compat]",
        f"teacher.openai_compat.base_url={url}",
        "teacher.openai_compat.model=good",
        f"teacher.openai_compat.api_key_env={key_env}",
        "teacher.openai_compat.max_concurrency=4",
        "source=jsonl",
        f"source.path={prompts}",
        f"n_prompts={N}",
        "filters=none",
        "diversity.embedding_spread=false",
        "progress=false",
        "report=false",
        "engine.base_delay_s=0.01",
        f"out={out}",
        *extra,
    ]


def arbitrage(*a, **popen):
    env = {**os.environ, "FAKE_KEY": "sk-test", **popen.pop("env", {})}
    return subprocess.run(
        [sys.executable, "-m", "arbitrage.cli", *a], capture_output=True, text=True, timeout=300, env=env, **popen
    )


def one_line(result, code=2):
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[")]  # [hh:mm:ss] log lines
    assert result.returncode == code, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


# --- servers that reject every call --------------------------------------------------------------------


def test_a_bad_key_costs_no_prompt_and_names_the_key(tmp_path):
    script = Script(fail_first=99, fail_status=401, models_status=401, error_message="Incorrect API key provided")
    with FakeOpenAI(script) as server:
        line = one_line(arbitrage(*args(server.url, tmp_path / "run", prompts_file(tmp_path))))
        assert server.gets == ["/v1/models"] and not server.requests  # the preflight caught it: no prompt sent
    host = server.url.split("//")[1].split("/")[0]
    assert f"teacher 'openai_compat': HTTP 401 from {host} \"Incorrect API key provided\" — check $FAKE_KEY" in line


def test_a_server_that_refuses_every_call_is_stopped_by_the_circuit_breaker_and_a_rerun_retries(tmp_path):
    """/models works but every completion is a 401: a few calls, not every prompt, then one line.
    The failures stay journaled; once the server accepts the key, the same command finishes."""
    script = Script(fail_first=99, fail_status=401, error_message="key not allowed for this model")
    out, prompts = tmp_path / "run", prompts_file(tmp_path)
    with FakeOpenAI(script) as server:
        line = one_line(arbitrage(*args(server.url, out, prompts)))
        assert "HTTP 401" in line and "key not allowed for this model" in line and "check $FAKE_KEY" in line
        sent = len(server.requests)
        assert 3 <= sent <= 3 + 4  # the breaker's three, plus what was in flight (max_concurrency 4)
        failed = [json.loads(x) for x in (out / "journal" / "calls.jsonl").read_text().splitlines()]
        assert len(failed) == sent and all(r["last_status"] == 401 and not r["final"] for r in failed)
        server.script = Script()  # the key is fixed
        again = arbitrage(*args(server.url, out, prompts))
        assert again.returncode == 0, again.stderr[-2000:]
        assert len(server.requests) == sent + N  # each failed call retried once, every other prompt sent once
    assert len(datasets.load_dataset(str(out), "sft", split="train")) == N


def test_a_full_chat_completions_url_as_base_url_is_one_line_naming_the_fix(tmp_path):
    with FakeOpenAI() as server:
        pasted = server.url + "/chat/completions"
        line = one_line(arbitrage(*args(pasted, tmp_path / "run", prompts_file(tmp_path))))
        assert not server.requests
        assert f"base_url must stop before /chat/completions, e.g. {server.url}" in line
        fixed = arbitrage(*args(server.url, tmp_path / "run", prompts_file(tmp_path)))  # not "a different run"
        assert fixed.returncode == 0, fixed.stderr[-2000:]


def test_a_closed_port_is_one_line_and_no_retry_storm(tmp_path):
    line = one_line(arbitrage(*args("http://127.0.0.1:9/v1", tmp_path / "run", prompts_file(tmp_path))))
    assert "cannot connect to http://127.0.0.1:9/v1" in line and "is the server running?" in line


def test_litellm_connection_errors_are_connection_errors_without_a_banner(tmp_path):
    a = [
        "teacher=[api]",
        "teacher.api.model=openai/good",
        "teacher.api.api_base=http://127.0.0.1:9/v1",
        "teacher.api.api_key_env=FAKE_KEY",
        "teacher.api.fast_path=false",
        "teacher.api.max_concurrency=2",
        "source=jsonl",
        f"source.path={prompts_file(tmp_path)}",
        "n_prompts=20",
        "engine.base_delay_s=0.01",
        "progress=false",
        "report=false",
        f"out={tmp_path / 'run'}",
    ]
    result = arbitrage(*a)
    line = one_line(result)
    assert "cannot connect to http://127.0.0.1:9/v1" in line
    assert "Give Feedback" not in result.stderr and "LiteLLM.Info" not in result.stderr  # no help banner per attempt
    statuses = {json.loads(x)["last_status"] for x in (tmp_path / "run" / "journal" / "calls.jsonl").read_text().splitlines()}
    assert statuses == {None}  # a refused connection, not "HTTP 500"


# --- a run that produced nothing usable ------------------------------------------------------------------


def test_a_run_with_no_usable_answer_exits_non_zero_and_keeps_its_data(tmp_path):
    with FakeOpenAI(Script(empty_marker="Explain")) as server:
        out = tmp_path / "run"
        line = one_line(arbitrage(*args(server.url, out, prompts_file(tmp_path))), code=1)
    assert line.startswith("error: the run produced no usable answer (openai_compat: empty answer ×60)")
    assert len(datasets.load_dataset(str(out), "rejected_rows", split="train")) == N  # what exists is written


@pytest.mark.parametrize("n", ["0", "-5", "1.5", "ten"])
def test_n_prompts_must_be_a_positive_integer_for_every_source(tmp_path, n):
    for source in ([], ["source=jsonl", f"source.path={prompts_file(tmp_path)}"]):
        line = one_line(arbitrage("teacher=[openai_compat]", "teacher.openai_compat.base_url=http://127.0.0.1:9/v1",
                                  "teacher.openai_compat.model=m", *source, f"n_prompts={n}", f"out={tmp_path / 'o'}"))  # fmt: skip
        assert "n_prompts must be a positive integer" in line
    assert not (tmp_path / "o").exists()


# --- settings are checked before the folder is claimed -------------------------------------------------


@pytest.mark.parametrize(
    "typo, message",
    [
        (
            "teacher.openai_compat.sampling.max_tokens=ten",
            "teacher.openai_compat.sampling.max_tokens must be an integer ≥ 1, got 'ten'",
        ),
        (
            "teacher.openai_compat.sampling.temperature=hot",
            "teacher.openai_compat.sampling.temperature must be a number in [0, 100], got 'hot'",
        ),
        ("seed=abc", "seed must be an integer, got 'abc'"),
        ("output.pairs=wrost", "output.pairs must be one of worst, random_lower, got 'wrost'"),
        ("engine.max_attempts=0", "engine.max_attempts must be an integer ≥ 1, got 0"),
        ("progress=maybe", "progress must be true or false, got 'maybe'"),
    ],
)
def test_a_mistyped_setting_never_poisons_the_folder(tmp_path, typo, message):
    with FakeOpenAI() as server:
        out, prompts = tmp_path / "run", prompts_file(tmp_path)
        assert arbitrage(*args(server.url, out, prompts)).returncode == 0
        config = (out / "config.yaml").read_bytes()
        assert message in one_line(arbitrage(*args(server.url, out, prompts, typo)))
        assert (out / "config.yaml").read_bytes() == config and not (out / ".hydra").exists()
        fixed = arbitrage(*args(server.url, out, prompts))  # the fixed command resumes the run
        assert fixed.returncode == 0, fixed.stderr[-2000:]


def test_a_reward_model_without_a_trained_head_is_refused_before_any_call(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "hello": 2}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    base = tmp_path / "base"
    BertModel(
        BertConfig(vocab_size=3, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    ).save_pretrained(base)
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(base)
    with FakeOpenAI() as server:
        line = one_line(
            arbitrage(*args(server.url, tmp_path / "run", prompts_file(tmp_path), "reward=reward_model", f"reward.model={base}"))
        )
        assert not server.requests
    assert "has no trained classification head" in line and "classifier" in line


# --- folder and file trouble -------------------------------------------------------------------------------


def test_out_pointing_at_a_file_or_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    with FakeOpenAI() as server:
        prompts = prompts_file(tmp_path)
        assert "is a file — give a folder" in one_line(arbitrage(*args(server.url, tmp_path / "file.txt", prompts)))
        line = one_line(arbitrage(*args(server.url, "/proc/arbitrage-run", prompts)))
        assert line.startswith("error: cannot write to out=/proc/arbitrage-run") and "choose a folder you can write to" in line
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_a_prompts_file_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    line = one_line(arbitrage(*args("http://127.0.0.1:9/v1", tmp_path / "run", path)))
    assert f"{path} line 2 is not UTF-8 text — save the file as UTF-8" in line


def test_a_full_disk_is_one_line_and_leaves_whole_records(tmp_path):
    """The process may write 64 KiB per file (RLIMIT_FSIZE), so the journal fills up mid-run."""

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    with FakeOpenAI(Script(answers={"good": "a long answer {digest} " + "word " * 200})) as server:
        out = tmp_path / "run"
        result = arbitrage(*args(server.url, out, prompts_file(tmp_path, 400), "n_prompts=400"), preexec_fn=small_files)
    line = one_line(result)
    assert "no space left to write" in line and "free space and rerun: the journal has every finished call" in line
    records = (out / "journal" / "calls.jsonl").read_bytes()
    assert records.endswith(b"\n") and all(json.loads(r) for r in records.splitlines())  # no torn record
    assert not list((out / "data").glob(".*.tmp"))  # nothing half-written left behind


def test_ctrl_c_names_the_prompts_really_left(tmp_path):
    """n_prompts asks for more than the file holds: the message counts what is really left."""
    with FakeOpenAI(Script(latency_s=0.05)) as server:
        out = tmp_path / "run"
        a = [x if not x.startswith("n_prompts=") else "n_prompts=1000" for x in args(server.url, out, prompts_file(tmp_path))]
        process = subprocess.Popen(
            [sys.executable, "-m", "arbitrage.cli", *a],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "FAKE_KEY": "sk-test"},
        )
        while len(server.requests) < 12:
            assert process.poll() is None, process.communicate()[1][-2000:]
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    done = len(datasets.load_dataset(str(out), "sft", split="train"))
    assert 0 < done < N
    assert f"stopped (interrupted) with {N - done} prompts unfinished — rerun the same command to finish them" in stdout


def test_a_403_on_models_is_a_warning_and_the_chat_calls_decide(tmp_path):
    """A restricted key may call chat completions without the right to list models."""
    with FakeOpenAI(Script(models_status=403, error_message="missing scope: model.read")) as server:
        result = arbitrage(*args(server.url, tmp_path / "run", prompts_file(tmp_path)))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "models answered 403 — going on" in result.stderr and len(server.requests) == N
    assert len(datasets.load_dataset(str(tmp_path / "run"), "sft", split="train")) == N
    script = Script(models_status=403, fail_first=99, fail_status=403, error_message="key not allowed")
    with FakeOpenAI(script) as server:  # chat refuses too: the breaker's three, then one line
        line = one_line(arbitrage(*args(server.url, tmp_path / "refused", prompts_file(tmp_path))))
        assert "HTTP 403" in line and "key not allowed" in line and 3 <= len(server.requests) <= 3 + 4
