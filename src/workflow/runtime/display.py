"""What people see: stored text made harmless for a terminal or a spreadsheet.

Notes, evidence, names and titles are typed by people and kept exactly, so they can hold what a
terminal executes (ESC and CSI sequences, C1 controls such as U+009B, a carriage return that
rewrites the line) or what reorders or hides text (bidi overrides, zero-width characters). Every
human-readable rendering passes its text through :func:`printable`, which shows each such
character as its Python escape (``\\x1b``, ``\\x9b``, ``\\u202e``), the same spelling error
lines use; JSON output stays exact (it carries the characters as JSON escapes).

CSV is read by spreadsheets, which run a cell that starts with ``=``, ``+``, ``-``, ``@``, tab
or carriage return as a formula (OWASP "CSV injection"). :func:`csv_cell` prefixes such a cell
with one apostrophe, and a cell that really starts with an apostrophe gets one more, so
:func:`csv_value` (drop one leading apostrophe, if any) gives back the exact value.
"""

from __future__ import annotations

#: Leading characters that make a spreadsheet evaluate a cell (OWASP), and the escape itself.
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")


def _escape(char: str) -> str:
    return ascii(char)[1:-1]


def printable(value: object, *, multiline: bool = False) -> str:
    """``value`` as text safe to print: every character that is not printable (controls, C1,
    bidi and other format characters, separators, lone surrogates) shown escaped; newlines
    kept only when ``multiline`` (a table cell), else shown as ``\\n``."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or (multiline and c == "\n") else _escape(c) for c in text)


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(CSV_TRIGGERS) else text


def csv_value(cell: str) -> str:
    """The value :func:`csv_cell` wrote: one leading apostrophe, if any, removed."""
    return cell[1:] if cell.startswith("'") else cell
