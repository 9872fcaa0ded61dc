"""My work (``/``), the instance page (``/instances/{id}``), its fire form and its diagram.

My work lists the instances where the caller can fire something now (``calls.my_work``: the
library's ``workflow.engine.work``, the same answer as ``show --actor``), grouped by program
and next step. The instance page shows the facts, a stage tracker (khok-nong-na's seven
lanes), one form per action the caller may take (generated from the definition), the
timeline and the diagram. A fire posts the version the page was drawn at: a concurrent change
is answered with "someone else just recorded ..." and a reload.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from workflow.errors import EvidenceInvalid, VersionConflict, WorkflowError
from workflow.programs.model import Program
from workflow.records import Event, Instance
from workflow.runtime import evidence as _evidence
from workflow.runtime.attachments import Upload, is_described
from workflow.service import calls, downloads, problems
from workflow.service.auth import CSRF_FIELD
from workflow.service.web import forms, i18n, mending, places
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

#: My work shows at most this many instances per group (the count says how many there are).
GROUP_SHOWN = 50
#: The most parts a fire form's post may have (its fields are a definition's few).
FORM_MAX_FILES = 20
FORM_MAX_FIELDS = 200


# --------------------------------------------------------------------------- helpers


def state_label(program: Program, inst: Instance, lang: str) -> str:
    return program.label_of_state(inst.state, lang)


#: Events that are not a program's steps, named by the catalogue.
SPECIAL = ("start", "comment", "correct", "revert", "migrate", "overdue")


def step_label(program: Program, trigger: str, lang: str) -> str:
    if trigger in SPECIAL:
        return i18n.tr(lang, f"ev.{trigger}")
    found = program.transitions_for(trigger)
    return found[0].label.get(lang) if found else trigger


def _anywhere(program: Program | None, trigger: str) -> bool:
    """A trigger that leaves from any state (cancel): not what "next step" means."""
    return program is not None and all(
        "*" in t.sources for t in program.transitions_for(trigger))


def role_label(role: str) -> str:
    return role


def tracker(
    program: Program, inst: Instance, events: list[Event], lang: str
) -> list[dict[str, str]]:
    """The top-level states: done (visited, left), current, or to do (never reached;
    a final state never reached is left out unless nothing else remains)."""
    visited: set[str] = set()
    for e in events:
        for path in e.to:
            visited.add(path.split(".")[0])
    out = []
    for s in program.states:
        if s.name == inst.state:
            status = "current"
        elif s.name in visited:
            status = "done"
        elif s.final and s.name != inst.state:
            continue
        else:
            status = "todo" if not inst.final else ""
            if not status:
                continue
        out.append({"label": s.label.get(lang), "status": status})
    return out


def lanes(
    program: Program, inst: Instance, events: list[Event], lang: str
) -> list[dict[str, str]]:
    """The regions of the program's parallel state, each pending, underway or done."""
    parallel = next((s for s in program.states if s.regions), None)
    if parallel is None:
        return []
    reached = any(p.split(".")[0] == parallel.name for e in events for p in e.to)
    out = []
    for region in parallel.regions:
        prefix = f"{parallel.name}.{region.name}."
        leaves = [p for p in inst.active if p.startswith(prefix)]
        if leaves:
            leaf = leaves[0][len(prefix):]
            final = {s.name for s in region.states if s.final}
            status = ("done" if leaf in final else "pending" if leaf == region.initial
                      else "underway")
        else:
            status = "done" if reached else "pending"
        label = region.label.get(lang) if region.label else region.name
        out.append({"label": label, "status": status, "name": region.name})
    return out


@dataclass(frozen=True)
class FileShown:
    """A file in the timeline: what it is ("name (size, type)") and where to get it (None for
    a file as first recorded and since replaced: only the current one is served)."""

    text: str
    name: str
    href: str | None = None
    image: bool = False
    corrected: bool = False

    def __str__(self) -> str:
        return self.text


def file_text(value: Mapping[str, Any], lang: str) -> str:
    return i18n.tr(lang, "ev.file", name=value["name"],
                   size=i18n.file_size(int(value["bytes"]), lang),
                   media_type=value["media_type"])


