"""executor=ray against executor=local on the same fake-server run, whole process, in one run (issue 11).

    python bench/ray_bench.py --n 10000 --concurrency 32 --latency-ms 100

Each contender is a fresh `arbitrage` process against a fresh fake server (bench/fake_server.py) on
the same N prompts: `executor=local`, then `executor=ray` with 1 and with 2 generation actors (a
local Ray of 2 CPUs, started and stopped by the run itself). Reported: whole-process wall time
(imports, Ray start and the report included), the ratio to local, the run's generate phase, and
how much of it passed before the first block came back (Ray's start, the actors' loads).
Every run is checked: all N prompts are in its sft rows. With an API teacher each actor runs
`max_concurrency` calls at once, so 2 actors may send twice as many in parallel: the scaling figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import fake_server  # noqa: E402
from overhead_bench import cli, prompts_file, timed  # noqa: E402

CONTENDERS = {
    "local": [],
    "ray, 1 actor": ["executor=ray", "executor.num_cpus=2", "executor.actor.replicas=1"],
    "ray, 2 actors": ["executor=ray", "executor.num_cpus=2", "executor.actor.replicas=2", "executor.actor.num_cpus=0.5"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=32, help="max_concurrency of the teacher (per actor on Ray)")
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray.json")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="arbitrage-ray-"))
    prompts = prompts_file(work, opts.n)
    result = {"n": opts.n, "concurrency": opts.concurrency, "latency_ms": opts.latency_ms, "runs": {}}
    for name, extra in CONTENDERS.items():
        url, server = fake_server.spawn("--latency-ms", str(opts.latency_ms))
        out = work / name.replace(" ", "-").replace(",", "")
        try:
            command = cli(url, prompts, out, opts.n, opts.concurrency, "filters=none", "diversity.embedding_spread=false", *extra)
            wall, cpu = timed(command)
        finally:
            server.terminate()
            server.wait(timeout=10)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rows"]["sft"] == opts.n, summary["rows"]
        timings = summary["timings_s"]
        start = timings.get("ray_first_block_s")  # Ray's start and the actors' loads, until the first block is back
        result["runs"][name] = {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "generate_s": timings.get("generate_s"),
            "ray_first_block_s": start,
        }
        print(f"{name}: {wall:.1f} s (generate {timings.get('generate_s')} s, first block after {start} s)", flush=True)
    local = result["runs"]["local"]["wall_s"]
    for run in result["runs"].values():
        run["vs_local"] = round(run["wall_s"] / local, 2)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| executor | wall s | × local | generate s | of it, until the first block | CPU s |\n|---|---:|---:|---:|---:|---:|")
    for name, run in result["runs"].items():
        first = "—" if run["ray_first_block_s"] is None else run["ray_first_block_s"]
        print(f"| {name} | {run['wall_s']} | {run['vs_local']} | {run['generate_s']} | {first} | {run['cpu_s']} |")


if __name__ == "__main__":
    main()
