"""The JSON API under ``/api/v1`` (CONTRACT §7): one route per row of the contract's table.

Each route: the caller (``auth.api_principal``), one call through ``calls``, the JSON of the
records' ``to_dict()``. The actor is always the authenticated account: bodies are closed
(an ``actor`` field is a 400), and a start or fire naming an actor in the query or a header is
refused too. Lists are ``{items, next_cursor}``; pass ``cursor=next_cursor`` for the next page.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from workflow.engine.facade import Engine
from workflow.errors import UsageError
from workflow.runtime.attachments import MAX_BYTES, Upload
from workflow.service import calls, downloads
from workflow.service.auth import CSRF_HEADER, api_principal
from workflow.service.problems import MEDIA_TYPE, TITLES

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class ProblemField(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem: what went wrong, with the contract's code and exit code."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="The error class (workflow.errors), e.g. VersionConflict")
    exit_code: int = Field(description="The command line's exit code for the same error")
    problems: list[ProblemField] | None = Field(
        default=None, description="EvidenceInvalid: every field and what is wrong with it")
    denial_unrecorded: str | None = Field(
        default=None, description="A 403 whose denial could not be recorded: why")


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Problem responses, as ``application/problem+json`` (see :func:`openapi_document`)."""
    return {
        s: {"description": TITLES.get(s, "problem"),
            "content": {MEDIA_TYPE: {"schema": PROBLEM_REF}}}
        for s in statuses
    }


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document as the service answers: FastAPI's, with every error response
    (status 400 and up) declared as what is really sent, ``application/problem+json`` with
    the ``Problem`` schema. FastAPI on its own adds the route's media type with an empty
    schema to each of them, and a 422 ``HTTPValidationError`` the service never sends (an
    unreadable request is a 400 problem here)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = app.openapi()
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in problem.pop("$defs", {}).items():
        schemas[name] = sub
    schemas["Problem"] = problem
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if path == f"{router.prefix}/health":
                for status in [s for s in responses if s != "200"]:
                    del responses[status]  # no credentials, no database: always 200
                continue
            for status, response in responses.items():
                if int(status) >= 400:
                    response["content"] = {MEDIA_TYPE: {"schema": dict(PROBLEM_REF)}}
                    if response.get("description") in (None, "", "Validation Error", "problem"):
                        response["description"] = TITLES.get(int(status), "problem")
    app.openapi_schema = spec
    return spec


READ_ERRORS = _problems(400, 401, 403, 404, 503)
router = APIRouter(prefix="/api/v1", responses=_problems(400, 401, 503))
Caller = Annotated[Any, Depends(api_principal)]


def engine_of(request: Request) -> Engine:
    found = request.app.state.engine
    assert isinstance(found, Engine)
    return found


async def _engine(request: Request) -> Engine:
    # async: a plain function would cost every request a trip through the thread pool.
    return engine_of(request)


EngineDep = Annotated[Engine, Depends(_engine)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.",
                                     max_length=500)]


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError):
        raise UsageError("invalid cursor (pass the next_cursor of the previous page)") from None


def _int_cursor(text: str | None) -> int | None:
    value = decode_cursor(text)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError("invalid cursor (pass the next_cursor of the previous page)")
    return value


def _page(items: list[dict[str, Any]], limit: int, after: int | None) -> dict[str, Any]:
    """A page of an in-memory list (small lists: programs, events of one instance, grants)."""
    start = after or 0
    chunk = items[start:start + limit]
    more = start + limit < len(items)
    return {"items": chunk, "next_cursor": encode_cursor(start + limit) if more else None}


def _no_actor(request: Request) -> None:
    """The actor is the authenticated account: a start or fire naming one is refused."""
    if any(k.lower() == "actor" for k in request.query_params):
        raise UsageError("the actor is the authenticated account; a request names a role only")
    for name in request.headers:
        if "actor" in name.lower():
            raise UsageError(
                f"header {name} refused: the actor is the authenticated account")


_ETAG = re.compile(r'^\s*"(\d{1,18})"\s*$')


def parse_if_match(request: Request, value: str | None) -> int | None:
    if value is None or value.strip() == "*":
        return None
    m = _ETAG.match(value)
    if m is None:
        raise UsageError('If-Match must be the instance\'s ETag, e.g. "3"')
    request.state.if_match = True
    return int(m.group(1))


