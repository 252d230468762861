"""The page: our own HTML, CSS and JS (package data, no framework, nothing fetched from outside).

The server sends it with the scripts as files under a strict Content-Security-Policy; the export
inlines them and allows exactly those inline scripts by hash, so no other script can run in either.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from html import escape
from importlib import resources


def json_safe(value):
    """NaN and infinities are not JSON: they become null (for the server's answers and the export)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


SCRIPTS = ("markdown.js", "sources.js", "app.js")
STYLE = "app.css"
SERVED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def asset(name: str) -> str:
    return resources.files("arbitrage.view").joinpath("static", name).read_text(encoding="utf-8")


def script_json(data) -> str:
    """JSON safe inside <script type="application/json">: no `</script>`, `<!--` or line separators
    can end or change the element, whatever the answers contain."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def page(title: str, data=None) -> str:
    """The served page (data None: scripts and style by URL) or the self-contained export."""
    head = ['<meta charset="utf-8">', '<meta name="viewport" content="width=device-width, initial-scale=1">']
    if data is None:
        head.append(f'<link rel="stylesheet" href="static/{STYLE}">')
        scripts = "".join(f'<script src="static/{name}"></script>' for name in SCRIPTS)
    else:
        sources, style = [asset(name) for name in SCRIPTS], asset(STYLE)
        assert not any("</script" in s.lower() or "</style" in s.lower() for s in [*sources, style])
        csp = (
            f"default-src 'none'; script-src {' '.join(_sha256(s) for s in sources)}; style-src {_sha256(style)}; "
            "img-src data:; base-uri 'none'; form-action 'none'"
        )
        head.insert(1, f'<meta http-equiv="Content-Security-Policy" content="{csp}">')
        head.append(f"<style>{style}</style>")
        scripts = f'<script type="application/json" id="arbitrage-data">{script_json(data)}</script>'
        scripts += "".join(f"<script>{s}</script>" for s in sources)
    return (
        f'<!doctype html>\n<html lang="en"><head>{"".join(head)}<title>{escape(title)} · arbitrage view</title></head>\n'
        f'<body><div id="app" aria-live="polite">Loading…</div>{scripts}</body></html>\n'
    )
