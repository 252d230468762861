"""Persona files → Prompt rows: persona × task type × seed topic, with verifiable constraints.

PersonaHub (arXiv 2406.20094) conditions synthetic prompts on personas for diversity; Tulu 3
(arXiv 2411.15124) attaches checkable constraints so answers can be verified. Synthesis here is
deterministic in `seed`: the same config always yields the same prompts and prompt ids.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from arbitrage import constraints as C
from arbitrage.errors import ConfigError
from arbitrage.prompts.source import check_n_prompts
from arbitrage.rows import Prompt, stable_hash
from arbitrage.settings import number, text

PERSONA_KEYS = ("id", "persona", "language", "domain", "topics")


@dataclass(frozen=True)
class Persona:
    id: str
    persona: str
    language: str
    domain: str
    topics: tuple[str, ...]
    where: str = field(default="", compare=False)  # `persona file PATH:LINE`, for errors about this persona


def json_object(where: str, line: str, keys: str) -> dict:
    """One line of a JSONL input file, or one error line naming the file, the line and the fix."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON ({exc.msg}) — one JSON object per line") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{where} must be a JSON object with {keys}")
    if "\\u" in line:  # a \uXXXX escape can spell half a surrogate pair: valid JSON, not valid Unicode
        _no_lone_surrogate(where, record)
    return record


