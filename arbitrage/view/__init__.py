"""`arbitrage view RUN_DIR`: read a run folder in the browser — the prompt list with filters and
search, every teacher's answers with their checks, and why one became `chosen` (see
docs/viewer.md). Serves on 127.0.0.1; `--export FILE` writes one self-contained HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from arbitrage.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbitrage view", description=__doc__.splitlines()[0], epilog="docs: docs/viewer.md")
    p.add_argument("run_dir", type=Path, help="the out= folder of a run (finished or still going)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port to serve on; 0 picks a free one (default 8765)")
    p.add_argument("--export", type=Path, metavar="FILE", help="write one self-contained HTML file instead of serving")
    p.add_argument("--limit", type=int, default=200, help="prompts in the export (the first K of the list; default 200)")
    return p


def main(argv: list[str]) -> None:
    opts = parser().parse_args(argv)
    if opts.export is not None:
        from arbitrage.view.export import export

        path = export(opts.run_dir, opts.export, opts.limit)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")
        return
    from arbitrage.view.folder import RunView
    from arbitrage.view.server import make_server, url_of

    folder = RunView(opts.run_dir)
    try:
        server = make_server(folder, opts.host, opts.port)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {opts.host}:{opts.port} ({exc.strerror}) — pass --port 0 for a free port") from None
    print(f"arbitrage view: serving {opts.run_dir} on {url_of(server)}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
