"""Tests for workflow.programs.diagram: Mermaid and DOT renderings of program definitions."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Callable

import pytest

from workflow.programs.diagram import dot, mermaid
from workflow.programs.model import (
    Guard,
    Label,
    Program,
    Region,
    RegionsFinalGuard,
    State,
    Transition,
)

ROLES = ("officer", "manager")


def _state(path: str, th: str, en: str, *, final: bool = False) -> State:
    return State(name=path.rsplit(".", 1)[-1], path=path, label=Label(th, en), final=final)


def _t(
    trigger: str,
    sources: tuple[str, ...],
    dest: str,
    th: str,
    en: str,
    guards: tuple[Guard, ...] = (),
) -> Transition:
    return Transition(
        trigger=trigger,
        sources=sources,
        dest=dest,
        label=Label(th, en),
        roles=ROLES,
        guards=guards,
    )


def flat_program(title_en: str = "Simple grant") -> Program:
    """A three-step program with no parallel states; ``draft`` is initial."""
    states = (
        _state("draft", "ร่าง", "Draft"),
        _state("submitted", "ยื่นแล้ว", "Submitted"),
        _state("approved", "อนุมัติแล้ว", "Approved", final=True),
        _state("rejected", "ไม่อนุมัติ", "Rejected", final=True),
    )
    transitions = (
        _t("submit", ("draft",), "submitted", "ยื่นคำขอ", "Submit"),
        _t("approve", ("submitted",), "approved", "อนุมัติ", "Approve"),
        _t("reject", ("draft", "submitted"), "rejected", "ไม่อนุมัติ", "Reject"),
    )
    return Program(
        id="simple-grant",
        version=1,
        title=Label("ทุนอย่างง่าย", title_en),
        roles=ROLES,
        start_roles=("officer",),
        initial="draft",
        states=states,
        transitions=transitions,
    )


def _region(parent: str, name: str, th: str, en: str, work_th: str, work_en: str) -> Region:
    base = f"{parent}.{name}"
    return Region(
        name=name,
        initial="pending",
        label=Label(th, en),
        states=(
            _state(f"{base}.pending", "รอเริ่ม", "Pending"),
            _state(f"{base}.underway", f"กำลัง{work_th}", f"{work_en} underway"),
            _state(f"{base}.done", f"{work_th}เสร็จ", f"{work_en} done", final=True),
        ),
    )


def khok_nong_na() -> Program:
    """A program shaped like โคก หนอง นา: a parallel ``activities`` state with two regions."""
    regions = (
        _region("activities", "training", "การอบรม", "Training", "อบรม", "Training"),
        _region("activities", "employment", "การจ้างงาน", "Employment", "จ้างงาน", "Employment"),
    )
    top = (
        _state("planned", "วางแผน", "Planned"),
        State(
            name="activities",
            path="activities",
            label=Label("ดำเนินกิจกรรม", "Activities"),
            regions=regions,
        ),
        _state("evaluated", "ประเมินผลแล้ว", "Evaluated"),
        _state("closed", "ปิดโครงการ", "Closed", final=True),
        _state("cancelled", "ยกเลิก", "Cancelled", final=True),
    )
    transitions = [
        _t("enroll", ("planned",), "activities", "รับสมัครผู้เข้าร่วม", "Enroll participants"),
    ]
    for region, th, en in (
        ("training", "อบรม", "training"),
        ("employment", "จ้างงาน", "employment"),
    ):
        base = f"activities.{region}"
        transitions += [
            _t(
                f"start_{region}",
                (f"{base}.pending",),
                f"{base}.underway",
                f"เริ่ม{th}",
                f"Start {en}",
            ),
            _t(
                f"complete_{region}",
                (f"{base}.underway",),
                f"{base}.done",
                f"{th}เสร็จสิ้น",
                f"Complete {en}",
            ),
        ]
    transitions += [
        _t(
            "report_employment",
            ("activities.employment.underway",),
            "activities.employment.underway",
            "รายงานการจ้างงาน",
            "Report employment",
        ),
        _t(
            "evaluate",
            ("activities",),
            "evaluated",
            "ประเมินผล",
            "Evaluate",
            guards=(RegionsFinalGuard("activities"),),
        ),
        _t("close", ("evaluated",), "closed", "ปิดโครงการ", "Close"),
        _t(
            "cancel",
            tuple(s.path for s in top if not s.final),
            "cancelled",
            "ยกเลิกโครงการ",
            "Cancel",
        ),
    ]
    return Program(
        id="khok-nong-na",
        version=1,
        title=Label("โคก หนอง นา", "Khok Nong Na"),
        roles=ROLES,
        start_roles=("officer",),
        initial="planned",
        states=top,
        transitions=tuple(transitions),
    )


def _mermaid_id(path: str) -> str:
    return path.replace(".", "__")


def test_mermaid_header_and_every_state() -> None:
    """Mermaid output starts with stateDiagram-v2 and declares every state with a safe id."""
    program = khok_nong_na()
    text = mermaid(program)
    assert text.startswith("stateDiagram-v2\n")
    for s in program.all_states():
        assert re.search(rf"\bas {re.escape(_mermaid_id(s.path))}$", text, re.M), s.path
    assert "activities.training" not in text


def test_mermaid_regions_are_concurrent_composites() -> None:
    """The parallel state is a composite whose regions are split by Mermaid's -- separator."""
    text = mermaid(khok_nong_na())
    lines = [line.strip() for line in text.splitlines()]
    assert "state activities {" in lines
    assert "state activities__training {" in lines
    assert "state activities__employment {" in lines
    assert lines.count("--") == 1
    assert "[*] --> activities__training__pending" in lines
    assert "[*] --> activities__employment__pending" in lines
    assert "activities__training__done --> [*]" in lines
    assert "[*] --> planned" in lines
    assert "closed --> [*]" in lines


