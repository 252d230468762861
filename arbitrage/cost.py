"""What a run costs: prices per teacher, token bounds, spend during it (the estimate before a run
is arbitrage/analysis/estimate.py).

Prices come from the teacher config (`price: {input_per_mtok, output_per_mtok}`) or from the
price map bundled inside litellm; local vLLM teachers cost nothing; a model nobody prices stays
`None` (unknown) instead of a guessed number. litellm is imported only when an API model needs a
price or a tokenizer: the import takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from arbitrage.errors import ConfigError

# Without this litellm fetches its price map from GitHub at import (retrying for seconds when
# offline); with it, litellm loads the copy bundled in the package. Set before any import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# OpenAI's rule of thumb: one token is about 4 characters of English text. Scripts such as CJK
# pack fewer characters per token, so the heuristic undercounts them; it is for estimates only.
CHARS_PER_TOKEN = 4
# OpenAI's chat accounting (as in litellm.token_counter): each message carries ~3 tokens of
# framing, and 3 more prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3

LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1"}


# ---------------------------------------------------------------------------------------------
# Prices


@dataclass(frozen=True)
class Price:
    input_per_token: float  # dollars
    output_per_token: float
    source: str  # where the numbers come from: "config", "local", "litellm <version> price map (<key>)"

    def cost(self, tokens_in: int, tokens_out: float) -> float:
        return tokens_in * self.input_per_token + tokens_out * self.output_per_token


LOCAL_PRICE = Price(0.0, 0.0, "local")


def price_from_config(override: Mapping) -> Price:
    """`{input_per_mtok: 0.15, output_per_mtok: 0.6}` (dollars per million tokens) → Price."""
    missing = [key for key in ("input_per_mtok", "output_per_mtok") if key not in override]
    if missing:
        raise ConfigError(
            f"price needs input_per_mtok and output_per_mtok (dollars per million tokens), missing {missing} — "
            "e.g. price: {input_per_mtok: 0.15, output_per_mtok: 0.6}"
        )
    return Price(float(override["input_per_mtok"]) / 1e6, float(override["output_per_mtok"]) / 1e6, "config")


@lru_cache(maxsize=256)
def litellm_price(model: str) -> Price | None:
    """Look `model` up as given, then without its provider prefix (`openai/gpt-4o-mini` → `gpt-4o-mini`)."""
    prices = _price_map()
    for key in _names_to_try(model):
        entry = prices.get(key) or {}
        if entry.get("input_cost_per_token") is not None and entry.get("output_cost_per_token") is not None:
            source = f"litellm {_litellm_version()} price map ({key})"
            return Price(float(entry["input_cost_per_token"]), float(entry["output_cost_per_token"]), source)
    return None


@lru_cache(maxsize=1)
def _price_map() -> dict:
    """The price map bundled inside litellm, read as a file: importing litellm costs seconds, this ~50 ms."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(spec.submodule_search_locations[0]) / "model_prices_and_context_window_backup.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _names_to_try(model: str) -> list[str]:
    _, _, bare = model.partition("/")
    return [model, bare] if bare else [model]


def _litellm_version() -> str:
    from importlib.metadata import version

    return version("litellm")


def is_local_endpoint(url: str | None) -> bool:
    """A server on this machine: its model name says nothing about what a call costs."""
    return bool(url) and (urlparse(url).hostname or "") in LOCAL_HOSTS


def api_price(model: str, endpoint: str | None, override: Mapping | Price | None = None) -> Price | None:
    """An API teacher's price: the config override, else unknown for a server on this machine, else
    the price map."""
    if isinstance(override, Price):
        return override
    if override:
        return price_from_config(override)
    if is_local_endpoint(endpoint):
        return None
    return litellm_price(model)


# OpenAI, Anthropic, Gemini and Together price batch requests at half their online price.
DEFAULT_BATCH_DISCOUNT = 0.5


def online_price(override: Mapping | Price | None) -> Mapping | Price | None:
    """The price override without `batch_discount` (which only `mode: batch` reads)."""
    if not isinstance(override, Mapping):
        return override
    rest = {k: v for k, v in override.items() if k != "batch_discount"}
    return rest or None


def batch_price(model: str, endpoint: str | None, override: Mapping | Price | None = None) -> Price | None:
    """A batch teacher's price: the config's prices × `price.batch_discount`; else litellm's batch
    price for the model; else its online price × the discount (0.5 unless `price.batch_discount`)."""
    if isinstance(override, Price):
        return override
    discount = (override or {}).get("batch_discount")
    if discount is not None:
        if isinstance(discount, bool) or not isinstance(discount, int | float) or not 0 < discount <= 1:
            raise ConfigError(f"price.batch_discount must be a fraction in (0, 1], got {discount!r} — e.g. 0.5 for half price")
    online = api_price(model, endpoint, online_price(override))
    if online is None:
        return None
    if discount is None and online.source != "config" and (listed := litellm_batch_price(model)) is not None:
        return listed
    discount = DEFAULT_BATCH_DISCOUNT if discount is None else float(discount)
    source = f"{online.source} × batch_discount {discount:g}"
    return Price(online.input_per_token * discount, online.output_per_token * discount, source)


