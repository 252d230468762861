"""Errors that reach the user as one line naming the fix."""


class ArbitrageError(Exception):
    """Base class: the CLI prints `error: <message>` and exits 2, with no traceback."""


class ConfigError(ArbitrageError):
    """The configuration or an input file is wrong; raised before any model loads."""


class TeacherUnusable(ArbitrageError):
    """A teacher fails every call the same way (a bad key, URL or model, a server that is down):
    the run stops, keeping what is done, with one line naming the likely fix."""
