"""Mending an instance from its page (CONTRACT §8): a comment, a correction of an earlier
event's evidence or note, and a revert of the last state change, each through the same
library call as the API (``calls.comment``, ``calls.correct``, ``calls.revert``), each
CSRF-protected; a refusal (a role that may not, nothing to take back) comes back on the
instance page with the engine's message, in the reader's language.

The forms work without JavaScript. The correction form offers one list of "event · field"
pairs (the events that can be corrected: the program's steps and comments) plus the note of
each, a new value and the required reason; a date is typed as day/month/BE year, and a file
field's new file is chosen in the form's file input (the form is multipart: a coordinator
who attached the wrong photo from a phone replaces it there). Revert is
offered only when the caller holds a corrections role and there is a step to take back (not
from a final state unless the program allows it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from workflow.audit import evolution as _evo
from workflow.engine.amend import KEEP
from workflow.errors import EvidenceInvalid, WorkflowError
from workflow.programs.model import Program
from workflow.records import Event, Instance
from workflow.runtime.attachments import MAX_BYTES, Upload
from workflow.service import calls, problems
from workflow.service.auth import CSRF_FIELD
from workflow.service.web import i18n
from workflow.service.web.forms import whole_number
from workflow.service.web.frame import caller, check_csrf, engine_of, error_page, lang_for, to_login

router = APIRouter(include_in_schema=False)

#: The pseudo-field of the correction form that stands for an event's note.
NOTE = "__note__"
_DMY = re.compile(r"^\s*(\d{1,2})\s*[/.-]\s*(\d{1,2})\s*[/.-]\s*(\d{4})\s*$")


@dataclass
class Mending:
    """What the instance page offers for mending, and a failed post's message and values."""

    comment: tuple[str, ...] = ()
    correct: tuple[str, ...] = ()
    revert: tuple[str, ...] = ()
    targets: list[tuple[str, str]] = field(default_factory=list)
    #: Whether a target is a file field (the form then offers a file input).
    files: bool = False
    revert_step: str = ""
    failed: str = ""  # which form failed: comment | correct | revert
    error: str = ""
    values: dict[str, str] = field(default_factory=dict)


def _rows(events: list[Event]) -> list[SimpleNamespace]:
    """Events as the audit's replay reads stored rows."""
    return [SimpleNamespace(seq=e.seq, trigger=e.trigger, from_state=e.from_, to_state=e.to,
                            evidence=json.dumps(dict(e.evidence)),
                            definition_hash=e.definition_hash, hash=e.hash) for e in events]


def revertable(program: Program, inst: Instance, events: list[Event]) -> int | None:
    """The seq of the step a revert would take back now, or None (nothing left, or a final
    state the program does not allow to leave): the audit's own replay decides."""
    if inst.final and not program.corrections.revert_final:
        return None
    steps = _evo.steps_left(_rows(events))
    return steps[-1].seq if steps else None


def field_labels(program: Program, trigger: str, lang: str) -> dict[str, tuple[str, str]]:
    """Per evidence field of ``trigger``: its label and type."""
    return {f.name: (f.label.get(lang) if f.label else f.name, f.type)
            for t in program.transitions_for(trigger) for f in t.evidence}


def targets(program: Program, events: list[Event], lang: str,
            step_label: Any) -> list[tuple[str, str]]:
    """The correction form's choices: ``seq:field`` of each correctable event's fields (with
    the value now) and ``seq:__note__`` of its note."""
    out: list[tuple[str, str]] = []
    for e in events:
        if e.trigger in _evo.UNCORRECTABLE:
            continue
        step = step_label(program, e.trigger, lang)
        now: dict[str, Any] = dict(e.evidence)
        if e.corrected_by and e.corrected_evidence is not None:
            now = dict(e.corrected_evidence)
        for name, (label, kind) in field_labels(program, e.trigger, lang).items():
            value = now.get(name)
            if kind == "file":
                shown = str(value.get("name", "")) if isinstance(value, dict) else ""
            else:
                shown = "" if value is None else (
                    i18n.be_date(str(value), lang) if kind == "date" else str(value))
            out.append((f"{e.seq}:{name}",
                        f"#{e.seq} {step} · {label}" + (f" ({shown})" if shown else "")))
        out.append((f"{e.seq}:{NOTE}", f"#{e.seq} {step} · {i18n.tr(lang, 'ev.note')}"))
    return out


