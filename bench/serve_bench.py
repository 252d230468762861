"""Local teachers in-process or as vLLM servers (arbitrage/teachers/vllm_server.py), and vLLM's
sleep mode for teachers that share a GPU.

    python bench/serve_bench.py cpu                 # both packaged teachers, 64 persona prompts, both ways
    python bench/serve_bench.py sleep --model Qwen/Qwen3-8B [--second meta-llama/Llama-3.1-8B-Instruct]
    python bench/serve_bench.py plan --teacher qwen8b=Qwen/Qwen3-8B@0 --teacher llama70b=meta-llama/Llama-3.3-70B-Instruct@4,5,6,7

cpu    runs the `arbitrage` CLI as a user would, once with `serve=inprocess` and once with
       `serve=process` for every teacher: wall time, per-teacher tokens/s (tokens out / the time
       the teacher was generating) and load time from summary.json, peak RSS and PSS summed over
       the process tree (sampled every 0.5 s; RSS counts shared pages once per process, PSS
       shares them out), and how many answers are equal between the two runs (same call ids).
sleep  (GPU) one server per model with --enable-sleep-mode: cold start to /health, first and
       warm request latency, POST /sleep?level=1 and /wake_up times and GPU memory before/after
       (nvidia-smi), the first request after waking; with --second, the time to switch models
       (sleep A + wake B) against a cold start of B. Level 2 too (--level2): sleep, wake_up,
       reload_weights (the dev /collective_rpc endpoint).
plan   (GPU) start each --teacher NAME=MODEL@GPUS as its own server (engine flags from --flag,
       e.g. --flag llama70b:quantization=fp8) and send --prompts requests to all at once: each
       teacher's tokens/s, to check a GPU placement before a long run (BENCHMARKS.md, GPU plan).

Results: a markdown table on stdout, JSON in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# cpu ------------------------------------------------------------------------------------------------
class TreeMemory:
    """Peak RSS and PSS summed over a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.5):
        import psutil

        self.root, self.every_s = psutil.Process(pid), every_s
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            rss = pss = 0
            for p in procs:
                try:
                    info = p.memory_full_info()
                    rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
                except psutil.Error:
                    pass
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_cli(out: Path, overrides: list[str]) -> dict:
    args = [sys.executable, "-m", "arbitrage.cli", *overrides, f"out={out}"]
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(proc.pid)
    stdout, stderr = proc.communicate()
    memory.stop()
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: no usable answer, still a measured run
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(memory.peak_rss / 2**30, 2),
        "peak_pss_gb": round(memory.peak_pss / 2**30, 2),
        "terminal_lines": len((stdout + stderr).replace("\r", "\n").splitlines()),
        "timings": summary["timings_s"],
        "teachers": {
            name: {k: t.get(k) for k in ("calls", "failed", "tokens_out", "tok_per_s", "load_s", "generate_s")}
            for name, t in summary["teachers"].items()
        },
    }


def answers(out: Path) -> dict[str, tuple[str, str]]:
    import datasets

    rows = datasets.load_dataset(str(out), "candidates", split="train")
    return {r["call_id"]: (r["teacher"], r["response"]) for r in rows}


def cpu(opts) -> dict:
    teachers = opts.teachers.split(",")
    base = [f"teacher=[{','.join(teachers)}]", f"n_prompts={opts.prompts}", "report=false", "diversity.embedding_spread=false"]
    root = Path(opts.out_root)
    results = {}
    for mode in opts.modes.split(","):
        out = root / mode
        subprocess.run(["rm", "-rf", str(out)], check=True)
        results[mode] = run_cli(out, [*base, *(f"teacher.{t}.serve={mode}" for t in teachers)])
    if {"inprocess", "process"} <= set(results):
        a, b = answers(root / "inprocess"), answers(root / "process")
        same = {t: [0, 0] for t in teachers}
        for call_id, (teacher, text) in a.items():
            same[teacher][1] += 1
            same[teacher][0] += b.get(call_id, (None, None))[1] == text
        results["equal_answers"] = {t: f"{s}/{n}" for t, (s, n) in same.items()}
    print(
        f"| serve | wall s | load s | generate s | {' | '.join(f'{t} tok/s' for t in teachers)} | peak RSS GB | peak PSS GB | terminal lines |"
    )
    print("|---|---|---|---|" + "---|" * len(teachers) + "---|---|---|")
    for mode, r in results.items():
        if mode == "equal_answers":
            continue
        tps = " | ".join(str(r["teachers"][t]["tok_per_s"]) for t in teachers)
        t = r["timings"]
        print(
            f"| {mode} | {r['wall_s']} | {t.get('load_s')} | {t.get('generate_s')} | {tps} | "
            f"{r['peak_rss_gb']} | {r['peak_pss_gb']} | {r['terminal_lines']} |"
        )
    if "equal_answers" in results:
        print("equal answers (same call id, same text):", results["equal_answers"])
    return results


