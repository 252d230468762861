"""A small OpenAI-compatible server for tests (no API is reachable here): deterministic answers,
scripted faults (status codes, Retry-After, garbage bodies), and a log of what it received."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_batches import FakeBatches, with_batches


@dataclass
class Script:
    latency_s: float = 0.0
    jitter_s: float = 0.0  # extra latency, different per prompt: answers land out of order
    fail_first: int = 0  # per distinct prompt: the first N requests fail with fail_status
    fail_status: int = 500
    retry_after: str | None = None  # Retry-After header sent with failures
    garbage_first: int = 0  # per distinct prompt: the next N answers are truncated JSON
    always_fail_marker: str | None = None  # prompts containing this always get HTTP 400
    empty_marker: str | None = None  # prompts containing this get an empty answer (status 200)
    models_status: int = 200  # what GET /v1/models answers (a bad key: 401 there too)
    error_message: str = "scripted failure"  # the server's words in failed responses
    answers: dict = field(default_factory=dict)  # model name → fixed answer text
    # Usage reported for a prompt: None counts words; a number bills that many tokens per character
    # of every message (CJK text is about one token per character), and max_tokens for the answer.
    tokens_per_char: float | None = None
    hidden_reasoning: int = 0  # completion tokens billed on top of an answer's (reasoning the server neither caps nor shows)
    ignore_n: bool = False  # answer one choice whatever `n` asks (servers that do not implement it)
    seeded: bool = False  # choice i answers for the request's seed + i, as vLLM's do: only right seeds match
    # "length": the judge rates 3 + len(request) % 5 (a digit, nothing to learn); "words": it rates the
    # answer by the words present (`answer_rating`), which a head on sentence embeddings can learn.
    judge_rule: str = "length"
    varied: bool = False  # teachers' answers are a few of SENTENCES, picked by the answer's hash
    # model → how it thinks before answering (`thought_for`): "reasoning_content" (its own field, as DeepSeek's
    # API and litellm send it), "reasoning" (vLLM >= 0.10's name for it) or "tags" (<think>…</think> before
    # the answer, a server without a reasoning parser). Usage then reports completion_tokens_details.reasoning_tokens.
    thinking: dict = field(default_factory=dict)
    think_cut_marker: str | None = None  # prompts with this: a thinking model thinks until max_tokens, no answer


# Sentences a `varied` answer is made of, with the points the "words" judge gives each: explanations
# and examples gain, hedging and filler lose. Distinct in meaning, so an embedding tells them apart.
SENTENCES = {
    "For example, a small garden needs water early every morning.": 2,
    "This works because each step builds on the one before it.": 2,
    "First, list what you have; then follow the steps in order.": 1,
    "In summary, start small, measure, and adjust as you learn.": 1,
    "I am not sure about any of this, honestly.": -2,
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.": -2,
    "Whatever, it probably does not matter much anyway.": -1,
}
MARKERS = {"example": 2, "because": 2, "first": 1, "summary": 1, "sure": -2, "lorem": -2, "whatever": -1}


def answer_rating(answer: str) -> int:
    """The "words" judge's rating of an answer, 1–9: 4 plus the points of the marker words present."""
    words = set(answer.lower().replace(",", " ").replace(";", " ").replace(".", " ").split())
    return max(1, min(9, 4 + sum(points for word, points in MARKERS.items() if word in words)))


CODE_WORDS = ("python", "función", "fonction", "funzione", "funktion", "função", "function", "code", "código")


def prompt_points(prompt: str) -> int:
    """The fake rubric rater's additive 0–5 points for a request: code tasks rate high, the rest low."""
    text = prompt.lower()
    points = int(len(text.split()) >= 20) + 2 * any(w in text for w in CODE_WORDS) + int("?" in text)
    return min(5, points + int(any(w in text for w in ("data", "datos", "données", "dati", "daten", "dados"))))


def _between(text: str, start: str, end: str) -> str:
    head, _, tail = text.partition(start)
    return tail.partition(end)[0].strip() if tail else text


def answer_for(model: str, text: str, script: Script) -> str:
    digest = hashlib.sha256(f"{model}:{text}".encode()).hexdigest()[:8]
    if script.varied and model not in script.answers:
        bits = int(hashlib.sha256(f"varied:{model}:{text}".encode()).hexdigest(), 16)
        picked = [s for i, s in enumerate(SENTENCES) if (bits >> (4 * i)) % 16 < 6] or [list(SENTENCES)[bits % 7]]
        return f"Answer {digest}. " + " ".join(picked)
    if model in script.answers:  # "{digest}" in a scripted answer makes it unique per prompt
        return script.answers[model].replace("{digest}", digest)
    if text.startswith("You are playing a user"):  # the user simulator's request: a follow-up of new words
        more = hashlib.sha256(f"follow-up:{digest}".encode()).hexdigest()
        return f"Answer {digest} from {model}: what about {more[:6]}, {more[6:12]} and {more[12:18]}?"
    return f"Answer {digest} from {model}, with a comma and Several Capitals."


def thought_for(model: str, text: str) -> str:
    """A thinking model's reasoning: lowercase, and with a word ("ponder") its answer never has."""
    digest = hashlib.sha256(f"thought:{model}:{text}".encode()).hexdigest()[:8]
    return f"let me ponder request {digest} step by step, all in lowercase, before i answer"


