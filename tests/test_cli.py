"""In-process tests of the ``workflow`` command line (CONTRACT §4).

Each test calls :func:`workflow.cli.main` the way the console script does and checks the exit
code, stdout and stderr: the commands, their ``--json`` keys, the exit codes of every kind of
error, and that an error is one line on stderr without a traceback.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from workflow.cli.main import cli, main
from workflow.errors import InstanceNotFound

DEFINITIONS = Path(__file__).resolve().parents[1] / "definitions"

INSTANCE_KEYS = {
    "id",
    "program",
    "program_version",
    "area",
    "fiscal_year",
    "state",
    "active",
    "version",
    "created_at",
    "updated_at",
    "available_triggers",
}
AREA_KEYS = {"code", "name_th", "name_en"}
EVENT_KEYS = {
    "id",
    "instance",
    "seq",
    "trigger",
    "from",
    "to",
    "actor",
    "role",
    "at",
    "evidence",
    "note",
    "hash",
    "prev_hash",
}
VERIFY_KEYS = {"ok", "events_checked", "instances_checked", "problems"}
PROBLEM_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<code>[A-Z]+\d+) (?P<message>.+)$")

KICKOFF = [
    "--set",
    "date=2564-02-17",
    "--set",
    "venue=ศูนย์เรียนรู้ ๙ ตามพ่อ หมู่ที่ 1",
    "--set",
    "chair=นายอำเภอเมืองลพบุรี",
]
WORKSHOP = ["--set", "date=2564-03-03", "--set", "venue=ศาลาประชาคม", "--set", "participants=25"]
OFFICER = ["--actor", "udomrat", "--role", "provincial_officer"]
COORDINATOR = ["--actor", "somchai", "--role", "coordinator"]


# --------------------------------------------------------------------------- harness


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    return e.code if isinstance(e.code, int) else 1


class Runner:
    """Runs ``workflow --db URL ARGS...`` in-process and captures what it prints."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: str, db_file: Path) -> None:
        self.capsys = capsys
        self.url = url
        self.db_file = db_file

    def raw(self, *args: str) -> Result:
        self.capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = _exit_code(e)
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def __call__(self, *args: str) -> Result:
        return self.raw("--db", self.url, *args)

    def ok(self, *args: str) -> Result:
        r = self(*args)
        assert r.code == 0, f"workflow {' '.join(args)} exited {r.code}: {r.err}"
        return r

    def fails(self, code: int, *args: str) -> Result:
        """Run a command that must fail with ``code``: one line on stderr, no traceback."""
        r = self(*args)
        assert r.code == code, f"expected exit {code}, got {r.code}: {r.err!r}"
        assert_one_error_line(r)
        return r

    # ---- helpers for a coordinator session

    def grant(self, actor: str, role: str) -> None:
        """Give ``actor`` the role everywhere, once the CLI has grants (CONTRACT §5)."""
        if "actors" in cli.commands:
            self.ok("actors", "grant", actor, role)

    def init(self) -> None:
        self.ok("init")
        for actor, role in (
            ("udomrat", "provincial_officer"),
            ("somchai", "coordinator"),
            ("inspector1", "inspector"),
        ):
            self.grant(actor, role)

    def start(
        self,
        *extra: str,
        program: str = "leader-development",
        area: str = "160117",
        fiscal_year: str = "2564",
    ) -> int:
        r = self.ok(
            "start", program, "--area", area, "--fiscal-year", fiscal_year, *OFFICER, *extra
        )
        return int(r.out.strip())

    def history(self, instance: int) -> list[dict[str, Any]]:
        return self.ok("history", str(instance), "--json").json()