def etag(version: int) -> str:
    return f'"{version}"'


# --------------------------------------------------------------------------- health, me


@router.get("/health", summary="Liveness (no authentication)", responses={})
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/me", summary="The caller: account and grants")
def me(request: Request, caller: Caller, engine: EngineDep) -> dict[str, Any]:
    out = calls.me(engine, caller)
    if caller.session_csrf:
        out["csrf_token"] = caller.session_csrf  # for the X-CSRF-Token header of a browser
    return out


# --------------------------------------------------------------------------- programs


@router.get("/programs", summary="The available programs", response_model=Page,
            responses=READ_ERRORS)
def programs(caller: Caller, engine: EngineDep, limit: Limit = DEFAULT_LIMIT,
             cursor: Cursor = None) -> dict[str, Any]:
    return _page([p.summary_dict() for p in calls.programs(engine)], limit, _int_cursor(cursor))


@router.get("/programs/{program}", summary="One program: states, transitions, roles, evidence",
            responses=READ_ERRORS)
def program(caller: Caller, engine: EngineDep, program: Annotated[str, Path(max_length=200)],
            version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None) -> dict[str, Any]:
    return calls.program(engine, program, version).to_dict()


@router.get("/programs/{program}/diagram", summary="The program (or an instance) as a diagram",
            response_class=PlainTextResponse, responses=READ_ERRORS)
def program_diagram(
    caller: Caller,
    engine: EngineDep,
    program: Annotated[str, Path(max_length=200)],
    format: Literal["mermaid", "dot"] = "mermaid",
    lang: Literal["en", "th"] = "en",
    instance: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> PlainTextResponse:
    text = calls.diagram(engine, caller, program, format, lang, instance)
    return PlainTextResponse(text + "\n")


# --------------------------------------------------------------------------- instances


class StartBody(BaseModel):
    """Start a program; the actor is the authenticated account."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"program": "leader-development", "area": "160117", "fiscal_year": 2566,
         "role": "provincial_officer"}]})
    program: str = Field(max_length=200)
    area: str = Field(max_length=200, description="DOPA code, or a Thai/English name")
    fiscal_year: int | str = Field(description="Buddhist-Era fiscal year, e.g. 2564")
    role: str = Field(max_length=200)
    title: str | None = Field(default=None, max_length=2000)
    allow_duplicate: bool = False


class FireBody(BaseModel):
    """Fire one transition; the actor is the authenticated account."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"trigger": "kickoff", "role": "provincial_officer",
         "evidence": {"date": "2566-02-17", "venue": "ศาลาประชาคม", "chair": "นายอำเภอ"}}]})
    trigger: str = Field(max_length=200)
    role: str = Field(max_length=200)
    evidence: dict[str, Any] = Field(default_factory=dict)
    note: str | None = Field(default=None, max_length=10000)


_Model = TypeVar("_Model", bound=BaseModel)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="The CLI's --key")]


@router.post("/instances", status_code=201, summary="Start an instance",
             responses=_problems(400, 401, 403, 404, 409, 422, 503))
def start(request: Request, response: Response, caller: Caller, engine: EngineDep,
          body: Annotated[StartBody, Body()], idempotency_key: IdempotencyKey = None,
          ) -> dict[str, Any]:
    _no_actor(request)
    inst = calls.start(
        engine, caller, program=body.program, area=body.area, fiscal_year=body.fiscal_year,
        role=body.role, title=body.title, allow_duplicate=body.allow_duplicate,
        key=idempotency_key,
    )
    response.headers["Location"] = f"/api/v1/instances/{inst.id}"
    response.headers["ETag"] = etag(inst.version)
    return inst.to_dict()


@router.get("/instances", summary="Instances the caller may see, oldest first",
            response_model=Page, responses=READ_ERRORS)
