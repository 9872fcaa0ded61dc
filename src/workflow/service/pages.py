"""Logging in and out, the language switch, and the API's documentation page; the other pages
are ``workflow.service.web``'s.

``POST /login`` (form fields ``name``, ``password``, ``csrf_token``) asks the accounts library
for a NEW session (a session cookie sent before login is never kept: no fixation) and sets it
``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the request came over TLS. The login form is
protected against login CSRF by a double-submit token (cookie and hidden field). Every other
state-changing form needs the session's CSRF token.
"""

from __future__ import annotations

import contextlib
import secrets

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from workflow.errors import WorkflowError
from workflow.service import web
from workflow.service.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    CsrfRefused,
    accounts,
    csrf_matches,
    page_principal,
    secure,
)
from workflow.service.web import frame, i18n

router = APIRouter(include_in_schema=False)
router.include_router(web.router)


def _login_page(request: Request, message_key: str | None = None, status: int = 200,
                headers: dict[str, str] | None = None, name: str = "") -> Response:
    token = secrets.token_urlsafe(32)
    lang = frame.lang_for(request, None)
    ctx = frame.context(request, None, title=i18n.tr(lang, "login.title"), login_token=token,
                        message=i18n.tr(lang, message_key) if message_key else None, name=name)
    response = frame.render("login.html", ctx, status, headers)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure(request), path="/login")
    if request.query_params.get("lang") in i18n.LANGS:
        response.set_cookie("workflow_lang", request.query_params["lang"], samesite="lax",
                            secure=secure(request), path="/", max_age=365 * 86400)
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
        return _login_page(request, "login.expired", 403)
    address = request.client.host if request.client else "unknown"
    try:
        session = accounts(request).login(name, password, address=address)
    except WorkflowError as e:
        status = 429 if type(e).__name__ == "Throttled" else 401
        headers = {}
        retry = getattr(e, "retry_after", None)
        if status == 429 and isinstance(retry, int | float):
            headers["Retry-After"] = str(max(1, int(retry + 0.999)))
        key = "login.throttled" if status == 429 else "login.wrong"
        if type(e).__name__ not in ("Throttled", "NotAuthenticated"):
            status = 400 if e.exit_code == 2 else 503 if e.exit_code == 6 else status
        return _login_page(request, key, status, headers, name=name)
    old = request.cookies.get(SESSION_COOKIE)
    if old:  # a cookie sent before login is ended, never kept
        with contextlib.suppress(WorkflowError):
            accounts(request).logout(old)
    chosen = request.cookies.get("workflow_lang")
    if chosen in i18n.LANGS and chosen != session.account.language:
        with contextlib.suppress(WorkflowError):
            accounts(request).set_language(session.account.name, chosen)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, session.secret, httponly=True, samesite="lax",
                        secure=secure(request), path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.get("/logout")
def logout_confirm(request: Request) -> Response:
    """A GET never changes anything: it shows the button that posts the logout."""
    principal = page_principal(request)
    if principal is None:
        return frame.to_login()
    lang = frame.lang_for(request, principal)
    return frame.render("logout.html", frame.context(request, principal,
                                                     title=i18n.tr(lang, "logout.title")))


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("", max_length=200)) -> Response:
    principal = page_principal(request)
    if principal is None:
        return frame.to_login()
    if not csrf_matches(csrf_token, principal.session_csrf):
        return frame.error_page(request, principal, CsrfRefused(principal.account.name))
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        accounts(request).logout(cookie)
    response = frame.to_login()
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=secure(request))
    return response


@router.post("/language")
def language(
    request: Request,
    lang: str = Form("th", max_length=5),
    next: str = Form("/", max_length=2000),
    csrf_token: str = Form("", max_length=200),
) -> Response:
    """Switch the pages' language; remembered for the account (``Accounts.set_language``)."""
    principal = page_principal(request)
    if principal is None:
        return frame.to_login()
    if not csrf_matches(csrf_token, principal.session_csrf):
        return frame.error_page(request, principal, CsrfRefused(principal.account.name))
    accounts(request).set_language(principal.account.name, i18n.lang_of(lang))
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    return RedirectResponse(target, status_code=303)


@router.get("/api/v1/docs")
def docs(request: Request) -> Response:
    """The API's documentation, drawn from /api/v1/openapi.json by a script served from
    /static (no CDN: it works with no internet)."""
    if page_principal(request) is None:
        return frame.to_login()
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>workflow API</title>"
        '<link rel="stylesheet" href="/static/site.css">'
        '<script src="/static/apidocs.js" defer></script></head>'
        '<body><main id="docs" data-spec="/api/v1/openapi.json">'
        "<h1>workflow API</h1><p>Loading…</p></main></body></html>"
    )
