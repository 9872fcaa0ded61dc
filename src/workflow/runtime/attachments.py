"""Files as evidence (type ``file``): what a caller hands over, what the trail records.

A caller gives a file as an :class:`Upload` (its name as given and its bytes). The evidence
value recorded in the event, and so covered by its hash, is the file's description:
``{"sha256", "name", "media_type", "bytes"}``; the bytes themselves are stored once,
content-addressed (``workflow.storage.attachments``), and verify re-hashes them.

The media type is sniffed from the content, never taken from the file name, and the field's
``max_bytes`` and ``media_types`` are enforced here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workflow.runtime.text import free_text

#: A file field without ``max_bytes`` takes at most this much (10 MiB).
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: No file field may declare more (the command line reads the whole file into memory).
MAX_BYTES = 64 * 1024 * 1024
FILE_KEYS = frozenset({"sha256", "name", "media_type", "bytes"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
NAME_MAX = 255

#: (magic prefix, offset, media type), checked in order.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF-", 0, "application/pdf"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"ftypheic", 4, "image/heic"),
    (b"ftypheix", 4, "image/heic"),
    (b"ftypmif1", 4, "image/heif"),
    (b"ftypisom", 4, "video/mp4"),
    (b"ftypmp42", 4, "video/mp4"),
    (b"PK\x03\x04", 0, "application/zip"),
)


@dataclass(frozen=True)
class Upload:
    """A file given as evidence: its name (as the caller gave it) and its content."""

    name: str
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def __str__(self) -> str:  # what an idempotency fingerprint sees
        return f"upload:{self.name}:{self.sha256}"


def sniff(data: bytes) -> str:
    """The media type of ``data``, from its content."""
    for magic, offset, media_type in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if media_type == "application/zip":
                return _office(data)
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:4096]
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(head) - 4:  # not just a character cut at the end
                return "application/octet-stream"
        return "text/plain"
    return "application/octet-stream"


def _office(data: bytes) -> str:
    """A ZIP that is an Office Open XML document says so in its first entries' names."""
    head = data[:8192]
    for marker, media_type in (
        (b"word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        (b"xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        (b"ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    ):
        if marker in head:
            return media_type
    return "application/zip"


def describe(upload: Upload, max_bytes: int | None, media_types: tuple[str, ...]) -> dict[str, Any]:
    """The evidence value of ``upload``; ``ValueError`` says why the field refuses it."""
    size = len(upload.data)
    limit = max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES
    if size == 0:
        raise ValueError("is an empty file")
    if size > limit:
        raise ValueError(f"is {size} bytes; at most {limit} allowed")
    media_type = sniff(upload.data)
    if media_types and not any(_matches(media_type, m) for m in media_types):
        raise ValueError(
            f"is {media_type} (by its content); allowed: {', '.join(media_types)}"
        )
    name = free_text(upload.name.replace("\\", "/").rsplit("/", 1)[-1], "file name", NAME_MAX)
    return {"sha256": upload.sha256, "name": name or "file", "media_type": media_type,
            "bytes": size}


def _matches(media_type: str, pattern: str) -> bool:
    if pattern.endswith("/*"):
        return media_type.startswith(pattern[:-1])
    return media_type == pattern


def is_described(value: object) -> bool:
    """Whether ``value`` is a file's evidence value as recorded (``describe``'s shape)."""
    return (
        isinstance(value, Mapping)
        and set(value) == FILE_KEYS
        and isinstance(value["sha256"], str)
        and _HEX64.fullmatch(value["sha256"]) is not None
        and isinstance(value["name"], str)
        and isinstance(value["media_type"], str)
        and type(value["bytes"]) is int
    )


def references(evidence: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The (field, file value) pairs of an event's evidence."""
    return [(k, v) for k, v in evidence.items() if is_described(v)]
