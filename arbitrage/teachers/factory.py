"""Which teacher class a conf/teacher YAML builds: one place picks it, so the classes stay plain.

`api` (conf/teacher/api.yaml): `openai/<model>` over our aiohttp client (`OpenAICompatTeacher`)
when `fast_path`, every other provider string through litellm (`LiteLLMTeacher`). litellm costs
~4.5 ms of CPU per request here, ~18× a bare aiohttp client (BENCHMARKS.md). `openai_compat`: any
OpenAI-compatible server. Both can send through the provider's Batch API (`mode: batch`,
arbitrage/teachers/batch/). Local vLLM teachers (conf/teacher/smollm2.yaml) are `VLLMTeacher` in
this process, or `VLLMServerTeacher` on a vLLM server of their own (`serve: process`) or the
user's (`base_url`).
"""

from __future__ import annotations

from collections.abc import Mapping

from arbitrage.cost import Price, batch_price, online_price
from arbitrage.errors import ConfigError
from arbitrage.settings import choice
from arbitrage.teachers import Sampling, Teacher
from arbitrage.teachers.batch.settings import BatchSettings
from arbitrage.teachers.batch.teacher import BatchTeacher
from arbitrage.teachers.litellm_api import LiteLLMTeacher
from arbitrage.teachers.openai_compat import OpenAICompatTeacher
from arbitrage.teachers.vllm_local import VLLMTeacher
from arbitrage.teachers.vllm_server import VLLMServerTeacher

OPENAI_BASE_URL = "https://api.openai.com/v1"
# VLLMServerTeacher's settings that VLLMTeacher does not take; the YAMLs set them for both kinds.
SERVER_SETTINGS = ("start_timeout_s", "timeout_s", "log_dir", "gpus", "base_url", "served_model_name", "sleep_between_waves")


def local_teacher(serve: str = "inprocess", **settings) -> Teacher:
    """A local vLLM teacher: the engine in this process (`inprocess`: the fastest for one small model
    on CPU, BENCHMARKS.md), or a vLLM server of its own (`process`: one process per model, pinned to
    its `gpus`), or the user's server when `base_url` is set."""
    name = settings.get("name", "teacher")
    choice(f"teacher.{name}.serve", serve, ("inprocess", "process"))
    if serve == "process" or settings.get("base_url"):
        return VLLMServerTeacher(**settings)
    for key in ("gpus", "served_model_name", "sleep_between_waves"):
        if settings.get(key):
            raise ConfigError(f"teacher.{name}.{key} needs a server of its own — add teacher.{name}.serve=process")
    return VLLMTeacher(**{k: v for k, v in settings.items() if k not in SERVER_SETTINGS})


def api_teacher(
    name: str,
    model: str,
    api_key_env: str | None = None,
    api_base: str | None = None,
    sampling: Sampling | Mapping | None = None,
    timeout_s: float = 120.0,
    max_concurrency: int = 16,
    rpm: float | None = None,
    tpm: float | None = None,
    price: Mapping | Price | None = None,
    fast_path: bool = True,
    native_n: bool = True,
    mode: str = "online",
    batch: Mapping | None = None,
) -> Teacher:
    """The `api` teacher: `openai/<model>` over our aiohttp client when `fast_path`, else litellm.
    `mode: batch` sends through the provider's Batch API (arbitrage/teachers/batch/)."""
    if "/" not in str(model):
        raise ConfigError(f"teacher '{name}': model '{model}' needs a provider prefix, e.g. openai/gpt-4o-mini")
    online = online_price(price)  # without batch_discount, which only mode=batch reads
    if fast_path and model.startswith("openai/"):
        teacher = OpenAICompatTeacher(
            name,
            model.removeprefix("openai/"),
            api_base or OPENAI_BASE_URL,
            api_key_env=api_key_env,
            sampling=sampling,
            timeout_s=timeout_s,
            max_concurrency=max_concurrency,
            rpm=rpm,
            tpm=tpm,
            price=online,
            price_model=model,
            native_n=native_n,
        )
        return batch_mode(teacher, mode, batch, price, model)
    teacher = LiteLLMTeacher(name, model, api_key_env, api_base, sampling, timeout_s, max_concurrency, rpm, tpm, online, native_n)
    return batch_mode(teacher, mode, batch, price, model)


def openai_compat_teacher(mode: str = "online", batch: Mapping | None = None, price: Mapping | Price | None = None, **settings):
    """conf/teacher/openai_compat.yaml: the teacher online, or through the server's Batch API
    (`mode: batch`)."""
    online = OpenAICompatTeacher(price=online_price(price), **settings)
    return batch_mode(online, mode, batch, price, settings.get("price_model") or online.model)


def batch_mode(online: Teacher, mode: str, batch: Mapping | None, price: Mapping | Price | None, price_model: str) -> Teacher:
    """The teacher for `mode`: the online one as it is, or a BatchTeacher sending through it."""
    choice(f"teacher.{online.name}.mode", mode, ("online", "batch"))
    if mode == "online":
        return online
    if not isinstance(online, OpenAICompatTeacher):
        raise ConfigError(
            f"teacher '{online.name}': mode=batch needs the OpenAI-compatible client — use model openai/<name> with "
            "fast_path=true (api_base= for Together, Groq and other OpenAI-format batch APIs), or mode=online"
        )
    settings = BatchSettings.of(batch, f"teacher.{online.name}.batch")
    return BatchTeacher(online, settings, batch_price(price_model, online.base_url, price))
