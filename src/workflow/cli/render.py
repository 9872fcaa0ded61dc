"""How results look: tables and event blocks for people, JSON for scripts.

Every character a command prints passes through here. Stored text (names, notes, evidence) is
escaped on the way (:func:`cell`, :func:`say`, workflow.runtime.display) so it never drives the
terminal, and output is UTF-8 whatever the locale says, so Thai text survives any pipe. The
renderers of records that more than one command prints (a history, a report) live here too.
rich is imported inside the functions: ``workflow --help`` does not pay for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from workflow.records import Event, Report


def emit_json(data: Any) -> None:
    # UTF-8 bytes whatever the locale says: Thai text must survive a latin-1 or cp1252 pipe.
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    # json escapes C0 controls itself; C1 controls and bidi/format characters would reach the
    # terminal raw, so they are written as JSON escapes too (the same string once parsed).
    if not text.isascii():
        text = "".join(c if c.isprintable() or c == "\n" else f"\\u{ord(c):04x}" for c in text)
    write_bytes(text.encode("utf-8"))


def write_bytes(data: bytes) -> None:
    """Bytes to stdout as they are (a CSV file, UTF-8 text), after any text printed before."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def say(text: object) -> None:
    """Print one message to a person: stored text in it is escaped (workflow.runtime.display)."""
    from workflow.runtime.display import printable

    click.echo(printable(text, multiline=True))


def cell(value: Any) -> str:
    """The text of one value in human-readable output (table cells and event blocks alike):
    the single place where a value becomes terminal text, with control characters escaped
    (workflow.runtime.display) so stored text never drives the terminal."""
    from workflow.runtime.display import printable

    return "" if value is None else printable(value, multiline=True)


def sane_terminal_size() -> None:
    """Drop a ``COLUMNS`` or ``LINES`` that is no sensible size: rich reads them with
    ``str.isdigit`` then ``int``, which a superscript digit or 5,000 digits crashes."""
    for name in ("COLUMNS", "LINES"):
        value = os.environ.get(name)
        if value is not None and not (value.strip().isdecimal() and len(value.strip()) <= 6):
            del os.environ[name]


def _width() -> int:
    """The width to render for: ``COLUMNS`` if set (also when piped), else the terminal's;
    piped output without ``COLUMNS`` gets room (160) rather than folding every cell."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdecimal() and len(columns) <= 6 and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return 160


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from workflow.runtime.display import printable

    # Cells are Text, not markup (a note "[red]" stays as typed), with control characters
    # escaped (workflow.runtime.display): stored text never drives the terminal.
    t = Table(
        title=None if title is None else Text(printable(title)),
        box=box.SIMPLE_HEAD,
        title_justify="left",
        show_lines=False,
    )
    for c in columns:
        t.add_column(Text(printable(c)), overflow="fold")
    for r in rows:
        t.add_row(*(Text(cell(v)) for v in r))
    Console(soft_wrap=False, width=_width()).print(t)


def _joined(parts: Sequence[str]) -> str:
    return "; ".join(parts)


def _words(text: str) -> list[str]:
    return text.split()


def event_view(columns: Sequence[str], rows: Sequence[Sequence[Any]], text: set[str]) -> None:
    """Events as a table when it fits the width, else as one block per event.

    A value is shown through :func:`cell`; a list (evidence fields) is several parts that a
    table joins with "; " and a block shows one per line.

    Columns not in ``text`` hold identifiers, times and states: they are never split, so
    the table needs their full width. ``text`` columns (evidence, notes) wrap at spaces
    only: they need their longest word. Thai is written without spaces between words, so a
    run of Thai counts as one word and is never cut inside a word or a grapheme cluster.
    When that does not fit, each event becomes a block with one field per line.
    """
    from rich.cells import cell_len

    shown = [[[cell(p) for p in (v if isinstance(v, list) else [v])] for v in r] for r in rows]
    width = _width()
    widths: list[int] = []
    room: list[int] = []  # how much wider each column could usefully be
    for i, name in enumerate(columns):
        values = [_joined(r[i]) for r in shown]
        widest = max([cell_len(name), *(cell_len(v) for v in values)])
        if name in text:
            longest = max((cell_len(w) for v in values for w in _words(v)), default=0)
            least = max(longest, min(cell_len(name), 12))
            widths.append(least)
            room.append(widest - least)
        else:
            widths.append(widest)
            room.append(0)
    spare = width - (sum(widths) + 3 * len(columns) + 1)  # rich's padding and rules
    if spare < 0:
        _event_blocks(columns, shown, width)
        return
    for i, extra in enumerate(room):
        grant = min(extra, spare)
        widths[i] += grant
        spare -= grant
    _event_table(columns, [[_joined(parts) for parts in r] for r in shown], text, widths, width)


def _event_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    text: set[str],
    widths: Sequence[int],
    width: int,
) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, show_lines=False)
    for name, w in zip(columns, widths, strict=True):
        # Each width holds the column's longest word: text wraps at spaces, nothing folds.
        t.add_column(Text(name), width=w, no_wrap=name not in text, overflow="fold")
    for r in rows:
        t.add_row(*(Text(v) for v in r))  # Text, not markup: cell() already escaped them
    Console(soft_wrap=False, width=width).print(t)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells, broken at spaces only (a longer word
    stays whole on a line of its own)."""
    from rich.cells import cell_len

    lines: list[str] = []
    line = ""
    for word in _words(text):
        if line and cell_len(line) + 1 + cell_len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return lines


