"""`reward=tests`: code answers scored by running them against the prompt's tests.

A prompt carries tests when its prompts-file line has them (HumanEval style: `test` defining
`check(candidate)` + `entry_point`; MBPP style: `test_list` of asserts; see
arbitrage/verify/code.py). Each candidate's program (its last fenced Python block that defines the
entry point, or the whole answer when it is code) runs in the sandbox, one subprocess each, at most
`max_workers` at once while generation goes on. The score is the share of tests passed (HumanEval's
single `check` is all or nothing, each MBPP assert counts); passing all of them is the check
`arbitrage:tests`, a gate (arbitrage/select.py: no answer that fails it is chosen). Per test what
passed is in the details. Arbitrage for code is then best of teachers by tests passed.

A prompt without tests scores 1.0 with `total: 0`, as a prompt without checks does under
reward=verifiable: nothing to fail, so the other parts of a weighted reward decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from arbitrage.errors import ConfigError
from arbitrage.rows import Call, Candidate
from arbitrage.scoring import Item, Score
from arbitrage.settings import choice, flag, number, text
from arbitrage.verify.code import SANDBOXES, CodeExecutor, Limits, TestSpec, Verdict, extract_code

CHECK = "arbitrage:tests"  # the gate: every test passes


class TestsScorer:
    __test__ = False  # not a pytest class
    name = "tests"

    def __init__(
        self,
        timeout_s: float = 10.0,
        cpu_s: int = 10,
        memory_mb: int = 1024,
        file_mb: int = 16,
        processes: int = 32,
        max_workers: int | None = None,
        sandbox: str = "auto",
        allow_unsandboxed: bool = False,
        python: str | None = None,
    ):
        limits = Limits(
            timeout_s=number("reward.timeout_s", timeout_s, float, 0.1),
            cpu_s=number("reward.cpu_s", cpu_s, int, 1),
            memory_mb=number("reward.memory_mb", memory_mb, int, 64),
            file_mb=number("reward.file_mb", file_mb, int, 1),
            processes=number("reward.processes", processes, int, 4),
        )
        workers = None if max_workers is None else number("reward.max_workers", max_workers, int, 1)
        self.executor = CodeExecutor(
            limits,
            max_workers=workers,
            sandbox=choice("reward.sandbox", sandbox, SANDBOXES),
            allow_unsandboxed=flag("reward.allow_unsandboxed", allow_unsandboxed),
            python=text("reward.python", python),
        )
        self.teachers = {}

    def check(self) -> None:
        """The sandbox is found (and tried once) here, before any model loads: one line if there is none."""
        self.executor.check()

    def calls(self, items: Sequence[Item]) -> list[Call]:
        return []

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate] | None = None) -> list[Score]:
        specs = [_spec(p.tests, p.prompt_id) for p, _ in items]
        jobs = [
            (i, extract_code(c.text or "", spec.entry_point), spec)
            for i, ((_, c), spec) in enumerate(zip(items, specs, strict=True))
            if spec
        ]
        verdicts = await self.executor.run_many([(code, spec) for _, code, spec in jobs])
        scores: list[Score] = [Score(1.0, {"total": 0, "tests": {}})] * len(items)
        for (i, _, spec), verdict in zip(jobs, verdicts, strict=True):
            scores[i] = Score(
                round(verdict.score, 6), details(spec, verdict), checks={CHECK: verdict.ok}, gates=frozenset({CHECK})
            )
        return scores

    async def close(self) -> None:
        return None


def _spec(tests: dict | None, prompt_id: str) -> TestSpec | None:
    if not tests:
        return None
    try:
        return TestSpec.from_record(tests)
    except ValueError as exc:  # a Prompt built in Python, past the prompts-file check
        raise ConfigError(f"prompt {prompt_id}: tests: {exc}") from None


def details(spec: TestSpec, verdict: Verdict) -> dict:
    """Per test what passed (and, for the ones that did not, why) and the status."""
    names = spec.names()
    out = {
        "status": verdict.status,
        "passed": verdict.passed,
        "total": verdict.total,
        "tests": dict(zip(names, verdict.tests, strict=True)),
        "seconds": verdict.seconds,
    }
    if not verdict.ok:
        out["failures"] = {n: e for n, ok, e in zip(names, verdict.tests, verdict.errors, strict=True) if not ok and e}
        out["detail"] = verdict.detail
        if verdict.stderr:
            out["stderr"] = verdict.stderr
    return out
