"""Teachers behind any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, Ollama, TGI, …).

One shared aiohttp session per teacher: measured here, its per-request CPU is a fraction of
httpx's or the openai SDK's (BENCHMARKS.md, client overhead), and at concurrency 100 the client's
CPU is what bounds throughput. A request error becomes a Completion with `error` and the HTTP status
so the engine can decide to retry (and honour Retry-After).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import aiohttp

from arbitrage.cost import Price, api_price
from arbitrage.errors import ConfigError, TeacherUnusable
from arbitrage.rows import Call, Completion, Prompt
from arbitrage.settings import number
from arbitrage.teachers import Limits, Sampling, reasoning
from arbitrage.teachers.diagnose import explain, not_a_completion, refused
from arbitrage.teachers.samples import NativeN, split_usage

log = logging.getLogger(__name__)


def api_key_from_env(teacher: str, api_key_env: str | None, required: bool) -> str | None:
    """Keys live only in the environment; config names the variable, never the key."""
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env)
    if required and not key:
        raise ConfigError(
            f"teacher '{teacher}': environment variable {api_key_env} is not set — "
            f"export {api_key_env}=... or set teacher.{teacher}.api_key_env"
        )
    return key


def retry_after_seconds(headers) -> float | None:
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            return None
    try:
        return float(headers["retry-after"]) if "retry-after" in headers else None
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s") or plain seconds → seconds."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[unit] for n, unit in parts)


def ratelimit_headers(headers) -> dict | None:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (OpenAI, Azure, Groq, vLLM proxies)."""
    found = {}
    for kind in ("requests", "tokens"):
        for what in ("limit", "remaining"):
            value = headers.get(f"x-ratelimit-{what}-{kind}")
            if value is not None:
                try:
                    found[f"{what}_{kind}"] = float(value)
                except ValueError:
                    pass
        reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
        if reset is not None:
            found[f"reset_{kind}_s"] = reset
    return found or None


def parse_choices(body: dict, n: int) -> list[Completion | None]:
    """The answers to a request with `n` choices, by choice index (None where the server sent no such
    choice). Usage covers the whole request: its prompt tokens go on the first answer (the prompt was
    read once) and its completion tokens are shared out by characters (`split_usage`). A thinking
    model's reasoning, in its own field or in `<think>` tags, is split from the answer (`reasoning.split`);
    its tokens stay in the completion tokens, as servers bill them."""
    usage = body.get("usage") or {}
    by_index: dict[int, dict] = {}
    for position, choice in enumerate(body["choices"]):
        index = choice.get("index", position)
        if isinstance(index, int) and 0 <= index < n:
            by_index.setdefault(index, choice)
    if not by_index:
        raise IndexError("no choices in the response")
    # /chat/completions answers in message.content, /completions in text
    texts = {i: ((c["message"].get("content") if "message" in c else c["text"]) or "").strip() for i, c in by_index.items()}
    split = {i: reasoning.split(texts[i], _reasoning_field(c)) for i, c in by_index.items()}
    said = [a + (r or "") for a, r in split.values()]  # what each choice generated, thinking included
    shares = dict(zip(texts, split_usage(int(usage.get("completion_tokens") or 0), said), strict=True))
    reported = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    thought = dict(zip(texts, reasoning.spread(int(reported or 0), [r for _, r in split.values()]), strict=True))
    answers: list[Completion | None] = [None] * n
    for i, choice in by_index.items():
        top = None
        logprobs = choice.get("logprobs") or {}
        if logprobs.get("content"):
            top = [{"token": t["token"], "logprob": t["logprob"]} for t in logprobs["content"][0].get("top_logprobs", [])]
        elif logprobs.get("top_logprobs"):  # /completions: {token: logprob} per position
            top = [{"token": t, "logprob": lp} for t, lp in (logprobs["top_logprobs"][0] or {}).items()]
        answer, thinking = split[i]
        answers[i] = Completion(  # no content (a filtered answer): the engine records an empty answer
            text=answer,
            finish_reason=choice.get("finish_reason"),
            tokens_in=int(usage.get("prompt_tokens") or 0) if i == min(by_index) else 0,
            tokens_out=shares[i],
            logprobs=top,
            reasoning=thinking,
            reasoning_tokens=reasoning.reasoning_share(shares[i], thinking, answer, thought[i] if reported else None),
        )
    return answers


