"""`make bench`: arbitrage's generation engine against our own fake OpenAI-compatible server.

    python bench/engine_bench.py                       # every scenario, 100k for memory
    python bench/engine_bench.py --scenarios rss --rss-n 10000,100000,1000000

Each scenario starts `bench/fake_server.py` in its own process, runs the `arbitrage` CLI as a user
would (a subprocess, one OpenAI-compatible teacher, `source=jsonl` of N prompts), and checks every
output row: the `sft` config must hold each prompt exactly once, with the server's answer for that
prompt (`answer sha256(model + "\\n" + prompt)[:16]`). Scenarios:

  efficiency  N=2000, concurrency 100, 200 ms latency: ideal time = N × latency / concurrency.
  throughput  N=5000 at 0 ms latency: requests/s (the client's CPU is the limit).
  faults      5 % HTTP 500, a burst of 50 × 429 (Retry-After) every 500 requests, 1 % hangs
              (per-request timeout 2 s), 2 % truncated JSON: rows lost / duplicated / wrong.
  kill        SIGKILL at 50 % of N=4000, then the same command again: lost rows, repeated requests.
  rss         peak RSS of the whole run at each --rss-n (0 ms latency, filters=none).
  routers     peak RSS per router (all, fixed, random, round_robin, bandit, learned) at each
              --routers-n, two teachers on the server: memory must stay flat in N for every router.
  peers       distilabel and curator on the same server and workload (needs /work/peers-venv,
              see bench/peers_README.md); skipped when that venv is missing.

Results: a markdown table on stdout and JSON in --out. Numbers are from one run on this machine;
compare them as ratios within a run (the fake server shares the CPU with the client).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import fake_server  # noqa: E402

MODEL = "fake"
PEERS_PYTHON = Path(os.environ.get("PEERS_VENV", "/work/peers-venv")) / "bin" / "python"
MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter(); rc = subprocess.run(sys.argv[2:]).returncode\n"
    "json.dump({'rc': rc, 'wall_s': time.perf_counter() - t,"
    " 'peak_rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}, open(sys.argv[1], 'w'))\n"
)


def prompt_text(i: int) -> str:
    return f"prompt {i}: say something"  # the same workload as bench/peers.py


def expected(text: str) -> str:
    return fake_server.answer_text(MODEL, text)


def prompts_file(work: Path, n: int) -> Path:
    path = work / f"prompts-{n}.jsonl"
    if not path.exists():
        with path.open("w") as f:
            for i in range(n):
                f.write(json.dumps({"prompt": prompt_text(i)}) + "\n")
    return path


def cli_args(
    url: str, out: Path, prompts: Path, n: int, concurrency: int, *extra: str, client: str = "openai_compat"
) -> list[str]:
    teacher = (
        [f"teacher.openai_compat.base_url={url}", f"teacher.openai_compat.model={MODEL}"]
        if client == "openai_compat"
        else [
            f"teacher.api.api_base={url}",
            f"teacher.api.model=openai/{MODEL}",
            "teacher.api.api_key_env=BENCH_KEY",
        ]
    )
    return [
        f"teacher=[{client}]",
        *teacher,
        f"teacher.{client}.max_concurrency={concurrency}",
        "source=jsonl",
        f"source.path={prompts}",
        f"n_prompts={n}",
        "filters=none",
        "diversity.embedding_spread=false",
        "progress=false",
        f"out={out}",
        *extra,
    ]


def run_measured(args: list[str], work: Path) -> dict:
    """Run the CLI in a fresh process; its wall time and peak RSS (children of a wrapper, so only it)."""
    result = work / f"measure-{time.monotonic_ns()}.json"
    subprocess.run(
        [sys.executable, "-c", MEASURE, str(result), sys.executable, "-m", "arbitrage.cli", *args],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads(result.read_text())


def check_rows(out: Path, n: int) -> dict:
    """Every prompt exactly once in sft, each with the server's answer for it."""
    import pyarrow.parquet as pq

    files = sorted((out / "data").glob("sft-*.parquet"))
    table = pq.read_table(files[0], columns=["messages"]) if files else None
    seen: dict[str, int] = {}
    wrong = 0
    for messages in table.column("messages").to_pylist() if table is not None else []:
        prompt, answer = messages[-2]["content"], messages[-1]["content"]
        seen[prompt] = seen.get(prompt, 0) + 1
        wrong += answer != expected(prompt)
    lost = sum(1 for i in range(n) if prompt_text(i) not in seen)
    return {"rows": sum(seen.values()), "lost": lost, "duplicated": sum(c - 1 for c in seen.values()), "wrong": wrong}


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def journal_lines(out: Path) -> int:
    path = out / "journal" / "calls.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