def thinking_choice(model: str, text: str, answer: str, body: dict, script: Script) -> tuple[dict, str, int, int]:
    """A thinking model's message, finish reason, completion and reasoning tokens (words, or max_tokens
    when cut) for one answer: its thought in the field the mode names, or in <think> tags."""
    mode, cut = script.thinking[model], bool(script.think_cut_marker and script.think_cut_marker in text)
    thought = " ".join([thought_for(model, text)] * (50 if cut else 1))
    spent = body["max_tokens"] if cut or script.tokens_per_char is not None else len((thought + " " + answer).split())
    thinking_tokens = spent if cut else len(thought.split())
    answer = "" if cut else answer
    if mode == "tags":
        content = f"<think>\n{thought}" + ("" if cut else f"\n</think>\n\n{answer}")
        message = {"role": "assistant", "content": content}
    else:
        message = {"role": "assistant", "content": answer or None, mode: thought}
    return message, "length" if cut else "stop", spent, thinking_tokens


def usage(body: dict, text: str, content: str, script: Script) -> dict:
    if script.tokens_per_char is None:
        completion = len(content.split()) + script.hidden_reasoning
        return {"prompt_tokens": len(text.split()), "completion_tokens": completion, "total_tokens": 0}
    chars = sum(len(m["content"]) for m in body["messages"])
    return {
        "prompt_tokens": math.ceil(chars * script.tokens_per_char),
        "completion_tokens": body["max_tokens"],
        "total_tokens": 0,
    }


class FakeOpenAI:
    def __init__(self, script: Script | None = None):
        self.script = script or Script()
        self.requests: list[dict] = []
        self.gets: list[str] = []
        self.seen: Counter = Counter()
        self._lock = threading.Lock()
        self.batches = FakeBatches(lambda: self.url)  # /v1/files and /v1/batches (tests/fake_batches.py)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), with_batches(self._handler(), self.batches))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with fake._lock:
                    fake.gets.append(self.path)
                if self.path != "/v1/models":
                    return self._send(404, b'{"error": {"message": "Not Found"}}')
                status = fake.script.models_status
                body = {"object": "list", "data": []} if status == 200 else {"error": {"message": fake.script.error_message}}
                self._send(status, json.dumps(body).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path != "/v1/chat/completions":  # e.g. a base_url that already ends in /chat/completions
                    return self._send(404, b'{"error": {"message": "Not Found"}}')
                text = body["messages"][-1]["content"]
                script = fake.script
                with fake._lock:
                    fake.requests.append(
                        {"path": self.path, "auth": self.headers.get("Authorization"), "body": body, "at": time.monotonic()}
                    )
                    fake.seen[text] += 1
                    nth = fake.seen[text]
                if script.always_fail_marker and script.always_fail_marker in text:  # refused at once, as vLLM
                    return self._send(400, b'{"error": {"message": "bad request"}}')  # refuses an over-long prompt
                if script.latency_s or script.jitter_s:
                    spread = int(hashlib.sha256(text.encode()).hexdigest()[:4], 16) / 0xFFFF
                    time.sleep(script.latency_s + script.jitter_s * spread)
                if nth <= script.fail_first:
                    headers = {"Retry-After": script.retry_after} if script.retry_after else {}
                    message = json.dumps({"error": {"message": script.error_message}}).encode()
                    return self._send(script.fail_status, message, headers)
                if nth <= script.fail_first + script.garbage_first:
                    return self._send(200, b'{"choices": [{"message": {"content": "trunc')
                if script.empty_marker and script.empty_marker in text:
                    content, top = "", []
                elif "Quality score:" in text and "<request>" in text and body["model"] not in script.answers:  # a rubric rater
                    points = prompt_points(_between(text, "<request>", "</request>"))
                    content, top = f"The request is rated by its words. Quality score: {points}", []
                elif "[Answer]" in text and body["model"] not in script.answers:  # a judge: rate with log-probs
                    if script.judge_rule == "words":
                        rating = answer_rating(_between(text, "[Answer]", "\n\nRate how"))
                        second = rating - 1 if rating == 9 else rating + 1
                    else:
                        rating = 3 + len(text) % 5
                        second = rating + 1
                    content = str(rating)
                    top = [{"token": str(rating), "logprob": -0.1}, {"token": str(second), "logprob": -2.5}]
                else:
                    content, top = answer_for(body["model"], text, script), []
                # `n` choices, each its own answer (as distinct samples are); usage covers them all, as OpenAI's does
                n = 1 if script.ignore_n else int(body.get("n") or 1)
                contents = [content] + [
                    answer_for(body["model"], f"{text}#{i}", script) if content and not top else content for i in range(1, n)
                ]
                if script.seeded and content and not top:
                    contents = [answer_for(body["model"], f"{text}@{body['seed'] + i}", script) for i in range(n)]
                usages = [usage(body, text, c, script) for c in contents]
                messages = [{"role": "assistant", "content": c} for c in contents]
                finish, thinking_tokens = ["stop"] * len(contents), 0
                if body["model"] in script.thinking and content and not top:  # not a judge's digit
                    for i, c in enumerate(contents):
                        messages[i], finish[i], usages[i]["completion_tokens"], spent = thinking_choice(
                            body["model"], text, c, body, script
                        )
                        thinking_tokens += spent
                response = {
                    "id": "fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": i,
                            "message": messages[i],
                            "finish_reason": finish[i],
                            "logprobs": {"content": [{"token": content[:1], "logprob": -0.1, "top_logprobs": top}]}
                            if body.get("logprobs")
                            else None,
                        }
                        for i, content in enumerate(contents)
                    ],
                    "usage": {
                        "prompt_tokens": usages[0]["prompt_tokens"],
                        "completion_tokens": sum(u["completion_tokens"] for u in usages),
                        "total_tokens": 0,
                        **({"completion_tokens_details": {"reasoning_tokens": thinking_tokens}} if thinking_tokens else {}),
                    },
                }
                self._send(200, json.dumps(response).encode())

        return Handler


if __name__ == "__main__":  # `python tests/fake_openai.py` for trying API teachers by hand
    with FakeOpenAI() as server:
        print(server.url, flush=True)
        threading.Event().wait()
