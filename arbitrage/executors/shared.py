"""One budget and one rate limit per teacher for the whole Ray cluster, not one per actor.

A `Ledger` actor holds the real `Budget` and `RateLimit`s for the whole run (every wave's pass);
each generation actor's engine gets proxies with the same methods, so the engine's code is the one
a local run uses. Holding a call's worst case and taking from a bucket wait on the ledger; settling
is sent without waiting.
"""

from __future__ import annotations

import ray

from arbitrage.engine import Budget, RateLimit


@ray.remote(num_cpus=0)
class Ledger:
    def __init__(self, cap_usd: float | None, spent_before: float, limits: dict[str, tuple[float | None, float | None]]):
        self.budget = Budget(cap_usd, spent_before)
        self.limits = {name: RateLimit(rpm, tpm) for name, (rpm, tpm) in limits.items()}

    async def begin(self, spent: float) -> None:
        """A new pass (a run's next wave): the spend as the driver knows it now, its own calls'
        included; nothing of the last pass is in flight. The rate limits' buckets carry over."""
        self.budget = Budget(self.budget.cap, spent)

    async def hold(self, usd: float) -> tuple[bool, float]:
        return await self.budget.hold(usd), self.budget.total

    async def spend(self, usd: float) -> None:
        self.budget.spend(usd)

    async def release(self, usd: float) -> None:
        self.budget.release(usd)

    async def total(self) -> float:
        return self.budget.total

    async def acquire(self, name: str, tokens: float, requests: int) -> None:
        await self.limits[name].acquire(tokens, requests)

    async def settle(self, name: str, estimated: float, used: int, failed: bool = False) -> None:
        self.limits[name].settle(estimated, used, failed)

    async def observe(self, name: str, headers: dict | None) -> None:
        self.limits[name].observe(headers)


class ClusterBudget:
    """`Budget`'s face over the ledger. `total` is this actor's latest view (exact at each hold)."""

    def __init__(self, ledger, cap_usd: float | None):
        self.ledger, self.cap, self.total = ledger, cap_usd, 0.0

    @property
    def exhausted(self) -> bool:
        return self.cap is not None and self.total >= self.cap

    async def hold(self, usd: float) -> bool:
        ok, self.total = await self.ledger.hold.remote(usd)
        return ok

    def spend(self, usd: float) -> None:
        if usd:
            self.total += usd
            self.ledger.spend.remote(usd)

    def release(self, usd: float) -> None:
        if usd:
            self.ledger.release.remote(usd)


class ClusterRateLimit:
    """`RateLimit`'s face over the ledger's buckets for one teacher. Until a limit is set or learnt
    from the server's headers there is nothing to wait for, and no call goes to the ledger."""

    def __init__(self, ledger, name: str, limited: bool):
        self.ledger, self.name, self.active = ledger, name, limited

    async def acquire(self, tokens: float, requests: int = 1) -> None:
        if self.active:
            await self.ledger.acquire.remote(self.name, tokens, requests)

    def settle(self, estimated: float, used: int, failed: bool = False) -> None:
        if self.active:
            self.ledger.settle.remote(self.name, estimated, used, failed)

    def observe(self, headers: dict | None) -> None:
        if headers and (self.active or any(k.startswith("limit_") and v for k, v in headers.items())):
            self.active = True  # a limit the server announced: learnt once, for every replica
            self.ledger.observe.remote(self.name, headers)
