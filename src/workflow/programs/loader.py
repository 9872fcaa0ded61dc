"""Reading program definitions: YAML text in, a validated, frozen :class:`Program` out.

Definitions are data written by people, so the loader's job is as much to explain as to parse:
every problem of a file is collected (not only the first) and reported as
``FILE:LINE: CODE message`` with a stable code (see ``CODES`` and docs/definitions.md).
YAML is read with a safe loader that keeps ``on``/``off``/``yes``/``no`` as strings (they are
plausible state and trigger names) and remembers the line of every key and item.
Nothing in a definition is ever evaluated as code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from workflow.errors import DefinitionError, Problem
from workflow.programs.model import (
    COMPARISON_OPS,
    EVIDENCE_TYPES,
    CompareGuard,
    Corrections,
    Due,
    EvidenceField,
    EvidenceType,
    FunctionGuard,
    Guard,
    HappenedGuard,
    Label,
    Program,
    Region,
    RegionsFinalGuard,
    State,
    Transition,
    walk_states,
)
from workflow.runtime.attachments import MAX_BYTES as MAX_FILE_BYTES
from workflow.runtime.evidence import convert as _evidence_convert
from workflow.runtime.files import MAX_DEFINITION_BYTES, FileRefused, read_regular_file
from workflow.runtime.text import (
    CHOICE_MAX,
    ID_MAX,
    LABEL_MAX,
    describe,
    forbidden_in_text,
    problem_in_identifier,
)

#: Every problem code the loader can report, with what it means. Codes are stable: tools may
#: match on them; new problems get new codes.
CODES: dict[str, str] = {
    "E001": "YAML syntax error",
    "E002": "the document is not a mapping",
    "E003": "duplicate key",
    "E010": "unknown key",
    "E011": "required key missing",
    "E012": "value of the wrong type",
    "E013": "id is not kebab-case (program) or snake_case (states, triggers, roles, fields)",
    "E014": "label missing its Thai or English text",
    "E015": "reserved name",
    "E016": "id or choice value longer than the database column that stores it",
    "E017": "control, invisible or non-NFC character (or edge white space) in a choice or label",
    "E020": "unknown state",
    "E021": "state not reachable from the initial state",
    "E022": "non-final state with no way out",
    "E023": "duplicate trigger from one state without guards",
    "E024": "transition leaves a final state",
    "E025": "transition enters a parallel region's state from outside the parallel state",
    "E030": "role not declared in `roles`",
    "E032": "`auditor` is read-only and cannot fire transitions",
    "E040": "unknown evidence type",
    "E041": "invalid evidence field option",
    "E042": "invalid guard",
    "E050": "version is not a positive integer",
    "E060": "program and version defined twice with different content",
    "E070": "an extra definitions directory carries a bundled program id (not allowed to override)",
    "E080": "invalid `due` (days or fiscal_date) or `escalate` of a state",
}

KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
#: Triggers the engine records itself (an instance's first event; the amending events;
#: the clock's overdue events).
RESERVED_TRIGGERS = frozenset({"start", "comment", "correct", "revert", "migrate", "overdue"})
READ_ONLY_ROLE = "auditor"

PROGRAM_KEYS = {
    "program",
    "version",
    "title",
    "description",
    "sources",
    "roles",
    "start_roles",
    "initial",
    "states",
    "transitions",
    "corrections",
}
STATE_KEYS = {"th", "en", "final", "parallel", "description", "due", "escalate"}
REGION_KEYS = {"th", "en", "initial", "states"}
TRANSITION_KEYS = {
    "trigger",
    "from",
    "to",
    "label",
    "roles",
    "evidence",
    "guards",
    "description",
}
FIELD_KEYS = {
    "type", "required", "label", "min", "max", "choices", "max_length", "within",
    "max_bytes", "media_types",
}
#: What a media type in ``media_types`` looks like (``image/jpeg``, ``image/*``).
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]*/(\*|[a-z0-9][a-z0-9.+-]*)")
#: What a date field may be declared ``within``.
WITHIN = ("fiscal_year",)
LABEL_KEYS = {"th", "en"}
DUE_FORMS = "{days: N} or {fiscal_date: MM-DD}"


# --------------------------------------------------------------------------- YAML with lines


class _LDict(dict[str, Any]):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _LList(list[Any]):
    """A sequence that remembers its own line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that reads only true/false as booleans and records line numbers."""

    duplicates: list[tuple[int, str]]


# YAML 1.1 turns on/off/yes/no into booleans; drop that resolver and add back only true/false.
_Loader.yaml_implicit_resolvers = {
    # Timestamps go too: a date stays text and goes through the evidence rules (BE years,
    # and an impossible date is a problem, not a crash).
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
for _first in "tTfF":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", _BOOL)
    )


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LDict:
    out = _LDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        key_s = str(key)
        line = key_node.start_mark.line + 1
        if key_s in out:
            loader.duplicates.append((line, key_s))
        out[key_s] = loader.construct_object(value_node, deep=True)
        out.key_lines[key_s] = line
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _LList:
    out = _LList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _valid_month_day(text: str) -> bool:
    """Whether ``text`` is "MM-DD", a day that every year has (not 02-29)."""
    if not re.fullmatch(r"\d\d-\d\d", text):
        return False
    month, day = int(text[:2]), int(text[3:])
    days = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    return 1 <= month <= 12 and 1 <= day <= days[month - 1]


def _line_of(container: Any, key: str | int, default: int) -> int:
    if isinstance(container, _LDict) and isinstance(key, str):
        return container.key_lines.get(key, container.line or default)
    if isinstance(container, _LList) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return default


# --------------------------------------------------------------------------- the parser


class _Parser:
    """Walks the located YAML tree once, building model objects and collecting problems."""

    def __init__(self, filename: str) -> None:
        self.file = filename
        self.problems: list[Problem] = []

    def problem(self, line: int, code: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, code, message))

    # -- small typed readers; each reports its own problem and returns None when unusable

    def mapping(self, value: Any, line: int, what: str) -> _LDict | None:
        if isinstance(value, _LDict):
            return value
        self.problem(line, "E012", f"{what} must be a mapping, not {_kind(value)}")
        return None

    def string(self, value: Any, line: int, what: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Numbers are fine as text (a venue called 2564); keep their YAML spelling.
            return str(value)
        self.problem(line, "E012", f"{what} must be a non-empty string, not {_kind(value)}")
        return None

    def ident(self, value: Any, line: int, what: str, pattern: re.Pattern[str] = SNAKE) -> str:
        text = self.string(value, line, what)
        if text is None:
            return "?"
        if not pattern.match(text):
            style = "kebab-case" if pattern is KEBAB else "snake_case"
            self.problem(line, "E013", f"{what} {text!r} is not {style}")
        self.bounded(text, line, what, ID_MAX)
        return text

    def bounded(self, text: str, line: int, what: str, limit: int) -> None:
        """Report an id, choice or label that the engine could not store or match as typed:
        longer than ``limit`` (E016), or not in the canonical form of ``workflow.runtime.text``
        (E017)."""
        if len(text) > limit:
            self.problem(
                line,
                "E016",
                f"{what} {text[:40]!r}... is {len(text)} characters long; at most {limit} allowed",
            )
            return
        reason = problem_in_identifier(text, limit)
        if reason is not None:
            self.problem(line, "E017", f"{what} {text!a} {reason}")

    def keys(self, node: _LDict, allowed: set[str], what: str) -> None:
        for key in node:
            if key not in allowed:
                hint = _closest(key, allowed)
                self.problem(
                    node.key_lines.get(key, node.line),
                    "E010",
                    f"unknown key {key!r} in {what}"
                    + (f" (did you mean {hint!r}?)" if hint else ""),
                )

    def label(self, value: Any, line: int, what: str) -> Label:
        node = self.mapping(value, line, f"label of {what}")
        if node is None:
            return Label(th="?", en="?")
        self.keys(node, LABEL_KEYS, f"label of {what}")
        return self.label_from(node, line, what)

    def label_from(self, node: _LDict, line: int, what: str) -> Label:
        texts: dict[str, str] = {}
        for lang in ("th", "en"):
            if lang not in node:
                self.problem(node.line or line, "E014", f"{what} has no {lang!r} label")
                texts[lang] = "?"
            else:
                lline = _line_of(node, lang, line)
                texts[lang] = self.string(node[lang], lline, f"{lang} label of {what}") or "?"
                self.label_text(texts[lang], lline, f"{lang} label of {what}")
        return Label(th=texts["th"], en=texts["en"])

    def label_text(self, text: str, line: int, what: str) -> None:
        """A label is shown to people: bounded, and no control character or bidi override
        (a label may span lines)."""
        if len(text) > LABEL_MAX:
            self.problem(
                line, "E016", f"{what} is {len(text)} characters long; at most {LABEL_MAX} allowed"
            )
        bad = next((c for c in text if forbidden_in_text(c, multiline=True)), None)
        if bad is not None:
            self.problem(line, "E017", f"{what} contains the character {describe(bad)}")

    def string_list(self, value: Any, line: int, what: str) -> list[tuple[str, int]]:
        """A list of ids (or a single id) with the line of each."""
        if isinstance(value, str):
            return [(value, line)]
        if not isinstance(value, _LList):
            self.problem(line, "E012", f"{what} must be a list, not {_kind(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            item_line = _line_of(value, i, line)
            text = self.string(item, item_line, f"item of {what}")
            if text is not None:
                out.append((text, item_line))
        return out

    # -- the document

    def program(self, doc: Any, source_text: str) -> Program | None:
        if not isinstance(doc, _LDict):
            self.problem(1, "E002", f"a definition must be a mapping, not {_kind(doc)}")
            return None
        self.keys(doc, PROGRAM_KEYS, "the program")
        for key in ("program", "version", "title", "roles", "initial", "states", "transitions"):
            if key not in doc:
                self.problem(doc.line, "E011", f"required key {key!r} missing")

        def line(key: str) -> int:
            return _line_of(doc, key, doc.line)

        pid = (
            self.ident(doc["program"], line("program"), "program id", KEBAB)
            if "program" in doc
            else "?"
        )
        version = doc.get("version", 1)
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not 1 <= version <= 2**31 - 1
        ):
            self.problem(
                line("version"), "E050", f"version must be a positive integer, not {version!r}"
            )
            version = 1
        title = (
            self.label(doc["title"], line("title"), "the program")
            if "title" in doc
            else Label("?", "?")
        )
        description = (
            self.label(doc["description"], line("description"), "the description")
            if "description" in doc
            else None
        )
        sources = tuple(
            s for s, _ in self.string_list(doc.get("sources", _LList()), line("sources"), "sources")
        )

        roles: dict[str, int] = {}
        for role, role_line in self.string_list(doc.get("roles", _LList()), line("roles"), "roles"):
            self.ident(role, role_line, "role")
            if role == READ_ONLY_ROLE:
                self.problem(
                    role_line, "E032", "`auditor` is read-only and cannot be a program role"
                )
            roles[role] = role_line
        start_roles: list[str] = []
        if "start_roles" in doc:
            for role, role_line in self.string_list(
                doc["start_roles"], line("start_roles"), "start_roles"
            ):
                if role not in roles:
                    self.problem(
                        role_line, "E030", f"start role {role!r} is not declared in `roles`"
                    )
                start_roles.append(role)
        else:
            start_roles = list(roles)

        states: tuple[State, ...] = ()
        if "states" in doc:
            node = self.mapping(doc["states"], line("states"), "`states`")
            if node is not None:
                states = self.states(node, prefix="")
                if not node:
                    self.problem(line("states"), "E012", "`states` must declare at least one state")
        by_path = {s.path: s for s in walk_states(states)}

        initial = "?"
        if "initial" in doc:
            initial = self.string(doc["initial"], line("initial"), "`initial`") or "?"
            if states and initial not in {s.name for s in states}:
                self.problem(
                    line("initial"), "E020", f"initial state {initial!r} is not a top-level state"
                )

        transitions: list[Transition] = []
        if "transitions" in doc:
            tnode = doc["transitions"]
            if not isinstance(tnode, _LList):
                self.problem(line("transitions"), "E012", "`transitions` must be a list")
            else:
                for i, item in enumerate(tnode):
                    t = self.transition(
                        item, _line_of(tnode, i, tnode.line), by_path, states, roles
                    )
                    if t is not None:
                        transitions.append(t)

        corrections = (
            self.corrections(doc["corrections"], line("corrections"), roles)
            if "corrections" in doc
            else Corrections(tuple(r for r in ("provincial_officer",) if r in roles) or ())
        )
        program = Program(
            id=pid,
            version=version,
            title=title,
            roles=tuple(roles),
            start_roles=tuple(start_roles),
            initial=initial,
            states=states,
            transitions=tuple(transitions),
            description=description,
            sources=sources,
            source_file=self.file,
            source_text=source_text,
            content_hash=hashlib.sha256(source_text.encode("utf-8")).hexdigest(),
            corrections=corrections,
        )
        if not self.problems:
            # Meaning checks need a structurally sound program; report them once it is.
            self.meaning(program)
        return program

    def corrections(self, value: Any, line: int, roles: dict[str, int]) -> Corrections:
        """``corrections: {roles: [...], revert_final: bool}``: who may correct, revert and
        migrate an instance of this program (default: provincial_officer)."""
        node = self.mapping(value, line, "`corrections`")
        if node is None:
            return Corrections()
        self.keys(node, {"roles", "revert_final"}, "`corrections`")
        chosen: list[str] = []
        for role, role_line in self.string_list(
            node.get("roles", _LList()), _line_of(node, "roles", line), "corrections roles"
        ):
            if role not in roles:
                self.problem(
                    role_line, "E030", f"correction role {role!r} is not declared in `roles`"
                )
            chosen.append(role)
        revert_final = node.get("revert_final", False)
        if not isinstance(revert_final, bool):
            self.problem(
                _line_of(node, "revert_final", line), "E012", "`revert_final` must be true or false"
            )
            revert_final = False
        return Corrections(tuple(chosen), revert_final)

    def states(self, node: _LDict, prefix: str) -> tuple[State, ...]:
        out: list[State] = []
        for name, value in node.items():
            sline = node.key_lines.get(name, node.line)
            self.ident(name, sline, "state id")
            path = f"{prefix}{name}"
            if value is None:
                self.problem(sline, "E014", f"state {path!r} has no labels")
                out.append(State(name=name, path=path, label=Label("?", "?"), line=sline))
                continue
            snode = self.mapping(value, sline, f"state {path!r}")
            if snode is None:
                continue
            self.keys(snode, STATE_KEYS, f"state {path!r}")
            label = self.label_from(snode, sline, f"state {path!r}")
            final = snode.get("final", False)
            if not isinstance(final, bool):
                self.problem(
                    _line_of(snode, "final", sline),
                    "E012",
                    f"`final` of {path!r} must be true or false",
                )
                final = False
            description = (
                self.label(
                    snode["description"], _line_of(snode, "description", sline), f"state {path!r}"
                )
                if "description" in snode
                else None
            )
            regions: list[Region] = []
            if "parallel" in snode:
                pline = _line_of(snode, "parallel", sline)
                pnode = self.mapping(snode["parallel"], pline, f"`parallel` of {path!r}")
                if pnode is not None:
                    if final:
                        self.problem(
                            pline, "E012", f"final state {path!r} cannot hold parallel regions"
                        )
                    for rname, rvalue in pnode.items():
                        region = self.region(
                            rname, rvalue, pnode.key_lines.get(rname, pline), f"{path}."
                        )
                        if region is not None:
                            regions.append(region)
                    if not regions:
                        self.problem(pline, "E012", f"`parallel` of {path!r} holds no region")
            due, escalate = self.deadline(snode, sline, path, final)
            out.append(
                State(
                    name=name,
                    path=path,
                    label=label,
                    final=final,
                    regions=tuple(regions),
                    description=description,
                    line=sline,
                    due=due,
                    escalate=escalate,
                )
            )
        return tuple(out)

    def deadline(
        self, snode: _LDict, sline: int, path: str, final: bool
    ) -> tuple[Due | None, tuple[str, ...]]:
        """A state's ``due`` and ``escalate`` (CONTRACT §10), each problem as E080."""
        due: Due | None = None
        if "due" in snode:
            dline = _line_of(snode, "due", sline)
            value = snode["due"]
            if final:
                self.problem(dline, "E080", f"final state {path!r} cannot be due")
            elif not isinstance(value, dict) or len(value) != 1:
                self.problem(dline, "E080", f"`due` of {path!r} must be {DUE_FORMS}")
            elif "days" in value:
                days = value["days"]
                if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= 3660:
                    self.problem(dline, "E080", f"`due.days` of {path!r} must be 1 to 3660")
                else:
                    due = Due(days=days, line=dline)
            elif "fiscal_date" in value:
                text = value["fiscal_date"]
                if not isinstance(text, str) or not _valid_month_day(text):
                    self.problem(
                        dline, "E080", f"`due.fiscal_date` of {path!r} must be a day \"MM-DD\""
                    )
                else:
                    due = Due(fiscal_date=text, line=dline)
            else:
                self.problem(dline, "E080", f"`due` of {path!r} must be {DUE_FORMS}")
        escalate: list[str] = []
        if "escalate" in snode:
            eline = _line_of(snode, "escalate", sline)
            roles = snode["escalate"]
            if not isinstance(roles, list) or not roles or not all(
                isinstance(r, str) for r in roles
            ):
                self.problem(eline, "E080", f"`escalate` of {path!r} must be a list of roles")
            else:
                if "due" not in snode:
                    self.problem(eline, "E080", f"`escalate` of {path!r} needs a `due`")
                escalate = list(dict.fromkeys(roles))
        return due, tuple(escalate)

    def region(self, name: str, value: Any, line: int, prefix: str) -> Region | None:
        self.ident(name, line, "region id")
        path = f"{prefix}{name}"
        node = self.mapping(value, line, f"region {path!r}")
        if node is None:
            return None
        self.keys(node, REGION_KEYS, f"region {path!r}")
        label = (
            self.label_from(node, line, f"region {path!r}")
            if ("th" in node or "en" in node)
            else None
        )
        for key in ("initial", "states"):
            if key not in node:
                self.problem(node.line, "E011", f"region {path!r} needs {key!r}")
        states: tuple[State, ...] = ()
        if "states" in node:
            snode = self.mapping(
                node["states"], _line_of(node, "states", line), f"states of {path!r}"
            )
            if snode is not None:
                states = self.states(snode, prefix=f"{path}.")
        initial = "?"
        if "initial" in node:
            initial = (
                self.string(
                    node["initial"], _line_of(node, "initial", line), f"initial of {path!r}"
                )
                or "?"
            )
            if states and initial not in {s.name for s in states}:
                self.problem(
                    _line_of(node, "initial", line),
                    "E020",
                    f"initial state {initial!r} of region {path!r} is not one of its states",
                )
        return Region(name=name, initial=initial, states=states, label=label, line=line)

    def transition(
        self,
        value: Any,
        line: int,
        by_path: dict[str, State],
        top: tuple[State, ...],
        roles: dict[str, int],
    ) -> Transition | None:
        node = self.mapping(value, line, "a transition")
        if node is None:
            return None
        self.keys(node, TRANSITION_KEYS, "a transition")
        for key in ("trigger", "from", "to", "roles"):
            if key not in node:
                self.problem(node.line, "E011", f"transition needs {key!r}")

        def kline(key: str) -> int:
            return _line_of(node, key, node.line)

        trigger = (
            self.ident(node["trigger"], kline("trigger"), "trigger") if "trigger" in node else "?"
        )
        if trigger in RESERVED_TRIGGERS:
            self.problem(
                kline("trigger"),
                "E015",
                f"trigger {trigger!r} is reserved (the engine records it itself)",
            )
        what = f"transition {trigger!r}"

        sources: list[str] = []
        if "from" in node:
            for src, sline in self.string_list(node["from"], kline("from"), f"`from` of {what}"):
                if src == "*":
                    sources.extend(s.path for s in top if not s.final)
                elif by_path and src not in by_path:
                    self.problem(
                        sline, "E020", f"{what} leaves unknown state {src!r}" + _hint(src, by_path)
                    )
                else:
                    sources.append(src)
        dest = "?"
        if "to" in node:
            dest = self.string(node["to"], kline("to"), f"`to` of {what}") or "?"
            if by_path and dest not in by_path:
                self.problem(
                    kline("to"),
                    "E020",
                    f"{what} goes to unknown state {dest!r}" + _hint(dest, by_path),
                )

        label = self.label(node["label"], kline("label"), what) if "label" in node else None
        if label is None:
            self.problem(node.line, "E014", f"{what} has no label")
            label = Label("?", "?")
        description = (
            self.label(node["description"], kline("description"), what)
            if "description" in node
            else None
        )

        t_roles: list[str] = []
        if "roles" in node:
            for role, rline in self.string_list(node["roles"], kline("roles"), f"roles of {what}"):
                if role == READ_ONLY_ROLE:
                    self.problem(
                        rline, "E032", f"{what}: `auditor` is read-only and cannot fire transitions"
                    )
                elif role not in roles:
                    self.problem(rline, "E030", f"{what}: role {role!r} is not declared in `roles`")
                t_roles.append(role)
            if not t_roles:
                self.problem(
                    kline("roles"), "E012", f"{what}: `roles` is empty; nobody could fire it"
                )

        evidence: list[EvidenceField] = []
        if "evidence" in node and node["evidence"] is not None:
            enode = self.mapping(node["evidence"], kline("evidence"), f"evidence of {what}")
            if enode is not None:
                for fname, fvalue in enode.items():
                    f = self.evidence_field(
                        fname, fvalue, enode.key_lines.get(fname, enode.line), what
                    )
                    if f is not None:
                        evidence.append(f)

        guards: list[Guard] = []
        if "guards" in node and node["guards"] is not None:
            gnode = node["guards"]
            if not isinstance(gnode, _LList):
                self.problem(kline("guards"), "E012", f"guards of {what} must be a list")
            else:
                fields = {f.name: f for f in evidence}
                for i, g in enumerate(gnode):
                    guard = self.guard(g, _line_of(gnode, i, gnode.line), what, fields, by_path)
                    if guard is not None:
                        guards.append(guard)

        return Transition(
            trigger=trigger,
            sources=tuple(dict.fromkeys(sources)),
            dest=dest,
            label=label,
            roles=tuple(t_roles),
            evidence=tuple(evidence),
            guards=tuple(guards),
            description=description,
            line=node.line,
        )

    def evidence_field(self, name: str, value: Any, line: int, what: str) -> EvidenceField | None:
        self.ident(name, line, "evidence field")
        node = self.mapping(value, line, f"evidence field {name!r} of {what}")
        if node is None:
            return None
        self.keys(node, FIELD_KEYS, f"evidence field {name!r}")
        ftype = node.get("type")
        if ftype is None:
            self.problem(line, "E011", f"evidence field {name!r} of {what} needs a `type`")
            return None
        if ftype not in EVIDENCE_TYPES:
            self.problem(
                _line_of(node, "type", line),
                "E040",
                f"evidence field {name!r} has unknown type {ftype!r} "
                f"(known: {', '.join(EVIDENCE_TYPES)})",
            )
            return None
        etype: EvidenceType = ftype
        required = node.get("required", False)
        if not isinstance(required, bool):
            self.problem(
                _line_of(node, "required", line),
                "E041",
                f"`required` of {name!r} must be true or false",
            )
            required = False
        label = (
            self.label(node["label"], _line_of(node, "label", line), f"field {name!r}")
            if "label" in node
            else None
        )
        bounds: dict[str, float | None] = {"min": None, "max": None}
        for key in ("min", "max"):
            if key in node:
                v = node[key]
                if etype not in ("integer", "number"):
                    self.problem(
                        _line_of(node, key, line),
                        "E041",
                        f"`{key}` applies to integer and number fields, not {etype} ({name!r})",
                    )
                elif not isinstance(v, int | float) or isinstance(v, bool):
                    self.problem(
                        _line_of(node, key, line), "E041", f"`{key}` of {name!r} must be a number"
                    )
                else:
                    bounds[key] = v
        lo, hi = bounds["min"], bounds["max"]
        if lo is not None and hi is not None and lo > hi:
            self.problem(line, "E041", f"field {name!r}: min {lo} is greater than max {hi}")
        choices: tuple[str, ...] = ()
        if etype == "choice":
            if "choices" not in node:
                self.problem(line, "E041", f"choice field {name!r} needs `choices`")
            else:
                items = self.string_list(
                    node["choices"], _line_of(node, "choices", line), f"choices of {name!r}"
                )
                choices = tuple(c for c, _ in items)
                for choice, cline in items:
                    self.bounded(choice, cline, f"choice of {name!r}", CHOICE_MAX)
                if not choices:
                    self.problem(
                        _line_of(node, "choices", line),
                        "E041",
                        f"choice field {name!r} has no choices",
                    )
        elif "choices" in node:
            self.problem(
                _line_of(node, "choices", line),
                "E041",
                f"`choices` applies to choice fields, not {etype} ({name!r})",
            )
        max_length = 2000
        if "max_length" in node:
            ml = node["max_length"]
            if etype != "text":
                self.problem(
                    _line_of(node, "max_length", line),
                    "E041",
                    f"`max_length` applies to text fields ({name!r})",
                )
            elif not isinstance(ml, int) or isinstance(ml, bool) or ml < 1:
                self.problem(
                    _line_of(node, "max_length", line),
                    "E041",
                    f"`max_length` of {name!r} must be a positive integer",
                )
            else:
                max_length = ml
        within = node.get("within")
        if within is not None and (etype != "date" or within not in WITHIN):
            self.problem(
                _line_of(node, "within", line),
                "E041",
                f"`within` of {name!r} applies to date fields and must be one of "
                f"{', '.join(WITHIN)}",
            )
            within = None
        max_bytes, media_types = self.file_limits(node, line, name, etype)
        return EvidenceField(
            name=name,
            type=etype,
            within=within,
            max_bytes=max_bytes,
            media_types=media_types,
            required=required,
            label=label,
            min=lo,
            max=hi,
            choices=choices,
            max_length=max_length,
            line=line,
        )

    def file_limits(
        self, node: _LDict, line: int, name: str, etype: str
    ) -> tuple[int | None, tuple[str, ...]]:
        """``max_bytes`` and ``media_types`` of a ``file`` field (E041 elsewhere)."""
        max_bytes: int | None = None
        media_types: tuple[str, ...] = ()
        for key in ("max_bytes", "media_types"):
            if key in node and etype != "file":
                self.problem(
                    _line_of(node, key, line), "E041", f"`{key}` applies to file fields ({name!r})"
                )
        if etype != "file":
            return None, ()
        if "max_bytes" in node:
            v = node["max_bytes"]
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_FILE_BYTES:
                self.problem(
                    _line_of(node, "max_bytes", line),
                    "E041",
                    f"`max_bytes` of {name!r} must be a whole number from 1 to {MAX_FILE_BYTES}",
                )
            else:
                max_bytes = v
        if "media_types" in node:
            items = self.string_list(
                node["media_types"], _line_of(node, "media_types", line), "media_types"
            )
            for media_type, mline in items:
                if not MEDIA_TYPE.fullmatch(media_type):
                    self.problem(
                        mline, "E041", f"media type {media_type!r} of {name!r} is not type/subtype"
                    )
            media_types = tuple(m for m, _ in items)
        return max_bytes, media_types

    def guard(
        self,
        value: Any,
        line: int,
        what: str,
        fields: dict[str, EvidenceField],
        by_path: dict[str, State],
    ) -> Guard | None:
        node = self.mapping(value, line, f"a guard of {what}")
        if node is None:
            return None
        kinds = [k for k in ("happened", "regions_final", "compare", "function") if k in node]
        if len(kinds) != 1:
            self.problem(
                line,
                "E042",
                f"a guard of {what} needs exactly one of "
                "happened, regions_final, compare, function",
            )
            return None
        kind = kinds[0]
        allowed = {"compare", "op", "value", "field"} if kind == "compare" else {kind}
        self.keys(node, allowed, f"a {kind} guard")
        arg = self.string(node[kind], _line_of(node, kind, line), f"`{kind}` of a guard")
        if arg is None:
            return None
        if kind == "happened":
            return HappenedGuard(trigger=arg, line=line)  # checked against triggers in meaning()
        if kind == "regions_final":
            state = by_path.get(arg)
            if by_path and (state is None or not state.parallel):
                self.problem(
                    line, "E042", f"regions_final guard of {what}: {arg!r} is not a parallel state"
                )
            return RegionsFinalGuard(state=arg, line=line)
        if kind == "function":
            if not SNAKE.match(arg):
                self.problem(line, "E013", f"guard function name {arg!r} is not snake_case")
            return FunctionGuard(name=arg, line=line)
        # compare
        op = node.get("op")
        if op not in COMPARISON_OPS:
            self.problem(
                _line_of(node, "op", line),
                "E042",
                f"compare guard of {what}: op must be one of "
                f"{' '.join(COMPARISON_OPS)}, not {op!r}",
            )
            return None
        if arg not in fields:
            self.problem(
                line,
                "E042",
                f"compare guard of {what}: {arg!r} is not an evidence field of this transition",
            )
            return None
        has_value, has_field = "value" in node, "field" in node
        if has_value == has_field:
            self.problem(
                line, "E042", f"compare guard of {what} needs exactly one of `value` or `field`"
            )
            return None
        other: str | None = None
        if has_value:
            try:
                _evidence_convert(fields[arg], node["value"])
            except (ValueError, OverflowError) as e:
                self.problem(
                    _line_of(node, "value", line),
                    "E042",
                    f"compare guard of {what}: value does not fit field {arg!r}: {e}",
                )
                return None
        if has_field:
            other = self.string(
                node["field"], _line_of(node, "field", line), "`field` of a compare guard"
            )
            if other is not None and other not in fields:
                self.problem(
                    _line_of(node, "field", line),
                    "E042",
                    f"compare guard of {what}: {other!r} "
                    "is not an evidence field of this transition",
                )
        return CompareGuard(
            field=arg, op=str(op), value=node.get("value"), other_field=other, line=line
        )

    # -- meaning

    def meaning(self, program: Program) -> None:
        by_path = {s.path: s for s in program.all_states()}
        if not program.states:
            return  # reported where `states` is
        for state in by_path.values():
            for role in state.escalate:
                if role not in program.roles:
                    self.problem(
                        state.line,
                        "E080",
                        f"`escalate` of {state.path!r}: role {role!r} is not declared in `roles`",
                    )
        triggers = set(program.triggers)
        for t in program.transitions:
            for g in t.guards:
                if isinstance(g, HappenedGuard) and g.trigger not in triggers:
                    self.problem(
                        g.line,
                        "E042",
                        f"guard of {t.trigger!r}: no transition has trigger {g.trigger!r}",
                    )
            for src in t.sources:
                if by_path[src].final:
                    self.problem(
                        t.line, "E024", f"transition {t.trigger!r} leaves final state {src!r}"
                    )
            self.region_entry(t, by_path)
        self.duplicates(program)
        self.reachability(program, by_path)
        self.dead_ends(program, by_path)

    def region_entry(self, t: Transition, by_path: dict[str, State]) -> None:
        """A transition may only go to a state inside a parallel region from within that
        parallel state: entering one region's state from outside would leave the other
        regions without a state. Target the parallel state itself instead."""
        parts = t.dest.split(".")
        for i in range(1, len(parts)):
            ancestor = ".".join(parts[:i])
            state = by_path.get(ancestor)
            if state is not None and state.parallel:
                outside = [s for s in t.sources if not s.startswith(ancestor + ".")]
                if outside:
                    self.problem(
                        t.line,
                        "E025",
                        f"transition {t.trigger!r} enters {t.dest!r} inside parallel state "
                        f"{ancestor!r} from outside it ({', '.join(outside)}); "
                        f"go to {ancestor!r} instead",
                    )
                return

    def duplicates(self, program: Program) -> None:
        seen: dict[tuple[str, str], Transition] = {}
        for t in program.transitions:
            for src in t.sources:
                earlier = seen.get((t.trigger, src))
                if earlier is not None and (not earlier.guards or not t.guards):
                    self.problem(
                        t.line,
                        "E023",
                        f"trigger {t.trigger!r} from {src!r} is also defined at line "
                        f"{earlier.line}; give them guards or merge them",
                    )
                seen.setdefault((t.trigger, src), t)

    def reachability(self, program: Program, by_path: dict[str, State]) -> None:
        reached: set[str] = set()

        def enter(path: str) -> None:
            # Entering a state enters its ancestors, and a parallel state enters every region.
            parts = path.split(".")
            for i in range(1, len(parts) + 1):
                reached.add(".".join(parts[:i]))
            state = by_path.get(path)
            if state is not None:
                for r in state.regions:
                    enter(f"{path}.{r.name}.{r.initial}")
                    reached.add(f"{path}.{r.name}")

        enter(program.initial)
        changed = True
        while changed:
            before = len(reached)
            for t in program.transitions:
                if any(s in reached for s in t.sources) and t.dest in by_path:
                    enter(t.dest)
            changed = len(reached) != before
        for s in program.all_states():
            if s.path not in reached:
                self.problem(
                    s.line, "E021", f"state {s.path!r} cannot be reached from {program.initial!r}"
                )

    def dead_ends(self, program: Program, by_path: dict[str, State]) -> None:
        exits = {src for t in program.transitions for src in t.sources}
        for s in program.all_states():
            if s.final or s.path in exits:
                continue
            # A state inside a region may also leave through a transition declared on an
            # ancestor within that same region (not through the parallel state itself, which
            # would let a stuck region pass unnoticed).
            parts = s.path.split(".")
            ancestors = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
            inside = []
            for a in ancestors:
                if by_path.get(a) is not None and by_path[a].parallel:
                    break
                inside.append(a)
            if not any(a in exits for a in inside):
                self.problem(s.line, "E022", f"state {s.path!r} is not final and has no way out")


