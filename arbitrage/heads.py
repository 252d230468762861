"""Cheap scorers: a regression head on frozen sentence embeddings, FineWeb-Edu's classifier form.

FineWeb-Edu (arXiv 2406.17557) had Llama-3-70B rate 450k pages on an additive 0–5 rubric, fitted a
linear head on a frozen embedding model to those ratings, and ran only the head over 15 T tokens.
Here the same form predicts an expensive scorer's score of an answer (`kind="answer"`: a judge's
rating, a reward model's logit) or a rubric's rating of a prompt (`kind="prompt"`), so that the
expensive scorer sees only what the head cannot settle (scoring/cascade.py) and prompts no teacher
should be paid for are dropped first (quality/prompt_quality.py).

This module reads and applies a head; `arbitrage train-scorer` fits one (analysis/train_scorer.py).
Features: the embeddings (the packaged MiniLM in numpy, arbitrage/embeddings.py, or any
sentence-transformers model by name) and the text's length; for answers the answer's embedding, its
element-wise product with the prompt's (does the answer talk about what was asked) and whether it
was cut off. Applying the head is one small matrix product in numpy: far under the quality stage's
2 ms per item beside the embedding (bench/scorer_bench.py). Saved with torch.save as plain tensors,
lists and strings (`weights_only=True` loads it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from arbitrage import embeddings
from arbitrage.errors import ConfigError
from arbitrage.rows import Candidate, Prompt

KINDS = ("answer", "prompt")
HEADS = ("ridge", "mlp")
FORMAT = 1  # bump when the features change: an older file is refused with the command that rebuilds it


@functools.cache
def embedder(name: str) -> Callable[[Sequence[str]], np.ndarray]:
    """texts → unit-length float32 vectors. The packaged MiniLM needs no torch nor hub (and is what
    the learned router embeds with); any other name is loaded with sentence-transformers."""
    if name == embeddings.PACKAGE:
        return embeddings.embed_texts
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            f"embedder '{name}' needs sentence-transformers — pip install sentence-transformers, or use the packaged {embeddings.PACKAGE}"
        ) from None
    try:
        model = SentenceTransformer(name, device="cpu")
    except Exception as exc:  # not in the HF cache offline, a typo, not a sentence-transformers model
        raise ConfigError(
            f"embedder '{name}' could not be loaded ({type(exc).__name__}) — give a sentence-transformers model in the local HF cache "
            f"or a directory, or the packaged {embeddings.PACKAGE}"
        ) from None

    def embed(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
        return model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)

    return embed


def _length(texts: Sequence[str]) -> np.ndarray:
    """log(1 + words) / 8: about 0–1 for 0–3000 words, a scale the embeddings' coordinates share."""
    return np.array([[math.log1p(len(t.split())) / 8] for t in texts], dtype=np.float32)


def prompt_features(prompt_vectors: np.ndarray, prompts: Sequence[Prompt]) -> np.ndarray:
    return np.hstack([prompt_vectors, _length([p.user_text for p in prompts])])


def answer_features(prompt_vectors: np.ndarray, answer_vectors: np.ndarray, candidates: Sequence[Candidate]) -> np.ndarray:
    cut = np.array([[float(c.finish_reason == "length")] for c in candidates], dtype=np.float32).reshape(-1, 1)
    return np.hstack([answer_vectors, prompt_vectors * answer_vectors, _length([c.text or "" for c in candidates]), cut])


@dataclass
class HeadModel:
    """A fitted head and its training card (what it predicts, from which run, how well on held-out prompts)."""

    kind: str  # answer | prompt
    head: str  # ridge | mlp
    params: dict  # ridge: weight [d], bias [1]; mlp: w1 [d, h], b1 [h], w2 [h], b2 [1] (float64 tensors)
    embedder: str = embeddings.PACKAGE
    target: str = ""  # what it was fitted to: the run's reward (judge, reward_model, verifiable) or the rubric
    card: dict = field(default_factory=dict)  # sizes, held-out metrics, threshold, source
    train_prompts: list[str] = field(default_factory=list)  # prompt ids it was fitted on (in-sample use is flagged)
    format: int = FORMAT

    def __post_init__(self):
        if self.kind not in KINDS or self.head not in HEADS:
            raise ConfigError(
                f"a scorer model is kind {'/'.join(KINDS)} with head {'/'.join(HEADS)}, got {self.kind}/{self.head}"
            )
        self._arrays = {k: np.asarray(v, dtype=np.float64) for k, v in self.params.items()}

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Features [n, d] → predicted scores [n]."""
        p = self._arrays
        x = np.asarray(x, dtype=np.float64)
        if self.head == "ridge":
            return x @ p["weight"] + p["bias"][0]
        hidden = np.maximum(x @ p["w1"] + p["b1"], 0.0)
        return hidden @ p["w2"] + p["b2"][0]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embedder(self.embedder)(texts)

    def score_prompts(self, prompts: Sequence[Prompt], vectors: np.ndarray | None = None) -> np.ndarray:
        self._expect("prompt")
        if not prompts:
            return np.zeros(0)
        vectors = self.embed([p.user_text for p in prompts]) if vectors is None else vectors
        return self.apply(prompt_features(vectors, prompts))

    def score_answers(self, items: Sequence[tuple[Prompt, Candidate]]) -> np.ndarray:
        """Each (prompt, answer)'s predicted score. A prompt with several answers is embedded once."""
        self._expect("answer")
        if not items:
            return np.zeros(0)
        texts = list(dict.fromkeys(p.user_text for p, _ in items))
        row = {t: i for i, t in enumerate(texts)}
        prompt_vectors = self.embed(texts)[[row[p.user_text] for p, _ in items]]
        answer_vectors = self.embed([c.text or "" for _, c in items])
        return self.apply(answer_features(prompt_vectors, answer_vectors, [c for _, c in items]))

    def _expect(self, kind: str) -> None:
        if self.kind != kind:
            other = "train-scorer RUN_DIR" if kind == "answer" else "train-prompt-scorer"
            raise ConfigError(f"this scorer model scores {self.kind}s, not {kind}s — build one with `arbitrage {other}`")

    def save(self, path: Path) -> None:
        import torch

        state = asdict(self)
        state["params"] = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in self.params.items()}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)

    @classmethod
    def load(cls, path: Path | str, kind: str) -> HeadModel:
        import torch

        path = Path(path)
        rebuild = "arbitrage train-scorer RUN_DIR" if kind == "answer" else "arbitrage train-prompt-scorer ..."
        if not path.is_file():
            raise ConfigError(f"scorer model {path} does not exist — build it with `{rebuild}`")
        try:
            state = torch.load(path, weights_only=True)
            state["params"] = {k: v.numpy() for k, v in state["params"].items()}
            model = cls(**state)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{path} is not a scorer model ({type(exc).__name__}) — rebuild it with `{rebuild}`") from None
        if model.format != FORMAT:
            raise ConfigError(f"{path} was written by another release (format {model.format}) — rebuild it with `{rebuild}`")
        model._expect(kind)
        return model
