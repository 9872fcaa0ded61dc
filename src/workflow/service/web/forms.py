"""Forms generated from a program definition: one per transition the caller may fire.

Each evidence field becomes a labelled control by its type: ``text`` an input (a textarea for
long free text such as a summary), ``integer`` and ``number`` a numeric input with the
definition's min/max, ``choice`` a select, ``boolean`` a yes/no select, ``date`` three controls
(day, Thai month name, Buddhist-Era year) so that a date is typed and read in BE with no script,
``file`` a file input accepting the field's ``media_types`` (a phone offers its camera for
images) and the form is then sent as ``multipart/form-data``.
Required fields are marked and come first; optional ones are folded into a ``<details>``.

Reading a post back (:func:`read`) gives the evidence as the engine takes it (dates as BE
``YYYY-MM-DD``; the engine stores CE) plus the problems only the form can see (a date given in
part). The engine decides everything else: its ``EvidenceInvalid.problems`` are shown next to
the fields they name.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workflow.programs.model import EvidenceField, Program, Transition
from workflow.runtime.attachments import DEFAULT_MAX_BYTES, Upload
from workflow.runtime.evidence import BE_OFFSET
from workflow.service.web import i18n

#: Text fields with these names get a multi-line box.
LONG_TEXT = frozenset({"summary", "executive_summary", "topics", "reason", "note", "description"})


@dataclass
class Control:
    """One field of a generated form, ready for the template."""

    name: str
    label: str
    kind: str  # text | textarea | number | select | date | file
    required: bool
    step: str = ""
    min: str = ""
    max: str = ""
    options: list[tuple[str, str]] = field(default_factory=list)
    value: str = ""
    day: str = ""
    month: str = ""
    year: str = ""
    error: str = ""
    hint: str = ""
    #: A file field: the ``accept`` attribute (its media types) and the most it takes.
    accept: str = ""
    max_bytes: int = 0


@dataclass
class FireForm:
    """The form of one trigger on one instance."""

    trigger: str
    label: str
    description: str
    roles: tuple[str, ...]
    required: list[Control]
    optional: list[Control]
    note: str = ""
    role: str = ""
    error: str = ""
    open: bool = False

    @property
    def controls(self) -> list[Control]:
        return self.required + self.optional

    @property
    def multipart(self) -> bool:
        """Whether the form takes a file (and so is sent as ``multipart/form-data``)."""
        return any(c.kind == "file" for c in self.controls)


def transition_for(program: Program, trigger: str, active: Sequence[str]) -> Transition | None:
    """The transition ``trigger`` takes from the configuration ``active``."""
    for t in program.transitions_for(trigger):
        for source in t.sources:
            if source == "*" or any(
                leaf == source or leaf.startswith(source + ".") for leaf in active
            ):
                return t
    found = program.transitions_for(trigger)
    return found[0] if found else None


def _num(value: float | None, integer: bool) -> str:
    if value is None:
        return ""
    return str(int(value)) if integer or float(value).is_integer() else str(value)


def control(f: EvidenceField, lang: str) -> Control:
    label = f.label.get(lang) if f.label else f.name
    c = Control(name=f.name, label=label, kind="text", required=f.required)
    hints = []
    if f.type in ("integer", "number"):
        c.kind = "number"
        c.step = "1" if f.type == "integer" else "any"
        c.min = _num(f.min, f.type == "integer")
        c.max = _num(f.max, f.type == "integer")
        if c.min:
            hints.append(i18n.tr(lang, "form.min", n=c.min))
        if c.max:
            hints.append(i18n.tr(lang, "form.max", n=c.max))
    elif f.type == "choice":
        c.kind = "select"
        c.options = [(v, v) for v in f.choices]
    elif f.type == "boolean":
        c.kind = "select"
        c.options = [("true", i18n.tr(lang, "form.yes")), ("false", i18n.tr(lang, "form.no"))]
    elif f.type == "date":
        c.kind = "date"
    elif f.type == "file":
        c.kind = "file"
        c.accept = ",".join(f.media_types)
        c.max_bytes = f.max_bytes if f.max_bytes is not None else DEFAULT_MAX_BYTES
        hints.append(i18n.tr(lang, "form.file_max", size=i18n.file_size(c.max_bytes, lang)))
        if f.media_types:
            hints.append(i18n.tr(lang, "form.file_types", types=", ".join(f.media_types)))
    elif f.name in LONG_TEXT:
        c.kind = "textarea"
    c.hint = ", ".join(hints)
    return c


def fire_form(
    program: Program, trigger: str, active: Sequence[str], roles: Sequence[str], lang: str
) -> FireForm:
    t = transition_for(program, trigger, active)
    fields = t.evidence if t else ()
    controls = [control(f, lang) for f in fields]
    return FireForm(
        trigger=trigger,
        label=t.label.get(lang) if t else trigger,
        description=t.description.get(lang) if t and t.description else "",
        roles=tuple(roles),
        required=[c for c in controls if c.required],
        optional=[c for c in controls if not c.required],
        role=roles[0] if roles else "",
    )


def date_parts(prefix: str) -> tuple[str, str, str]:
    return (f"{prefix}__d", f"{prefix}__m", f"{prefix}__y")


def whole_number(text: str, digits: int = 18) -> int | None:
    """A number typed into a form, or None: digits ``int`` reads (``isdecimal``; ``isdigit``
    also passes "²", which ``int`` refuses; Thai digits are read), at most ``digits`` of
    them (``int`` refuses thousands of digits)."""
    return int(text) if text.isdecimal() and len(text) <= digits else None


def date_value(data: Mapping[str, Any], prefix: str) -> str | None:
    """The date a post gives in the day, month and BE year controls of ``prefix``, as BE
    ``YYYY-MM-DD`` (the engine reads it); None when all three are empty, ``ValueError`` when
    it is given in part or not in digits (:func:`whole_number`)."""
    d, m, y = (str(data.get(k, "")).strip() for k in date_parts(prefix))
    if not (d or m or y):
        return None
    day, month, year = (whole_number(x, 4) for x in (d, m, y))
    if day is None or month is None or year is None:
        raise ValueError("a date given in part")
    return f"{year:04d}-{month:02d}-{day:02d}"


def read(form: FireForm, data: Mapping[str, Any], lang: str,
         files: Mapping[str, Upload | int] | None = None,
         ) -> tuple[dict[str, object], dict[str, str]]:
    """The evidence a post gives for ``form`` (values kept on the form for a re-display), and
    the problems the form itself finds (field -> message). ``files`` are the post's file
    parts as the route read them: an :class:`Upload`, or the size of one larger than its
    field takes (read no further)."""
    evidence: dict[str, object] = {}
    local: dict[str, str] = {}
    for c in form.controls:
        if c.kind == "file":
            given = (files or {}).get(c.name)
            if isinstance(given, Upload):
                evidence[c.name] = given
                c.value = given.name  # a file input cannot be refilled: say which it was
            elif given is not None:
                local[c.name] = i18n.tr(lang, "form.file_too_big",
                                        size=i18n.file_size(c.max_bytes, lang))
        elif c.kind == "date":
            c.day, c.month, c.year = (str(data.get(k, "")).strip() for k in date_parts(c.name))
            try:
                value = date_value(data, c.name)
            except ValueError:
                local[c.name] = i18n.tr(lang, "form.date_incomplete")
                continue
            if value is not None:
                evidence[c.name] = value
        else:
            raw = data.get(c.name, "")
            value = raw if isinstance(raw, str) else ""  # a file part where text is wanted
            c.value = value
            if value.strip():
                evidence[c.name] = value
    form.note = str(data.get("note", ""))
    return evidence, local


def mark(form: FireForm, problems: Mapping[str, str]) -> None:
    """Put each problem next to its field (a problem naming no field goes to the form)."""
    by_name = {c.name: c for c in form.controls}
    other = []
    for name, message in problems.items():
        if name in by_name:
            by_name[name].error = message
        else:
            other.append(f"{name}: {message}")
    if other:
        form.error = "; ".join(other)
    form.open = True


def prefill_dates(form: FireForm, fiscal_year: int, today: dt.date | None = None) -> None:
    """Offer a year (BE) in empty date fields, so that a date is a day and a month away: this
    year when it is one of the instance's fiscal year's two calendar years (FY N runs from
    October N-1 to September N), else N (an instance of an earlier year is being caught up:
    this year's date would be outside it)."""
    this = (today or dt.date.today()).year + BE_OFFSET
    year = str(this if this in (fiscal_year - 1, fiscal_year) else fiscal_year)
    for c in form.controls:
        if c.kind == "date" and c.required and not (c.day or c.month or c.year):
            c.year = year
