"""Prompts: where a run's prompts come from (see source.py for the protocol)."""

from arbitrage.prompts.jsonl import JsonlSource
from arbitrage.prompts.personas import PersonaSource
from arbitrage.prompts.source import Source
from arbitrage.prompts.writer import PromptWriter

__all__ = ["JsonlSource", "PersonaSource", "PromptWriter", "Source"]
