"""Driver errors become WorkflowErrors here, and nowhere else: one table, ``_FAULTS``.

A driver error is looked up by its PostgreSQL SQLSTATE or SQLite result-code name (SQLite's
"database is locked" also by its message); the entry's ``kind`` says what ``Store.run`` may do
with it ("retry": the transaction never committed, run it again; "collision": a unique key a
concurrent writer took first, run again once) and :func:`translate` turns it into the
:class:`~workflow.errors.WorkflowError` the caller sees: a :class:`Conflict` for a collision, a
:class:`SchemaOutOfDate` for missing tables before the schema was checked, else a
:class:`DatabaseUnavailable` with one line saying what happened. An error the table does not
know keeps the driver's first line. Every line shown is scrubbed of the URL's secrets: a
driver's message may quote the connection string, and so may a hint (:func:`safe_url`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from workflow.errors import Conflict, DatabaseUnavailable, SchemaOutOfDate, WorkflowError
from workflow.storage.schema import SCHEMA_REVISION
from workflow.storage.timeouts import LOCK_TIMEOUT_ENV, STATEMENT_TIMEOUT_ENV, Timeouts


class _Fault(NamedTuple):
    """What a driver error means: ``kind`` decides what ``run`` does with it."""

    kind: str  # "retry" (never committed, run again), "lock", "statement", "collision", "down"
    reason: str


#: Driver errors by PostgreSQL SQLSTATE or SQLite result-code name: the one table from which
#: every foreign error is translated (anything else keeps the driver's first line).
_FAULTS: dict[str, _Fault] = {
    "40001": _Fault("retry", "a concurrent transaction conflicted with this one"),
    "40P01": _Fault("retry", "deadlock with another session"),
    "55P03": _Fault("lock", "gave up after waiting {timeout:g} s for {what}"),
    "57014": _Fault(
        "statement",
        "a statement was cancelled after {statement} (statement timeout, "
        f"--statement-timeout / {STATEMENT_TIMEOUT_ENV}) or by an administrator",
    ),
    "23505": _Fault("collision", "a concurrent change collided with this one; try again"),
    "25006": _Fault(
        "down", "the database is read-only (a standby, or default_transaction_read_only)"
    ),
    "42501": _Fault(
        "down", "the database role lacks a privilege on workflow's tables (grant it, or "
        "connect as their owner)"
    ),
    "53100": _Fault("down", "the database server's disk is full"),
    "53300": _Fault("down", "the database server has no connection slots left"),
    "57P01": _Fault("down", "the database server is shutting down (administrator command)"),
    "57P02": _Fault("down", "the database server is in crash recovery"),
    "57P03": _Fault("down", "the database server is starting up or shutting down"),
    "SQLITE_BUSY": _Fault("retry", "database is locked by another writer"),
    "SQLITE_LOCKED": _Fault("retry", "database is locked by another writer"),
    "SQLITE_CONSTRAINT_UNIQUE": _Fault(
        "collision", "a concurrent change collided with this one; try again"
    ),
    "SQLITE_CONSTRAINT_PRIMARYKEY": _Fault(
        "collision", "a concurrent change collided with this one; try again"
    ),
}
_LOCKED = ("database is locked", "database table is locked", "database schema is locked")


def _fault(e: BaseException | None) -> _Fault | None:
    """The table's entry for a driver error (SQLAlchemy's wrapper or the driver's own)."""
    if e is None:
        return None
    orig = getattr(e, "orig", None) or e
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    found = _FAULTS.get(code) if isinstance(code, str) else None
    if found is None and any(s in str(orig) for s in _LOCKED):
        found = _FAULTS["SQLITE_BUSY"]
    return found


def is_locked(e: BaseException) -> bool:
    """Whether ``e`` (a driver error) is SQLite's "database is locked"."""
    fault = _fault(e)
    return fault is not None and fault.reason.startswith("database is locked")


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


# Query parameters that carry a secret (libpq's `password`, `sslpassword`, ...).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token", re.I)
_USERINFO = re.compile(r"(://[^/?#@:]*:)[^/?#@]*@")
_QUERY_SECRET = re.compile(r"([?&;][^=&;#]*(?:pass|pwd|secret|token)[^=&;#]*=)[^&;#]*", re.I)
HIDDEN = "***"