# sleep ----------------------------------------------------------------------------------------------
def gpu_used_mib() -> list[int]:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True, check=True
    )
    return [int(x) for x in out.stdout.split()]


async def _post(url: str, body: dict | None = None) -> tuple[float, dict]:
    import aiohttp

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=1800)) as r:
            text = await r.text()
            if r.status != 200:
                raise SystemExit(f"POST {url}: HTTP {r.status} {text[:300]}")
    try:
        return time.perf_counter() - started, json.loads(text)
    except ValueError:
        return time.perf_counter() - started, {}


async def _ask(server, name: str, max_tokens: int = 64) -> float:
    body = {"model": name, "messages": [{"role": "user", "content": "Explain tides in two sentences."}], "max_tokens": max_tokens}
    took, _ = await _post(server.url + "/chat/completions", {**body, "temperature": 0.0})
    return took


async def _start(name: str, model: str, gpus: list[int] | None, flags: dict, log_dir: Path, sleep_mode: bool):
    from arbitrage.teachers import models
    from arbitrage.teachers.vllm_server import ServerProcess, free_port, server_command

    port = free_port()
    argv, env = server_command(models.resolve(model), name, port, flags, gpus, sleep_mode=sleep_mode)
    server = ServerProcess(name, argv, env, log_dir / f"{name}.log", f"http://127.0.0.1:{port}/v1")
    server.launch()
    took = await server.wait_healthy(3600)
    return server, took


def sleep(opts) -> dict:
    flags = {"gpu_memory_utilization": opts.gpu_memory_utilization, "max_model_len": 4096}
    log_dir = Path(opts.out_root) / "logs"

    async def go() -> dict:
        r: dict = {}
        a, r["cold_start_s"] = await _start("a", opts.model, None, flags, log_dir, True)
        root = a.url.removesuffix("/v1")
        try:
            r["first_request_s"] = await _ask(a, "a")
            r["warm_request_s"] = await _ask(a, "a")
            r["gpu_mib_awake"] = gpu_used_mib()
            r["sleep_l1_s"], _ = await _post(root + "/sleep?level=1")
            r["gpu_mib_asleep_l1"] = gpu_used_mib()
            r["wake_l1_s"], _ = await _post(root + "/wake_up")
            r["request_after_wake_l1_s"] = await _ask(a, "a")
            if opts.level2:
                r["sleep_l2_s"], _ = await _post(root + "/sleep?level=2")
                r["gpu_mib_asleep_l2"] = gpu_used_mib()
                r["wake_l2_s"], _ = await _post(root + "/wake_up?tags=weights")
                r["reload_weights_s"], _ = await _post(root + "/collective_rpc", {"method": "reload_weights"})
                t, _ = await _post(root + "/wake_up?tags=kv_cache")
                r["wake_l2_s"] += t
                r["request_after_wake_l2_s"] = await _ask(a, "a")
            if opts.second:
                await _post(root + "/sleep?level=1")
                b, r["cold_start_second_s"] = await _start("b", opts.second, None, flags, log_dir, True)
                broot = b.url.removesuffix("/v1")
                try:
                    await _ask(b, "b")
                    switch = []
                    for _ in range(opts.rounds):  # B → A → B: sleep one, wake the other, first request
                        t0 = time.perf_counter()
                        await _post(broot + "/sleep?level=1")
                        await _post(root + "/wake_up")
                        await _ask(a, "a")
                        await _post(root + "/sleep?level=1")
                        await _post(broot + "/wake_up")
                        await _ask(b, "b")
                        switch.append((time.perf_counter() - t0) / 2)
                    r["switch_with_first_request_s"] = round(sum(switch) / len(switch), 2)
                finally:
                    b.kill()
        finally:
            a.kill()
        return r

    results = asyncio.run(go())
    for key, value in results.items():
        print(f"| {key} | {round(value, 3) if isinstance(value, float) else value} |")
    return results


