"""executor=ray as a user meets it: the CLI in a subprocess starts a local Ray (2 CPUs) and runs the
same stages on Ray Data actor pools. The rows must be those of executor=local; an actor killed
mid-run loses nothing; the packaged SmolLM2 answers from CPU vLLM inside an actor."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from fake_openai import FakeOpenAI, Script, answer_for

pytest.importorskip("ray.data", reason="executor=ray needs ray[data] (the dev extra installs it)")

KEY = "sk-never-write-me-123"
RAY = ["executor=ray", "executor.num_cpus=2"]


def arbitrage(*args, timeout=600):
    env = {**os.environ, "FAKE_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def two_teachers(server, out, *extra):
    return [
        "teacher=[openai_compat,api]",
        f"teacher.openai_compat.base_url={server.url}",
        "teacher.openai_compat.model=good",
        "teacher.api.model=openai/chatty",
        f"teacher.api.api_base={server.url}",
        "teacher.api.api_key_env=FAKE_KEY",
        "personas=all",
        "n_prompts=40",
        "teacher.openai_compat.sampling.n=2",
        "diversity.embedding_spread=false",
        "progress=false",
        "report=false",
        f"out={out}",
        *extra,
    ]


def rows(out: Path, config: str) -> list[str]:
    drop = {"latency_s"}  # wall time differs between any two runs
    data = datasets.load_dataset(str(out), config, split="train")
    return sorted(json.dumps({k: v for k, v in row.items() if k not in drop}, sort_keys=True) for row in data)


def test_ray_run_gives_the_rows_of_a_local_run(tmp_path):
    # "good" passes most checks, "chatty" few: both DPO pairs and ties; Spanish prompts always fail (rejected rows).
    script = Script(answers={"good": "a short plain answer without any punctuation marks {digest}"}, always_fail_marker="Soy ")
    with FakeOpenAI(script) as server:
        local = arbitrage(*two_teachers(server, tmp_path / "local"))
        assert local.returncode == 0, local.stderr[-2000:]
        requests_local = len(server.requests)
        on_ray = arbitrage(*two_teachers(server, tmp_path / "ray", *RAY))
        assert on_ray.returncode == 0, on_ray.stderr[-3000:]
        requests_both = len(server.requests)
        assert requests_both - requests_local == requests_local  # the same calls, each sent once
        for config in ("sft", "dpo", "candidates", "rejected_rows"):
            assert rows(tmp_path / "ray", config) == rows(tmp_path / "local", config), config
        assert len(rows(tmp_path / "ray", "dpo")) > 0 and len(rows(tmp_path / "ray", "rejected_rows")) > 0
        summary = {k: json.loads((tmp_path / k / "summary.json").read_text()) for k in ("local", "ray")}
        for key in ("rows", "prompts", "prompts_finished", "by_language", "by_task", "checks"):
            assert summary["ray"][key] == summary["local"][key], key
        for name in ("openai_compat", "api"):
            ray_t, local_t = summary["ray"]["teachers"][name], summary["local"]["teachers"][name]
            assert {k: ray_t[k] for k in ("calls", "failed", "wins", "requests_sent")} == {
                k: local_t[k] for k in ("calls", "failed", "wins", "requests_sent")
            }
        shards = sorted(p.name for p in (tmp_path / "ray" / "journal").glob("calls-*.jsonl"))
        assert any(s.startswith("calls-openai_compat-") for s in shards) and any(s.startswith("calls-api-") for s in shards)
        # A local run resumes the Ray run's folder: its journal shards are read like the local journal,
        # so only the calls that failed (the Spanish prompts' HTTP 400s) are sent again.
        again = arbitrage(*two_teachers(server, tmp_path / "ray"))
        assert again.returncode == 0, again.stderr[-2000:]
        resent = [" ".join(m["content"] for m in r["body"]["messages"]) for r in server.requests[requests_both:]]
        assert resent and all("Soy " in text for text in resent)


def prompts_file(tmp_path, n):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Explain topic number {i}.", "language": "en"}) + "\n" for i in range(n)))
    return path


def answered(out: Path) -> int:
    return sum(
        1 for p in (out / "journal").glob("calls-*.jsonl") for line in p.read_text().splitlines() if '"error": null' in line
    )


def generation_actors() -> list[int]:
    found = subprocess.run(["pgrep", "-f", r"MapBatches\(GenerateStage\)"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_an_actor_killed_mid_run_loses_nothing(tmp_path):
    n, out = 240, tmp_path / "run"
    script = Script(latency_s=0.1)
    with FakeOpenAI(script) as server:
        args = [
            "teacher=[openai_compat]",
            f"teacher.openai_compat.base_url={server.url}",
            "teacher.openai_compat.model=good",
            "teacher.openai_compat.max_concurrency=4",
            "source=jsonl",
            f"source.path={prompts_file(tmp_path, n)}",
            f"n_prompts={n}",
            "filters=none",
            "diversity.embedding_spread=false",
            "progress=false",
            "report=false",
            "executor.batch_size=16",
            f"out={out}",
            *RAY,
        ]
        run = subprocess.Popen(
            [sys.executable, "-m", "arbitrage.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.time() + 240
        while answered(out) < 40:
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.time() < deadline, "the run never got going"
            time.sleep(0.1)
        killed = generation_actors()
        assert len(killed) == 1
        os.kill(killed[0], signal.SIGKILL)  # the actor dies with its calls in flight
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
        gone = time.time() + 60
        while generation_actors() and time.time() < gone:  # ray.shutdown() leaves no worker behind
            time.sleep(0.5)
        assert generation_actors() == []
        sent = [r["body"]["messages"][-1]["content"] for r in server.requests if r["path"].endswith("/chat/completions")]
    sft = datasets.load_dataset(str(out), "sft", split="train")
    texts = sorted(row["messages"][-2]["content"] for row in sft)
    assert texts == sorted(f"Explain topic number {i}." for i in range(n))  # every prompt exactly once
    assert all(row["messages"][-1]["content"] == answer_for("good", row["messages"][-2]["content"], script) for row in sft)
    twice = len(sent) - len(set(sent))
    assert 0 <= twice <= 4 * 4  # only calls in flight when the actor died: max_concurrency × batches per actor
    shards = list((out / "journal").glob("calls-openai_compat-*.jsonl"))
    assert len(shards) == 2  # the dead actor's shard and its replacement's


@pytest.mark.integration
def test_smollm2_on_cpu_vllm_in_a_ray_actor(tmp_path):
    out = tmp_path / "run"
    result = arbitrage(
        "teacher=[smollm2]",
        "teacher.smollm2.sampling.max_tokens=48",
        "filters=none",  # answers cut at 48 tokens would be dropped as truncated
        "n_prompts=6",
        "diversity.embedding_spread=false",
        "progress=false",
        "report=false",
        f"out={out}",
        *RAY,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sft = datasets.load_dataset(str(out), "sft", split="train")
    candidates = datasets.load_dataset(str(out), "candidates", split="train")
    assert len(candidates) == 6 and len(sft) >= 1
    assert all(c["teacher"] == "smollm2" and (c["response"] or c["error"]) for c in candidates)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teachers"]["smollm2"]["load_s"] > 0  # the engine loaded in the actor, and said so


# settings and refusals: one line before the folder is claimed ---------------------------------------
def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from arbitrage.cli import CONF_DIR, build

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return build(hydra_compose("config", overrides=["executor=ray", *overrides]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["executor.actors={gpt5: {replicas: 2}}"], "executor.actors names gpt5, not a teacher of this run"),
        (["router=bandit"], "router=bandit learns between waves and runs only with executor=local"),
        (["personas.prompt_writer=smollm2"], "personas.prompt_writer runs only with executor=local"),
    ],
)
def test_what_ray_cannot_run_is_refused_in_one_line(overrides, message, tmp_path):
    from arbitrage import pipeline
    from arbitrage.errors import ConfigError

    spec = compose(f"out={tmp_path / 'run'}", *overrides)
    with pytest.raises(ConfigError, match=message) as info:
        pipeline.check(spec)
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("executor.actor.replicas=0", r"executor.actor.replicas must be an integer ≥ 1"),
        (
            "executor.actors={smollm2: {gpus: 1}}",
            "executor.actors.smollm2 has no setting gpus — known: replicas, num_cpus, num_gpus",
        ),
        ("executor.batch_size=many", "executor.batch_size must be"),
    ],
)
def test_bad_ray_settings_name_the_fix(override, message):
    from arbitrage.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        compose(override)


def test_per_teacher_pools_inherit_the_default_actor():
    spec = compose("executor.actor.num_cpus=2", "executor.actors={gemma3: {replicas: 3}}")
    assert spec.executor.pool("gemma3") == {"replicas": 3, "num_cpus": 2, "num_gpus": 0}
    assert spec.executor.pool("smollm2") == {"replicas": 1, "num_cpus": 2, "num_gpus": 0}


def test_two_replicas_share_one_rpm_and_one_budget_across_the_cluster(tmp_path):
    """rpm=20 with 2 replicas: 20 requests at once, then one per 3 s for the whole cluster (not 40,
    then two); budget_usd stops the run at the cap for both replicas together. Each answer bills
    10 output tokens at $1 each; a call holds its worst case, 20 tokens ($20), until it lands."""
    n, out = 30, tmp_path / "run"
    script = Script(answers={"good": "one two three four five six seven eight nine ten"})
    with FakeOpenAI(script) as server:
        result = arbitrage(
            "teacher=[openai_compat]",
            f"teacher.openai_compat.base_url={server.url}",
            "teacher.openai_compat.model=good",
            "teacher.openai_compat.rpm=20",
            "teacher.openai_compat.max_concurrency=8",
            "teacher.openai_compat.sampling.max_tokens=20",
            "teacher.openai_compat.price={input_per_mtok:0,output_per_mtok:1000000}",
            "budget_usd=250",
            "source=jsonl",
            f"source.path={prompts_file(tmp_path, n)}",
            f"n_prompts={n}",
            "filters=none",
            "diversity.embedding_spread=false",
            "progress=false",
            "report=false",
            "executor.batch_size=2",
            "executor.batches_per_actor=1",  # small blocks, one at a time: both replicas get work
            "executor.actor.replicas=2",
            "executor.actor.num_cpus=0.1",
            "executor.scorer.num_cpus=0.1",
            f"out={out}",
            *RAY,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        at = sorted(r["at"] for r in server.requests if r["path"].endswith("/chat/completions"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "budget" and summary["spent_usd"] <= 250
    assert 20 < len(at) < n  # past the burst, stopped by the budget before the last prompt
    for k, t in enumerate(at):  # the cluster's bucket: 20, then one more every 3 s (0.5 s of slack)
        assert k + 1 <= 20 + (t - at[0] + 0.5) / 3, f"request {k + 1} at {t - at[0]:.1f} s"
    # Every engine takes from the cluster's Ledger (executors/shared.py), never a bucket of its own.
    # (On this 2-CPU local Ray, Ray Data ran one generation actor of the 2 asked for; on a larger
    # one both take turns, from the same Ledger.)
    assert list((out / "journal").glob("calls-openai_compat-*.jsonl"))


@pytest.mark.slow
def test_a_conversations_turns_share_one_rpm_bucket_not_a_fresh_one_per_turn(tmp_path):
    """Each turn is a Ray Data pass of its own, but the cluster's ledger lives for the run: with
    rpm=20, 12 conversations × 3 turns send 12 at once, then the next turns draw on what is left of
    the same bucket (a fresh one per turn would let each turn burst 12 more)."""
    n, out = 12, tmp_path / "run"
    lower = {"type": "change_case:english_lowercase"}
    lines = [
        {
            "id": f"c{i}",
            "messages": [{"role": "user", "content": f"question {i} turn {t}", "constraints": [lower]} for t in (1, 2, 3)],
        }
        for i in range(n)
    ]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with FakeOpenAI(Script(answers={"good": "a plain answer {digest} in lowercase"})) as server:
        result = arbitrage(
            "teacher=[openai_compat]",
            f"teacher.openai_compat.base_url={server.url}",
            "teacher.openai_compat.model=good",
            "teacher.openai_compat.rpm=20",
            "source=jsonl",
            f"source.path={prompts}",
            f"n_prompts={n}",
            "conversation.turns=3",
            "filters=none",
            "diversity.embedding_spread=false",
            "progress=false",
            "report=false",
            f"out={out}",
            *RAY,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        at = sorted(r["at"] for r in server.requests)
        turns = [(len(r["body"]["messages"]) + 1) // 2 for r in server.requests]
    assert sorted(turns) == [1] * n + [2] * n + [3] * n
    for k, t in enumerate(at):  # one bucket for the run: 20, then one more every 3 s (0.5 s of slack)
        assert k + 1 <= 20 + (t - at[0] + 0.5) / 3, f"request {k + 1} at {t - at[0]:.1f} s"
    assert [r["turn"] for r in datasets.load_dataset(str(out), "sft", split="train")] == [3] * n
