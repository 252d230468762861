"""API teachers through litellm: any provider string (`openai/gpt-4o-mini`, `anthropic/...`).

litellm costs ~4.5 ms of CPU per request here, ~18× a bare aiohttp client (BENCHMARKS.md), so at
high concurrency it caps throughput. `openai/...` models are plain OpenAI-compatible calls: with
`fast_path` (the default) they go through the aiohttp client of `OpenAICompatTeacher` instead, to
`api_base` or OpenAI's endpoint. Every other provider goes through litellm.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from arbitrage.errors import ConfigError
from arbitrage.rows import Completion, Prompt
from arbitrage.teachers import prompt_seed
from arbitrage.teachers.openai_compat import OpenAICompatTeacher, api_key_from_env, ratelimit_headers

# litellm fetches its price map from the network at import unless told not to (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
OPENAI_BASE_URL = "https://api.openai.com/v1"


class LiteLLMTeacher:
    batch_size = 1

    def __init__(
        self,
        name: str,
        model: str,
        api_key_env: str | None = None,
        api_base: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int | None = 0,
        timeout_s: float = 120.0,
        max_concurrency: int = 16,
        top_logprobs: int | None = None,
        rpm: float | None = None,  # requests per minute (None: learnt from x-ratelimit-* headers)
        tpm: float | None = None,  # tokens per minute
        fast_path: bool = True,  # openai/... models over our aiohttp client rather than litellm
    ):
        self.name = name
        self.model = model
        self.api_key_env = api_key_env
        self.api_base = api_base
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.top_logprobs = top_logprobs
        self.rpm, self.tpm = rpm, tpm
        self.fast_path = fast_path
        self._key: str | None = None
        self._direct: OpenAICompatTeacher | None = None

    def check(self) -> None:
        if "/" not in self.model:
            raise ConfigError(f"teacher '{self.name}': model '{self.model}' needs a provider prefix, e.g. openai/gpt-4o-mini")
        api_key_from_env(self.name, self.api_key_env, required=True)

    def generation_key(self) -> dict:
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }

    @property
    def direct(self) -> bool:
        """Whether calls skip litellm (same requests, same answers: the generation key is unchanged)."""
        return self.fast_path and self.model.startswith("openai/")

    async def start(self) -> None:
        self._key = api_key_from_env(self.name, self.api_key_env, required=True)
        if self.direct and self._direct is None:
            self._direct = OpenAICompatTeacher(
                self.name,
                self.model.removeprefix("openai/"),
                self.api_base or OPENAI_BASE_URL,
                api_key_env=self.api_key_env,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self.seed,
                timeout_s=self.timeout_s,
                max_concurrency=self.max_concurrency,
                top_logprobs=self.top_logprobs,
            )
            await self._direct.start()

    async def _one(self, prompt: Prompt) -> Completion:
        import litellm

        kwargs = {}
        if self.seed is not None:
            kwargs["seed"] = prompt_seed(self.seed, prompt)
        if self.top_logprobs:
            kwargs |= {"logprobs": True, "top_logprobs": self.top_logprobs}
        try:
            response = await litellm.acompletion(
                model=self.model,
                messages=list(prompt.messages),
                api_key=self._key,
                api_base=self.api_base,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                timeout=self.timeout_s,
                num_retries=0,  # the engine retries, with one policy for every teacher
                **kwargs,
            )
        except Exception as exc:  # litellm maps provider errors onto its own classes
            status = getattr(exc, "status_code", None)
            headers = getattr(getattr(exc, "response", None), "headers", None) or {}
            retry_after = headers.get("retry-after") if hasattr(headers, "get") else None
            return Completion(
                text=None,
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                status=status if isinstance(status, int) else None,
                retry_after=float(retry_after) if retry_after and str(retry_after).replace(".", "", 1).isdigit() else None,
                ratelimit=ratelimit_headers(headers) if hasattr(headers, "get") else None,
            )
        choice = response.choices[0]
        content = choice.message.content
        if content is None:
            return Completion(text=None, error="response had no message content", finish_reason=choice.finish_reason)
        top = None
        logprobs = getattr(choice, "logprobs", None)
        if logprobs is not None and getattr(logprobs, "content", None):
            top = [{"token": t.token, "logprob": t.logprob} for t in logprobs.content[0].top_logprobs]
        usage = getattr(response, "usage", None)
        # litellm passes the provider's headers on with an "llm_provider-" prefix.
        provider = (getattr(response, "_hidden_params", None) or {}).get("additional_headers") or {}
        headers = {k.removeprefix("llm_provider-"): v for k, v in provider.items()}
        return Completion(
            text=content.strip(),
            finish_reason=choice.finish_reason,
            tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
            tokens_out=getattr(usage, "completion_tokens", 0) or 0,
            logprobs=top,
            ratelimit=ratelimit_headers(headers),
        )

    async def complete(self, prompts: Sequence[Prompt]) -> list[Completion]:
        if self._direct is not None:
            return await self._direct.complete(prompts)
        return [await self._one(p) for p in prompts]

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()
            self._direct = None
