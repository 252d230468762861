"""A fast OpenAI-compatible fake server with seeded fault injection, for load and robustness benchmarks.

    python bench/fake_server.py --port 0 --latency-ms 200 --error-rate 0.05 --hang-rate 0.01

The first stdout line is exactly ``listening on http://HOST:PORT/v1`` (flushed); nothing is logged per
request. Importable: ``start_in_thread(**options) -> (base_url, stop)`` runs it on a daemon thread,
``spawn(*cli_flags) -> (base_url, Popen)`` runs it as a subprocess, ``fetch_stats(base_url)`` reads /stats.

Answers are deterministic: ``f"answer {digest}"`` with ``digest = sha256(model + "\\n" + last message
content)[:16]``, optionally followed by ``--answer-words`` filler words. Faults are drawn from
``random.Random(seed)`` in order of arrival, never from the body, so a retried request can succeed, and a
fault never yields a *wrong* answer: a 200 whose body parses always carries the right digest.

Order of decisions for each chat request: rpm/tpm exceeded -> 429 (limits are OpenAI-style token buckets:
capacity N, refilled N per 60 s; a request costs 1 request and prompt+completion tokens; Retry-After is the
time until it would fit); burst cycle (N served, then M answered 429, repeating) -> 429;
then one uniform draw u: u < error -> 500; < error+hang -> hang; < error+hang+garbage -> truncated JSON;
else the answer. 429s are immediate; 500, garbage and answers wait ``latency ± jitter`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

from aiohttp import web

# Filler words for --answer-words: plain English drawn per answer (seeded by its digest), so answers
# read as English prose to language ID and repeat no 4-gram, as a real teacher's would not.
FILLER = tuple(
    "the a this that our every some garden river teacher market letter morning village kitchen doctor "
    "student farmer question answer reason idea plan story picture window bridge forest season "
    "explains shows keeps gives brings takes makes finds helps needs leaves builds grows opens "
    "quickly slowly often never always carefully quietly together again later early clearly "
    "because while after before when although since unless until where and but so then".split()
)
HANG_S = 3600.0
JSON_HEADERS = {"Content-Type": "application/json"}


def answer_text(model: str, last_content: str, answer_words: int = 0) -> str:
    """The exact text the server answers for (model, last message content): clients can check it."""
    digest = hashlib.sha256((model + "\n" + last_content).encode()).hexdigest()[:16]
    text = f"answer {digest}"
    if answer_words > 0:
        rng = random.Random(digest)
        text += " " + " ".join(rng.choice(FILLER) for _ in range(answer_words))
    return text


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: "20ms", "1s", "59.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    secs = round(secs, 3)
    return f"{int(minutes)}m{secs:g}s" if minutes >= 1 else f"{secs:g}s"


class _Bucket:
    """OpenAI-style per-minute limit as a token bucket: holds up to ``limit``, refills ``limit`` per 60 s."""

    __slots__ = ("limit", "level", "rate", "last")

    def __init__(self, limit: int):
        self.limit, self.level, self.rate, self.last = limit, float(limit), limit / 60.0, time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(float(self.limit), self.level + (now - self.last) * self.rate)
        self.last = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` fits (0 if it fits now)."""
        return max(0.0, (cost - self.level) / self.rate)

    def reset_in(self) -> float:
        """Seconds until the bucket is full again (OpenAI's x-ratelimit-reset-*)."""
        return (self.limit - self.level) / self.rate


