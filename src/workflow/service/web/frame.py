"""What every page shares: the Jinja2 environment, the caller and their language, the frame's
context (navigation, CSRF token, language switch), and the error pages.

Pages are server-rendered and work without JavaScript. A page asks :func:`caller` first: no
valid session means a redirect to ``/login``. A state-changing form posts the session's CSRF
token (:func:`check_csrf`, 403 without it). An engine error on a page becomes an HTML page in
the reader's language with the HTTP status the API would give (``problems.status_of``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from workflow.access.policy import AUDITOR
from workflow.engine.facade import Engine
from workflow.errors import WorkflowError
from workflow.service import calls, problems
from workflow.service.auth import CSRF_FIELD, CsrfRefused, csrf_matches, page_principal
from workflow.service.web import i18n

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(("html", "svg")),
    trim_blocks=True,
    lstrip_blocks=True,
)


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def caller(request: Request) -> Any | None:
    """The session's principal, or None (the route redirects to /login)."""
    return page_principal(request)


def lang_for(request: Request, principal: Any | None) -> str:
    if principal is not None:
        return i18n.lang_of(getattr(principal.account, "language", None))
    return i18n.lang_of(request.query_params.get("lang") or request.cookies.get("workflow_lang"))


def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def check_csrf(principal: Any, token: str | None) -> None:
    if not csrf_matches(token, principal.session_csrf):
        raise CsrfRefused(principal.account.name)


def roles_of(engine: Engine, principal: Any) -> set[str]:
    return {g.role for g in calls.grants_of(engine, principal)}


def context(request: Request, principal: Any | None, **values: Any) -> dict[str, Any]:
    """The frame's context plus the page's ``values``."""
    lang = lang_for(request, principal)
    texts = i18n.catalogue(lang)

    def t(key: str, **kw: object) -> str:
        text = texts[key]
        return text.format(**kw) if kw else text

    out: dict[str, Any] = {
        "lang": lang,
        "t": t,
        "be_date": lambda v: i18n.be_date(v, lang),
        "be_datetime": lambda v: i18n.be_datetime(v, lang),
        "be_due": lambda v: i18n.be_due(v, lang),
        "principal": principal,
        "csrf_field": CSRF_FIELD,
        "csrf": getattr(principal, "session_csrf", "") if principal else "",
        "path": request.url.path,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "is_admin": bool(principal and principal.account.admin),
        "is_auditor": False,
        "qs": lambda **kw: urlencode({k: v for k, v in kw.items() if v not in (None, "")}),
    }
    if principal is not None:
        roles = roles_of(engine_of(request), principal)
        out["is_auditor"] = out["is_admin"] or AUDITOR in roles
        out["can_work"] = bool(roles - {AUDITOR})
    out.update(values)
    return out


def render(name: str, ctx: Mapping[str, Any], status: int = 200,
           headers: Mapping[str, str] | None = None) -> HTMLResponse:
    html = env.get_template(name).render(**ctx)
    response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, principal: Any | None, error: WorkflowError) -> Response:
    """An engine error as a page: the API's status, the message by the error's class."""
    status = problems.status_of(error)
    if status == 401:
        return to_login()
    code = type(error).__name__
    if f"code.{code}" not in i18n.TEXTS:
        code = problems.public_code(error)
    lang = lang_for(request, principal)
    message = i18n.error_text(lang, code, str(error),
                              existing=getattr(error, "existing", "?"))
    title = {403: "page.forbidden", 404: "page.not_found"}.get(status, "page.error")
    ctx = context(request, principal, title=i18n.tr(lang, title), message=message,
                  detail=str(error), code=code)
    return render("error.html", ctx, status)


def year_now() -> int:
    return i18n.current_fiscal_year(dt.date.today())

