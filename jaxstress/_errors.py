"""Errors raised for bad input. The CLI turns these into one line on stderr and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A scenario, portfolio or data file is malformed or inconsistent.

    The message names the file, the key and what is expected, so it can be shown to a user as it is.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = []
        if file:
            where.append(str(file))
        if key:
            where.append(f"key '{key}'")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        super().__init__(prefix + message)


class DataError(ConfigError):
    """A data file (CSV) is missing, malformed or too short for the requested window."""


class SimulationError(ConfigError):
    """A run produced non-finite values; the message names the variable and the interval where they appeared."""


def did_you_mean(name: str, choices: Iterable[str], form: str = " (did you mean '{}'?)") -> str:
    """`form` with the choice closest to `name` (difflib's), or "" where none is close: the hint of an unknown
    name's error."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return form.format(close[0]) if close else ""
