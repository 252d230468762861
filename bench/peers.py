"""Run the same generation workload through a peer tool (distilabel or bespokelabs-curator).

    /work/peers-venv/bin/python bench/peers.py --tool distilabel|curator \
        --base-url http://127.0.0.1:PORT/v1 --n 2000 --concurrency 100 --out RESULT.json

Runs with the *peers* venv (never the project's .venv): the peers are not project dependencies.
Workload: N chat completions, one user message each (``prompts(n)``), model ``fake``, against an
OpenAI-compatible server (``bench/fake_server.py``), which answers ``f"answer {digest}"`` with
``digest = sha256(model + "\\n" + last message content)[:16]``. ``rows_correct`` counts output rows whose
text equals that expected answer for its own prompt.

Concurrency mapping:
  distilabel: one TextGeneration step (1 replica) with ``input_batch_size=concurrency``; the OpenAILLM
              sends a batch with ``asyncio.gather`` and waits for all of it before the next batch.
  curator:    ``backend_params.max_concurrent_requests=concurrency`` (a semaphore), request/token per
              minute limits set huge so only the semaphore limits.

Timings (seconds, time.perf_counter / time.time):
  total_s: from building the tool's objects (after imports and prompt generation) to rows in hand.
  run_s:   the tool's run call: ``pipeline.run()`` (spawns step processes) / ``llm(dataset)``.
  wall_s:  generation only: distilabel, first TextGeneration batch start to last batch end (recorded
           inside the step process); curator, ``requests_to_responses`` (first request sent to all
           responses written; excludes writing the request files and building the output dataset).
Peak RSS (MiB): ru_maxrss of this process, of the largest waited-for child, their sum; and the peak of the
summed RSS of this process and all its descendants, sampled every 50 ms from /proc (distilabel runs each
step in its own worker process, so this is the fairer number).
"""

import argparse
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time

# --- offline / no-cache / no-telemetry settings: must precede the tools' imports -------------------
_WORKDIR = tempfile.mkdtemp(prefix="peers-bench-")
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    # distilabel
    "DISTILABEL_CACHE_DIR": os.path.join(_WORKDIR, "distilabel"),
    # curator
    "CURATOR_DISABLE_CACHE": "1",
    "CURATOR_CACHE_DIR": os.path.join(_WORKDIR, "curator"),
    "TELEMETRY_ENABLED": "false",
    "CURATOR_DISABLE_RICH_DISPLAY": "1",
    # litellm (imported by curator): use the bundled model cost map instead of fetching it
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)
os.environ.pop("CURATOR_VIEWER", None)

MODEL = "fake"


def prompts(n: int) -> list[str]:
    """The N distinct user messages of the workload (replicate exactly elsewhere)."""
    return [f"prompt {i}: say something" for i in range(n)]


def expected_answer(prompt: str, model: str = MODEL) -> str:
    return "answer " + hashlib.sha256((model + "\n" + prompt).encode()).hexdigest()[:16]


def _rss_mib() -> dict:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "peak_rss_self_mib": round(self_kb / 1024, 1),
        "peak_rss_children_max_mib": round(child_kb / 1024, 1),
        "peak_rss_mib": round((self_kb + child_kb) / 1024, 1),
    }


def _tree_rss_kb(pid: int) -> int:
    """RSS (KiB) of pid and all its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return total


class TreeRssSampler:
    """Samples the process tree's summed RSS every ``interval`` s on a daemon thread; ``peak_kb``."""

    def __init__(self, interval: float = 0.05):
        import threading

        self.interval, self.peak_kb = interval, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        pid = os.getpid()
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _tree_rss_kb(pid))
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak_kb