#: No real definition nests anywhere near this deep; the YAML parsers recurse per level
#: (libyaml's composer can even crash the process), so deeper input is refused unparsed.
MAX_DEPTH = 64


def _nesting_problem(text: str) -> int | None:
    """The line where ``text`` nests deeper than MAX_DEPTH, by a cheap conservative scan:
    open flow brackets, indentation, and '- ' / '? ' markers opening a line."""
    flow = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        markers = 0
        while stripped[:2] in ("- ", "? ") or stripped in ("-", "?"):
            markers += 1
            stripped = stripped[2:].lstrip(" ")
        flow += line.count("[") + line.count("{") - line.count("]") - line.count("}")
        if flow > MAX_DEPTH or markers > MAX_DEPTH or indent > 8 * MAX_DEPTH:
            return number
    return None




def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    for kind, name in (
        (bool, "a boolean"),
        (dict, "a mapping"),
        (list, "a list"),
        (str, "a string"),
        (int, "a number"),
        (float, "a number"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _closest(word: str, options: Iterable[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return found[0] if found else None


def _hint(word: str, by_path: dict[str, State]) -> str:
    near = _closest(word, by_path)
    return f" (did you mean {near!r}?)" if near else ""


# --------------------------------------------------------------------------- public functions


def check_text(text: str, filename: str = "<string>") -> tuple[Program | None, list[Problem]]:
    """Parse and validate a definition; return the program (if parseable) and every problem."""
    parser = _Parser(filename)
    deep = _nesting_problem(text)
    if deep is not None:
        return None, [Problem(filename, deep, "E001", f"YAML nested more than {MAX_DEPTH} levels")]
    loader: _Loader | None = None
    try:
        # The pure-Python reader checks characters on construction, hence inside the try.
        loader = _Loader(text)
        loader.duplicates = []
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = " ".join(" ".join(str(x).split()) for x in (e.context, e.problem) if x)
        return None, [Problem(filename, line, "E001", f"YAML syntax error: {reason}")]
    except yaml.YAMLError as e:
        message = " ".join(str(e).split())
        return None, [Problem(filename, 1, "E001", f"YAML syntax error: {message}")]
    except RecursionError:
        return None, [Problem(filename, 1, "E001", "YAML nested too deeply")]
    finally:
        if loader is not None:
            loader.dispose()
    for line, key in loader.duplicates:
        parser.problem(line, "E003", f"duplicate key {key!r}")
    program = parser.program(doc, text)
    return program, sorted(parser.problems, key=lambda p: (p.line, p.code))


def load_text(text: str, filename: str = "<string>") -> Program:
    """Parse a definition, raising :class:`DefinitionError` with every problem if invalid."""
    program, problems = check_text(text, filename)
    if problems or program is None:
        raise DefinitionError(problems)
    return program


def check_file(path: str | Path) -> tuple[Program | None, list[Problem]]:
    """Like :func:`check_text` for a file; a file that is not a readable regular file of at
    most ``MAX_DEFINITION_BYTES`` (a FIFO, a device, a link loop...) is a problem too."""
    p = Path(path)
    try:
        data = read_regular_file(p, MAX_DEFINITION_BYTES)
    except FileRefused as e:
        return None, [Problem(str(p), 0, "E001", e.reason)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [Problem(str(p), 1, "E001", f"not UTF-8 text: {e.reason} at byte {e.start}")]
    # As Path.read_text did: universal newlines, so line numbers match what editors show.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return check_text(text, str(p))


def load_file(path: str | Path) -> Program:
    program, problems = check_file(path)
    if problems or program is None:
        raise DefinitionError(problems)
    return program
