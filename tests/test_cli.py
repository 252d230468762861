"""The CLI as a user runs it: a subprocess, real Hydra, API teachers on our fake server."""

import json
import os
import subprocess
import sys

import datasets
import pytest
from fake_openai import FakeOpenAI, Script

KEY = "sk-never-write-me-123"


def arbitrage(*args, env=None, cwd=None):
    env = {**os.environ, "FAKE_KEY": KEY, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def api_args(server, out, *extra):
    """Both fake teachers on `server` (a FakeOpenAI, or its URL where the run never sends)."""
    url = getattr(server, "url", server)
    return [
        "teacher=[openai_compat,api]",
        f"teacher.openai_compat.base_url={url}",
        "teacher.openai_compat.model=good",
        "teacher.api.model=openai/chatty",
        f"teacher.api.api_base={url}",
        "teacher.api.api_key_env=FAKE_KEY",
        "personas=all",
        "n_prompts=24",
        "diversity.embedding_spread=false",
        "filters=none",
        f"out={out}",
        *extra,
    ]


def jsonl_args(server, out, prompts, *extra):
    """`api_args` on a prompts file (source=jsonl, up to 100 lines), with no progress bars or report."""
    extra = ("source=jsonl", f"source.path={prompts}", "n_prompts=100", "progress=false", "report=false", *extra)
    return api_args(server, out, *extra)


@pytest.fixture
def server():
    # "good" follows most formats; "chatty" uses commas and capitals. Spanish prompts always fail.
    script = Script(answers={"good": "a short plain answer without any punctuation marks"}, always_fail_marker="Soy ")
    with FakeOpenAI(script) as fake:
        yield fake


def test_api_run_writes_a_loadable_dataset_and_resumes_without_new_requests(server, tmp_path):
    out = tmp_path / "run"
    result = arbitrage(*api_args(server, out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote" in result.stdout and "openai_compat" in result.stdout

    sft = datasets.load_dataset(str(out), "sft", split="train")
    dpo = datasets.load_dataset(str(out), "dpo", split="train")
    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    rejected = datasets.load_dataset(str(out), "rejected_rows", split="train")
    assert len(candidates) == 48 and len(sft) + len(rejected) == 24
    # Spanish prompts fail (HTTP 400); the fake's answers hold no number, so math prompts fail their known
    # answer, and no code, so code prompts fail the code-block gate; and an answer that follows none of
    # its instructions is below the default reward floor
    assert len(rejected) > 0 and all(
        (r["language"] == "es" and "HTTP 400" in r["reason"])
        or (r["task"] == "math" and r["reason"] == "gate arbitrage:final_number failed on every answer (2)")
        or (r["task"] == "code" and r["reason"] == "gate arbitrage:code_block failed on every answer (2)")
        or r["reason"].startswith("no answer reaches selection.min_reward 0.01 (2; best reward 0.000)")
        for r in rejected
    )
    assert all(m["role"] in ("system", "user", "assistant") for row in sft for m in row["messages"])
    assert all(row["messages"][-1]["role"] == "assistant" for row in sft)
    assert len(dpo) > 0
    for row in dpo:
        assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert row["score_chosen"] - row["score_rejected"] == pytest.approx(row["margin"]) and row["margin"] >= 0.01
        assert row["teacher_chosen"] != row["teacher_rejected"]
    failed = [c for c in candidates if c["error"]]
    assert failed and all(c["last_status"] == 400 and c["score"] is None for c in failed)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"]["sft"] == len(sft) and summary["teachers"]["api"]["calls"] == 24
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "api_key_env: FAKE_KEY" in card
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="ignore"), path

    requests_before = len(server.requests)
    again = arbitrage(*api_args(server, out))
    assert again.returncode == 0, again.stderr[-2000:]
    # Only the failed calls (Spanish prompts, HTTP 400) are retried on resume.
    assert len(server.requests) - requests_before == len(failed)
    assert len(datasets.load_dataset(str(out), "sft", split="train")) == len(sft)

    # Filter and selection settings are not part of the run identity: a rerun re-selects from the journal,
    # and load_dataset must see the new rows (datasets caches a folder by its card, not its files).
    strict = arbitrage(
        *api_args(
            server, out, "+filters.min_reward._target_=arbitrage.quality.filters.MinReward", "+filters.min_reward.threshold=1.01"
        )
    )
    # Nothing usable is an error (exit 1, one line naming the reason), but the data is still written.
    assert strict.returncode == 1, strict.stderr[-2000:]
    assert "error: the run produced no usable answer (" in strict.stderr and "min_reward" in strict.stderr.splitlines()[-1]
    assert len(datasets.load_dataset(str(out), "rejected_rows", split="train")) == 24
    assert "config_name: sft" not in (out / "README.md").read_text()  # empty: not a loadable config
    assert "no sft rows" in strict.stdout + strict.stderr


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


def test_a_different_run_in_the_same_folder_is_refused(server, tmp_path):
    out = tmp_path / "run"
    assert arbitrage(*api_args(server, out, "n_prompts=4")).returncode == 0
    line = one_error_line(arbitrage(*api_args(server, out, "n_prompts=4", "teacher.api.sampling.temperature=0.1")))
    assert "already holds a different run (differs in: teachers.api.sampling.temperature 0.7 → 0.1)" in line
    # Where a teacher is served is part of its identity: answers of two endpoints never mix.
    moved = one_error_line(arbitrage(*api_args(server, out, "n_prompts=4", "teacher.api.api_base=http://127.0.0.1:9/v1")))
    assert "differs in: teachers.api.endpoint" in moved
    assert datasets.load_dataset(str(out), "sft", split="train").num_rows > 0  # nothing lost


def test_bad_input_is_one_line_before_any_model_loads(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"\n')
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    cases = {
        "unknown teacher 'gpt5'": ["teacher=[gpt5]"],
        "environment variable NO_SUCH_KEY is not set": [
            "teacher=[api]",
            "teacher.api.model=openai/x",
            "teacher.api.api_key_env=NO_SUCH_KEY",
        ],
        "teacher.api.model must be set": ["teacher=[api]"],
        "n_prompts must be a positive integer": ["n_prompts=0"],
        "is not valid JSON": [f"personas.files=[{bad}]"],
        "malformed override": ["teacher=[smollm2,"],
        "unknown config key 'n_promps'": ["n_promps=2"],
        "is not an arbitrage run": [f"out={tmp_path / 'other'}"],
    }
    for expected, args in cases.items():
        args = [*args, f"out={tmp_path / 'o'}"] if not any(a.startswith("out=") for a in args) else args
        assert expected in one_error_line(arbitrage(*args)), args
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_teacher_can_write_the_prompts_persona_hub_style(tmp_path):
    script = Script(answers={"writer": "Como enfermera, ¿cómo preparo un botiquín para mis nietos?"})
    with FakeOpenAI(script) as fake:
        out = tmp_path / "run"
        args = [
            "teacher=[openai_compat]",
            f"teacher.openai_compat.base_url={fake.url}",
            "teacher.openai_compat.model=writer",
            "personas.prompt_writer=openai_compat",
            "filters=none",  # every written request is the same text: dedup would keep one
            "personas.languages=[es]",
            "personas=all",
            "n_prompts=12",
            f"out={out}",
        ]
        result = arbitrage(*args)
        assert result.returncode == 0, result.stderr[-2000:]
        writer_requests = [r for r in fake.requests if r["body"]["messages"][-1]["content"].startswith("Here is a persona:")]
        before = len(fake.requests)
        again = arbitrage(*args)
        assert again.returncode == 0 and len(fake.requests) == before  # written prompts come from the journal
    sft = datasets.load_dataset(str(out), "sft", split="train")
    written = [r for r in sft if r["task"] != "math"]
    # code prompts are written too; the writer's one sentence holds no code, so they fail the code-block gate
    summary = json.loads((out / "summary.json").read_text())
    rejected = datasets.load_dataset(str(out), "rejected_rows", split="train") if summary["rows"]["rejected_rows"] else []
    code = [r for r in rejected if r["task"] == "code"]
    assert all(r["reason"].startswith("gate arbitrage:code_block failed") for r in code)
    assert written and len(writer_requests) == len(written) + len(code)
    for row in written:
        user = row["messages"][-2]["content"]
        assert user.startswith("Como enfermera, ¿cómo preparo un botiquín para mis nietos?")
        assert "español" in user  # the constraint instructions are still appended
    for row in sft:
        if row["task"] == "math":
            assert row["messages"][0]["content"].startswith("Soy ")


def test_multirun_sweeps_into_separate_runs(server, tmp_path):
    args = [
        "-m",
        "teacher=[openai_compat]",
        f"teacher.openai_compat.base_url={server.url}",
        "teacher.openai_compat.model=good",
        "n_prompts=2,3",
        "filters=none",
        "selection.require=gates",  # the fake's one answer follows no instruction of the first prompts: no reward floor
        f"out={tmp_path}/sweep_${{n_prompts}}",
        f"hydra.sweep.dir={tmp_path}/multirun",
    ]
    result = arbitrage(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    for n in (2, 3):
        assert len(datasets.load_dataset(str(tmp_path / f"sweep_{n}"), "candidates", split="train")) == n


def test_quality_stage_drops_with_reasons_and_reports_diversity(tmp_path):
    # Every "dup" answer is the same text, "en" answers are English whatever the prompt's language.
    script = Script(
        answers={
            "dup": "the same answer every time",
            "en": "An English answer {digest} that is long enough for language identification to work.",
        }
    )
    with FakeOpenAI(script) as fake:
        out = tmp_path / "run"
        args = [
            "teacher=[openai_compat,api]",
            f"teacher.openai_compat.base_url={fake.url}",
            "teacher.openai_compat.model=dup",
            "teacher.api.model=openai/en",
            f"teacher.api.api_base={fake.url}",
            "teacher.api.api_key_env=FAKE_KEY",
            "personas=all",
            "personas.languages=[en,fr]",
            "n_prompts=12",
            "filters.decontaminate.eval_files=[tests/data/eval_sample.jsonl]",
            # "dup" is too short for language ID (it is checked by dedup alone) and so for the
            # word floor of the tasks that ask for a text: that floor is test_filters'
            "~filters.length.min_words_by_task",
            f"out={out}",
        ]
        result = arbitrage(*args)
        assert result.returncode == 0, result.stderr[-3000:]
    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    summary = json.loads((out / "summary.json").read_text())
    rejected = datasets.load_dataset(str(out), "rejected_rows", split="train") if summary["rows"]["rejected_rows"] else []
    sft = datasets.load_dataset(str(out), "sft", split="train")
    filtered = [c for c in candidates if (c["filtered"] or "").startswith("wrong_language")]
    assert all(
        c["teacher"] == "api" and c["language"] == "fr" and c["filtered"].startswith("wrong_language: answer is 'en'")
        for c in filtered
    )
    assert len(filtered) == sum(
        1 for c in candidates if c["teacher"] == "api" and c["language"] == "fr" and c["task"] not in ("code", "math")
    )
    # Every "dup" answer after the first is a duplicate best answer: marked so, and the next best
    # (the api's own answer) is chosen instead, unless it was filtered too (then the prompt is lost).
    duplicates = [c for c in candidates if (c["filtered"] or "").startswith("exact_answers: same response text")]
    assert duplicates and all(c["teacher"] == "openai_compat" for c in duplicates)
    by_prompt = {r["prompt_id"]: r for r in sft}
    lost = {r["prompt_id"]: r["reason"] for r in rejected}
    for c in duplicates:
        if c["prompt_id"] in by_prompt:
            assert by_prompt[c["prompt_id"]]["teacher_chosen"] == "api"
        else:
            assert lost[c["prompt_id"]].startswith("exact_answers: same response text")
    assert any(c["prompt_id"] in by_prompt for c in duplicates)  # saved by the next best answer
    assert len(sft) + len(rejected) == 12
    assert len({r["messages"][-1]["content"] for r in sft}) == len(sft)  # no two kept answers alike
    quality = summary["quality"]
    assert quality["dropped"]["exact_answers"] == len(duplicates) and quality["dropped"]["wrong_language"] == len(filtered)
    assert quality["prompts_before"]["n"] == 12 and quality["answers_after"]["n"] == len(sft)
    assert 0 < quality["prompts_before"]["embedding_spread"] < 1 and quality["prompts_before"]["coverage"]["language"] == 2
    assert "## Quality stage" in (out / "README.md").read_text()


def test_n_samples_per_teacher_are_calls_with_their_own_seed_and_extend_on_resume(tmp_path):
    """teacher.<name>.sampling.n: each sample is its own call (journal record, score, `sample`
    column) with a distinct seed, for the OpenAI-compatible and the litellm path alike; raising n
    later sends only the new samples. With native_n=false, one request per sample (native `n`:
    tests/test_nsamples.py)."""
    # No prompt always fails here: half the api's first calls failing with 400 could trip the
    # circuit breaker (tests/test_failfast.py), which is not what this test is about.
    with FakeOpenAI(Script(answers={"good": "a short plain answer without any punctuation marks"})) as server:
        out = tmp_path / "run"
        two = ("teacher.openai_compat.sampling.n=2", "teacher.api.sampling.n=2", "teacher.api.fast_path=false", "n_prompts=6")
        two += ("teacher.openai_compat.native_n=false", "teacher.api.native_n=false")
        result = arbitrage(*api_args(server, out, *two))
        assert result.returncode in (0, 1), result.stderr[-2000:]
        candidates = datasets.load_dataset(str(out), "candidates", split="train")
        assert len(candidates) == 6 * 2 * 2
        assert sorted({(c["teacher"], c["sample"]) for c in candidates}) == [
            ("api", 0),
            ("api", 1),
            ("openai_compat", 0),
            ("openai_compat", 1),
        ]
        seeds = {}
        for body in (r["body"] for r in server.requests):
            seeds.setdefault((body["model"], body["messages"][-1]["content"]), set()).add(body["seed"])
        assert all(len(s) == 2 for s in seeds.values())  # two samples, two seeds, per prompt and teacher
        sent = len(server.requests)
        three = [x.replace("n=2", "n=3") for x in two]
        again = arbitrage(*api_args(server, out, *three))
        assert again.returncode in (0, 1), again.stderr[-2000:]
        failed_before = sum(1 for c in candidates if c["error"])
        assert len(server.requests) - sent == 6 * 2 + failed_before  # the third sample, and the failures again
        rows = datasets.load_dataset(str(out), "candidates", split="train")
        assert len(rows) == 6 * 2 * 3
        # The card sets the gain from more samples against the gain from more teachers.
        best: dict = {}
        for c in rows:
            key = (c["prompt_id"], c["teacher"])
            best[key] = max(best.get(key, 0.0), c["score"] if c["score"] is not None and not c["error"] else 0.0)
        across = [max(best[(p, t)] for t in ("api", "openai_compat")) for p in {p for p, _ in best}]
        card = (out / "README.md").read_text().split("## More samples against more teachers")[1].split("\n## ")[0]
        assert "| openai_compat, 1 sample |" in card and "| api, best of 3 |" in card
        assert f"| all teachers, best of 3 each | {sum(across) / 6:.3f} |" in card and card.count("| 6 |") == 6
