"""The `jsonl` source: your own prompts, one JSON object per line, streamed and checked line by line."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from arbitrage import constraints as C
from arbitrage.errors import ConfigError
from arbitrage.prompts.personas import json_object
from arbitrage.prompts.source import check_n_prompts
from arbitrage.rows import Prompt, stable_hash
from arbitrage.verify.code import TestSpec

log = logging.getLogger(__name__)


# Bring-your-own prompts: one JSON object per line, `prompt` (a string) or `messages` (chat list),
# optional id, language, task, domain, persona_id, reference, constraints (verifiable checks, e.g.
# [{"type": "lowercase"}]), and code tests for reward=tests: HumanEval's `test` + `entry_point` or
# MBPP's `test_list` (verify/code.py TestSpec). Streamed, never held in memory.
def _file_prompt(path: Path, number: int, line: str) -> Prompt:
    where = f"{path} line {number}"
    record = json_object(where, line, "'prompt' or 'messages'")
    messages = record.get("messages")
    if messages is None and isinstance(record.get("prompt"), str):
        messages = [{"role": "user", "content": record["prompt"]}]
    if messages is None and "turns" in record:  # MT-Bench's question.jsonl: the user turns, in order
        turns = record["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ConfigError(f"{where}: 'turns' must be a non-empty list of strings (the user turns, in order)")
        messages = [{"role": "user", "content": t} for t in turns]
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: needs 'prompt' (a string) or 'messages' (role/content objects ending with a user turn)")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ConfigError(f"{where}: messages[{i}] must be an object with 'role' and 'content', got {json.dumps(m)[:60]}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                got = "nothing" if key not in m else json.dumps(m[key], ensure_ascii=False)[:60]
                raise ConfigError(f"{where}: messages[{i}].{key} must be a string, got {got}")
    if messages[-1]["role"] != "user":
        raise ConfigError(
            f"{where}: messages[{len(messages) - 1}].role is '{messages[-1]['role']}' — the last turn must be the user's"
        )
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]  # what the id hashes
    first, later = split_turns(messages)
    # A user message may carry its own `constraints` (that turn's checks); turn 1's join the line's.
    checks = [_file_constraints(f"{where}: messages[{i}]", m) for i, m in enumerate(messages) if m["role"] == "user"]
    first = [{"role": m["role"], "content": m["content"]} for m in first]
    constraints = _file_constraints(where, record) + (checks[len(checks) - len(later) - 1] if checks else [])
    later_checks = tuple(tuple(c) for c in checks[len(checks) - len(later) :]) if later else ()
    reference = file_reference(where, record)
    if reference is not None and reads_as_math(reference) and not any(c["type"] == C.FINAL_ANSWER for c in constraints):
        constraints.append({"type": C.FINAL_ANSWER, "answer": reference})  # a gate: the answer must equal it
    try:
        tests = TestSpec.from_record(record)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Prompt(
        prompt_id=str(record.get("id") or stable_hash(plain)),
        persona_id=str(record.get("persona_id") or ""),
        language=str(record.get("language") or "en"),
        domain=str(record.get("domain") or ""),
        task=str(record.get("task") or "file"),
        topic="",
        messages=tuple(first),
        constraints=tuple(constraints),
        reference=reference,
        tests=tests.to_dict() if tests else None,
        later_turns=tuple(m["content"] for m in later),
        later_checks=later_checks if any(later_checks) else (),
    )


def split_turns(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """A line's messages as turn 1's prompt and the user turns that follow it: the user messages at
    the end with no answer between them are one conversation's turns (MT-Bench's two questions),
    answered one by one with `conversation.turns` (the line's constraints and reference are turn 1's)."""
    start = len(messages)
    while start > 0 and messages[start - 1]["role"] == "user":
        start -= 1
    return messages[: start + 1], messages[start + 1 :]


GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
LATEX_OR_DIGIT = re.compile(r"[\d\\]")


def file_reference(where: str, record: dict) -> str | None:
    """A line's known answer, in the forms datasets ship it: our `reference`; a plain `answer`, or
    GSM8K's (its worked solution ending `#### 72`: the part after ####); MATH's `solution` (the
    last `\\boxed{…}` in it)."""
    for key in ("reference", "answer"):
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: '{key}' must be a string or a number, got {json.dumps(value)[:60]}")
        text = str(value).strip()
        found = GSM8K_ANSWER.search(text) if key == "answer" else None
        return found.group(1).strip() if found else text
    solution = record.get("solution")
    return last_boxed(solution) if isinstance(solution, str) else None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{…}` (or `\\fbox{…}`), braces matched; None if there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def reads_as_math(reference: str) -> bool:
    """math-verify compares math, not words: an answer with no digit and no LaTeX ('Paris') stays the
    prompt's `reference` but is not checked."""
    return bool(LATEX_OR_DIGIT.search(reference))


def _file_constraints(where: str, record: dict) -> list[dict]:
    """`constraints` (our dicts) or IFEval / Tulu 3 annotations (`instruction_id_list` + `kwargs`)."""
    constraints = record.get("constraints") or []
    try:
        if record.get("instruction_id_list") is not None:
            ids, kwargs = record["instruction_id_list"], record.get("kwargs")
            if not isinstance(ids, list) or not (kwargs is None or isinstance(kwargs, list)):
                raise ValueError("'instruction_id_list' and 'kwargs' must be lists")
            return [*map(C.normalise, constraints), *C.from_ifeval(ids, kwargs)]
        if not isinstance(constraints, list) or not all(isinstance(c, dict) for c in constraints):
            raise ValueError("'constraints' must be a list of {\"type\": ...} objects")
        return [C.normalise(c) for c in constraints]
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_prompt_file(path: Path) -> str:
    """Validate every line before a run starts (one bad line is one error naming it); returns the
    file's content digest, which identifies the run's prompts."""
    if path.is_dir():
        raise ConfigError(f"prompts file {path} is a directory — give source.path=PATH.jsonl, the file itself")
    if not path.is_file():
        raise ConfigError(f"prompts file {path} does not exist — give source.path=PATH.jsonl")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            digest.update(raw)
            if raw.strip():
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ConfigError(f"{path} line {number} is not UTF-8 text — save the file as UTF-8") from None
                _file_prompt(path, number, text)
    return digest.hexdigest()[:16]


def iter_prompt_file(path: Path) -> Iterator[Prompt]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield _file_prompt(path, number, line)


class JsonlSource:
    """Your own prompts: one JSON object per line, `prompt` (a string) or `messages` (a chat list),
    optional id, language, task, domain, persona_id, reference. A repeated id is skipped."""

    def __init__(self, path: str | Path, n_prompts: int):
        self.path = Path(path)
        self.n_prompts = check_n_prompts(n_prompts)
        self._digest: str | None = None

    def check(self) -> None:
        self._digest = check_prompt_file(self.path)

    def digest(self) -> str:
        if self._digest is None:
            self.check()
        return stable_hash("file", self._digest)

    def facts(self) -> dict:
        return {"kind": "jsonl", "path": str(self.path.resolve())}

    def __iter__(self) -> Iterator[Prompt]:
        return itertools.islice(self._unique(), self.n_prompts)

    def _unique(self) -> Iterator[Prompt]:
        seen: set[int] = set()  # 64-bit hashes of the ids: ~85 bytes per prompt, the one thing that grows with N
        repeated = 0
        for prompt in iter_prompt_file(self.path):
            key = hash(prompt.prompt_id)
            if key in seen:
                repeated += 1
                continue
            seen.add(key)
            yield prompt
        if repeated:
            log.warning("skipped %d prompts whose id was already seen in %s", repeated, self.path)