def show_value(value: object, kind: str, lang: str) -> str:
    if is_described(value):
        assert isinstance(value, Mapping)
        return file_text(value, lang)
    if kind == "date" and isinstance(value, str):
        return i18n.be_date(value, lang)
    if isinstance(value, bool):
        return i18n.tr(lang, "yes" if value else "no")
    return str(value)


def _config(program: Program, config: tuple[str, ...] | None, lang: str) -> str:
    """A configuration as state labels (a parallel one: its top state's label)."""
    if not config:
        return ""
    tops = list(dict.fromkeys(p.split(".")[0] for p in config))
    return ", ".join(program.label_of_state(t, lang) for t in tops)


def _shown_evidence(program: Program, trigger: str, evidence: Any, lang: str,
                    link: tuple[int, int] | None = None, first: Any = None,
                    ) -> list[tuple[str, str | FileShown]]:
    """The evidence as (label, text) pairs; a file as a :class:`FileShown`, linked to its
    page route when ``link`` (instance, seq) is given, marked corrected when it differs from
    the ``first`` evidence."""
    found = program.transitions_for(trigger)
    fields = {f.name: f for t in found for f in t.evidence}
    shown: list[tuple[str, str | FileShown]] = []
    for k, v in evidence.items():
        f = fields.get(k)
        label = f.label.get(lang) if f and f.label else k
        if is_described(v):
            before = (first or {}).get(k)
            shown.append((label, FileShown(
                text=file_text(v, lang), name=str(v["name"]),
                href=f"/instances/{link[0]}/files/{link[1]}/{quote(k, safe='')}"
                if link else None,
                image=str(v["media_type"]) in downloads.INLINE_TYPES,
                corrected=first is not None and not (
                    isinstance(before, Mapping) and before.get("sha256") == v["sha256"]))))
            continue
        shown.append((label, show_value(v, f.type if f else "", lang)))
    return shown


def _special(program: Program, e: Event, lang: str,
             by_seq: dict[int, Event]) -> tuple[list[tuple[str, str]], str]:
    """The readable evidence of an event that is not a program step, and its heading's
    detail."""
    ev: Any = e.evidence
    t = i18n.tr
    if e.trigger == "start":
        out = [(t(lang, "inst.program"), program.title.get(lang)),
               (t(lang, "inst.area"), places.full_name_of(str(ev.get("area", "")), lang)),
               (t(lang, "inst.fy"), str(ev.get("fiscal_year", "")))]
        if ev.get("title"):
            out.append((t(lang, "start.title_field"), str(ev["title"])))
        return out, ""
    if e.trigger in ("correct", "revert"):
        target = by_seq.get(ev.get("of_seq"))
        what = f"#{ev.get('of_seq')}" + (
            f" {step_label(program, target.trigger, lang)}" if target else "")
        out = []
        if e.trigger == "correct":
            kinds = {f.name: f for tr in (program.transitions_for(target.trigger)
                                          if target else []) for f in tr.evidence}
            for name, change in (ev.get("changes") or {}).items():
                f = kinds.get(name)
                label = f.label.get(lang) if f and f.label else name
                kind = f.type if f else ""
                old, new = (change.get("old"), change.get("new")) if isinstance(
                    change, dict) else (None, None)
                out.append((label, t(lang, "mend.change",
                                     old=show_value(old, kind, lang) if old is not None else "—",
                                     new=show_value(new, kind, lang) if new is not None else "—")))
            note = ev.get("note")
            if isinstance(note, dict):
                out.append((t(lang, "ev.note"), t(lang, "mend.change",
                                                  old=note.get("old") or "—",
                                                  new=note.get("new") or "—")))
        else:
            out.append((t(lang, "mend.back_to"), _config(program, e.to, lang)))
        out.append((t(lang, "mend.reason"), str(ev.get("reason", ""))))
        return out, what
    if e.trigger == "migrate":
        return [(t(lang, "mend.versions"),
                 f"v{ev.get('from_version')} → v{ev.get('to_version')}"),
                (t(lang, "mend.from"), _config(program, e.from_, lang)),
                (t(lang, "mend.to"), _config(program, e.to, lang))], ""
    if e.trigger == "overdue":
        return [(t(lang, "inst.state"), program.label_of_state(
                    str(ev.get("state", "")).split(".")[0], lang)),
                (t(lang, "inst.due"), i18n.be_datetime(str(ev.get("due_at", "")), lang))], ""
    return [], ""


