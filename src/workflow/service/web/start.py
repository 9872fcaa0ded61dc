"""``/start``: start a program for a tambon, or for every tambon of a district at once.

The form posts to the same library call as ``POST /api/v1/instances`` (``calls.start``);
the bulk form to ``calls.start_many`` (``Engine.start_many``: tambons already running the
program that fiscal year are skipped). An area the engine cannot resolve is shown with its
candidates, each a button that fills the form again with that code.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from workflow.access.policy import AUDITOR
from workflow.errors import AreaNotFound, DuplicateInstance, WorkflowError
from workflow.service import calls
from workflow.service.auth import CSRF_FIELD
from workflow.service.web import i18n
from workflow.service.web.frame import (
    caller,
    check_csrf,
    context,
    engine_of,
    error_page,
    lang_for,
    render,
    to_login,
    year_now,
)

router = APIRouter(include_in_schema=False)


def _page(request: Request, principal: Any, *, values: dict[str, str] | None = None,
          message: str | None = None, candidates: tuple[str, ...] = (), done: str | None = None,
          created: list[int] | None = None, status: int = 200) -> Response:
    engine = engine_of(request)
    lang = lang_for(request, principal)
    roles = sorted({g.role for g in calls.grants_of(engine, principal)} - {AUDITOR})
    programs = [p for p in calls.programs(engine) if set(p.start_roles) & set(roles)]
    v = {"program": "", "area": "", "fiscal_year": str(year_now()), "role": "", "title": "",
         "district": ""}
    v.update(values or {})
    ctx = context(request, principal, title=i18n.tr(lang, "start.title"), programs=programs,
                  roles=roles, v=v, message=message, candidates=candidates, done=done,
                  created=created or [], area_options=[])
    return render("start.html", ctx, status)


@router.get("/start")
def start_form(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    return _page(request, principal)


async def _posted(request: Request, principal: Any) -> dict[str, str]:
    data = await request.form()
    check_csrf(principal, str(data.get(CSRF_FIELD, "")))
    return {k: str(data.get(k, "")).strip() for k in
            ("program", "area", "fiscal_year", "role", "title", "district")}


@router.post("/start")
async def start(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    try:
        v = await _posted(request, principal)
    except WorkflowError as e:
        return error_page(request, principal, e)
    lang = lang_for(request, principal)
    try:
        inst = calls.start(engine_of(request), principal, program=v["program"], area=v["area"],
                           fiscal_year=v["fiscal_year"], role=v["role"],
                           title=v["title"] or None, allow_duplicate=False, key=None)
    except AreaNotFound as e:
        return _page(request, principal, values=v, status=422, candidates=e.candidates,
                     message=i18n.error_text(lang, "AreaNotFound", str(e)))
    except DuplicateInstance as e:
        return _page(request, principal, values=v, status=409,
                     message=i18n.error_text(lang, "DuplicateInstance", str(e),
                                             existing=e.existing))
    except WorkflowError as e:
        return _page(request, principal, values=v, status=422,
                     message=i18n.error_text(lang, type(e).__name__, str(e)))
    return RedirectResponse(f"/instances/{inst.id}?recorded=start", status_code=303)


@router.post("/start/bulk")
async def start_bulk(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    try:
        v = await _posted(request, principal)
    except WorkflowError as e:
        return error_page(request, principal, e)
    lang = lang_for(request, principal)
    try:
        ids, total = calls.start_many(engine_of(request), principal, program=v["program"],
                                      district=v["district"], fiscal_year=v["fiscal_year"],
                                      role=v["role"])
    except AreaNotFound as e:
        return _page(request, principal, values=v, status=422, candidates=e.candidates,
                     message=i18n.error_text(lang, "AreaNotFound", str(e)))
    except WorkflowError as e:
        return _page(request, principal, values=v, status=422,
                     message=i18n.error_text(lang, type(e).__name__, str(e)))
    done = i18n.tr(lang, "start.bulk_done", n=len(ids), skipped=total - len(ids))
    return _page(request, principal, values=v, done=done, created=ids)