# ------------------------------------------------------------------------------------------------
def run_distilabel(base_url: str, ps: list[str], concurrency: int) -> dict:
    t_import = time.perf_counter()
    import distilabel
    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts, StepInput
    from distilabel.steps.tasks import TextGeneration

    import_s = time.perf_counter() - t_import
    stamp_file = os.path.join(_WORKDIR, "distilabel_batches.txt")

    class TimedTextGeneration(TextGeneration):
        """TextGeneration that appends (start, end) wall-clock times of each batch to a file.

        The step runs in a forked worker process, hence a file rather than a variable."""

        def process(self, inputs: StepInput):  # type: ignore[override]  # (distilabel checks the hint)
            # distilabel takes only next() of this generator: record before yielding
            start = time.time()
            outs = list(super().process(inputs))
            with open(stamp_file, "a") as f:
                f.write(f"{start} {time.time()} {len(inputs)}\n")
            yield from outs

    # distilabel pickles steps into its worker pool: make the class findable as __main__.TimedTextGeneration
    # (the workers are forked after this point, so they have it too).
    TimedTextGeneration.__qualname__ = "TimedTextGeneration"
    TimedTextGeneration.__module__ = __name__
    globals()["TimedTextGeneration"] = TimedTextGeneration

    t0 = time.perf_counter()
    with Pipeline(name="peers-bench", description="peers benchmark") as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": p} for p in ps], batch_size=concurrency)
        gen = TimedTextGeneration(
            llm=OpenAILLM(model=MODEL, base_url=base_url, api_key="sk-fake", max_retries=6, timeout=120),
            input_batch_size=concurrency,
        )
        load >> gen
    t_run = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    t1 = time.perf_counter()

    ds = distiset["default"]["train"]
    instr, gens = ds["instruction"], ds["generation"]
    rows_correct = sum(1 for p, g in zip(instr, gens, strict=True) if g == expected_answer(p))
    with open(stamp_file) as f:
        stamps = [tuple(map(float, line.split())) for line in f if line.strip()]
    gen_start = min(s for s, _, _ in stamps)
    gen_end = max(e for _, e, _ in stamps)
    return {
        "version": distilabel.__version__,
        "import_s": round(import_s, 3),
        "total_s": round(t1 - t0, 3),
        "run_s": round(t1 - t_run, 3),
        "wall_s": round(gen_end - gen_start, 3),
        "batches": len(stamps),
        "batch_s_mean": round(sum(e - s for s, e, _ in stamps) / len(stamps), 3),
        "rows_out": len(ds),
        "rows_correct": rows_correct,
        "distinct_prompts_out": len(set(instr)),
    }


# ------------------------------------------------------------------------------------------------
def run_curator(base_url: str, ps: list[str], concurrency: int) -> dict:
    # curator's OpenAI backend calls tiktoken.get_encoding("cl100k_base"), which downloads the BPE file
    # unless it is cached: point tiktoken at the copy that litellm (a curator dependency) bundles.
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    bundled = os.path.join(list(spec.submodule_search_locations)[0], "litellm_core_utils", "tokenizers")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", bundled)

    t_import = time.perf_counter()
    from bespokelabs import curator

    import_s = time.perf_counter() - t_import

    class Gen(curator.LLM):
        def prompt(self, input):  # noqa: A002
            return input["prompt"]

        def parse(self, input, response):  # noqa: A002
            return {"prompt": input["prompt"], "response": response}

    t0 = time.perf_counter()
    llm = Gen(
        model_name=MODEL,
        backend="openai",
        backend_params={
            "base_url": base_url,
            "api_key": "sk-fake",
            "max_concurrent_requests": concurrency,
            # effectively unlimited: only the semaphore limits
            "max_requests_per_minute": 1_000_000_000,
            "max_tokens_per_minute": 1_000_000_000_000,
            "max_retries": 6,
            "request_timeout": 120,
        },
    )
    proc = llm._request_processor
    inner = {}
    orig = proc.requests_to_responses

    def timed_requests_to_responses(*a, **kw):
        s = time.perf_counter()
        try:
            return orig(*a, **kw)
        finally:
            inner["wall_s"] = time.perf_counter() - s

    proc.requests_to_responses = timed_requests_to_responses
    t_run = time.perf_counter()
    response = llm([{"prompt": p} for p in ps])
    t1 = time.perf_counter()

    ds = response.dataset if hasattr(response, "dataset") else response
    got_p, got_r = ds["prompt"], ds["response"]
    rows_correct = sum(1 for p, r in zip(got_p, got_r, strict=True) if r == expected_answer(p))
    return {
        "version": curator.__version__,
        "import_s": round(import_s, 3),
        "total_s": round(t1 - t0, 3),
        "run_s": round(t1 - t_run, 3),
        "wall_s": round(inner.get("wall_s", float("nan")), 3),
        "rows_out": len(ds),
        "rows_correct": rows_correct,
        "distinct_prompts_out": len(set(got_p)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", choices=("distilabel", "curator"), required=True)
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:PORT/v1")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--out", default=None, help="JSON result file (also printed)")
    ap.add_argument("--keep-workdir", action="store_true")
    a = ap.parse_args(argv)

    ps = prompts(a.n)
    sampler = TreeRssSampler()
    try:
        if a.tool == "distilabel":
            res = run_distilabel(a.base_url, ps, a.concurrency)
        else:
            res = run_curator(a.base_url, ps, a.concurrency)
    finally:
        if not a.keep_workdir:
            shutil.rmtree(_WORKDIR, ignore_errors=True)
    out = {"tool": a.tool, "n": a.n, "concurrency": a.concurrency, "base_url": a.base_url, **res}
    out["requests_per_s"] = round(a.n / out["wall_s"], 1) if out["wall_s"] else None
    out.update(_rss_mib())
    out["peak_tree_rss_sampled_mib"] = round(sampler.stop() / 1024, 1)
    out["python"] = sys.version.split()[0]
    text = json.dumps(out, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
