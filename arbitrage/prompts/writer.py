"""PersonaHub style (arXiv 2406.20094): a teacher writes the request a persona would send."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from arbitrage import constraints as C
from arbitrage.errors import ConfigError
from arbitrage.prompts.personas import Persona, PersonaSource, with_instructions
from arbitrage.prompts.source import Source
from arbitrage.rows import Prompt, make_call, stable_hash

# PersonaHub-style prompt writing: a teacher writes the request a persona would send, instead of
# a fixed template. Math keeps its template, whose numbers carry the known answer.
WRITABLE_TASKS = {
    "explain": "a request for an explanation",
    "advise": "a request for practical advice",
    "write": "a request for a short piece of creative writing",
    "email": "a request to draft an email",
    "code": "a request for a small Python function",
}
WRITER_TEMPLATE = (
    "Here is a persona: {persona}.\n"
    'Write {task} that this person would send to an AI assistant about the topic "{topic}". '
    "Write it in {language_name}, in the first person, in one to three sentences. "
    "Output only the request, nothing else."
)


@dataclass(frozen=True)
class WrittenPrompt:
    """The prompt a writer teacher receives, and the prompt whose user text it will replace."""

    request: Prompt
    original: Prompt


def writer_requests(prompts: list[Prompt], personas: list[Persona], template: str = WRITER_TEMPLATE) -> list[WrittenPrompt]:
    by_id = {p.id: p for p in personas}
    requests = []
    for prompt in prompts:
        if prompt.task not in WRITABLE_TASKS:
            continue
        text = template.format(
            persona=by_id[prompt.persona_id].persona,
            task=WRITABLE_TASKS[prompt.task],
            topic=prompt.topic,
            language_name=C.texts()["language_name"]["en"][prompt.language],
        )
        messages = ({"role": "user", "content": text},)
        request = replace(prompt, prompt_id="writer-" + stable_hash(messages), messages=messages, constraints=())
        requests.append(WrittenPrompt(request, prompt))
    return requests


def with_written_request(prompt: Prompt, request: str) -> Prompt:
    """Swap the template text for a written request; constraints and their instructions stay."""
    request = request.strip().strip('"“”«»').strip()
    messages = [
        *prompt.messages[:-1],
        {"role": "user", "content": with_instructions(request, list(prompt.constraints), prompt.language)},
    ]
    return replace(prompt, prompt_id=stable_hash(messages), messages=tuple(messages))


class PromptWriter:
    """PersonaHub style: a teacher writes each request from the persona; math keeps its template,
    whose numbers carry the known answer, and a request that fails keeps the template text."""

    def __init__(self, teacher: str, source: Source):
        if not isinstance(source, PersonaSource):
            raise ConfigError("personas.prompt_writer rewrites synthesised prompts — drop it, or source=jsonl, from the command")
        self.teacher, self.source = teacher, source

    def calls(self, prompts: Sequence[Prompt], teacher_key: str) -> dict[str, object]:
        """prompt id → the writer call for it (only the prompts it writes)."""
        requests = writer_requests(list(prompts), self.source.personas)
        return {w.original.prompt_id: make_call(w.request, self.teacher, teacher_key) for w in requests}

    @staticmethod
    def rewrite(prompts: Sequence[Prompt], written: Mapping[str, str]) -> list[Prompt]:
        return [with_written_request(p, written[p.prompt_id]) if p.prompt_id in written else p for p in prompts]