def test_mermaid_edges_per_source_and_self_loop() -> None:
    """A transition with several sources gives one edge each; self-loops are kept."""
    text = mermaid(khok_nong_na())
    for src in ("planned", "activities", "evaluated"):
        assert f"{src} --> cancelled : Cancel (cancel)" in text
    loop = "activities__employment__underway --> activities__employment__underway"
    assert f"{loop} : Report employment (report_employment)" in text
    assert "closed --> cancelled" not in text


def test_mermaid_region_edges_inside_their_region() -> None:
    """Edges between states of one region are written inside that region's block."""
    text = mermaid(khok_nong_na())
    start = text.index("state activities__training {")
    end = text.index("--\n", start)
    assert "activities__training__pending --> activities__training__underway" in text[start:end]


def test_mermaid_thai_labels() -> None:
    """With lang="th" the Thai state and transition labels appear unchanged."""
    text = mermaid(khok_nong_na(), lang="th")
    assert 'state "วางแผน" as planned' in text
    assert 'state "การอบรม" as activities__training' in text
    assert "planned --> activities : รับสมัครผู้เข้าร่วม" in text
    assert "Planned" not in text


def test_mermaid_active_and_visited_marking() -> None:
    """Active leaf states get the active class, visited ones the visited class."""
    text = mermaid(
        khok_nong_na(),
        active=["activities.training.underway", "activities.employment.pending"],
        visited_states=["planned", "activities", "activities.training.pending"],
        fired=[("planned", "enroll", "activities")],
    )
    assert "classDef active " in text
    assert "class activities__training__underway,activities__employment__pending active" in text
    assert "classDef visited " in text
    assert "class planned,activities__training__pending visited" in text
    assert "planned --> activities : ✔ Enroll participants (enroll)" in text


def test_mermaid_no_marking_without_highlights() -> None:
    """No classDef lines are emitted when nothing is highlighted."""
    assert "classDef" not in mermaid(flat_program())


def test_mermaid_escapes_awkward_characters() -> None:
    """Quotes, colons and semicolons in labels are written as Mermaid entity codes."""
    program = flat_program()
    weird = State(name="draft", path="draft", label=Label("ร่าง", 'The "draft": v1; 100%'))
    program = dataclasses.replace(program, states=(weird, *program.states[1:]))
    text = mermaid(program)
    line = next(x for x in text.splitlines() if x.strip().endswith("as draft"))
    assert line.strip() == 'state "The #quot;draft#quot;#58; v1#59; 100#37;" as draft'


def test_mermaid_reserved_and_colliding_ids() -> None:
    """State names that are Mermaid keywords or collide after escaping get distinct ids."""
    states = (
        _state("state", "ก", "A"),
        _state("a-b", "ข", "B"),
        _state("a_b", "ค", "C", final=True),
    )
    program = Program(
        id="ids",
        version=1,
        title=Label("ไอดี", "Ids"),
        roles=ROLES,
        start_roles=ROLES,
        initial="state",
        states=states,
        transitions=(_t("go", ("state", "a-b"), "a_b", "ไป", "Go"),),
    )
    text = mermaid(program)
    assert "as state_\n" in text
    assert "as a_b\n" in text and "as a_b_2\n" in text
    assert "[*] --> state_" in text


