"""What a malformed or misplaced command-line override should have been, in one line.

Plain data in, text out (the CLI composes the config and passes it here as a dict): the override
the shell split at a space or Hydra's lexer refused for its non-ASCII characters, with the quoting
that works; the dotted paths where a misplaced key really lives; the quoting of a path printed in a
follow-up command, so pasting it back works whatever the path holds.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import shlex
from collections.abc import Callable, Iterator

# Where `+key=...` adds a key something reads: a new filter or task type (a node of its own), and
# the vLLM engine's arguments, passed straight through. Elsewhere an added key is ignored, or refused
# by the constructor of the node it lands in.
OPEN = ("filters", "filters.*", "tasks", "tasks.*", "teacher.*.engine_kwargs")
# Hydra's unquoted values: no space, quote, bracket, comma, `=`, `:`, `$` or character outside ASCII.
PLAIN = re.compile(r"[A-Za-z0-9_./\-+@%~]*")


def hydra_value(value: str) -> str:
    """`value` as Hydra reads it back: as is when plain, else double-quoted (`"runs/my run"`)."""
    if PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_override(key: str, value) -> str:
    """`key=value` to paste into a shell: Hydra's quotes inside the shell's (`'out="runs/my run"'`)."""
    return shlex.quote(f"{key}={hydra_value(str(value))}")


def malformed(args: list[str], error_of: Callable[[str], str | None]) -> str:
    """The one line for overrides Hydra cannot parse: the first bad one, alone, and its fix.
    `error_of(arg)` is the parser's complaint about one override, None when it parses."""
    for i, arg in enumerate(args):
        error = error_of(arg)
        if error is None:
            continue
        key, eq, value = arg.partition("=")
        if not eq and i > 0 and "=" in args[i - 1]:  # `out=runs/my run`: the shell made two words of it
            words = [args[i - 1]] + list(_until_override(args[i:]))
            head, _, first = words[0].partition("=")
            spaced = " ".join([first, *words[1:]])
            return (
                f"'{' '.join(words)}' reached arbitrage as {len(words)} words: a value with spaces needs quotes, for the "
                f"shell and for Hydra — write {shell_override(head, spaced)}"
            )
        if eq and not value.isascii() and not value.startswith(("'", '"')):
            return f"{arg!r}: Hydra reads characters outside ASCII only inside quotes — write {shell_override(key, value)}"
        return f"malformed override {arg!r}: {error} — overrides look like key=value or group=[a,b]"
    return f"malformed overrides {' '.join(args)!r} — overrides look like key=value or group=[a,b]"


def _until_override(args: list[str]) -> Iterator[str]:
    for arg in args:
        if "=" in arg:
            return
        yield arg


def leaves(config: dict, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a (plain) config, nested ones included."""
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path
        if isinstance(value, dict):
            yield from leaves(value, path)


def lives_at(key: str, config: dict) -> list[str]:
    """Where a key that is not at `key` lives: same last name elsewhere (`max_tokens` →
    `teacher.smollm2.sampling.max_tokens`), else a close spelling. Hydra's own keys are left out."""
    paths = [p for p in leaves(config) if not p.startswith("hydra.") and p != key]
    leaf = key.rsplit(".", 1)[-1]
    same = [p for p in paths if p.rsplit(".", 1)[-1] == leaf]
    if same:
        return sorted(same, key=lambda p: (not p.startswith(key.rsplit(".", 1)[0]), len(p)))[:3]
    return difflib.get_close_matches(key, paths, n=2, cutoff=0.8)


def accepts_extra(key: str) -> bool:
    """Whether `+key=...` adds something that is read (see OPEN)."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    return any(fnmatch.fnmatchcase(parent, pattern) for pattern in OPEN)


def unknown_key(key: str, config: dict | None) -> str:
    """The line for a key the config does not have."""
    found = lives_at(key, config) if config else []
    if found:
        return f"unknown config key '{key}' — did you mean {' or '.join(f'`{p}`' for p in found)}?"
    hint = f", or add it with +{key}=..." if accepts_extra(key) else ""
    return f"unknown config key '{key}' — check the spelling (`arbitrage --cfg job` prints every key){hint}"


def not_read(key: str, config: dict) -> str:
    """The line for a key added where nothing reads it (`+max_tokens=...` at the top level), or that
    a constructor refused (`+teacher.smollm2.max_tokens=...`)."""
    where = f"of {key.rsplit('.', 1)[0]}" if "." in key else "at the top level"
    found = lives_at(key, config)
    if found:
        return f"'{key}' is not a setting {where} — did you mean {' or '.join(f'`{p}`' for p in found)}?"
    return f"'{key}' is not a setting {where} — check the spelling (`arbitrage --cfg job` prints every key)"


def read_by_a_constructor(key: str, config: dict) -> bool:
    """Whether a node above `key` is built from its settings (it has a `_target_`): its constructor
    then judges an added key."""
    node = config
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return False
        if "_target_" in node:
            return True
    return False