def timeline(program: Program, events: list[Event], lang: str) -> list[dict[str, Any]]:
    out = []
    by_seq = {e.seq: e for e in events}
    for e in events:
        detail = ""
        original: list[tuple[str, str | FileShown]] = []
        shown: list[tuple[str, str | FileShown]]
        if e.trigger in SPECIAL:
            special, detail = _special(program, e, lang, by_seq)
            shown = list(special)
        elif e.corrected_by:
            original = _shown_evidence(program, e.trigger, e.evidence, lang)
            shown = _shown_evidence(program, e.trigger, e.corrected_evidence or {}, lang,
                                    (e.instance or 0, e.seq), first=e.evidence)
        else:
            shown = _shown_evidence(program, e.trigger, e.evidence, lang,
                                    (e.instance or 0, e.seq))
        note = e.corrected_note if e.corrected_by else e.note
        out.append({
            "seq": e.seq, "step": step_label(program, e.trigger, lang), "detail": detail,
            "kind": e.trigger if e.trigger in SPECIAL else "step", "actor": e.actor,
            "role": e.role, "at": e.at, "when": i18n.be_datetime(e.at, lang),
            "evidence": shown, "original": original,
            "original_note": e.note if e.corrected_by and e.note != note else None,
            "corrected_by": list(e.corrected_by), "note": note, "hash": e.hash,
        })
    return out


def area_options(lang: str) -> list[tuple[str, str]]:
    return []


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- my work


@router.get("/")
def home(request: Request) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    engine = engine_of(request)
    lang = lang_for(request, principal)
    q = request.query_params
    area = (q.get("area") or "").strip() or None
    fy_raw = q.get("fiscal_year")
    fiscal_year = None if fy_raw == "all" else (_int(fy_raw) or year_now())
    program = q.get("program") or None
    state = q.get("state") or None
    problem = None
    try:
        items = calls.my_work(engine, principal, program=program, state=state, area=area,
                              fiscal_year=fiscal_year)
    except WorkflowError as e:
        items = []
        problem = i18n.error_text(lang, type(e).__name__, str(e))
    widened = None
    if not items and problem is None and fy_raw is None and fiscal_year is not None:
        # Nothing this fiscal year (the default): show every year rather than an empty page.
        items = calls.my_work(engine, principal, program=program, state=state, area=area,
                              fiscal_year=None)
        if items:
            widened = i18n.tr(lang, "work.widened", fy=fiscal_year)
            fiscal_year = None
    # Overdue first (CONTRACT §10), then as the library gives them (oldest first).
    items = sorted(items, key=lambda it: not it.instance.overdue)
    overdue = sum(1 for it in items if it.instance.overdue)
    programs = calls.programs(engine)
    defs = {p.id: p for p in programs}
    groups: OrderedDict[tuple[str, tuple[str, ...]], dict[str, Any]] = OrderedDict()
    mains: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
    for it in items:
        inst = it.instance
        definition = defs.get(inst.program)
        title = definition.title.get(lang) if definition else inst.program
        main = mains.get((inst.program, it.triggers))
        if main is None:
            main = mains[(inst.program, it.triggers)] = tuple(
                t for t in it.triggers if not _anywhere(definition, t)) or it.triggers
        key = (inst.program, main)
        if key not in groups:
            steps = ", ".join(step_label(definition, t, lang) if definition else t
                              for t in main) or i18n.tr(lang, "due.overdue")
            groups[key] = {"program": title, "step": steps, "entries": [], "count": 0,
                           "program_id": inst.program, "state_id": inst.state}
        group = groups[key]
        group["count"] += 1
        if len(group["entries"]) >= GROUP_SHOWN:
            continue
        group["entries"].append({
            "instance": inst,
            "area": places.full_name(inst.area, lang),
            "state": definition.label_of_state(inst.state, lang) if definition else inst.state,
            "due": i18n.be_due(inst.due_at, lang), "overdue": inst.overdue,
            "escalated": ", ".join(it.escalated),
        })
    states = sorted({(s.name, s.label.get(lang)) for p in programs for s in p.states
                     if program in (None, p.id)}, key=lambda x: x[1])
    this = year_now()
    ctx = context(
        request, principal, title=i18n.tr(lang, "work.title"),
        groups=list(groups.values()), total=len(items), area=area or "",
        fiscal_year=fiscal_year, program=program, state=state, programs=programs,
        states=states, years=list(range(this + 1, this - 6, -1)), problem=problem,
        filtered=bool(area or program or state or fy_raw), area_options=area_options(lang),
        widened=widened, overdue=overdue,
    )
    return render("work.html", ctx)


