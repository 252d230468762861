"""The learned router's features and selective arbitrage's min_gain and call budget, swept on a finished `all` run.

    python bench/selective_sweep.py runs/ifeval200

Every row is 5-fold cross-validated and averaged over 5 fold shuffles (analysis/router_eval.py).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from arbitrage.analysis import router_eval as R
from arbitrage.analysis import scoretable
from arbitrage.routers import model as M


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    table = scoretable.load(parser.parse_args().run_dir)
    vectors = M.embed(table.prompts)
    everything = table.oracle().mean()

    def run(vec, calls: int, gain: float, budget: float | None = None) -> tuple[float, float, float]:
        results = [R.measure("", R.cross_validated(table, vec, 5, seed, calls, gain, budget), table) for seed in range(5)]
        return tuple(
            float(np.mean([getattr(r, k) for r in results])) for k in ("mean_reward", "calls_per_prompt", "gain_captured")
        )

    print(
        f"all teachers: {everything:.3f}\n\n| learned router features | mean reward at 1 call | gain captured |\n|---|---:|---:|"
    )
    zero = torch.zeros_like(vectors)
    for name, vec in [("embedding + language/task/domain + constraint types", vectors), ("the same without the embedding", zero)]:
        mean, _, gain = run(vec, 1, 0.0)
        print(f"| {name} | {mean:.3f} | {gain:.0%} |")
    block = M._constraint_block
    M._constraint_block = lambda prompts, types: torch.zeros(len(prompts), 0, dtype=torch.float64)
    for name, vec in [("without constraint types", vectors), ("without constraint types or embedding", zero)]:
        mean, _, gain = run(vec, 1, 0.0)
        print(f"| {name} | {mean:.3f} | {gain:.0%} |")
    M._constraint_block = block
    print("\n| selective min_gain | mean reward | share of `all` | calls / prompt |\n|---|---:|---:|---:|")
    for min_gain in (0.15, 0.12, 0.1, 0.08):
        mean, calls, _ = run(vectors, 2, min_gain)
        print(f"| {min_gain} | {mean:.3f} | {mean / everything:.0%} | {calls:.2f} |")
    print("\n| selective calls_per_prompt (budget) | mean reward | share of `all` | calls / prompt |\n|---|---:|---:|---:|")
    for budget in (1.3, 1.4, 1.5):
        mean, calls, _ = run(vectors, 2, 0.0, budget)
        print(f"| {budget} | {mean:.3f} | {mean / everything:.0%} | {calls:.2f} |")
    persistence = R.winner_persistence(table)
    if persistence is not None:
        print(f"\nwinner persistence (analysis/router_eval.py): {persistence:.0%}")


if __name__ == "__main__":
    main()