def test_mermaid_and_dot_deterministic() -> None:
    """The same input always renders to the same text."""
    active, visited = ["activities.training.underway"], ["planned"]
    for render in (mermaid, dot):
        first = render(khok_nong_na(), "th", active, visited)
        assert first == render(khok_nong_na(), "th", active, visited)


def test_dot_structure() -> None:
    """DOT output has clusters for the parallel state and its regions, finals and an initial."""
    text = dot(khok_nong_na(), active=["activities.training.underway"])
    assert text.startswith('digraph "khok-nong-na" {\n')
    assert "rankdir=LR;" in text and "compound=true;" in text
    assert 'subgraph "cluster_activities" {' in text
    assert 'subgraph "cluster_activities__training" {' in text
    assert 'subgraph "cluster_activities__employment" {' in text
    assert text.count("dashed") == 2
    assert re.search(r'"closed" \[[^]]*peripheries=2', text)
    assert '"__start__" -> "planned";' in text
    assert '"activities.training.__start__" -> "activities.training.pending";' in text
    assert re.search(r'"planned" -> "activities" \[[^]]*lhead="cluster_activities"', text)
    assert re.search(r'"activities" -> "evaluated" \[[^]]*ltail="cluster_activities"', text)
    assert re.search(r'"activities.training.underway" \[[^]]*fillcolor="#f9d71c"', text)


def test_dot_fired_edges_are_highlighted() -> None:
    """Fired transitions are drawn bold and coloured, matched through leaf source paths."""
    text = dot(
        khok_nong_na(),
        fired=[
            ("planned", "enroll", "activities.training.pending"),
            ("activities.training.underway", "cancel", "cancelled"),
        ],
    )
    enroll = next(x for x in text.splitlines() if x.strip().startswith('"planned" -> "activities"'))
    assert "penwidth=2.5" in enroll and "bold" in enroll
    cancel = next(
        x for x in text.splitlines() if x.strip().startswith('"activities" -> "cancelled"')
    )
    assert "penwidth=2.5" in cancel
    plain = next(x for x in text.splitlines() if x.strip().startswith('"planned" -> "cancelled"'))
    assert "penwidth" not in plain


def test_dot_escapes_quotes() -> None:
    """Double quotes and backslashes in labels are escaped in DOT strings."""
    program = flat_program(title_en='The "simple" \\ grant')
    text = dot(program)
    assert 'label="The \\"simple\\" \\\\ grant";' in text


def test_dot_thai_labels() -> None:
    """With lang="th" the DOT labels are the Thai texts."""
    text = dot(khok_nong_na(), lang="th")
    assert 'label="การอบรม"' in text
    assert 'label="รับสมัครผู้เข้าร่วม"' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' binary not installed")
@pytest.mark.parametrize("lang", ["en", "th"])
@pytest.mark.parametrize("build", [flat_program, khok_nong_na])
def test_dot_is_valid_for_graphviz(build: Callable[[], Program], lang: str) -> None:
    """Graphviz renders the DOT output to SVG without errors."""
    program = build()
    text = dot(
        program,
        lang=lang,
        active=["activities.employment.underway", "submitted"],
        visited_states=["planned", "draft"],
        fired=[("planned", "enroll", "activities"), ("draft", "submit", "submitted")],
    )
    result = subprocess.run(
        ["dot", "-Tsvg"], input=text.encode(), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"<svg" in result.stdout
    # Font and character-width warnings depend on the machine; anything else means bad DOT.
    warnings = [
        line
        for line in result.stderr.decode().splitlines()
        if "Warning" in line and "font" not in line.lower() and "character" not in line
    ]
    assert warnings == []


@pytest.mark.skipif(shutil.which("fc-match") is None, reason="fontconfig's fc-match not installed")
def test_dot_font_family_resolves_to_a_thai_font() -> None:
    """The DOT fontname list resolves, through fontconfig (which Graphviz renders with), to an
    installed font that covers Thai: labels render as Thai, not boxes (.ci/run installs
    fonts-thai-tlwg)."""
    import subprocess

    from workflow.programs.diagram import DOT_FONT

    found = subprocess.run(
        ["fc-match", "-f", "%{family[0]}|%{lang}", DOT_FONT],
        capture_output=True, text=True, check=True,
    ).stdout
    family, _, langs = found.partition("|")
    assert "th" in langs.split("|"), f"{DOT_FONT!r} resolves to {family!r}, which has no Thai"
