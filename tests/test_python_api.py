"""`arbitrage.run` from Python, no Hydra: an in-memory teacher, real pipeline, real datasets; only the
public names of `arbitrage` (its `__all__`), as docs/python-api.md uses them."""

import asyncio
import importlib
import subprocess
import sys
from dataclasses import dataclass, field

import datasets
import pytest

import arbitrage
from arbitrage import AllTeachers, BanditRouter, Completion, JsonlSource, Limits, Sampling, Teacher


@dataclass(eq=False)
class EchoTeacher:
    """Answers from a dict in memory: `style(prompt text) -> answer`. Counts its calls."""

    name: str
    style: str
    model: str = "echo"
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=64))
    limits: Limits = field(default_factory=lambda: Limits(max_concurrency=2, batch_size=4))
    price: object = None
    calls: int = 0

    def identity(self) -> dict:
        return {"engine": "memory", "style": self.style, "sampling": self.sampling.key()}

    def check(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def complete(self, calls):
        self.calls += len(calls)
        await asyncio.sleep(0)
        out = []
        for call in calls:
            text = call.prompt.user_text
            answer = text.lower().replace(",", "") if self.style == "plain" else f"{text.upper()}, LOUDLY"
            if text.startswith("You are playing a user"):  # asked for a follow-up, it asks one (echoing it is none)
                answer = f"why is that so, {self.name}?"
            out.append(Completion(answer, "stop", len(text.split()), len(answer.split())))
        return out

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, float]:
        return {}

    def diagnose(self, completion: Completion) -> str:
        return f"teacher '{self.name}': {completion.error}"


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    checks = '[{"type": "lowercase"}, {"type": "no_commas"}]'
    path.write_text(
        "".join(f'{{"id": "q{i}", "prompt": "Say hello, number {i}.", "constraints": {checks}}}\n' for i in range(12))
    )
    return path


def test_run_from_python_with_an_in_memory_teacher(tmp_path, prompts):
    teachers = {"plain": EchoTeacher("plain", "plain"), "loud": EchoTeacher("loud", "loud")}
    assert all(isinstance(t, Teacher) for t in teachers.values())
    # Each prompt asks for lowercase without commas: the plain teacher passes, the loud one fails.
    source = JsonlSource(prompts, n_prompts=12)
    source_rows = [p for p in source]
    assert len(source_rows) == 12
    summary = arbitrage.run(source, teachers, tmp_path / "run", router=AllTeachers())
    assert summary.rows["sft"] == 12 and summary.teachers["plain"].calls == 12
    sft = datasets.load_dataset(str(tmp_path / "run"), "sft", split="train")
    dpo = datasets.load_dataset(str(tmp_path / "run"), "dpo", split="train")
    assert {r["teacher_chosen"] for r in sft} == {"plain"} and len(dpo) == 12
    assert all(r["rejected"][0]["content"].endswith("LOUDLY") and r["margin"] == 1.0 for r in dpo)

    again = arbitrage.run(JsonlSource(prompts, n_prompts=12), teachers, tmp_path / "run")
    assert teachers["plain"].calls == 12 and again.teachers["plain"].resumed == 12  # resumed, nothing asked twice


def test_an_online_router_runs_wave_by_wave_from_python(tmp_path, prompts):
    teachers = {"plain": EchoTeacher("plain", "plain"), "loud": EchoTeacher("loud", "loud")}
    router = BanditRouter(wave_size=3, seed=1)
    summary = arbitrage.run(JsonlSource(prompts, n_prompts=12), teachers, tmp_path / "run", router=router)
    assert teachers["plain"].calls + teachers["loud"].calls == 12  # one call per prompt
    assert sum(s.n for s in router.overall.values()) == 12  # it saw every scored call, wave by wave
    assert summary.prompts_finished == 12


def test_conversations_from_python_with_an_online_router_and_a_simulated_user(tmp_path, prompts):
    teachers = {"plain": EchoTeacher("plain", "plain"), "loud": EchoTeacher("loud", "loud")}
    router = BanditRouter(wave_size=4, seed=1)
    talk = arbitrage.ConversationSpec(turns=3, user="plain", follow_ups=["deeper"])
    summary = arbitrage.run(JsonlSource(prompts, n_prompts=8), teachers, tmp_path / "run", router=router, conversation=talk)
    # 8 conversations × 3 turns routed to one teacher each, and 8 × 2 follow-ups written by "plain"
    assert teachers["plain"].calls + teachers["loud"].calls == 8 * 3 + 8 * 2
    assert sum(s.n for s in router.overall.values()) == 8 * 3  # it observed every turn before routing the next
    assert summary.prompts_finished == 8 and sum(summary.turns_kept.values()) == summary.rows["sft"]
    sft = datasets.load_dataset(str(tmp_path / "run"), "sft", split="train")
    for row in sft:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * row["turn"]
        assert row["messages"][2]["content"] == "why is that so, plain?"  # the simulator's words


def test_every_public_name_resolves_to_the_object_its_module_defines():
    assert len(set(arbitrage.__all__)) == len(arbitrage.__all__)
    assert set(arbitrage.__all__) == {"run", *arbitrage._EXPORTS}
    for name in arbitrage.__all__:
        value = getattr(arbitrage, name)
        if name != "run":
            assert value is getattr(importlib.import_module(arbitrage._EXPORTS[name]), name), name
    assert set(arbitrage.__all__) <= set(dir(arbitrage))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        arbitrage.nope  # noqa: B018


def test_import_arbitrage_loads_none_of_the_run():
    """`import arbitrage` stays cheap: it loads no module of its own beyond the package, nor any library
    (no vLLM, torch, litellm, not even asyncio); the public names are imported on first use, and a
    submodule import still goes through."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import arbitrage\n"
        "print(sorted(set(sys.modules) - before - {'__future__'}))\n"
        "from arbitrage import select\n"
        "print(select.SelectionSpec is arbitrage.SelectionSpec)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["['arbitrage']", "True"]
