"""The OpenAI Files + Batches endpoints (OpenAI, Together, Groq, and servers that copy them), over
aiohttp: upload a JSONL of requests, create a batch, retrieve and list batches, stream a file's
lines back. Each output line becomes the `Completion`s the engine treats like online answers: one
per choice of a line that asks for a prompt's samples with `n`.

Batch objects (https://platform.openai.com/docs/api-reference/batch): status validating →
in_progress → finalizing → completed, or failed / expired / cancelling → cancelled. Successful
lines land in `output_file_id`; failed ones in `error_file_id`, as
`{"custom_id", "response": {"status_code", "body"}, "error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlparse

import aiohttp

from arbitrage.rows import Completion
from arbitrage.teachers.openai_compat import parse_choices

TAG_KEY = "arbitrage_tag"  # our batch metadata: finds a batch whose id a crash kept us from recording
# Statuses of a create request the provider refused before making the batch: validation, auth, an
# unknown file, a full enqueued-token quota (429). Any other failure (5xx from a gateway that timed
# out, no answer, an unreadable 200) may come after the batch was made: it is looked up by its tag.
CREATE_REFUSED = frozenset({400, 401, 403, 404, 422, 429})


class BatchAPIError(Exception):
    """A Files/Batches request that failed; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class BatchAPI:
    def __init__(self, session: aiohttp.ClientSession, base_url: str):
        self.session = session
        self.base_url = base_url.rstrip("/")
        # The `url` of each request line and the batch's `endpoint`: "/v1/chat/completions".
        self.endpoint = (urlparse(self.base_url).path.rstrip("/") or "/v1") + "/chat/completions"

    async def _json(self, method: str, path: str, **kwargs) -> dict:
        try:
            async with self.session.request(method, f"{self.base_url}{path}", **kwargs) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise BatchAPIError(f"{method} {path}: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        if status != 200:
            raise BatchAPIError(f"{method} {path}: HTTP {status}: {raw[:300].decode('utf-8', 'replace')}", status)
        try:
            return json.loads(raw)
        except ValueError:
            raise BatchAPIError(f"{method} {path}: invalid JSON body {raw[:120]!r}", status) from None

    def line(self, custom_id: str, body: dict) -> bytes:
        """One request of a batch input file."""
        record = {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    async def upload(self, data: bytes, filename: str) -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename=filename, content_type="application/jsonl")
        return (await self._json("POST", "/files", data=form))["id"]

    async def create(self, input_file_id: str, completion_window: str, tag: str) -> dict:
        body = {
            "input_file_id": input_file_id,
            "endpoint": self.endpoint,
            "completion_window": completion_window,
            "metadata": {TAG_KEY: tag},
        }
        return await self._json("POST", "/batches", json=body)

    async def retrieve(self, batch_id: str) -> dict:
        return await self._json("GET", f"/batches/{batch_id}")

    async def find_tagged(self, tags: set[str], since: float, max_pages: int = 50) -> dict[str, dict]:
        """Batches carrying one of our tags, newest first, back to `since` (unix seconds)."""
        found, after = {}, None
        for _ in range(max_pages):
            params = {"limit": "100"} | ({"after": after} if after else {})
            page = await self._json("GET", "/batches", params=params)
            for batch in page.get("data") or []:
                tag = (batch.get("metadata") or {}).get(TAG_KEY)
                if tag in tags:
                    found.setdefault(tag, batch)
                after = batch.get("id")
                if (batch.get("created_at") or since) < since:
                    return found
            if not page.get("has_more") or found.keys() >= tags:
                return found
        return found

    async def answers(
        self, file_id: str, calls_of: Callable[[str], list[str]]
    ) -> AsyncIterator[tuple[list[str], list[Completion | None]]]:
        """Each line's calls (`calls_of` its custom_id: several for a line with native `n`) and their
        answers, by choice index (None: a choice the line lacks)."""
        async for line in self.lines(file_id):
            call_ids = calls_of(line.get("custom_id"))
            yield call_ids, completions_of(line, len(call_ids))

    async def lines(self, file_id: str) -> AsyncIterator[dict]:
        """A file's JSONL records, streamed: an output file can hold 200 MB of answers."""
        url = f"{self.base_url}/files/{file_id}/content"
        try:
            async with self.session.get(url) as response:
                if response.status != 200:
                    raw = await response.read()
                    raise BatchAPIError(
                        f"GET {url}: HTTP {response.status}: {raw[:300].decode('utf-8', 'replace')}", response.status
                    )
                rest = b""
                async for chunk in response.content.iter_chunked(1 << 16):
                    rest += chunk
                    *whole, rest = rest.split(b"\n")
                    for line in whole:
                        if line.strip():
                            yield json.loads(line)
                if rest.strip():
                    yield json.loads(rest)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise BatchAPIError(f"GET {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None


def completions_of(record: dict, n: int) -> list[Completion | None]:
    """One output or error line as the answers an online request with `n` choices would have given
    (`parse_choices`: None for a choice the line lacks), or the line's failure for all n."""
    response = record.get("response") or {}
    if response.get("status_code") == 200 and not record.get("error"):
        try:
            return parse_choices(response.get("body"), n)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            return [Completion(text=None, error=f"invalid response body: {exc!r}"[:300], status=200)] * n
    return [_failure(record)] * n


def _failure(record: dict) -> Completion:
    response = record.get("response") or {}
    error = record.get("error")
    status = response.get("status_code")
    body = response.get("body")
    if error:  # the provider's own verdict on the line (expired, cancelled, …): sending it again may work
        said = f"{error.get('code') or 'error'}: {error.get('message') or ''}".rstrip(": ")
        return Completion(text=None, error=f"batch line failed: {said}"[:300], status=status if status != 200 else None)
    said = json.dumps(body)[:200] if body is not None else "no body"
    return Completion(text=None, error=f"HTTP {status}: {said}", status=status)


def missing_completion(batch_id: str, state: dict) -> Completion:
    """The Completion of a call a finished batch has no line for (a failed batch has no output at all)."""
    status = state["status"]
    errors = (state.get("errors") or {}).get("data") or []
    said = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3]) or "no output line"
    if status == "failed":  # validation errors repeat if sent again; a full enqueued-token quota does not
        quota = any(e.get("code") in ("token_limit_exceeded", "rate_limit_exceeded") for e in errors)
        return Completion(None, error=f"batch {batch_id} failed: {said}"[:400], status=429 if quota else 400)
    return Completion(None, error=f"batch {batch_id} {status}: {said}"[:400])  # expired or cancelled: sent again