def _no_lone_surrogate(where: str, value, key: str = "") -> None:
    """One line naming the field whose text holds a lone surrogate (it cannot be written as UTF-8)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _no_lone_surrogate(where, k, key)
            _no_lone_surrogate(where, v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_lone_surrogate(where, v, f"{key}[{i}]")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = f"\\u{ord(value[exc.start]):04x}"
            raise ConfigError(
                f"{where}: '{key}' holds a lone surrogate ({code}: valid JSON, not valid Unicode) — "
                "write the character itself, or both halves of its surrogate pair"
            ) from None


def _parse_persona(path: Path, lineno: int, line: str) -> Persona:
    where = f"persona file {path}:{lineno}"
    record = json_object(where, line, f"keys {', '.join(PERSONA_KEYS)}")
    missing = [k for k in PERSONA_KEYS if k not in record]
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(missing)} — each line needs {', '.join(PERSONA_KEYS)}")
    topics = record["topics"]
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t.strip() for t in topics):
        raise ConfigError(f"{where}: 'topics' must be a non-empty list of strings")
    for key in ("id", "persona", "language", "domain"):
        if not isinstance(record[key], str) or not record[key].strip():
            raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return Persona(record["id"], record["persona"], record["language"], record["domain"], tuple(topics), where)


def load_personas(paths: list[Path]) -> list[Persona]:
    """Read and validate JSONL persona files; ids must be unique across all of them."""
    personas: dict[str, Persona] = {}
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read persona file {path}: {exc.strerror} — check personas.files") from None
        except UnicodeDecodeError:
            raise ConfigError(f"persona file {path} is not UTF-8 text — save it as UTF-8 JSONL") from None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            persona = _parse_persona(path, lineno, line)
            if persona.id in personas:
                raise ConfigError(f"persona file {path}:{lineno}: duplicate persona id '{persona.id}'")
            personas[persona.id] = persona
    if not personas:
        raise ConfigError(f"no personas in {', '.join(map(str, paths)) or 'personas.files'} — add JSONL lines")
    return list(personas.values())


@dataclass(frozen=True)
class SynthesisSpec:
    """How prompts are drawn. `tasks` maps task name → language → templates."""

    tasks: dict[str, dict[str, list[str]]]
    n_prompts: int
    seed: int = 0
    min_constraints: int = 1
    max_constraints: int = 3
    languages: tuple[str, ...] | None = None  # None: every language the personas have
    system_prompt: str | None = None  # e.g. "You are talking with {persona}."


def validate(personas: list[Persona], spec: SynthesisSpec) -> list[Persona]:
    """Check the spec against the personas before anything runs; returns the personas in use."""
    if spec.n_prompts <= 0:
        raise ConfigError(f"n_prompts must be a positive integer, got {spec.n_prompts} — e.g. n_prompts=32")
    if not 0 <= spec.min_constraints <= spec.max_constraints:
        raise ConfigError("personas.min_constraints must be ≥ 0 and ≤ personas.max_constraints")
    if not spec.tasks:
        raise ConfigError("no task types configured — set tasks=default")
    if spec.languages:
        personas = [p for p in personas if p.language in spec.languages]
        if not personas:
            raise ConfigError(f"no persona has a language in personas.languages={list(spec.languages)}")
    supported = supported_languages(spec.tasks)
    for p in personas:
        if p.language not in supported:
            raise ConfigError(
                f"{p.where or f'persona {p.id}'}: language '{p.language}' is not supported — supported: "
                f"{', '.join(sorted(supported))} (the languages with task templates in conf/tasks/ and "
                "constraint texts in arbitrage/i18n/constraints.yaml)"
            )
    languages = {p.language for p in personas}
    for task, by_language in spec.tasks.items():
        missing = languages - {lang for lang, templates in by_language.items() if templates}
        if missing:
            raise ConfigError(
                f"task '{task}' has no template for language(s) {sorted(missing)} — add them under tasks.{task}.templates"
            )
    C.validate_texts(languages)
    return personas


def supported_languages(tasks: Mapping[str, Mapping[str, list[str]]]) -> set[str]:
    """Languages a persona may have: some task has templates in it, and every constraint has its instruction text."""
    templated = {lang for by_language in tasks.values() for lang, templates in by_language.items() if templates}
    table = C.texts()
    return {lang for lang in templated if all(lang in table.get(name, {}) for name in C.KWARGS)}


def _user_text(rng: random.Random, persona: Persona, task: str, templates: list[str]) -> tuple[str, str, list[dict], str | None]:
    topic = rng.choice(persona.topics)
    template = rng.choice(templates)
    fixed: list[dict] = []
    reference = None
    values = {"persona": persona.persona, "topic": topic}
    if task == "math" and "{expression}" in template:
        expression, reference = exact_problem(rng, persona.language)
        values |= {"expression": expression}
        fixed.append({"type": C.FINAL_ANSWER, "answer": reference})
    elif task == "math":
        a, b, c = rng.randint(12, 99), rng.randint(3, 19), rng.randint(10, 500)
        values |= {"a": a, "b": b, "c": c}
        reference = str(a * b + c)
        fixed.append({"type": C.FINAL_ANSWER, "answer": reference})
    elif task == "code":
        fixed.append({"type": "arbitrage:code_block"})
    if persona.language != "en":
        # Small teachers drift into English; a multilingual dataset must check the answer's language.
        fixed.append({"type": "language:response_language", "language": persona.language})
    return template.format(**values), topic, fixed, reference


def _shown_decimal(value: Fraction, language: str) -> str:
    text = f"{float(value):g}"
    return text if language == "en" else text.replace(".", ",")  # the other persona languages write 2,5


def _exact(value: Fraction) -> str:
    """A reference math-verify reads exactly: an integer, a terminating decimal, else p/q."""
    if value.denominator == 1:
        return str(value.numerator)
    rest = value.denominator
    for p in (2, 5):
        while rest % p == 0:
            rest //= p
    decimal = f"{float(value):.10f}".rstrip("0")
    return decimal if rest == 1 else f"{value.numerator}/{value.denominator}"


def exact_problem(rng: random.Random, language: str) -> tuple[str, str]:
    """A problem whose answer is not a whole number, written for the prompt and solved exactly
    (fractions.Fraction): a sum of fractions, a decimal times a whole number, or a quotient."""
    kind = rng.choice(("fractions", "decimal", "quotient"))
    while True:  # drawn again until the answer is not whole (2.5 × 4 is)
        if kind == "fractions":
            b, d = rng.randint(2, 12), rng.randint(2, 12)
            a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
            expression, value = f"{a}/{b} + {c}/{d}", Fraction(a, b) + Fraction(c, d)
        elif kind == "decimal":
            x, y = Fraction(rng.choice([k for k in range(11, 100) if k % 10]), 10), rng.randint(3, 19)
            expression, value = f"{_shown_decimal(x, language)} × {y}", x * y
        else:
            a, b = rng.randint(20, 500), rng.choice((4, 6, 7, 8, 12, 16, 24, 25))
            expression, value = f"{a} ÷ {b}", Fraction(a, b)
        if value.denominator != 1:
            return expression, _exact(value)


def with_instructions(text: str, constraints: list[dict], language: str) -> str:
    # The math templates already ask for the final number; every other check adds its sentence.
    instructions = [C.instruction(c, language) for c in constraints if c["type"] != C.FINAL_ANSWER]
    return " ".join([text, *instructions])


def synthesise(personas: list[Persona], spec: SynthesisSpec) -> list[Prompt]:
    """Draw `n_prompts` unique prompts, cycling personas so languages and domains stay balanced."""
    return list(iter_prompts(personas, spec))


def iter_prompts(personas: list[Persona], spec: SynthesisSpec) -> Iterator[Prompt]:
    """`synthesise` as a stream: memory holds the ids drawn so far, not the prompts.

    The draw sequence does not depend on `n_prompts`, so a larger n_prompts extends a run: its
    first prompts are the smaller run's prompts. Raises ConfigError once no new prompt can be drawn."""
    personas = validate(personas, spec)
    rng = random.Random(spec.seed)
    order = personas[:]
    rng.shuffle(order)
    task_names = sorted(spec.tasks)
    seen: set[int] = set()
    attempts = 0
    while len(seen) < spec.n_prompts and attempts < spec.n_prompts * 20:
        persona = order[attempts % len(order)]
        attempts += 1
        task = rng.choice(task_names)
        text, topic, fixed, reference = _user_text(rng, persona, task, spec.tasks[task][persona.language])
        wanted = rng.randint(spec.min_constraints, spec.max_constraints)
        ctx = C.Context(language=persona.language, topic=topic, task=task)
        sampled = C.sample(rng, ctx, max(0, wanted - len(fixed)))
        user = with_instructions(text, fixed + sampled, persona.language)
        messages: list[dict] = []
        if spec.system_prompt:
            messages.append({"role": "system", "content": spec.system_prompt.format(persona=persona.persona)})
        messages.append({"role": "user", "content": user})
        prompt_id = stable_hash(messages)
        if int(prompt_id, 16) in seen:
            continue
        seen.add(int(prompt_id, 16))
        yield Prompt(
            prompt_id=prompt_id,
            persona_id=persona.id,
            language=persona.language,
            domain=persona.domain,
            task=task,
            topic=topic,
            messages=tuple(messages),
            constraints=tuple(fixed + sampled),
            reference=reference,
        )
    if len(seen) < spec.n_prompts:
        raise ConfigError(
            f"only {len(seen)} unique prompts can be drawn from {len(personas)} personas, "
            f"asked for {spec.n_prompts} — lower n_prompts or add personas/tasks"
        )


