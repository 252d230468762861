"""Teachers answer calls. One protocol says all the rest of the code may use; local vLLM and API
teachers implement it. `Sampling` and `Limits` are the settings every teacher has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol, runtime_checkable

from arbitrage.cost import Price
from arbitrage.errors import ConfigError
from arbitrage.rows import Call, Completion, stable_hash
from arbitrage.settings import number


@dataclass(frozen=True)
class Sampling:
    """How a teacher samples. Everything but `n` changes each answer, so `key()` is part of every
    call id; `n` only says how many samples (calls) a prompt gets, so raising it extends a run."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = 0
    n: int = 1
    logprobs: int | None = None  # top first-token log-probs to return (judges read them)
    # > 1 discourages repeating tokens (vLLM and servers built on it; not OpenAI's API): small
    # models otherwise loop until max_tokens (BENCHMARKS.md, "Defaults").
    repetition_penalty: float = 1.0
    # How `seed_for` derives a call's seed from `seed` (SEED_SCHEMES). A new derivation gets a new
    # number: the scheme is part of the call ids, so a resume never mixes samples of two schemes.
    seed_scheme: int = 1
    where: str = field(default="sampling", compare=False, repr=False)  # for error messages only

    def __post_init__(self):
        number(f"{self.where}.max_tokens", self.max_tokens, int, 1)
        number(f"{self.where}.temperature", self.temperature, float, 0, 100)
        number(f"{self.where}.top_p", self.top_p, float, 0, 1)
        number(f"{self.where}.n", self.n, int, 1)
        if self.seed is not None:
            number(f"{self.where}.seed", self.seed, int)
        if self.logprobs is not None:
            number(f"{self.where}.logprobs", self.logprobs, int, 1, 20)
        number(f"{self.where}.repetition_penalty", self.repetition_penalty, float, 0.5, 2)
        if self.seed_scheme not in SEED_SCHEMES:
            known = ", ".join(map(str, SEED_SCHEMES))
            raise ConfigError(f"{self.where}.seed_scheme must be one of {known}, got {self.seed_scheme!r}")
        if self.top_p == 0:
            raise ConfigError(f"{self.where}.top_p must be above 0, got 0")

    @classmethod
    def of(cls, value: Sampling | Mapping | None, where: str) -> Sampling:
        if isinstance(value, Sampling):
            return value
        value = dict(value or {})
        unknown = sorted(set(value) - {f.name for f in fields(cls)} - {"where"})
        if unknown:
            known = ", ".join(f.name for f in fields(cls) if f.name != "where")
            raise ConfigError(f"{where} has no setting {', '.join(unknown)} — known: {known}")
        return cls(**value, where=where)

    def key(self) -> dict:
        key = {k: v for k, v in asdict(self).items() if k not in ("n", "where")}
        if key["repetition_penalty"] == 1.0:
            del key["repetition_penalty"]  # the default: call ids stay those of runs that predate it
        if key["seed_scheme"] == 1:
            del key["seed_scheme"]  # the derivation runs had before it was named: their call ids stay
        return key

    def seed_for(self, prompt_id: str, sample: int) -> int | None:
        """A per-call seed: an answer is reproducible whatever batch or retry it lands in, and each
        sample of a prompt differs. Samples take consecutive seeds because a request with native `n`
        and seed s gives its i-th choice seed s + i (vLLM), so grouping never changes an answer
        (teachers/samples.py). Sample 0 keeps the seed runs had before samples existed."""
        if self.seed is None:
            return None
        return SEED_SCHEMES[self.seed_scheme](self.seed, prompt_id, sample)


# Seed derivations by number (`Sampling.seed_scheme`). Never change one in place: add a number.
SEED_SCHEMES = {
    1: lambda seed, prompt_id, sample: int(stable_hash(seed, prompt_id, length=8), 16) + sample,
}


@dataclass(frozen=True)
class Limits:
    """How hard the engine may drive a teacher."""

    max_concurrency: int = 16  # complete() calls in flight at once
    batch_size: int = 1  # calls per complete(): large for a local engine; an API's is its native n (or 1)
    rpm: float | None = None  # requests per minute
    tpm: float | None = None  # tokens per minute
    from_headers: bool = False  # learn and obey the server's x-ratelimit-* headers (API servers)
    native_n: bool = False  # a prompt's consecutive samples go out as one request: rpm counts requests, not calls
    where: str = field(default="teacher", compare=False, repr=False)

    def __post_init__(self):
        number(f"{self.where}.max_concurrency", self.max_concurrency, int, 1)
        number(f"{self.where}.batch_size", self.batch_size, int, 1)
        for key in ("rpm", "tpm"):
            if getattr(self, key) is not None:
                number(f"{self.where}.{key}", getattr(self, key), float, 1)

    @property
    def queue_size(self) -> int:
        """Room for two rounds of work: enough to keep the teacher busy, little to hold."""
        return 2 * self.max_concurrency * self.batch_size


@runtime_checkable
class Teacher(Protocol):
    name: str
    model: str
    sampling: Sampling
    limits: Limits
    price: Price | None  # None: nobody prices it, so a budget cannot bound it

    def identity(self) -> dict:
        """What decides the answers: model, where it is served (endpoint, or the weights' digest and
        the engine settings that change outputs), prompt template, `sampling.key()`."""

    def check(self) -> None:
        """Raise ConfigError naming the fix (missing key, missing model) — before any model loads."""

    async def start(self) -> None: ...

    async def complete(self, calls: Sequence[Call]) -> list[Completion]:
        """One Completion per call, in order. Failures come back as Completion(error=...)."""

    async def close(self) -> None: ...

    def stats(self) -> dict[str, float]:
        """Engine-side figures for the summary (load_s, generate_s); {} for API teachers."""

    def diagnose(self, completion: Completion) -> str:
        """One line for a failure that stops the run: what the server said and the likely fix."""


@runtime_checkable
class WaitsElsewhere(Protocol):
    """A teacher whose calls wait at the provider (Batch APIs, arbitrage/teachers/batch/teacher.py): it
    keeps its batch ledger beside the run's journal, and stops waiting when the run stops (the
    batches keep running there; the same command collects them)."""

    def attach_journal(self, directory: Path) -> None: ...

    def halt(self, reason: str) -> None: ...


@runtime_checkable
class KeepsLog(Protocol):
    """A teacher with a log of its own (the vLLM server it starts, arbitrage/teachers/vllm_server.py):
    the run tells it where, in the run folder."""

    def log_to(self, path: Path) -> None: ...


@runtime_checkable
class Preflight(Protocol):
    """A teacher that can check its endpoint without a run folder (`GET /models`, free on
    OpenAI-compatible servers): the pipeline asks it before claiming the folder, so a rejected key
    or a server that is down refuses the run without touching the folder."""

    async def preflight(self) -> None:
        """Raise TeacherUnusable naming the fix; on success `start` does not ask again."""


def teacher_key(teacher: Teacher) -> str:
    """The teacher part of every call id."""
    return stable_hash(teacher.identity())


def teacher_facts(teacher: Teacher) -> dict:
    """A teacher as the run resolved it, written to run.json: the report and the viewer read its
    kind, model, endpoint, price and sampling from here, whatever class it is."""
    identity = teacher.identity()
    return {
        "kind": type(teacher).__name__,
        "model": teacher.model,
        "endpoint": identity.get("endpoint"),
        "price": None if teacher.price is None else asdict(teacher.price),
        "sampling": asdict(teacher.sampling),
        "identity": identity,
    }
