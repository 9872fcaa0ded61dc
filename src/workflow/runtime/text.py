"""Text people type: one canonical form, and the lengths the database can hold.

Names decide who may do what, so two spellings that look the same must not be two names: a
grant to "อุดมรัตน์" typed with decomposed vowels, or with a zero-width space inside, must either
be the same grant or be refused. The rule, used for every identifier a caller gives (actor,
role, trigger, program, state, evidence field names, idempotency keys, area names), is:

* Unicode NFC (composed), silently: what the keyboard sent is the same name;
* leading and trailing white space dropped;
* refused (exit 2, naming the character by its ``U+`` code): control characters (C0, DEL,
  C1), invisible characters (zero-width space and joiners, word joiner, BOM, soft hyphen, bidi
  marks, embeddings, overrides and isolates, variation selectors, fillers...), line separators,
  white space other than a plain space, private-use and unassigned code points, lone surrogates
  (undecodable command-line bytes).

Free text (titles, notes) keeps its invisible characters (Thai writers use a zero-width space
to mark word breaks) but not control characters, except tab and newline in a note, nor bidi
overrides, which reorder what a reader sees.

The ``*_MAX`` limits are the one source for column sizes: ``storage`` declares its columns with
them, the loader refuses definition ids longer than them, and the engine refuses typed values
longer than them before any driver sees them (PostgreSQL would fail, SQLite would keep it all
or a caller would cut it silently).
"""

from __future__ import annotations

import unicodedata

from workflow.errors import TextRefused

#: Program, state, trigger, role, evidence field and policy ids (``String(100)`` columns).
ID_MAX = 100
#: Actor names, grantors (``Text`` columns; bounded so a name stays a name).
NAME_MAX = 200
#: Idempotency keys (``String(200)``).
KEY_MAX = 200
#: Choice values of a ``choice`` evidence field.
CHOICE_MAX = 200
#: Area names and codes as typed.
AREA_MAX = 200
#: Instance titles.
TITLE_MAX = 2_000
#: Notes recorded with an event.
NOTE_MAX = 10_000
#: Labels in definitions.
LABEL_MAX = 2_000
#: How a caller was authenticated (``token:ID``, ``session:HEX``), recorded with its events.
AUTH_MAX = 64

# Invisible characters whose category is not Cf (those are all refused by category).
_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0"
) | frozenset(chr(c) for c in (*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)))
# Categories refused in identifiers: control, format (invisible), surrogate, private use,
# unassigned, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Bidi controls that reorder displayed text: refused in free text too.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def describe(char: str) -> str:
    """``U+200B ZERO WIDTH SPACE``: how a message names a character nobody can see."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def forbidden_in_identifier(char: str) -> bool:
    """Whether ``char`` may not appear in an identifier (see the module docstring)."""
    if char == " ":
        return False
    category = unicodedata.category(char)
    return category in _REFUSED_CATEGORIES or category == "Zs" or char in _INVISIBLE


def forbidden_in_text(char: str, *, multiline: bool) -> bool:
    """Whether ``char`` may not appear in free text (titles, notes)."""
    if multiline and char in "\n\t":
        return False
    return unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI or char in "\u2028\u2029"


def _prepare(value: object, what: str) -> str | None:
    if not isinstance(value, str):
        raise TextRefused(what, "must be text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TextRefused(what, "is not valid UTF-8 text") from None
    text = unicodedata.normalize("NFC", value).strip()
    return text or None


def _check_length(text: str, what: str, limit: int) -> None:
    if len(text) > limit:
        raise TextRefused(what, f"is {len(text)} characters long; at most {limit} allowed")


def _refuse(char: str, what: str) -> TextRefused:
    kind = "control" if unicodedata.category(char) == "Cc" else "invisible or formatting"
    return TextRefused(what, f"contains the {kind} character {describe(char)}", char=char)


def identifier(value: object, what: str, limit: int = ID_MAX) -> str:
    """The canonical form of an identifier someone typed; never empty.

    Raises:
        TextRefused: not text, empty, longer than ``limit``, or holding a character the rule
            refuses (the message names it by its U+ code).
    """
    text = _prepare(value, what)
    if text is None:
        raise TextRefused(what, "must not be empty")
    for char in text:
        if forbidden_in_identifier(char):
            raise _refuse(char, what)
    _check_length(text, what, limit)
    return text


def optional_identifier(value: object, what: str, limit: int = ID_MAX) -> str | None:
    """Like :func:`identifier`, but None or blank (no filter given) is None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return identifier(value, what, limit)


def free_text(value: object, what: str, limit: int, *, multiline: bool = False) -> str | None:
    """Free text someone typed (a title, a note): NFC, trimmed, bounded; blank is None.

    Raises:
        TextRefused: not text, longer than ``limit``, or holding a control character (other
            than tab and newline when ``multiline``) or a bidi control.
    """
    if value is None:
        return None
    text = _prepare(value, what)
    if text is None:
        return None
    if multiline:
        text = text.replace("\r\n", "\n")
    for char in text:
        if forbidden_in_text(char, multiline=multiline):
            raise _refuse(char, what)
    _check_length(text, what, limit)
    return text


def problem_in_identifier(text: str, limit: int) -> str | None:
    """Why ``text`` (from a definition file) is not a canonical identifier, or None.

    The loader reports this as a problem line instead of raising."""
    if unicodedata.normalize("NFC", text) != text:
        return "is not in Unicode NFC form"
    for char in text:
        if forbidden_in_identifier(char):
            return f"contains the character {describe(char)}"
    if text != text.strip():
        return "has leading or trailing white space"
    if len(text) > limit:
        return f"is {len(text)} characters long; at most {limit} allowed"
    return None


def name(value: object, what: str = "actor") -> str:
    """A person's name (an actor, who granted): an identifier up to ``NAME_MAX``, in its one
    canonical form so that a lookalike cannot be granted beside the real name."""
    return identifier(value, what, NAME_MAX)


def note(value: object) -> str | None:
    """A note: free text that may span lines (CRLF kept as LF), up to ``NOTE_MAX``."""
    return free_text(value, "note", NOTE_MAX, multiline=True)
