"""Draw a program definition as a Mermaid or Graphviz DOT state diagram.

Why: a program is written by one person in YAML and read by many (officers, auditors, the
people it serves). A picture of its states and transitions is how most of them check that the
definition says what the programme means, and a picture of one instance (where it is now, where
it has been, which steps were taken) is how they follow a case. Mermaid text renders inside
GitHub markdown and most wikis with no extra tooling; DOT gives a precise, printable layout when
Graphviz is at hand.

Both renderers are pure functions of their arguments: the same program and highlights always give
the same text, in the order of the definition, so diagrams can be committed and diffed.
:func:`marks` turns an instance and its history into the highlights both take, and :func:`draw`
picks the renderer by name: the command line and the web pages draw an instance the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workflow.programs.model import Program, Region, State, Transition

if TYPE_CHECKING:
    from workflow.records import Event

__all__ = ["FORMATS", "Marks", "dot", "draw", "marks", "mermaid"]

_INDENT = "    "

# Mermaid ids that a state diagram's lexer reads as keywords when they stand alone.
_MERMAID_RESERVED = frozenset(
    {
        "accdescr",
        "acctitle",
        "as",
        "choice",
        "class",
        "classdef",
        "click",
        "default",
        "direction",
        "end",
        "fork",
        "hide",
        "join",
        "left",
        "note",
        "right",
        "scale",
        "state",
        "style",
    }
)

_MERMAID_ACTIVE_STYLE = "fill:#f9d71c,stroke:#333,stroke-width:2px,color:#000"
_MERMAID_VISITED_STYLE = "fill:#dde8f5,stroke:#5b7fa6,color:#000"
_MERMAID_FIRED_MARK = "✔ "

_DOT_ACTIVE_FILL = "#f9d71c"
_DOT_VISITED_FILL = "#dde8f5"
_DOT_FIRED_COLOR = "#c0392b"
_DOT_ACTIVE_CLUSTER = "#b8860b"


# --------------------------------------------------------------------------------------------
# The shape of a program, flattened once for both renderers.


@dataclass(frozen=True)
class _Edge:
    """One drawn edge: a transition from one of its sources."""

    source: str
    dest: str
    transition: Transition


@dataclass
class _Layout:
    """Where every state and region sits, and which edges belong to which scope.

    A scope is ``""`` for the top level or a region key (``activities.training``); an edge is drawn
    in the innermost scope that holds both of its ends.
    """

    states: dict[str, State] = field(default_factory=dict)
    scope_of: dict[str, str] = field(default_factory=dict)  # state path -> its scope
    parent_scope: dict[str, str] = field(default_factory=dict)  # region key -> enclosing scope
    edges: dict[str, list[_Edge]] = field(default_factory=dict)  # scope -> edges, in order

    def ancestors(self, scope: str) -> list[str]:
        """``scope`` and every scope around it, innermost first, ending with ``""``."""
        out = [scope]
        while scope:
            scope = self.parent_scope.get(scope, "")
            out.append(scope)
        return out

    def common_scope(self, a: str, b: str) -> str:
        outer_b = set(self.ancestors(self.scope_of.get(b, "")))
        for scope in self.ancestors(self.scope_of.get(a, "")):
            if scope in outer_b:
                return scope
        return ""


def _region_key(state: State, region: Region) -> str:
    return f"{state.path}.{region.name}"


def _layout(program: Program) -> _Layout:
    lay = _Layout()

    def walk(states: tuple[State, ...], scope: str) -> None:
        for s in states:
            lay.states[s.path] = s
            lay.scope_of[s.path] = scope
            for r in s.regions:
                key = _region_key(s, r)
                lay.parent_scope[key] = scope
                walk(r.states, key)

    walk(program.states, "")
    for t in program.transitions:
        for src in t.sources:
            scope = lay.common_scope(src, t.dest)
            lay.edges.setdefault(scope, []).append(_Edge(src, t.dest, t))
    return lay


def _initial_path(initial: str, states: tuple[State, ...], prefix: str) -> str | None:
    """The path of the initial state, whether ``initial`` is written as a name or a path."""
    for s in states:
        if initial in (s.path, s.name) or (prefix and s.path == f"{prefix}.{initial}"):
            return s.path
    return None


def _edge_label(t: Transition, lang: str) -> str:
    text = t.label.get(lang)
    if lang == "th":
        return text
    return f"{text} ({t.trigger})" if text != t.trigger else text


def _region_label(region: Region, lang: str) -> str:
    return region.label.get(lang) if region.label is not None else region.name


def _within(path: str, recorded: str) -> bool:
    """True when ``recorded`` is ``path`` or a state inside it."""
    return recorded == path or recorded.startswith(path + ".")


def _is_fired(edge: _Edge, fired: Sequence[tuple[str, str, str]]) -> bool:
    trigger = edge.transition.trigger
    return any(
        f_trigger == trigger and _within(edge.source, f_src) and _within(edge.dest, f_dest)
        for f_src, f_trigger, f_dest in fired
    )


# --------------------------------------------------------------------------------------------
# Mermaid


def _mermaid_ids(program: Program) -> dict[str, str]:
    """A Mermaid-safe, unique id for every state path and region key."""
    ids: dict[str, str] = {}
    used: set[str] = set()

    def assign(path: str) -> None:
        base = "__".join(re.sub(r"[^A-Za-z0-9_]", "_", part) for part in path.split("."))
        if not base or base.lower() in _MERMAID_RESERVED:
            base = f"{base}_"
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        ids[path] = candidate

    def walk(states: tuple[State, ...]) -> None:
        for s in states:
            assign(s.path)
            for r in s.regions:
                assign(_region_key(s, r))
                walk(r.states)

    walk(program.states)
    return ids


_MERMAID_ESCAPES = {
    "#": "#35;",
    '"': "#quot;",
    ":": "#58;",
    ";": "#59;",
    "<": "#lt;",
    ">": "#gt;",
    "%": "#37;",
    "{": "#123;",
    "}": "#125;",
    "|": "#124;",
    "`": "#96;",
}
_MERMAID_ESCAPE_RE = re.compile("[" + re.escape("".join(_MERMAID_ESCAPES)) + "]")


def _mm_text(text: str) -> str:
    """Text safe inside a Mermaid state description or edge label; Thai passes through as-is."""
    text = " ".join(text.split())  # no newlines or tabs: a label must stay on its line
    return _MERMAID_ESCAPE_RE.sub(lambda m: _MERMAID_ESCAPES[m.group(0)], text)


def mermaid(
    program: Program,
    lang: str = "en",
    active: Sequence[str] = (),
    visited_states: Sequence[str] = (),
    fired: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The program as a Mermaid ``stateDiagram-v2``, labelled in ``lang`` (``"th"`` or ``"en"``).

    ``active`` and ``visited_states`` are dotted state paths to highlight (active wins); ``fired``
    holds ``(source_path, trigger, dest_path)`` steps taken. Mermaid state diagrams cannot style a
    single edge, so a fired edge's label is prefixed with a check mark instead.
    """
    lay = _layout(program)
    ids = _mermaid_ids(program)
    active_set = set(active)
    visited_set = set(visited_states) - active_set
    lines = ["stateDiagram-v2"]

    def edge_lines(scope: str, depth: int) -> list[str]:
        pad = _INDENT * depth
        out = []
        for e in lay.edges.get(scope, []):
            if e.source not in ids or e.dest not in ids:
                continue
            label = _edge_label(e.transition, lang)
            if _is_fired(e, fired):
                label = _MERMAID_FIRED_MARK + label
            out.append(f"{pad}{ids[e.source]} --> {ids[e.dest]} : {_mm_text(label)}")
        return out

    def block(states: tuple[State, ...], initial: str, scope: str, depth: int) -> list[str]:
        pad = _INDENT * depth
        out: list[str] = []
        for s in states:
            sid = ids[s.path]
            out.append(f'{pad}state "{_mm_text(s.label.get(lang))}" as {sid}')
            if not s.regions:
                continue
            out.append(f"{pad}state {sid} {{")
            for i, r in enumerate(s.regions):
                if i:
                    out.append(f"{pad}{_INDENT}--")
                key = _region_key(s, r)
                rid = ids[key]
                out.append(f'{pad}{_INDENT}state "{_mm_text(_region_label(r, lang))}" as {rid}')
                out.append(f"{pad}{_INDENT}state {rid} {{")
                out.extend(block(r.states, r.initial, key, depth + 2))
                out.append(f"{pad}{_INDENT}}}")
            out.append(f"{pad}}}")
        start = _initial_path(initial, states, scope)
        if start is not None:
            out.append(f"{pad}[*] --> {ids[start]}")
        out.extend(edge_lines(scope, depth))
        out.extend(f"{pad}{ids[s.path]} --> [*]" for s in states if s.final)
        return out

    lines.extend(block(program.states, program.initial, "", 1))

    def marked(wanted: set[str]) -> list[str]:
        # Only plain states take a class: Mermaid styles composite states poorly or not at all.
        return [
            ids[s.path]
            for s in program.all_states()
            if s.path in wanted and not s.regions and s.path in ids
        ]

    for cls, style, wanted in (
        ("active", _MERMAID_ACTIVE_STYLE, active_set),
        ("visited", _MERMAID_VISITED_STYLE, visited_set),
    ):
        targets = marked(wanted)
        if targets:
            lines.append(f"{_INDENT}classDef {cls} {style}")
            lines.append(f"{_INDENT}class {','.join(targets)} {cls}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Graphviz DOT


def _dq(text: str) -> str:
    """A DOT double-quoted string."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return f'"{text}"'


def _attrs(pairs: Sequence[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{k}={v}" for k, v in pairs) + "]"


def _cluster(path: str) -> str:
    return _dq("cluster_" + path.replace(".", "__"))


def _start_node(scope: str) -> str:
    return _dq(f"{scope}.__start__" if scope else "__start__")


#: Graphviz's default font (Times) has no Thai glyphs, so Thai labels would render as boxes.
#: Graphviz hands this list to fontconfig, which takes the first family installed: Noto Sans
#: Thai (Debian ``fonts-noto-core``), Loma or Garuda (``fonts-thai-tlwg``), then any sans.
DOT_FONT = "Noto Sans Thai, Loma, Garuda, sans-serif"


def dot(
    program: Program,
    lang: str = "en",
    active: Sequence[str] = (),
    visited_states: Sequence[str] = (),
    fired: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The program as a Graphviz ``digraph``, labelled in ``lang`` (``"th"`` or ``"en"``).

    A parallel state is a cluster holding one dashed cluster per region, plus an invisible anchor
    node (named by the state's path) that edges to and from the parallel state attach to, clipped
    at the cluster's border with ``lhead``/``ltail``. Active states are filled in yellow, visited
    ones in pale blue, and fired edges are drawn bold and red.
    """
    lay = _layout(program)
    active_set = set(active)
    visited_set = set(visited_states) - active_set
    lines = [
        f"digraph {_dq(program.id)} {{",
        f"{_INDENT}rankdir=LR;",
        f"{_INDENT}compound=true;",
        f"{_INDENT}newrank=true;",
        f"{_INDENT}label={_dq(program.title.get(lang))};",
        f"{_INDENT}labelloc=t;",
        f"{_INDENT}fontname={_dq(DOT_FONT)};",
        f"{_INDENT}node [shape=box, style=rounded, fontsize=11, fontname={_dq(DOT_FONT)}];",
        f"{_INDENT}edge [fontsize=9, fontname={_dq(DOT_FONT)}];",
    ]

    def state_node(s: State, pad: str) -> str:
        pairs = [("label", _dq(s.label.get(lang)))]
        styles = ["rounded"]
        if s.final:
            pairs.append(("peripheries", "2"))
        if s.path in active_set:
            styles.append("filled")
            pairs += [("fillcolor", _dq(_DOT_ACTIVE_FILL)), ("penwidth", "2")]
        elif s.path in visited_set:
            styles.append("filled")
            pairs.append(("fillcolor", _dq(_DOT_VISITED_FILL)))
        pairs.insert(1, ("style", _dq(",".join(styles))))
        return f"{pad}{_dq(s.path)} {_attrs(pairs)};"

    def start_node(scope: str, pad: str) -> str:
        return f'{pad}{_start_node(scope)} [shape=point, width=0.12, label=""];'

    def block(states: tuple[State, ...], initial: str, scope: str, depth: int) -> list[str]:
        pad = _INDENT * depth
        out: list[str] = []
        if _initial_path(initial, states, scope) is not None:
            out.append(start_node(scope, pad))
        for s in states:
            if not s.regions:
                out.append(state_node(s, pad))
                continue
            inner = pad + _INDENT
            lit = any(_within(s.path, a) for a in active_set)
            out.append(f"{pad}subgraph {_cluster(s.path)} {{")
            out.append(f"{inner}label={_dq(s.label.get(lang))};")
            if lit:
                out.append(f'{inner}style="rounded,bold"; color={_dq(_DOT_ACTIVE_CLUSTER)};')
            elif s.path in visited_set:
                out.append(f'{inner}style="rounded,filled"; fillcolor={_dq(_DOT_VISITED_FILL)};')
            else:
                out.append(f'{inner}style="rounded";')
            out.append(f'{inner}{_dq(s.path)} [shape=point, style=invis, width=0.01, label=""];')
            for r in s.regions:
                key = _region_key(s, r)
                out.append(f"{inner}subgraph {_cluster(key)} {{")
                out.append(f"{inner}{_INDENT}label={_dq(_region_label(r, lang))};")
                out.append(
                    f'{inner}{_INDENT}style="dashed,filled"; fillcolor="white"; color="#888888";'
                )
                out.extend(block(r.states, r.initial, key, depth + 2))
                out.append(f"{inner}}}")
            out.append(f"{pad}}}")
        return out

    def initial_edges(states: tuple[State, ...], initial: str, scope: str) -> None:
        start = _initial_path(initial, states, scope)
        if start is not None:
            pairs = compound(None, start)
            tail = " " + _attrs(pairs) if pairs else ""
            lines.append(f"{_INDENT}{_start_node(scope)} -> {_dq(start)}{tail};")
        for s in states:
            for r in s.regions:
                initial_edges(r.states, r.initial, _region_key(s, r))

    def compound(src: str | None, dest: str) -> list[tuple[str, str]]:
        """``lhead``/``ltail`` for ends that are parallel states, unless one holds the other."""
        pairs: list[tuple[str, str]] = []
        d = lay.states.get(dest)
        if d is not None and d.regions and not (src is not None and _within(dest, src)):
            pairs.append(("lhead", _cluster(dest)))
        s = lay.states.get(src) if src is not None else None
        if s is not None and s.regions and src is not None and not _within(src, dest):
            pairs.append(("ltail", _cluster(src)))
        return pairs

    lines.extend(block(program.states, program.initial, "", 1))
    initial_edges(program.states, program.initial, "")
    for t in program.transitions:
        for src in t.sources:
            e = _Edge(src, t.dest, t)
            pairs = [("label", _dq(_edge_label(t, lang))), *compound(src, t.dest)]
            if _is_fired(e, fired):
                pairs += [
                    ("color", _dq(_DOT_FIRED_COLOR)),
                    ("fontcolor", _dq(_DOT_FIRED_COLOR)),
                    ("penwidth", "2.5"),
                    ("style", "bold"),
                ]
            lines.append(f"{_INDENT}{_dq(src)} -> {_dq(t.dest)} {_attrs(pairs)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- one instance

#: The drawing formats :func:`draw` knows, by name.
FORMATS = ("mermaid", "dot")


@dataclass(frozen=True)
class Marks:
    """What to highlight on a drawing: the active leaf states, the states visited before,
    and the ``(source_path, trigger, dest_path)`` steps taken."""

    active: tuple[str, ...] = ()
    visited_states: tuple[str, ...] = ()
    fired: tuple[tuple[str, str, str], ...] = ()


def marks(program: Program, active: Sequence[str], events: Sequence[Event]) -> Marks:
    """The highlights of one instance of ``program``: ``active`` (its current leaf states)
    and, from its ``events`` oldest first, every state it entered and, per event, the one
    transition of ``program`` that step took (the first whose source was active then)."""
    visited: list[str] = []
    fired: list[tuple[str, str, str]] = []
    for e in events:
        visited.extend(e.to)
        fired.extend(_fired_edge(program, e))
    return Marks(tuple(active), tuple(visited), tuple(fired))


def _fired_edge(program: Program, e: Event) -> list[tuple[str, str, str]]:
    """The edge an event took, as a list of at most one (none for the start event)."""
    if e.from_ is None:
        return []
    active: set[str] = set()
    for leaf in e.from_:
        parts = leaf.split(".")
        active.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return [
        (src, e.trigger, t.dest)
        for t in program.transitions_for(e.trigger)
        for src in t.sources
        if src in active
    ][:1]


def draw(program: Program, fmt: str = "mermaid", lang: str = "en", on: Marks | None = None) -> str:
    """``program`` in format ``fmt`` (one of :data:`FORMATS`), labelled in ``lang``, with the
    highlights ``on`` (see :func:`marks`) if given."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown diagram format {fmt!r}; expected one of {', '.join(FORMATS)}")
    m = on or Marks()
    render = mermaid if fmt == "mermaid" else dot
    return render(
        program, lang=lang, active=m.active, visited_states=m.visited_states, fired=m.fired
    )
