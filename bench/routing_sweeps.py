"""Router sweeps on a finished `router=all` run, replayed offline (issue 5; numbers in BENCHMARKS.md).

1. The learned router, 5-fold cross-validated over 10 fold shuffles, with the prompt embedding and
   with it zeroed (one-hot language, task and domain only): what does the embedding add?
2. The bandit over strategy × prior_strength × wave_size, 10 seeds each: which defaults?

    python bench/routing_sweeps.py runs/r200
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from arbitrage.analysis import (
    router_eval,  # noqa: E402
    scoretable,  # noqa: E402
)
from arbitrage.routers import model as router_model  # noqa: E402
from arbitrage.routers.bandit import BanditRouter  # noqa: E402

SEEDS = range(10)


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    run = parser.parse_args().run_dir
    table = scoretable.load(run)
    means = table.reward.mean(axis=0)
    print(
        f"{run}: {len(table.prompts)} prompts; oracle {table.oracle().mean():.3f}; "
        + ", ".join(f"always {t} {m:.3f}" for t, m in zip(table.teachers, means, strict=True))
    )

    vectors = router_model.embed(table.prompts)
    print("\n| learned router features | mean reward (5-fold CV, 10 shuffles) |\n|---|---:|")
    for name, x in (
        ("embedding + one-hot language, task, domain", vectors),
        ("one-hot only (embedding zeroed)", torch.zeros_like(vectors)),
    ):
        scores = [router_eval.measure("", router_eval.cross_validated(table, x, 5, seed), table).mean_reward for seed in SEEDS]
        print(f"| {name} | {mean_sd(scores)} |")

    print("\n| bandit strategy | prior_strength | wave_size | mean reward (10 seeds) |\n|---|---:|---:|---:|")
    for strategy in ("epsilon", "thompson"):
        for prior in (0.5, 2.0, 5.0, 10.0):
            for wave in (1, 10):
                scores = [
                    router_eval.measure(
                        "", router_eval.replay(BanditRouter(strategy, prior_strength=prior, wave_size=wave, seed=s), table), table
                    ).mean_reward
                    for s in SEEDS
                ]
                print(f"| {strategy} | {prior} | {wave} | {mean_sd(scores)} |")


if __name__ == "__main__":
    main()
