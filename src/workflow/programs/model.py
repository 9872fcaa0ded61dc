"""The typed, frozen form of a program definition.

The loader parses a file's YAML once into these objects; the machine, the engine and the
diagrams read a program only through them (its text is kept as well, to store each version).
A program is a tree of states (a state may hold parallel regions, each a small tree of its own)
plus a flat list of transitions between dotted state paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

EvidenceType = Literal["text", "integer", "number", "date", "boolean", "choice", "file"]
EVIDENCE_TYPES: tuple[str, ...] = (
    "text", "integer", "number", "date", "boolean", "choice", "file"
)
COMPARISON_OPS: tuple[str, ...] = ("==", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Label:
    """A Thai and an English text for the same thing."""

    th: str
    en: str

    def get(self, lang: str) -> str:
        return self.th if lang == "th" else self.en

    def to_dict(self) -> dict[str, str]:
        return {"th": self.th, "en": self.en}


def _label(label: Label | None) -> dict[str, str] | None:
    return None if label is None else label.to_dict()


@dataclass(frozen=True)
class EvidenceField:
    """One piece of evidence a transition records (``date``, ``venue``, ``participants``...)."""

    name: str
    type: EvidenceType
    required: bool = False
    label: Label | None = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    max_length: int = 2000
    line: int = 0
    #: ``within: fiscal_year`` on a date: it must fall in the instance's fiscal year.
    within: str | None = None
    #: A ``file`` field's limits: its size, and the media types (sniffed) it accepts.
    max_bytes: int | None = None
    media_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class HappenedGuard:
    """True when an earlier event with ``trigger`` happened on this instance."""

    trigger: str
    line: int = 0

    def describe(self) -> str:
        return f"an earlier {self.trigger!r} event"


@dataclass(frozen=True)
class RegionsFinalGuard:
    """True when every region of the parallel state ``state`` is in a final state."""

    state: str
    line: int = 0

    def describe(self) -> str:
        return f"every region of {self.state!r} is done"


@dataclass(frozen=True)
class CompareGuard:
    """Compares an evidence field with a constant or with another evidence field."""

    field: str
    op: str
    value: object = None
    other_field: str | None = None
    line: int = 0

    def describe(self) -> str:
        rhs = self.other_field if self.other_field is not None else repr(self.value)
        return f"{self.field} {self.op} {rhs}"


@dataclass(frozen=True)
class FunctionGuard:
    """A named guard function the embedding application registers from Python."""

    name: str
    line: int = 0

    def describe(self) -> str:
        return f"function {self.name!r}"


Guard = HappenedGuard | RegionsFinalGuard | CompareGuard | FunctionGuard


@dataclass(frozen=True)
class Region:
    """One region of a parallel state: its own initial state and states."""

    name: str
    initial: str
    states: tuple[State, ...]
    label: Label | None = None
    line: int = 0


@dataclass(frozen=True)
class Due:
    """When a state must be left (CONTRACT §10): ``days`` after entering it, or the day
    ``fiscal_date`` ("MM-DD") of the instance's fiscal year."""

    days: int | None = None
    fiscal_date: str | None = None
    line: int = 0


@dataclass(frozen=True)
class State:
    """A state; ``path`` is its dotted path from the top (``activities.training.done``)."""

    name: str
    path: str
    label: Label
    final: bool = False
    regions: tuple[Region, ...] = ()
    description: Label | None = None
    line: int = 0
    due: Due | None = None
    escalate: tuple[str, ...] = ()

    @property
    def parallel(self) -> bool:
        return bool(self.regions)


@dataclass(frozen=True)
class Transition:
    """A trigger leading from one or more states (dotted paths) to one state."""

    trigger: str
    sources: tuple[str, ...]
    dest: str
    label: Label
    roles: tuple[str, ...]
    evidence: tuple[EvidenceField, ...] = ()
    guards: tuple[Guard, ...] = ()
    description: Label | None = None
    line: int = 0

    @property
    def has_files(self) -> bool:
        """Whether a field of this transition is a ``file``."""
        return any(f.type == "file" for f in self.evidence)

    def field(self, name: str) -> EvidenceField | None:
        for f in self.evidence:
            if f.name == name:
                return f
        return None


