"""``/admin``: accounts (add, disable or enable, reset password), API tokens (create, shown
once; revoke), grants (grant, optionally until a BE date, each shown with its end and marked
once expired; revoke; the area typeahead), and notifications (the hooks, never
their secrets; dead deliveries, each with a retry button), for admin accounts only.

Every form posts the session's CSRF token to ``/admin/<action>`` and goes through the same
library calls as ``workflow users``/``tokens``/``actors`` (``calls``: a non-admin is refused
with a recorded denial and a 403 page). After a change the page is shown again with "done".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from workflow.accounts import PASSWORD_MIN
from workflow.errors import UsageError, WorkflowError
from workflow.service import calls
from workflow.service.auth import CSRF_FIELD, accounts
from workflow.service.web import forms, i18n
from workflow.service.web.forms import whole_number
from workflow.service.web.frame import (
    caller,
    check_csrf,
    context,
    engine_of,
    error_page,
    lang_for,
    render,
    to_login,
)

router = APIRouter(include_in_schema=False)

ROLES = ("coordinator", "provincial_officer", "inspector", "auditor")
#: Dead deliveries shown (oldest first); `workflow outbox list --dead` has them all.
DEAD_SHOWN = 100


def _page(request: Request, principal: Any, *, done: str | None = None,
          message: str | None = None, secret: str | None = None, status: int = 200) -> Response:
    engine = engine_of(request)
    acc = accounts(request)
    lang = lang_for(request, principal)
    try:
        people = calls.accounts_list(engine, acc, principal)
        tokens = calls.tokens_list(engine, acc, principal)
        grants = calls.grants(engine, principal, None)
        hooks = calls.hooks(engine, principal)
        dead, more_dead = calls.outbox(engine, principal, dead=True, limit=DEAD_SHOWN,
                                       after=None)
    except WorkflowError as e:
        return error_page(request, principal, e)
    roles = sorted({r for p in calls.programs(engine) for r in p.roles} | set(ROLES))
    ctx = context(request, principal, title=i18n.tr(lang, "admin.title"), people=people,
                  tokens=[t for t in tokens if not t.revoked_at], grants=grants, roles=roles,
                  programs=calls.programs(engine), done=done, message=message, secret=secret,
                  hooks=hooks, dead=dead, more_dead=more_dead,
                  password_min=PASSWORD_MIN, area_options=[], months=i18n.months(lang))
    return render("admin.html", ctx, status)


@router.get("/admin")
def admin(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    return _page(request, principal)


@router.post("/admin/{action}")
async def change(request: Request, action: str) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    data = await request.form()
    engine = engine_of(request)
    acc = accounts(request)
    lang = lang_for(request, principal)

    def field(name: str) -> str:
        return str(data.get(name, "")).strip()

    secret = None
    try:
        check_csrf(principal, str(data.get(CSRF_FIELD, "")))
        calls.require_admin(engine, principal, f"admin {action}")
    except WorkflowError as e:
        return error_page(request, principal, e)
    try:
        if action == "add":
            calls.account_add(engine, acc, principal, field("name"),
                              str(data.get("password", "")), admin=field("admin") == "on",
                              display_name=field("display_name") or None)
        elif action in ("disable", "enable"):
            calls.account_disable(engine, acc, principal, field("name"), action == "disable")
        elif action == "password":
            calls.account_password(engine, acc, principal, field("name"),
                                   str(data.get("password", "")))
        elif action == "token":
            made = calls.token_create(engine, acc, principal, field("name"),
                                      field("label") or None, field("expires") or None)
            secret = made.secret
        elif action == "revoke-token":
            calls.token_revoke(engine, acc, principal, _number(field("id")))
        elif action == "retry-delivery":
            calls.outbox_retry(engine, principal, _number(field("id")))
        elif action == "grant":
            try:
                until = forms.date_value(data, "until")
            except ValueError:
                raise UsageError(i18n.tr(lang, "form.date_incomplete")) from None
            calls.grant(engine, principal, field("actor"), field("role"), field("area") or None,
                        field("program") or None, until)
        elif action == "revoke":
            calls.revoke(engine, principal, field("actor"), field("role"),
                         field("area") or None, field("program") or None)
        else:
            return error_page(request, principal, WorkflowError(f"unknown action {action}"))
    except WorkflowError as e:
        return _page(request, principal, status=422,
                     message=i18n.error_text(lang, type(e).__name__, str(e)))
    return _page(request, principal, done=i18n.tr(lang, "admin.done"), secret=secret)


def _number(text: str) -> int:
    """An id from a form (a UsageError, not a crash, for anything else)."""
    number = whole_number(text) if text.isascii() else None
    if number is None:
        raise UsageError(f"not an id: {text!r}")
    return number
