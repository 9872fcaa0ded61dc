"""Input and output (issue 9, items 6 and 12-15), on SQLite and PostgreSQL.

* who ran it: the OS user comes from the real uid, never from LOGNAME/USER;
* one canonical form for every typed identifier (NFC; control and invisible characters refused
  with exit 2 naming the character), so a lookalike is the same grant or no grant at all;
* lengths: the loader and the command line refuse what the columns cannot hold (E016, exit 2),
  with the limits the schema itself is declared with;
* output: control characters escaped in every human rendering, JSON exact, CSV cells never run
  as spreadsheet formulas and still round-trip;
* secrets: a password in the database URL is never printed;
* hostile files: FIFOs, devices, link loops and huge files are named problems, never a hang.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pwd
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import (
    COORDINATOR,
    KICKOFF,
    LOPBURI,
    OFFICER,
    dump_tables,
    lopburi_story,
    sql_engine,
    start_lopburi,
)
from reliability import assert_one_error_line, run_cli
from workflow import Engine, PermissionDenied, UsageError
from workflow.runtime import text as text_rules
from workflow.runtime.display import CSV_TRIGGERS, csv_cell, csv_value, printable
from workflow.runtime.files import FileRefused, read_regular_file
from workflow.runtime.text import ID_MAX, KEY_MAX, NAME_MAX, TITLE_MAX, identifier

SCRIPT = Path(sys.executable).with_name("workflow")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "workflow.cli.main"]
REAL_USER = pwd.getpwuid(os.getuid()).pw_name

#: What a terminal executes or what hides or reorders text.
HOSTILE_OUTPUT = ("\x1b", "\x9b", "\x07", "\r", "\u202e", "\u2066", "\x00")


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real console script in a separate process."""
    base = {k: v for k, v in os.environ.items() if k not in ("WORKFLOW_DB", "WORKFLOW_TRACEBACK")}
    return subprocess.run([*COMMAND, *args], env={**base, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, check=False)


def raw_controls(text: str) -> list[str]:
    """Characters in ``text`` that must never reach a terminal raw (newline and tab aside)."""
    return [c for c in text if c not in "\n\t" and (not c.isprintable())]


@pytest.fixture
def guarded(engine: Engine) -> Iterator[Engine]:
    """An engine on the test database with the default policy: grants decide."""
    with Engine(engine.url) as eng:
        yield eng


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's input rules as they were before this change (text kept as typed), to make
    the rows an older workflow could have stored."""
    def keep(value: Any, *_: Any, **__: Any) -> Any:
        return value

    for name in ("name", "identifier", "free_text", "note"):
        monkeypatch.setattr(text_rules, name, keep)


# --------------------------------------------------------------------------- 6: who ran it


def test_os_user_is_the_real_user_whatever_logname_says(engine: Engine, tmp_path: Path) -> None:
    """With LOGNAME/USER/USERNAME set to another name, events, grants and denials record the
    passwd name of the real uid."""
    fake = {"LOGNAME": "mallory", "USER": "mallory", "USERNAME": "mallory"}
    assert cli("--db", engine.url, "actors", "grant", "udomrat", OFFICER, env=fake).returncode == 0
    started = cli("--db", engine.url, "start", "leader-development", "--area", LOPBURI,
                  "--fiscal-year", "2564", "--actor", "udomrat", "--role", OFFICER, env=fake)
    assert started.returncode == 0, started.stderr
    denied = cli("--db", engine.url, "fire", started.stdout.strip(), "kickoff", "--actor",
                 "nobody", "--role", OFFICER, env=fake)
    assert denied.returncode == 4
    (event,) = engine.history(int(started.stdout))
    (grant,) = engine.grants()
    (denial,) = engine.denials()
    assert (event.os_user, grant.granted_by, denial.os_user) == (REAL_USER,) * 3
    assert "mallory" not in json.dumps(dump_tables(engine.url), default=str)


def test_os_user_without_a_passwd_entry_is_the_uid_number(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A uid with no passwd entry (a container's arbitrary uid) is recorded as ``uid:N``,
    not as whatever LOGNAME claims."""
    def no_entry(uid: int) -> Any:
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setenv("LOGNAME", "mallory")
    with Engine(engine.url) as eng:
        grant = eng.grant("udomrat", OFFICER)
    assert grant.granted_by == f"uid:{os.getuid()}"


#: The same name typed two ways (NFC and with its marks in another order / decomposed).
LOOKALIKES = {
    "thai tone before vowel": ("ทองคุ้ม", "ทองค\u0e49\u0e38ม"),
    "latin decomposed": ("José", "Jose\u0301"),
}


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_a_name_typed_in_another_unicode_form_is_the_same_grant(guarded: Engine, name: str
                                                                 ) -> None:
    """A name typed decomposed (or with Thai marks in another order) is the same actor: granting
    it again adds nothing, it acts under the grant, and revoking it withdraws the one grant."""
    nfc, other = LOOKALIKES[name]
    assert other != nfc and unicodedata.normalize("NFC", other) == nfc
    guarded.grant(nfc, OFFICER)
    guarded.grant(other, OFFICER)
    assert [g.actor for g in guarded.grants()] == [nfc]
    inst = start_lopburi(guarded, actor=other)
    assert guarded.history(inst.id)[0].actor == nfc
    guarded.revoke(other, OFFICER)
    assert guarded.grants() == []
    with pytest.raises(PermissionDenied):
        start_lopburi(guarded, actor=nfc, fiscal_year=2565)
    assert guarded.verify().ok


INVISIBLE = {
    "ZWSP": "\u200b", "ZWNJ": "\u200c", "ZWJ": "\u200d", "WJ": "\u2060", "BOM": "\ufeff",
    "SHY": "\u00ad", "RLO": "\u202e", "LRI": "\u2066", "LRM": "\u200e", "NBSP": "\u00a0",
    "VS16": "\ufe0f", "ESC": "\x1b", "CSI": "\x9b", "DEL": "\x7f", "TAB": "\t",
}


def _typed(kind: str, char: str, instance: str) -> list[str]:
    name = f"อุดม{char}รัตน์"
    fire = ["fire", instance, "kickoff", "--actor", "udomrat", "--role", OFFICER]
    start = ["start", "leader-development", "--area", "16", "--fiscal-year", "2565",
             "--actor", "udomrat", "--role", OFFICER]
    return {
        "grant NAME": ["actors", "grant", name, OFFICER],
        "revoke NAME": ["actors", "revoke", name, OFFICER],
        "grant --by": ["actors", "grant", "x", OFFICER, "--by", name],
        "fire --actor": ["fire", instance, "kickoff", "--actor", name, "--role", OFFICER],
        "fire --role": ["fire", instance, "kickoff", "--actor", "udomrat", "--role",
                        f"provincial{char}_officer"],
        "trigger": ["fire", instance, f"kick{char}off", "--actor", "udomrat", "--role", OFFICER],
        "evidence field": [*fire, "--set", f"da{char}te=2564-02-17"],
        "--key": [*fire, "--key", f"k{char}1"],
        "start program": ["start", f"leader{char}-development", "--area", "16",
                          "--fiscal-year", "2565", "--actor", "udomrat", "--role", OFFICER],
        "start --area": [*start[:2], "--area", f"ลพ{char}บุรี", *start[4:]],
        "list --state": ["list", "--state", f"plan{char}ned"],
        "audit log --actor": ["audit", "log", "--actor", name],
        "programs show": ["programs", "show", f"one{char}-plan"],
    }[kind]


IDENTIFIER_PLACES = ("grant NAME", "revoke NAME", "grant --by", "fire --actor", "fire --role",
                     "trigger", "evidence field", "--key", "start program", "start --area",
                     "list --state", "audit log --actor", "programs show")


@pytest.mark.parametrize(("where", "char"), sorted(
    {(w, c) for w in IDENTIFIER_PLACES for c in ("ZWSP", "ESC", "RLO")}
    | {(w, c) for w in ("grant NAME", "fire --actor") for c in INVISIBLE}))
def test_invisible_or_control_characters_in_identifiers_are_refused(
        engine: Engine, where: str, char: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An identifier with an invisible or control character (ZWSP, joiners, BOM, soft hyphen,
    bidi marks, NBSP, ESC, C1...) is exit 2 naming it by its U+ code; nothing is written."""
    inst, _ = lopburi_story(engine)
    engine.grant("udomrat", OFFICER)
    before = dump_tables(engine.url)
    r = run_cli(capsys, ["--db", engine.url, *_typed(where, INVISIBLE[char], str(inst.id))])
    assert r.code == 2, r
    assert_one_error_line(r)
    assert f"U+{ord(INVISIBLE[char]):04X}" in r.err
    assert dump_tables(engine.url) == before


@pytest.mark.parametrize("char", ["ESC", "CSI", "DEL", "RLO", "LRI"])
@pytest.mark.parametrize("where", ["--title", "--note"])
def test_control_characters_in_titles_and_notes_are_refused(
        engine: Engine, where: str, char: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A title or note with a control character or bidi override is exit 2 naming it."""
    engine.grant("udomrat", OFFICER)
    before = dump_tables(engine.url)
    r = run_cli(capsys, ["--db", engine.url, "start", "leader-development", "--area", LOPBURI,
                         "--fiscal-year", "2564", "--actor", "udomrat", "--role", OFFICER,
                         where, f"ถนน{INVISIBLE[char]}[2J"])
    assert r.code == 2, r
    assert f"U+{ord(INVISIBLE[char]):04X}" in r.err
    assert dump_tables(engine.url) == before


def test_free_text_keeps_thai_word_breaks_and_note_lines(engine: Engine) -> None:
    """Titles and notes keep a zero-width space (a Thai word break) and a note keeps its lines:
    the identifier rule is not applied to prose."""
    title = "โครงการ\u200bพัฒนา"
    inst = start_lopburi(engine, title=title, note="บรรทัดแรก\r\nบรรทัดสอง")
    assert engine.get(inst.id).title == title
    assert engine.history(inst.id)[0].note == "บรรทัดแรก\nบรรทัดสอง"


def test_names_stored_before_the_rule_stay_readable_and_verifiable(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows an older workflow stored with a ZWSP or decomposed name still verify, read back
    exactly through the API and show escaped (not raw) in `history`."""
    old = "somchai\u200b"
    with monkeypatch.context() as m:
        m.setattr(text_rules, "name", lambda value, what: value)
        inst = start_lopburi(engine, actor=old)
        engine.grant("Jose\u0301", OFFICER)
    assert engine.verify().ok
    assert engine.history(inst.id)[0].actor == old
    assert [g.actor for g in engine.grants()] == ["Jose\u0301"]
    r = run_cli(capsys, ["--db", engine.url, "history", str(inst.id)])
    assert r.code == 0 and "somchai\\u200b" in r.out and old not in r.out


def test_identifier_rule_is_one_function() -> None:
    """The rule itself: NFC silently, trimmed, refused characters named by U+ code."""
    assert identifier("  Jose\u0301 ", "actor") == "José"
    with pytest.raises(UsageError, match=r"U\+200B ZERO WIDTH SPACE"):
        identifier("a\u200bb", "actor")
    with pytest.raises(UsageError, match="must not be empty"):
        identifier(" \u3000 ".strip() or "  ", "actor")


# --------------------------------------------------------------------------- 12: lengths


def test_the_schema_columns_are_declared_with_the_limits(engine: Engine) -> None:
    """The bounded columns of the real schema hold exactly the limits the loader and the
    command line check (one source: workflow.runtime.text)."""
    expected = {
        ("workflow_events", "trigger"): ID_MAX, ("workflow_events", "role"): ID_MAX,
        ("workflow_events", "policy"): ID_MAX, ("workflow_instances", "program"): ID_MAX,
        ("workflow_instances", "state"): ID_MAX, ("workflow_definitions", "program"): ID_MAX,
        ("workflow_grants", "role"): ID_MAX, ("workflow_grants", "program"): ID_MAX,
        ("workflow_denials", "role"): ID_MAX, ("workflow_denials", "action"): ID_MAX,
        ("workflow_idempotency", "key"): KEY_MAX,
    }
    eng = sql_engine(engine.url)
    try:
        inspector = sa.inspect(eng)
        tables = set(inspector.get_table_names())
        found = {}
        for table, column in expected:
            assert table in tables, (table, sorted(tables))
            cols = {c["name"]: c["type"] for c in inspector.get_columns(table)}
            found[(table, column)] = getattr(cols[column], "length", None)
    finally:
        eng.dispose()
    assert found == expected


def _program(ident: int, choice: int = 5, pid: str | None = None) -> str:
    """A small valid program whose trigger, state, role and field ids are ``ident`` long."""
    def n(prefix: str) -> str:
        return prefix + "x" * (ident - len(prefix))

    pid = pid or "long-" + "p" * (ident - 5)
    return f"""\
program: {pid}
version: 1
title: {{th: "ยาว", en: "Long"}}
roles: [{n("r_")}]
initial: planned
states:
  planned: {{th: "วางแผน", en: "Planned"}}
  {n("s_")}: {{th: "ปิด", en: "Closed", final: true}}
transitions:
  - trigger: {n("t_")}
    from: planned
    to: {n("s_")}
    label: {{th: "ปิด", en: "Close"}}
    roles: [{n("r_")}]
    evidence:
      {n("f_")}: {{type: choice, choices: [{"c" * choice}], required: true}}
"""


def test_ids_as_long_as_the_columns_work_end_to_end(engine: Engine, tmp_path: Path) -> None:
    """A program whose ids are exactly as long as the columns loads, starts and fires on the
    backend, and every id is stored whole."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "long.yaml").write_text(_program(ID_MAX, 200), encoding="utf-8")
    with Engine(engine.url, [tmp_path / "defs"]) as eng:
        (p,) = [p for p in eng.programs() if p.id.startswith("long-")]
        (t,) = p.transitions
        role, field = t.roles[0], t.evidence[0].name
        eng.grant("a" * NAME_MAX, role)
        inst = eng.start(p.id, area=LOPBURI, fiscal_year=2564, actor="a" * NAME_MAX,
                         role=role, key="k" * KEY_MAX, title="t" * TITLE_MAX)
        done = eng.fire(inst.id, t.trigger, actor="a" * NAME_MAX, role=role,
                        evidence={field: "c" * 200}, key="q" * KEY_MAX)
        assert done.instance.state == t.dest and len(t.dest) == ID_MAX
        assert (done.event.trigger, done.event.role, done.event.actor) == (
            t.trigger, role, "a" * NAME_MAX)
        assert eng.verify().ok


def test_ids_longer_than_the_columns_are_refused_at_load(engine: Engine, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """One character more than a column holds: `programs validate` reports E016 problem lines
    (exit 1) and every command with that directory stops at exit 1 before the database."""
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "long.yaml").write_text(_program(ID_MAX + 1, 201, "long-" + "p" * (ID_MAX - 4)),
                                    encoding="utf-8")
    r = run_cli(capsys, ["programs", "validate", str(defs)])
    assert r.code == 1
    codes = [line.split(": ")[1].split()[0] for line in r.out.splitlines()]
    assert codes == ["E016"] * 6, r.out
    before = dump_tables(engine.url)
    r = run_cli(capsys, ["--db", engine.url, "--definitions", str(defs), "start",
                         "leader-development", "--area", LOPBURI, "--fiscal-year", "2564",
                         "--actor", "udomrat", "--role", OFFICER])
    assert r.code == 1 and "E016" in r.err
    assert dump_tables(engine.url) == before


TOO_LONG = {
    "fire --actor": (NAME_MAX, ["fire", "{i}", "kickoff", "--actor", "{x}", "--role", OFFICER]),
    "fire --role": (ID_MAX, ["fire", "{i}", "kickoff", "--actor", "udomrat", "--role", "{x}"]),
    "trigger": (ID_MAX, ["fire", "{i}", "{x}", "--actor", "udomrat", "--role", OFFICER]),
    "evidence field": (ID_MAX, ["fire", "{i}", "kickoff", "--actor", "udomrat", "--role",
                                OFFICER, "--set", "{x}=1"]),
    "fire --key": (KEY_MAX, ["fire", "{i}", "kickoff", "--actor", "udomrat", "--role", OFFICER,
                             "--key", "{x}"]),
    "start --title": (TITLE_MAX, ["start", "leader-development", "--area", "16",
                                  "--fiscal-year", "2565", "--actor", "udomrat", "--role",
                                  OFFICER, "--title", "{x}"]),
    "start program": (ID_MAX, ["start", "{x}", "--area", "16", "--fiscal-year", "2565",
                               "--actor", "udomrat", "--role", OFFICER]),
    "grant NAME": (NAME_MAX, ["actors", "grant", "{x}", OFFICER]),
    "grant ROLE": (ID_MAX, ["actors", "grant", "udomrat", "{x}"]),
    "grant --by": (NAME_MAX, ["actors", "grant", "udomrat", COORDINATOR, "--by", "{x}"]),
}


@pytest.mark.parametrize("where", sorted(TOO_LONG))
def test_typed_values_longer_than_their_columns_are_usage_errors(
        engine: Engine, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A typed value one character longer than its column is exit 2 naming the limit, before
    any driver sees it: nothing stored, no denial cut short, on both backends."""
    inst, _ = lopburi_story(engine)
    engine.grant("udomrat", OFFICER)
    limit, template = TOO_LONG[where]
    args = [a.format(i=inst.id, x="ก" * (limit + 1)) for a in template]
    before = dump_tables(engine.url)
    r = run_cli(capsys, ["--db", engine.url, *args])
    assert r.code == 2, r
    assert_one_error_line(r)
    assert f"at most {limit} allowed" in r.err
    assert dump_tables(engine.url) == before


# --------------------------------------------------------------------------- 13: output

EVIL = "ok\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil\r"


@pytest.fixture
def hostile_rows(engine: Engine, lenient: None) -> dict[str, Any]:
    """Rows holding terminal escapes everywhere text is stored: evidence (accepted today),
    and actor, role, title, note, grant and denial names as an older workflow stored them."""
    inst = engine.start("leader-development", area=LOPBURI, fiscal_year=2564,
                        actor=f"actor{EVIL}", role=OFFICER, title=f"title{EVIL}",
                        note=f"note{EVIL}")
    engine.fire(inst.id, "kickoff", actor=f"actor{EVIL}", role=OFFICER,
                evidence={**KICKOFF, "venue": f"venue{EVIL}"}, note=f"note{EVIL}")
    engine.grant(f"grantee{EVIL}", OFFICER, by=f"by{EVIL}")
    with Engine(engine.url) as guarded, pytest.raises(PermissionDenied):
        guarded.fire(inst.id, "workshop", actor=f"denied{EVIL}", role=COORDINATOR,
                     evidence={})
    return {"url": engine.url, "instance": str(inst.id)}


RENDERINGS = {
    "history": ["history", "{i}"],
    "history --be": ["history", "{i}", "--be"],
    "audit log": ["audit", "log"],
    "actors list": ["actors", "list"],
    "audit denials": ["audit", "denials"],
    "show": ["show", "{i}"],
    "list": ["list"],
    "programs show": ["programs", "show", "leader-development"],
}


@pytest.mark.parametrize("command", sorted(RENDERINGS))
def test_terminal_escapes_are_shown_escaped_in_every_human_rendering(
        hostile_rows: dict[str, Any], command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """ESC/CSI/OSC sequences, BEL, C1 controls, CR and bidi overrides stored in notes, evidence,
    names and titles come out as visible escapes (\\x1b, \\x9b, \\u202e), never raw."""
    args = [a.format(i=hostile_rows["instance"]) for a in RENDERINGS[command]]
    r = run_cli(capsys, ["--db", hostile_rows["url"], *args])
    assert r.code == 0, r
    assert raw_controls(r.out) == [], [c for c in r.out if c in "".join(HOSTILE_OUTPUT)][:5]
    if command not in ("list", "programs show"):
        # Narrow cells may fold an escape across lines: look for the ones that fit.
        assert "\\x1b" in r.out and "\\x" in r.out and "\\u20" in r.out


def test_error_lines_quoting_escapes_are_escaped(hostile_rows: dict[str, Any],
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """An error line quoting a typed value full of terminal escapes (a `--since` bound) is one
    line, exit 2, with the escapes shown, never raw."""
    r = run_cli(capsys, ["--db", hostile_rows["url"], "audit", "log", "--since", f"x{EVIL}"])
    assert r.code == 2
    assert_one_error_line(r)


@pytest.mark.parametrize("command", [["history", "{i}", "--json"], ["audit", "log", "--format",
                                     "json"], ["actors", "list", "--json"],
                                     ["audit", "denials", "--json"], ["show", "{i}", "--json"]],
                         ids=lambda c: " ".join(c[:2]))
def test_json_output_is_exact_and_still_safe_to_print(
        hostile_rows: dict[str, Any], command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON carries the stored text exactly once parsed, yet its bytes hold no raw control,
    C1 or bidi character (they are JSON escapes)."""
    args = [a.format(i=hostile_rows["instance"]) for a in command]
    r = run_cli(capsys, ["--db", hostile_rows["url"], *args])
    assert r.code == 0, r
    assert raw_controls(r.out) == []
    assert any(EVIL in text for text in _strings(json.loads(r.out)))


def _strings(data: Any) -> Iterator[str]:
    """Every string (keys and values) in parsed JSON."""
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield k
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-3+4", "@SUM(A1)", "\t=1", "\r=2",
            "'quoted", "''twice", "plain", "ก=1"]


def test_csv_cells_never_run_as_formulas_and_round_trip(
        engine: Engine, lenient: None, capsys: pytest.CaptureFixture[str]) -> None:
    """In `audit log --format csv` no cell starts with = + - @ tab or CR; a cell that starts
    with an apostrophe was given one, and dropping one leading apostrophe gives back the exact
    stored value (notes, actors, evidence)."""
    events = []
    # One instance per value (cancel ends it), the value as actor, note and evidence.
    for i, value in enumerate(FORMULAS):
        other = engine.start("one-plan", area=LOPBURI, fiscal_year=2560 + i, actor=value,
                             role=COORDINATOR, note=value)
        events.append(engine.fire(other.id, "cancel", actor=value, role=OFFICER,
                                  evidence={"reason": value}, note=value).event)
    r = run_cli(capsys, ["--db", engine.url, "audit", "log", "--format", "csv"])
    assert r.code == 0, r
    rows = list(csv.reader(io.StringIO(r.out.lstrip("\ufeff"), newline="")))
    header, body = rows[0], rows[1:]
    for row in body:
        for cell in row:
            assert not cell.startswith(CSV_TRIGGERS[:-1]), cell
    by_id = {int(row[header.index("id")]): row for row in body}
    for e in engine.audit_log():
        if e.id is None or e.id not in by_id or e.instance is None:
            continue
        row = by_id[e.id]
        assert csv_value(row[header.index("actor")]) == e.actor
        assert csv_value(row[header.index("note")]) == (e.note or "")
        assert json.loads(csv_value(row[header.index("evidence")])) == dict(e.evidence)
    assert {e.note for e in events} >= set(FORMULAS)


def test_display_helpers() -> None:
    """printable escapes what is not printable and keeps Thai; csv_cell/csv_value invert."""
    assert printable("สวัสดี\x1b[31m\u202e") == "สวัสดี\\x1b[31m\\u202e"
    assert printable("a\nb") == "a\\nb" and printable("a\nb", multiline=True) == "a\nb"
    for value in [*FORMULAS, "", "'", "=", "x'"]:
        assert csv_value(csv_cell(value)) == value


# --------------------------------------------------------------------------- 14: secrets


def _with_password(url: str, form: str, secret: str) -> str:
    parsed = sa.engine.make_url(url)
    if form == "userinfo":
        return parsed.set(password=secret).render_as_string(hide_password=False)
    return parsed.update_query_dict({"password": secret}).render_as_string(hide_password=False)


SECRET = "s3cr3t-Pw"


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_demo_and_init_never_print_the_password(postgres_scratch: str, form: str,
                                                tmp_path: Path) -> None:
    """`workflow init` and `workflow demo` (six hints with --db) on a URL with a password
    (user:pw@ or ?password=) show it as *** everywhere (the server trusts any password)."""
    from conftest import empty_postgres

    empty_postgres(postgres_scratch)
    url = _with_password(postgres_scratch, form, SECRET)
    init = cli("--db", url, "init", cwd=tmp_path)
    demo = cli("--db", url, "demo", cwd=tmp_path, timeout=300)
    assert init.returncode == demo.returncode == 0, demo.stderr
    for p in (init, demo):
        assert SECRET not in p.stdout + p.stderr
    assert demo.stdout.count("--db '") == 6 and "***" in demo.stdout


def _bad_urls(base: str) -> dict[str, str]:
    host = "postgresql+psycopg://postgres:{pw}@127.0.0.1:{port}/{db}"
    return {
        "refused port": host.format(pw=SECRET, port=1, db="x"),
        "missing database": host.format(pw=SECRET, port=5432, db="no_such_db_xyz"),
        "port not a number": host.format(pw=SECRET, port="notaport", db="x"),
        "unknown driver": f"postgresql+nosuchdriver://u:{SECRET}@h/x",
        "query password": f"postgresql+psycopg://postgres@127.0.0.1:1/x?password={SECRET}",
        "query password, bad port": f"postgresql+psycopg://u@h:bad/x?sslpassword={SECRET}",
        "sqlite": base,
    }


@pytest.mark.parametrize("case", sorted(_bad_urls("")))
@pytest.mark.parametrize("traceback", [False, True], ids=["plain", "traceback"])
def test_error_lines_and_tracebacks_never_show_the_password(
        case: str, traceback: bool, tmp_path: Path) -> None:
    """Unreachable servers, missing databases (the real PostgreSQL server when it runs), bad
    ports and unknown drivers with a password in the URL: the error line (and the --traceback
    output) shows *** instead, exit 6."""
    url = _bad_urls(f"sqlite:///{tmp_path / 'none.db'}")[case]
    if case == "sqlite":
        # A SQLite URL holds no password; its missing-schema error shows the URL unchanged.
        p = cli("--db", url, "list", cwd=tmp_path)
        assert p.returncode == 6 and url in p.stderr
        return
    p = cli(*(["--traceback"] if traceback else []), "--db", url, "list", cwd=tmp_path)
    assert p.returncode == 6, p.stderr
    assert SECRET not in p.stdout + p.stderr
    assert "***" in p.stderr.splitlines()[-1]
    p = cli("list", cwd=tmp_path, env={"WORKFLOW_DB": url, "WORKFLOW_TRACEBACK": "1"})
    assert SECRET not in p.stdout + p.stderr


# --------------------------------------------------------------------------- 15: files


def _hostile_path(kind: str, root: Path) -> Path:
    d = root / "defs"
    d.mkdir()
    if kind == "fifo in directory":
        os.mkfifo(d / "x.yaml")
        return d
    if kind == "symlink loop":
        (d / "loop.yaml").symlink_to(d / "loop.yaml")
        return d
    if kind == "broken symlink":
        (d / "gone.yaml").symlink_to(root / "nowhere.yaml")
        return d
    if kind == "directory named .yaml":
        (d / "sub.yaml").mkdir()
        return d
    if kind == "huge file":
        with open(d / "big.yaml", "wb") as fh:
            fh.truncate(3 * 1024**3)  # sparse: 3 GiB that costs nothing
        return d
    return Path("/dev/zero")


HOSTILE_FILES = {
    "fifo in directory": "is a FIFO (named pipe), not a regular file",
    "symlink loop": "a symbolic link loop",
    "broken symlink": "a broken symbolic link",
    "directory named .yaml": "is a directory, not a regular file",
    "huge file": "is 3221225472 bytes; at most 1048576 allowed",
    "/dev/zero": "is a character device, not a regular file",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_FILES))
def test_hostile_definition_paths_name_the_problem_and_never_hang(
        engine: Engine, kind: str, tmp_path: Path) -> None:
    """A FIFO named x.yaml, /dev/zero, a symlink loop, a broken link, a directory named
    x.yaml or a 3 GiB file under --definitions: every command ends at once with exit 1 and one
    line naming the real problem; `programs validate` prints it as a problem line."""
    path = _hostile_path(kind, tmp_path)
    before = dump_tables(engine.url)
    p = cli("--db", engine.url, "--definitions", str(path), "list", timeout=30)
    assert p.returncode == 1, p.stderr
    assert len(p.stderr.splitlines()) == 1 and HOSTILE_FILES[kind] in p.stderr, p.stderr
    v = cli("programs", "validate", str(path), timeout=30)
    assert v.returncode == 1
    assert HOSTILE_FILES[kind] in v.stdout and ": E001 " in v.stdout, v.stdout
    assert dump_tables(engine.url) == before


def test_read_regular_file_reads_up_to_its_limit(tmp_path: Path) -> None:
    """The shared helper reads a file of exactly the limit and refuses one byte more."""
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    assert read_regular_file(f, 10) == b"x" * 10
    with pytest.raises(FileRefused, match="is 10 bytes; at most 9 allowed"):
        read_regular_file(f, 9)
    with pytest.raises(FileRefused, match="no such file"):
        read_regular_file(tmp_path / "missing", 9)
