"""Reading a file someone named, without trusting what it turns out to be.

A path on the command line or in a definitions directory can be a FIFO (reading it waits for a
writer that never comes, and every command hangs), a device (``/dev/zero`` never ends), a
directory, a symlink loop, or a regular file of gigabytes. :func:`read_regular_file` opens the
path without blocking, checks what it opened (not what the name said a moment earlier), refuses
anything but a regular file, and never reads more than a limit; :class:`FileRefused` names the
real problem in one line ("a FIFO", "a symbolic link loop", "3221225472 bytes; at most ..."),
never a bare "no such file".
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from workflow.errors import FileRefused

__all__ = ["MAX_DEFINITION_BYTES", "FileRefused", "read_regular_file"]

#: What a program definition may weigh; the bundled ones are a few kilobytes.
MAX_DEFINITION_BYTES = 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _open_problem(path: str, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symbolic link loop (too many levels of symbolic links)"
    if e.errno == errno.ENOENT and os.path.islink(path):
        return f"a broken symbolic link (its target {os.readlink(path)!r} does not exist)"
    if e.errno == errno.ENOENT:
        return "no such file"
    if e.errno == errno.EACCES:
        return "permission denied"
    return f"cannot open: {e.strerror or e}"


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (after symlinks) of at most ``limit`` bytes.

    Raises:
        FileRefused: missing, a broken link or a link loop, unreadable, not a regular file
            (directory, FIFO, device, socket), or larger than ``limit``.
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(name, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileRefused(name, _open_problem(name, e)) from None
    try:
        info = os.fstat(fd)
        for test, kind in _KINDS:
            if test(info.st_mode):
                raise FileRefused(name, f"is {kind}, not a regular file")
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(name, "is not a regular file")
        if info.st_size > limit:
            raise FileRefused(name, f"is {info.st_size} bytes; at most {limit} allowed")
        chunks: list[bytes] = []
        size = 0
        # The file may grow while it is read: stop one byte past the limit.
        while size <= limit:
            try:
                chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            except OSError as e:
                raise FileRefused(name, f"cannot read: {e.strerror or e}") from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(name, f"grew past {limit} bytes while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)
