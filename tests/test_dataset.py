"""The dataset swap: whatever instant a run dies at while writing its dataset, the folder holds
the previous dataset or the new one, whole — never a mix, never none."""

import os
from pathlib import Path

import datasets
import pytest
from conftest import make_candidate, make_prompt

from arbitrage.output import card, dataset
from arbitrage.routers import Route
from arbitrage.rows import Scored
from arbitrage.select import SelectionSpec, select
from arbitrage.stats import RunStats, RunSummary


def selections(tag: str, n: int):
    out = []
    for i in range(n):
        prompt = make_prompt([{"type": "lowercase"}], prompt_id=f"{tag}{i}", text=f"question {tag} {i}")
        rows = [
            Scored(make_candidate(f"good {tag} {i}", teacher="a", prompt_id=prompt.prompt_id), 1.0),
            Scored(make_candidate(f"bad {tag} {i}", teacher="b", prompt_id=prompt.prompt_id), 0.0),
        ]
        out.append(select(prompt, Route(("a", "b"), "all"), rows, SelectionSpec()))
    return out


def write(out: Path, tag: str, n: int) -> None:
    writer, stats = dataset.DatasetWriter(out), RunStats(["a", "b"])
    batch = selections(tag, n)
    writer.add(batch)
    stats.add(batch)
    summary = RunSummary(str(out), rows=dict(stats.rows), **stats.coverage())
    writer.commit(lambda paths: card.render(out, paths, summary, {}, writer.samples.get("dpo")))


def answers(out: Path) -> set[str]:
    return {r["messages"][-1]["content"] for r in datasets.load_dataset(str(out), "sft", split="train")}


class Crash(Exception):
    pass


def test_a_crash_at_any_step_of_the_swap_leaves_the_old_or_the_new_dataset_whole(tmp_path, monkeypatch):
    old = {f"good old {i}" for i in range(3)}
    new = {f"good new {i}" for i in range(5)}
    steps = {"n": 0}
    real_replace, real_unlink, real_fsync = os.replace, Path.unlink, os.fsync

    def counting(real):
        def step(*args, **kwargs):
            if steps["n"] == steps.get("crash_at"):
                raise Crash(f"crashed at step {steps['n']}")
            steps["n"] += 1
            return real(*args, **kwargs)

        return step

    monkeypatch.setattr(os, "replace", counting(real_replace))
    monkeypatch.setattr(Path, "unlink", counting(real_unlink))
    monkeypatch.setattr(os, "fsync", counting(real_fsync))
    write(tmp_path / "probe", "new", 5)
    total = steps["n"]  # every step a commit takes: renames, fsyncs, unlinks
    assert total >= 8
    seen = set()
    for crash_at in range(total + 1):
        out = tmp_path / f"crash{crash_at}"
        steps.pop("crash_at", None)
        write(out, "old", 3)
        steps["n"], steps["crash_at"] = 0, crash_at
        try:
            write(out, "new", 5)
        except Crash:
            pass
        steps.pop("crash_at")
        got = answers(out)
        assert got in (old, new), f"crash at step {crash_at} left {sorted(got)}"
        seen.add(frozenset(got))
    assert seen == {frozenset(old), frozenset(new)}  # both outcomes occur: the switch is one step


def test_rejected_rows_keep_the_prompts_constraints(tmp_path):
    prompt = make_prompt([{"type": "lowercase"}, {"type": "max_words", "n": 5}], prompt_id="x")
    failed = select(
        prompt, Route(("a",), "all"), [Scored(make_candidate(None, error="HTTP 500", prompt_id="x"), None)], SelectionSpec()
    )
    rows = dataset.build_rows([failed])["rejected_rows"]
    assert rows[0]["constraints"] == '[{"type": "lowercase"}, {"type": "max_words", "n": 5}]'
    assert "HTTP 500" in rows[0]["reason"]


def test_an_aborted_run_leaves_no_temporary_files(tmp_path):
    write(tmp_path, "old", 2)
    writer = dataset.DatasetWriter(tmp_path, flush_rows=1)
    writer.add(selections("new", 3))
    assert list((tmp_path / "data").glob(".*.tmp"))
    writer.abort()
    assert not list((tmp_path / "data").glob(".*.tmp")) and answers(tmp_path) == {f"good old {i}" for i in range(2)}
    with pytest.raises(ValueError):  # a config that has no rows is not in the card
        datasets.load_dataset(str(tmp_path), "nope", split="train")
