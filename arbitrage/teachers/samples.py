"""Native `n`: a prompt's samples sent as one request (vLLM `SamplingParams.n`, the OpenAI `n`
parameter, litellm `n`), still one Call, one journal record and one candidate per sample.

The engine hands a teacher a prompt's samples one after another (see `stages.calls_of`). A run of
consecutive samples of one prompt becomes one request with `n` = the run's length; on resume only
the missing samples are in the batch, so `n` is how many are missing. Seeds stay per sample:
sample s of a prompt has seed `base + s` (`Sampling.seed_for`), and a request for samples s…s+k-1
carries seed `base + s`, which vLLM (engine and server) turns into seed + i for its i-th choice.
So an answer is the same whether its sample was asked alone, in a group, or in a retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from arbitrage.rows import Call, Completion

log = logging.getLogger(__name__)


def next_sample(last: Call | None, call: Call) -> bool:
    """`call` is the sample after `last`, of the same prompt: one request with `n` can carry both."""
    return last is not None and call.prompt.prompt_id == last.prompt.prompt_id and call.sample == last.sample + 1


def sample_runs(calls: Sequence[Call], seeded: bool) -> list[list[int]]:
    """The calls' indices, cut into runs that one request with `n` can answer: adjacent calls for
    the same prompt whose sample indices follow each other (any order will do without a seed)."""
    runs: list[list[int]] = []
    for i, call in enumerate(calls):
        if runs:
            last = calls[runs[-1][-1]]
            if next_sample(last, call) or (not seeded and last.prompt.prompt_id == call.prompt.prompt_id):
                runs[-1].append(i)
                continue
        runs.append([i])
    return runs


def split_usage(total: int, texts: Sequence[str]) -> list[int]:
    """A request's completion tokens shared out over its choices in proportion to each choice's
    characters (servers report only the total for `n` > 1; characters track tokens far better than
    an even split when one answer stops early and another runs to max_tokens). Largest remainder,
    so the shares add up to the total exactly."""
    if not texts:
        return []
    weights = [len(t) for t in texts]
    if sum(weights) == 0:
        weights = [1] * len(texts)
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(texts)), key=lambda i: exact[i] - shares[i], reverse=True)[: total - sum(shares)]:
        shares[i] += 1
    return shares


Send = Callable[[Sequence[Call]], Awaitable[list[Completion | None]]]


class NativeN:
    """Sends an API teacher's calls with native `n` and falls back to one request per sample.

    `send(calls)` makes ONE request with n=len(calls) for consecutive samples of one prompt and returns
    one entry per call: the choice with that index, None for a choice the server did not return, or
    the same failure for every call when the request failed. A server that returns fewer choices
    than asked (it ignores `n`), or refuses `n` with HTTP 400 where single requests succeed, gets
    the missing samples as single requests now and single requests only from then on; nothing is
    lost and the answers are the same (per-sample seeds). `enabled=False` (the teacher's `native_n`)
    skips the probe for servers known to mishandle `n`.
    """

    def __init__(self, teacher: str, enabled: bool, seeded: bool, on_stop: Callable[[], None] | None = None):
        self.teacher, self.enabled, self.seeded = teacher, enabled, seeded
        self.on_stop = on_stop  # called once, when native `n` turns off

    @classmethod
    def of(cls, teacher) -> NativeN:
        """An API teacher's: on while its `limits.native_n` is; a fallback drops that flag too, so the
        engine's requests-per-minute count sees each sample's request again."""

        def drop() -> None:
            teacher.limits = replace(teacher.limits, native_n=False)

        return cls(teacher.name, teacher.limits.native_n, teacher.sampling.seed is not None, on_stop=drop)

    def runs(self, calls: Sequence[Call]) -> list[list[int]]:
        """The calls' indices cut into requests: runs of samples while native `n` is on, else one each."""
        return sample_runs(calls, self.seeded) if self.enabled else [[i] for i in range(len(calls))]

    async def complete(self, calls: Sequence[Call], send: Send) -> list[Completion]:
        runs = self.runs(calls)
        answers = await asyncio.gather(*(self._run([calls[i] for i in run], send) for run in runs))
        return [completion for answer in answers for completion in answer]

    async def _singles(self, calls: Sequence[Call], send: Send) -> list[Completion]:
        answers = await asyncio.gather(*(send([call]) for call in calls))
        return [a[0] or Completion(None, error="server returned no choice") for a in answers]

    async def _run(self, calls: Sequence[Call], send: Send) -> list[Completion]:
        if len(calls) == 1 or not self.enabled:
            return await self._singles(calls, send)
        got = await send(calls)
        first = got[0]
        if first is not None and first.error is not None:  # the request failed: every sample alike
            if first.status != 400:
                return list(got)
            singles = await self._singles(calls, send)  # a server that refuses `n` itself, or a bad prompt?
            if any(s.ok for s in singles):
                self.stop_native(f"it refused n={len(calls)} ({first.error[:120]})")
            return singles
        missing = [i for i, completion in enumerate(got) if completion is None]
        if not missing:
            return list(got)
        self.stop_native(f"it returned {len(calls) - len(missing)} of {len(calls)} choices")
        singles = iter(await self._singles([calls[i] for i in missing], send))
        return [completion if completion is not None else next(singles) for completion in got]

    def stop_native(self, why: str) -> None:
        if self.enabled:
            log.warning(
                "teacher %s: the server mishandles n (%s) — sending one request per sample from now on; "
                "set teacher.%s.native_n=false to skip this check",
                self.teacher,
                why,
                self.teacher,
            )
            if self.on_stop is not None:
                self.on_stop()
        self.enabled = False


def request_starts(calls: Sequence[Call], teacher) -> list[bool]:
    """Which calls start a request (the engine's requests-per-minute count): every call, unless the
    teacher sends runs of samples with native `n` (`limits.native_n`)."""
    if not teacher.limits.native_n:
        return [True] * len(calls)
    starts = {run[0] for run in sample_runs(calls, teacher.sampling.seed is not None)}
    return [i in starts for i in range(len(calls))]
