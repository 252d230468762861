"""What a server that rejects every call costs a run (issue: fail fast and clearly).

    python bench/failfast_bench.py --n 2000 --concurrency 16

Each case runs the CLI as a fresh process against our fake OpenAI server (tests/fake_openai.py)
on the same N prompts. Before the circuit breaker and the preflight, every case sent every prompt
(a closed port: 4 attempts per prompt) and exited 0 with `HTTP 401 ×N` in its summary. Reported:
exit code, chat requests the server saw, wall time, and the one error line.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_openai import FakeOpenAI, Script  # noqa: E402

BAD_KEY = "Incorrect API key provided"
CASES = [  # (label, chat status, /models status, teacher, the server's message)
    ("bad key, /models open", 401, 200, "openai_compat", BAD_KEY),
    ("bad key, /models checks it", 401, 401, "openai_compat", BAD_KEY),
    ("unknown model (404)", 404, 200, "openai_compat", "The model `good` does not exist"),
    ("bad parameter (400)", 400, 200, "openai_compat", "Unsupported parameter: 'seed'"),
    ("bad key through litellm", 401, 200, "litellm", BAD_KEY),
]


def command(teacher: str, url: str, prompts: Path, n: int, concurrency: int, out: Path) -> list[str]:
    if teacher == "litellm":
        who = ["teacher=[api]", "teacher.api.model=openai/good", f"teacher.api.api_base={url}", "teacher.api.fast_path=false"]
        who += ["teacher.api.api_key_env=FAKE_KEY", f"teacher.api.max_concurrency={concurrency}"]
    else:
        who = ["teacher=[openai_compat]", f"teacher.openai_compat.base_url={url}", "teacher.openai_compat.model=good"]
        who += ["teacher.openai_compat.api_key_env=FAKE_KEY", f"teacher.openai_compat.max_concurrency={concurrency}"]
    rest = ["source=jsonl", f"source.path={prompts}", f"n_prompts={n}", "filters=none", "progress=false", "report=false"]
    return [sys.executable, "-m", "arbitrage.cli", *who, *rest, "diversity.embedding_spread=false", f"out={out}"]


def run(cmd: list[str]) -> tuple[int, float, str]:
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "FAKE_KEY": "sk-wrong"})
    lines = result.stderr.strip().splitlines()
    return result.returncode, time.perf_counter() - started, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    a = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="failfast-"))
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Explain topic {i}."}) + "\n" for i in range(a.n)))
    print(f"| case ({a.n} prompts, concurrency {a.concurrency}) | exit | chat requests | wall s | error line |")
    print("|---|---:|---:|---:|---|")
    for i, (label, chat, models, teacher, message) in enumerate(CASES):
        script = Script(fail_first=10**9, fail_status=chat, models_status=models, error_message=message)
        with FakeOpenAI(script) as server:
            code, secs, line = run(command(teacher, server.url, prompts, a.n, a.concurrency, tmp / f"case{i}"))
            sent = len(server.requests)
        print(f"| {label} | {code} | {sent} | {secs:.1f} | `{line[:150]}` |")
    code, secs, line = run(command("openai_compat", "http://127.0.0.1:9/v1", prompts, a.n, a.concurrency, tmp / "closed"))
    print(f"| closed port | {code} | 0 | {secs:.1f} | `{line[:150]}` |")


if __name__ == "__main__":
    main()
