"""``/migrate``: move running instances to a new program version (``workflow migrate``).

The form posts to the same library call as ``POST /api/v1/migrations`` (``calls.migrate``).
"Check the plan" is the dry run: per instance where it is, where it would be, and what stops
it; "Migrate" applies it (refused, with nothing changed, while any instance has a problem).
The map is typed one ``OLD=NEW`` per line, as the command line's ``--map``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from workflow.access.policy import AUDITOR
from workflow.errors import UsageError, WorkflowError
from workflow.service import calls
from workflow.service.auth import CSRF_FIELD
from workflow.service.web import i18n
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
FIELDS = ("program", "to_version", "from_version", "role", "area", "fiscal_year", "map")


def parse_map(text: str) -> dict[str, str]:
    """``OLD=NEW`` per line (blank lines skipped) as the ``--map`` of the command line."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        old, sep, new = line.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UsageError(f"the map takes one OLD=NEW per line, not {line.strip()[:80]!r}")
        out[old.strip()] = new.strip()
    return out


def _version(text: str, what: str) -> int | None:
    if not text:
        return None
    number = whole_number(text, 9)
    if number is None:
        raise UsageError(f"{what} must be a version number, not {text[:20]!r}")
    return number


def _page(request: Request, principal: Any, *, values: dict[str, str] | None = None,
          result: Any = None, message: str | None = None, status: int = 200) -> Response:
    engine = engine_of(request)
    lang = lang_for(request, principal)
    roles = sorted({g.role for g in calls.grants_of(engine, principal)} - {AUDITOR})
    programs = [(p, [v.version for v in engine.registry.versions(p.id)])
                for p in calls.programs(engine)]
    v = dict.fromkeys(FIELDS, "")
    v.update(values or {})
    ctx = context(request, principal, title=i18n.tr(lang, "migrate.title"),
                  programs=programs, roles=roles, v=v, result=result, message=message)
    return render("migrate.html", ctx, status)


@router.get("/migrate")
def migrate_form(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    return _page(request, principal)


@router.post("/migrate")
async def migrate(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    data = await request.form()
    try:
        check_csrf(principal, str(data.get(CSRF_FIELD, "")))
    except WorkflowError as e:
        return error_page(request, principal, e)
    v = {k: str(data.get(k, "")).strip() for k in FIELDS}
    dry_run = str(data.get("apply", "")) != "1"
    lang = lang_for(request, principal)
    try:
        to_version = _version(v["to_version"], "the new version")
        if to_version is None:
            raise UsageError("the new version is required")
        result = calls.migrate(
            engine_of(request), principal, v["program"], to_version, role=v["role"],
            from_version=_version(v["from_version"], "the old version"),
            mapping=parse_map(v["map"]), area=v["area"] or None,
            fiscal_year=v["fiscal_year"] or None, state=None, dry_run=dry_run)
    except WorkflowError as e:
        return _page(request, principal, values=v, status=422,
                     message=i18n.error_text(lang, type(e).__name__, str(e)))
    return _page(request, principal, values=v, result=result)
