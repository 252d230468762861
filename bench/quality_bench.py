"""CPU per item of each default quality-stage filter (conf/filters/default.yaml), one process.

    python bench/quality_bench.py --n 2000 --answer-words 60

Items: N persona prompts synthesised from personas/ (all six languages, the real templates), each
with one answer of --answer-words words in the fake server's English prose (bench/fake_server.py).
Each filter sees its stage's items in chunks of 16, as a run's batches, with its state carried
across chunks. Reported: process CPU per item (time.process_time), and the sum per prompt for one
and for two teachers (answer-stage filters run once per answer).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import fake_server  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from arbitrage.prompts.personas import SynthesisSpec, iter_prompts, load_personas  # noqa: E402
from arbitrage.rows import Candidate, Scored  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--answer-words", type=int, default=60)
    opts = parser.parse_args()
    tasks = {name: spec["templates"] for name, spec in yaml.safe_load((ROOT / "conf/tasks/default.yaml").read_text()).items()}
    files = [ROOT / f"personas/{lang}.jsonl" for lang in ("en", "es", "fr", "de", "pt", "it")]
    prompts = list(iter_prompts(load_personas(files), SynthesisSpec(tasks=tasks, n_prompts=opts.n, seed=0)))
    items = []
    for p in prompts:
        text = fake_server.answer_text("fake", p.user_text, opts.answer_words)
        items.append((p, Scored(Candidate(p.prompt_id, p.prompt_id, "t", text, "stop", 10, 80, 0.1, 1), 1.0)))
    per_stage: dict[str, float] = {}
    print(f"`python bench/quality_bench.py --n {opts.n} --answer-words {opts.answer_words}` ({time.strftime('%Y-%m-%d')})\n")
    print("| filter | stage | CPU ms / item | dropped |")
    print("|---|---|---:|---:|")
    for name, node in yaml.safe_load((ROOT / "conf/filters/default.yaml").read_text()).items():
        f = instantiate(node, name=name)
        data = prompts if f.stage == "prompt" else items
        started, dropped = time.process_time(), 0
        for i in range(0, len(data), 16):
            dropped += len(f.drop(data[i : i + 16]))
        ms = (time.process_time() - started) / len(data) * 1000
        per_stage[f.stage] = per_stage.get(f.stage, 0.0) + ms
        print(f"| {name} | {f.stage} | {ms:.3f} | {dropped} |")
    one = sum(per_stage.values())
    two = one + per_stage.get("answer", 0.0)
    print(f"\nper prompt: {one:.2f} ms with one teacher, {two:.2f} ms with two (stages: "
          + ", ".join(f"{k} {v:.2f}" for k, v in per_stage.items()) + ")")  # fmt: skip


if __name__ == "__main__":
    main()
