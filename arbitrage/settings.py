"""Typed settings: every number or choice a user can set is checked where it is taken, before
anything loads or the run folder is claimed, with one line naming the key and what it expects
(`teacher.api.sampling.max_tokens must be an integer ≥ 1, got 'ten'`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from arbitrage.errors import ConfigError


def number(key: str, value, kind: type = float, low: float | None = None, high: float | None = None):
    """`value` as an int or float within [low, high]; bools and strings are refused."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (kind is float or float(value).is_integer())
    ok = ok and math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if low is not None and high is not None:
            bounds = f" in [{low}, {high}]"
        else:
            bounds = f" ≥ {low}" if low is not None else (f" ≤ {high}" if high is not None else "")
        raise ConfigError(f"{key} must be {'an integer' if kind is int else 'a number'}{bounds}, got {value!r}")
    return int(value) if kind is int else float(value)


def choice(key: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def flag(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def text(key: str, value, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value