def list_instances(
    caller: Caller,
    engine: EngineDep,
    program: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(max_length=200)] = None,
    area: Annotated[str | None, Query(max_length=200)] = None,
    fiscal_year: Annotated[str | None, Query(max_length=20)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    items, more = calls.list_instances(
        engine, caller, program=program, state=state, area=area, fiscal_year=fiscal_year,
        limit=limit, after=_int_cursor(cursor),
    )
    return {
        "items": [i.to_dict() for i in items],
        "next_cursor": encode_cursor(items[-1].id) if more and items else None,
    }


InstanceId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/instances/{instance}", summary="One instance, with the caller's triggers",
            responses=READ_ERRORS)
def show(response: Response, caller: Caller, engine: EngineDep,
         instance: InstanceId) -> dict[str, Any]:
    inst = calls.get(engine, caller, instance)
    response.headers["ETag"] = etag(inst.version)
    return inst.to_dict()


def _media_type(request: Request) -> str:
    """The request body's media type, lower case, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


@dataclass(frozen=True)
class FormOrJson(Generic[_Model]):
    """A request body taken as JSON (``model``) or as the same fields in a form: ``evidence``
    a JSON object of the values that are not files, and one file part per ``file``
    evidence field (CONTRACT §8, ``--attach``). How a fire and a correction are posted;
    :meth:`openapi` documents both forms, :meth:`read` takes either."""

    model: type[_Model]
    #: What the body is, for messages: "fire", "correction".
    what: str
    #: The form's text fields other than ``evidence``, in order, as OpenAPI properties.
    properties: dict[str, Any]
    required: tuple[str, ...]
    #: The descriptions of the ``evidence`` field and of a file part.
    evidence: str
    files: str

    def openapi(self) -> dict[str, Any]:
        """The route's ``requestBody``."""
        form = {
            "type": "object",
            "required": list(self.required),
            "properties": {**self.properties,
                           "evidence": {"type": "string", "description": self.evidence}},
            "additionalProperties": {"type": "string", "format": "binary",
                                     "description": self.files},
        }
        return {
            "required": True,
            "content": {
                "application/json": {"schema": self.model.model_json_schema()},
                "multipart/form-data": {"schema": form},
                # A form without files may come urlencoded (an HTML form, curl --data).
                "application/x-www-form-urlencoded": {"schema": form},
            },
        }

    async def read(self, request: Request) -> _Model:
        media = _media_type(request)
        if media in _FORMS:
            return await self._form(request)
        if media not in ("", "application/json") and not media.endswith("+json"):
            raise UsageError(f"a {self.what} is JSON or multipart/form-data, not {media[:100]}")
        raw = await request.body()
        try:
            return self.model.model_validate_json(raw or b"null")
        except ValidationError as e:  # as FastAPI's own 422 for a body
            errors = [{**err, "loc": ("body", *err.get("loc", ()))}
                      for err in e.errors(include_url=False, include_context=False)]
            raise RequestValidationError(errors) from None

    async def _form(self, request: Request) -> _Model:
        names = (*self.properties, "evidence")
        form = await request.form(max_files=20, max_fields=50, max_part_size=MAX_BYTES)
        fields: dict[str, str] = {}
        files: dict[str, Upload] = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                if name in fields:
                    raise UsageError(f"form field {name[:100]} given twice")
                fields[name] = value
            else:
                if name in files:
                    raise UsageError(f"file field {name[:100]} given twice")
                data = await value.read(MAX_BYTES + 1)
                if len(data) > MAX_BYTES:
                    raise UsageError(f"file {name[:100]} is larger than {MAX_BYTES} bytes")
                files[name] = Upload(value.filename or name, data)
        if set(fields) - set(names) or set(self.required) - set(fields):
            raise UsageError(f"a multipart {self.what} takes the form fields "
                             f"{', '.join(names)} (evidence as a JSON object) and one file "
                             "part per file field")
        try:
            given = json.loads(fields.pop("evidence", "") or "{}")
        except ValueError:
            raise UsageError("evidence must be a JSON object") from None
        if not isinstance(given, dict):
            raise UsageError("evidence must be a JSON object")
        for name in given:
            if name in files:
                raise UsageError(f"evidence field {name[:100]} given twice")
        try:
            # Only the fields given: the model knows which were (a correction's note).
            return self.model(**fields, evidence={**given, **files})
        except ValidationError as e:
            raise UsageError(
                f"a multipart {self.what}'s fields: {e.errors()[0]['msg']}"
            ) from None