class Server:
    def __init__(self, *flags: str):
        self.flags = flags

    def __enter__(self) -> str:
        self.url, self.proc = fake_server.spawn(*self.flags)
        return self.url

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def ours(
    work: Path, name: str, n: int, concurrency: int, latency_ms: float, *flags: str, extra=(), client="openai_compat"
) -> dict:
    prompts = prompts_file(work, n)
    out = work / name
    with Server("--latency-ms", str(latency_ms), *flags) as url:
        measured = run_measured(cli_args(url, out, prompts, n, concurrency, *extra, client=client), work)
        stats = fake_server.fetch_stats(url)
    summary = summary_of(out)
    gen = summary["timings_s"]["generate_s"]
    teacher = summary["teachers"][client]
    return {
        "scenario": name,
        "n": n,
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "generate_s": gen,
        "process_wall_s": round(measured["wall_s"], 2),
        "requests_per_s": round(stats["total"] / gen, 1),
        "ideal_s": n * latency_ms / 1000 / concurrency if latency_ms else None,
        "efficiency": round(n * latency_ms / 1000 / concurrency / gen, 3) if latency_ms else None,
        "peak_rss_mib": round(measured["peak_rss_mib"], 1),
        "rc": measured["rc"],
        "retries": teacher["retries"],
        "failure_rows": teacher["failed"],
        "server": {k: stats[k] for k in ("total", "ok", "repeated_ok", "errors_500", "burst_429", "hangs", "garbage")},
        **check_rows(out, n),
    }


