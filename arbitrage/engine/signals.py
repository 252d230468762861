"""Ctrl-C and SIGTERM: the first stops the engine gracefully, the second exits at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator

from arbitrage.engine.core import Engine

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals(engine: Engine) -> Iterator[None]:
    """A first Ctrl-C / SIGTERM stops the engine gracefully; a second syncs the journal and exits at once."""
    loop = asyncio.get_running_loop()

    def interrupt(signame: str) -> None:
        if engine.stop_reason is None:
            log.warning("%s: finishing the calls in flight, then writing the dataset (again to exit at once)", signame)
            engine.stop("interrupted")
            return
        engine.journal.sync()  # every finished call is on disk; the rerun resumes from it
        os._exit(130)

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, interrupt, sig.name)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or Windows
            pass
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
