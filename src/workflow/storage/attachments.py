"""Attachments as stored: content-addressed by SHA-256, in the database or in a directory.

Every file is one row of ``workflow_attachments`` (its hash, sniffed media type and size); its
bytes are in that row's ``content`` when the Store keeps attachments in the database (the
default for PostgreSQL), or in ``<directory>/<aa>/<sha256>`` when it has an attachments
directory (the default for a SQLite file: ``<file>.attachments`` beside it). A file is written
once whatever the number of events naming it; a directory file is written (atomically) before
the transaction that names it commits, so a rolled-back fire may leave an unnamed file behind,
never a named file missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from workflow.storage.schema import AttachmentTable
from workflow.storage.store import Store

attachments_t: sa.Table = AttachmentTable.__table__  # type: ignore[assignment]


def default_directory(url: str) -> Path | None:
    """Where attachments go by default: beside a SQLite file; None (the database) else."""
    url_obj = sa.make_url(url)
    if url_obj.get_backend_name() != "sqlite" or url_obj.database in (None, "", ":memory:"):
        return None
    return Path(f"{url_obj.database}.attachments")


def _path(directory: Path, sha256: str) -> Path:
    return directory / sha256[:2] / sha256


def put(store: Store, conn: Any, sha256: str, media_type: str, data: bytes, at: str) -> None:
    """Store ``data`` under its hash (in the caller's transaction), once."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError("attachment content does not match its hash")
    exists = conn.execute(
        sa.select(attachments_t.c.sha256).where(attachments_t.c.sha256 == sha256)
    ).first()
    directory = store.attachments_dir
    if directory is not None:
        target = _path(directory, sha256)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    if exists is None:
        conn.execute(
            attachments_t.insert().values(
                sha256=sha256,
                media_type=media_type,
                size=len(data),
                content=None if directory is not None else data,
                stored_at=at,
            )
        )


def exists(conn: Any, sha256: str) -> bool:
    return (
        conn.execute(
            sa.select(attachments_t.c.sha256).where(attachments_t.c.sha256 == sha256)
        ).first()
        is not None
    )


def get(store: Store, conn: Any, sha256: str) -> bytes | None:
    """The stored bytes of ``sha256`` (None if there is no such file, in the database or
    the directory)."""
    row = conn.execute(
        sa.select(attachments_t.c.content).where(attachments_t.c.sha256 == sha256)
    ).first()
    if row is None:
        return None
    if row[0] is not None:
        return bytes(row[0])
    directory = store.attachments_dir
    if directory is None:
        return None
    try:
        return _path(directory, sha256).read_bytes()
    except OSError:
        return None


def problem(store: Store, conn: Any, sha256: str, size: int) -> str | None:
    """Why the stored file named by an event is not the one it recorded, or None."""
    data = get(store, conn, sha256)
    if data is None:
        return f"attachment {sha256[:12]}... is missing"
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        return f"attachment {sha256[:12]}... was changed (its content no longer matches its hash)"
    return None
