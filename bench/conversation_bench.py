"""Conversations on the fake server: whole-process wall time against the ideal, where the rest goes, memory.

    python bench/conversation_bench.py --n 2000 --turns 3 --concurrency 100 --latency-ms 200 --repeats 3 --rss-n 500,2000,8000

A prompts file of N MT-Bench-like lines (`{"turns": [3 user turns]}`: no simulator calls) goes to one
`openai_compat` teacher on a fake server of our own (bench/fake_server.py's FakeServer, in its own
process, which here also records when each request came and went), `conversation.turns=3`,
`reward=verifiable`, `filters=none`. Contenders, each a fresh process against a fresh server:

  raw aiohttp     N × turns independent requests from bench/overhead_bench.py's 40-line client: the floor.
  single turn     the CLI on N × turns one-turn prompts: the same requests, no turn barrier.
  conversations   the CLI on the N conversations: what this benchmark is about.

Ideal = N × turns × latency / concurrency. Reported, for each contender's median of --repeats runs
(interleaved): whole-process wall (start to exit, as a user runs it, report included) and ideal / wall; from the server's timeline, the start (process start → first request),
each (wave, turn) phase's span, the gaps between phases (nothing in flight: the barrier) and the
finish (last answer → exit: scoring, writing, the card). Every conversation row is checked: all N in
sft, each with its three given user turns and the server's answer to each. Then peak RSS of the
conversations run at each --rss-n, report off (conversation.wave_size=1000 bounds what is held: it
must be flat in N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import fake_server  # noqa: E402
from engine_bench import run_measured  # noqa: E402
from overhead_bench import RAW_CLIENT  # noqa: E402

MODEL = "fake"
QUESTIONS = (  # three user turns per conversation, as MT-Bench's question.jsonl gives them
    "Conversation {i}: explain how ocean tides work, in plain words.",
    "Conversation {i}: why are there usually two high tides a day, not one?",
    "Conversation {i}: now rewrite your explanation for a ten-year-old.",
)
CONVERSATION = re.compile(r"^Conversation (\d+):")


class TimedServer(fake_server.FakeServer):
    """The fake server, also keeping (arrived, answered, conversation, turn) per chat request."""

    def __init__(self, **options):
        super().__init__(**options)
        self.spans: list[tuple[float, float, int, int]] = []

    async def chat(self, request):
        arrived = time.time()
        body = json.loads(await request.read())  # aiohttp keeps the body: the handler reads it again
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        found = CONVERSATION.match(str(users[-1].get("content", ""))) if users else None
        response = await super().chat(request)
        self.spans.append((arrived, time.time(), int(found.group(1)) if found else -1, len(users)))
        return response

    async def timeline(self, request):
        from aiohttp import web

        return web.json_response(self.spans)


def serve(latency_ms: float, answer_words: int) -> None:
    server = TimedServer(latency_ms=latency_ms, answer_words=answer_words)
    app_of = server.app

    def app():
        application = app_of()
        application.router.add_get("/timeline", server.timeline)
        return application

    server.app = app

    async def main() -> None:
        runner, port = await fake_server._start(server, "127.0.0.1", 0)
        print(f"listening on http://127.0.0.1:{port}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


class Server:
    def __init__(self, latency_ms: float, answer_words: int):
        self.flags = ["--serve", "--latency-ms", str(latency_ms), "--answer-words", str(answer_words)]

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen([sys.executable, __file__, *self.flags], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"the timed fake server did not start: {line!r}")
        self.url = line.removeprefix("listening on ")
        return self

    def timeline(self) -> list[tuple[float, float, int, int]]:
        import urllib.request

        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/timeline", timeout=30) as r:
            return [tuple(s) for s in json.loads(r.read())]

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def conversations_file(work: Path, n: int, turns: int) -> Path:
    path = work / f"conversations-{n}.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"c{i}", "turns": [q.format(i=i) for q in QUESTIONS[:turns]]}) + "\n")
    return path


def flat_file(work: Path, n: int, turns: int) -> Path:
    """The same user messages, each a one-turn prompt of its own."""
    path = work / f"flat-{n}x{turns}.jsonl"
    with path.open("w") as f:
        for i in range(n):
            for q in QUESTIONS[:turns]:
                f.write(json.dumps({"prompt": q.format(i=i)}) + "\n")
    return path


def cli(url: str, prompts: Path, n: int, out: Path, concurrency: int, *extra: str) -> list[str]:
    return [
        "teacher=[openai_compat]", f"teacher.openai_compat.base_url={url}", f"teacher.openai_compat.model={MODEL}",
        f"teacher.openai_compat.max_concurrency={concurrency}", "source=jsonl", f"source.path={prompts}",
        f"n_prompts={n}", "reward=verifiable", "filters=none", "diversity.embedding_spread=false", "progress=false",
        f"out={out}", *extra,
    ]  # fmt: skip


def check_conversations(out: Path, n: int, turns: int, answer_words: int) -> dict:
    """Every conversation once in sft, its given user turns in order, the server's answer to each."""
    import pyarrow.parquet as pq

    files = sorted((out / "data").glob("sft-*.parquet"))
    rows = pq.read_table(files[0], columns=["messages"]).column("messages").to_pylist() if files else []
    seen, wrong = set(), 0
    for messages in rows:
        found = CONVERSATION.match(messages[0]["content"])
        i = int(found.group(1)) if found else -1
        want_users = [q.format(i=i) for q in QUESTIONS[:turns]]
        roles_ok = [m["role"] for m in messages] == ["user", "assistant"] * turns
        users_ok = [m["content"] for m in messages[0::2]] == want_users
        answers_ok = all(
            a["content"] == fake_server.answer_text(MODEL, u["content"], answer_words)
            for u, a in zip(messages[0::2], messages[1::2], strict=True)
        )
        wrong += not (roles_ok and users_ok and answers_ok) or i in seen
        seen.add(i)
    return {"rows": len(rows), "lost": sum(1 for i in range(n) if i not in seen), "wrong": wrong}


