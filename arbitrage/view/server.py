"""`arbitrage view RUN_DIR`: a local HTTP server (stdlib) for the page and its JSON endpoints.

It binds 127.0.0.1 unless told otherwise, and answers only requests addressed to the name it
serves on (a web page elsewhere cannot reach it through a rebound DNS name). Every request reads
the folder again where it changed, so the page follows a run while it is going.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from arbitrage.view import assets
from arbitrage.view.folder import NotFound, RunView

log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Handler(BaseHTTPRequestHandler):
    folder: RunView  # set on the subclass that make_server builds
    allowed_hosts: set[str] = set()
    server_version = "arbitrage-view"

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        log.debug("view: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", assets.SERVED_CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200) -> None:
        body = json.dumps(assets.json_safe(data), ensure_ascii=False, allow_nan=False, default=str).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def do_HEAD(self):  # noqa: N802 - the stdlib's name
        self.do_GET()

    def do_GET(self):  # noqa: N802 - the stdlib's name
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if self.allowed_hosts and host not in self.allowed_hosts:
            self._send(HTTPStatus.FORBIDDEN, b"unknown host", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query))
        path = unquote(url.path)
        try:
            self._route(path, params)
        except NotFound as exc:
            self._json({"error": f"not found: {exc}"}, HTTPStatus.NOT_FOUND)
        except ValueError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # one bad request must not stop the viewer
            log.exception("view: %s failed", path)
            self._json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _route(self, path: str, params: dict) -> None:
        folder = self.folder
        if path in ("/", "/index.html"):
            self._send(200, assets.page(folder.run_dir.resolve().name).encode(), "text/html; charset=utf-8")
        elif path.startswith("/static/") and path.removeprefix("/static/") in (*assets.SCRIPTS, assets.STYLE):
            name = path.removeprefix("/static/")
            kind = mimetypes.guess_type(name)[0] or "text/plain"
            self._send(200, assets.asset(name).encode(), f"{kind}; charset=utf-8", cache=False)
        elif path == "/api/meta":
            self._json(folder.meta())
        elif path == "/api/prompts":
            self._json(folder.prompts(params))
        elif path.startswith("/api/prompt/"):
            self._json(folder.prompt(path.removeprefix("/api/prompt/")))
        elif path == "/api/summary":
            self._json(folder.summary())
        elif path.startswith("/figure/"):
            self._send(200, folder.figure(path.removeprefix("/figure/")), "image/svg+xml", cache=False)
        else:
            raise NotFound(path)


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6  # the stdlib's server binds IPv4 only: `--host ::1` failed


def make_server(folder: RunView, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for the folder (port 0: a free one); `serve_forever()` runs it."""
    handler = type("RunHandler", (Handler,), {"folder": folder})
    host = host.removeprefix("[").removesuffix("]")  # `--host [::1]` as a URL writes it
    server = (_IPv6Server if ":" in host else ThreadingHTTPServer)((host, port), handler)
    server.daemon_threads = True
    if host in LOOPBACK:
        handler.allowed_hosts = set(LOOPBACK)
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    return f"http://{shown}:{port}/"