def instance_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of instances (the audit log also holds grant events, with no instance)."""
    return [e for e in events if e["instance"] is not None]


def assert_one_error_line(r: Result) -> None:
    """One line of text, or (when JSON was asked for) one JSON error object with the code."""
    assert "Traceback" not in r.err and "Traceback" not in r.out
    assert len(r.err_lines) == 1, f"expected one stderr line, got {r.err!r}"
    if r.err_lines[0].startswith("{"):
        assert json.loads(r.err_lines[0])["error"]["exit_code"] == r.code, r.err
        return
    assert r.err_lines[0].startswith("workflow: error: "), r.err


@pytest.fixture(autouse=True, scope="module")
def _parse_each_definition_once() -> Iterator[None]:
    """Every command builds a Registry that parses the bundled YAML again (~0.1 s a file).
    ``check_text`` is a pure function of (text, file name), so remember its answers: the
    commands behave the same and the module runs several times faster."""
    import workflow.programs.loader as loader

    original = loader.check_text
    cache: dict[tuple[Any, ...], Any] = {}

    def check_text(*args: Any, **kwargs: Any) -> Any:
        key = (*args, *sorted(kwargs.items()))
        if key not in cache:
            cache[key] = original(*args, **kwargs)
        program, problems = cache[key]
        return program, list(problems)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loader, "check_text", check_text)
        yield


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "w.db"


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str],
    db_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Runner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKFLOW_DB", raising=False)
    monkeypatch.delenv("WORKFLOW_TRACEBACK", raising=False)
    return Runner(capsys, f"sqlite:///{db_file}", db_file)


@pytest.fixture
def ready(run: Runner) -> Runner:
    """An initialised database whose actors hold the roles they use."""
    run.init()
    return run


@pytest.fixture
def kicked_off(ready: Runner) -> tuple[Runner, int]:
    """One leader-development instance in Lopburi (160117), FY 2564, kicked off."""
    instance = ready.start()
    ready.ok("fire", str(instance), "kickoff", *OFFICER, *KICKOFF, "--note", "Kick off")
    return ready, instance


def be(day: dt.date) -> str:
    return f"{day.year + 543:04d}-{day.month:02d}-{day.day:02d}"


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def assert_iso_utc(text: str) -> None:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.utcoffset() == dt.timedelta(0), text


def assert_instance_json(data: dict[str, Any]) -> None:
    assert set(data) >= INSTANCE_KEYS, INSTANCE_KEYS - set(data)
    assert set(data["area"]) >= AREA_KEYS
    assert isinstance(data["id"], int)
    assert isinstance(data["version"], int)
    assert isinstance(data["program_version"], int)
    assert isinstance(data["fiscal_year"], int)
    assert isinstance(data["active"], list) and data["active"]
    assert isinstance(data["available_triggers"], list)
    assert data["state"] == data["active"][0].split(".")[0]
    assert_iso_utc(data["created_at"])
    assert_iso_utc(data["updated_at"])


def assert_event_json(data: dict[str, Any]) -> None:
    assert set(data) >= EVENT_KEYS, EVENT_KEYS - set(data)
    assert isinstance(data["seq"], int) and data["seq"] >= 1
    assert isinstance(data["evidence"], dict)
    assert re.fullmatch(r"[0-9a-f]{64}", data["hash"])
    assert re.fullmatch(r"[0-9a-f]{64}", data["prev_hash"])
    assert_iso_utc(data["at"])


# --------------------------------------------------------------------------- help


def _walk(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        for name, sub in sorted(group.commands.items()):
            yield from _walk(sub, (*path, name))


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    return cmd


ALL_COMMANDS = list(_walk(cli))


def test_the_walk_finds_the_contract_commands() -> None:
    names = {" ".join(p) for p in ALL_COMMANDS}
    for expected in (
        "init",
        "demo",
        "programs list",
        "programs show",
        "programs validate",
        "programs diagram",
        "start",
        "fire",
        "show",
        "list",
        "history",
        "audit log",
        "audit verify",
        "audit digest",
        "report",
    ):
        assert expected in names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "workflow")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(run: Runner, path: tuple[str, ...], flag: str) -> None:
    r = run.raw(*path, flag)
    assert r.code == 0, r.err
    assert r.err == ""
    assert r.out.startswith("Usage: workflow"), r.out[:200]
    cmd = _command(path)
    assert cmd.help and cmd.help.strip(), f"{' '.join(path)} has no description"
    first_words = " ".join(cmd.help.split()[:3])
    assert first_words in " ".join(r.out.split()), f"description missing from {path} --help"
    assert not run.db_file.exists(), "--help must not touch the database"


def test_version(run: Runner) -> None:
    r = run.raw("--version")
    assert r.code == 0
    assert re.search(r"\d+\.\d+", r.out)


def test_no_command_shows_usage(run: Runner) -> None:
    r = run.raw()
    assert r.code in (0, 2)
    assert "Usage: workflow" in r.out + r.err


def test_unknown_command_is_a_usage_error(run: Runner) -> None:
    r = run.fails(2, "frobnicate")
    assert "frobnicate" in r.err


# --------------------------------------------------------------------------- programs


def test_programs_list(run: Runner) -> None:
    r = run.ok("programs", "list")
    for program in ("leader-development", "khok-nong-na", "one-plan"):
        assert program in r.out
    assert "โครงการเสริมสร้างและพัฒนาผู้นำการเปลี่ยนแปลง" in r.out


def test_programs_list_json(run: Runner) -> None:
    data = run.ok("programs", "list", "--json").json()
    assert isinstance(data, list)
    by_id = {p["program"]: p for p in data}
    assert {"leader-development", "khok-nong-na", "one-plan"} <= set(by_id)
    ld = by_id["leader-development"]
    assert ld["version"] == 2  # the newest bundled version
    assert set(ld["title"]) == {"th", "en"}
    assert "kickoff" in ld["triggers"]


def test_programs_list_needs_no_database(run: Runner) -> None:
    run.ok("programs", "list")
    run.ok("programs", "show", "one-plan")
    run.ok("programs", "diagram", "one-plan")
    assert not run.db_file.exists()


def test_programs_show(run: Runner) -> None:
    r = run.ok("programs", "show", "leader-development")
    assert "leader-development" in r.out
    for trigger in (
        "kickoff",
        "workshop",
        "report_progress",
        "evaluate",
        "award",
        "summarize",
        "lessons_learned",
        "close",
        "cancel",
    ):
        assert trigger in r.out
    assert "provincial_officer" in r.out
    thai = run.ok("programs", "show", "leader-development", "--lang", "th")
    assert "วางแผน" in thai.out


def test_programs_show_json(run: Runner) -> None:
    data = run.ok("programs", "show", "one-plan", "--json").json()
    assert data["program"] == "one-plan"
    assert data["version"] == 2
    assert data["initial"] == "planned"
    assert {"coordinator", "provincial_officer", "committee"} <= set(data["roles"])
    states = {s["id"]: s for s in data["states"]}
    assert states["closed"]["final"] is True
    assert states["cancelled"]["final"] is True
    assert set(states["planned"]["label"]) == {"th", "en"}
    transitions = {t["trigger"]: t for t in data["transitions"]}
    approve = transitions["approve"]
    assert approve["from"] == ["under_review"]
    assert approve["to"] == "approved"
    assert approve["roles"] == ["committee"]
    assert approve["evidence"]["date"]["type"] == "date"
    assert approve["evidence"]["date"]["required"] is True
    assert approve["evidence"]["chair"]["required"] is True
    assert transitions["hold_forums"]["evidence"]["villages"]["min"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["programs", "show", "no-such-program"],
        ["programs", "show", "no-such-program", "--json"],
        ["programs", "diagram", "no-such-program"],
    ],
)
def test_unknown_program_exits_3(run: Runner, args: list[str]) -> None:
    r = run.fails(3, *args)
    assert "no-such-program" in r.err
    assert r.out == ""


def test_validate_bundled_definitions(run: Runner) -> None:
    r = run.ok("programs", "validate", str(DEFINITIONS))
    assert r.out.count("ok") >= 3
    data = run.ok("programs", "validate", str(DEFINITIONS), "--json").json()
    assert data["ok"] is True
    assert {f["program"] for f in data["files"]} >= {
        "leader-development",
        "khok-nong-na",
        "one-plan",
    }
    assert all(f["problems"] == [] for f in data["files"])


BROKEN = """\
program: broken-one
version: 1
title: {th: "ทดสอบ", en: "Test"}
roles: [coordinator]
initial: planned
states:
  planned: {th: "วางแผน", en: "Planned"}
  closed: {th: "ปิด", en: "Closed", final: true}
