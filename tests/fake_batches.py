"""The OpenAI Files + Batches endpoints for our fake server (tests/fake_openai.py): upload, create,
retrieve, list, cancel, and output / error files, with a configurable completion delay, expired
and failed batches.

Each request line of a batch is sent to the server's own /v1/chat/completions, so batch answers,
usage and scripted faults (failed lines) are exactly those of online calls (a line's `n` gives n
choices, as online), and `server.seen` counts every request a batch carried, as a provider would
bill it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs, urlparse


@dataclass
class BatchScript:
    delay_s: float = 0.0  # from create until the batch finishes
    expire_first: int = 0  # the first N batches expire: half their lines answered, the rest batch_expired
    fail_first: int = 0  # the first N batches fail validation: no output at all
    fail_code: str = "invalid_request"  # `errors` code of a failed batch (token_limit_exceeded: a full quota)
    workers: int = 4  # lines run at once against the chat endpoint
    create_then_fail: int = 0  # the first N creates make the batch, then answer 502 (a gateway timing out)
    unlisted: bool = False  # batches made by a failing create are missing from the list (a lagging index)


class FakeBatches:
    def __init__(self, base_url):
        self.base_url = base_url  # a callable: the server knows its port only once it is bound
        self.script = BatchScript()
        self.files: dict[str, bytes] = {}
        self.file_names: dict[str, str] = {}
        self.batches: dict[str, dict] = {}  # in order of creation
        self.carried: Counter = Counter()  # custom_id → how many batches carried it
        self.polls = 0
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self.unlisted: set[str] = set()  # batch ids the list leaves out (until cleared)
        self._hurry = threading.Event()

    def finish_now(self) -> None:
        """Batches waiting out their delay run at once (the delay is for batches in flight at a kill)."""
        self.script.delay_s = 0.0
        self._hurry.set()

    # routing -------------------------------------------------------------------------------------
    def handle(self, request, method: str) -> bool:
        """Serve a Files or Batches request; False for any other path (the chat server's)."""
        url = urlparse(request.path)
        parts = url.path.strip("/").split("/")
        if parts[:2] not in (["v1", "files"], ["v1", "batches"]):
            return False
        body = request.rfile.read(int(request.headers.get("Content-Length", 0))) if method == "POST" else b""
        kind, rest = parts[1], parts[2:]
        if kind == "files" and method == "POST" and not rest:
            return self._send(request, 200, self._upload(request.headers.get("Content-Type", ""), body))
        if kind == "files" and method == "GET" and len(rest) == 2 and rest[1] == "content":
            if rest[0] not in self.files:
                return self._send(request, 404, {"error": {"message": f"No such File object: {rest[0]}"}})
            return self._send(request, 200, self.files[rest[0]], content_type="application/jsonl")
        if kind == "batches" and method == "POST" and not rest:
            return self._send(request, *self._create(json.loads(body)))
        if kind == "batches" and method == "GET" and not rest:
            return self._send(request, 200, self._list(parse_qs(url.query)))
        if kind == "batches" and rest and rest[0] in self.batches:
            if method == "GET" and len(rest) == 1:
                with self._lock:
                    self.polls += 1
                return self._send(request, 200, self.batches[rest[0]])
            if method == "POST" and rest[1:] == ["cancel"]:
                self._cancelled.add(rest[0])
                self.batches[rest[0]]["status"] = "cancelling"
                return self._send(request, 200, self.batches[rest[0]])
        return self._send(request, 404, {"error": {"message": f"Not Found: {method} {url.path}"}})

    def _send(self, request, status: int, body, content_type: str = "application/json") -> bool:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(raw)))
        request.end_headers()
        request.wfile.write(raw)
        return True

    # files ---------------------------------------------------------------------------------------
    def _upload(self, content_type: str, body: bytes) -> dict:
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        file = fields["file"]
        return self._store(file.get_payload(decode=True), file.get_filename() or "upload.jsonl")

    def _store(self, content: bytes, name: str) -> dict:
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = content
            self.file_names[file_id] = name
        return {"id": file_id, "object": "file", "bytes": len(content), "filename": name, "purpose": "batch"}

    # batches -------------------------------------------------------------------------------------
    def _create(self, body: dict) -> tuple[int, dict]:
        if body.get("input_file_id") not in self.files:
            return 400, {"error": {"message": f"input_file_id {body.get('input_file_id')!r} does not exist"}}
        with self._lock:
            batch_id = f"batch_{len(self.batches) + 1}"
            batch = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body.get("endpoint"),
                "input_file_id": body["input_file_id"],
                "completion_window": body.get("completion_window"),
                "status": "in_progress",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": int(time.time()),
                "errors": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": body.get("metadata") or {},
            }
            self.batches[batch_id] = batch
            number = len(self.batches)
            failed_create = number <= self.script.create_then_fail
            if failed_create and self.script.unlisted:
                self.unlisted.add(batch_id)
        threading.Thread(target=self._run, args=(batch, number), daemon=True).start()
        if failed_create:
            return 502, {"error": {"message": "upstream timed out"}}
        return 200, batch

    def _list(self, query: dict) -> dict:
        limit = int(query.get("limit", ["20"])[0])
        newest_first = [b for b in reversed(self.batches.values()) if b["id"] not in self.unlisted]
        after = query.get("after", [None])[0]
        if after is not None:
            ids = [b["id"] for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        return {
            "object": "list",
            "data": page,
            "has_more": len(newest_first) > limit,
            "last_id": page[-1]["id"] if page else None,
        }

    def _run(self, batch: dict, number: int) -> None:
        script = self.script
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].splitlines() if line.strip()]
        batch["request_counts"]["total"] = len(lines)
        self._hurry.wait(script.delay_s)
        if number <= script.fail_first:
            batch["errors"] = {"object": "list", "data": [{"code": script.fail_code, "message": "scripted batch failure"}]}
            batch["status"] = "failed"
            return
        expired = number <= script.fail_first + script.expire_first
        run = lines[: len(lines) // 2] if expired else lines
        with self._lock:
            self.carried.update(line["custom_id"] for line in run)
        with ThreadPoolExecutor(script.workers) as pool:
            results = list(pool.map(self._answer, run))
        ok = [r for r in results if r["response"] and r["response"]["status_code"] == 200]
        failed = [r for r in results if r not in ok]
        cancelled = batch["id"] in self._cancelled
        for line in lines[len(run) :]:
            code = "batch_expired" if expired else "batch_cancelled"
            failed.append({"id": f"req-{line['custom_id']}", "custom_id": line["custom_id"], "response": None,
                           "error": {"code": code, "message": "This request could not be executed before the window expired."}})  # fmt: skip
        if ok:
            batch["output_file_id"] = self._store(_jsonl(ok), f"{batch['id']}_output.jsonl")["id"]
        if failed:
            batch["error_file_id"] = self._store(_jsonl(failed), f"{batch['id']}_error.jsonl")["id"]
        batch["request_counts"] |= {"completed": len(ok), "failed": len(failed)}
        batch["status"] = "expired" if expired else "cancelled" if cancelled else "completed"

    def _answer(self, line: dict) -> dict:
        request = urllib.request.Request(
            self.base_url() + line["url"].removeprefix("/v1"),
            data=json.dumps(line["body"]).encode(),
            headers={"Content-Type": "application/json"},
        )
        for attempt in range(20):  # the chat server's listen backlog is small: a burst of connects can be reset
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    status, raw = response.status, response.read()
                break
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, exc.read()
                break
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.01 * (attempt + 1))
        else:
            status, raw = 500, b'{"error": {"message": "the fake could not reach its own chat endpoint"}}'
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"error": {"message": raw[:200].decode("utf-8", "replace")}}
        response = {"status_code": status, "request_id": f"req-{line['custom_id']}", "body": body}
        return {"id": f"batch_req_{line['custom_id']}", "custom_id": line["custom_id"], "response": response, "error": None}


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def with_batches(handler, batches: FakeBatches):
    """The chat server's request handler, with the Files and Batches endpoints in front of it."""

    class Handler(handler):
        def do_GET(self):
            if not batches.handle(self, "GET"):
                super().do_GET()

        def do_POST(self):
            if not batches.handle(self, "POST"):
                super().do_POST()

    return Handler
