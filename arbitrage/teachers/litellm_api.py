"""API teachers through litellm: any provider string (`anthropic/...`, `gemini/...`).

litellm costs ~4.5 ms of CPU per request here, ~18× a bare aiohttp client (BENCHMARKS.md), so
`openai/...` models go to `OpenAICompatTeacher` instead when `fast_path` (teachers/factory.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from arbitrage.cost import Price, api_price
from arbitrage.errors import ConfigError
from arbitrage.rows import Call, Completion
from arbitrage.settings import number
from arbitrage.teachers import Limits, Sampling
from arbitrage.teachers.diagnose import explain, not_a_completion
from arbitrage.teachers.openai_compat import api_key_from_env, parse_choices, ratelimit_headers
from arbitrage.teachers.samples import NativeN

# litellm fetches its price map from the network at import unless told not to (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


class LiteLLMTeacher:
    def __init__(
        self,
        name: str,
        model: str,
        api_key_env: str | None = None,
        api_base: str | None = None,
        sampling: Sampling | Mapping | None = None,
        timeout_s: float = 120.0,
        max_concurrency: int = 16,
        rpm: float | None = None,  # requests per minute (None: learnt from x-ratelimit-* headers)
        tpm: float | None = None,  # tokens per minute
        price: Mapping | Price | None = None,
        native_n: bool = True,  # a prompt's samples as one request with `n` (false: providers that mishandle it)
    ):
        self.name = name
        self.model = model
        self.api_key_env = api_key_env
        self.api_base = api_base
        self.sampling = Sampling.of(sampling, f"teacher.{name}.sampling")
        native = bool(native_n) and self.sampling.n > 1
        batch = self.sampling.n if native else 1  # a prompt's samples in one batch, sent as one request
        self.limits = Limits(max_concurrency, batch, rpm, tpm, from_headers=True, native_n=native, where=f"teacher.{name}")
        self.timeout_s = number(f"teacher.{name}.timeout_s", timeout_s, float, 0.1)
        self.price = api_price(model, api_base, price)
        self._native = NativeN.of(self)
        self._key: str | None = None

    def identity(self) -> dict:
        return {"api": "litellm", "model": self.model, "endpoint": self.api_base, "sampling": self.sampling.key()}

    def check(self) -> None:
        if "/" not in self.model:
            raise ConfigError(f"teacher '{self.name}': model '{self.model}' needs a provider prefix, e.g. openai/gpt-4o-mini")
        if self.sampling.repetition_penalty != 1.0:
            raise ConfigError(
                f"teacher '{self.name}': sampling.repetition_penalty is not an option of litellm's providers — "
                "leave it at 1.0, or serve the model with vLLM and use the openai_compat teacher"
            )
        api_key_from_env(self.name, self.api_key_env, required=True)

    def stats(self) -> dict[str, float]:
        return {}

    def diagnose(self, completion: Completion) -> str:
        return explain(self.name, self.api_base, self.api_key_env, self.model, completion)

    async def start(self) -> None:
        import litellm

        litellm.suppress_debug_info = True  # else a help banner per failed attempt
        self._key = api_key_from_env(self.name, self.api_key_env, required=True)

    async def _send(self, calls: Sequence[Call]) -> list[Completion | None]:
        """One request for consecutive samples of one prompt (`n`, seed of the first): an answer per
        call (None: no such choice came back), or the request's failure for every call."""
        import litellm

        s, call, n = self.sampling, calls[0], len(calls)
        kwargs = {"n": n} if n > 1 else {}
        seed = s.seed_for(call.prompt.prompt_id, call.sample)
        if seed is not None:
            kwargs["seed"] = seed
        if s.logprobs:
            kwargs |= {"logprobs": True, "top_logprobs": s.logprobs}
        try:
            response = await litellm.acompletion(
                model=self.model,
                messages=list(call.prompt.messages),
                api_key=self._key,
                api_base=self.api_base,
                max_tokens=s.max_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                timeout=self.timeout_s,
                num_retries=0,  # the engine retries, with one policy for every teacher
                **kwargs,
            )
        except Exception as exc:  # litellm maps provider errors onto its own classes
            return [_failure(exc)] * n
        body = response.model_dump()
        try:  # the OpenAI form of the response: one parser for both API paths
            answers = parse_choices(body, n)
        except (IndexError, KeyError, TypeError, AttributeError):  # no chat completion: not retried (teachers/diagnose.py)
            return [Completion(text=None, error=not_a_completion(body), status=200)] * n
        # litellm passes the provider's headers on with an "llm_provider-" prefix.
        provider = (getattr(response, "_hidden_params", None) or {}).get("additional_headers") or {}
        limits = ratelimit_headers({k.removeprefix("llm_provider-"): v for k, v in provider.items()})
        return [None if a is None else replace(a, ratelimit=limits) for a in answers]

    async def complete(self, calls: Sequence[Call]) -> list[Completion]:
        return await self._native.complete(calls, self._send)

    async def close(self) -> None:
        return None


def _failure(exc: Exception) -> Completion:
    """A litellm exception as data. litellm reports a connection that failed as an HTTP 500
    (`InternalServerError: OpenAIException - Connection error.`, or APIConnectionError): those keep
    no status, so they read as the connection errors they are, not as server errors."""
    status = getattr(exc, "status_code", None)
    if type(exc).__name__ in ("APIConnectionError", "Timeout") or "connection error" in str(exc).lower():
        status = None
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    retry_after = headers.get("retry-after") if isinstance(headers, Mapping) or hasattr(headers, "items") else None
    # "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API key" → the server's words
    said = re.sub(r"^(litellm\.\w+: )?(\w+: )?(\w+Exception - )?", "", str(exc))
    return Completion(
        text=None,
        error=f"{type(exc).__name__}: {said[:200]}",
        status=status if isinstance(status, int) else None,
        retry_after=float(retry_after) if retry_after and str(retry_after).replace(".", "", 1).isdigit() else None,
        ratelimit=ratelimit_headers(headers) if hasattr(headers, "get") else None,
    )
