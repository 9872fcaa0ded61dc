"""A recorded file as an HTTP response, for the API and the pages alike.

The bytes go out with the media type the engine sniffed when the file was recorded (never one
taken from the name), ``X-Content-Type-Options: nosniff`` so that no browser second-guesses
it, ``ETag`` the file's sha256, and a ``Content-Disposition`` naming the file as recorded
(RFC 6266: an ASCII fallback and the UTF-8 name, which is often Thai). Only a raster image
(:data:`INLINE_TYPES`: types a browser draws and never runs) may be shown ``inline``, and
only where the caller asks for it; everything else is ``attachment``. A sandboxing
Content-Security-Policy goes with every file as well, should a browser open one anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response

#: Media types a browser shows but never executes; the pages may show them inline.
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: What a file response allows a browser to do with it: nothing but show it.
FILE_CSP = "default-src 'none'; img-src 'self'; sandbox"
_UNSAFE_ASCII = re.compile(r'[^A-Za-z0-9._ ()+-]')


def disposition(name: str, *, inline: bool = False) -> str:
    """``attachment`` (or ``inline``) with the file's name: an ASCII fallback for old clients
    and ``filename*=UTF-8''...`` for the real one (RFC 5987)."""
    fallback = _UNSAFE_ASCII.sub("_", name).strip() or "file"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback[:150]}\"; filename*=UTF-8''{quote(name, safe='')}"


def etag(value: Mapping[str, Any]) -> str:
    return f'"{value["sha256"]}"'


def file_response(request: Request, value: Mapping[str, Any], data: bytes, *,
                  inline: bool = False) -> Response:
    """``data`` (the file recorded as ``value``) as a response; a ``304`` when the request's
    ``If-None-Match`` names its ETag. ``inline`` only takes effect for :data:`INLINE_TYPES`."""
    media_type = str(value["media_type"])
    tag = etag(value)
    headers = {
        "ETag": tag,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": FILE_CSP,
        # The same address may later serve a corrected file: revalidate, by the ETag.
        "Cache-Control": "private, no-cache",
    }
    given = request.headers.get("if-none-match", "")
    if tag in (t.strip() for t in given.split(",")):
        return Response(status_code=304, headers=headers)
    headers["Content-Disposition"] = disposition(
        str(value["name"]), inline=inline and media_type in INLINE_TYPES)
    return Response(data, media_type=media_type, headers=headers)