def _file_digest(path: Path) -> str:
    return stable_hash(path.read_bytes().decode("utf-8", "replace"))


class PersonaSource:
    """The `personas` source: persona × task type × seed topic, with verifiable constraints."""

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
        self.spec = SynthesisSpec(
            tasks={task: {lang: list(t) for lang, t in spec["templates"].items()} for task, spec in tasks.items()},
            n_prompts=self.n_prompts,
            seed=number("seed", seed, int),
            min_constraints=number("personas.min_constraints", min_constraints, int, 0),
            max_constraints=number("personas.max_constraints", max_constraints, int, 0),
            languages=tuple(languages) if languages else None,
            system_prompt=text("personas.system_prompt", system_prompt),
        )
        self._personas: list[Persona] | None = None

    @property
    def personas(self) -> list[Persona]:
        if self._personas is None:
            self._personas = load_personas(self.files)
        return self._personas

    def check(self) -> None:
        validate(self.personas, self.spec)

    def digest(self) -> str:
        synthesis = {k: v for k, v in vars(self.spec).items() if k != "n_prompts"}
        return stable_hash("personas", synthesis, sorted(_file_digest(p) for p in self.files))

    def facts(self) -> dict:
        return {"kind": "personas", "files": [str(p.resolve()) for p in self.files]}

    def __iter__(self) -> Iterator[Prompt]:
        return iter_prompts(self.personas, self.spec)
