"""Where a run's prompts come from: persona synthesis or a JSONL file of your own.

A source is checked before anything loads (a bad line is one error naming it), has a `digest()`
that identifies its prompt stream for resume, and iterates lazily: memory stays flat in its length.
`n_prompts` is not part of the digest: the stream does not depend on it, so a larger `n_prompts`
extends a run. `PromptWriter` is the PersonaHub stage that has a teacher write each request.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from arbitrage import personas
from arbitrage.errors import ConfigError
from arbitrage.rows import Prompt, make_call, stable_hash
from arbitrage.settings import number, text

log = logging.getLogger(__name__)


@runtime_checkable
class Source(Protocol):
    n_prompts: int

    def check(self) -> None:
        """Raise ConfigError naming the fix (a bad persona file, a bad prompt line)."""

    def digest(self) -> str:
        """What identifies the prompt stream (not how much of it is drawn)."""

    def __iter__(self) -> Iterator[Prompt]: ...


def check_n_prompts(n_prompts) -> int:
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts <= 0:
        raise ConfigError(f"n_prompts must be a positive integer, got {n_prompts!r} — e.g. n_prompts=32")
    return n_prompts


def _file_digest(path: Path) -> str:
    return stable_hash(path.read_bytes().decode("utf-8", "replace"))


class PersonaSource:
    """Persona × task type × seed topic, with verifiable constraints (personas.py)."""

    def __init__(
        self,
        files: Sequence[str | Path],
        tasks: Mapping[str, Mapping],  # task → {templates: {language → [templates]}} (conf/tasks/)
        n_prompts: int,
        seed: int = 0,
        min_constraints: int = 1,
        max_constraints: int = 3,
        languages: Sequence[str] | None = None,
        system_prompt: str | None = None,
    ):
        self.files = [Path(f) for f in files]
        self.n_prompts = check_n_prompts(n_prompts)
        self.spec = personas.SynthesisSpec(
            tasks={task: {lang: list(t) for lang, t in spec["templates"].items()} for task, spec in tasks.items()},
            n_prompts=self.n_prompts,
            seed=number("seed", seed, int),
            min_constraints=number("personas.min_constraints", min_constraints, int, 0),
            max_constraints=number("personas.max_constraints", max_constraints, int, 0),
            languages=tuple(languages) if languages else None,
            system_prompt=text("personas.system_prompt", system_prompt),
        )
        self._personas: list[personas.Persona] | None = None

    @property
    def personas(self) -> list[personas.Persona]:
        if self._personas is None:
            self._personas = personas.load_personas(self.files)
        return self._personas

    def check(self) -> None:
        personas.validate(self.personas, self.spec)

    def digest(self) -> str:
        synthesis = {k: v for k, v in vars(self.spec).items() if k != "n_prompts"}
        return stable_hash("personas", synthesis, sorted(_file_digest(p) for p in self.files))

    def __iter__(self) -> Iterator[Prompt]:
        return personas.iter_prompts(self.personas, self.spec)


class JsonlSource:
    """Your own prompts: one JSON object per line, `prompt` (a string) or `messages` (a chat list),
    optional id, language, task, domain, persona_id, reference. A repeated id is skipped."""

    def __init__(self, path: str | Path, n_prompts: int):
        self.path = Path(path)
        self.n_prompts = check_n_prompts(n_prompts)
        self._digest: str | None = None

    def check(self) -> None:
        self._digest = personas.check_prompt_file(self.path)

    def digest(self) -> str:
        if self._digest is None:
            self.check()
        return stable_hash("file", self._digest)

    def __iter__(self) -> Iterator[Prompt]:
        return itertools.islice(self._unique(), self.n_prompts)

    def _unique(self) -> Iterator[Prompt]:
        seen: set[int] = set()  # 64-bit hashes of the ids: ~85 bytes per prompt, the one thing that grows with N
        repeated = 0
        for prompt in personas.iter_prompt_file(self.path):
            key = hash(prompt.prompt_id)
            if key in seen:
                repeated += 1
                continue
            seen.add(key)
            yield prompt
        if repeated:
            log.warning("skipped %d prompts whose id was already seen in %s", repeated, self.path)


class PromptWriter:
    """PersonaHub style: a teacher writes each request from the persona; math keeps its template,
    whose numbers carry the known answer, and a request that fails keeps the template text."""

    def __init__(self, teacher: str, source: Source):
        if not isinstance(source, PersonaSource):
            raise ConfigError("personas.prompt_writer rewrites synthesised prompts — drop it, or source=jsonl, from the command")
        self.teacher, self.source = teacher, source

    def calls(self, prompts: Sequence[Prompt], teacher_key: str) -> dict[str, object]:
        """prompt id → the writer call for it (only the prompts it writes)."""
        requests = personas.writer_requests(list(prompts), self.source.personas)
        return {w.original.prompt_id: make_call(w.request, self.teacher, teacher_key) for w in requests}

    @staticmethod
    def rewrite(prompts: Sequence[Prompt], written: Mapping[str, str]) -> list[Prompt]:
        return [personas.with_written_request(p, written[p.prompt_id]) if p.prompt_id in written else p for p in prompts]
