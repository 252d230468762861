"""The run folder behind the viewer, read again as it changes: a run still going (journal only),
a dataset swapped in by a rerun (the card changes: the folder is reopened), a report rebuilt."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from arbitrage.errors import ConfigError
from arbitrage.runpaths import RunPaths
from arbitrage.view.detail import RunFacts, describe
from arbitrage.view.live import JournalView
from arbitrage.view.pager import Query, RunData

FIGURE = re.compile(r"^[A-Za-z0-9_.-]+\.svg$")


class NotFound(Exception):
    pass


class RunView:
    """A run folder as the viewer reads it (its layout is arbitrage/runpaths.py's)."""

    def __init__(self, run_dir: Path | str, background_index: bool = True):
        self.run_dir = Path(run_dir)
        self.paths = RunPaths(self.run_dir)
        if not self.run_dir.is_dir():
            raise ConfigError(f"{self.run_dir} is not a folder — give the out= folder of an arbitrage run")
        if not self.paths.is_run():
            raise ConfigError(
                f"{self.run_dir} holds no arbitrage run (no README.md, run.json or journal/) — give a run's out= folder"
            )
        self.background_index = background_index
        self.journal = JournalView(self.run_dir)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._data: RunData | None = None
        self._config: RunFacts | None = None

    def _card_stamp(self) -> tuple | None:
        card = self.paths.card
        try:
            st = card.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def data(self) -> RunData | None:
        """The dataset the card names now; None while the run has written none."""
        stamp = self._card_stamp()
        with self._lock:
            if stamp != self._stamp or self._config is None:
                self._stamp = stamp
                data = RunData(self.run_dir, background=self.background_index) if stamp else None
                self._data = data if data is not None and data.tables else None
                self._config = RunFacts(self.run_dir)
            return self._data

    @property
    def config(self) -> RunFacts:
        self.data()
        return self._config  # type: ignore[return-value]

    def live(self) -> dict:
        """A run is going when the journal has calls that the summary (written at the end) does not."""
        summary = self.paths.summary
        if not self.journal.exists():
            return {"running": False}
        newest = max(p.stat().st_mtime for p in RunPaths.journal_files(self.paths.journal))
        running = not summary.exists() or newest > summary.stat().st_mtime
        return {"running": running, **(self.journal.stats() if running else {})}

    def meta(self) -> dict:
        data = self.data()
        base = {"name": self.run_dir.resolve().name, "live": self.live()}
        if data is not None:
            return {**base, **data.meta()}
        self.journal.refresh()
        return {**base, "mode": "journal", "n": int(len(self.journal.order())), "indexed": True, "facets": {}}

    def prompts(self, params: dict[str, str]) -> dict:
        cursor, limit = int(params.get("cursor") or 0), int(params.get("limit") or 50)
        data = self.data()
        if data is None:
            return self.journal.page(cursor, limit)
        return data.query(Query.from_params(params), cursor, limit)

    def prompt(self, prompt_id: str) -> dict:
        data = self.data()
        if data is None:
            self.journal.refresh()
            pos = self.journal.position(prompt_id)
            if pos is None:
                raise NotFound(prompt_id)
            return self.journal.describe(pos)
        pos = data.index().position(prompt_id)
        if pos is None:
            raise NotFound(prompt_id)
        return describe(data, self.config, pos)

    def prompt_at(self, position: int) -> dict:
        data = self.data()
        if data is None:
            return self.journal.describe(position)
        return describe(data, self.config, position)

    def summary(self) -> dict:
        report, summary = self.paths.report, self.paths.summary
        return {
            "report": report.read_text(encoding="utf-8") if report.exists() else None,
            "summary": json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else None,
            "figures": sorted(p.name for p in self.run_dir.glob("*.svg") if FIGURE.match(p.name)),
            "live": self.live(),
        }

    def figure(self, name: str) -> bytes:
        path = self.run_dir / name
        if not FIGURE.match(name) or not path.is_file() or path.resolve().parent != self.run_dir.resolve():
            raise NotFound(name)
        return path.read_bytes()