@dataclass(frozen=True)
class Corrections:
    """Who may correct an instance's record (``correct``, ``revert``, ``migrate``), and whether
    a step into a final state may be taken back (``revert_final``)."""

    roles: tuple[str, ...] = ("provincial_officer",)
    revert_final: bool = False


#: The ``source`` of a program shipped with workflow (any other source is a file path).
BUNDLED = "bundled"


@dataclass(frozen=True)
class Program:
    """A whole program definition, as loaded from one file."""

    id: str
    version: int
    title: Label
    roles: tuple[str, ...]
    start_roles: tuple[str, ...]
    initial: str
    states: tuple[State, ...]
    transitions: tuple[Transition, ...]
    description: Label | None = None
    sources: tuple[str, ...] = ()
    source_file: str = ""
    source_text: str = field(default="", repr=False)
    content_hash: str = ""
    #: Where the program came from: ``bundled`` (shipped with workflow), or the path of the
    #: extra definition file it was read from; "" when loaded from text by hand.
    source: str = ""
    #: ``corrections: {roles: [...], revert_final: false}`` (default: provincial_officer).
    corrections: Corrections = field(default_factory=Corrections)

    @property
    def bundled(self) -> bool:
        return self.source == BUNDLED

    def summary_dict(self) -> dict[str, Any]:
        """One line of ``programs list --json`` (CONTRACT §4)."""
        return {
            "program": self.id,
            "version": self.version,
            "title": self.title.to_dict(),
            "states": len(self.all_states()),
            "triggers": list(self.triggers),
            "roles": list(self.roles),
            "file": self.source_file,
            "source": self.source,
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole definition as ``programs show --json`` prints it (CONTRACT §4), for any
        caller that shows a program (the command line, a web page)."""
        return {
            "program": self.id,
            "version": self.version,
            "title": self.title.to_dict(),
            "description": _label(self.description),
            "roles": list(self.roles),
            "start_roles": list(self.start_roles),
            "initial": self.initial,
            "content_hash": self.content_hash,
            "source": self.source,
            "states": [
                {
                    "id": s.path,
                    "label": _label(s.label),
                    "final": s.final,
                    "parallel": [r.name for r in s.regions],
                }
                for s in self.all_states()
            ],
            "transitions": [
                {
                    "trigger": t.trigger,
                    "from": list(t.sources),
                    "to": t.dest,
                    "label": _label(t.label),
                    "roles": list(t.roles),
                    "evidence": {
                        f.name: {
                            k: v
                            for k, v in {
                                "type": f.type,
                                "required": f.required,
                                "label": _label(f.label),
                                "min": f.min,
                                "max": f.max,
                                "choices": list(f.choices) or None,
                                "within": f.within,
                                "max_bytes": f.max_bytes,
                                "media_types": list(f.media_types) or None,
                            }.items()
                            if v is not None
                        }
                        for f in t.evidence
                    },
                    "guards": [g.describe() for g in t.guards],
                }
                for t in self.transitions
            ],
        }

    def all_states(self) -> tuple[State, ...]:
        """Every state, depth first, parents before children."""
        return walk_states(self.states)

    def state(self, path: str) -> State | None:
        for s in self.all_states():
            if s.path == path:
                return s
        return None

    @property
    def triggers(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for t in self.transitions:
            seen.setdefault(t.trigger, None)
        return tuple(seen)

    def transitions_for(self, trigger: str) -> tuple[Transition, ...]:
        return tuple(t for t in self.transitions if t.trigger == trigger)

    def label_of_state(self, path: str, lang: str = "en") -> str:
        s = self.state(path)
        return s.label.get(lang) if s else path


def walk_states(states: Iterable[State]) -> tuple[State, ...]:
    """``states`` and every state nested in their regions, depth first, parents before
    children (the loader walks the states it is building before there is a Program)."""
    out: list[State] = []
    for s in states:
        out.append(s)
        for r in s.regions:
            out.extend(walk_states(r.states))
    return tuple(out)
