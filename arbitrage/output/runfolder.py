"""The run folder: claimed under a lock, refused when it holds another run.

Rerunning the same identity on the same folder resumes it; a different identity is refused with
one line naming what differs, unless the folder's run finished no call (then there is nothing to
protect, and the corrected command takes it over). The lock keeps two runs from interleaving in one folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import yaml

from arbitrage.engine.journal import Journal
from arbitrage.errors import ConfigError
from arbitrage.output.dataset import sweep_temporary, write_atomic
from arbitrage.rows import stable_hash
from arbitrage.runpaths import BEFORE_FIRST_RUN, RunPaths

log = logging.getLogger(__name__)


def run_id(identity: dict) -> str:
    """A short id for what decides the calls: a run with other prompts, teachers or router gets another."""
    return stable_hash(identity, length=12)


def differences(old, new, path: str = "") -> list[str]:
    """Where two identities differ, as dotted keys: `teachers.api.sampling.temperature 0.7 → 0.1`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in [*old, *(k for k in new if k not in old)]:
            here = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"{here} removed")
            elif key not in old:
                out.append(f"{here} added")
            else:
                out += differences(old[key], new[key], here)
        return out
    if old == new:
        return []
    if any(isinstance(v, str) and (len(v) > 80 or "\n" in v) for v in (old, new)):
        return [f"{path} changed"]  # prompt templates: the key says enough
    return [f"{path} {json.dumps(old, ensure_ascii=False)} → {json.dumps(new, ensure_ascii=False)}"]


def check(out_dir: Path, identity: dict) -> None:
    """The claim's refusals, read-only and ahead of it: a folder that is a file, holds another run or
    is not a run is named before any endpoint is asked, and nothing is created (the claim checks again
    under the lock)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out={out_dir} is a file — give a folder for the run")
    if out_dir.is_dir():
        _check_identity(out_dir, identity, note=False)


@contextlib.contextmanager
def claim(out_dir: Path, identity: dict, config: dict, facts: dict | None = None) -> Iterator[None]:
    """Hold the folder for one run: lock it, check it holds this run or none, record the identity,
    the resolved facts (what the report and viewer read: teachers' kinds, prices, sampling) and
    the resolved config. Nothing is written before every check has passed."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out={out_dir} is a file — give a folder for the run")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = RunPaths(out_dir).lock.open("a+")
    except OSError as exc:
        raise ConfigError(f"cannot write to out={out_dir} ({exc.strerror}) — choose a folder you can write to") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise ConfigError(
                f"{out_dir} is in use by another arbitrage run (pid {holder}) — wait for it to finish, or choose another out=..."
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        _check_identity(out_dir, identity)
        paths = RunPaths(out_dir)
        for stale in sweep_temporary([out_dir, paths.data]):
            log.info("removed %s, left by a run that was stopped while it wrote", stale)
        record = {**identity, "run_id": run_id(identity), "facts": facts or {}}
        write_atomic(paths.run_json, json.dumps(record, indent=2, ensure_ascii=False))
        write_atomic(paths.config, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        yield
    finally:
        lock.close()  # closing releases the lock


def _check_identity(out_dir: Path, identity: dict, note: bool = True) -> None:
    run_file = RunPaths(out_dir).run_json
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        previous.pop("run_id", None)
        previous.pop("facts", None)  # prices and settings that do not decide the calls
        differs = differences(previous, identity)
        if differs and not Journal.exists(RunPaths(out_dir).journal):
            # It finished no call (refused at start: a wrong URL, key or setting): nothing to protect,
            # so the fixed command takes the folder over instead of being refused as another run.
            if note:
                log.info("%s holds settings of a run that finished no call: replacing them", out_dir)
            return
        if differs:
            shown = "; ".join(differs[:4]) + (f"; and {len(differs) - 4} more" if len(differs) > 4 else "")
            raise ConfigError(
                f"{out_dir} already holds a different run (differs in: {shown}) — rerun with the same settings to "
                f"resume it, or choose another out=..."
            )
    elif any(p.name not in BEFORE_FIRST_RUN for p in out_dir.iterdir()):
        raise ConfigError(f"{out_dir} exists and is not an arbitrage run — choose another out=... or empty it")
