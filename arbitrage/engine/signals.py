"""Ctrl-C and SIGTERM, from the first call to the card swap (arbitrage/pipeline.py): the first
stops the engine gracefully — calls in flight finish, every settled call is read back, the dataset
is still written (without the embedding spread) — and the run exits 128 + the signal's number
(130, 143); a second syncs the journal and exits at once with one line.

`signal.signal`, not the loop's `add_signal_handler`: the end of a run (summary, parquet, card) is
plain code that never yields to the loop, and a signal there must still be handled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

from arbitrage.engine.core import Engine

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Received:
    """The first signal a run got, if any."""

    def __init__(self) -> None:
        self.received: int | None = None

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name


@contextlib.contextmanager
def stop_on_signals(engine: Engine) -> Iterator[Received]:
    """A first Ctrl-C / SIGTERM stops the engine gracefully; a second syncs the journal and exits at once."""
    loop = asyncio.get_running_loop()
    got = Received()

    def interrupt(signum: int, frame) -> None:
        if got.received is None:
            got.received = signum
            log.warning(
                "%s: finishing the calls in flight, then writing the dataset (again to exit at once)", signal.Signals(signum).name
            )
            loop.call_soon_threadsafe(engine.stop, "interrupted")  # the engine's own thread, when it next runs
            return
        engine.journal.sync()  # every finished call is on disk; the rerun resumes from it
        sys.stderr.write(
            f"error: {signal.Signals(signum).name} again: exited before the dataset was written — the journal has every "
            "finished call: rerun the same command to write it\n"
        )
        sys.stderr.flush()
        os._exit(128 + signum)

    previous = {}
    for sig in SIGNALS:
        try:
            previous[sig] = signal.signal(sig, interrupt)
        except ValueError:  # not the main thread (tests)
            pass
    try:
        yield got
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
