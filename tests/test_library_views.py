"""What the CLI prints is assembled by the library, callable without click: the audit log's
CSV (workflow.audit.export), an instance's diagram marks (workflow.programs.diagram), the
tambons of ``bulk-start --within`` (workflow.areas) and ``programs validate`` (registry)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from helpers import lopburi_story
from workflow import Engine
from workflow.areas import subdistricts_within, tambons_within
from workflow.audit.export import CSV_COLUMNS, csv_bytes, csv_rows
from workflow.errors import AreaNotFound
from workflow.programs import diagram
from workflow.programs.registry import Registry, bundled_files, validate
from workflow.records import Event
from workflow.runtime.display import csv_value

ROOT = Path(__file__).resolve().parent.parent


def _event(note: str, evidence: dict[str, str]) -> Event:
    return Event(
        id=1, instance=7, seq=2, trigger="kickoff", from_=("planned",), to=("kickoff",),
        actor="=cmd|' /C calc'!A0", role="coordinator", os_user="somchai",
        at="2021-02-17T03:00:00+00:00", evidence=evidence, note=note, definition_hash="d" * 64,
        policy="grants", prev_hash="0" * 64, hash="f" * 64, program="leader-development",
        area="160117",
    )


def test_csv_bytes_start_with_a_bom_and_use_crlf() -> None:
    """The CSV file is UTF-8 with a BOM, CRLF line ends, the header first."""
    data = csv_bytes([_event("ประชุม", {"date": "2021-02-17"})])
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    assert text.split("\r\n")[0] == ",".join(CSV_COLUMNS)
    assert "ประชุม" in text


def test_csv_rows_neutralise_formulas_and_round_trip() -> None:
    """No cell starts a formula; csv_value gives back the actor, the note and the evidence."""
    event = _event("+SUM(A1)", {"b": "2", "a": "@x"})
    header, row = list(csv_rows([event]))
    assert header == list(CSV_COLUMNS)
    assert not any(c.startswith(("=", "+", "-", "@")) for c in row)
    assert csv_value(row[header.index("actor")]) == event.actor
    assert csv_value(row[header.index("note")]) == "+SUM(A1)"
    assert json.loads(row[header.index("evidence")]) == {"a": "@x", "b": "2"}
    parsed = list(csv.reader(io.StringIO(csv_bytes([event]).decode("utf-8-sig"), newline="")))
    assert parsed[1] == row


def test_tambons_within_a_district_by_name_or_code() -> None:
    """A district named by code or by name gives the codes of its tambons; a tambon itself."""
    by_code = tambons_within("1601")
    assert by_code == tuple(a.code for a in subdistricts_within("1601"))
    assert "160117" in by_code
    assert tambons_within("เมืองลพบุรี") == by_code
    assert tambons_within("160117") == ("160117",)


def test_tambons_within_an_unknown_area_is_not_found() -> None:
    """A name that is no area is AreaNotFound (exit 3), as bulk-start reports it."""
    with pytest.raises(AreaNotFound):
        tambons_within("Atlantis")


def test_marks_of_an_instance(engine: Engine) -> None:
    """diagram.marks gives the active states, the states entered and the edges fired."""
    inst, result = lopburi_story(engine)
    program = engine.definition_of(inst.id)
    marks = diagram.marks(program, engine.get(inst.id).active, engine.history(inst.id))
    assert marks.active == result.instance.active
    assert set(result.event.to) <= set(marks.visited_states)
    assert [trigger for _, trigger, _ in marks.fired] == ["kickoff"]
    text = diagram.draw(program, "dot", "en", marks)
    assert text == diagram.dot(
        program, active=marks.active, visited_states=marks.visited_states, fired=marks.fired
    )


def test_draw_without_marks_is_the_plain_drawing() -> None:
    """draw picks mermaid or dot by name, and refuses another name."""
    program = Registry().get("khok-nong-na")
    assert diagram.draw(program) == diagram.mermaid(program)
    assert diagram.draw(program, "dot", "th") == diagram.dot(program, lang="th")
    with pytest.raises(ValueError):
        diagram.draw(program, "svg")


def test_validate_bundled_and_broken(tmp_path: Path) -> None:
    """validate checks every file under the paths; one problem makes the whole not ok."""
    good = validate([ROOT / "definitions"])
    assert good.ok and len(good.files) == len(bundled_files())
    assert all(f.to_dict()["program"] for f in good.files)
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: x\n", encoding="utf-8")
    result = validate([broken])
    assert not result.ok
    data = result.to_dict()
    assert data["ok"] is False
    assert data["files"][0]["program"] is None and data["files"][0]["problems"]
    assert validate([tmp_path / "empty-dir-does-not-exist"]).files[0].ok is False
