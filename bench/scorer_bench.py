"""Cheap scorers learned from expensive ones (issue 26): held-out metrics, judge calls saved, CPU per item.

    python bench/scorer_bench.py fake [--train-prompts 192 --eval-prompts 96]   # the fake server as the judge
    python bench/scorer_bench.py run RUN_DIR [--head ridge]                      # train-scorer on any finished run
    python bench/scorer_bench.py cpu                                              # the heads' CPU per item
    python bench/scorer_bench.py compare JUDGE_RUN RUN...                         # judge requests, same chosen answer

`fake`: a judged run (two teachers × two samples on the fake server, its "words" judge: a rating the
sentences of an answer decide, tests/fake_openai.py) trains the head; on other prompts the same
teachers are then scored by the judge alone, by the head alone (reward=distilled) and by the cascade at
k = 1, 2 (reward=cascade), from the CLI. Judge requests are counted in each run's summary; agreement
is the share of prompts whose chosen answer (its call id) is the judge-alone run's.

`cpu`: the head alone (features → score, one numpy product) per item, beside the embedding it needs
(the packaged MiniLM in numpy), for the answer and the prompt scorers, on 1,000 items.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cli(*args: str) -> str:
    env = {**os.environ, "FAKE_KEY": "sk-bench", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run([sys.executable, "-m", "arbitrage.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"arbitrage {' '.join(args[:3])} … failed:\n{result.stderr[-3000:]}")
    return result.stdout


def run_args(url: str, out: Path, n_prompts: int, seed: int, *extra: str) -> list[str]:
    return [
        "teacher=[openai_compat,api]",
        f"teacher.openai_compat.base_url={url}",
        "teacher.openai_compat.model=alpha",
        "teacher.openai_compat.sampling.n=2",
        "teacher.api.model=openai/beta",
        f"teacher.api.api_base={url}",
        "teacher.api.api_key_env=FAKE_KEY",
        "teacher.api.sampling.n=2",
        "personas=all",
        f"n_prompts={n_prompts}",
        f"seed={seed}",
        "diversity.embedding_spread=false",
        "filters=none",
        "report=false",
        "progress=false",
        f"out={out}",
        *extra,
    ]


def judge(url: str, prefix: str) -> list[str]:
    return [f"{prefix}.model=openai/judge-model", f"{prefix}.api_base={url}", f"{prefix}.api_key_env=FAKE_KEY"]


def chosen(out: Path) -> dict[str, tuple[str, str]]:
    """prompt id → the chosen answer's (call id, text)."""
    from arbitrage.analysis import scoretable

    return {r["prompt_id"]: (r["call_id"], r["response"]) for r in scoretable.read_config(out, "candidates") if r["chosen"]}


def judge_requests(out: Path) -> int:
    teachers = json.loads((out / "summary.json").read_text())["teachers"]
    return teachers["judge"]["requests_sent"] if "judge" in teachers else 0


def card_rows(model, label: str) -> list[str]:
    held, card = model.card["held_out"], model.card
    f1 = next(k for k in held if k.startswith("macro_f1@"))
    cascade = held.get("cascade", {})
    return [
        f"| {label} | {card['train']['prompts']} / {held['prompts']} | {held['rmse']:.3f} ({held['target_sd']:.3f}) | "
        f"{held[f1]:.3f} @ {card['threshold']:.3g} | {held['pairwise_accuracy']} ({held['pairs']}) | {held['kendall_tau']} | "
        f"{held.get('same_choice')} | {cascade.get('k=1', {}).get('same_choice')} | {cascade.get('k=2', {}).get('same_choice')} |"
    ]


