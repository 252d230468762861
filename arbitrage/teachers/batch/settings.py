"""The settings of `mode: batch` (conf/teacher/api.yaml, `batch:`): file limits, how long a batch
stays open, how often it is polled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from arbitrage.errors import ConfigError
from arbitrage.settings import number


@dataclass(frozen=True)
class BatchSettings:
    max_requests: int = 50_000  # per batch file (OpenAI's limit)
    max_bytes: int = 190_000_000  # per batch file (OpenAI's limit is 200 MB)
    max_pending: int = 50_000  # calls waiting in batches at once (the provider's enqueued-token quota is another bound)
    linger_s: float = 5.0  # submit the open batch once no call arrived for this long
    max_open_s: float = 120.0  # or once its first call waited this long
    poll_first_s: float = 10.0  # first wait between status checks, doubled up to poll_max_s
    poll_max_s: float = 300.0
    completion_window: str = "24h"
    where: str = field(default="batch", compare=False, repr=False)

    def __post_init__(self):
        for key in ("max_requests", "max_bytes", "max_pending"):
            number(f"{self.where}.{key}", getattr(self, key), int, 1)
        for key in ("linger_s", "max_open_s", "poll_first_s", "poll_max_s"):
            number(f"{self.where}.{key}", getattr(self, key), float, 0.001)
        if not isinstance(self.completion_window, str) or not self.completion_window:
            raise ConfigError(f"{self.where}.completion_window must be a duration such as 24h, got {self.completion_window!r}")

    @classmethod
    def of(cls, value: Mapping | BatchSettings | None, where: str) -> BatchSettings:
        if isinstance(value, BatchSettings):
            return value
        value = dict(value or {})
        known = [f.name for f in fields(cls) if f.name != "where"]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ConfigError(f"{where} has no setting {', '.join(unknown)} — known: {', '.join(known)}")
        return cls(**value, where=where)