def safe_url(url: str) -> str:
    """``url`` as it may be shown: the password of ``user:pw@`` and of any ``?password=``
    (or other secret) query parameter replaced by ``***``. The one function every message,
    hint and log uses to show a database URL; a URL SQLAlchemy cannot parse is masked by
    pattern instead."""
    try:
        parsed = make_url(url)
    except Exception:
        return _QUERY_SECRET.sub(rf"\g<1>{HIDDEN}", _USERINFO.sub(rf"\g<1>{HIDDEN}@", url))
    query = {k: (HIDDEN if _SECRET_PARAM.search(k) else v) for k, v in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return _QUERY_SECRET.sub(rf"\g<1>{HIDDEN}", _USERINFO.sub(rf"\g<1>{HIDDEN}@", shown))


def url_secrets(url: str) -> tuple[str, ...]:
    """The secrets written in ``url`` (its password, secret query values), so that text which
    may quote them (a driver's message, a traceback) can be scrubbed with :func:`scrub`."""
    found = [m.group(0).rsplit("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
    m = _USERINFO.search(url)
    if m is not None:
        found.append(url[m.end(1) : m.end() - 1])
    try:
        parsed = make_url(url)
    except Exception:
        pass
    else:
        if parsed.password:
            found.append(str(parsed.password))
        for k, v in parsed.query.items():
            if _SECRET_PARAM.search(k):
                found.extend([v] if isinstance(v, str) else v)
    # Longest first, so a secret containing another is replaced whole.
    return tuple(sorted({s for s in found if s and s != HIDDEN}, key=len, reverse=True))


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret in ``secrets`` (and its URL-quoted form) replaced by ``***``."""
    from urllib.parse import quote, unquote

    for secret in secrets:
        for form in {secret, unquote(secret), quote(secret, safe="")}:
            if form:
                text = text.replace(form, HIDDEN)
    return text


def driver_errors(dbapi: Any) -> tuple[type[BaseException], ...]:
    """What counts as a driver error for a Store on the driver module ``dbapi``: SQLAlchemy's
    errors, OS errors, and the driver's own (raised on the hot path's raw cursors)."""
    return (sa_exc.DBAPIError, sa_exc.SQLAlchemyError, OSError, dbapi.Error)


def is_retryable(e: BaseException | None) -> bool:
    """Whether ``e`` (a driver error) ended a transaction that never committed and may run
    again: "database is locked", a serialization failure, a deadlock."""
    fault = _fault(e)
    return fault is not None and fault.kind == "retry"


def is_collision(e: BaseException | None) -> bool:
    """Whether ``e`` (a driver error) is a unique key a concurrent writer committed first."""
    fault = _fault(e)
    return fault is not None and fault.kind == "collision"


def translate(
    e: BaseException,
    *,
    url: str,
    secrets: Sequence[str],
    timeouts: Timeouts,
    schema_checked: bool,
    waiting_for: str | None = None,
) -> WorkflowError:
    """The WorkflowError for a driver error, from ``_FAULTS``.

    ``url`` is the URL as it may be shown, ``secrets`` what to scrub from the driver's text,
    ``schema_checked`` whether the Store has seen the schema at its revision (then a missing
    table means damage, not an old schema), ``waiting_for`` what the failed statement was
    waiting for, when it said."""
    if isinstance(e, WorkflowError):
        return e
    # A driver's message may quote the connection string; never its password.
    reason = scrub(_first_line(e), secrets)
    fault = _fault(e)
    timeout = timeouts.lock
    if fault is not None and fault.kind == "collision":
        return Conflict(fault.reason)
    if fault is not None and fault.reason.startswith("database is locked"):
        reason = (
            f"{fault.reason}; gave up after waiting {timeout:g} s "
            f"(lock timeout, --lock-timeout / {LOCK_TIMEOUT_ENV})"
        )
    elif fault is not None and fault.kind == "lock":
        what = waiting_for or "a lock held by another session"
        reason = (
            fault.reason.format(timeout=timeout, what=what)
            + f" (lock timeout, --lock-timeout / {LOCK_TIMEOUT_ENV})"
        )
    elif fault is not None and fault.kind == "statement":
        limit = timeouts.statement
        reason = fault.reason.format(
            statement=f"{limit:g} s" if limit is not None else "the server's limit"
        )
    elif fault is not None:
        reason = fault.reason
    elif "no such table" in reason or ("does not exist" in reason and "relation" in reason):
        if not schema_checked:
            return SchemaOutOfDate(url, None, SCHEMA_REVISION)
        # The schema is at the current revision, yet a table is gone: `workflow init`
        # would not help (it sees a current schema); say what happened instead.
        return DatabaseUnavailable(
            url,
            f"{reason} although the schema is at revision {SCHEMA_REVISION}: the "
            "database was damaged; restore it from a backup",
        )
    return DatabaseUnavailable(url, reason)
