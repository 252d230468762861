"""Whole-process cost of a run against a raw aiohttp client, in one run (issue: one-direction pipeline).

    python bench/overhead_bench.py --n 2000 --concurrency 100 --latency-ms 200 --repeats 3

For each repeat, each contender runs as a fresh process against the same fake server (a fresh
subprocess per contender, bench/fake_server.py) on the same N prompts:

  raw aiohttp   a 40-line client: read the prompts file, a pool of `concurrency` workers, one shared
                session, write the answers as JSONL. The floor for any tool that does the same work.
  filters off   `arbitrage ... source=jsonl filters=none diversity.embedding_spread=false`: the whole
                CLI, report included.
  defaults      the same command with the default quality stage and diversity (embedding spread).

Reported: the median whole-process wall time (start to exit, imports and the report included), the
ratio to raw aiohttp and of defaults to filters off, and the run's own phase timings (summary.json).
Every arbitrage run is checked: all N prompts are in its sft rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import fake_server  # noqa: E402

MODEL = "fake"
RAW_CLIENT = r"""
import asyncio, json, sys
import aiohttp

async def main(url, prompts_path, out_path, concurrency):
    prompts = [json.loads(line)["prompt"] for line in open(prompts_path)]
    answers = [None] * len(prompts)
    counter = iter(range(len(prompts)))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            for i in counter:
                body = {"model": "fake", "messages": [{"role": "user", "content": prompts[i]}], "max_tokens": 512}
                async with session.post(url + "/chat/completions", json=body) as r:
                    answers[i] = (await r.json())["choices"][0]["message"]["content"]
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    with open(out_path, "w") as f:
        for p, a in zip(prompts, answers):
            f.write(json.dumps({"prompt": p, "answer": a}) + "\n")

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


def prompts_file(work: Path, n: int) -> Path:
    path = work / f"prompts-{n}.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Explain topic number {i} to a curious reader, in plain words."}) + "\n")
    return path


def timed(command: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed: {done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli(url: str, prompts: Path, out: Path, n: int, concurrency: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "arbitrage.cli", "teacher=[openai_compat]", f"teacher.openai_compat.base_url={url}",
        f"teacher.openai_compat.model={MODEL}", f"teacher.openai_compat.max_concurrency={concurrency}", "source=jsonl",
        f"source.path={prompts}", f"n_prompts={n}", "progress=false", f"out={out}", *extra,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--answer-words", type=int, default=60, help="filler words per answer: the quality stage reads them")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="arbitrage-overhead-"))
    prompts = prompts_file(work, opts.n)
    walls: dict[str, list[float]] = {"raw aiohttp": [], "filters off": [], "defaults": []}
    cpus: dict[str, list[float]] = {name: [] for name in walls}
    phases: dict[str, dict] = {}
    for repeat in range(opts.repeats):
        for name in walls:
            url, server = fake_server.spawn("--latency-ms", str(opts.latency_ms), "--answer-words", str(opts.answer_words))
            out = work / f"{name.replace(' ', '-')}-{repeat}"
            try:
                if name == "raw aiohttp":
                    command = [sys.executable, "-c", RAW_CLIENT, url, str(prompts), str(out) + ".jsonl", str(opts.concurrency)]
                else:
                    extra = ("filters=none", "diversity.embedding_spread=false") if name == "filters off" else ()
                    command = cli(url, prompts, out, opts.n, opts.concurrency, *extra)
                wall, cpu = timed(command)
                walls[name].append(wall)
                cpus[name].append(cpu)
            finally:
                server.terminate()
                server.wait(timeout=10)
            if name != "raw aiohttp":
                summary = json.loads((out / "summary.json").read_text())
                assert summary["rows"]["sft"] == opts.n, summary["rows"]
                phases[name] = summary["timings_s"]
            print(f"{name}: {walls[name][-1]:.2f} s", flush=True)
    median = {name: statistics.median(w) for name, w in walls.items()}
    cpu = {name: statistics.median(c) for name, c in cpus.items()}
    # The quality stage's CPU per prompt: what the defaults add over filters off, less the post-run
    # embedding spread (model load included), which the run times on its own (stats_s).
    quality_ms = (cpu["defaults"] - cpu["filters off"] - phases["defaults"].get("stats_s", 0.0)) / opts.n * 1000
    result = {
        "n": opts.n,
        "concurrency": opts.concurrency,
        "latency_ms": opts.latency_ms,
        "answer_words": opts.answer_words,
        "ideal_s": opts.n * opts.latency_ms / 1000 / opts.concurrency,
        "wall_s": walls,
        "median_s": median,
        "cpu_s": cpu,
        "quality_cpu_ms_per_prompt": round(quality_ms, 2),
        "filters_off_over_raw": round(median["filters off"] / median["raw aiohttp"], 3),
        "defaults_over_filters_off": round(median["defaults"] / median["filters off"], 3),
        "phases_s": phases,
        "date": time.strftime("%Y-%m-%d"),
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=2))
    print(f"\n`python bench/overhead_bench.py --n {opts.n} --concurrency {opts.concurrency} --latency-ms {opts.latency_ms:g} "
          f"--repeats {opts.repeats} --answer-words {opts.answer_words}` ({result['date']}; ideal {result['ideal_s']:.1f} s)\n")  # fmt: skip
    print("| contender | median wall s | × raw aiohttp | CPU s |")
    print("|---|---:|---:|---:|")
    for name, wall in median.items():
        print(f"| {name} | {wall:.2f} | {wall / median['raw aiohttp']:.2f} | {cpu[name]:.2f} |")
    print(
        f"\ndefaults / filters off = {result['defaults_over_filters_off']:.2f}; quality stage CPU {quality_ms:.2f} ms per prompt"
    )
    for name, timings in phases.items():
        print(f"{name} phases (s): " + ", ".join(f"{k.removesuffix('_s')}={v}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