class FakeServer:
    def __init__(
        self,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        error_rate: float = 0.0,
        burst_429_every: int = 0,
        burst_429_len: int = 0,
        retry_after_ms: float = 200.0,
        hang_rate: float = 0.0,
        garbage_rate: float = 0.0,
        rpm: int = 0,
        tpm: int = 0,
        answer_words: int = 0,
        models: str | list[str] = "fake",
        seed: int = 0,
    ):
        self.latency_s, self.jitter_s = latency_ms / 1000.0, jitter_ms / 1000.0
        self.error_rate, self.hang_rate, self.garbage_rate = error_rate, hang_rate, garbage_rate
        self.burst_every, self.burst_len = int(burst_429_every), int(burst_429_len)
        self.retry_after_s = retry_after_ms / 1000.0
        self.rpm, self.tpm = int(rpm or 0), int(tpm or 0)
        self.answer_words = int(answer_words)
        self.models = models.split(",") if isinstance(models, str) else list(models)
        self.seed = seed
        self.rng = random.Random(seed)
        self.req_bucket = _Bucket(self.rpm) if self.rpm else None
        self.tok_bucket = _Bucket(self.tpm) if self.tpm else None
        self.open_connections = lambda: 0
        self.reset_stats()

    # ---- stats -------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.n_chat = 0  # chat requests seen (drives the burst cycle)
        self.total = 0
        self.by_status: Counter = Counter()
        self.ok_counts: dict[str, int] = {}
        self.repeated_ok = 0
        self.ok = 0
        self.hangs = 0
        self.garbage = 0
        self.errors_500 = 0
        self.burst_429 = 0
        self.rate_limited_429 = 0
        self.bad_request = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.connections_opened = 0
        self.started = time.monotonic()

    def stats(self) -> dict:
        return {
            "total": self.total,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "ok": self.ok,
            "unique_ok": len(self.ok_counts),
            "repeated_ok": self.repeated_ok,
            "hangs": self.hangs,
            "garbage": self.garbage,
            "errors_500": self.errors_500,
            "burst_429": self.burst_429,
            "rate_limited_429": self.rate_limited_429,
            "bad_request": self.bad_request,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "connections_opened": self.connections_opened,
            "connections_open": self.open_connections(),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    # ---- handlers ----------------------------------------------------------------------------------
    def _ratelimit_headers(self) -> dict:
        h = {}
        if self.req_bucket:
            b = self.req_bucket
            h["x-ratelimit-limit-requests"] = str(b.limit)
            h["x-ratelimit-remaining-requests"] = str(int(b.level))
            h["x-ratelimit-reset-requests"] = _duration(b.reset_in())
        if self.tok_bucket:
            b = self.tok_bucket
            h["x-ratelimit-limit-tokens"] = str(b.limit)
            h["x-ratelimit-remaining-tokens"] = str(int(b.level))
            h["x-ratelimit-reset-tokens"] = _duration(b.reset_in())
        return h

    def _too_many(self, retry_after_s: float, extra: dict | None, message: str) -> web.Response:
        retry_after_s = round(retry_after_s, 3)
        headers = {"Retry-After": f"{retry_after_s:g}", "retry-after-ms": str(round(retry_after_s * 1000))}
        if extra:
            headers.update(extra)
        self.by_status[429] += 1
        body = json.dumps({"error": {"message": message, "type": "rate_limit_error", "code": "rate_limit_exceeded"}})
        return web.Response(status=429, text=body, content_type="application/json", headers=headers)

    async def _sleep(self) -> None:
        d = self.latency_s
        if self.jitter_s:
            d = max(0.0, d + self.rng.uniform(-self.jitter_s, self.jitter_s))
        if d > 0:
            await asyncio.sleep(d)

    async def chat(self, request: web.Request) -> web.Response:
        self.total += 1
        try:
            body = json.loads(await request.read())
            model = str(body.get("model", ""))
            messages = body["messages"]
            last = _content_text(messages[-1].get("content")) if messages else ""
            p_tokens = sum(len(_content_text(m.get("content")).split()) for m in messages)
        except Exception as e:  # noqa: BLE001
            self.bad_request += 1
            self.by_status[400] += 1
            return web.json_response({"error": {"message": f"bad request: {e}", "type": "invalid_request_error"}}, status=400)

        text = answer_text(model, last, self.answer_words)
        digest = text.split()[1]
        c_tokens = 2 + self.answer_words

        extra = None
        if self.req_bucket or self.tok_bucket:
            now = time.monotonic()
            br, bt = self.req_bucket, self.tok_bucket
            wait = 0.0
            if br:
                br.refill(now)
                wait = br.wait_for(1)
            if bt:
                bt.refill(now)
                wait = max(wait, bt.wait_for(p_tokens + c_tokens))
            if wait > 0:
                self.rate_limited_429 += 1
                return self._too_many(wait, self._ratelimit_headers(), "rate limit exceeded (rpm/tpm)")
            if br:
                br.level -= 1
            if bt:
                bt.level -= p_tokens + c_tokens
            extra = self._ratelimit_headers()

        i = self.n_chat
        self.n_chat += 1
        if self.burst_every > 0 and self.burst_len > 0 and i % (self.burst_every + self.burst_len) >= self.burst_every:
            self.burst_429 += 1
            return self._too_many(self.retry_after_s, extra, "rate limit burst")

        u = self.rng.random()
        if u < self.error_rate:
            await self._sleep()
            self.errors_500 += 1
            self.by_status[500] += 1
            return web.Response(
                status=500,
                text='{"error":{"message":"injected server error","type":"server_error"}}',
                content_type="application/json",
                headers=extra,
            )
        u -= self.error_rate
        if u < self.hang_rate:
            self.hangs += 1
            await asyncio.sleep(HANG_S)  # cancelled when the client disconnects (handler_cancellation)
            return web.Response(status=504, text="{}", content_type="application/json")
        u -= self.hang_rate

        payload = {
            "id": "chatcmpl-" + digest,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": p_tokens, "completion_tokens": c_tokens, "total_tokens": p_tokens + c_tokens},
        }
        raw = json.dumps(payload, separators=(",", ":")).encode()
        await self._sleep()
        self.by_status[200] += 1
        if u < self.garbage_rate:
            self.garbage += 1
            return web.Response(status=200, body=raw[: len(raw) // 2], headers={**JSON_HEADERS, **(extra or {})})
        self.ok += 1
        self.prompt_tokens += p_tokens
        self.completion_tokens += c_tokens
        n = self.ok_counts.get(digest, 0) + 1
        self.ok_counts[digest] = n
        if n == 2:
            self.repeated_ok += 1
        return web.Response(status=200, body=raw, headers={**JSON_HEADERS, **extra} if extra else JSON_HEADERS)

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def post_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"reset": True})

    async def list_models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)  # clients given a base URL without /v1
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/stats/reset", self.post_reset)
        return app


