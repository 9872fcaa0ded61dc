"""How long the Store waits: for other sessions' locks, and (PostgreSQL) for any one statement.

Read once, here, from explicit values, else the environment, else the defaults; the dialect
modules turn them into session settings (``sqlite.py``, ``postgres.py``), the retry loop of
``Store.run`` into its deadline, and ``faults.py`` into the messages of a timed-out call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from workflow.errors import UsageError

#: How long a call may wait for another session's lock, unless configured (seconds).
DEFAULT_LOCK_TIMEOUT = 30.0
LOCK_TIMEOUT_ENV = "WORKFLOW_LOCK_TIMEOUT"
STATEMENT_TIMEOUT_ENV = "WORKFLOW_STATEMENT_TIMEOUT"
_MAX_TIMEOUT = 86_400.0


@dataclass(frozen=True)
class Timeouts:
    """How long the engine waits: ``lock`` for other sessions' locks (the whole call gives up
    after that long, retries included), ``statement`` for any one PostgreSQL statement
    (``None``: the server's own setting stays in force)."""

    lock: float = DEFAULT_LOCK_TIMEOUT
    statement: float | None = None

    @classmethod
    def make(
        cls, lock: float | str | None = None, statement: float | str | None = None
    ) -> Timeouts:
        """From explicit values, else the environment, else the defaults; checked here once."""
        if lock is None:
            lock = os.environ.get(LOCK_TIMEOUT_ENV) or None
        if statement is None:
            statement = os.environ.get(STATEMENT_TIMEOUT_ENV) or None
        return cls(
            lock=DEFAULT_LOCK_TIMEOUT if lock is None else _seconds(lock, "lock timeout"),
            statement=None if statement is None else _seconds(statement, "statement timeout"),
        )


def _seconds(value: float | str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} is a number of seconds, not {value!r}") from None
    if not 0 < number <= _MAX_TIMEOUT:  # also refuses NaN
        raise UsageError(f"{what} must be more than 0 and at most {_MAX_TIMEOUT:g} seconds")
    return number


def ms(seconds: float) -> int:
    """``seconds`` as the whole milliseconds a session setting takes (at least 1)."""
    return max(1, round(seconds * 1000))

