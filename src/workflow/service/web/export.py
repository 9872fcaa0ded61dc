"""The audit log as an XLSX workbook: one row per event, one column per evidence field.

The CSV (``workflow.audit.export``) keeps an event's evidence as one JSON cell, the same file
as ``workflow audit log --format csv``; an auditor filtering by venue or participants in a
spreadsheet wants a column each, so the workbook spreads the evidence out (``evidence.date``,
``evidence.venue``, ... in the order they first appear). Thai text is kept as it is (XLSX is
UTF-8 throughout). Every text cell is written as a string, and one that a spreadsheet would
run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets
the same leading apostrophe as in the CSV (``workflow.runtime.display.csv_cell``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from workflow.records import Event, config_json
from workflow.runtime.display import csv_cell

BASE_COLUMNS = ("id", "instance", "seq", "program", "area", "trigger", "from", "to", "actor",
                "role", "auth", "at")
TAIL_COLUMNS = ("note", "prev_hash", "hash")
EVIDENCE_PREFIX = "evidence."
MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def evidence_fields(events: Sequence[Event]) -> list[str]:
    seen: dict[str, None] = {}
    for e in events:
        for name in e.evidence:
            seen.setdefault(name, None)
    return list(seen)


def _cell(sheet: WriteOnlyWorksheet, value: object) -> WriteOnlyCell:
    if isinstance(value, bool):
        value = "true" if value else "false"
    if value is None or isinstance(value, int | float):
        return WriteOnlyCell(sheet, value=value)
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    cell = WriteOnlyCell(sheet, value=csv_cell(value))
    cell.data_type = "s"
    return cell


def xlsx_bytes(events: Sequence[Event], title: str = "audit") -> bytes:
    fields = evidence_fields(events)
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title[:31])
    header = [*BASE_COLUMNS, *(EVIDENCE_PREFIX + f for f in fields), *TAIL_COLUMNS]
    sheet.append([_cell(sheet, h) for h in header])
    for e in events:
        row: list[object] = [
            e.id, e.instance, e.seq, e.program, e.area, e.trigger,
            json.dumps(config_json(e.from_), ensure_ascii=False),
            json.dumps(config_json(e.to), ensure_ascii=False),
            e.actor, e.role, e.auth, e.at,
        ]
        row += [e.evidence.get(f) for f in fields]
        row += [e.note, e.prev_hash, e.hash]
        sheet.append([_cell(sheet, v) for v in row])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()