def _event_blocks(
    columns: Sequence[str], rows: Sequence[Sequence[Sequence[str]]], width: int
) -> None:
    from rich.cells import cell_len

    label_width = max(cell_len(c) for c in columns)
    room = max(width - label_width - 2, 20)
    out: list[str] = []
    for n, r in enumerate(rows):
        if n:
            out.append("")
        for name, parts in zip(columns, r, strict=True):
            if not any(parts):
                continue  # an empty note is no field
            label = name + " " * (label_width - cell_len(name))
            lines = [line for part in parts for line in _wrap(part, room)] or [""]
            out.append(f"{label}  {lines[0]}".rstrip())
            out.extend(f"{' ' * label_width}  {line}".rstrip() for line in lines[1:])
    text = "\n".join(out) + "\n"
    # UTF-8 whatever the locale says, like emit_json: Thai text must survive any pipe.
    write_bytes(text.encode("utf-8"))


def show_time(at: str, be: bool) -> str:
    """A stored UTC timestamp shown to a person: to the second, optionally in BE."""
    text = at.replace("T", " ")[:19]
    if be:
        from workflow.runtime.evidence import to_be

        text = to_be(text[:10]) + text[10:]
    return text


def show_evidence(evidence: dict[str, Any], be: bool) -> list[str]:
    """Evidence as ``field=value`` parts (dates in BE with ``be``)."""
    from workflow.runtime.evidence import to_be

    parts = []
    for k, v in evidence.items():
        if be and isinstance(v, str) and len(v) == 10 and v[4] == "-" and v[7] == "-":
            v = to_be(v)
        parts.append(f"{k}={v}")
    return parts


def show_config(config: Sequence[str] | None) -> str:
    if not config:
        return "-"
    if len(config) == 1:
        return config[0]
    top = config[0].split(".")[0]
    return top + "{" + ", ".join(p.split(".", 1)[1] for p in config) + "}"


def _evidence_cell(e: Event, be: bool) -> list[str]:
    """An event's evidence; a corrected one shows the values as corrected, then what was
    first recorded (which stays in the trail)."""
    if not e.corrected_by:
        return show_evidence(dict(e.evidence), be)
    seqs = ", ".join(f"#{s}" for s in e.corrected_by)
    return [
        *show_evidence(dict(e.corrected_evidence or {}), be),
        f"(corrected by {seqs}; first recorded: "
        + " ".join(show_evidence(dict(e.evidence), be))
        + ")",
    ]


def _note_cell(e: Event) -> str:
    if e.corrected_by and e.corrected_note != e.note:
        return f"{e.corrected_note or ''} (first recorded: {e.note or '-'})"
    return e.note or ""


def render_history(events: Sequence[Event], be: bool) -> None:
    event_view(
        ["seq", "at (UTC)", "trigger", "from", "to", "actor", "role", "evidence", "note"],
        [
            (
                e.seq,
                show_time(e.at, be),
                e.trigger,
                show_config(e.from_),
                show_config(e.to),
                e.actor,
                e.role,
                _evidence_cell(e, be),
                _note_cell(e),
            )
            for e in events
        ],
        text={"evidence", "note"},
    )


def render_report(report: Report, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    fy = f" fiscal year {report.fiscal_year}" if report.fiscal_year else ""
    table(
        f"Instances by program, province and state{fy} (total {report.total})",
        ["program", "province", "state", "count", "overdue", "regions done"],
        [
            (
                r.program,
                f"{r.province.code} {r.province.name_th} ({r.province.name_en})",
                r.state,
                r.count,
                r.overdue,
                ", ".join(f"{k} {v}" for k, v in r.regions_done.items()),
            )
            for r in report.rows
        ],
    )