@router.get("/areas/suggest")
def suggest(request: Request, q: str = "") -> Response:
    principal = caller(request)
    if principal is None:
        return JSONResponse([], status_code=401)
    lang = lang_for(request, principal)
    return JSONResponse([{"code": c, "name": n} for c, n in places.suggest(q, lang)])


# --------------------------------------------------------------------------- instance


def page(
    request: Request,
    principal: Any,
    instance_id: int,
    *,
    failed: forms.FireForm | None = None,
    conflict: str | None = None,
    mend_failed: tuple[str, str, dict[str, str]] | None = None,
    status: int = 200,
) -> Response:
    engine = engine_of(request)
    lang = lang_for(request, principal)
    try:
        inst = calls.get(engine, principal, instance_id)
        program = calls.definition(engine, principal, inst)
        events = calls.history(engine, principal, instance_id)
        mine = calls.actions(engine, principal, inst, program)
    except WorkflowError as e:
        return error_page(request, principal, e)
    built = []
    for trigger, roles in mine.items():
        if failed is not None and failed.trigger == trigger:
            built.append(failed)
            continue
        form = forms.fire_form(program, trigger, inst.active, roles, lang)
        forms.prefill_dates(form, inst.fiscal_year)
        built.append(form)
    recorded = request.query_params.get("recorded")
    mend = mending.offer(request, principal, inst, program, events, lang, step_label)
    if mend_failed is not None:
        mend.failed, mend.error, mend.values = mend_failed
    elif request.query_params.get("correct"):
        mend.values = {"target": f"{request.query_params['correct']}:"}
    ctx = context(
        request, principal,
        title=f"{program.title.get(lang)} · {places.full_name(inst.area, lang)}",
        inst=inst, program_title=program.title.get(lang),
        area_text=places.full_name(inst.area, lang), state_label=state_label(program, inst, lang),
        tracker=tracker(program, inst, events, lang), lanes=lanes(program, inst, events, lang),
        forms=built, events=list(reversed(timeline(program, events, lang))),
        recorded=step_label(program, recorded, lang) if recorded else None,
        conflict=conflict, svg=shutil.which("dot") is not None,
        mermaid="" if shutil.which("dot") else calls.diagram(
            engine, principal, inst.program, "mermaid", lang, inst.id),
        months=i18n.months(lang), role_label=role_label, mend=mend,
        due=i18n.be_due(inst.due_at, lang),
        correctable={int(v.split(":")[0]) for v, _ in mend.targets},
    )
    return render("instance.html", ctx, status)


@router.get("/instances/{instance_id}")
def instance_page(request: Request, instance_id: int) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    return page(request, principal, instance_id)


