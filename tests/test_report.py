"""The run report from a synthetic run folder, and the routing CLI on the fake OpenAI server."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml
from test_cli import api_args, arbitrage

from arbitrage.analysis import report, scoretable
from arbitrage.output import card, dataset
from arbitrage.routers import Route
from arbitrage.rows import Candidate, Prompt, Scored
from arbitrage.select import SelectionSpec, select
from arbitrage.stats import RunStats, RunSummary

FIGURES = ("win_rate.svg", "rewards.svg", "margins.svg", "cost.svg")
SVG = "{http://www.w3.org/2000/svg}"


def check_svg(path, teachers=()):
    """A well-formed SVG with a title, that draws a mark (a rect or path, named by its tooltip) for each teacher."""
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img" and root.get("viewBox"), path.name
    assert (root.findtext(f"{SVG}title") or "").strip(), path.name
    marks = [el for el in root.iter() if el.tag in (f"{SVG}rect", f"{SVG}path")]
    for t in teachers:
        assert any(t in (el.findtext(f"{SVG}title") or "") for el in marks), (path.name, t)
        assert any(t in (el.text or "") for el in root.iter(f"{SVG}text")), (path.name, t)
    return root


def synthetic_run(out, rewards, languages, tasks, teachers=("a", "b"), filtered=()):
    """A run folder written by the real dataset writer: rewards[i][j] is teacher j's score on prompt i
    (None: the call failed); `filtered` holds the (i, j) answers an answer filter dropped."""
    selections = []
    for i, (row, language, task) in enumerate(zip(rewards, languages, tasks, strict=True)):
        p = Prompt(f"p{i:03d}", f"{language}-x-01", language, "food", task, "t", ({"role": "user", "content": f"q{i}"},))
        scored = []
        for t, scores in zip(teachers, row, strict=True):
            for sample, score in enumerate(scores if isinstance(scores, list) else [scores]):  # a list: n samples
                failed = score is None
                c = Candidate(
                    f"c{i}{t}{sample}",
                    p.prompt_id,
                    t,
                    None if failed else f"answer {t} {sample}",
                    "stop",
                    5,
                    20 + i,
                    0.5,
                    1,
                    "HTTP 500" if failed else None,
                    sample=sample,
                )
                why = "truncated: cut off at max_tokens" if (i, teachers.index(t)) in filtered else None
                scored.append(Scored(c, None if failed else score, {}, why))
        selections.append(select(p, Route(tuple(teachers), "all"), scored, SelectionSpec()))
    writer, stats = dataset.DatasetWriter(out), RunStats(teachers)
    writer.add(selections)
    stats.add(selections)
    summary = RunSummary(str(out), router="all", reward="verifiable", timings_s={"total_s": 1.0}, **stats.coverage())
    config = {"output": {"min_margin": 0.01}}
    writer.commit(lambda paths: card.render(out, paths, summary, config, writer.samples.get("sft")))
    summary.save(out / "summary.json")
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    (out / "run.json").write_text(json.dumps({"facts": {"selection": {"min_margin": 0.01}}}))  # what pipeline.run_facts records
    return out


REWARDS = [[1.0, 0.0], [1.0, 0.5], [0.0, 1.0], [0.5, 0.5], [None, 1.0], [1.0, 1.0], [0.0, 0.5], [1.0, 0.0]]
LANGS = ["en", "en", "es", "es", "fr", "fr", "en", "es"]
TASKS = ["math", "code", "math", "code", "math", "code", "math", "code"]


def test_more_samples_against_more_teachers(tmp_path):
    """n samples per teacher: the table keeps the best sample and the first; the report sets the
    gain from more samples against the gain from more teachers."""
    rewards = [[[0.0, 1.0], [0.5, 0.0]], [[1.0, 0.0], [0.0, 0.5]], [[0.5, 0.5], [None, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]
    run = synthetic_run(tmp_path / "run", rewards, LANGS[:4], TASKS[:4])
    table = scoretable.load(run)
    assert table.samples == 2 and table.complete
    assert table.first.tolist() == [[0.0, 0.5], [1.0, 0.0], [0.5, 0.0], [0.0, 0.0]]
    assert table.reward.tolist() == [[1.0, 0.5], [1.0, 0.5], [0.5, 1.0], [0.0, 0.0]]
    assert not table.failed[2, 1]  # one sample failed, the other answered
    text = (report.write(run)).read_text()
    section = text.split("## More samples against more teachers")[1].split("##")[0]
    assert "| a, 1 sample | 0.375 | 0.25 |" in section and "| a, best of 2 | 0.625 | 0.50 |" in section
    assert "| all teachers, 1 sample each | 0.500 | 0.25 |" in section
    assert "| all teachers, best of 2 each | 0.750 | 0.75 |" in section


def test_score_table_reads_a_run_folder(tmp_path):
    table = scoretable.load(synthetic_run(tmp_path, REWARDS, LANGS, TASKS))
    assert table.teachers == ["a", "b"] and [p.prompt_id for p in table.prompts] == [f"p{i:03d}" for i in range(8)]
    assert table.complete and table.failed[4, 0] and table.reward[4, 0] == 0.0
    assert table.prompts[4].domain == "food"  # from rejected_rows or sft alike
    assert table.oracle().tolist() == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.5, 1.0]
    # An answer the filters dropped can never be chosen: worth 0 to a router.
    other = scoretable.load(synthetic_run(tmp_path / "f", REWARDS, LANGS, TASKS, filtered={(7, 0)}))
    assert other.filtered[7, 0] and not other.failed[7, 0] and other.reward[7].tolist() == [0.0, 0.0]


def test_report_renders_figures_and_numbers(tmp_path):
    out = synthetic_run(tmp_path, REWARDS, LANGS, TASKS)
    path = report.write(out)
    text = path.read_text()
    for name in FIGURES:
        check_svg(out / name, () if name == "margins.svg" else ("a", "b"))
        assert f"({name})" in text
    assert "routing.svg" not in text  # an `all` run has no router choices until eval-router replays some
    # a: 4.5/8, b: 4.5/8, best per prompt 7/8.
    assert "| best answer per prompt (arbitrage) | 0.875 |" in text and "| always a | 0.562 |" in text
    assert "| gain over the best single teacher (a) | +0.312 (+56%) |" in text
    # Outright wins: a on p000, p001, p007; b on p002, p004, p006; ties on p003, p005.
    assert "| a | 8 | 1 | 0 | 0.562 | 3 | 38% |" in text and "Ties (several teachers share the best reward): 2 of 8" in text
    assert "| es | 3 | 33% | 33% | 33% |" in text
    assert "2 ties; 6 reach output.min_margin = 0.01" in text
    assert "![win rate per teacher](win_rate.svg)" in (out / "README.md").read_text()


def test_figures_escape_teacher_names(tmp_path):
    teacher = "<script>x</script>"
    out = synthetic_run(tmp_path, REWARDS, LANGS, TASKS, teachers=(teacher, "b & c"))
    report.write(out)
    for name in FIGURES:
        root = check_svg(out / name, () if name == "margins.svg" else (teacher, "b & c"))
        assert not [el for el in root.iter() if el.tag.rsplit("}", 1)[-1].lower() == "script"], name
        assert "<script>" not in (out / name).read_text(encoding="utf-8"), name


def test_winners_name_the_strict_best_or_a_tie():
    table = scoretable.ScoreTable(
        None, [], ["a", "b"], np.array([[1, 0], [0.5, 0.5], [np.nan, 0.2]]), *(np.zeros((3, 2)),) * 5, [None] * 3
    )
    assert report.winners(table) == ["a", "tie", "b"]


@pytest.fixture
def server():
    from fake_openai import FakeOpenAI, Script

    with FakeOpenAI(Script(answers={"good": "a short plain answer without any punctuation marks"})) as fake:
        yield fake


def test_bandit_runs_end_to_end_in_waves_and_reports_regret_against_all(server, tmp_path):
    all_run, bandit = tmp_path / "all", tmp_path / "bandit"
    first = arbitrage(*api_args(server, all_run))
    assert first.returncode == 0, first.stderr[-2000:]
    assert all((all_run / name).exists() for name in ("report.md", *FIGURES))

    before = len(server.requests)
    result = arbitrage(*api_args(server, bandit, "router=bandit", "router.wave_size=4"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(server.requests) - before == 24  # one call per prompt
    table = scoretable.load(bandit)
    assert not table.complete and (~np.isnan(table.reward)).sum(axis=1).tolist() == [1] * 24
    assert all(d.startswith("bandit:") for d in table.decisions if d)
    assert json.loads((bandit / "run.json").read_text())["router"] != json.loads((all_run / "run.json").read_text())["router"]

    again = arbitrage(*api_args(server, bandit, "router=bandit", "router.wave_size=4"))
    assert again.returncode == 0 and len(server.requests) - before == 24  # resume replays every wave from the journal
    resumed = scoretable.load(bandit)  # rows land in completion order: compare decisions per prompt
    decisions = dict(zip([p.prompt_id for p in table.prompts], table.decisions, strict=True))
    assert dict(zip([p.prompt_id for p in resumed.prompts], resumed.decisions, strict=True)) == decisions

    regenerated = arbitrage("report", str(bandit), "--reference", str(all_run))
    assert regenerated.returncode == 0, regenerated.stderr[-2000:]
    text = (bandit / "report.md").read_text()
    assert "regret per prompt vs all" in text and "![router choices vs oracle](routing.svg)" in text
    routing = check_svg(bandit / "routing.svg", ("openai_compat", "api"))
    panels = [el.text for el in routing.iter(f"{SVG}text")]
    assert any("teacher chosen per language" in t for t in panels) and any("regret against" in t for t in panels)

    bad = arbitrage("report", str(bandit), "--reference", str(bandit))
    assert bad.returncode == 2 and "is not an `all` run" in bad.stderr
    missing = arbitrage("eval-router", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
    not_all = arbitrage("eval-router", str(bandit))
    assert not_all.returncode == 2 and "is not an `all` run" in not_all.stderr and len(not_all.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_train_router_and_eval_router_on_a_finished_run(server, tmp_path):
    run = tmp_path / "all"
    assert arbitrage(*api_args(server, run, "n_prompts=30")).returncode == 0
    trained = arbitrage("train-router", str(run))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (run / "router.pt").exists() and f"router.model={run / 'router.pt'}" in trained.stdout

    evaluated = arbitrage("eval-router", str(run), "--router-model", str(run / "router.pt"), "--folds", "3")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    table = (run / "router_eval.md").read_text()
    for row in ("| all (arbitrage) |", "| oracle (hindsight, 1 call) |", "| fixed: api |", "| learned (3-fold CV) |"):
        assert row in table and row in evaluated.stdout
    assert "in-sample: trained on these prompts" in table and "| bandit (thompson" in table
    assert "routing.svg" in (run / "report.md").read_text()

    # The trained router drives a real run: one call per prompt, to the teacher it predicts.
    before = len(server.requests)
    routed = arbitrage(
        *api_args(server, tmp_path / "learned", "n_prompts=30", "router=learned", f"router.model={run / 'router.pt'}")
    )
    assert routed.returncode == 0, routed.stderr[-2000:]
    assert len(server.requests) - before == 30
    # Selective with a call budget: a second teacher for some prompts, never over 1.5 calls each.
    before = len(server.requests)
    selective = arbitrage(
        *api_args(server, tmp_path / "selective", "n_prompts=30", "router=selective", f"router.model={run / 'router.pt'}")
    )
    assert selective.returncode == 0, selective.stderr[-2000:]
    assert 30 <= len(server.requests) - before <= 45
    missing = arbitrage(*api_args(server, tmp_path / "x", "router=learned", f"router.model={tmp_path / 'nope.pt'}"))
    assert missing.returncode == 2 and "does not exist — build it with `arbitrage train-router RUN_DIR`" in missing.stderr


def test_a_run_with_no_answers_gets_a_one_line_report(tmp_path):
    assert "nothing to report" in report.write(tmp_path).read_text()
