"""Programs that shadow the bundled ones (issue 9, item 7).

An extra ``--definitions`` directory that carries a bundled program id is refused unless the
operator allows that id explicitly; the source of every stored definition is recorded and shown
by ``programs list`` and ``audit verify``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import LOPBURI, OFFICER, dump_tables, open_engine, sql_engine
from reliability import cli_outcome as cli
from workflow import DefinitionError, Engine
from workflow.programs.registry import Registry, bundled_files


def bundled_text(program: str) -> str:
    for f in bundled_files():
        if f.stem == program:
            return f.read_text(encoding="utf-8")
    raise AssertionError(f"no bundled {program}")


#: The version of the shadowing file: one past the newest bundled version.
SHADOW = 3


def shadow(directory: Path) -> Path:
    """leader-development, a version past the bundled ones, letting coordinators award too
    (the attack of the issue)."""
    text = bundled_text("leader-development")
    text = re.sub(r"\nversion: \d+\n", f"\nversion: {SHADOW}\n", text, count=1)
    assert "roles: [inspector]" in text
    text = text.replace("roles: [inspector]", "roles: [inspector, coordinator]", 1)
    directory.mkdir(exist_ok=True)
    path = directory / "leader-development.yaml"
    path.write_text(text, encoding="utf-8")
    return path



def test_registry_refuses_a_bundled_id_from_an_extra_directory(tmp_path: Path) -> None:
    """A bundled id in an extra directory is E070 naming the file, the line and the id."""
    path = shadow(tmp_path / "defs")
    with pytest.raises(DefinitionError) as caught:
        Registry([tmp_path / "defs"])
    (problem,) = caught.value.problems
    assert problem.code == "E070" and problem.file == str(path)
    assert "'leader-development'" in problem.message and "--allow-override" in problem.message
    assert caught.value.exit_code == 1
    # A different version number is an extension, refused as well; so is a single file, and
    # allowing another program id does not allow this one.
    with pytest.raises(DefinitionError):
        Registry([path])
    with pytest.raises(DefinitionError):
        Registry([path], allow_override=["one-plan"])
    assert Registry([path], allow_override=["leader-development"]).get(
        "leader-development").version == SHADOW


def test_verbatim_copy_of_a_bundled_file_changes_nothing(tmp_path: Path) -> None:
    """`--definitions definitions/` in a checkout (the bundled text itself) stays bundled."""
    (tmp_path / "leader-development.yaml").write_text(
        bundled_text("leader-development"), encoding="utf-8")
    program = Registry([tmp_path]).get("leader-development")
    assert program.version == 2 and program.source == "bundled" and program.bundled


def test_shadowing_is_refused_on_every_command(backend: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Engine and CLI refuse the shadowing directory (exit 1, one line), the database
    exactly as it was; the bundled program still governs without the directory."""
    defs = tmp_path / "defs"
    path = shadow(defs)
    with open_engine(backend) as eng:
        eng.init()
    before = dump_tables(backend)
    with pytest.raises(DefinitionError):
        Engine(backend, [defs])
    for args in (["programs", "list"],
                 ["start", "leader-development", "--area", LOPBURI, "--fiscal-year", "2564",
                  "--actor", "u", "--role", OFFICER]):
        code, out, err = cli(capsys, "--db", backend, "--definitions", str(defs), *args)
        assert code == 1, err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{path}:" in err and "E070" in err and "'leader-development'" in err
        assert out == ""
    assert dump_tables(backend) == before


def test_allowed_override_is_recorded_and_shown(backend: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With --allow-override (or Engine(allow_override=...)) the v2 runs; the stored
    definition records its file; programs list and audit verify show it."""
    defs = tmp_path / "defs"
    path = shadow(defs)
    with open_engine(backend, [defs], allow_override=["leader-development"]) as eng:
        eng.init()
        inst = eng.start("leader-development", area=LOPBURI, fiscal_year=2564, actor="u",
                         role=OFFICER)
        assert inst.program_version == SHADOW
        assert eng.program("leader-development").source == str(path.resolve())
        bundled = eng.start("one-plan", area=LOPBURI, fiscal_year=2564, actor="u",
                            role="coordinator")
        result = eng.verify()
        assert result.ok
        assert [(n.instance, n.program, n.program_version, n.source)
                for n in result.non_bundled] == [
            (inst.id, "leader-development", SHADOW, str(path.resolve()))]
    eng_sql = sql_engine(backend)
    with eng_sql.connect() as conn:
        rows = dict(conn.execute(sa.text(
            "SELECT program, source FROM workflow_definitions")).all())
    eng_sql.dispose()
    assert rows == {"leader-development": str(path.resolve()), "one-plan": "bundled"}

    base = ["--db", backend, "--definitions", str(defs), "--allow-override", "leader-development"]
    code, out, err = cli(capsys, *base, "programs", "list", "--json")
    assert code == 0, err
    sources = {p["program"]: p["source"] for p in json.loads(out)}
    assert sources == {"leader-development": str(path.resolve()), "one-plan": "bundled",
                       "khok-nong-na": "bundled"}
    code, out, err = cli(capsys, *base, "programs", "list")
    assert code == 0, err
    assert out.count("bundled") == 2  # the two others; leader-development names its file
    # Without the directory, verify still knows where the instance's rules came from.
    code, out, err = cli(capsys, "--db", backend, "audit", "verify", "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    assert {"ok", "events_checked", "instances_checked", "problems"} <= set(report)
    assert [n["instance"] for n in report["non_bundled"]] == [inst.id]
    assert bundled.id not in [n["instance"] for n in report["non_bundled"]]
    code, out, err = cli(capsys, "--db", backend, "audit", "verify")
    assert code == 0 and f"instance {inst.id} runs leader-development v{SHADOW} from" in out
    # The environment entry is the same explicit say-so.
    monkeypatch.setenv("WORKFLOW_ALLOW_OVERRIDE", "leader-development")
    code, out, err = cli(capsys, "--db", backend, "--definitions", str(defs), "programs", "list")
    assert code == 0, err


def test_migration_gives_existing_definitions_their_source(backend: str) -> None:
    """Rows stored before revision 0004: bundled text is `bundled`, other text its file."""
    from workflow.storage import migrations

    if backend.startswith("sqlite"):
        Path(backend.removeprefix("sqlite:///")).touch()
    custom = bundled_text("one-plan").replace("version: 2\n", "version: 7\n", 1)
    rows = [("leader-development", 2, bundled_text("leader-development"),
             "/usr/lib/python3/site-packages/workflow/definitions/leader-development.yaml"),
            ("one-plan", 7, custom, "/srv/defs/one-plan.yaml")]
    eng = sql_engine(backend)
    with eng.connect() as conn:
        migrations.upgrade(conn, "0003")
    with eng.begin() as conn:
        for program, version, text, file in rows:
            conn.execute(sa.text(
                "INSERT INTO workflow_definitions (program, version, content_hash, source_file,"
                " source_text, stored_at) VALUES (:p, :v, :h, :f, :t, '2026-01-01')"),
                dict(p=program, v=version, h=hashlib.sha256(text.encode()).hexdigest(), f=file,
                     t=text))
    with eng.connect() as conn:
        migrations.upgrade(conn)
    with eng.connect() as conn:
        found = dict(conn.execute(sa.text(
            "SELECT program, source FROM workflow_definitions")).all())
    eng.dispose()
    assert found == {"leader-development": "bundled", "one-plan": "/srv/defs/one-plan.yaml"}