transitions:
  - trigger: finish
    from: planned
    to: nowhere
    label: {th: "จบ", en: "Finish"}
    roles: [boss]
    evidence:
      date: {type: datetime, required: true}
"""

UNREACHABLE = """\
program: orphan-one
version: 1
title: {th: "ทดสอบ", en: "Test"}
roles: [coordinator]
initial: planned
states:
  planned: {th: "วางแผน", en: "Planned"}
  orphan: {th: "กำพร้า", en: "Orphan"}
  closed: {th: "ปิด", en: "Closed", final: true}
transitions:
  - trigger: finish
    from: planned
    to: closed
    label: {th: "จบ", en: "Finish"}
    roles: [coordinator]
"""


def test_validate_broken_file(run: Runner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    r = run("programs", "validate", str(bad))
    assert r.code == 1
    lines = r.out.splitlines()
    assert lines
    found = []
    for line in lines:
        m = PROBLEM_LINE.match(line)
        assert m, f"not FILE:LINE: CODE message: {line!r}"
        assert m["file"] == str(bad)
        found.append((int(m["line"]), m["code"]))
    assert (12, "E020") in found  # to: nowhere
    assert (14, "E030") in found  # roles: [boss]
    assert (16, "E040") in found  # type: datetime
    assert "Traceback" not in r.err


def test_validate_reports_unreachable_and_dead_end_states(run: Runner, tmp_path: Path) -> None:
    f = tmp_path / "orphan.yaml"
    f.write_text(UNREACHABLE, encoding="utf-8")
    r = run("programs", "validate", str(f))
    assert r.code == 1
    codes = {PROBLEM_LINE.match(line)["code"] for line in r.out.splitlines()}  # type: ignore[index]
    assert {"E021", "E022"} <= codes


def test_validate_mixed_files_json(run: Runner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    good = DEFINITIONS / "one-plan.yaml"
    r = run("programs", "validate", str(good), str(bad), "--json")
    assert r.code == 1
    data = r.json()
    assert data["ok"] is False
    files = {f["file"]: f for f in data["files"]}
    assert files[str(good)]["ok"] is True
    assert files[str(bad)]["ok"] is False
    for p in files[str(bad)]["problems"]:
        assert set(p) >= {"file", "line", "code", "message"}
        assert isinstance(p["line"], int)
    assert {p["code"] for p in files[str(bad)]["problems"]} >= {"E020", "E030", "E040"}


def test_validate_syntax_error_is_a_problem_line(run: Runner, tmp_path: Path) -> None:
    f = tmp_path / "syntax.yaml"
    f.write_text("program: x\n  bad: [\n", encoding="utf-8")
    r = run("programs", "validate", str(f))
    assert r.code == 1
    m = PROBLEM_LINE.match(r.out.splitlines()[0])
    assert m and m["code"] == "E001"


def test_validate_needs_a_path(run: Runner) -> None:
    run.fails(2, "programs", "validate")


def test_diagram_mermaid_dot_and_thai(run: Runner) -> None:
    mermaid = run.ok("programs", "diagram", "leader-development").out
    assert mermaid.startswith("stateDiagram-v2")
    assert "kickoff" in mermaid
    explicit = run.ok("programs", "diagram", "leader-development", "--format", "mermaid").out
    assert explicit == mermaid
    dot = run.ok("programs", "diagram", "leader-development", "--format", "dot").out
    assert dot.startswith("digraph")
    assert dot.rstrip().endswith("}")
    thai = run.ok("programs", "diagram", "one-plan", "--lang", "th").out
    assert thai.startswith("stateDiagram-v2")
    assert "วางแผน" in thai
    assert "วางแผน" not in run.ok("programs", "diagram", "one-plan").out
    parallel = run.ok("programs", "diagram", "khok-nong-na").out
    assert "training" in parallel and "digital" in parallel


def test_diagram_bad_format_is_usage_error(run: Runner) -> None:
    run.fails(2, "programs", "diagram", "one-plan", "--format", "svg")


def test_diagram_marks_an_instance(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    plain = run.ok("programs", "diagram", "leader-development").out
    marked = run.ok("programs", "diagram", "leader-development", "--instance", str(instance)).out
    assert marked.startswith("stateDiagram-v2")
    assert marked != plain
    assert "kicked_off" in marked
    dot = run.ok(
        "programs", "diagram", "leader-development", "--format", "dot", "--instance", str(instance)
    ).out
    assert dot.startswith("digraph")
    assert dot != run.ok("programs", "diagram", "leader-development", "--format", "dot").out


def test_diagram_unknown_instance_exits_3(ready: Runner) -> None:
    ready.fails(3, "programs", "diagram", "leader-development", "--instance", "999")


def test_diagram_instance_of_another_program_is_refused(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    r = run.fails(2, "programs", "diagram", "one-plan", "--instance", str(instance))
    assert "leader-development" in r.err


# --------------------------------------------------------------------------- init


def test_init_twice(run: Runner) -> None:
    first = run.ok("init")
    assert run.db_file.exists()
    second = run.ok("init")
    assert first.out != second.out or "already" in second.out
    assert "Traceback" not in first.err + second.err


COMMANDS_NEEDING_SCHEMA = [
    ["list"],
    ["show", "1"],
    ["history", "1"],
    ["start", "leader-development", "--area", "160117", "--fiscal-year", "2564", *OFFICER],
    ["fire", "1", "kickoff", *OFFICER, *KICKOFF],
    ["report"],
    ["audit", "log"],
    ["audit", "verify"],
    ["audit", "digest"],
    ["programs", "diagram", "leader-development", "--instance", "1"],
]


@pytest.mark.parametrize("args", COMMANDS_NEEDING_SCHEMA, ids=lambda a: " ".join(a[:2]))
def test_commands_before_init_exit_6(run: Runner, args: list[str]) -> None:
    r = run.fails(6, *args)
    assert "workflow init" in r.err
    assert r.out == ""
    assert not run.db_file.exists(), "a command before init must not create the database"


@pytest.mark.parametrize("url", ["nonsense://x", "postgresql+psycopg://nobody@127.0.0.1:1/x"])
def test_unavailable_database_exits_6(run: Runner, url: str) -> None:
    for args in (["init"], ["list"]):
        r = run.raw("--db", url, *args)
        assert r.code == 6, r.err
        assert_one_error_line(r)


def test_init_creates_missing_directories(run: Runner, tmp_path: Path) -> None:
    assert run.raw("--db", f"sqlite:///{tmp_path}/new/dir/w.db", "init").code == 0
    assert (tmp_path / "new" / "dir" / "w.db").exists()


def test_init_on_an_impossible_path_exits_6(run: Runner, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("", encoding="utf-8")
    r = run.raw("--db", f"sqlite:///{tmp_path}/afile/w.db", "init")
    assert r.code == 6, r.err
    assert_one_error_line(r)


# --------------------------------------------------------------------------- a session


def test_start_prints_only_the_id(ready: Runner) -> None:
    r = ready.ok(
        "start",
        "leader-development",
        "--area",
        "160117",
        "--fiscal-year",
        "2564",
        *OFFICER,
        "--title",
        "ตำบลนำร่อง บางขันหมาก",
    )
    assert re.fullmatch(r"\d+\n", r.out), repr(r.out)
    assert r.err == ""


def test_start_json(ready: Runner) -> None:
    data = ready.ok(
        "start", "one-plan", "--area", "ลพบุรี", "--fiscal-year", "2565", *COORDINATOR, "--json"
    ).json()
    assert_instance_json(data)
    assert data["program"] == "one-plan"
    assert data["program_version"] == 2
    assert data["area"] == {"code": "16", "name_th": "ลพบุรี", "name_en": "Lop Buri"}
    assert data["fiscal_year"] == 2565
    assert data["state"] == "planned"
    assert data["active"] == ["planned"]
    assert data["version"] == 1
    assert "collect_data" in data["available_triggers"]


def test_coordinator_session(ready: Runner) -> None:
    run = ready
    instance = run.start("--title", "ตำบลนำร่อง บางขันหมาก")

    fired = run.ok(
        "fire",
        str(instance),
        "kickoff",
        *OFFICER,
        *KICKOFF,
        "--note",
        "Kick off ตำบลนำร่อง",
        "--json",
    ).json()
    assert set(fired) >= {"event", "instance"}
    event, inst = fired["event"], fired["instance"]
    assert_event_json(event)
    assert_instance_json(inst)
    assert event["instance"] == instance
    assert event["seq"] == 2
    assert event["trigger"] == "kickoff"
    assert event["from"] in ("planned", ["planned"])
    assert event["to"] in ("kicked_off", ["kicked_off"])
    assert event["actor"] == "udomrat"
    assert event["role"] == "provincial_officer"
    assert event["evidence"]["date"] == "2021-02-17"  # BE 2564 stored as CE
    assert event["evidence"]["chair"] == "นายอำเภอเมืองลพบุรี"
    assert event["note"] == "Kick off ตำบลนำร่อง"
    assert inst["state"] == "kicked_off"
    assert inst["version"] == 2
    assert "workshop" in inst["available_triggers"]

    text = run.ok("fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP)
    assert "workshop_held" in text.out
    assert text.err == ""

    shown = run.ok("show", str(instance))
    assert "workshop_held" in shown.out
    assert "160117" in shown.out
    assert "report_progress" in shown.out
    data = run.ok("show", str(instance), "--json").json()
    assert_instance_json(data)
    assert data["id"] == instance
    assert data["version"] == 3
    assert data["state"] == "workshop_held"
    assert data["title"] == "ตำบลนำร่อง บางขันหมาก"
    assert data["area"]["code"] == "160117"
    assert data["area"]["name_th"] == "บางขันหมาก"

    events = run.history(instance)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e["trigger"] for e in events] == ["start", "kickoff", "workshop"]
    for e in events:
        assert_event_json(e)
    assert events[0]["from"] is None
    assert events[0]["prev_hash"] == "0" * 64
    for before, after in itertools.pairwise(events):
        assert after["prev_hash"] == before["hash"]
    assert events[1] == event
    table = run.ok("history", str(instance))
    assert "kickoff" in table.out and "workshop" in table.out
    assert "2021-02-17" in table.out
    assert "2564-02-17" in run.ok("history", str(instance), "--be").out


def test_show_be_dates(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    data = run.ok("show", str(instance), "--json").json()
    ce_year = data["created_at"][:4]
    assert f"{int(ce_year) + 543}" in run.ok("show", str(instance), "--be").out


def test_list_filters(ready: Runner) -> None:
    run = ready
    lopburi = run.start()
    run.ok("fire", str(lopburi), "kickoff", *OFFICER, *KICKOFF)
    plan = run.start(program="one-plan", area="1601", fiscal_year="2565")
    buriram = run.start(area="312203", fiscal_year="2565")

    def ids(*args: str) -> list[int]:
        data = run.ok("list", *args, "--json").json()
        for item in data:
            assert_instance_json(item)
        return [i["id"] for i in data]

    assert ids() == [lopburi, plan, buriram]
    assert ids("--area", "16") == [lopburi, plan]
    assert ids("--area", "1601") == [lopburi, plan]
    assert ids("--area", "160117") == [lopburi]
    assert ids("--area", "31") == [buriram]
    assert ids("--area", "ลพบุรี") == [lopburi, plan]
    assert ids("--program", "leader-development") == [lopburi, buriram]
    assert ids("--state", "kicked_off") == [lopburi]
    assert ids("--state", "planned") == [plan, buriram]
    assert ids("--fiscal-year", "2565") == [plan, buriram]
    assert ids("--fiscal-year", "2564", "--area", "16") == [lopburi]
    assert ids("--area", "10") == []
    assert ids("--limit", "1") == [lopburi]
    text = run.ok("list", "--area", "16").out
    assert "ลพบุรี" in text or "บางขันหมาก" in text
    assert "leader-development" in text and "one-plan" in text


def test_list_unknown_filters(ready: Runner) -> None:
    ready.fails(3, "list", "--area", "99")
    ready.fails(3, "list", "--program", "no-such-program")
    ready.fails(2, "list", "--fiscal-year", "2021")


def test_start_by_unique_name(ready: Runner) -> None:
    data = ready.ok(
        "start", "one-plan", "--area", "Lop Buri", "--fiscal-year", "2564", *COORDINATOR, "--json"
    ).json()
    assert data["area"]["code"] == "16"


# --------------------------------------------------------------------------- exit codes


def test_missing_actor_is_usage_error(ready: Runner) -> None:
    r = ready.fails(
        2,
        "start",
        "leader-development",
        "--area",
        "160117",
        "--fiscal-year",
        "2564",
        "--role",
        "provincial_officer",
    )
    assert "--actor" in r.err
    assert ready.ok("list", "--json").json() == []


@pytest.mark.parametrize(
    "args",
    [
        [
            "start",
            "leader-development",
            "--area",
            "160117",
            "--fiscal-year",
            "2564",
            "--role",
            "provincial_officer",
        ],
        ["fire", "1", "kickoff", "--role", "provincial_officer"],
        ["fire", "one", "kickoff", *OFFICER],
        ["show"],
        ["programs", "diagram", "one-plan", "--format", "svg"],
        ["audit", "log", "--format", "xml"],
        ["list", "--limit", "0"],
        ["frobnicate"],
        ["programs", "validate"],
        ["--no-such-option", "list"],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_click_usage_errors_are_one_line(ready: Runner, args: list[str]) -> None:
    r = ready.fails(2, *args)
    assert r.out == ""


def test_set_without_equals_is_usage_error(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    r = run.fails(2, "fire", str(instance), "workshop", *COORDINATOR, "--set", "date")
    assert "FIELD=VALUE" in r.err
    run.fails(2, "fire", str(instance), "workshop", *COORDINATOR, "--set", "=x")
    assert len(run.history(instance)) == 2


def test_bad_values_are_usage_errors(kicked_off: tuple[Runner, int]) -> None:
    run, _instance = kicked_off
    run.fails(2, "fire", "abc", "workshop", *COORDINATOR)
    r = run.fails(2, "start", "one-plan", "--area", "16", "--fiscal-year", "2021", *COORDINATOR)
    assert "2564" in r.err  # CE year given: the hint names the BE year
    run.fails(2, "start", "one-plan", "--area", "16", "--fiscal-year", "soon", *COORDINATOR)
    run.fails(2, "audit", "log", "--since", "yesterday")


def test_unknown_instance_exits_3(ready: Runner) -> None:
    for args in (
        ["show", "999"],
        ["show", "999", "--json"],
        ["history", "999"],
        ["fire", "999", "kickoff", *OFFICER, *KICKOFF],
    ):
        r = ready.fails(3, *args)
        assert "999" in r.err
        assert r.out == ""


def test_unknown_area_exits_3(ready: Runner) -> None:
    r = ready.fails(
        3, "start", "leader-development", "--area", "99", "--fiscal-year", "2564", *OFFICER
    )
    assert "99" in r.err
    ready.fails(
        3, "start", "leader-development", "--area", "Atlantis", "--fiscal-year", "2564", *OFFICER
    )
    assert ready.ok("list", "--json").json() == []


@pytest.mark.parametrize("name", ["Mueang", "ในเมือง"])
def test_ambiguous_area_exits_3_with_candidates(ready: Runner, name: str) -> None:
    r = ready.fails(3, "start", "one-plan", "--area", name, "--fiscal-year", "2564", *COORDINATOR)
    assert "ambiguous" in r.err
    assert re.search(r"\b\d{4}(\d{2})?\b", r.err), "the candidates are listed with codes"
    ready.fails(3, "list", "--area", name)


def test_empty_actor_is_refused(ready: Runner) -> None:
    ready.fails(
        2,
        "start",
        "one-plan",
        "--area",
        "16",
        "--fiscal-year",
        "2564",
        "--actor",
        " ",
        "--role",
        "coordinator",
    )
    assert ready.ok("list", "--json").json() == []


def test_show_role_filters_available_triggers(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    every = run.ok("show", str(instance), "--json").json()["available_triggers"]
    assert set(every) == {"workshop", "cancel"}
    coord = run.ok("show", str(instance), "--role", "coordinator", "--json").json()
    assert coord["available_triggers"] == ["workshop"]
    insp = run.ok("show", str(instance), "--role", "inspector", "--json").json()
    assert insp["available_triggers"] == []


def test_unknown_program_in_start_exits_3(ready: Runner) -> None:
    ready.fails(3, "start", "no-such-program", "--area", "16", "--fiscal-year", "2564", *OFFICER)


def test_refusals_exit_4_and_change_nothing(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    # the trigger is not allowed in the current state
    r = run.fails(4, "fire", str(instance), "kickoff", *OFFICER, *KICKOFF)
    assert "kickoff" in r.err
    # an unknown trigger
    run.fails(4, "fire", str(instance), "fly_to_the_moon", *OFFICER)
    # required evidence missing
    r = run.fails(4, "fire", str(instance), "workshop", *COORDINATOR, "--set", "date=2564-03-03")
    assert "venue" in r.err
    # evidence invalid (participants >= 1) and undeclared
    run.fails(
        4, "fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP[:4], "--set", "participants=0"
    )
    run.fails(4, "fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP, "--set", "venu=typo")
    run.fails(
        4,
        "fire",
        str(instance),
        "workshop",
        *COORDINATOR,
        "--set",
        "date=2564-02-30",
        *WORKSHOP[2:],
    )
    # the transition does not allow this role
    r = run.fails(
        4,
        "fire",
        str(instance),
        "workshop",
        "--actor",
        "inspector1",
        "--role",
        "inspector",
        *WORKSHOP,
    )
    assert "inspector" in r.err
    assert len(run.history(instance)) == 2
    assert run.ok("show", str(instance), "--json").json()["version"] == 2


def test_start_role_not_allowed_exits_4(ready: Runner) -> None:
    ready.fails(
        4,
        "start",
        "leader-development",
        "--area",
        "160117",
        "--fiscal-year",
        "2564",
        "--actor",
        "inspector1",
        "--role",
        "inspector",
    )


def test_guard_false_exits_4(ready: Runner) -> None:
    run = ready
    instance = run.start()
    run.ok("fire", str(instance), "kickoff", *OFFICER, *KICKOFF)
    run.ok("fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP)
    run.ok(
        "fire",
        str(instance),
        "report_progress",
        *COORDINATOR,
        "--set",
        "date=2564-05-01",
        "--set",
        "summary=ปลูกผักสวนครัว",
    )
    run.ok(
        "fire",
        str(instance),
        "evaluate",
        *COORDINATOR,
        "--set",
        "date=2564-08-01",
        "--set",
        "method=แบบสอบถาม",
    )
    run.ok(
        "fire",
        str(instance),
        "summarize",
        *OFFICER,
        "--set",
        "date=2564-09-01",
        "--set",
        "venue=ที่ว่าการอำเภอ",
    )
    # lessons_learned needs an earlier award, which never happened
    r = run.fails(
        4,
        "fire",
        str(instance),
        "lessons_learned",
        *OFFICER,
        "--set",
        "date=2564-09-10",
        "--set",
        "summary=บทเรียน",
    )
    assert "lessons_learned" in r.err
    done = run.ok(
        "fire", str(instance), "close", *OFFICER, "--set", "date=2564-09-10", "--json"
    ).json()
    assert done["instance"]["state"] == "closed"
    assert done["instance"]["available_triggers"] == []


def test_duplicate_start_exits_5(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    r = run.fails(
        5, "start", "leader-development", "--area", "160117", "--fiscal-year", "2564", *OFFICER
    )
    assert str(instance) in r.err
    assert "--allow-duplicate" in r.err
    second = run.start("--allow-duplicate")
    assert second != instance
    assert [i["id"] for i in run.ok("list", "--json").json()] == [instance, second]
    # another fiscal year or area is no duplicate
    run.start(fiscal_year="2565")
    run.start(area="160118")


def test_expect_version(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    r = run.fails(
        5, "fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP, "--expect-version", "1"
    )
    assert "version" in r.err
    assert len(run.history(instance)) == 2
    data = run.ok(
        "fire",
        str(instance),
        "workshop",
        *COORDINATOR,
        *WORKSHOP,
        "--expect-version",
        "2",
        "--json",
    ).json()
    assert data["instance"]["version"] == 3


def test_fire_key_replays_the_first_result(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    args = ["fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP, "--key", "ws-1"]
    first = run.ok(*args, "--json").json()
    again = run.ok(*args, "--json").json()
    assert again["event"] == first["event"]
    assert again["instance"]["version"] == first["instance"]["version"] == 3
    text = run.ok(*args)
    assert "already" in text.out
    assert len(run.history(instance)) == 3
    # the same key for a different request is a conflict
    run.fails(
        5,
        "fire",
        str(instance),
        "report_progress",
        *COORDINATOR,
        "--set",
        "date=2564-05-01",
        "--set",
        "summary=x",
        "--key",
        "ws-1",
    )
    assert len(run.history(instance)) == 3


def test_fire_key_replay_after_a_later_change(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    args = ["fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP, "--key", "ws-1"]
    first = run.ok(*args, "--json").json()
    run.ok(
        "fire",
        str(instance),
        "report_progress",
        *COORDINATOR,
        "--set",
        "date=2564-05-01",
        "--set",
        "summary=ปลูกผัก",
    )
    again = run.ok(*args, "--json").json()
    assert again["event"] == first["event"]
    assert len(run.history(instance)) == 4
    assert again["instance"] == first["instance"]


def test_start_key_replays_the_first_result(ready: Runner) -> None:
    first = ready.start("--key", "start-lopburi")
    # the same request again is not a duplicate: it is the first result
    assert ready.start("--key", "start-lopburi") == first
    assert len(ready.ok("list", "--json").json()) == 1
    assert len(ready.history(first)) == 1
    data = ready.ok(
        "start",
        "leader-development",
        "--area",
        "160117",
        "--fiscal-year",
        "2564",
        *OFFICER,
        "--key",
        "start-lopburi",
        "--json",
    ).json()
    assert data["id"] == first


def test_traceback_flag_shows_the_traceback(
    ready: Runner, capsys: pytest.CaptureFixture[str]
) -> None:
    """--traceback prints the Python traceback and still exits with the contract's code."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--db", ready.url, "--traceback", "show", "999"])
    assert exit_info.value.code == InstanceNotFound.exit_code
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_traceback_env_var(
    ready: Runner, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """WORKFLOW_TRACEBACK=1 works like --traceback."""
    monkeypatch.setenv("WORKFLOW_TRACEBACK", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(["--db", ready.url, "show", "999"])
    assert exit_info.value.code == InstanceNotFound.exit_code
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# --------------------------------------------------------------------------- audit


def test_audit_log_formats(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    table = run.ok("audit", "log").out
    assert "udomrat" in table and "kickoff" in table and "start" in table
    logged = run.ok("audit", "log", "--format", "json").json()
    for e in logged:
        assert_event_json(e)
    events = instance_events(logged)
    assert [e["trigger"] for e in events] == ["start", "kickoff"]
    for e in events:
        assert_event_json(e)
        assert e["instance"] == instance
    assert events == [
        {**h, **{k: e[k] for k in set(e) - set(h)}}
        for h, e in zip(run.history(instance), events, strict=True)
    ]
    assert run.ok("audit", "log", "--actor", "nobody", "--format", "json").json() == []
    by_actor = run.ok("audit", "log", "--actor", "udomrat", "--format", "json").json()
    assert [e["trigger"] for e in instance_events(by_actor)] == ["start", "kickoff"]
    one_plan = run.ok("audit", "log", "--program", "one-plan", "--format", "json").json()
    assert instance_events(one_plan) == []
    ld = run.ok("audit", "log", "--program", "leader-development", "--format", "json").json()
    assert len(instance_events(ld)) == 2
    mine = run.ok("audit", "log", "--instance", str(instance), "--format", "json").json()
    assert [e["seq"] for e in mine] == [1, 2]


def test_audit_log_csv(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/w.db"

    def call(*args: str) -> bytes:
        capsysbinary.readouterr()
        try:
            main(["--db", url, *args])
        except SystemExit as e:
            assert _exit_code(e) == 0, capsysbinary.readouterr().err
        return capsysbinary.readouterr().out

    call("init")
    if "actors" in cli.commands:
        call("actors", "grant", "udomrat", "provincial_officer")
    instance = (
        call("start", "leader-development", "--area", "160117", "--fiscal-year", "2564", *OFFICER)
        .decode()
        .strip()
    )
    call("fire", instance, "kickoff", *OFFICER, *KICKOFF)
    raw = call("audit", "log", "--format", "csv")
    assert raw.startswith(b"\xef\xbb\xbf")
    assert "ศูนย์เรียนรู้ ๙ ตามพ่อ".encode() in raw
    rows = [r for r in csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))) if r["instance"]]
    assert [r["trigger"] for r in rows] == ["start", "kickoff"]
    assert {"instance", "seq", "actor", "role", "at", "hash", "prev_hash"} <= set(rows[0])
    assert json.loads(rows[1]["evidence"])["date"] == "2021-02-17"
    assert rows[1]["prev_hash"] == rows[0]["hash"]


def test_audit_log_since_until_be(kicked_off: tuple[Runner, int]) -> None:
    run, _ = kicked_off
    today = utc_today()
    day = dt.timedelta(days=1)

    def count(*args: str) -> int:
        return len(instance_events(run.ok("audit", "log", "--format", "json", *args).json()))

    assert count("--since", be(today - day), "--until", be(today + day)) == 2
    assert count("--since", be(today - day)) == 2
    assert count("--until", be(today + day)) == 2
    assert count("--until", be(today - 2 * day)) == 0
    assert count("--since", be(today + 2 * day)) == 0
    # a CE date means the same day
    assert count("--until", (today - 2 * day).isoformat()) == 0
    assert count("--since", (today - day).isoformat()) == 2


def test_audit_verify_and_digest(kicked_off: tuple[Runner, int], tmp_path: Path) -> None:
    run, instance = kicked_off
    r = run.ok("audit", "verify")
    assert "ok" in r.out
    data = run.ok("audit", "verify", "--json").json()
    assert set(data) >= VERIFY_KEYS
    assert data["ok"] is True
    assert data["events_checked"] == 2
    assert data["instances_checked"] == 1
    assert data["problems"] == []

    digest = run.ok("audit", "digest").json()
    assert isinstance(digest, dict)
    path = tmp_path / "digest.json"
    path.write_text(json.dumps(digest), encoding="utf-8")
    run.ok("audit", "verify", "--digest", str(path))
    # appending more events does not break an earlier digest
    run.ok("fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP)
    checked = run.ok("audit", "verify", "--digest", str(path), "--json").json()
    assert checked["ok"] is True
    assert checked["events_checked"] == 3


def test_audit_verify_bad_digest_file(kicked_off: tuple[Runner, int], tmp_path: Path) -> None:
    run, _ = kicked_off
    run.fails(2, "audit", "verify", "--digest", str(tmp_path / "missing.json"))
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"heads": 3}', encoding="utf-8")
    run.fails(2, "audit", "verify", "--digest", str(garbage))


def _tamper(db_file: Path, sql: str, *params: Any) -> None:
    con = sqlite3.connect(db_file)
    try:
        con.execute("DROP TRIGGER IF EXISTS workflow_events_no_update")
        con.execute("DROP TRIGGER IF EXISTS workflow_events_no_delete")
        con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def test_audit_verify_detects_a_hand_edit(kicked_off: tuple[Runner, int]) -> None:
    run, instance = kicked_off
    run.ok("fire", str(instance), "workshop", *COORDINATOR, *WORKSHOP)
    run.ok("audit", "verify")
    _tamper(run.db_file, "UPDATE workflow_events SET actor='x' WHERE seq=2")
    r = run("audit", "verify")
    assert r.code == 1
    assert f"instance {instance}" in r.out
    assert "seq 2" in r.out
    assert "Traceback" not in r.err
    j = run("audit", "verify", "--json")
    assert j.code == 1
    data = j.json()
    assert data["ok"] is False
    assert data["problems"][0]["instance"] == instance
    assert data["problems"][0]["seq"] == 2
    assert data["problems"][0]["reason"]


def test_audit_verify_digest_detects_a_removed_tail(
    kicked_off: tuple[Runner, int], tmp_path: Path
) -> None:
    run, instance = kicked_off
    path = tmp_path / "digest.json"
    path.write_text(run.ok("audit", "digest").out, encoding="utf-8")
    _tamper(run.db_file, "DELETE FROM workflow_events WHERE instance_id=? AND seq=2", instance)
    r = run("audit", "verify", "--digest", str(path), "--json")
    assert r.code == 1
    assert any(p["instance"] == instance for p in r.json()["problems"])


@pytest.mark.skipif("actors" not in cli.commands, reason="no `actors` commands yet")
def test_audit_verify_detects_an_edited_grant(ready: Runner) -> None:
    ready.ok("audit", "verify")
    con = sqlite3.connect(ready.db_file)
    try:
        con.execute("DROP TRIGGER IF EXISTS workflow_grant_events_no_update")
        con.execute("UPDATE workflow_grant_events SET by='mallory' WHERE seq=1")
        con.commit()
    finally:
        con.close()
    assert ready("audit", "verify").code == 1


# --------------------------------------------------------------------------- report, demo


def test_report(ready: Runner) -> None:
    run = ready
    a = run.start()
    run.ok("fire", str(a), "kickoff", *OFFICER, *KICKOFF)
    run.start(area="160118")
    run.start(program="one-plan", area="18", fiscal_year="2565")
    table = run.ok("report").out
    assert "leader-development" in table and "one-plan" in table
    assert "ลพบุรี" in table and "ชัยนาท" in table
    data = run.ok("report", "--json").json()
    assert data["total"] == 3
    rows = {(r["program"], r["province"]["code"], r["state"]): r["count"] for r in data["rows"]}
    assert rows == {
        ("leader-development", "16", "kicked_off"): 1,
        ("leader-development", "16", "planned"): 1,
        ("one-plan", "18", "planned"): 1,
    }
    only = run.ok("report", "--program", "one-plan", "--json").json()
    assert only["total"] == 1
    fy = run.ok("report", "--fiscal-year", "2564", "--json").json()
    assert fy["fiscal_year"] == 2564
    assert fy["total"] == 2


def test_demo_twice(run: Runner) -> None:
    first = run.ok("demo")
    m = re.search(r"\((\d+) stages recorded by this run\)", first.out)
    assert m and int(m.group(1)) > 0, first.out
    assert "Try next" in first.out
    instances = run.ok("list", "--json").json()
    assert len(instances) == 5
    assert {i["program"] for i in instances} == {"leader-development", "khok-nong-na", "one-plan"}
    events = len(instance_events(run.ok("audit", "log", "--format", "json").json()))
    second = run.ok("demo")
    assert "(0 stages recorded by this run)" in second.out
    assert len(run.ok("list", "--json").json()) == 5
    assert len(instance_events(run.ok("audit", "log", "--format", "json").json())) == events
    verified = run.ok("audit", "verify", "--json").json()
    assert verified["ok"] is True
    assert verified["instances_checked"] == 5
    assert verified["events_checked"] == events
    khok = next(i for i in instances if i["program"] == "khok-nong-na")
    assert khok["state"] == "activities"
    assert len(khok["active"]) == 7
    assert all(a.startswith("activities.") for a in khok["active"])
    run.ok("programs", "diagram", "khok-nong-na", "--instance", str(khok["id"]))


def test_demo_beside_existing_instances(ready: Runner) -> None:
    ready.start()
    ready.ok("demo")


# --------------------------------------------------------------------------- environment


def test_workflow_db_env_var(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "from-env.db"
    monkeypatch.setenv("WORKFLOW_DB", f"sqlite:///{target}")
    runner = Runner(capsys, "unused", target)
    runner.raw("init")
    assert target.exists()
    assert not (tmp_path / "workflow.db").exists()
    if "actors" in cli.commands:
        assert runner.raw("actors", "grant", "udomrat", "provincial_officer").code == 0
    r = runner.raw("start", "one-plan", "--area", "16", "--fiscal-year", "2564", *OFFICER)
    assert r.code == 0, r.err
    assert len(json.loads(runner.raw("list", "--json").out)) == 1
    # --db wins over the environment
    other = tmp_path / "other.db"
    r = runner.raw("--db", f"sqlite:///{other}", "list")
    assert r.code == 6
    assert not other.exists()


def test_default_db_is_in_the_current_directory(run: Runner, tmp_path: Path) -> None:
    assert run.raw("init").code == 0
    assert (tmp_path / "workflow.db").exists()
