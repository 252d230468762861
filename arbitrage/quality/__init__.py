"""The quality stage: filters on prompts before generation and on answers after it (base.py has the contract)."""

from arbitrage.quality.base import STAGES, Filter, apply

__all__ = ["STAGES", "Filter", "apply"]
