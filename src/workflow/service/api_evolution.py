"""The HTTP twins of issue 13's commands (CONTRACT §8): corrections, reverts, comments and
migrations. Each route: the caller, one call through ``calls``, the JSON of the result (a
correction, revert or comment answers like a fire: 201 ``{event, instance}``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from workflow.engine.amend import KEEP
from workflow.service import calls
from workflow.service.api import (
    Caller,
    EngineDep,
    FormOrJson,
    InstanceId,
    _no_actor,
    _problems,
    etag,
    parse_if_match,
)

router = APIRouter(prefix="/api/v1", responses=_problems(400, 401, 503))
CHANGE_ERRORS = _problems(400, 401, 403, 404, 409, 412, 422, 503)


class CorrectionBody(BaseModel):
    """Correct event ``seq``'s evidence (field -> new value; "" removes) and/or note."""

    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=1, le=2**31 - 1)
    role: str = Field(max_length=200)
    reason: str = Field(max_length=2000)
    evidence: dict[str, Any] = Field(default_factory=dict)
    note: str | None = Field(default=None, max_length=10000,
                             description="The corrected note (omit to keep it)")


class RevertBody(BaseModel):
    """Take back the instance's last state change."""

    model_config = ConfigDict(extra="forbid")
    role: str = Field(max_length=200)
    reason: str = Field(max_length=2000)


class CommentBody(BaseModel):
    """A comment on the instance; its state does not change."""

    model_config = ConfigDict(extra="forbid")
    role: str = Field(max_length=200)
    text: str = Field(max_length=10000)


class MigrationBody(BaseModel):
    """`workflow migrate`'s options; ``map`` is {OLD: NEW}."""

    model_config = ConfigDict(extra="forbid")
    program: str = Field(max_length=200)
    to_version: int = Field(ge=1, le=2**31 - 1)
    from_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    map: dict[str, str] = Field(default_factory=dict)
    area: str | None = Field(default=None, max_length=200)
    fiscal_year: int | str | None = None
    state: str | None = Field(default=None, max_length=200)
    role: str = Field(max_length=200)
    dry_run: bool = False


def _answer(response: Response, instance: int, result: Any) -> dict[str, Any]:
    response.headers["Location"] = f"/api/v1/instances/{instance}/events/{result.event.seq}"
    response.headers["ETag"] = etag(result.instance.version)
    out: dict[str, Any] = result.to_dict()
    return out


_CORRECTION = FormOrJson(
    CorrectionBody,
    "correction",
    properties={
        "seq": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "role": {"type": "string", "maxLength": 200},
        "reason": {"type": "string", "maxLength": 2000},
        "note": {"type": "string", "maxLength": 10000,
                 "description": "the corrected note (omit to keep it)"},
    },
    required=("seq", "role", "reason"),
    evidence="the corrected evidence that is not a file, as a JSON object",
    files="the corrected file of a `file` evidence field",
)


@router.post("/instances/{instance}/corrections", status_code=201,
             summary="Correct an earlier event's evidence or note", responses=CHANGE_ERRORS,
             description="A JSON body, or `multipart/form-data` with the form fields `seq`, "
             "`role`, `reason`, `note`, `evidence` (JSON) and one file part per `file` "
             "evidence field whose file is replaced.",
             openapi_extra={"requestBody": _CORRECTION.openapi()})
async def correct(request: Request, response: Response, caller: Caller, engine: EngineDep,
                  instance: InstanceId) -> dict[str, Any]:
    _no_actor(request)
    body = await _CORRECTION.read(request)
    note = body.note if "note" in body.model_fields_set else KEEP
    result = await run_in_threadpool(
        calls.correct, engine, caller, instance, body.seq, role=body.role,
        reason=body.reason, evidence=body.evidence, note=note,
    )
    return _answer(response, instance, result)


@router.post("/instances/{instance}/revert", status_code=201,
             summary="Take back the last state change", responses=CHANGE_ERRORS)
def revert(request: Request, response: Response, caller: Caller, engine: EngineDep,
           instance: InstanceId, body: Annotated[RevertBody, Body()],
           if_match: Annotated[str | None, Header(alias="If-Match", max_length=40)] = None,
           ) -> dict[str, Any]:
    _no_actor(request)
    expect = parse_if_match(request, if_match)
    result = calls.revert(engine, caller, instance, role=body.role, reason=body.reason,
                          expect_version=expect)
    return _answer(response, instance, result)


@router.post("/instances/{instance}/comments", status_code=201, summary="Comment",
             responses=CHANGE_ERRORS)
def comment(request: Request, response: Response, caller: Caller, engine: EngineDep,
            instance: InstanceId, body: Annotated[CommentBody, Body()]) -> dict[str, Any]:
    _no_actor(request)
    result = calls.comment(engine, caller, instance, role=body.role, text=body.text)
    return _answer(response, instance, result)


@router.post("/migrations", summary="Migrate running instances to another program version "
             "(dry_run: the plan only)", responses=CHANGE_ERRORS)
def migrate(request: Request, caller: Caller, engine: EngineDep,
            body: Annotated[MigrationBody, Body()]) -> dict[str, Any]:
    _no_actor(request)
    result = calls.migrate(
        engine, caller, body.program, body.to_version, role=body.role,
        from_version=body.from_version, mapping=body.map, area=body.area,
        fiscal_year=body.fiscal_year, state=body.state, dry_run=body.dry_run,
    )
    out: dict[str, Any] = result.to_dict()
    return out

