"""`arbitrage view` on a big run folder: time to the first page, time to the prompt index, pages,
filters, searches and prompt views, and the process's memory while paging.

Synthesises an N-prompt run folder (default 1,000,000 prompts × 2 teachers) at the dataset's own
schemas (arbitrage.output.dataset.SCHEMAS) in row groups of 4096 rows, as DatasetWriter writes them, with
distinct prompt and answer texts. The folder is cached under --dir and reused when N matches.

    .venv/bin/python bench/view_bench.py --n 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arbitrage.output.dataset import SCHEMAS

ROWS_PER_GROUP = 4096  # DatasetWriter's flush_rows
LANGUAGES = ["en", "de", "es", "fr", "it", "pt"]
TASKS = ["explain", "advise", "write", "email", "code", "math"]
DOMAINS = ["health", "law", "education", "cooking", "science", "software", "music", "travel"]
TEACHERS = ["smollm2", "gemma3"]
CHECKS = ["punctuation:no_comma", "change_case:english_lowercase", "length_constraints:number_words", "keywords:frequency"]
WORDS = (
    "the a of to and in that is for it as with was on be at by this had not are but from or have an they which one you "
    "were her all she there would their we him been has when who will more no if out so said what up its about into than "
    "them can only other new some could time these two may then do first any my now such like our over man me even most"
).split()


class Texts:
    """Distinct texts: shared sentences plus the row's own id (so no dictionary page holds them)."""

    def __init__(self, rng: random.Random, words: int):
        self.rng = rng
        self.pool = [" ".join(rng.choices(WORDS, k=words)) for _ in range(2048)]

    def __call__(self, prefixes: list[str]) -> list[str]:
        return [f"{p} {self.pool[self.rng.randrange(2048)]} {self.rng.choice(WORDS)}." for p in prefixes]


