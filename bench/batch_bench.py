"""Batch APIs (issue 14): what mode=batch saves, and what its polling costs in wall time.

    python bench/batch_bench.py --n-cost 10000 --n-wall 2000

1. Cost of an N-prompt run online vs batch, from litellm's price map: the prompts `arbitrage
   estimate` would send (personas=all, one teacher), their prompt tokens counted once with the
   model's tokenizer, priced with each model's online and batch prices. Completion tokens: the
   max_tokens bound (512) and an assumed mean of 256.
2. Wall-clock overhead of batch mode against our fake server (tests/fake_openai.py, whose batch
   runner sends every line to its own chat endpoint, so the server does the same work in both modes)
   with a completion delay of 0: the same CLI run online (max_concurrency 16) and in batch mode with
   the production defaults (linger 5 s, first poll after 10 s) and with tight settings. Every run is
   checked: all prompts answered, each batch line carried once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai import FakeOpenAI  # noqa: E402

from arbitrage import cli, cost, pipeline  # noqa: E402

MODELS = ("openai/gpt-4o-mini", "openai/gpt-4.1-mini", "openai/gpt-4o")
MAX_TOKENS, MEAN_TOKENS = 512, 256


def prompt_tokens(n: int, model: str) -> tuple[int, int]:
    """Calls and prompt tokens of an n-prompt run, as `arbitrage estimate` plans it."""
    spec = cli.build(cli.check_overrides(["teacher=[api]", f"teacher.api.model={model}", "personas=all", f"n_prompts={n}"]))
    calls = tokens = 0
    for call in cli._blocking(pipeline.plan(spec)):
        calls += 1
        tokens += cost.count_prompt_tokens(model, list(call.prompt.messages))
    return calls, tokens


def cost_table(n: int) -> list[dict]:
    calls, tokens_in = prompt_tokens(n, MODELS[0])  # one tokenizer (o200k) for all three models
    rows = []
    for model in MODELS:
        online, batch = cost.api_price(model, None), cost.batch_price(model, None)
        row = {"model": model, "calls": calls, "prompt_tokens": tokens_in, "batch_price": batch.source}
        for label, out in (("bound", MAX_TOKENS), ("mean", MEAN_TOKENS)):
            row[f"online_{label}"] = online.cost(tokens_in, calls * out)
            row[f"batch_{label}"] = batch.cost(tokens_in, calls * out)
        rows.append(row)
    return rows


def wall(server: FakeOpenAI, work: Path, n: int, name: str, extra: list[str]) -> dict:
    prompts = work / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text("".join(json.dumps({"prompt": f"Explain topic number {i}."}) + "\n" for i in range(n)))
    out = work / name.replace(" ", "_").strip("()").replace("(", "").replace(")", "")
    before_batches, before_polls = len(server.batches.batches), server.batches.polls
    args = [
        "teacher=[openai_compat]",
        f"teacher.openai_compat.base_url={server.url}",
        "teacher.openai_compat.model=good",
        "source=jsonl",
        f"source.path={prompts}",
        f"n_prompts={n}",
        "filters=none",
        "diversity.embedding_spread=false",
        "progress=false",
        "report=false",
        f"out={out}",
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed: {result.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"]["sft"] == n, f"{name}: {summary['rows']['sft']} of {n} prompts answered"
    return {
        "mode": name,
        "wall_s": round(elapsed, 2),
        "generate_s": summary["timings_s"].get("generate_s"),
        "batches": len(server.batches.batches) - before_batches,
        "status_polls": server.batches.polls - before_polls,
    }


def wall_table(n: int) -> list[dict]:
    tight = ["batch.linger_s=0.1", "batch.poll_first_s=0.2", "batch.poll_max_s=1"]
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as server:
        work = Path(tmp)
        rows = [wall(server, work, n, "online", [])]
        rows.append(wall(server, work, n, "batch (defaults)", ["teacher.openai_compat.mode=batch"]))
        rows.append(
            wall(
                server,
                work,
                n,
                "batch (tight)",
                ["teacher.openai_compat.mode=batch", *[f"teacher.openai_compat.{t}" for t in tight]],
            )
        )
        assert sorted(set(server.batches.carried.values())) == [2], "each prompt: one line per batch run, never resent"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cost", type=int, default=10_000)
    parser.add_argument("--n-wall", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch.json")
    opts = parser.parse_args()
    costs, walls = cost_table(opts.n_cost), wall_table(opts.n_wall)
    opts.out.write_text(json.dumps({"cost": costs, "wall": walls}, indent=2) + "\n")
    print(f"### Cost of {opts.n_cost:,} prompts (personas=all), online vs batch\n")
    print(
        "| model | calls | prompt tokens | online ≤ (512 out) | batch ≤ (512 out) | online (256 out) | batch (256 out) | batch price |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in costs:
        print(
            f"| {r['model']} | {r['calls']:,} | {r['prompt_tokens']:,} | ${r['online_bound']:.2f} | ${r['batch_bound']:.2f} "
            f"| ${r['online_mean']:.2f} | ${r['batch_mean']:.2f} | {r['batch_price']} |"
        )
    online = walls[0]["generate_s"]
    print(f"\n### Wall clock, {opts.n_wall:,} prompts against the fake server (batch completion delay 0)\n")
    print("| mode | process wall s | generate s | generate vs online | batches | status polls |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in walls:
        print(
            f"| {r['mode']} | {r['wall_s']} | {r['generate_s']} | {r['generate_s'] - online:+.1f} s ({r['generate_s'] / online:.2f}×) "
            f"| {r['batches']} | {r['status_polls']} |"
        )


if __name__ == "__main__":
    main()
