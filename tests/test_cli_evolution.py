"""The command line of issue 13 (CONTRACT §8): `workflow comment`, `correct`, `revert`,
`migrate` and `actors grant --until`, with their JSON and exit codes, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolution_fixtures import BUNDLED, NEXT, PROGRAMS, write_v2
from test_cli import COORDINATOR, KICKOFF, OFFICER, WORKSHOP, Runner


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], backend: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Runner:
    """An initialised database (SQLite or PostgreSQL) whose actors hold their roles."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKFLOW_DB", raising=False)
    runner = Runner(capsys, backend, tmp_path / "w.db")
    runner.init()
    return runner


def _workshop(cli: Runner) -> int:
    iid = cli.start()
    cli.ok("fire", str(iid), "kickoff", *OFFICER, *KICKOFF)
    cli.ok("fire", str(iid), "workshop", *COORDINATOR, *WORKSHOP)
    return iid


def test_comment_correct_revert(cli: Runner) -> None:
    """The three commands append their events; history --json shows the correction."""
    iid = _workshop(cli)
    r = cli.ok("comment", str(iid), *COORDINATOR, "--text", "ผู้เข้าร่วมมาจาก 12 หมู่บ้าน",
               "--json").json()
    assert r["event"]["trigger"] == "comment" and r["instance"]["state"] == "workshop_held"
    r = cli.ok("correct", str(iid), "3", *OFFICER, "--reason", "นับตามใบลงชื่อ",
               "--set", "participants=32", "--json").json()
    assert r["event"]["evidence"]["changes"] == {"participants": {"old": 25, "new": 32}}
    workshop = cli.history(iid)[2]
    assert workshop["evidence"]["participants"] == 25
    assert workshop["corrected"] == {"by": [5], "evidence": {**workshop["evidence"],
                                                             "participants": 32}, "note": None}
    text = cli.ok("history", str(iid)).out
    assert "first recorded" in text
    out = cli.ok("revert", str(iid), *OFFICER, "--reason", "บันทึกผิดขั้น").out
    assert "workshop_held -> kicked_off" in out
    assert cli.ok("show", str(iid), "--json").json()["state"] == "kicked_off"
    assert cli.ok("audit", "verify", "--json").json()["ok"]


def test_refusals_and_their_exit_codes(cli: Runner) -> None:
    """4 refused (role, evidence, final state), 3 not found (instance, event), 5 conflict,
    2 usage (no reason given)."""
    iid = _workshop(cli)
    cli.fails(4, "correct", str(iid), "3", *COORDINATOR, "--reason", "r", "--set",
              "participants=30")
    cli.fails(4, "correct", str(iid), "3", *OFFICER, "--reason", "r", "--set",
              "participants=0")
    cli.fails(3, "correct", str(iid), "9", *OFFICER, "--reason", "r", "--set", "venue=x")
    cli.fails(3, "comment", "999", *COORDINATOR, "--text", "x")
    cli.fails(5, "revert", str(iid), *OFFICER, "--reason", "r", "--expect-version", "1")
    cli.fails(2, "correct", str(iid), "3", *OFFICER, "--set", "venue=x")
    cli.ok("fire", str(iid), "cancel", *OFFICER, "--set", "reason=งบประมาณถูกตัด")
    cli.fails(4, "revert", str(iid), *OFFICER, "--reason", "r")
    denials = cli.ok("audit", "denials", "--json").json()
    assert [d["action"] for d in denials][-1] == "correct"


def test_migrate_dry_run_then_apply(cli: Runner, tmp_path: Path) -> None:
    """--dry-run prints the plan (exit 1 while a state is unmapped, nothing changed); with
    --map it applies, and a rerun migrates nothing."""
    iid = cli.start()
    cli.ok("fire", str(iid), "kickoff", *OFFICER, *KICKOFF)
    v2 = ["--definitions", str(write_v2(tmp_path / "v2")),
          *(x for p in PROGRAMS for x in ("--allow-override", p))]
    args = ["migrate", "leader-development", "--to-version", str(NEXT), *OFFICER]
    r = cli(*v2, *args, "--dry-run", "--json")
    assert r.code == 1
    (item,) = r.json()["items"]
    assert (item["id"], item["ok"], item["from"]) == (iid, False, ["kicked_off"])
    assert "kicked_off" in item["problem"]
    cli.fails(4, *v2, *args)
    assert cli.ok("show", str(iid), "--json").json()["program_version"] == BUNDLED
    plan = cli.ok(*v2, *args, "--map", "kicked_off=launched", "--dry-run").out
    assert "launched" in plan and "nothing changed" in plan
    done = cli.ok(*v2, *args, "--map", "kicked_off=launched", "--json").json()
    assert done["migrated"] == 1 and done["items"][0]["to"] == ["launched"]
    again = cli.ok(*v2, *args, "--map", "kicked_off=launched", "--json").json()
    assert again["migrated"] == 0 and again["items"] == []
    inst = cli.ok(*v2, "show", str(iid), "--json").json()
    assert (inst["program_version"], inst["state"]) == (NEXT, "launched")
    assert cli.history(iid)[-1]["trigger"] == "migrate"
    assert cli.ok(*v2, "audit", "verify", "--json").json()["ok"]


def test_grant_until(cli: Runner) -> None:
    """actors grant --until DATE shows the end; a date already past is a usage error."""
    g = cli.ok("actors", "grant", "malee", "coordinator", "--until", "2600-09-30",
               "--json").json()
    assert g["expires_at"] == "2057-09-30T17:00:00.000000Z"
    assert "2057-09-30" in cli.ok("actors", "list").out
    cli.fails(2, "actors", "grant", "malee", "inspector", "--until", "2000-01-01")
