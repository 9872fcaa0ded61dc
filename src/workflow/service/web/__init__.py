"""The web pages under ``/``: server-rendered (Jinja2), Thai first, working without JavaScript.

Each module is the routes of a page or two (``instances``: My work and the instance page;
``mending``: its comment, correction and revert forms; ``start``; ``migrate``: running
instances to a new program version; ``report``; ``audit``; ``admin``); ``frame`` is what
every page shares, ``forms`` the forms generated from a program definition, ``i18n`` the one
translation catalogue and the Buddhist-Era dates, ``places`` the area names and the
typeahead, ``export`` the XLSX file.
Every engine or accounts call goes through ``workflow.service.calls``, as the API's do.
"""

from __future__ import annotations

from fastapi import APIRouter

from workflow.service.web import admin, audit, instances, mending, migrate, report, start

router = APIRouter(include_in_schema=False)
for _module in (instances, mending, start, migrate, report, audit, admin):
    router.include_router(_module.router)

__all__ = ["router"]
