"""The audit log as a file people open in a spreadsheet: CSV, UTF-8 with a byte-order mark.

Why here and not in the command line: ``workflow audit log --format csv`` and the web pages'
download button must hand auditors the same file, cell for cell. Two things make it more than
``csv.writer``: Excel reads UTF-8 Thai text correctly only after a BOM, and a cell a spreadsheet
would run as a formula (``=HYPERLINK(...)`` typed as a note) must arrive as text. Every cell
passes through :func:`workflow.runtime.display.csv_cell`; ``csv_value`` reads one back.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence

from workflow.records import Event
from workflow.runtime.display import csv_cell

__all__ = ["CSV_COLUMNS", "csv_bytes", "csv_rows"]

#: The header row, in column order: every field of an event, hashes last.
CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "instance",
    "seq",
    "program",
    "area",
    "trigger",
    "from",
    "to",
    "actor",
    "role",
    "os_user",
    "at",
    "evidence",
    "note",
    "prev_hash",
    "hash",
)


def csv_rows(events: Iterable[Event]) -> Iterator[list[str]]:
    """The header, then one row per event: configurations and evidence as JSON (evidence with
    sorted keys), an absent note as "", and no cell that a spreadsheet would run as a formula."""
    yield list(CSV_COLUMNS)
    for e in events:
        d = e.to_dict()
        yield [
            csv_cell(v)
            for v in (
                e.id,
                e.instance,
                e.seq,
                e.program,
                e.area,
                e.trigger,
                json.dumps(d["from"], ensure_ascii=False),
                json.dumps(d["to"], ensure_ascii=False),
                e.actor,
                e.role,
                e.os_user,
                e.at,
                json.dumps(d["evidence"], ensure_ascii=False, sort_keys=True),
                e.note or "",
                e.prev_hash,
                e.hash,
            )
        ]


def csv_bytes(events: Sequence[Event]) -> bytes:
    """The whole file: a UTF-8 BOM (so that Excel opens the Thai text correctly), then
    :func:`csv_rows` with CRLF line ends, encoded as UTF-8."""
    buf = io.StringIO()
    buf.write("\ufeff")
    csv.writer(buf, lineterminator="\r\n").writerows(csv_rows(events))
    return buf.getvalue().encode("utf-8")
