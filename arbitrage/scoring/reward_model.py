"""A sequence-classification reward model (Skywork-Reward, ArmoRM, … or your own) via transformers.

The (prompt, response) conversation is rendered with the reward model's chat template when it
has one; the first logit is the reward. Runs on GPU when one is present.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from arbitrage.errors import ConfigError
from arbitrage.rows import Call, Candidate, Prompt
from arbitrage.scoring import Item, Score
from arbitrage.settings import choice, number, text

log = logging.getLogger(__name__)


class RewardModelScorer:
    name = "reward_model"

    def __init__(self, model: str, batch_size: int = 8, max_length: int = 2048, device: str = "auto", dtype: str = "auto"):
        self.model_name = text("reward.model", model, optional=False)
        self.batch_size = number("reward.batch_size", batch_size, int, 1)
        self.max_length = number("reward.max_length", max_length, int, 1)
        self.device = text("reward.device", device, optional=False)
        self.dtype = choice("reward.dtype", dtype, ("auto", "float32", "bfloat16"))
        self._model = None
        self._tokenizer = None
        self.teachers = {}  # a local model: no engine calls

    def check(self) -> None:
        import os

        path = Path(self.model_name)
        looks_local = self.model_name.startswith((".", "/", "~")) or path.exists()
        if looks_local and not (path.expanduser() / "config.json").exists():
            raise ConfigError(
                f"reward model directory '{self.model_name}' has no config.json — set reward.model to a model dir or hub id"
            )
        if not looks_local and os.environ.get("HF_HUB_OFFLINE") == "1":
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(self.model_name, "config.json"), str):
                raise ConfigError(
                    f"reward model '{self.model_name}' is not in the local HF cache and HF_HUB_OFFLINE=1 — download it first or point reward.model at a local dir"
                )
        self._load()  # before any teacher is called: a model without a trained head is refused here

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {
            "auto": torch.bfloat16 if device == "cuda" else torch.float32,
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
        }[self.dtype]
        if self._model is not None:
            return
        from transformers.utils import logging as hf_logging

        # Our own error line says what a missing head means; transformers' load report and
        # progress bars would bury it.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        model, info = AutoModelForSequenceClassification.from_pretrained(self.model_name, dtype=dtype, output_loading_info=True)
        # transformers fills weights a checkpoint lacks with random numbers (a base model has no
        # score head): such a "reward" would rank answers at random.
        if info["missing_keys"]:
            missing = ", ".join(sorted(info["missing_keys"])[:3])
            raise ConfigError(
                f"reward model '{self.model_name}' has no trained classification head ({missing} would be random) — "
                "set reward.model to a reward model, e.g. Skywork/Skywork-Reward-V2-Llama-3.1-8B"
            )
        self._model = model.to(device).eval()
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token or self._tokenizer.unk_token
        if self._model.config.pad_token_id is None:
            self._model.config.pad_token_id = self._tokenizer.pad_token_id

    def render(self, prompt: Prompt, candidate: Candidate) -> str:
        conversation = [*prompt.messages, {"role": "assistant", "content": candidate.text or ""}]
        if getattr(self._tokenizer, "chat_template", None):
            return self._tokenizer.apply_chat_template(conversation, tokenize=False)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in conversation)

    def _score_sync(self, items: Sequence[tuple[Prompt, Candidate]]) -> list[Score]:
        import torch

        if self._model is None:
            self._load()
        scores: list[Score] = []
        for i in range(0, len(items), self.batch_size):
            texts = [self.render(p, c) for p, c in items[i : i + self.batch_size]]
            batch = self._tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
            batch = {k: v.to(self._model.device) for k, v in batch.items()}
            with torch.inference_mode():
                logits = self._model(**batch).logits
            scores.extend(Score(round(float(v), 6)) for v in logits[:, 0].float().cpu())
        return scores

    def calls(self, items: Sequence[Item]) -> list[Call]:
        return []

    async def score(self, items: Sequence[Item], answers: Mapping[str, Candidate] | None = None) -> list[Score]:
        return await asyncio.to_thread(self._score_sync, items)

    async def close(self) -> None:
        self._model = None