_FIRE = FormOrJson(
    FireBody,
    "fire",
    properties={
        "trigger": {"type": "string", "maxLength": 200},
        "role": {"type": "string", "maxLength": 200},
        "note": {"type": "string", "maxLength": 10000},
    },
    required=("trigger", "role"),
    evidence="the evidence that is not a file, as a JSON object",
    files="one part per `file` evidence field",
)


@router.post("/instances/{instance}/events", status_code=201, summary="Fire a transition",
             description="A JSON body, or `multipart/form-data` with the form fields `trigger`, "
             "`role`, `note`, `evidence` (JSON) and one file part per `file` evidence field.",
             responses=_problems(400, 401, 403, 404, 409, 412, 422, 503),
             openapi_extra={"requestBody": _FIRE.openapi()})
async def fire(
    request: Request,
    response: Response,
    caller: Caller,
    engine: EngineDep,
    instance: InstanceId,
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=40)] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    _no_actor(request)
    expect = parse_if_match(request, if_match)
    body = await _FIRE.read(request)
    result = await run_in_threadpool(
        calls.fire, engine, caller, instance, body.trigger, role=body.role,
        evidence=body.evidence, note=body.note, expect_version=expect, key=idempotency_key,
    )
    response.headers["Location"] = f"/api/v1/instances/{instance}/events/{result.event.seq}"
    response.headers["ETag"] = etag(result.instance.version)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    out: dict[str, Any] = result.to_dict()
    return out


@router.get("/instances/{instance}/events", summary="The instance's events, oldest first",
            response_model=Page, responses=READ_ERRORS)
def history(caller: Caller, engine: EngineDep, instance: InstanceId,
            limit: Limit = MAX_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
    events = [e.to_dict() for e in calls.history(engine, caller, instance)]
    return _page(events, limit, _int_cursor(cursor))


@router.get("/instances/{instance}/events/{seq}", summary="One event of the instance",
            responses=READ_ERRORS)
def one_event(caller: Caller, engine: EngineDep, instance: InstanceId,
              seq: Annotated[int, Path(ge=1, le=2**62)]) -> dict[str, Any]:
    return calls.event(engine, caller, instance, seq).to_dict()


_FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes, with the media type sniffed when it was recorded",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "ETag": {"description": "The file's sha256, quoted",
                     "schema": {"type": "string"}},
            "Content-Disposition": {
                "description": "attachment; filename=\"...\"; filename*=UTF-8''... "
                "(the name as recorded)", "schema": {"type": "string"}},
            "X-Content-Type-Options": {"schema": {"type": "string", "enum": ["nosniff"]}},
        },
    },
    304: {"description": "Not modified: If-None-Match named the file's ETag"},
    **READ_ERRORS,
}


@router.get("/instances/{instance}/events/{seq}/files/{field}",
            summary="A file the event recorded as evidence (`attachments get`)",
            description="The stored bytes of the `file` evidence `field` of event `seq` (as "
            "corrected, if a correction replaced it), re-hashed before they are sent.",
            response_class=Response, responses=_FILE_RESPONSE)
def attachment(request: Request, caller: Caller, engine: EngineDep, instance: InstanceId,
               seq: Annotated[int, Path(ge=1, le=2**62)],
               field: Annotated[str, Path(max_length=200)]) -> Response:
    value, data = calls.attachment(engine, caller, instance, seq, field)
    return downloads.file_response(request, value, data)


# --------------------------------------------------------------------------- audit, report


@router.get("/audit/events", summary="Events across instances (auditor or admin)",
            response_model=Page, responses=READ_ERRORS)
def audit_events(
    caller: Caller,
    engine: EngineDep,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    program: Annotated[str | None, Query(max_length=200)] = None,
    area: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    raw = decode_cursor(cursor)
    after = None
    if raw is not None:
        if not (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], str)
                and all(isinstance(x, int) for x in raw[1:])):
            raise UsageError("invalid cursor (pass the next_cursor of the previous page)")
        after = (raw[0], int(raw[1]), int(raw[2]))
    events, more = calls.audit_log(engine, caller, actor=actor, program=program, area=area,
                                   since=since, until=until, limit=limit, after=after)
    return {
        "items": [e.to_dict() for e in events],
        "next_cursor": encode_cursor(list(calls.audit_cursor(events[-1])))
        if more and events else None,
    }