async def _start(server: FakeServer, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    srv = runner.server  # count TCP connections (keep-alive reuse) at no per-request cost
    made = srv.connection_made

    def connection_made(handler, transport) -> None:
        server.connections_opened += 1
        made(handler, transport)

    srv.connection_made = connection_made
    server.open_connections = lambda: len(srv.connections)
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def start_in_thread(host: str = "127.0.0.1", port: int = 0, **options):
    """Run a FakeServer on a daemon thread. Returns (base_url, stop); ``stop.server`` is the FakeServer."""
    server = FakeServer(**options)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        box["runner"], box["port"] = loop.run_until_complete(_start(server, host, port))
        ready.set()
        loop.run_forever()
        loop.run_until_complete(box["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="fake-server", daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    stop.server = server
    return f"http://{host}:{box['port']}/v1", stop


def spawn(*flags: str, python: str = sys.executable, timeout: float = 30.0) -> tuple[str, subprocess.Popen]:
    """Start ``fake_server.py`` as a subprocess with CLI flags; returns (base_url, Popen). Terminate it when done."""
    proc = subprocess.Popen([python, __file__, *flags], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()  # blocks until the first line (or EOF)
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return line.removeprefix("listening on "), proc


def _root(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1")


def fetch_stats(base_url: str) -> dict:
    with urllib.request.urlopen(_root(base_url) + "/stats", timeout=10) as r:
        return json.loads(r.read())


def reset_stats(base_url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(_root(base_url) + "/stats/reset", data=b"", method="POST"), timeout=10).read()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--error-rate", type=float, default=0.0, help="fraction answered HTTP 500")
    ap.add_argument("--burst-429-every", type=int, default=0, help="after every N requests ...")
    ap.add_argument("--burst-429-len", type=int, default=0, help="... the next M requests get 429")
    ap.add_argument("--retry-after-ms", type=float, default=200.0, help="Retry-After of burst 429s")
    ap.add_argument("--hang-rate", type=float, default=0.0, help="fraction that never answer (3600 s)")
    ap.add_argument("--garbage-rate", type=float, default=0.0, help="fraction answered 200 with truncated JSON")
    ap.add_argument("--rpm", type=int, default=0, help="requests per minute (0 = no limit, no headers)")
    ap.add_argument("--tpm", type=int, default=0, help="tokens per minute (0 = no limit, no headers)")
    ap.add_argument("--answer-words", type=int, default=0, help="filler words appended to each answer")
    ap.add_argument("--models", default="fake", help="comma-separated ids listed by GET /v1/models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    a = ap.parse_args(argv)

    opts = {k: v for k, v in vars(a).items() if k not in ("host", "port", "no_uvloop")}
    server = FakeServer(**opts)
    if not a.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass

    async def serve() -> None:
        runner, port = await _start(server, a.host, a.port)
        sys.stdout.write(f"listening on http://{a.host}:{port}/v1\n")
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