# plan -----------------------------------------------------------------------------------------------
def plan(opts) -> dict:
    from arbitrage.teachers.vllm_server import VLLMServerTeacher

    flags: dict[str, dict] = {}
    for item in opts.flag:
        name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        flags.setdefault(name, {})[key] = json.loads(value) if value[:1] in "[{0123456789tf" else value
    teachers = []
    for spec in opts.teacher:
        name, _, rest = spec.partition("=")
        model, _, gpus = rest.rpartition("@") if "@" in rest else (rest, "", "")
        teachers.append(
            VLLMServerTeacher(
                name,
                model,
                sampling={"max_tokens": opts.max_tokens, "temperature": 0.7, "seed": 0},
                batch_size=opts.concurrency,
                engine_kwargs=flags.get(name),
                gpus=[int(g) for g in gpus.split(",")] if gpus else None,
                log_dir=str(Path(opts.out_root) / "logs"),
            )
        )

    async def go() -> dict:
        await asyncio.gather(*(t.start() for t in teachers))
        try:
            prompts = _prompts(opts.prompts)

            async def drive(t):
                from arbitrage.rows import make_call
                from arbitrage.teachers import teacher_key

                key = teacher_key(t)
                started = time.perf_counter()
                done = await asyncio.gather(*(t.complete([make_call(p, t.name, key)]) for p in prompts))
                wall = time.perf_counter() - started
                tokens = sum(c[0].tokens_out for c in done)
                return t.name, {
                    "load_s": round(t.stats()["load_s"], 1),
                    "tok_per_s": round(tokens / wall, 1),
                    "wall_s": round(wall, 1),
                }

            return dict(await asyncio.gather(*(drive(t) for t in teachers)))
        finally:
            for t in teachers:
                await t.close()

    results = asyncio.run(go())
    print("| teacher | load s | tok/s | wall s |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['load_s']} | {r['tok_per_s']} | {r['wall_s']} |")
    return results


TOPICS = ("tides", "photosynthesis", "compound interest", "the French revolution", "TCP handshakes", "sourdough", "black holes")


def _prompts(n: int):
    from arbitrage.rows import Prompt, stable_hash

    out = []
    for i in range(n):
        text = f"Explain {TOPICS[i % len(TOPICS)]} to a reader in their {20 + i % 50}s, in about {60 + i % 120} words."
        pid = stable_hash(text)
        out.append(Prompt(pid, "bench", "en", "bench", "explain", TOPICS[i % len(TOPICS)], ({"role": "user", "content": text},)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cpu")
    p.add_argument("--teachers", default="smollm2,gemma3")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--modes", default="inprocess,process")
    p = sub.add_parser("sleep")
    p.add_argument("--model", required=True)
    p.add_argument("--second")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--level2", action="store_true")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.4)  # two models on one GPU
    p = sub.add_parser("plan")
    p.add_argument("--teacher", action="append", required=True, help="NAME=MODEL@GPU,GPU,… (no @: no GPUs, e.g. on CPU)")
    p.add_argument("--flag", action="append", default=[], help="NAME:engine_kwarg=value, e.g. llama70b:quantization=fp8")
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=256)
    for p in sub.choices.values():
        p.add_argument("--out-root", default="/tmp/serve-bench")
        p.add_argument("--out", type=Path, help="write the results as JSON here")
    opts = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {"cpu": cpu, "sleep": sleep, "plan": plan}[opts.what](opts)
    if opts.out:
        opts.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
