"""Which HTTP client is the fast path? Client overhead of aiohttp, httpx, openai and litellm against
bench/fake_server.py.

    python bench/client_overhead.py --n 2000 --concurrency 100 --latency-ms 200,0 --repeats 2

For each latency, client and repeat: a fresh fake server subprocess (no faults), then a fresh client
subprocess (imports and GC state don't bleed between runs). The client runs a fixed pool of
``--concurrency`` asyncio workers pulling request indices from a shared counter (equivalent to
Semaphore(concurrency) with lazily created tasks; never N tasks at once). Each request is one chat
completion with a distinct prompt; answers are checked against the server's digest after timing.
One untimed warm-up request is made first (lazy imports, first connection). Timed: wall clock and
getrusage(RUSAGE_SELF) CPU (user+sys, all threads) of the client process over the N requests; the
server's CPU over the same run comes from /proc/PID/stat, and "TCP conns" is how many connections the
client opened (server /stats connections_opened, per run, warm-up included).

efficiency = ideal / wall with ideal = N * latency / concurrency (only for latency > 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # fake_server
MODEL = "fake"
CLIENTS = ("aiohttp", "httpx", "openai", "litellm")  # also available: openai-aiohttp (needs httpx-aiohttp)


# ---------------------------------------------------------------------------------------------------
# worker side (one client, one run, in its own process)
# ---------------------------------------------------------------------------------------------------
def _messages(i: int) -> list[dict]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"Question number {i}: why?"}]


async def _make_call(client: str, base_url: str, concurrency: int):
    """Returns (call(i) -> text, close())."""
    url = base_url.rstrip("/") + "/chat/completions"
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency), timeout=aiohttp.ClientTimeout(total=60)
        )

        async def call(i: int) -> str:
            async with session.post(url, json={"model": MODEL, "messages": _messages(i)}) as r:
                r.raise_for_status()
                data = await r.json()
            return data["choices"][0]["message"]["content"]

        return call, session.close
    if client == "httpx":
        import httpx

        hc = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency), timeout=60
        )

        async def call(i: int) -> str:
            r = await hc.post(url, json={"model": MODEL, "messages": _messages(i)})
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"]

        return call, hc.aclose
    if client == "openai":
        import openai

        oc = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60)

        async def call(i: int) -> str:
            resp = await oc.chat.completions.create(model=MODEL, messages=_messages(i))
            return resp.choices[0].message.content

        return call, oc.close
    if client == "openai-aiohttp":  # the SDK on aiohttp: needs `pip install httpx-aiohttp` (openai[aiohttp])
        import openai

        oc = openai.AsyncOpenAI(
            base_url=base_url, api_key="x", max_retries=0, timeout=60, http_client=openai.DefaultAioHttpClient()
        )

        async def call(i: int) -> str:
            resp = await oc.chat.completions.create(model=MODEL, messages=_messages(i))
            return resp.choices[0].message.content

        return call, oc.close
    if client == "litellm":
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True

        async def call(i: int) -> str:
            resp = await litellm.acompletion(
                model="openai/" + MODEL, api_base=base_url, api_key="x", messages=_messages(i), num_retries=0, timeout=60
            )
            return resp.choices[0].message.content

        async def close() -> None:
            pass

        return call, close
    raise SystemExit(f"unknown client {client!r}")


async def _worker_main(client: str, base_url: str, n: int, concurrency: int) -> dict:
    import resource

    from fake_server import answer_text

    t0 = time.perf_counter()
    call, close = await _make_call(client, base_url, concurrency)
    import_s = time.perf_counter() - t0
    warm = await call(-1)
    assert warm == answer_text(MODEL, "Question number -1: why?"), warm

    texts: list = [None] * n
    errors: list[str] = []
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            try:
                texts[i] = await call(i)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}"[:200])

    import asyncio

    ru0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    w1, ru1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    await close()

    wrong = sum(1 for i, t in enumerate(texts) if t is not None and t != answer_text(MODEL, f"Question number {i}: why?"))
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "client": client,
        "n": n,
        "concurrency": concurrency,
        "wall_s": w1 - w0,
        "cpu_s": cpu,
        "import_s": import_s,
        "ok": sum(t is not None for t in texts),
        "errors": len(errors),
        "first_errors": errors[:3],
        "wrong": wrong,
        "maxrss_mb": ru1.ru_maxrss / 1024,
    }


def worker_entry(a: argparse.Namespace) -> None:
    import asyncio

    if a.client == "litellm":
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network: before `import litellm`
    res = asyncio.run(_worker_main(a.client, a.url, a.n, a.concurrency))
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------------------
def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_one(client: str, n: int, concurrency: int, latency_ms: float) -> dict:
    from fake_server import fetch_stats, spawn

    url, server = spawn("--latency-ms", str(latency_ms))
    try:
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
        cmd = [sys.executable, __file__, "--worker", client, "--url", url, "--n", str(n), "--concurrency", str(concurrency)]
        s0 = _proc_cpu_s(server.pid)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        s1 = _proc_cpu_s(server.pid)
        stats = fetch_stats(url) if p.returncode == 0 else {}
    finally:
        server.terminate()
        server.wait(10)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{client} worker failed (rc={p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    res = json.loads(line[len("RESULT ") :])
    res["server_cpu_s"] = s1 - s0  # includes the warm-up request and client start-up idle time (~0)
    res["latency_ms"] = latency_ms
    res["server_connections"] = stats.get("connections_opened", -1)  # TCP connections the client opened
    return res


def table(results: list[dict]) -> str:
    rows = [
        "| latency | client | N | conc | wall s (each run) | req/s | efficiency | client CPU ms/req | server CPU ms/req | TCP conns | import s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict = {}
    for r in results:
        groups.setdefault((r["latency_ms"], r["client"], r["n"]), []).append(r)
    for (lat, client, n), rs in groups.items():
        walls = [r["wall_s"] for r in rs]
        wall = statistics.mean(walls)
        conc = rs[0]["concurrency"]
        eff = f"{n * lat / 1000 / conc / wall:.1%}" if lat > 0 else "–"
        cpu = statistics.mean(r["cpu_s"] for r in rs) / n * 1000
        scpu = statistics.mean(r["server_cpu_s"] for r in rs) / n * 1000
        imp = statistics.mean(r["import_s"] for r in rs)
        conns = "/".join(str(r["server_connections"]) for r in rs)
        errs = sum(r["errors"] + r["wrong"] for r in rs)
        rows.append(
            f"| {lat:g} ms | {client} | {n} | {conc} | {wall:.2f} ({', '.join(f'{w:.2f}' for w in walls)}) | "
            f"{n / wall:,.0f} | {eff} | {cpu:.2f} | {scpu:.2f} | {conns} | {imp:.2f} | {errs} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--latency-ms", default="200,0", help="one value or a comma-separated list")
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-override", default="", help="per-client N, e.g. litellm=500 (for slow clients)")
    ap.add_argument("--json", default="", help="also write the raw results here")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.client = a.worker
        worker_entry(a)
        return

    overrides = {k: int(v) for k, v in (kv.split("=") for kv in a.n_override.split(",") if kv)}
    clients = [c for c in a.clients.split(",") if c]
    latencies = [float(x) for x in a.latency_ms.split(",") if x]
    command = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__), *sys.argv[1:]])
    t_start = time.perf_counter()
    results = []
    for lat in latencies:
        for client in clients:
            for rep in range(a.repeats):
                r = run_one(client, overrides.get(client, a.n), a.concurrency, lat)
                results.append(r)
                print(
                    f"# {lat:g} ms {client} rep {rep}: wall {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s "
                    f"server cpu {r['server_cpu_s']:.2f}s ok {r['ok']} errors {r['errors']} wrong {r['wrong']} "
                    f"{r['first_errors'][:1]}",
                    file=sys.stderr,
                    flush=True,
                )

    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Command: `{command}`  ")
    print(
        f"Date: {date}; {os.cpu_count()} cores, Python {platform.python_version()}; total {time.perf_counter() - t_start:.0f} s  "
    )
    versions = []
    for mod in ("aiohttp", "httpx", "openai", "litellm"):
        try:
            from importlib.metadata import version

            versions.append(f"{mod} {version(mod)}")
        except Exception:  # noqa: BLE001
            pass
    print("Versions: " + ", ".join(versions) + "\n")
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps({"command": command, "date": date, "results": results}, indent=1))


if __name__ == "__main__":
    main()
