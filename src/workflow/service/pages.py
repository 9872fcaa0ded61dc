"""The pages under ``/`` that this issue needs: log in, log out, and a placeholder home page.

``POST /login`` (form fields ``name``, ``password``, ``csrf_token``) asks the accounts library
for a NEW session (a session cookie sent before login is never kept: no fixation) and sets it
``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the request came over TLS. The login form is
protected against login CSRF by a double-submit token (cookie and hidden field). Every other
state-changing form needs the session's CSRF token. The real pages are the next issue's.
"""

from __future__ import annotations

import contextlib
import html
import secrets
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from workflow.errors import WorkflowError
from workflow.service.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    CsrfRefused,
    accounts,
    csrf_matches,
    page_principal,
    secure,
)

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · workflow</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/site.css"></head>
<body><main>{body}</main></body></html>
"""


def page(title: str, body: str, status: int = 200,
         headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status,
                        headers=headers)


def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def _login_form(token: str, message: str | None = None) -> str:
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return f"""<h1>Log in</h1>{note}
<form method="post" action="/login">
<input type="hidden" name="{CSRF_FIELD}" value="{html.escape(token)}">
<label>Name <input name="name" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
 required></label>
<button type="submit">Log in</button></form>"""


def _login_page(request: Request, message: str | None = None, status: int = 200,
                headers: dict[str, str] | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = page("Log in", _login_form(token, message), status, headers)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure(request), path="/login")
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
def login(
    request: Request,
    name: str = Form("", max_length=200),
    password: str = Form("", max_length=1024),
    csrf_token: str = Form("", max_length=200),
) -> Response:
    if not csrf_matches(csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE)):
        return _login_page(request, "The form expired; please log in again.", 403)
    address = request.client.host if request.client else "unknown"
    try:
        session = accounts(request).login(name, password, address=address)
    except WorkflowError as e:
        status = 429 if type(e).__name__ == "Throttled" else 401
        headers = {}
        retry = getattr(e, "retry_after", None)
        if status == 429 and isinstance(retry, int | float):
            headers["Retry-After"] = str(max(1, int(retry + 0.999)))
        message = ("Too many failed attempts; try again later." if status == 429
                   else "Wrong name or password.")
        if type(e).__name__ not in ("Throttled", "NotAuthenticated"):
            message = str(e)
            status = 400 if e.exit_code == 2 else 503 if e.exit_code == 6 else status
        return _login_page(request, message, status, headers)
    old = request.cookies.get(SESSION_COOKIE)
    if old:  # a cookie sent before login is ended, never kept
        with contextlib.suppress(WorkflowError):
            accounts(request).logout(old)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, session.secret, httponly=True, samesite="lax",
                        secure=secure(request), path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def _logout_form(principal: Any) -> str:
    return (f'<form method="post" action="/logout"><input type="hidden" name="{CSRF_FIELD}" '
            f'value="{html.escape(principal.session_csrf or "")}">'
            '<button type="submit">Log out</button></form>')


@router.get("/logout")
def logout_confirm(request: Request) -> Response:
    """A GET never changes anything: it shows the button that posts the logout."""
    principal = page_principal(request)
    if principal is None:
        return to_login()
    return page("Log out", "<h1>Log out?</h1>" + _logout_form(principal))


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("", max_length=200)) -> Response:
    principal = page_principal(request)
    if principal is None:
        return to_login()
    if not csrf_matches(csrf_token, principal.session_csrf):
        raise CsrfRefused(principal.account.name)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        accounts(request).logout(cookie)
    response = to_login()
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=secure(request))
    return response


@router.get("/")
def home(request: Request) -> Response:
    principal = page_principal(request)
    if principal is None:
        return to_login()
    account = principal.account
    who = html.escape(account.display_name or account.name)
    body = (f"<h1>workflow</h1><p>Logged in as <strong>{who}</strong> "
            f"(<code>{html.escape(account.name)}</code>"
            f"{', admin' if account.admin else ''}).</p>"
            '<p>The web pages come in the next release; the JSON API is at '
            '<a href="/api/v1/docs">/api/v1/docs</a>.</p>' + _logout_form(principal))
    return page("Home", body)


@router.get("/api/v1/docs")
def docs(request: Request) -> Response:
    """The API's documentation, drawn from /api/v1/openapi.json by a script served from
    /static (no CDN: it works with no internet)."""
    if page_principal(request) is None:
        return to_login()
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>workflow API</title>"
        '<link rel="stylesheet" href="/static/site.css">'
        '<script src="/static/apidocs.js" defer></script></head>'
        '<body><main id="docs" data-spec="/api/v1/openapi.json">'
        "<h1>workflow API</h1><p>Loading…</p></main></body></html>"
    )
