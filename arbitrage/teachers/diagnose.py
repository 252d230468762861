"""One line for a failure that ends a run: the server's own words and the likely fix."""

from __future__ import annotations

import json
from urllib.parse import urlparse

from arbitrage.rows import Completion

# Consecutive failures of one kind, with no answer yet from that teacher, that stop it (the
# "circuit breaker"): a bad key or URL fails every call alike. A 400 can also be one bad prompt,
# so it takes more of them.
BREAK_AFTER = {401: 3, 403: 3, 404: 3, 400: 5}
REFUSED_BREAK_AFTER = 3
# A 200 whose JSON is no chat completion (`"choices": []`) is the server's own answer, not a torn
# transfer: the same request gets it again, so it is not retried, and five in a row stop the teacher.
NOT_A_COMPLETION_BREAK_AFTER = 5
NOT_A_COMPLETION = "answered 200 with "


def not_a_completion(body) -> str:
    """The error for a JSON body that is no chat completion, quoting what is wrong with it."""
    if not isinstance(body, dict):
        wrong = f"a JSON {type(body).__name__}, not an object"
    elif "choices" not in body:
        said = f" (error: {json.dumps(body['error'], ensure_ascii=False)[:100]})" if "error" in body else ""
        wrong = f'no "choices"{said}'
    elif body["choices"] == []:
        wrong = '"choices": []'
    else:
        wrong = f'"choices": {json.dumps(body["choices"], ensure_ascii=False)[:100]}'
    return NOT_A_COMPLETION + wrong


def no_completion(completion: Completion) -> bool:
    """A 200 that is no chat completion (see `not_a_completion`)."""
    return completion.status == 200 and (completion.error or "").startswith(NOT_A_COMPLETION)


def refused(completion: Completion) -> bool:
    """The connection itself failed (nothing listens there, or the host does not resolve)."""
    text = (completion.error or "").lower()
    needles = ("cannot connect", "connect call failed", "connection refused", "connection error", "name or service not known")
    return completion.status is None and any(s in text for s in needles)


def breaks_after(completion: Completion) -> int | None:
    """How many failures like this one in a row stop the teacher; None: not that kind of failure."""
    if refused(completion):
        return REFUSED_BREAK_AFTER
    if no_completion(completion):
        return NOT_A_COMPLETION_BREAK_AFTER
    return BREAK_AFTER.get(completion.status)


def server_message(error: str | None) -> str:
    """The server's own message from an `HTTP 401: {...}` error, else the error text."""
    text = error or ""
    _, _, body = text.partition(": ")
    try:
        parsed = json.loads(body)
        message = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = message.get("message", message) if isinstance(message, dict) else message
        return str(message)[:160]
    except ValueError:
        return (body or text)[:160]


def explain(teacher: str, endpoint: str | None, key_env: str | None, model: str, completion: Completion) -> str:
    """`teacher 'api': HTTP 401 from api.openai.com "Incorrect API key" — check $OPENAI_API_KEY`."""
    where = urlparse(endpoint).netloc if endpoint else "the provider"
    if refused(completion):
        return (
            f"teacher '{teacher}': cannot connect to {endpoint or where} ({(completion.error or '')[:120]}) — "
            f"is the server running? check teacher.{teacher}.base_url"
        )
    if no_completion(completion):
        return (
            f"teacher '{teacher}': {where} {completion.error} {NOT_A_COMPLETION_BREAK_AFTER} times, never a chat completion — "
            f"check that teacher.{teacher}.base_url ({endpoint or where}) is an OpenAI-compatible /v1 and teacher.{teacher}.model ('{model}')"
        )
    status, said = completion.status, server_message(completion.error)
    head = f"teacher '{teacher}': HTTP {status} from {where} \"{said}\""
    if status in (401, 403):
        fix = f"check ${key_env}" if key_env else f"the server wants a key: set teacher.{teacher}.api_key_env"
    elif status == 404 and endpoint and endpoint.rstrip("/").endswith("/chat/completions"):
        fix = f"base_url must stop before /chat/completions, e.g. {endpoint.rstrip('/').removesuffix('/chat/completions')}"
    elif status == 404:
        fix = f"check teacher.{teacher}.model ('{model}') and the endpoint {endpoint or ''}".rstrip()
    else:
        fix = f"check teacher.{teacher}.model ('{model}') and its sampling settings"
    return f"{head} — {fix}"
