"""`arbitrage view RUN_DIR --export FILE`: one self-contained HTML file with the first K prompts,
their answers and the run's summary, that opens from file:// with no server and no network."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from arbitrage.errors import ConfigError
from arbitrage.output.dataset import write_atomic
from arbitrage.view import assets
from arbitrage.view.folder import RunView


def collect(folder: RunView, limit: int) -> dict:
    """The data the page needs for the first `limit` prompts of the folder."""
    data = folder.data()
    if data is None:
        page = folder.journal.page(0, limit)
        rows, run_n = page["rows"], page["n"]
        details = [folder.journal.describe(r["pos"]) for r in rows]
    else:
        listed = np.flatnonzero(data.index().listed)  # a kept conversation's last turn is no entry of its own
        run_n = len(listed)
        rows = data.list_rows(listed[:limit])
        details = [folder.prompt_at(r["pos"]) for r in rows]
    meta = folder.meta()
    summary = folder.summary()
    summary["figure_data"] = {
        name: "data:image/svg+xml;base64," + base64.b64encode(folder.figure(name)).decode() for name in summary["figures"]
    }
    checks = sorted({c["id"] for d in details for cand in d["candidates"] for c in cand["checks"]})
    return assets.json_safe(
        {
            "meta": {
                "name": meta["name"],
                "mode": meta["mode"],
                "n": len(rows),
                "run_n": run_n,
                "exported": True,
                "live": {"running": False},
                "counts": meta.get("counts", {}),
                "checks": checks,
                "conversations": bool(meta.get("conversations")),  # the list is of conversations: their facets
            },
            "prompts": rows,
            "details": {d["prompt_id"]: d for d in details},
            "summary": summary,
        }
    )


def export(run_dir: Path | str, out: Path | str, limit: int = 200) -> Path:
    if limit < 1:
        raise ConfigError(f"--limit must be a positive number of prompts, got {limit}")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--export {out} is a folder — give a file name such as view.html")
    if not out.parent.exists():
        raise ConfigError(f"--export {out}: folder {out.parent} does not exist — create it or choose another path")
    folder = RunView(run_dir, background_index=False)
    data = collect(folder, limit)
    json.dumps(data, allow_nan=False)  # fail here, not in the browser
    write_atomic(out, assets.page(data["meta"]["name"], data))
    return out
