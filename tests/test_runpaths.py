"""The run folder's layout is spelt in one module (arbitrage/runpaths.py), and what a run records
of its teachers is what the viewer shows, whatever kind of teacher it is."""

import ast
import json
import re
from pathlib import Path

from test_python_api import EchoTeacher

import arbitrage
from arbitrage.cost import Price
from arbitrage.prompts import JsonlSource
from arbitrage.runpaths import RunPaths
from arbitrage.view.folder import RunView

PACKAGE = Path(arbitrage.__file__).parent
FILES = ("calls.jsonl", "calls-", "calls*", "batches.jsonl", "config.yaml", "summary.json", "run.json", "README.md")
FILES += ("report.md", "router_eval.md", "router_eval.json", "router.pt", ".lock", "data/")
FOLDERS = ("journal", "data", "logs")  # spelt only where joined to a path: `out / "journal"`
FILE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in FILES) + r")")


def code_strings(tree: ast.AST):
    """String constants that are not docstrings (prose may name a file; code may not spell one)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def joined_names(tree: ast.AST):
    """`something / "name"`: a path spelt by joining."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            if node.right.value in FOLDERS:
                yield node.right


def test_no_module_but_runpaths_spells_a_run_folder_file_name():
    spelt = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "runpaths.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # a path fragment (not prose): only path characters, naming one of the folder's files
        found = [n for n in code_strings(tree) if re.fullmatch(r"[\w.*/{}-]+", n.value) and FILE.search(n.value)]
        spelt += [f"{path.relative_to(PACKAGE)}:{n.lineno}: {n.value!r}" for n in [*found, *joined_names(tree)]]
    assert spelt == []


def test_the_viewer_prices_a_teacher_kind_it_has_never_heard_of(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(
            f'{{"id": "q{i}", "prompt": "Say hello, number {i}.", "constraints": [{{"type": "lowercase"}}]}}\n' for i in range(3)
        )
    )
    price = Price(2e-6, 8e-6, "config")
    teachers = {"plain": EchoTeacher("plain", "plain", price=price), "loud": EchoTeacher("loud", "loud")}
    arbitrage.run(JsonlSource(path, n_prompts=3), teachers, tmp_path / "run")

    facts = RunPaths(tmp_path / "run").facts()
    assert facts["teachers"]["plain"]["kind"] == "EchoTeacher" and facts["teachers"]["plain"]["model"] == "echo"
    assert facts["teachers"]["loud"]["price"] is None and facts["source"]["kind"] == "jsonl"
    shown = RunView(tmp_path / "run", background_index=False).prompt("q0")
    by_teacher = {c["teacher"]: c for c in shown["candidates"]}
    plain = by_teacher["plain"]
    assert plain["usd"] == price.cost(plain["tokens_in"], plain["tokens_out"]) > 0
    assert by_teacher["loud"]["usd"] is None  # nobody priced it: shown as unknown, not as free


def test_run_json_facts_are_not_part_of_the_identity(tmp_path):
    """A price change is no other run: the same command with another price resumes."""
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": "q0", "prompt": "Say hi."}\n')
    teachers = {"plain": EchoTeacher("plain", "plain", price=Price(1e-6, 1e-6, "config"))}
    arbitrage.run(JsonlSource(path, n_prompts=1), teachers, tmp_path / "run")
    teachers = {"plain": EchoTeacher("plain", "plain", price=Price(5e-6, 5e-6, "config"))}
    summary = arbitrage.run(JsonlSource(path, n_prompts=1), teachers, tmp_path / "run")
    assert summary.teachers["plain"].resumed == 1 and teachers["plain"].calls == 0
    recorded = json.loads(RunPaths(tmp_path / "run").run_json.read_text())["facts"]["teachers"]["plain"]["price"]
    assert recorded["input_per_token"] == 5e-6
