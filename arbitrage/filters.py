"""The quality stage: filters that drop prompts before generation and answers after it.

Each filter looks at a whole stage at once (dedup needs every item) and returns what it drops,
with a reason: nothing is discarded silently. Stages:

- `prompt`: Prompt rows before routing — dedup and decontamination save teacher calls.
- `completion`: (Prompt, Candidate) before scoring — truncated, refusals, wrong language, loops.
- `output`: (Prompt, Scored) of each prompt's chosen answer — reward below a threshold, and
  dedup of the answers we keep.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from arbitrage import constraints as C
from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt

# Multilingual refusal / assistant boilerplate (en, es, fr, de, pt, it).
REFUSALS = [
    r"\bas an ai\b",
    r"\bi(?: am|'m) (?:just )?an? (?:ai|language model)\b",
    r"\bi(?: am|'m) (?:sorry|afraid),? (?:but )?i (?:can(?:no|')t|am unable)",
    r"\bi can(?:no|')t (?:help|assist|provide|answer) (?:with )?(?:that|this)",
    r"\bcomo (?:una? )?(?:ia|inteligencia artificial|modelo de lenguaje)\b",
    r"\blo siento,? pero no puedo\b",
    r"\ben tant qu'(?:ia|intelligence artificielle|assistant)\b",
    r"\bje suis désolée?,? mais je ne peux pas\b",
    r"\bals (?:ki|künstliche intelligenz|sprachmodell)\b",
    r"\btut mir leid,? aber ich kann\b",
    r"\bcomo (?:uma )?(?:ia|inteligência artificial|modelo de linguagem)\b",
    r"\bdesculpe,? mas não posso\b",
    r"\bcome (?:un'?)?(?:ia|intelligenza artificiale|modello linguistico)\b",
    r"\bmi dispiace,? ma non posso\b",
]


def normalise(text: str) -> str:
    """Casefolded, accents and punctuation kept apart from words, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"\w+", text))


@runtime_checkable
class Filter(Protocol):
    name: str
    stage: str  # prompt | completion | output

    def check(self) -> None:
        """Raise ConfigError naming the fix (a missing eval file, a bad threshold)."""

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        """Indexes of the items to drop, each with a reason."""


def _text(item: Any, field: str) -> str:
    """The text a filter looks at: a prompt's user message or an answer."""
    if isinstance(item, Prompt):
        return item.user_text
    prompt, answer = item
    if field == "prompt":
        return prompt.user_text
    candidate = getattr(answer, "candidate", answer)
    return candidate.text or ""


class ExactDedup:
    """Drops items whose normalised text was already seen (the first one stays)."""

    name = "exact_dedup"

    def __init__(self, stage: str = "prompt", field: str = "prompt", name: str | None = None):
        self.stage, self.field = stage, field
        self.name = name or self.name
        self._seen: dict[int, int] = {}  # text hash → the item number that kept it
        self._count = 0

    def check(self) -> None:
        return None

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        """Stateful across calls: a run streams its items through in chunks."""
        dropped = {}
        for i, item in enumerate(items):
            key = int(hashlib.sha256(normalise(_text(item, self.field)).encode()).hexdigest()[:16], 16)
            if key in self._seen:
                dropped[i] = f"{self.name}: same {self.field} text as item {self._seen[key]}"
            else:
                self._seen[key] = self._count + i
        self._count += len(items)
        return dropped


def shingles(text: str, size: int) -> set[str]:
    words = normalise(text).split()
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


class MinHash:
    """MinHash signatures over word shingles (Broder 1997) with one universal hash family."""

    PRIME = (1 << 61) - 1

    def __init__(self, num_perm: int = 128, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, self.PRIME, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, self.PRIME, num_perm, dtype=np.uint64)

    def signature(self, items: set[str]) -> np.ndarray:
        if not items:
            return np.full(len(self.a), np.iinfo(np.uint64).max, dtype=np.uint64)
        x = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=7).digest(), "big") for s in items], dtype=np.uint64)
        # (a·x + b) mod p on 64 bits wraps, which is fine for hashing: only the order matters.
        return ((np.outer(x, self.a) + self.b) % self.PRIME).min(axis=0)