HEADER = [
    "| scorer | train / held-out prompts | RMSE (target sd) | macro-F1 | pairwise acc. (pairs) | Kendall τ | same choice: head | cascade k=1 | k=2 |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def fake(train_prompts: int, eval_prompts: int) -> None:
    from fake_openai import FakeOpenAI, Script, answer_rating

    from arbitrage.analysis import train_scorer as T

    work = Path(tempfile.mkdtemp(prefix="scorer-bench-"))
    with FakeOpenAI(Script(judge_rule="words", varied=True)) as server:
        url = server.url
        started = time.perf_counter()
        cli(*run_args(url, work / "train", train_prompts, 0, "reward=judge", *judge(url, "reward.judge")))
        print(f"judged training run: {train_prompts} prompts, {4 * train_prompts} answers, {time.perf_counter() - started:.1f} s")
        rows = list(HEADER)
        for head in ("ridge", "mlp"):
            started = time.perf_counter()
            model = T.train_scorer(work / "train", work / f"{head}.pt", head=head)
            rows += card_rows(model, f"{head} (fit + held-out eval {time.perf_counter() - started:.1f} s)")
        print("\n".join(rows))

        ridge = work / "ridge.pt"
        runs = {
            "judge alone": ["reward=judge", *judge(url, "reward.judge")],
            "distilled (head alone)": ["reward=distilled", f"reward.model={ridge}"],
            **{
                f"cascade k={k}": [
                    "reward=cascade",
                    f"reward.model={ridge}",
                    f"reward.top_k={k}",
                    *judge(url, "reward.expensive.judge"),
                ]
                for k in (1, 2)
            },
        }
        print(f"\nOn {eval_prompts} other prompts (seed 1), {4 * eval_prompts} answers, from the CLI:\n")
        print(
            "| reward | judge requests | judge calls saved | same chosen answer as the judge alone | as good (same rating) | wall s |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        reference = None
        for name, extra in runs.items():
            out = work / "".join(ch if ch.isalnum() else "_" for ch in name)
            started = time.perf_counter()
            cli(*run_args(url, out, eval_prompts, 1, *extra))
            wall = time.perf_counter() - started
            picks, sent = chosen(out), judge_requests(out)
            reference = reference or (picks, sent)
            same = sum(picks.get(p, ("",))[0] == c[0] for p, c in reference[0].items()) / len(reference[0])
            # as good: the chosen answer has the rating of the judge's choice (the judge's ties, told apart by select's draw)
            good = sum(p in picks and answer_rating(picks[p][1]) >= answer_rating(c[1]) for p, c in reference[0].items())
            saved = 1 - sent / reference[1]
            print(f"| {name} | {sent} | {saved:.0%} | {same:.0%} | {good / len(reference[0]):.0%} | {wall:.1f} |")
    print(f"\n(run folders in {work})")


def compare(reference: Path, runs: list[Path]) -> None:
    """Runs of the same prompts and teachers (the judge alone first): the judge requests each sent and
    the share of prompts whose chosen answer is the judge-alone run's (same call id)."""
    ref, sent_ref = chosen(reference), judge_requests(reference)
    print("| run | judge requests | judge calls saved | same chosen answer as the judge alone |")
    print("|---|---:|---:|---:|")
    for out in [reference, *runs]:
        picks, sent = chosen(out), judge_requests(out)
        same = sum(picks.get(p, ("",))[0] == c[0] for p, c in ref.items()) / max(1, len(ref))
        print(f"| {out} | {sent} | {1 - sent / max(1, sent_ref):.0%} | {same:.0%} |")


def run(run_dir: Path, head: str) -> None:
    from arbitrage.analysis import train_scorer as T

    started = time.perf_counter()
    model = T.train_scorer(run_dir, Path(tempfile.mkdtemp()) / "scorer.pt", head=head)
    print(f"{run_dir}: target {model.target}, {time.perf_counter() - started:.1f} s")
    print("\n".join(HEADER + card_rows(model, head)))
    print(json.dumps(model.card["held_out"], indent=1))


def cpu() -> None:
    import numpy as np

    from arbitrage import embeddings
    from arbitrage.heads import HeadModel, answer_features, prompt_features
    from arbitrage.rows import Candidate, Prompt

    rng = np.random.default_rng(0)
    n = 1000
    prompts = [
        Prompt(f"p{i}", "", "en", "", "explain", "", ({"role": "user", "content": f"Explain topic {i} to me."},))
        for i in range(n)
    ]
    answers = [Candidate(f"c{i}", f"p{i}", "t", "An answer " * 40, "stop", 0, 0, 0.0, 1) for i in range(n)]
    print("| scorer | features (d) | head only, µs / item | embedding (MiniLM, numpy), ms / item |")
    print("|---|---:|---:|---:|")
    for kind in ("answer", "prompt"):
        if kind == "answer":
            x = answer_features(np.ones((n, 384), np.float32) / 19.6, np.ones((n, 384), np.float32) / 19.6, answers)
        else:
            x = prompt_features(np.ones((n, 384), np.float32) / 19.6, prompts)
        for head, params in (
            ("ridge", {"weight": rng.normal(size=x.shape[1]), "bias": np.zeros(1)}),
            (
                "mlp",
                {"w1": rng.normal(size=(x.shape[1], 256)), "b1": np.zeros(256), "w2": rng.normal(size=256), "b2": np.zeros(1)},
            ),
        ):
            model = HeadModel(kind, head, params)
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                if kind == "answer":
                    model.apply(answer_features(np.ones((n, 384), np.float32), np.ones((n, 384), np.float32), answers))
                else:
                    model.apply(prompt_features(np.ones((n, 384), np.float32), prompts))
                best = min(best, time.perf_counter() - started)
            texts = [c.text for c in answers[:100]] if kind == "answer" else [p.user_text for p in prompts[:100]]
            embeddings.embed_texts(texts[:4])
            started = time.perf_counter()
            embeddings.embed_texts(texts)
            embed_ms = (time.perf_counter() - started) / len(texts) * 1000
            tokens = np.mean([len(e.ids) for e in embeddings.model().tokenizer.encode_batch(texts)])
            print(f"| {kind}, {head} | {x.shape[1]} | {best / n * 1e6:.1f} | {embed_ms:.1f} ({tokens:.0f}-token texts) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fake")
    f.add_argument("--train-prompts", type=int, default=192)
    f.add_argument("--eval-prompts", type=int, default=96)
    r = sub.add_parser("run")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--head", default="ridge")
    sub.add_parser("cpu")
    c = sub.add_parser("compare")
    c.add_argument("reference", type=Path)
    c.add_argument("runs", type=Path, nargs="+")
    opts = parser.parse_args()
    if opts.what == "fake":
        fake(opts.train_prompts, opts.eval_prompts)
    elif opts.what == "run":
        run(opts.run_dir, opts.head)
    elif opts.what == "compare":
        compare(opts.reference, opts.runs)
    else:
        cpu()


if __name__ == "__main__":
    main()
