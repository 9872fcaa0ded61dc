"""Evidence: turning what a person typed (or an API passed) into typed, canonical values.

Evidence is what makes an audit trail worth reading, so it is checked strictly: undeclared
fields are refused (a typo must not pass silently), required fields must be there, and every
value is converted to one canonical JSON form (dates as CE ``YYYY-MM-DD``) before it is hashed.
Dates may be given in the Buddhist Era, as the source documents write them: a year of 2400 or
more is read as BE and stored as CE.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from workflow.errors import EvidenceInvalid, UsageError
from workflow.programs.model import EvidenceField, Transition
from workflow.runtime.attachments import Upload, describe, is_described
from workflow.runtime.text import ID_MAX, identifier

#: The JSON-compatible values evidence is stored as (a file: its description, a mapping).
EvidenceValue = str | int | float | bool | dict[str, Any]

BE_OFFSET = 543
BE_THRESHOLD = 2400
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TRUE = {"true", "yes", "y", "1", "on", "ใช่"}
_FALSE = {"false", "no", "n", "0", "off", "ไม่ใช่"}


#: The fiscal years workflow accepts (BE) and, the same years in CE, those an evidence date
#: may carry. Anything else is a mistyped year (``0010-01-25`` from a two-digit year in a
#: form, a BE year converted twice), never the date of a CDD activity. Other dates (a token's
#: or a grant's end, a query's bounds) may lie further out: "2999-12-31" means "never".
BE_YEARS = (BE_THRESHOLD, 2800)
CE_YEARS = (BE_YEARS[0] - BE_OFFSET, BE_YEARS[1] - BE_OFFSET)


def parse_date(value: object) -> dt.date:
    """Read a date given as ``YYYY-MM-DD`` (CE, or BE when the year is 2400 or more)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a date YYYY-MM-DD, got {_show(value)}")
    m = _DATE.match(value.strip())
    if not m:
        raise ValueError(f"expected a date YYYY-MM-DD (CE or BE), got {_show(value)}")
    year, month, day = (int(x) for x in m.groups())
    if year >= BE_THRESHOLD:
        year -= BE_OFFSET
    try:
        return dt.date(year, month, day)
    except ValueError as e:
        raise ValueError(f"{value.strip()} is not a real date ({e})") from None


def evidence_date(value: object) -> dt.date:
    """:func:`parse_date` for evidence: the year must also lie in ``CE_YEARS``."""
    date = parse_date(value)
    low, high = CE_YEARS
    if not low <= date.year <= high:
        given = value.strip() if isinstance(value, str) else date.isoformat()
        raise ValueError(
            f"{given} is outside the years a date may have: BE {low + BE_OFFSET}-"
            f"{high + BE_OFFSET} (CE {low}-{high}); check the year"
        )
    return date


def to_be(date_text: str) -> str:
    """Show a stored CE date ``YYYY-MM-DD`` with its Buddhist-Era year."""
    m = _DATE.match(date_text)
    if not m:
        return date_text
    return f"{int(m.group(1)) + BE_OFFSET:04d}-{m.group(2)}-{m.group(3)}"


def fiscal_year_of(date: dt.date) -> int:
    """The Thai fiscal year (BE) a date falls in: FY N runs 1 Oct N-1 to 30 Sep N."""
    return date.year + BE_OFFSET + (1 if date.month >= 10 else 0)