def synthesise(out: Path, n: int, seed: int = 0) -> None:
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    prompt_texts, answer_texts = Texts(rng, 30), Texts(rng, 60)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    writers = {name: pq.ParquetWriter(data / f"{name}-bench.parquet", SCHEMAS[name]) for name in SCHEMAS}
    rejected_share = 0.1
    for start in range(0, n, ROWS_PER_GROUP):
        m = min(ROWS_PER_GROUP, n - start)
        pids = [f"{i:016x}" for i in range(start, start + m)]
        lang = np_rng.integers(0, len(LANGUAGES), m)
        task = np_rng.integers(0, len(TASKS), m)
        domain = np_rng.integers(0, len(DOMAINS), m)
        prompts = prompt_texts([f"Question {p}:" for p in pids])
        scores = np.round(np_rng.integers(0, 4, (m, 2)) / 3, 6)
        rejected = np_rng.random(m) < rejected_share
        rows = {name: [] for name in SCHEMAS}
        for i in range(m):
            pid, lg = pids[i], LANGUAGES[lang[i]]
            answers = answer_texts([f"Answer of {t} to {pid}:" for t in TEACHERS])
            best = int(np.argmax(scores[i]))
            for j, t in enumerate(TEACHERS):
                checks = {c: bool(rng.random() < scores[i, j]) for c in CHECKS}
                rows["candidates"].append(
                    {
                        "prompt_id": pid, "call_id": f"{pid}{j}", "teacher": t, "response": answers[j], "finish_reason": "stop",
                        "tokens_in": 80, "tokens_out": 160, "latency_s": 0.4, "attempts": 1, "sample": 0, "error": None,
                        "last_status": None, "score": float(scores[i, j]),
                        "score_details": json.dumps({"checks": checks, "loose": checks}),
                        "chosen": (not rejected[i]) and j == best, "filtered": "truncated: cut off" if rejected[i] else None,
                        "language": lg, "task": TASKS[task[i]],
                    }
                )  # fmt: skip
            user = [{"role": "user", "content": prompts[i]}]
            base = {"prompt_id": pid, "persona_id": f"{lg}-{DOMAINS[domain[i]]}-{i % 3:02d}", "language": lg,
                    "domain": DOMAINS[domain[i]], "task": TASKS[task[i]]}  # fmt: skip
            constraints = json.dumps([{"type": c} for c in CHECKS])
            if rejected[i]:
                rows["rejected_rows"].append(
                    {**base, "prompt": user, "reason": "every answer filtered (truncated)", "constraints": constraints}
                )
                continue
            margin = float(scores[i, best] - scores[i, 1 - best])
            provenance = {
                **base, "teacher_chosen": TEACHERS[best], "teacher_rejected": TEACHERS[1 - best] if margin > 0 else None,
                "score_chosen": float(scores[i, best]), "score_rejected": float(scores[i, 1 - best]) if margin > 0 else None,
                "margin": margin if margin > 0 else None, "n_candidates": 2, "router_decision": "all", "constraints": constraints,
                "instruction_id_list": CHECKS, "kwargs": json.dumps([{}] * len(CHECKS)),
                "score_details": rows["candidates"][-2 + best]["score_details"],
            }  # fmt: skip
            chosen = [{"role": "assistant", "content": answers[best]}]
            rows["sft"].append({"messages": user + chosen, **provenance})
            if margin > 0:
                rejected_msg = [{"role": "assistant", "content": answers[1 - best]}]
                rows["dpo"].append({"prompt": user, "chosen": chosen, "rejected": rejected_msg, **provenance})
        for name, batch in rows.items():
            if batch:
                writers[name].write_table(pa.Table.from_pylist(batch, schema=SCHEMAS[name]))
    for w in writers.values():
        w.close()
    configs = "".join(
        f"- config_name: {name}\n  data_files:\n  - split: train\n    path: data/{name}-bench.parquet\n" for name in SCHEMAS
    )
    (out / "README.md").write_text(f"---\nconfigs:\n{configs}---\n# bench run\n")
    (out / "config.yaml").write_text("output:\n  min_margin: 0.01\n")
    (out / "bench.json").write_text(json.dumps({"n": n}))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def measure(run: Path, pages: int) -> dict:
    """In a fresh process: open the folder the way `arbitrage view` does, then page."""
    from arbitrage.view.folder import RunView
    from arbitrage.view.server import make_server, url_of

    out = {"rss_start_mb": round(rss_mb(), 1)}
    started = time.perf_counter()
    folder = RunView(run)
    server = make_server(folder, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = url_of(server)

    def get(path: str):
        with urllib.request.urlopen(url + path, timeout=120) as r:
            return json.loads(r.read()) if path.startswith("api/") else r.read()

    get("")
    meta = get("api/meta")
    first = get("api/prompts?limit=50")
    out["open_and_first_page_s"] = round(time.perf_counter() - started, 3)
    out["n"] = meta["n"]
    assert len(first["rows"]) == 50
    data = folder.data()
    data.index()
    out["index_ready_s"] = round(time.perf_counter() - started, 3)
    out["rss_after_index_mb"] = round(rss_mb(), 1)

    def timed(label: str, paths: list[str]):
        t = time.perf_counter()
        for p in paths:
            get(p)
        out[f"{label}_ms"] = round(1000 * (time.perf_counter() - t) / len(paths), 1)
        out[f"rss_after_{label}_mb"] = round(rss_mb(), 1)

    rng = random.Random(1)
    n = meta["n"]
    timed("page_sequential", [f"api/prompts?cursor={50 * i}&limit=50" for i in range(pages)])
    timed("page_random", [f"api/prompts?cursor={rng.randrange(n)}&limit=50" for _ in range(pages)])
    timed("page_filtered", [f"api/prompts?language=de&status=pair&cursor={rng.randrange(n)}&limit=50" for _ in range(pages)])
    ids = [f"{rng.randrange(n):016x}" for _ in range(pages)]
    timed("prompt_view", [f"api/prompt/{pid}" for pid in ids])
    timed("search_common_word", ["api/prompts?q=would&limit=50"])
    timed("check_filter", ["api/prompts?check=keywords:frequency&verdict=fail&limit=50"])
    t = time.perf_counter()
    scan = get("api/prompts?q=no-such-text-anywhere&limit=50")
    out["search_first_response_ms"] = round(1000 * (time.perf_counter() - t), 1)
    out["search_first_response_scanned"] = scan["scanned"]
    timed("page_sequential_again", [f"api/prompts?cursor={50 * i}&limit=50" for i in range(pages)])
    out["peak_rss_mb"] = round(peak_mb(), 1)
    server.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="prompts in the synthetic run")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/arbitrage-view-bench"), help="where the run folder is cached")
    parser.add_argument("--pages", type=int, default=200, help="requests per paging scenario")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child process
    opts = parser.parse_args()
    run = opts.dir / f"run-{opts.n}"
    if opts.measure:
        print(json.dumps(measure(run, opts.pages)))
        return
    marker = run / "bench.json"
    if not (marker.exists() and json.loads(marker.read_text()).get("n") == opts.n):
        t = time.perf_counter()
        synthesise(run, opts.n)
        print(f"synthesised {opts.n} prompts in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    size = sum(p.stat().st_size for p in (run / "data").glob("*.parquet"))
    child = subprocess.run(
        [sys.executable, __file__, "--n", str(opts.n), "--dir", str(opts.dir), "--pages", str(opts.pages), "--measure"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = {"data_gb": round(size / 1e9, 2), **json.loads(child.stdout.strip().splitlines()[-1])}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