@router.post("/audit/verify", summary="Re-compute every chain (auditor or admin)",
             responses=READ_ERRORS)
def audit_verify(caller: Caller, engine: EngineDep) -> dict[str, Any]:
    return calls.verify(engine, caller).to_dict()


@router.get("/audit/digest", summary="A digest a later verify checks against",
            responses=READ_ERRORS)
def audit_digest(caller: Caller, engine: EngineDep) -> dict[str, Any]:
    return calls.digest(engine, caller)


@router.get("/audit/checkpoint", summary="The latest signed checkpoint of the audit log (text)",
            response_class=PlainTextResponse, responses=READ_ERRORS)
def audit_checkpoint(caller: Caller, engine: EngineDep) -> PlainTextResponse:
    return PlainTextResponse(calls.checkpoint(engine, caller))


@router.get("/instances/{instance}/proof",
            summary="A proof bundle: the instance's events with inclusion proofs",
            responses=READ_ERRORS)
def instance_proof(caller: Caller, engine: EngineDep, instance: InstanceId) -> dict[str, Any]:
    return calls.proof(engine, caller, instance)


@router.get("/audit/denials", summary="Refused attempts (auditor or admin)",
            response_model=Page, responses=READ_ERRORS)
def audit_denials(caller: Caller, engine: EngineDep, limit: Limit = DEFAULT_LIMIT,
                  cursor: Cursor = None) -> dict[str, Any]:
    found = [d.to_dict() for d in calls.denials(engine, caller)]
    return _page(found, limit, _int_cursor(cursor))


@router.get("/report", summary="Instances per program, province and state",
            responses=READ_ERRORS)
def report(
    caller: Caller,
    engine: EngineDep,
    program: Annotated[str | None, Query(max_length=200)] = None,
    fiscal_year: Annotated[str | None, Query(max_length=20)] = None,
) -> dict[str, Any]:
    return calls.report(engine, caller, program=program, fiscal_year=fiscal_year).to_dict()


# --------------------------------------------------------------------------- grants


class GrantBody(BaseModel):
    """A grant: ``actor`` (an account name) may act as ``role`` in ``area`` on ``program``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"actor": "udomrat", "role": "provincial_officer", "area": "16"}]})
    actor: str = Field(max_length=200)
    role: str = Field(max_length=200)
    area: str | None = Field(default=None, max_length=200)
    program: str | None = Field(default=None, max_length=200)


class NewGrantBody(GrantBody):
    """A grant, optionally ending at the end of ``until`` (a date, CE or BE: ``--until``)."""

    until: str | None = Field(default=None, max_length=40,
                              description="The last day of the grant (YYYY-MM-DD, CE or BE)")


@router.get("/grants", summary="The grants held, expired ones included (admins only)",
            response_model=Page, responses=READ_ERRORS)
def grants(caller: Caller, engine: EngineDep,
           actor: Annotated[str | None, Query(max_length=200)] = None,
           limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
    found = [g.to_dict() for g in calls.grants(engine, caller, actor)]
    return _page(found, limit, _int_cursor(cursor))


@router.post("/grants", status_code=201, summary="Grant a role (admins only)",
             responses=_problems(400, 401, 403, 404, 503))
def grant(response: Response, caller: Caller, engine: EngineDep,
          body: Annotated[NewGrantBody, Body()]) -> dict[str, Any]:
    g = calls.grant(engine, caller, body.actor, body.role, body.area, body.program, body.until)
    # Account names may be Thai: a header must be ASCII.
    response.headers["Location"] = f"/api/v1/grants?actor={quote(g.actor, safe='')}"
    return g.to_dict()


@router.delete("/grants", summary="Revoke a grant (admins only; same body as the grant)",
               responses=_problems(400, 401, 403, 404, 503))
def revoke(caller: Caller, engine: EngineDep,
           body: Annotated[GrantBody, Body()]) -> dict[str, Any]:
    return calls.revoke(engine, caller, body.actor, body.role, body.area, body.program).to_dict()


__all__ = ["CSRF_HEADER", "router"]
