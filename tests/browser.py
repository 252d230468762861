"""Headless Chromium (Debian's package) driven over the Chrome DevTools Protocol, for the viewer's
browser tests. aiohttp (a project dependency) speaks the websocket; nothing is downloaded."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp

# Without the background-networking flags a closed network makes Chromium slow to start.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--window-size=1400,900",
    "--remote-debugging-port=0",
]


def executable() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    def __init__(self, profile: Path, timeout_s: float = 30.0):
        exe = executable()
        assert exe, "no chromium on PATH"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (profile / "chromium.log").open("wb")
        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=self.log, stderr=self.log)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"chromium did not start (see {profile / 'chromium.log'})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        target = json.loads(urllib.request.urlopen(request, timeout=timeout_s).read())
        self.loop = asyncio.new_event_loop()
        self.events: list[dict] = []
        self.dialogs: list[str] = []
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._run(self._connect(target["webSocketDebuggerUrl"]))
        for domain in ("Page", "Runtime"):
            self.send(f"{domain}.enable")

    def _run(self, coro, timeout_s: float = 30.0):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))

    async def _connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)
        self.reader = self.loop.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Page.javascriptDialogOpening":
                self.dialogs.append(data["params"].get("message", ""))
                await self._send("Page.handleJavaScriptDialog", {"accept": False})
            elif "method" in data:
                self.events.append(data)

    async def _send(self, method: str, params: dict | None = None) -> dict:
        self._id += 1
        future = self.loop.create_future()
        self._pending[self._id] = future
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        if method == "Page.handleJavaScriptDialog":
            return {}
        reply = await future
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def send(self, method: str, **params) -> dict:
        return self._run(self._send(method, params))

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout_s: float = 15.0):
        """Poll until `expression` is truthy in the page; returns its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            self._run(asyncio.sleep(0.05))

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && !!document.body")

    def press(self, key: str) -> None:
        for kind in ("keyDown", "keyUp"):
            params = {"type": kind, "key": key}
            if kind == "keyDown" and len(key) == 1:
                params["text"] = key
            self.send("Input.dispatchKeyEvent", **params)

    def type(self, text: str) -> None:
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """Uncaught exceptions and console errors in the page so far."""
        out = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(e["params"]["exceptionDetails"])[:500])
            elif e["method"] == "Runtime.consoleAPICalled" and e["params"].get("type") == "error":
                out.append(json.dumps(e["params"]["args"])[:500])
        return out

    def close(self) -> None:
        if getattr(self, "loop", None) is not None and not self.loop.is_closed():
            try:
                self._run(self.ws.close(), 5)
                self.reader.cancel()
                self._run(self.session.close(), 5)
            except Exception:
                pass
            self.loop.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def artifacts_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $ARBITRAGE_TEST_ARTIFACTS when set (CI keeps them), else the test's tmp."""
    path = Path(os.environ.get("ARBITRAGE_TEST_ARTIFACTS") or tmp_path / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