def breakdown(started: float, wall: float, spans: list, concurrency: int, wave_size: int) -> dict:
    """Where the whole-process wall time goes, from the server's timeline."""
    first, last = min(s[0] for s in spans), max(s[1] for s in spans)
    phases: dict[tuple[int, int], list[float]] = {}
    for arrived, answered, conversation, turn in spans:
        key = (conversation // wave_size if conversation >= 0 else 0, turn)
        lo, hi = phases.setdefault(key, [arrived, answered])
        phases[key] = [min(lo, arrived), max(hi, answered)]
    ordered = sorted(phases.items(), key=lambda kv: kv[1][0])
    gaps = [max(0.0, b[1][0] - a[1][1]) for a, b in zip(ordered, ordered[1:], strict=False)]
    busy = sum(answered - arrived for arrived, answered, *_ in spans)
    return {
        "start_s": round(first - started, 2),
        "serving_s": round(last - first, 2),
        "finish_s": round(started + wall - last, 2),
        "slots_used": round(busy / (concurrency * (last - first)), 3),  # mean in flight / concurrency
        "request_ms": round(1000 * busy / len(spans), 1),  # mean time in the server's handler
        "phases": [
            {
                "wave": w,
                "turn": t,
                "span_s": round(hi - lo, 2),
                "requests": sum(1 for s in spans if (s[2] // wave_size, s[3]) == (w, t)),
            }
            for (w, t), (lo, hi) in ordered
        ],
        "gaps_s": [round(g, 3) for g in gaps],
        "gaps_total_s": round(sum(gaps), 2),
    }


def contender(name: str, work: Path, opts, n_requests: int, repeat: int) -> dict:
    out = work / f"{name.replace(' ', '-')}-{repeat}"
    with Server(opts.latency_ms, opts.answer_words) as server:
        started = time.time()
        if name == "raw aiohttp":
            command = [sys.executable, "-c", RAW_CLIENT, server.url, str(flat_file(work, opts.n, opts.turns)),
                       str(out) + ".jsonl", str(opts.concurrency)]  # fmt: skip
            subprocess.run(command, check=True)
            measured = {"wall_s": time.time() - started, "peak_rss_mib": None, "rc": 0}
        elif name == "single turn":
            args = cli(server.url, flat_file(work, opts.n, opts.turns), n_requests, out, opts.concurrency)
            measured = run_measured(args, work)
        else:
            prompts = conversations_file(work, opts.n, opts.turns)
            measured = run_measured(
                cli(server.url, prompts, opts.n, out, opts.concurrency, f"conversation.turns={opts.turns}"), work
            )
        spans = server.timeline()
    if measured["rc"] != 0:
        raise SystemExit(f"{name}: the run exited {measured['rc']} (see {out}/logs)")
    result = {
        "contender": name,
        "wall_s": round(measured["wall_s"], 2),
        "peak_rss_mib": None if measured["peak_rss_mib"] is None else round(measured["peak_rss_mib"], 1),
        "requests": len(spans),
        **breakdown(started, measured["wall_s"], spans, opts.concurrency, opts.wave_size),
    }
    if name != "raw aiohttp":
        summary = json.loads((out / "summary.json").read_text())
        result["timings_s"] = summary["timings_s"]
        result["sft_rows"] = summary["rows"]["sft"]
    if name == "conversations":
        result.update(check_conversations(out, opts.n, opts.turns, opts.answer_words))
        result["wins_by_turn"], result["turns_kept"] = summary["wins_by_turn"], summary["turns_kept"]
    return result


def memory(work: Path, opts, n: int) -> dict:
    """Peak RSS of the conversations run at n conversations, 0 ms latency (memory, not time). The
    report is off: it reads the finished folder whole after the run (its own cost, which grows with
    the rows up to its 50,000-prompt cap), and the question here is what the run holds."""
    out = work / f"rss-{n}"
    with Server(0, opts.answer_words) as server:
        prompts = conversations_file(work, n, opts.turns)
        args = cli(server.url, prompts, n, out, opts.concurrency, f"conversation.turns={opts.turns}", "report=false")
        measured = run_measured(args, work)
    checked = check_conversations(out, n, opts.turns, opts.answer_words)
    return {
        "conversations": n,
        "peak_rss_mib": round(measured["peak_rss_mib"], 1),
        "wall_s": round(measured["wall_s"], 2),
        **checked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="conversations")
    parser.add_argument("--turns", type=int, default=3, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--answer-words", type=int, default=60, help="filler words per answer")
    parser.add_argument("--wave-size", type=int, default=1000, help="conversation.wave_size the run uses (its default)")
    parser.add_argument("--rss-n", default="500,2000,8000", help="conversation counts for the memory figure ('' skips it)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender; the median is reported")
    parser.add_argument("--contenders", default="raw aiohttp,single turn,conversations")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "conversations.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the timed server's own process
    opts = parser.parse_args()
    if opts.serve:
        return serve(opts.latency_ms, opts.answer_words)
    work = Path(tempfile.mkdtemp(prefix="arbitrage-conversations-"))
    n_requests = opts.n * opts.turns
    ideal = n_requests * opts.latency_ms / 1000 / opts.concurrency
    runs: dict[str, list[dict]] = {name: [] for name in opts.contenders.split(",") if name}  # "": memory only
    for repeat in range(opts.repeats):  # interleaved: a slow spell on the shared cores hits every contender
        for name, done in runs.items():
            done.append(contender(name, work, opts, n_requests, repeat))
            print(f"{name}: wall {done[-1]['wall_s']} s, ideal / wall {ideal / done[-1]['wall_s']:.2f}", flush=True)
    # Each contender's median run by wall time, with every repeat's wall beside it.
    results = []
    for done in runs.values():
        median = sorted(done, key=lambda r: r["wall_s"])[len(done) // 2]
        results.append({**median, "walls_s": [r["wall_s"] for r in done]})
    rss = [memory(work, opts, int(n)) for n in opts.rss_n.split(",") if n]
    report = {
        "n": opts.n, "turns": opts.turns, "repeats": opts.repeats, "concurrency": opts.concurrency, "latency_ms": opts.latency_ms,
        "answer_words": opts.answer_words, "ideal_s": ideal, "contenders": results, "memory": rss,
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2))
    print(f"\nideal {ideal:.1f} s ({n_requests} requests × {opts.latency_ms:g} ms / {opts.concurrency})\n")
    print(f"medians of {opts.repeats} runs\n")
    print(
        "| contender | wall s | ideal / wall | start s | serving s | gaps between phases s | finish s | slots used | peak RSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['contender']} | {r['wall_s']:.2f} | **{ideal / r['wall_s']:.2f}** | {r['start_s']} | {r['serving_s']} | "
            f"{r['gaps_total_s']} | {r['finish_s']} | {r['slots_used']} | {r['peak_rss_mib'] or '—'} |"
        )
    for r in results:
        if r["contender"] == "conversations":
            print(
                "\nconversation phases: " + ", ".join(f"wave {p['wave']} turn {p['turn']} {p['span_s']} s" for p in r["phases"])
            )
            print(f"gaps between them (nothing in flight): {r['gaps_s']} s")
            print(f"rows {r['rows']}, lost {r['lost']}, wrong {r['wrong']}; run phases {r['timings_s']}")
    if rss:
        print("\n| conversations | peak RSS MiB | wall s | rows | lost | wrong |\n|---:|---:|---:|---:|---:|---:|")
        for m in rss:
            print(f"| {m['conversations']:,} | {m['peak_rss_mib']} | {m['wall_s']} | {m['rows']} | {m['lost']} | {m['wrong']} |")


if __name__ == "__main__":
    main()
