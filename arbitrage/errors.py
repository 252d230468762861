"""Errors that reach the user as one line naming the fix."""

from __future__ import annotations

import errno
from pathlib import Path


class ArbitrageError(Exception):
    """Base class: the CLI prints `error: <message>` and exits 2, with no traceback."""


class ConfigError(ArbitrageError):
    """The configuration or an input file is wrong; raised before any model loads."""


class TeacherUnusable(ArbitrageError):
    """A teacher fails every call the same way (a bad key, URL or model, a server that is down):
    the run stops, keeping what is done, with one line naming the likely fix."""


def disk_error(exc: OSError, path: Path) -> OSError | ArbitrageError:
    """A full disk (or file-size limit) as one line naming the fix; other OS errors unchanged."""
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return ArbitrageError(
            f"no space left to write {path} ({exc.strerror}) — free space and rerun: the journal has every finished call"
        )
    return exc
