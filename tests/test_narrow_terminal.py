"""`history` and `audit log` in a terminal of 80-100 columns (issue 9, small things): when the
table does not fit, each event is a block with one field per line; an identifier is never
split, Thai is never broken inside a word, no line is wider than the terminal. Run as a real
process with COLUMNS set, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len

from helpers import OFFICER, start_lopburi
from workflow import Engine

SCRIPT = Path(sys.executable).with_name("workflow")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "workflow.cli.main"]

KICKOFF = {
    "date": "2564-02-17",
    "venue": "ศูนย์เรียนรู้เศรษฐกิจพอเพียงบ้านสระบัว หมู่ที่ 1 ตำบลบางขันหมาก",
    "chair": "นายเดโช วันทนาพิทักษ์ พัฒนาการจังหวัดบุรีรัมย์",
}
NOTE = "ประธานเปิดโครงการฯ เวลา 08.30 น. ณ ศาลาประชาคม"


def run(url: str, columns: int | str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    p = subprocess.run([*COMMAND, "--db", url, *args], env={**env, "COLUMNS": str(columns)},
                       capture_output=True, text=True, encoding="utf-8", timeout=120,
                       check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def words_of(engine: Engine, instance: int) -> set[str]:
    """Every whitespace-separated word the output may show (values, labels, headers)."""
    out: set[str] = set()
    for e in engine.audit_log():
        fields = [e.trigger, e.actor, e.role, e.note or "", str(e.instance), str(e.seq),
                  str(e.program), str(e.area), e.at.replace("T", " ")[:19], *e.to,
                  *(e.from_ or ()), *(f"{k}={v}" for k, v in e.evidence.items())]
        for f in fields:
            out.update(f.split())
            out.update(w + ";" for w in f.split())
    out.update(["seq", "at", "(UTC)", "trigger", "from", "to", "actor", "role", "evidence",
                "note", "instance", "program", "area", "-", "─"])
    return out


@pytest.fixture
def story(engine: Engine) -> int:
    inst = start_lopburi(engine, title="ผู้นำการเปลี่ยนแปลง บ้านสระบัว อำเภอแคนดง")
    engine.fire(inst.id, "kickoff", actor="นายเดโช วันทนาพิทักษ์", role=OFFICER,
                evidence=KICKOFF, note=NOTE)
    return inst.id


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("command", ["history", "audit log"])
def test_narrow_terminal_gets_blocks_that_never_split_words(
        engine: Engine, story: int, columns: int, command: str) -> None:
    """At 80 and 100 columns each event is a block; every word shown is a whole word of the
    record (no identifier or Thai word cut), and no line is wider than the terminal."""
    args = ["history", str(story)] if command == "history" else ["audit", "log"]
    out = run(engine.url, columns, *args)
    lines = out.splitlines()
    assert all(cell_len(line) <= columns for line in lines), max(lines, key=cell_len)
    allowed = words_of(engine, story)
    shown = {w for line in lines for w in line.split()}
    assert shown <= allowed, shown - allowed
    wholes = ["leader-development", "provincial_officer", "พัฒนาการจังหวัดบุรีรัมย์",
              "ศูนย์เรียนรู้เศรษฐกิจพอเพียงบ้านสระบัว"]
    if command == "history":
        wholes.append("kicked_off")
    for whole in wholes:
        assert whole in shown or f"chair={whole}" in shown or f"venue={whole}" in shown \
            or f"program={whole}" in shown, whole
    # A block: the field name starts the line, the value follows on the same line.
    assert any(line.startswith("trigger ") and line.split()[-1] == "kickoff" for line in lines)
    assert any(line.startswith("evidence ") for line in lines)
    if command == "history":
        assert any(line.split() == ["note", *NOTE.split()] for line in lines)


@pytest.mark.parametrize("command", ["history", "audit log"])
def test_wide_terminal_keeps_the_table(engine: Engine, story: int, command: str) -> None:
    """Where the table fits (220 columns) it stays a table: one header line, one row per
    event beginning with its id, words whole all the same."""
    args = ["history", str(story)] if command == "history" else ["audit", "log"]
    out = run(engine.url, 220, *args)
    lines = out.splitlines()
    header = next(line for line in lines if "trigger" in line)
    assert "evidence" in header and "role" in header
    assert all(cell_len(line) <= 220 for line in lines)
    shown = {w for line in lines for w in line.split() if set(w) != {"─"}}
    assert shown <= words_of(engine, story)
    assert not any(line.startswith("trigger ") for line in lines)


@pytest.mark.parametrize("columns", ["²", "9" * 5000, "0", "-3", "abc"])
def test_a_nonsense_columns_value_is_ignored(engine: Engine, story: int, columns: str) -> None:
    """COLUMNS that is not a sensible width (a superscript digit, 5,000 digits, zero,
    negative, words) is ignored, never a crash."""
    run(engine.url, columns, "show", str(story))