def offer(request: Request, principal: Any, inst: Instance, program: Program,
          events: list[Event], lang: str, step_label: Any) -> Mending:
    mine = calls.mending(engine_of(request), principal, inst, program)
    out = Mending(comment=mine.get("comment", ()), correct=mine.get("correct", ()))
    if out.correct:
        out.targets = targets(program, events, lang, step_label)
        out.files = any(f.type == "file" for t in program.transitions for f in t.evidence)
    seq = revertable(program, inst, events) if mine.get("revert") else None
    if seq is not None:
        out.revert = mine["revert"]
        step = next(e for e in events if e.seq == seq)
        out.revert_step = f"#{seq} {step_label(program, step.trigger, lang)}"
    return out


def new_value(kind: str, text: str) -> str:
    """A typed value as the engine takes it: a date as d/m/BE-year becomes BE ``Y-M-D``."""
    found = _DMY.match(text) if kind == "date" else None
    if found:
        d, m, y = found.groups()
        return f"{int(y):04d}-{int(m):02d}-{int(d):02d}"
    return text.strip()


async def _post(request: Request, instance_id: int, kind: str) -> Response:
    from workflow.service.web import instances  # the page (it imports this module)

    principal = caller(request)
    if principal is None:
        return to_login()
    data = await request.form()
    try:
        check_csrf(principal, str(data.get(CSRF_FIELD, "")))
    except WorkflowError as e:
        return error_page(request, principal, e)
    engine = engine_of(request)
    lang = lang_for(request, principal)
    values = {k: v for k, v in data.items() if k != CSRF_FIELD and isinstance(v, str)}
    role = values.get("role", "")
    try:
        if kind == "comment":
            calls.comment(engine, principal, instance_id, role=role,
                          text=values.get("text", ""))
        elif kind == "revert":
            version = values.get("version", "")
            calls.revert(engine, principal, instance_id, role=role,
                         reason=values.get("reason", ""),
                         expect_version=whole_number(version))
        else:
            seq_text, _, name = values.get("target", "").partition(":")
            seq = whole_number(seq_text)
            if seq is None or not name:
                raise _usage(lang)
            value = values.get("value", "")
            if name == NOTE:
                calls.correct(engine, principal, instance_id, seq, role=role,
                              reason=values.get("reason", ""), evidence=None,
                              note=value.strip() or None)
            else:
                inst = calls.get(engine, principal, instance_id)
                program = calls.definition(engine, principal, inst)
                events = calls.history(engine, principal, instance_id)
                trigger = next((e.trigger for e in events if e.seq == seq), "")
                kind_of = field_labels(program, trigger, lang).get(name, ("", ""))[1]
                given: object = new_value(kind_of, value)
                if kind_of == "file":
                    given = await _upload(data.get("file"), lang)
                calls.correct(engine, principal, instance_id, seq, role=role,
                              reason=values.get("reason", ""),
                              evidence={name: given}, note=KEEP)
    except EvidenceInvalid as e:
        message = "; ".join(f"{n}: {i18n.field_problem(lang, r)}" for n, r in e.problems)
        return instances.page(request, principal, instance_id, mend_failed=(kind, message,
                                                                           values), status=422)
    except WorkflowError as e:
        status = problems.status_of(e)
        if status == 401:
            return to_login()
        if status == 404 and kind != "correct":
            return error_page(request, principal, e)
        message = i18n.error_text(lang, type(e).__name__, str(e))
        if message == i18n.tr(lang, "code.WorkflowError") or type(e).__name__ in (
                "AmendRefused", "UsageError", "EventNotFound"):
            message = i18n.tr(lang, "mend.refused", detail=str(e))
        return instances.page(request, principal, instance_id,
                              mend_failed=(kind, message, values), status=status)
    return RedirectResponse(f"/instances/{instance_id}?recorded={kind}#timeline",
                            status_code=303)


async def _upload(part: object, lang: str) -> Upload:
    """The new file of a file field's correction, read to one byte past the largest file
    any field takes: its field's ``max_bytes`` and media types are the engine's to check
    (a larger file is refused there, in the field's words)."""
    if isinstance(part, UploadFile):
        content = await part.read(MAX_BYTES + 1)
        if part.filename or content:
            return Upload(part.filename or "file", content)
    from workflow.errors import UsageError

    raise UsageError(i18n.tr(lang, "mend.file_missing"))


def _usage(lang: str) -> WorkflowError:
    from workflow.errors import UsageError

    return UsageError(i18n.tr(lang, "mend.pick"))


@router.post("/instances/{instance_id}/comment")
async def comment(request: Request, instance_id: int) -> Response:
    return await _post(request, instance_id, "comment")


@router.post("/instances/{instance_id}/correct")
async def correct(request: Request, instance_id: int) -> Response:
    return await _post(request, instance_id, "correct")


@router.post("/instances/{instance_id}/revert")
async def revert(request: Request, instance_id: int) -> Response:
    return await _post(request, instance_id, "revert")
