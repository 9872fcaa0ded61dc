"""Who is calling: a bearer token or the session cookie, turned into a ``Principal``.

``Authorization: Bearer TOKEN`` is checked by ``Accounts.authenticate_token``; the session
cookie (set by ``POST /login``) by ``Accounts.session``. Both raise ``NotAuthenticated`` for
anything unknown, revoked, expired or disabled, checked on every request, so a disabled
account's next request is refused. A session-cookie request that changes something must carry
the session's CSRF token (``X-CSRF-Token`` header, or the ``csrf_token`` form field); a bearer
token needs none (a browser never sends one by itself).
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Request

from workflow.errors import NotAuthenticated, PermissionDenied, WorkflowError

SESSION_COOKIE = "workflow_session"
LOGIN_CSRF_COOKIE = "workflow_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def not_authenticated(reason: str) -> WorkflowError:
    return NotAuthenticated(reason)


class CsrfRefused(PermissionDenied):
    """A state-changing request on a session without its CSRF token (403)."""

    def __init__(self, actor: str) -> None:
        super().__init__(actor, "-", "change anything", "the request lacks its CSRF token")


def csrf_matches(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise not_authenticated("the Authorization header must be `Bearer TOKEN`")
    return value.strip()


def accounts(request: Request) -> Any:
    return request.app.state.accounts


def api_principal(request: Request) -> Any:
    """The caller of an API route, or NotAuthenticated (401)."""
    found = getattr(request.state, "principal", None)
    if found is not None:
        return found
    token = bearer(request)
    if token is not None:
        principal = accounts(request).authenticate_token(token)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise not_authenticated(
                "authentication required: `Authorization: Bearer TOKEN` or a session from "
                "POST /login")
        principal = accounts(request).session(cookie)
        if request.method not in SAFE_METHODS and not csrf_matches(
            request.headers.get(CSRF_HEADER), principal.session_csrf
        ):
            raise CsrfRefused(principal.account.name)
    request.state.principal = principal
    request.state.account = principal.account.name  # for the access log (a name, no secret)
    return principal


def page_principal(request: Request) -> Any | None:
    """The caller of a page (by its session cookie), or None (the page redirects to /login)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        principal = accounts(request).session(cookie)
    except WorkflowError:
        return None
    request.state.principal = principal
    request.state.account = principal.account.name
    return principal


def secure(request: Request) -> bool:
    """Whether the request came over TLS (behind a trusted proxy, uvicorn has already taken the
    scheme from X-Forwarded-Proto; from anyone else that header is ignored)."""
    return request.url.scheme == "https"