@router.post("/instances/{instance_id}/fire")
async def fire(request: Request, instance_id: int) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    # Files are spooled to disk by the parser; each is read below up to its field's limit.
    data = await request.form(max_files=FORM_MAX_FILES, max_fields=FORM_MAX_FIELDS)
    try:
        check_csrf(principal, str(data.get(CSRF_FIELD, "")))
    except WorkflowError as e:
        return error_page(request, principal, e)
    engine = engine_of(request)
    lang = lang_for(request, principal)
    trigger = str(data.get("trigger", ""))
    role = str(data.get("role", ""))
    version = _int(str(data.get("version", "")))
    try:
        inst = calls.get(engine, principal, instance_id)
        program = calls.definition(engine, principal, inst)
    except WorkflowError as e:
        return error_page(request, principal, e)
    form = forms.fire_form(program, trigger, inst.active, (role,) if role else (), lang)
    mine = calls.actions(engine, principal, inst, program)
    if trigger in mine:
        form.roles = mine[trigger]
    form.role = role
    evidence, local = forms.read(form, data, lang, await _files(form, data))
    if local:
        transition = forms.transition_for(program, trigger, inst.active)
        found = dict(local)
        if transition is not None:
            try:
                _evidence.validate(transition, evidence)
            except EvidenceInvalid as e:
                for name, reason in e.problems:
                    found.setdefault(name, i18n.field_problem(lang, reason))
        forms.mark(form, found)
        form.error = i18n.tr(lang, "inst.fix")
        return page(request, principal, instance_id, failed=form, status=422)
    note = form.note.strip() or None
    try:
        calls.fire(engine, principal, instance_id, trigger, role=role, evidence=evidence,
                   note=note, expect_version=version, key=None)
    except EvidenceInvalid as e:
        forms.mark(form, {n: i18n.field_problem(lang, r) for n, r in e.problems})
        form.error = i18n.tr(lang, "inst.fix")
        return page(request, principal, instance_id, failed=form, status=422)
    except VersionConflict:
        events = calls.history(engine, principal, instance_id)
        last = step_label(program, events[-1].trigger, lang) if events else "?"
        form.open = True
        return page(request, principal, instance_id, failed=form,
                              conflict=i18n.tr(lang, "inst.conflict", step=last), status=409)
    except WorkflowError as e:
        status = problems.status_of(e)
        if status in (401,):
            return to_login()
        form.error = i18n.error_text(lang, type(e).__name__, str(e))
        form.open = True
        return page(request, principal, instance_id, failed=form, status=status)
    return RedirectResponse(f"/instances/{instance_id}?recorded={trigger}", status_code=303)


async def _files(form: forms.FireForm, data: FormData) -> dict[str, Upload | int]:
    """The files a post gives for ``form``'s file fields, each read up to its field's
    ``max_bytes`` (one larger is given as its size so far: refused without reading on). A
    file input left empty (no name, no bytes) gives nothing."""
    out: dict[str, Upload | int] = {}
    for c in form.controls:
        part = data.get(c.name)
        if c.kind != "file" or not isinstance(part, UploadFile):
            continue
        content = await part.read(c.max_bytes + 1)
        if not part.filename and not content:
            continue
        out[c.name] = (Upload(part.filename or c.name, content) if len(content) <= c.max_bytes
                       else len(content))
    return out


@router.get("/instances/{instance_id}/files/{seq}/{field}")
def file_download(request: Request, instance_id: int, seq: int, field: str) -> Response:
    """A file an event recorded (``workflow attachments get``), for whoever may read the
    instance: an image the program allowed is shown inline (``?download=1``: saved
    instead), anything else is always a download (``workflow.service.downloads``)."""
    principal = caller(request)
    if principal is None:
        return to_login()
    try:
        value, data = calls.attachment(engine_of(request), principal, instance_id, seq, field)
    except WorkflowError as e:
        return error_page(request, principal, e)
    inline = request.query_params.get("download") is None
    return downloads.file_response(request, value, data, inline=inline)


@router.get("/instances/{instance_id}/diagram.svg")
def diagram_svg(request: Request, instance_id: int) -> Response:
    principal = caller(request)
    if principal is None:
        return to_login()
    engine = engine_of(request)
    lang = i18n.lang_of(request.query_params.get("lang"))
    try:
        inst = calls.get(engine, principal, instance_id)
        text = calls.diagram(engine, principal, inst.program, "dot", lang, instance_id)
    except WorkflowError as e:
        return error_page(request, principal, e)
    dot = shutil.which("dot")
    if dot is None:
        return Response(text, media_type="text/plain; charset=utf-8", status_code=404)
    done = subprocess.run([dot, "-Tsvg"], input=text.encode(), capture_output=True,
                          timeout=20, check=False)
    if done.returncode != 0:
        return Response("diagram failed", media_type="text/plain", status_code=500)
    return Response(done.stdout, media_type="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=60"})