def _reasoning_field(choice: dict) -> str | None:
    """`reasoning_content` (DeepSeek's API, litellm, vLLM < 0.10) or `reasoning` (vLLM >= 0.10, OpenRouter)."""
    message = choice.get("message") or {}
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else None


class OpenAICompatTeacher:
    def __init__(
        self,
        name: str,
        model: str,
        base_url: str,
        api_key_env: str | None = None,
        sampling: Sampling | Mapping | None = None,
        timeout_s: float = 120.0,
        max_concurrency: int = 16,
        rpm: float | None = None,  # requests per minute (None: learnt from x-ratelimit-* headers)
        tpm: float | None = None,  # tokens per minute
        price: Mapping | Price | None = None,  # {input_per_mtok, output_per_mtok}; None: litellm's price map
        price_model: str | None = None,  # the name to look up in the price map (default: model)
        native_n: bool = True,  # a prompt's samples as one request with `n` (false: servers that mishandle it)
        stop: Sequence[str] = (),  # stop strings, sent with every request
        render: Callable[[Prompt], str] | None = None,  # set: /completions with this raw text (base models), not chat
    ):
        self.name = name
        self.model = model
        self.base_url = str(base_url).rstrip("/")
        self.api_key_env = api_key_env
        self.sampling = Sampling.of(sampling, f"teacher.{name}.sampling")
        native = bool(native_n) and self.sampling.n > 1
        # A batch of n calls holds a prompt's samples (the engine never splits them), sent as one request.
        batch = self.sampling.n if native else 1
        self.limits = Limits(max_concurrency, batch, rpm, tpm, from_headers=True, native_n=native, where=f"teacher.{name}")
        self.timeout_s = number(f"teacher.{name}.timeout_s", timeout_s, float, 0.1)
        self.price = api_price(price_model or model, self.base_url, price)
        self.stop, self.render = list(stop), render
        self._native = NativeN.of(self)
        self._session: aiohttp.ClientSession | None = None
        self._preflighted = False  # the endpoint checks passed (`preflight`, before the folder was claimed)
        self.served: dict[str, dict] = {}  # /models' entries by id, read at start (vLLM's carry max_model_len)

    def identity(self) -> dict:
        identity = {"api": "openai-compatible", "model": self.model, "endpoint": self.base_url, "sampling": self.sampling.key()}
        return identity | ({"stop": self.stop} if self.stop else {})  # without stop strings: the ids of earlier runs

    def check(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"teacher '{self.name}': base_url must start with http:// or https://, got '{self.base_url}'")
        api_key_from_env(self.name, self.api_key_env, required=True)

    def stats(self) -> dict[str, float]:
        return {}

    def diagnose(self, completion: Completion) -> str:
        return explain(self.name, self.base_url, self.api_key_env, self.model, completion)

    async def start(self) -> None:
        if self._session is None:
            headers = {"Content-Type": "application/json"}
            key = api_key_from_env(self.name, self.api_key_env, required=True)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                connector=aiohttp.TCPConnector(limit=self.limits.max_concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),  # a hung request becomes a retryable timeout
            )
            self._url = f"{self.base_url}/{'completions' if self.render else 'chat/completions'}"
            if not self._preflighted:
                await self._preflight()

    async def preflight(self) -> None:
        """`start`'s endpoint checks on a session of their own, before the run folder is claimed
        (arbitrage/pipeline.py): a refused run never touches the folder, and `start` does not ask again."""
        try:
            await self.start()
        finally:
            await self.close()
        self._preflighted = True

    async def _preflight(self) -> None:
        """GET /models before the first call (free on every OpenAI-compatible server): a wrong key,
        URL or port then costs no prompt. A run asks it before claiming its folder (`preflight`);
        an Engine used on its own, when the first call is sent."""
        try:
            async with self._session.get(f"{self.base_url}/models", timeout=aiohttp.ClientTimeout(total=10)) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            failed = Completion(None, error=f"{type(exc).__name__}: {exc}")
            if refused(failed):
                raise TeacherUnusable(self.diagnose(failed)) from None
            return  # a slow or odd /models says nothing about chat completions: the calls will tell
        failed = Completion(None, error=f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}", status=status)
        if status == 401 or (status == 404 and self.base_url.endswith("/chat/completions")):
            raise TeacherUnusable(self.diagnose(failed))
        if status == 403:  # a restricted key may call chat completions without the right to list models
            log.warning(
                "teacher %s: %s/models answered 403 — going on; the circuit breaker stops the run if chat completions refuse too",
                self.name,
                self.base_url,
            )
            return
        if status == 200:
            try:
                self.served = {m.get("id"): m for m in json.loads(raw).get("data", []) if isinstance(m, dict)}
            except (ValueError, AttributeError):
                return
            served = list(self.served)
            max_len = self.served.get(self.model, {}).get("max_model_len")
            if isinstance(max_len, int) and self.sampling.max_tokens >= max_len:
                raise TeacherUnusable(
                    f"teacher '{self.name}': sampling.max_tokens={self.sampling.max_tokens} leaves no room for a prompt in "
                    f"{self.base_url}'s max_model_len {max_len} — lower teacher.{self.name}.sampling.max_tokens"
                )
            if served and self.model not in served:
                log.warning(
                    "teacher %s: %s does not list model '%s' (it lists %s)",
                    self.name,
                    self.base_url,
                    self.model,
                    ", ".join(map(str, served[:8])),
                )

    def _body(self, call: Call, n: int = 1) -> dict:
        """The request for `n` consecutive samples from `call`'s (its seed: the first one's)."""
        s = self.sampling
        body = {
            "model": self.model,
            **({"prompt": self.render(call.prompt)} if self.render else {"messages": list(call.prompt.messages)}),
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if n > 1:
            body["n"] = n
        seed = s.seed_for(call.prompt.prompt_id, call.sample)
        if seed is not None:
            body["seed"] = seed
        if self.stop:
            body["stop"] = self.stop
        if s.logprobs:  # /completions takes the number of top log-probs in `logprobs`
            body |= {"logprobs": s.logprobs} if self.render else {"logprobs": True, "top_logprobs": s.logprobs}
        if s.repetition_penalty != 1.0:  # vLLM, TGI and llama.cpp servers take it; OpenAI's API does not
            body["repetition_penalty"] = s.repetition_penalty
        return body

    async def _send(self, calls: Sequence[Call]) -> list[Completion | None]:
        """One request for consecutive samples of one prompt: an answer per call (None: no such
        choice came back), or the request's failure for every call."""
        assert self._session is not None, "start() first"
        n = len(calls)
        try:
            async with self._session.post(self._url, data=json.dumps(self._body(calls[0], n))) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # timeouts, refused and dropped connections: retryable
            return [Completion(text=None, error=f"{type(exc).__name__}: {exc}".rstrip(": "))] * n
        if status != 200:
            failed = Completion(
                text=None,
                error=f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}",
                status=status,
                retry_after=retry_after_seconds(headers),
                ratelimit=ratelimit_headers(headers),
            )
            return [failed] * n
        try:
            body = json.loads(raw)
        except ValueError as exc:  # cut short or not JSON: a torn transfer, retried
            return [Completion(text=None, error=f"invalid response body: {exc!r}"[:300], status=200)] * n
        try:
            answers = parse_choices(body, n)
        except (KeyError, IndexError, TypeError, AttributeError):  # JSON, but no chat completion: the server's own answer
            return [Completion(text=None, error=not_a_completion(body), status=200)] * n
        limits = ratelimit_headers(headers)
        return [replace(a, ratelimit=limits) if a is not None else None for a in answers]

    async def complete(self, calls: Sequence[Call]) -> list[Completion]:
        return await self._native.complete(calls, self._send)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
