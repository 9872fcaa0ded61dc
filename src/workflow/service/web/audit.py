"""The auditor's pages: ``/audit`` (the log, with the API's filters plus the activity date,
and the denials), ``/audit/export.csv`` and ``/audit/export.xlsx`` (same filters),
``/audit/verify`` (run it: ok, or the first broken event of each instance, linked; or
upload a digest file to verify against, as ``verify --digest``) and
``/audit/digest.json``.

They need an auditor grant or the admin flag (``calls.require_auditor``: otherwise a
recorded denial and a 403 page), and read what the caller's grants cover.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from workflow import areas
from workflow.audit.export import csv_bytes
from workflow.errors import WorkflowError
from workflow.records import Event
from workflow.service import calls, problems
from workflow.service.auth import CSRF_FIELD
from workflow.service.web import export, i18n, places
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

FILTERS = ("actor", "program", "area", "since", "until", "date_from", "date_to")
SHOWN = 200


def _filters(request: Request) -> dict[str, str | None]:
    return {k: (request.query_params.get(k) or "").strip() or None for k in FILTERS}


def _events(request: Request, principal: Any) -> list[Event]:
    return calls.audit_events(engine_of(request), principal, limit=None, **_filters(request))


@router.get("/audit")
def audit(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    engine = engine_of(request)
    lang = lang_for(request, principal)
    filters = _filters(request)
    problem = None
    try:
        calls.require_auditor(engine, principal, "audit log")
    except WorkflowError as refused:
        return error_page(request, principal, refused)
    try:
        events = _events(request, principal)
    except WorkflowError as err:
        events, problem = [], i18n.error_text(lang, type(err).__name__, str(err))
    total = len(events)
    labels: dict[tuple[str, str], str] = {}
    for p in calls.programs(engine):
        for t in p.transitions:
            labels.setdefault((p.id, t.trigger), t.label.get(lang))
    rows = []
    for e in reversed(events[-SHOWN:]):
        area = ""
        if e.area:
            try:
                area = places.full_name(areas.get(e.area), lang)
            except WorkflowError:
                area = e.area
        rows.append({
            "e": e, "when": i18n.be_datetime(e.at, lang), "area": area,
            "step": (i18n.tr(lang, "ev.start") if e.trigger == "start"
                     else labels.get((e.program or "", e.trigger), e.trigger)),
            "evidence": ", ".join(
                f"{k}: {i18n.be_date(v, lang) if k.endswith('date') and isinstance(v, str) else v}"
                for k, v in e.evidence.items()),
        })
    denials = calls.denials(engine, principal)[-20:]
    query = str(request.url.query)
    ctx = context(request, principal, title=i18n.tr(lang, "audit.title"), rows=rows,
                  total=total, f=filters, query=query, problem=problem,
                  programs=calls.programs(engine), denials=list(reversed(denials)),
                  area_options=[], shown=min(total, SHOWN))
    return render("audit.html", ctx)


def _download(request: Request, kind: str) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    try:
        events = _events(request, principal)
    except WorkflowError as e:
        return error_page(request, principal, e)
    if kind == "csv":
        body, media = csv_bytes(events), "text/csv; charset=utf-8"
    else:
        body, media = export.xlsx_bytes(events), export.MEDIA_TYPE
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="audit.{kind}"',
        "Cache-Control": "no-store",
    })


@router.get("/audit/export.csv")
def export_csv(request: Request) -> Response:
    return _download(request, "csv")


@router.get("/audit/export.xlsx")
def export_xlsx(request: Request) -> Response:
    return _download(request, "xlsx")


@router.get("/audit/digest.json")
def digest(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    try:
        body = calls.digest(engine_of(request), principal)
    except WorkflowError as e:
        return error_page(request, principal, e)
    return Response(json.dumps(body, ensure_ascii=False, indent=2),
                    media_type="application/json",
                    headers={"Content-Disposition": 'attachment; filename="digest.json"'})


def _verify_page(request: Request, principal: Any, result: Any = None,
                 problem: str | None = None, status: int = 200) -> Response:
    lang = lang_for(request, principal)
    ctx = context(request, principal, title=i18n.tr(lang, "verify.title"), result=result,
                  problem=problem)
    return render("verify.html", ctx, status)


@router.get("/audit/verify")
def verify_form(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    try:
        calls.require_auditor(engine_of(request), principal, "audit verify")
    except WorkflowError as e:
        return error_page(request, principal, e)
    return _verify_page(request, principal)


@router.post("/audit/verify")
async def verify(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    data = await request.form()
    try:
        check_csrf(principal, str(data.get(CSRF_FIELD, "")))
        result = calls.verify(engine_of(request), principal)
    except WorkflowError as e:
        return error_page(request, principal, e)
    return _verify_page(request, principal, result)


@router.post("/audit/verify/digest")
async def verify_digest(request: Request) -> Response:
    """``verify --digest``: the uploaded digest file (multipart, with the CSRF token)."""
    principal = caller(request)
    if principal is None:
        return to_login()
    engine = engine_of(request)
    lang = lang_for(request, principal)
    async with request.form(max_files=1, max_fields=10) as data:
        try:
            check_csrf(principal, str(data.get(CSRF_FIELD, "")))
            calls.require_auditor(engine, principal, "audit verify")
        except WorkflowError as e:
            return error_page(request, principal, e)
        upload = data.get("digest")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return _verify_page(request, principal, problem=i18n.tr(lang, "verify.no_file"),
                                status=400)
        content = await upload.read(calls.DIGEST_UPLOAD_LIMIT + 1)
        name = upload.filename
    try:
        result = calls.verify_digest(engine, principal, content, name)
    except WorkflowError as e:
        status = problems.status_of(e)
        if status in (401, 403):
            return error_page(request, principal, e)
        return _verify_page(request, principal,
                            problem=i18n.error_text(lang, type(e).__name__, str(e)),
                            status=status)
    return _verify_page(request, principal, result)
