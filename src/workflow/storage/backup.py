"""``workflow backup PATH``: a consistent copy of a SQLite database, checked before it is kept.

SQLite's online backup API (``sqlite3.Connection.backup``) copies a live database page by page
while other connections go on reading and writing, and the copy is one consistent snapshot.
The copy is written beside PATH under a temporary name, opened and checked with
``PRAGMA integrity_check`` and (through ``check``, the engine's verify on the copy) the whole
audit trail, and only then linked to PATH, which must not exist: a backup never overwrites.
PostgreSQL is backed up with ``pg_dump`` (docs/deployment.md).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from workflow.errors import DatabaseUnavailable, FileRefused, UsageError


@dataclass(frozen=True)
class BackupResult:
    path: str
    bytes: int
    integrity: str
    verify: Any  # what ``check`` returned (the engine's VerifyResult), or None
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        verify = self.verify.to_dict() if hasattr(self.verify, "to_dict") else self.verify
        return {"path": self.path, "bytes": self.bytes, "integrity": self.integrity,
                "verify": verify, "ok": self.ok}


def backup(url: str, target: str | Path, *, check: Callable[[str], Any] | None = None,
           ) -> BackupResult:
    """Copy the SQLite database at ``url`` to ``target`` (which must not exist), then check the
    copy: ``PRAGMA integrity_check``, and ``check(copy_url)`` (its result's ``ok`` counts)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise UsageError(
            f"workflow backup copies SQLite databases; back up {parsed.get_backend_name()} "
            "with its own tools (pg_dump, see docs/deployment.md)")
    source = parsed.database
    if not source or source == ":memory:" or source.startswith("file:"):
        raise UsageError("workflow backup needs a SQLite database file")
    if not Path(source).is_file():
        raise DatabaseUnavailable(url, f"no database file {source}")
    dest = Path(target)
    if dest.exists() or dest.is_symlink():
        raise FileRefused(str(dest), "already exists; a backup never overwrites a file")
    if not dest.parent.is_dir():
        raise FileRefused(str(dest), "its directory does not exist")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        src = sqlite3.connect(source, timeout=30)
        try:
            out = sqlite3.connect(partial)
            try:
                src.backup(out)
            finally:
                out.close()
        finally:
            src.close()
        check_conn = sqlite3.connect(f"file:{partial}?mode=ro", uri=True)
        try:
            rows = check_conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            check_conn.close()
        integrity = "; ".join(str(r[0]) for r in rows)
        verified = check(f"sqlite:///{partial}") if check is not None else None
        ok = integrity == "ok" and bool(getattr(verified, "ok", True))
        # A hard link never replaces an existing file (unlike rename): PATH appearing
        # meanwhile makes this fail rather than be overwritten.
        os.link(partial, dest)
    except sqlite3.Error as e:
        raise DatabaseUnavailable(url, f"backup failed: {e}") from None
    except FileExistsError:
        raise FileRefused(str(dest), "already exists; a backup never overwrites a file"
                          ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return BackupResult(str(dest), dest.stat().st_size, integrity, verified, ok)