def scenario_kill(work: Path, n: int = 4000, concurrency: int = 100) -> dict:
    prompts = prompts_file(work, n)
    out = work / "kill"
    with Server("--latency-ms", "200") as url:
        args = cli_args(url, out, prompts, n, concurrency)
        process = subprocess.Popen(
            [sys.executable, "-m", "arbitrage.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while journal_lines(out) < n // 2 and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        at_kill = journal_lines(out)
        first = fake_server.fetch_stats(url)
        measured = run_measured(args, work)
        stats = fake_server.fetch_stats(url)
    summary = summary_of(out)
    return {
        "scenario": "kill",
        "n": n,
        "concurrency": concurrency,
        "latency_ms": 200,
        "journaled_at_kill": at_kill,
        "requests_before_kill": first["total"],
        "resumed_from_journal": summary["teachers"]["openai_compat"]["resumed"],
        "repeated_requests": stats["repeated_ok"],
        "resume_wall_s": round(measured["wall_s"], 2),
        "rc": measured["rc"],
        **check_rows(out, n),
    }


ROUTERS = ("all", "fixed", "random", "round_robin", "bandit", "learned")


def scenario_routers(work: Path, sizes: list[int], learned_sizes: list[int]) -> list[dict]:
    """Two teachers on one server (openai_compat and the api fast path); each router at each size."""
    os.environ["BENCH_KEY"] = "sk-bench"
    teachers = lambda url: [  # noqa: E731
        "teacher=[openai_compat,api]", f"teacher.openai_compat.base_url={url}", f"teacher.openai_compat.model={MODEL}",
        f"teacher.api.api_base={url}", f"teacher.api.model=openai/{MODEL}", "teacher.api.api_key_env=BENCH_KEY",
        "teacher.openai_compat.max_concurrency=50", "teacher.api.max_concurrency=50", "filters=none",
        "diversity.embedding_spread=false", "progress=false", "report=false",
    ]  # fmt: skip
    results = []
    with Server("--latency-ms", "0") as url:
        model = work / "router-train"
        trained = [sys.executable, "-m", "arbitrage.cli", *teachers(url), "source=jsonl",
                   f"source.path={prompts_file(work, 300)}", "n_prompts=300", f"out={model}"]  # fmt: skip
        subprocess.run(trained, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "arbitrage.cli", "train-router", str(model)], check=True, stdout=subprocess.DEVNULL)
        for router in ROUTERS:
            extra = {"learned": [f"router.model={model / 'router.pt'}"], "bandit": ["router.wave_size=200"]}.get(router, [])
            for n in learned_sizes if router == "learned" else sizes:
                out = work / f"router-{router}-{n}"
                args = [*teachers(url), f"router={router}", *extra, "source=jsonl", f"source.path={prompts_file(work, n)}",
                        f"n_prompts={n}", f"out={out}"]  # fmt: skip
                measured = run_measured(args, work)
                summary = summary_of(out)
                results.append(
                    {
                        "scenario": f"router {router}",
                        "n": n,
                        "peak_rss_mib": round(measured["peak_rss_mib"], 1),
                        "process_wall_s": round(measured["wall_s"], 1),
                        "rows": summary["rows"]["sft"],
                        "rc": measured["rc"],
                    }
                )
                print(json.dumps(results[-1]), flush=True)
    return results


def scenario_peers(work: Path, n: int, concurrency: int, latency_ms: float) -> list[dict]:
    results = []
    for tool in ("curator", "distilabel"):
        result_file = work / f"peer-{tool}-{latency_ms}.json"
        with Server("--latency-ms", str(latency_ms)) as url:
            subprocess.run(
                [str(PEERS_PYTHON), str(ROOT / "bench" / "peers.py"), "--tool", tool, "--base-url", url,
                 "--n", str(n), "--concurrency", str(concurrency), "--out", str(result_file)],
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        if not result_file.exists():
            results.append({"scenario": f"peer {tool}", "error": "did not finish"})
            continue
        r = json.loads(result_file.read_text())
        gen = r["wall_s"]
        results.append(
            {
                "scenario": f"peer {tool} {r.get('version', '')}".strip(),
                "n": n,
                "concurrency": concurrency,
                "latency_ms": latency_ms,
                "generate_s": round(gen, 2),
                "process_wall_s": round(r.get("total_s", gen), 2),
                "requests_per_s": round(n / gen, 1),
                "efficiency": round(n * latency_ms / 1000 / concurrency / gen, 3) if latency_ms else None,
                "peak_rss_mib": r.get("peak_rss_tree_mib") or r.get("peak_rss_mib"),
                "rows": r.get("rows_out"),
                "wrong": (r.get("rows_out") or 0) - (r.get("rows_correct") or 0),
            }
        )
    return results


def table(results: list[dict]) -> str:
    header = [
        "scenario",
        "N",
        "conc",
        "latency ms",
        "generate s",
        "req/s",
        "efficiency",
        "peak RSS MiB",
        "rows",
        "lost",
        "dup",
        "wrong",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        notes = []
        if "server" in r:
            s = r["server"]
            if s["errors_500"] or s["burst_429"] or s["hangs"] or s["garbage"]:
                notes.append(
                    f"faults served: 500×{s['errors_500']}, 429×{s['burst_429']}, hangs×{s['hangs']}, garbage×{s['garbage']}; retries {r['retries']}, failure rows {r['failure_rows']}"
                )
        if r["scenario"] == "kill":
            notes.append(
                f"killed with {r['journaled_at_kill']} calls journaled; resume took {r['resume_wall_s']} s, "
                f"reused {r['resumed_from_journal']}, repeated requests {r['repeated_requests']} (≤ concurrency {r['concurrency']})"
            )
        if r.get("error"):
            notes.append(r["error"])
        cells = [
            r["scenario"], r.get("n", ""), r.get("concurrency", ""), r.get("latency_ms", ""), r.get("generate_s", "—"),
            r.get("requests_per_s", "—"), r.get("efficiency") or "—", r.get("peak_rss_mib", "—"), r.get("rows", "—"),
            r.get("lost", "—"), r.get("duplicated", "—"), r.get("wrong", "—"), "; ".join(notes),
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="efficiency,throughput,faults,kill,rss,routers,peers")
    parser.add_argument("--rss-n", default="10000,100000", help="comma-separated prompt counts for the memory scenario")
    parser.add_argument("--routers-n", default="10000,100000", help="prompt counts for the routers scenario")
    parser.add_argument(
        "--learned-n", default="2000,10000,30000", help="prompt counts for the learned router (it embeds every prompt)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engine.json")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    opts = parser.parse_args()
    work = opts.work or Path(tempfile.mkdtemp(prefix="arbitrage-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    wanted = opts.scenarios.split(",")
    results: list[dict] = []

    def done(result: dict) -> None:
        results.append(result)
        print(json.dumps(result), flush=True)

    if "efficiency" in wanted:
        done(ours(work, "efficiency", 2000, 100, 200))
        os.environ["BENCH_KEY"] = "sk-bench"  # the litellm teacher wants a key; the fake server ignores it
        done(ours(work, "efficiency-api-teacher-litellm", 2000, 100, 200, client="api", extra=("teacher.api.fast_path=false",)))
        done(ours(work, "efficiency-api-teacher-fast-path", 2000, 100, 200, client="api"))
    if "throughput" in wanted:
        done(ours(work, "throughput", 5000, 100, 0))
    if "faults" in wanted:
        faults = ("--error-rate", "0.05", "--burst-429-every", "500", "--burst-429-len", "50", "--retry-after-ms", "200",
                  "--hang-rate", "0.01", "--garbage-rate", "0.02", "--seed", "1")  # fmt: skip
        extra = ("teacher.openai_compat.timeout_s=2", "engine.max_attempts=8", "engine.base_delay_s=0.2")
        done(ours(work, "faults", 2000, 100, 200, *faults, extra=extra))
    if "kill" in wanted:
        done(scenario_kill(work))
    if "rss" in wanted:
        for n in (int(x) for x in opts.rss_n.split(",")):
            done(ours(work, f"rss-{n}", n, 100, 0))
    if "routers" in wanted:
        sizes = [int(x) for x in opts.routers_n.split(",")]
        results += scenario_routers(work, sizes, [int(x) for x in opts.learned_n.split(",")])
    if "peers" in wanted:
        if PEERS_PYTHON.exists():
            done(ours(work, "arbitrage-peer-workload", 2000, 100, 200))
            for r in scenario_peers(work, 2000, 100, 200):
                done(r)
        else:
            print(f"peers: skipped ({PEERS_PYTHON} missing — see bench/peers_README.md)", flush=True)

    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2))
    print()
    print(f"`python bench/engine_bench.py --scenarios {opts.scenarios} --rss-n {opts.rss_n}` ({time.strftime('%Y-%m-%d')})")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