@lru_cache(maxsize=256)
def litellm_batch_price(model: str) -> Price | None:
    """litellm's `*_cost_per_token_batches` entries, where the map lists them (OpenAI models do)."""
    prices = _price_map()
    for key in _names_to_try(model):
        entry = prices.get(key) or {}
        if entry.get("input_cost_per_token_batches") is not None and entry.get("output_cost_per_token_batches") is not None:
            source = f"litellm {_litellm_version()} price map ({key}, batch)"
            return Price(float(entry["input_cost_per_token_batches"]), float(entry["output_cost_per_token_batches"]), source)
    return None


# ---------------------------------------------------------------------------------------------
# Token counting


Tokenizer = Callable[[str], object]  # HF tokenizer (returns {"input_ids": ...}) or text → ids


def count_prompt_tokens(model_or_tokenizer: str | Tokenizer | None, messages: Sequence[dict]) -> int:
    """Prompt tokens of one chat call, offline.

    A model name that litellm tokenizes exactly and offline (OpenAI and Azure chat models, with the
    tiktoken files bundled in litellm) is counted by `litellm.token_counter`; a callable tokenizer
    counts each message; anything else (None, other models) gets the chars/4 heuristic. Other
    model names never reach litellm, because it fetches Llama and Cohere tokenizers from the HF hub.
    """
    if callable(model_or_tokenizer):
        return _count_with_tokenizer(model_or_tokenizer, messages)
    openai_model = litellm_tokenizer_model(model_or_tokenizer) if model_or_tokenizer else None
    if openai_model is None:
        return heuristic_tokens(messages)
    import litellm

    try:
        return int(litellm.token_counter(model=openai_model, messages=list(messages)))
    except Exception:  # an estimate must not fail a run over one odd message
        return heuristic_tokens(messages)


@lru_cache(maxsize=256)
def litellm_tokenizer_model(model: str) -> str | None:
    """The name under which litellm counts `model` with a bundled tiktoken encoding, or None."""
    import litellm

    for name in _names_to_try(model):
        if name in litellm.open_ai_chat_completion_models or name in litellm.azure_llms:
            return name
    return None


# A bound that never undercounts, for any tokenizer and any script: every token of a byte-level
# BPE (GPT, Llama 3, Qwen) or SentencePiece with byte fallback (Llama 2, Gemma, Mistral) covers at
# least one UTF-8 byte. Chat templates add role tokens per message and, for some models, a default
# system prompt (SmolLM2's and Qwen's are ~20 tokens): both are covered generously.
BOUND_TOKENS_PER_MESSAGE = 10
BOUND_TOKENS_PER_CALL = 40


def max_prompt_tokens(messages: Sequence[dict]) -> int:
    """The most prompt tokens a chat call can be billed for (what a budget must hold)."""
    size = sum(len(message_text(m).encode("utf-8")) for m in messages)
    return size + BOUND_TOKENS_PER_MESSAGE * len(messages) + BOUND_TOKENS_PER_CALL


def heuristic_tokens(messages: Sequence[dict]) -> int:
    chars = sum(len(message_text(m)) for m in messages)
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages) + TOKENS_REPLY_PRIMING


def message_text(message: Mapping) -> str:
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if isinstance(part, Mapping))  # multimodal parts


def _count_with_tokenizer(tokenizer: Tokenizer, messages: Sequence[dict]) -> int:
    tokens = 0
    for message in messages:
        encoded = tokenizer(message_text(message))
        ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
        tokens += len(ids) + TOKENS_PER_MESSAGE
    return tokens + TOKENS_REPLY_PRIMING


def format_usd(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 1 or usd == 0 else f"${usd:.4f}"


# ---------------------------------------------------------------------------------------------
# Spend during a run


@dataclass
class TeacherSpend:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0


@dataclass
class Spend:
    """Tokens and dollars of finished requests, per teacher (the engine's spend, retries included).

    Teachers without a price count tokens but no dollars (listed in `unpriced`): a budget cannot
    bound them. The engine holds each call in flight at its worst case against the budget, so
    spend never passes it (see Engine)."""

    prices: Mapping[str, Price | None]
    by_teacher: dict[str, TeacherSpend] = field(default_factory=dict)

    def add(self, teacher: str, tokens_in: int, tokens_out: int) -> float | None:
        """Record one finished call; returns its dollars (None when the teacher has no price)."""
        price = self.prices.get(teacher)
        usd = price.cost(tokens_in, tokens_out) if price else None
        spent = self.by_teacher.setdefault(teacher, TeacherSpend())
        spent.calls += 1
        spent.tokens_in += tokens_in
        spent.tokens_out += tokens_out
        spent.usd += usd or 0.0
        return usd

    @property
    def total_usd(self) -> float:
        return sum(spent.usd for spent in self.by_teacher.values())

    @property
    def unpriced(self) -> list[str]:
        return [teacher for teacher in self.by_teacher if self.prices.get(teacher) is None]

    def exceeds(self, budget_usd: float | None) -> bool:
        """True once priced spend has reached the budget; no budget never exceeds."""
        return budget_usd is not None and self.total_usd >= budget_usd
