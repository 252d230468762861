"""Requests and tokens per minute, as token buckets that the server's headers can only tighten."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """`per_minute` units refilled continuously; callers wait their turn in order (FIFO).

    A bucket the user configured (`ceiling`) never grows past it: a server announcing a looser limit
    than the user's is ignored, a stricter one wins. A bucket learnt from headers follows the server."""

    def __init__(self, per_minute: float, configured: bool = True):
        self.capacity = float(per_minute)
        self.ceiling = self.capacity if configured else float("inf")
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.updated = time.monotonic()
        self.blocked_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float) -> float:
        self._refill()
        blocked = max(0.0, self.blocked_until - time.monotonic())
        short = max(0.0, min(amount, self.capacity) - self.level)
        return max(blocked, short / self.rate)

    async def take(self, amount: float = 1.0) -> None:
        """Wait until `amount` is available, then take it. More than the capacity waits for a full bucket."""
        async with self._lock:
            while (wait := self.wait_time(amount)) > 0:
                await asyncio.sleep(wait)
            self.level -= amount  # may go below zero for an oversized request: later callers wait it off

    def charge(self, amount: float) -> None:
        """Correct an estimate after the fact (positive: used more than taken)."""
        self._refill()
        self.level -= amount

    def sync(self, remaining: float | None, reset_s: float | None, limit: float | None = None) -> None:
        """The server's view wins when it is stricter: a lower limit, fewer remaining, or empty until a reset."""
        self._refill()
        if limit and limit > 0:
            capacity = min(float(limit), self.ceiling)
            if capacity != self.capacity:
                self.capacity, self.rate = capacity, capacity / 60.0
                self.level = min(self.level, capacity)
        if remaining is not None and remaining < self.level:
            self.level = float(remaining)
        if remaining is not None and remaining <= 0 and reset_s:
            # OpenAI's reset is when the bucket is *full* again; one request fits after 1/rate.
            self.blocked_until = max(self.blocked_until, time.monotonic() + min(reset_s, 1 / self.rate))


class RateLimit:
    """Requests and tokens per minute for one teacher. A limit left unset is learnt from the
    server's `x-ratelimit-limit-*` headers the first time it sends them."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None

    async def acquire(self, tokens: float, requests: int = 1) -> None:
        if self.requests and requests:
            await self.requests.take(requests)
        if self.tokens:
            await self.tokens.take(tokens)

    def settle(self, estimated: float, used: int, failed: bool = False) -> None:
        """Correct the token bucket by what the request really used. A failed request that reports
        no usage gives its estimate back (it used nothing); an answer without usage keeps it."""
        if self.tokens and (used or failed):
            self.tokens.charge(used - estimated)

    def observe(self, headers: dict | None) -> None:
        if not headers:
            return
        for kind in ("requests", "tokens"):
            limit, remaining = headers.get(f"limit_{kind}"), headers.get(f"remaining_{kind}")
            bucket = self.requests if kind == "requests" else self.tokens
            if bucket is None and limit:
                bucket = TokenBucket(limit, configured=False)
                if kind == "requests":
                    self.requests = bucket
                else:
                    self.tokens = bucket
            if bucket is not None:
                bucket.sync(remaining, headers.get(f"reset_{kind}_s"), limit)
