"""``/report`` (the dashboard: program × state × province counts for a fiscal year, as a
table and a bar chart drawn in CSS) and ``/list`` (the filtered list each count links to).

Both read what the caller's grants cover (``calls.report`` and ``calls.list_instances``, the
API's reads).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from workflow.errors import WorkflowError
from workflow.service import calls
from workflow.service.web import i18n, places
from workflow.service.web.forms import whole_number
from workflow.service.web.frame import (
    caller,
    context,
    engine_of,
    lang_for,
    render,
    to_login,
    year_now,
)

router = APIRouter(include_in_schema=False)

PAGE = 100


def _fy(raw: str | None) -> int | None:
    if raw == "all":
        return None
    try:
        return int(raw) if raw else year_now()
    except ValueError:
        return year_now()


@router.get("/report")
def report(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    engine = engine_of(request)
    lang = lang_for(request, principal)
    fy_raw = request.query_params.get("fiscal_year")
    fiscal_year = _fy(fy_raw)
    problem = None
    try:
        result = calls.report(engine, principal, program=None,
                              fiscal_year=str(fiscal_year) if fiscal_year else None)
        rows = list(result.rows)
        if not rows and fy_raw is None:  # nothing this fiscal year: every year
            fiscal_year = None
            rows = list(calls.report(engine, principal, program=None, fiscal_year=None).rows)
    except WorkflowError as e:
        rows, problem = [], i18n.error_text(lang, type(e).__name__, str(e))
    tables: list[dict[str, Any]] = []
    for p in calls.programs(engine):
        mine = [r for r in rows if r.program == p.id]
        if not mine:
            continue
        states = [(s.name, s.label.get(lang)) for s in p.states
                  if any(r.state == s.name for r in mine)]
        provinces = sorted({r.province.code for r in mine})
        cells = {(r.province.code, r.state): r.count for r in mine}
        totals = {s: sum(cells.get((pv, s), 0) for pv in provinces) for s, _ in states}
        top = max(totals.values()) if totals else 1
        tables.append({
            "id": p.id, "title": p.title.get(lang), "states": states,
            "provinces": [(pv, places.province_name(pv, lang)) for pv in provinces],
            "cells": cells, "totals": totals, "total": sum(totals.values()),
            "bars": [(label, totals[s], top) for s, label in states],
        })
    this = year_now()
    ctx = context(request, principal, title=i18n.tr(lang, "report.title"), tables=tables,
                  fiscal_year=fiscal_year, years=list(range(this + 1, this - 6, -1)),
                  problem=problem)
    return render("report.html", ctx)


@router.get("/list")
def instances(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    engine = engine_of(request)
    lang = lang_for(request, principal)
    q = request.query_params
    after = q.get("after")
    filters = {k: (q.get(k) or None) for k in ("program", "state", "area", "fiscal_year")}
    problem = None
    try:
        items, more = calls.list_instances(engine, principal, limit=PAGE,
                                           after=whole_number(after or ""), **filters)
    except WorkflowError as e:
        items, more = [], False
        problem = i18n.error_text(lang, type(e).__name__, str(e))
    defs = {p.id: p for p in calls.programs(engine)}
    shown = [{
        "inst": i, "area": places.full_name(i.area, lang),
        "program": defs[i.program].title.get(lang) if i.program in defs else i.program,
        "state": defs[i.program].label_of_state(i.state, lang) if i.program in defs else i.state,
    } for i in items]
    ctx = context(request, principal, title=i18n.tr(lang, "list.title"), items=shown,
                  more=more, next_after=items[-1].id if items else None, filters=filters,
                  problem=problem)
    return render("list.html", ctx)
