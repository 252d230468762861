"""CPU cost of the known-answer check: ms per verdict of math-verify (arbitrage/verify/math.py)
against the last-number rule it replaced, on a run's real math answers.

    python bench/math_verify_bench.py runs/demo-gates
    python bench/math_verify_bench.py --synthetic 500   # persona references, four answers each

Reads the run's candidates and each math prompt's reference (the `arbitrage:final_number` check in
its `constraints`), times every verdict (the reference's parse is cached, as in a run: the first
verdict of each reference pays it), and prints the median, p95 and max, and how often the two
rules disagree. BENCHMARKS.md, "Gates: rows you can trust".
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq

from arbitrage.constraints import extensions
from arbitrage.output.dataset import data_files
from arbitrage.prompts.personas import exact_problem
from arbitrage.verify import math as verify_math


def references(run: Path, files: dict[str, str]) -> dict[str, str]:
    out = {}
    for name in ("sft", "rejected_rows"):
        if name in files:
            for row in pq.read_table(run / files[name], columns=["prompt_id", "constraints"]).to_pylist():
                for c in json.loads(row["constraints"] or "[]"):
                    if c.get("type") == "arbitrage:final_number":
                        out[row["prompt_id"]] = str(c["answer"])
    return out


def synthetic(n: int) -> list[tuple[str, str]]:
    """n persona math references (both kinds), each with four answers: right in plain text, right in
    \\boxed{} after a worked solution of ~150 words, wrong, and a long rambling one."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        if i % 2:
            expression, reference = exact_problem(rng, "en")
        else:
            a, b, c = rng.randint(12, 99), rng.randint(3, 19), rng.randint(10, 500)
            expression, reference = f"{a} × {b} + {c}", str(a * b + c)
        steps = " ".join(f"Step {k}: we carry the {k}th partial result forward and check it." for k in range(12))
        out += [
            (reference, f"The result of {expression} is {reference}."),
            (reference, f"Let us compute {expression}. {steps} So the final answer is $\\boxed{{{reference}}}$."),
            (reference, f"{expression} = 17/3"),
            (reference, "I am not sure. " + steps * 3 + " Maybe 12, maybe 1,234.5 or x = 7."),
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, nargs="?", help="a finished run folder (its math answers)")
    parser.add_argument("--synthetic", type=int, default=0, help="instead: this many persona references, four answers each")
    args = parser.parse_args()
    if args.synthetic:
        answers = synthetic(args.synthetic)
    else:
        files = data_files(args.run)
        refs = references(args.run, files)
        answers = [
            (refs[r["prompt_id"]], r["response"])
            for r in pq.read_table(args.run / files["candidates"], columns=["prompt_id", "response"]).to_pylist()
            if r["prompt_id"] in refs and r["response"]
        ]
    verify_math.matches("warm up: 1", "1")  # imports sympy and the LaTeX parser once
    ms, old_ms, agree, passed = [], [], 0, 0
    for reference, text in answers:
        t = time.perf_counter()
        new = extensions.final_number_is(text, reference)
        ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        old = extensions.final_number(text) == extensions.parse_number(reference)
        old_ms.append((time.perf_counter() - t) * 1000)
        agree += new == old
        passed += new
    if not ms:
        raise SystemExit(f"{args.run}: no math answers with a known answer")
    ms.sort()
    print(f"{len(ms)} verdicts on {len(set(r for r, _ in answers))} references, {passed} pass")
    print(
        f"math-verify: median {statistics.median(ms):.2f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.2f} ms, max {ms[-1]:.1f} ms; "
        f"last number: median {statistics.median(old_ms):.3f} ms; verdicts agree on {agree}/{len(ms)}"
    )


if __name__ == "__main__":
    main()
