"""One cap on what a run folder spends, shared by every call of a run: teachers, the prompt writer,
the judge. Each call in flight holds its worst case against the cap until it finishes, so the spend
stays within the cap while the server bills within the worst case the engine knows (it learns a
larger one from the first answer billed over it: engine/core.py); the server's reported usage
settles what was really spent."""

from __future__ import annotations

import asyncio

from arbitrage.errors import ConfigError


class Budget:
    def __init__(self, cap_usd: float | None = None, spent_before: float = 0.0):
        if cap_usd is not None and (isinstance(cap_usd, bool) or not isinstance(cap_usd, int | float) or cap_usd <= 0):
            raise ConfigError(f"budget_usd must be a positive number of dollars, got {cap_usd!r} — e.g. budget_usd=5")
        self.cap = None if cap_usd is None else float(cap_usd)
        self.spent_before = spent_before  # earlier runs in the same folder (from the journal)
        self.spent = 0.0  # this run's requests, retries included
        self.held = 0.0  # worst cases of the calls in flight
        self._released = asyncio.Event()

    @property
    def total(self) -> float:
        return self.spent_before + self.spent

    @property
    def exhausted(self) -> bool:
        return self.cap is not None and self.total >= self.cap

    def fits(self, usd: float) -> bool:
        return self.cap is None or self.total + self.held + usd <= self.cap

    async def hold(self, usd: float) -> bool:
        """Hold a call's worst case before it is sent. Waits while calls in flight may still leave
        room; False once it can never fit (the run then stops sending)."""
        while not self.fits(usd):
            if self.held <= 0 or self.total + usd > self.cap:
                return False
            self._released.clear()
            await self._released.wait()
        self.held += usd
        return True

    def hold_now(self, usd: float) -> bool:
        """Hold more for a call that already holds its share, without waiting: a caller that holds
        while it waits could wait on itself."""
        if not self.fits(usd):
            return False
        self.held += usd
        return True

    def spend(self, usd: float) -> None:
        """What a finished request really cost (its reported usage)."""
        self.spent += usd

    def release(self, usd: float) -> None:
        """A call finished or was dropped: its worst case is no longer held."""
        # Sums of floats leave residue (1.7e-18 once every hold is released), which would read as a call
        # still in flight: below a picodollar nothing is held.
        left = self.held - usd
        self.held = left if left > 1e-12 else 0.0
        self._released.set()