class NearDedup:
    """MinHash LSH near-duplicate removal: a later item whose estimated Jaccard similarity with a
    kept one reaches `threshold` is dropped. Bands × rows = num_perm set the LSH S-curve."""

    name = "near_dedup"

    def __init__(
        self,
        stage: str = "prompt",
        field: str = "prompt",
        threshold: float = 0.9,
        shingle: int = 3,
        num_perm: int = 128,
        bands: int = 32,
        name: str | None = None,
    ):
        self.stage, self.field = stage, field
        self.name = name or self.name
        self.threshold, self.shingle, self.num_perm, self.bands = threshold, shingle, num_perm, bands
        # Stateful across calls (a run streams items through in chunks): ~1 KB per kept item.
        self._buckets: dict[tuple, list[int]] = defaultdict(list)
        self._kept: dict[int, np.ndarray] = {}
        self._count = 0

    def check(self) -> None:
        if not 0 < self.threshold <= 1 or self.num_perm % self.bands:
            raise ConfigError(
                f"near_dedup: threshold must be in (0, 1] and num_perm a multiple of bands, got {self.threshold}, {self.num_perm}/{self.bands}"
            )

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        hasher = MinHash(self.num_perm)
        rows = self.num_perm // self.bands
        buckets, kept = self._buckets, self._kept
        dropped = {}
        for index, item in enumerate(items):
            i = self._count + index
            sig = hasher.signature(shingles(_text(item, self.field), self.shingle))
            keys = [(band, sig[band * rows : (band + 1) * rows].tobytes()) for band in range(self.bands)]
            candidates = {j for key in keys for j in buckets.get(key, ())}
            match = next((j for j in sorted(candidates) if float(np.mean(kept[j] == sig)) >= self.threshold), None)
            if match is not None:
                dropped[index] = f"{self.name}: ~{float(np.mean(kept[match] == sig)):.2f} similar to item {match}"
                continue
            kept[i] = sig
            for key in keys:
                buckets[key].append(i)
        self._count += len(items)
        return dropped


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _eval_records(path: Path) -> Iterable[dict]:
    if path.is_dir():
        import datasets

        loaded = (
            datasets.load_from_disk(str(path))
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
            else datasets.load_dataset(str(path))
        )
        splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
        for split in splits:
            yield from split
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    else:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


class Decontaminate:
    """Drops items sharing an n-gram with an evaluation set (13 words, as Tulu 3 does)."""

    name = "decontaminate"

    def __init__(
        self, eval_files: Sequence[str] = (), n: int = 13, stage: str = "prompt", field: str = "prompt", name: str | None = None
    ):
        self.eval_files = [Path(p) for p in eval_files]
        self.name = name or self.name
        self.n, self.stage, self.field = n, stage, field
        self._index: dict[int, str] | None = None

    def check(self) -> None:
        for path in self.eval_files:
            if not path.exists():
                raise ConfigError(f"decontamination eval set '{path}' does not exist — fix filters.decontaminate.eval_files")

    def _ngrams(self, text: str) -> set[int]:
        words = normalise(text).split()
        return {hash(" ".join(words[i : i + self.n])) for i in range(len(words) - self.n + 1)}

    def index(self) -> dict[int, str]:
        if self._index is None:
            self._index = {}
            for path in self.eval_files:
                for record in _eval_records(path):
                    for text in _strings(record):
                        for gram in self._ngrams(text):
                            self._index.setdefault(gram, path.name)
        return self._index

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        index = self.index()
        dropped = {}
        for i, item in enumerate(items):
            hit = next((index[g] for g in self._ngrams(_text(item, self.field)) if g in index), None)
            if hit:
                dropped[i] = f"{self.name}: {self.n}-gram overlap with {hit}"
        return dropped


class _PerItem:
    """Base for filters that judge each item alone."""

    name = "per_item"
    stage = "completion"

    def __init__(self, name: str | None = None):
        self.name = name or self.name

    def check(self) -> None:
        return None

    def reason(self, item: Any) -> str | None:
        raise NotImplementedError

    def drop(self, items: Sequence[Any]) -> dict[int, str]:
        return {i: f"{self.name}: {why}" for i, item in enumerate(items) if (why := self.reason(item))}


