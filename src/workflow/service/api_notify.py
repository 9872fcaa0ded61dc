"""The HTTP twins of issue 15's operator commands (CONTRACT §10): ``workflow tick``,
``hooks add/list/remove`` and ``outbox list/retry``, for admin accounts only (anyone else: 403,
recorded as a denial). Delivery itself stays a worker (``workflow deliver``).

Each route: the caller, one call through ``calls``, the JSON of ``--json`` (lists as ``{items,
next_cursor}``). A hook's secret is taken in the POST body only and answered as ``secret:
true|false``, never echoed; the access log holds no bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from workflow.service import calls
from workflow.service.api import (
    Caller,
    Cursor,
    EngineDep,
    Limit,
    _int_cursor,
    _page,
    _problems,
    encode_cursor,
)

router = APIRouter(prefix="/api/v1", responses=_problems(400, 401, 403, 503))
ADMIN_READ = _problems(400, 401, 403, 503)
ADMIN_CHANGE = _problems(400, 401, 403, 404, 503)

DEFAULT_LIMIT = 50


class TickBody(BaseModel):
    """`workflow tick`'s options."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {}, {"now": "2026-10-01T00:00:00Z"}]})
    now: str | None = Field(default=None, max_length=40,
                            description="The time to judge due dates by (ISO 8601); "
                            "the server's clock when omitted")


class Overdue(BaseModel):
    instance: int
    state: str


class TickOut(BaseModel):
    """What one tick did (the JSON of `workflow tick --json`)."""

    now: str
    checked: int = Field(description="Instances found past due with no overdue event yet")
    recorded: int = Field(description="Overdue events recorded")
    overdue: list[Overdue]


class HookBody(BaseModel):
    """A receiver of every event (of ``program``, with ``trigger``, when given)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://example.org/workflow-events", "program": "leader-development",
         "secret": "a long shared secret"}]})
    url: str = Field(max_length=2000, description="http(s)://... or mailto:ADDRESS")
    program: str | None = Field(default=None, max_length=200)
    trigger: str | None = Field(default=None, max_length=200)
    secret: str | None = Field(
        default=None, max_length=1000,
        description="The HMAC-SHA256 key of Workflow-Signature; stored, never answered")


class HookOut(BaseModel):
    """A receiver (the JSON of `workflow hooks list --json`); ``secret`` says whether it has
    one, never what it is."""

    id: int
    url: str
    program: str | None
    trigger: str | None
    secret: bool
    created_at: str


class DeliveryOut(BaseModel):
    """One outbox entry (the JSON of `workflow outbox list --json`)."""

    id: int
    hook: int
    event: int
    status: str = Field(description="pending, dead (given up on) or delivered")
    attempts: int
    next_at: str
    last_error: str | None
    created_at: str
    delivered_at: str | None


class HookPage(BaseModel):
    items: list[HookOut]
    next_cursor: str | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


Id = Annotated[int, Path(ge=1, le=2**62)]


@router.post("/tick", response_model=TickOut, responses=ADMIN_READ,
             summary="Record an overdue event per state entry past due (admins only)")
def tick(caller: Caller, engine: EngineDep,
         body: Annotated[TickBody | None, Body()] = None) -> dict[str, Any]:
    return calls.tick(engine, caller, body.now if body else None).to_dict()


@router.get("/hooks", response_model=HookPage, responses=ADMIN_READ,
            summary="The receivers of events (admins only)")
def hooks(caller: Caller, engine: EngineDep, limit: Limit = DEFAULT_LIMIT,
          cursor: Cursor = None) -> dict[str, Any]:
    found = [h.to_dict() for h in calls.hooks(engine, caller)]
    return _page(found, limit, _int_cursor(cursor))


@router.post("/hooks", status_code=201, response_model=HookOut, responses=ADMIN_CHANGE,
             summary="Add a receiver: webhook or mailto: (admins only)")
def hook_add(caller: Caller, engine: EngineDep,
             body: Annotated[HookBody, Body()]) -> dict[str, Any]:
    hook = calls.hook_add(engine, caller, body.url, program=body.program,
                          trigger=body.trigger, secret=body.secret)
    return hook.to_dict()


@router.delete("/hooks/{hook}", response_model=HookOut, responses=ADMIN_CHANGE,
               summary="Remove a receiver; its pending deliveries are not sent (admins only)")
def hook_remove(caller: Caller, engine: EngineDep, hook: Id) -> dict[str, Any]:
    return calls.hook_remove(engine, caller, hook).to_dict()


@router.get("/outbox", response_model=DeliveryPage, responses=ADMIN_READ,
            summary="Deliveries not yet made, oldest first (admins only)")
def outbox(caller: Caller, engine: EngineDep,
           dead: Annotated[bool, Query(description="Only deliveries given up on")] = False,
           limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
    items, more = calls.outbox(engine, caller, dead=dead, limit=limit,
                               after=_int_cursor(cursor))
    return {"items": [d.to_dict() for d in items],
            "next_cursor": encode_cursor(items[-1].id) if more and items else None}


@router.post("/outbox/{delivery}/retry", response_model=DeliveryOut, responses=ADMIN_CHANGE,
             summary="Put a dead or pending delivery back in line now (admins only)")
def outbox_retry(caller: Caller, engine: EngineDep, delivery: Id) -> dict[str, Any]:
    return calls.outbox_retry(engine, caller, delivery).to_dict()
