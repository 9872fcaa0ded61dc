"""Errors as RFC 9457 ``application/problem+json``: one table from error class to HTTP status.

The body carries ``type``, ``title``, ``status``, ``detail`` (the error's one line) and the
contract's ``code`` (the nearest public error class name) and ``exit_code`` (CONTRACT §4), so a
client reacts to the same names the command line prints. Classes are matched by NAME along the
error's MRO, so errors added by the accounts library (``NotAuthenticated``, ``Throttled``) map
without this module importing them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from workflow.errors import WorkflowError

MEDIA_TYPE = "application/problem+json"

log = logging.getLogger("workflow.service")

#: Error class name -> HTTP status; the first name found along the error's MRO decides.
STATUS: dict[str, int] = {
    "NotAuthenticated": 401,
    "Throttled": 429,
    "PermissionDenied": 403,
    "RoleNotAllowed": 403,  # UnknownRole too (a subclass)
    "UsageError": 400,  # TextRefused, FileRefused
    "NotFound": 404,
    "Refused": 422,  # TriggerNotAllowed, EvidenceInvalid, GuardFailed
    "VersionConflict": 409,  # 412 when the caller sent If-Match (see status_of)
    "Conflict": 409,
    "StorageError": 503,
    "DefinitionError": 422,
}

#: The classes a client may see as ``code`` (the public names of workflow.errors).
TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_of(error: WorkflowError, *, if_match: bool = False) -> int:
    names = [c.__name__ for c in type(error).__mro__]
    if if_match and "VersionConflict" in names:
        return 412
    for name in names:
        if name in STATUS:
            return STATUS[name]
    return 500


def public_code(error: WorkflowError) -> str:
    """The nearest public class of ``workflow.errors`` along the MRO (the service's own
    refinements, such as a missing CSRF token, show as their public parent)."""
    for cls in type(error).__mro__:
        if cls.__module__ == "workflow.errors" and not cls.__name__.startswith("_"):
            return cls.__name__
    return "WorkflowError"


def problem(
    status: int,
    code: str,
    detail: str,
    exit_code: int,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/api/v1/problems/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "exit_code": exit_code,
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}),
                        media_type=MEDIA_TYPE)


def from_error(error: WorkflowError, request: Request | None = None) -> JSONResponse:
    if_match = request is not None and bool(getattr(request.state, "if_match", False))
    status = status_of(error, if_match=if_match)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="workflow"'
    retry_after = getattr(error, "retry_after", None)
    if status == 429 and isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    problems = getattr(error, "problems", None)
    if isinstance(problems, tuple) and problems and all(
        isinstance(p, tuple) and len(p) == 2 for p in problems
    ):  # EvidenceInvalid: every (field, reason), for a form to mark them all
        extra["problems"] = [{"field": f, "reason": r} for f, r in problems]
    unrecorded = getattr(error, "denial_unrecorded", None)
    if unrecorded:
        extra["denial_unrecorded"] = str(unrecorded)
    detail = " ".join(str(error).split("\n"))
    return problem(status, public_code(error), detail, error.exit_code, headers=headers,
                   extra=extra)


async def workflow_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, WorkflowError)
    return from_error(error, request)


async def validation_error_handler(request: Request, error: Exception) -> JSONResponse:
    """A request the service cannot read (a missing field, an unknown one, a wrong type): 400,
    ``UsageError``, exit code 2, as the command line's usage errors."""
    assert isinstance(error, RequestValidationError)
    parts = []
    for e in error.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg")))
    return problem(400, "UsageError", "; ".join(parts) or "invalid request", 2)


_HTTP_CODES = {401: "NotAuthenticated", 403: "PermissionDenied", 404: "NotFound",
               405: "MethodNotAllowed", 400: "UsageError"}


async def http_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_CODES.get(error.status_code, "HTTPError")
    exit_code = {401: 4, 403: 4, 404: 3, 400: 2}.get(error.status_code, 2)
    detail = error.detail if isinstance(error.detail, str) else TITLES.get(error.status_code, "")
    if error.status_code == 404 and detail == "Not Found":
        detail = f"no such path: {request.url.path}"
    return problem(error.status_code, code, detail, exit_code,
                   headers=dict(error.headers or {}))


async def internal_error_handler(request: Request, error: Exception) -> JSONResponse:
    """Anything else: 500 without details (they may hold data); the traceback goes to the log
    with the method and path only."""
    log.error("internal error on %s %s", request.method, request.url.path,
              exc_info=(type(error), error, error.__traceback__))
    return problem(500, "InternalError", "internal error (see the server log)", 70)
