"""Bad input and signals, tried as a new user would (issue 22, items 11–17), through the CLI as a
subprocess against our fake OpenAI server. Each refused case: the exit code, exactly one `error:`
line, and the run folder byte-identical (or never created)."""

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pytest
from fake_openai import FakeOpenAI, Script
from test_failfast import N, arbitrage, args, one_line, prompts_file


def tree(path):
    """Every file and folder under `path` with a hash of its bytes: equal trees, equal folders."""
    if not path.exists():
        return None
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(path.rglob("*"))
    }


def finished_run(server, tmp_path, *extra):
    out, prompts = tmp_path / "run", prompts_file(tmp_path)
    result = arbitrage(*args(server.url, out, prompts, *extra))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "logs" / "arbitrage.log").stat().st_size > 0  # the run's log, created at its first line
    return out, prompts


# --- 11. a lone surrogate: valid JSON, not valid Unicode ---------------------------------------------


def test_a_lone_surrogate_in_a_prompts_file_is_one_line_naming_the_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "bad \\ud800 here"}\n')
    out = tmp_path / "run"
    line = one_line(arbitrage(*args("http://127.0.0.1:9/v1", out, path)))
    assert f"{path} line 2" in line and "lone surrogate" in line and "'prompt'" in line
    assert not out.exists()


def test_a_lone_surrogate_in_a_persona_file_is_refused_before_the_folder_is_claimed(tmp_path):
    personas = tmp_path / "personas.jsonl"
    record = {"id": "p1", "persona": "A nurse", "language": "en", "domain": "health", "topics": ["first aid"]}
    personas.write_text(json.dumps(record).replace("A nurse", "A nurse \\udc80"))
    out = tmp_path / "run"
    with FakeOpenAI() as server:
        a = [x for x in args(server.url, out, personas) if not x.startswith(("source=", "source.path="))]
        line = one_line(arbitrage(*a, f"personas.files=[{personas}]"))
        assert not server.requests
    assert f"persona file {personas}:1" in line and "lone surrogate" in line and "'persona'" in line
    assert not out.exists()


# --- 12. every check that can refuse runs before the claim -----------------------------------------------


@pytest.mark.parametrize("budget", ["-1", "abc"])
def test_a_bad_budget_never_touches_a_finished_run_nor_creates_a_fresh_folder(tmp_path, budget):
    with FakeOpenAI() as server:
        out, prompts = finished_run(server, tmp_path)
        before = tree(out)
        line = one_line(arbitrage(*args(server.url, out, prompts, f"budget_usd={budget}")))
        assert "budget_usd must be a positive number of dollars" in line
        assert tree(out) == before
        fresh = tmp_path / "fresh"
        one_line(arbitrage(*args(server.url, fresh, prompts, f"budget_usd={budget}")))
        assert not fresh.exists()


def test_a_rejected_key_on_models_refuses_the_run_before_the_folder_is_touched(tmp_path):
    with FakeOpenAI() as server:
        out, prompts = finished_run(server, tmp_path, "n_prompts=30")
        before = tree(out)
        server.script = Script(models_status=401, fail_first=99, fail_status=401, error_message="Incorrect API key")
        line = one_line(arbitrage(*args(server.url, out, prompts, "n_prompts=60")))  # extends the run: 30 calls to send
        assert "HTTP 401" in line and "Incorrect API key" in line
        assert tree(out) == before and not server.requests[30:]
        fresh = tmp_path / "fresh"
        one_line(arbitrage(*args(server.url, fresh, prompts)))
        assert not fresh.exists()


def test_nothing_listening_refuses_a_fresh_run_without_creating_its_folder(tmp_path):
    out = tmp_path / "runs" / "fresh"
    line = one_line(arbitrage(*args("http://127.0.0.1:9/v1", out, prompts_file(tmp_path))))
    assert "cannot connect to http://127.0.0.1:9/v1" in line
    assert not (tmp_path / "runs").exists()


# --- 13. signals after the last call ---------------------------------------------------------------------