class Truncated(_PerItem):
    """Answers cut off at max_tokens (finish_reason == "length")."""

    name = "truncated"

    def reason(self, item: Any) -> str | None:
        return "cut off at max_tokens" if item[1].finish_reason == "length" else None


class Length(_PerItem):
    name = "length"

    def __init__(self, min_words: int = 1, max_words: int = 2000, name: str | None = None):
        super().__init__(name)
        self.min_words, self.max_words = min_words, max_words

    def reason(self, item: Any) -> str | None:
        count = len(C.words(_text(item, "response")))
        if count < self.min_words:
            return f"{count} words < {self.min_words}"
        if count > self.max_words:
            return f"{count} words > {self.max_words}"
        return None


class Refusal(_PerItem):
    """Refusals and "as an AI" boilerplate, in the six persona languages."""

    name = "refusal"

    def __init__(self, patterns: Sequence[str] | None = None, name: str | None = None):
        super().__init__(name)
        self.pattern = re.compile("|".join(patterns or REFUSALS), re.IGNORECASE)

    def reason(self, item: Any) -> str | None:
        match = self.pattern.search(_text(item, "response"))
        return f"matches '{match.group(0)}'" if match else None


class WrongLanguage(_PerItem):
    """The answer is not in the prompt's language. Short, code and math answers are skipped:
    language ID is unreliable on them."""

    name = "wrong_language"

    def __init__(self, min_words: int = 8, skip_tasks: Sequence[str] = ("code", "math"), name: str | None = None):
        super().__init__(name)
        self.min_words, self.skip_tasks = min_words, set(skip_tasks)

    def reason(self, item: Any) -> str | None:
        prompt, _ = item
        text = _text(item, "response")
        if prompt.task in self.skip_tasks or len(C.words(text)) < self.min_words:
            return None
        found = C.detect_language(re.sub(r"```.*?```", " ", text, flags=re.DOTALL))
        return f"answer is '{found}', prompt is '{prompt.language}'" if found and found != prompt.language else None


class Repetition(_PerItem):
    """Empty answers and degenerate loops: too large a share of repeated word n-grams."""

    name = "repetition"

    def __init__(self, n: int = 4, max_repeated: float = 0.3, name: str | None = None):
        super().__init__(name)
        self.n, self.max_repeated = n, max_repeated

    def repeated_share(self, text: str) -> float:
        words = normalise(text).split()
        grams = [" ".join(words[i : i + self.n]) for i in range(len(words) - self.n + 1)]
        return 1 - len(set(grams)) / len(grams) if grams else 0.0

    def reason(self, item: Any) -> str | None:
        text = _text(item, "response")
        if not text.strip():
            return "empty answer"
        share = self.repeated_share(text)
        return f"{share:.0%} of {self.n}-grams repeated" if share > self.max_repeated else None


class MinReward(_PerItem):
    """Chosen answers whose reward is below `threshold`: the prompt goes to rejected_rows.
    Only the chosen side is filtered; a low-reward answer is still a useful DPO `rejected`."""

    name = "min_reward"
    stage = "output"

    def __init__(self, threshold: float, name: str | None = None):
        super().__init__(name)
        self.threshold = threshold

    def reason(self, item: Any) -> str | None:
        score = item[1].score
        return f"reward {score:.3f} < {self.threshold}" if score < self.threshold else None


def apply(filters: Sequence[Filter], stage: str, items: list, counts: dict[str, int]) -> tuple[list, dict[int, str]]:
    """Run a stage's filters in order; returns the kept items and {original index: reason}."""
    reasons: dict[int, str] = {}
    index = list(range(len(items)))
    for f in filters:
        if f.stage != stage:
            continue
        current = [items[i] for i in index]
        dropped = f.drop(current)
        counts[f.name] = counts.get(f.name, 0) + len(dropped)
        for j, why in dropped.items():
            reasons[index[j]] = why
        index = [i for j, i in enumerate(index) if j not in dropped]
    return [items[i] for i in index], reasons