def check_fiscal_year(value: object) -> int:
    """A fiscal year is Buddhist Era; a CE year is a likely mistake worth a clear message."""
    try:
        year = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise UsageError(
            f"fiscal year must be a Buddhist-Era year such as 2564, not {_show(value)}"
        ) from None
    if isinstance(value, bool) or not BE_YEARS[0] <= year <= BE_YEARS[1]:
        hint = f" (did you mean {year + BE_OFFSET}?)" if CE_YEARS[0] <= year <= CE_YEARS[1] else ""
        raise UsageError(f"fiscal year must be a Buddhist-Era year such as 2564, not {year}{hint}")
    return year


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def convert(field: EvidenceField, value: object) -> EvidenceValue:
    """Convert one value to the field's type; ``ValueError`` says why it does not fit."""
    t = field.type
    if t == "text":
        if not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expected text, got {_show(value)}")
            value = str(value)
        text = value.strip()
        if not text:
            raise ValueError("is empty")
        if "\x00" in text:
            raise ValueError("contains a NUL character")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("is not valid UTF-8 text") from None
        if len(text) > field.max_length:
            raise ValueError(f"is {len(text)} characters long, at most {field.max_length} allowed")
        return text
    if t == "integer":
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {_show(value)}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            try:
                value = int(value.strip().replace(",", ""))
            except ValueError:
                raise ValueError(f"expected a whole number, got {_show(value)}") from None
        if not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {_show(value)}")
        if abs(value) > 2**53:
            raise ValueError(f"{value} is too large")
        _bounds(field, value)
        return value
    if t == "number":
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {_show(value)}")
        if isinstance(value, str):
            try:
                value = float(value.strip().replace(",", ""))
            except ValueError:
                raise ValueError(f"expected a number, got {_show(value)}") from None
        if not isinstance(value, int | float) or not _finite(value):
            raise ValueError(f"expected a finite number, got {_show(value)}")
        number = float(value)
        _bounds(field, number)
        # Whole numbers are kept as integers so that 25 and 25.0 hash the same.
        return int(number) if number.is_integer() and abs(number) <= 2**53 else number
    if t == "date":
        return evidence_date(value).isoformat()
    if t == "file":
        if isinstance(value, Upload):
            return describe(value, field.max_bytes, field.media_types)
        if isinstance(value, Mapping) and is_described(value):
            # already stored (a correction keeps it as it was)
            return {str(k): v for k, v in value.items()}
        raise ValueError("expected a file (--attach FIELD=PATH, or multipart)")
    if t == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {_show(value)}")
    # choice
    choice = (
        unicodedata.normalize("NFC", str(value)).strip()
        if isinstance(value, str | int) and not isinstance(value, bool)
        else None
    )
    if choice is None or choice not in field.choices:
        raise ValueError(f"must be one of {', '.join(field.choices)}, got {_show(value)}")
    return choice


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _bounds(field: EvidenceField, value: float) -> None:
    if field.min is not None and value < field.min:
        raise ValueError(f"{value} is below the minimum {field.min:g}")
    if field.max is not None and value > field.max:
        raise ValueError(f"{value} is above the maximum {field.max:g}")


def validate(transition: Transition, raw: Mapping[str, object] | None) -> dict[str, EvidenceValue]:
    """Check and convert the evidence for ``transition``; raise :class:`EvidenceInvalid`
    naming every undeclared, invalid and missing field at once (a person filling in a form
    should not discover them one attempt at a time)."""
    raw = raw or {}
    fields = {f.name: f for f in transition.evidence}
    out: dict[str, EvidenceValue] = {}
    problems: list[tuple[str, str]] = []
    for name, value in raw.items():
        field = fields.get(name)
        if field is None:
            known = ", ".join(fields) or "none"
            problems.append((str(name), f"not declared (declared: {known})"))
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            continue  # an empty optional value is no value; required ones are caught below
        try:
            out[name] = convert(field, value)
        except ValueError as e:
            problems.append((name, str(e)))
    invalid = {name for name, _ in problems}
    for field in transition.evidence:
        if field.required and field.name not in out and field.name not in invalid:
            problems.append((field.name, "required but missing"))
    if problems:
        raise EvidenceInvalid.of(transition.trigger, problems)
    # Canonical order: the definition's, so the stored JSON does not depend on the caller.
    return {f.name: out[f.name] for f in transition.evidence if f.name in out}


def parse_assignments(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Read ``FIELD=VALUE`` pairs from the command line; a field name takes the canonical
    form of every typed identifier (``workflow.runtime.text``)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        name = identifier(name, "evidence field name", ID_MAX)
        if name in out:
            raise UsageError(f"--set {name} given twice")
        out[name] = value
    return out


def fiscal_year_bounds(year: int) -> tuple[dt.date, dt.date]:
    """The first and last day of Buddhist-Era fiscal year ``year`` (1 Oct to 30 Sep)."""
    return dt.date(year - BE_OFFSET - 1, 10, 1), dt.date(year - BE_OFFSET, 9, 30)


def check_within(
    transition: Transition, typed: Mapping[str, EvidenceValue], fiscal_year: int
) -> None:
    """Refuse (:class:`EvidenceInvalid`) a date declared ``within: fiscal_year`` that falls
    outside the instance's fiscal year, naming the year's bounds in BE."""
    first, last = fiscal_year_bounds(fiscal_year)
    problems = []
    for f in transition.evidence:
        value = typed.get(f.name)
        if f.within != "fiscal_year" or not isinstance(value, str):
            continue
        day = dt.date.fromisoformat(value)
        if not first <= day <= last:
            problems.append(
                (
                    f.name,
                    f"{to_be(value)} is outside fiscal year {fiscal_year} "
                    f"({to_be(first.isoformat())} to {to_be(last.isoformat())})",
                )
            )
    if problems:
        raise EvidenceInvalid.of(transition.trigger, problems)