# Slows the end of generation (the journal's close, after the last call) so a signal lands there.
HOOK = """
import os, pathlib, time
from arbitrage.engine import journal
close = journal.Journal.close
def slow_close(self):
    marker = pathlib.Path(os.environ["HOOK_MARKER"])
    if not self.read_only and not marker.exists():
        marker.write_text("after the last call")
        time.sleep(float(os.environ.get("HOOK_SLEEP_S", "3")))
    close(self)
journal.Journal.close = slow_close
from arbitrage.cli import main
main()
"""


def _signalled(tmp_path, server, signals, *extra):
    out, prompts = tmp_path / "run", prompts_file(tmp_path)
    marker = tmp_path / "marker"
    process = subprocess.Popen(
        [sys.executable, "-c", HOOK, *args(server.url, out, prompts, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FAKE_KEY": "sk-test", "HOOK_MARKER": str(marker)},
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.02)
    assert len(server.requests) == N  # every call answered: the signals come after the last one
    for sig in signals:
        process.send_signal(sig)
        time.sleep(0.3)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr, out, prompts


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_one_signal_after_the_last_call_lets_the_write_finish_without_the_embedding_spread(tmp_path, sig, code):
    with FakeOpenAI() as server:
        returncode, stdout, stderr, out, _ = _signalled(tmp_path, server, [sig], "diversity.embedding_spread=true")
    assert returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr and f"{sig.name}: " in stderr
    assert len(datasets.load_dataset(str(out), "sft", split="train")) == N
    summary = json.loads((out / "summary.json").read_text())
    assert "embedding_spread" not in summary["quality"]["prompts_after"]  # skipped: the user asked to stop


def test_a_second_ctrl_c_after_the_last_call_exits_with_one_line_and_the_rerun_writes_the_dataset(tmp_path):
    with FakeOpenAI() as server:
        returncode, _, stderr, out, prompts = _signalled(tmp_path, server, [signal.SIGINT, signal.SIGINT])
        assert returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
        line = one_line(subprocess.CompletedProcess([], returncode, "", stderr), code=130)
        assert "the journal has every finished call" in line and "rerun the same command" in line
        rerun = arbitrage(*args(server.url, out, prompts))
        assert rerun.returncode == 0 and len(server.requests) == N, rerun.stderr[-2000:]
    assert len(datasets.load_dataset(str(out), "sft", split="train")) == N


# --- 14. temporary files ----------------------------------------------------------------------------------


def test_stale_temporary_files_are_swept_when_the_folder_is_claimed(tmp_path):
    with FakeOpenAI() as server:
        out, prompts = finished_run(server, tmp_path)
        dead = 2**22 + 12345  # above Linux's default pid_max: no process has it
        stale = [out / "data" / f".sft.{dead}.parquet.tmp", out / f".README.md.{dead}.tmp", out / f".run.json.{dead}.tmp"]
        live = out / "data" / f".sft.{os.getpid()}.parquet.tmp"  # its writer still runs: not ours to remove
        for path in [*stale, live]:
            path.write_bytes(b"x" * 1000)
        assert arbitrage(*args(server.url, out, prompts)).returncode == 0
    assert not any(p.exists() for p in stale) and live.exists()


def test_write_atomic_leaves_no_temporary_file_when_the_write_fails(tmp_path):
    from arbitrage.output.dataset import write_atomic

    (tmp_path / "README.md").write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(tmp_path / "README.md", "x" * 100_000 + "\ud800")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"] and (tmp_path / "README.md").read_text() == "old"


# --- 15. a server that answers 200 with no choice -----------------------------------------------------------


class NoChoices:
    """/v1/models works; every chat completion is 200 with `"choices": []`."""

    def __init__(self):
        self.posts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, body):
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "good"}]})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts += 1
                self._send({"id": "x", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 3}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_server_answering_no_choices_is_stopped_early_quoting_what_was_wrong(tmp_path):
    fake = NoChoices()
    try:
        line = one_line(arbitrage(*args(fake.url, tmp_path / "run", prompts_file(tmp_path))))
    finally:
        fake.server.shutdown()
    assert 'answered 200 with "choices": [] 5 times' in line and "teacher 'openai_compat'" in line
    assert 5 <= fake.posts <= 5 + 4  # the breaker's five, plus what was in flight; none sent again


# --- 16. paths with spaces or non-ASCII characters ----------------------------------------------------------


@pytest.mark.parametrize(
    "typed, fix", [(["out=runs/my", "run"], "'out=\"runs/my run\"'"), (["out=runs/名前"], "'out=\"runs/名前\"'")]
)
def test_a_path_with_spaces_or_non_ascii_says_how_to_quote_it(tmp_path, typed, fix):
    a = [x for x in args("http://127.0.0.1:9/v1", tmp_path / "x", prompts_file(tmp_path)) if not x.startswith("out=")]
    line = one_line(arbitrage(*a, *typed), code=2)
    assert fix in line and "base_url" not in line  # the override alone, not the whole command glued together


def test_a_quoted_path_with_spaces_runs_and_the_printed_follow_up_quotes_it(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from arbitrage.overrides import shell_override

    with FakeOpenAI() as server:
        out = tmp_path / "my run 名前"
        result = arbitrage(*args(server.url, f'"{out}"', prompts_file(tmp_path)))
        assert result.returncode == 0, result.stderr[-2000:]
    assert len(datasets.load_dataset(str(out), "sft", split="train")) == N
    command = f"arbitrage router=learned {shell_override('router.model', out / 'router.pt')} ..."
    words = shlex.split(command)
    assert OverridesParser.create().parse_overrides(words[1:3])[1].value() == str(out / "router.pt")
    assert shell_override("router.model", "runs/plain/router.pt") == "router.model=runs/plain/router.pt"


# --- 17. messages that point somewhere ------------------------------------------------------------------------


@pytest.mark.parametrize("typo", ["max_tokens=5", "+max_tokens=5", "+teacher.openai_compat.max_tokens=5"])
def test_a_misplaced_key_names_where_it_lives(tmp_path, typo):
    out = tmp_path / "run"
    with FakeOpenAI() as server:
        line = one_line(arbitrage(*args(server.url, out, prompts_file(tmp_path), typo)))
        assert not server.requests
    assert "did you mean `teacher.openai_compat.sampling.max_tokens`?" in line and "+max_tokens" not in line
    assert not out.exists()


def test_an_unknown_key_offers_plus_only_where_extra_keys_are_accepted(tmp_path):
    line = one_line(arbitrage(*args("http://127.0.0.1:9/v1", tmp_path / "run", prompts_file(tmp_path), "no_such_setting=1")))
    assert "unknown config key 'no_such_setting'" in line and "+no_such_setting" not in line
    line = one_line(arbitrage(*args("http://127.0.0.1:9/v1", tmp_path / "run", prompts_file(tmp_path), "filters.nope=1")))
    assert "+filters.nope=" in line  # filters take new nodes (a `_target_` and its settings)


def test_a_directory_as_prompts_file_says_it_is_a_directory(tmp_path):
    line = one_line(arbitrage(*args("http://127.0.0.1:9/v1", tmp_path / "run", tmp_path)))
    assert f"prompts file {tmp_path} is a directory" in line and "does not exist" not in line


def test_a_bad_messages_line_names_the_turn_and_the_field(tmp_path):
    path = tmp_path / "prompts.jsonl"
    turns = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "user", "content": 5}]
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"messages": turns}) + "\n")
    line = one_line(arbitrage(*args("http://127.0.0.1:9/v1", tmp_path / "run", path)))
    assert f"{path} line 2: messages[2].content must be a string, got 5" in line


def test_an_unknown_persona_language_names_the_line_and_the_supported_codes(tmp_path):
    personas = tmp_path / "personas.jsonl"
    good = {"id": "p1", "persona": "A nurse", "language": "en", "domain": "health", "topics": ["first aid"]}
    personas.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "p2", "language": "xx"}) + "\n")
    a = [x for x in args("http://127.0.0.1:9/v1", tmp_path / "run", personas) if not x.startswith(("source=", "source.path="))]
    line = one_line(arbitrage(*a, f"personas.files=[{personas}]"))
    assert f"persona file {personas}:2: language 'xx' is not supported" in line and "en, es" in line


def test_a_refused_folder_that_is_not_a_run_is_left_as_it_was(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    before = tree(mine)
    with FakeOpenAI() as server:
        line = one_line(arbitrage(*args(server.url, mine, prompts_file(tmp_path))))
        assert not server.gets  # refused before any endpoint is asked
    assert "is not an arbitrage run" in line and tree(mine) == before  # no .lock left behind
