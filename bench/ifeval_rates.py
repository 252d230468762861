"""IFEval full-pass rates (strict and loose) of a finished `router=all` run with n samples per teacher.

    arbitrage teacher=[smollm2,gemma3] router=all personas=all n_prompts=200 \\
        teacher.smollm2.sampling.n=4 teacher.gemma3.sampling.n=4 out=runs/ifeval200
    python bench/ifeval_rates.py runs/ifeval200

A prompt passes fully when its answer passes every check; rates are over all prompts. Rows: each
teacher with its first sample and with the best of its first k samples (k = 2, 4, … and n), the
best single teacher, and arbitrage (the best answer across teachers) with one and with k samples each. The best answer is picked
by the strict fraction of checks passed, as the dataset picks it; loose rates are those same
answers' loose verdicts. Verdicts are recomputed from the answers and the prompts' constraints with
the checks of this checkout (an answer the quality stage filtered counts as failing).

`--max-tokens K` replays a smaller `sampling.max_tokens` on the same run: an answer longer than K
tokens would have been cut off at K (same seed, same first K tokens), and the quality stage drops
cut-off answers, so it counts as failing. One long run thus measures every shorter cap.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from arbitrage import constraints as C
from arbitrage.analysis import scoretable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max-tokens", type=int, default=None, help="count answers longer than this as cut off")
    opts = parser.parse_args()
    run_dir, cap = opts.run_dir, opts.max_tokens
    checks = {}
    for name in ("sft", "rejected_rows"):
        for row in scoretable.read_config(run_dir, name):
            checks[row["prompt_id"]] = json.loads(row["constraints"] or "[]")
    answers: dict[str, dict[str, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for c in scoretable.read_config(run_dir, "candidates"):
        text, usable = c["response"] or "", c["score"] is not None and not c.get("filtered")
        usable = usable and (cap is None or (c["tokens_out"] or 0) < cap)  # at exactly K it stopped or was cut
        constraints = checks[c["prompt_id"]]
        strict = [C.check(x, text) for x in constraints] if usable else [False]
        loose = [C.check_loose(x, text) for x in constraints] if usable else [False]
        score = sum(strict) / len(strict) if strict else 1.0
        answers[c["prompt_id"]][c["teacher"]].append((c.get("sample") or 0, score, all(strict), all(loose)))
    teachers = sorted({t for by in answers.values() for t in by})
    n = max(len(v) for by in answers.values() for v in by.values())
    prompts = [by for by in answers.values() if all(t in by for t in teachers)]

    def best(options):  # the dataset's pick: highest reward, first sample on a tie
        return max(options, key=lambda o: (o[1], -o[0]))

    def rate(pick) -> tuple[float, float]:
        picked = [pick(by) for by in prompts]
        return sum(p[2] for p in picked) / len(picked), sum(p[3] for p in picked) / len(picked)

    def first(options, k):  # samples 0..k-1: the answers a run with n=k would have had
        return [o for o in options if o[0] < k]

    ks = sorted({2**i for i in range(1, n.bit_length()) if 2**i < n} | {n} - {1})
    rows = []
    for t in teachers:
        rows.append((f"{t}, 1 sample", rate(lambda by, t=t: sorted(by[t])[0])))
        for k in ks:
            rows.append((f"{t}, best of {k}", rate(lambda by, t=t, k=k: best(first(by[t], k)))))
    single = max((r for r in rows if r[0].endswith("1 sample")), key=lambda r: r[1][0])
    rows.append((f"best single teacher ({single[0].split(',')[0]}), 1 sample", single[1]))
    rows.append(("arbitrage, 1 sample each", rate(lambda by: best([sorted(by[t])[0] for t in teachers]))))
    for k in ks:
        rows.append((f"arbitrage, best of {k} each", rate(lambda by, k=k: best([o for t in teachers for o in first(by[t], k)]))))
    capped = f", answers over {cap} tokens counted as cut off" if cap else ""
    print(f"{len(prompts)} prompts answered by {', '.join(teachers)}, {n} samples each ({run_dir}{capped})\n")
    print("| answers kept | full pass, strict | full pass, loose |\n|---|---:|---:|")
    for label, (strict, loose) in rows:
        print(f"| {label} | {strict:.3f} | {loose:.3f} |")


if __name__ == "__main__":
    main()
