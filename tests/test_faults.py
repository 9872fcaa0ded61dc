"""Environment faults: the database is down, refuses us, is read-only, full, from another
version of workflow, missing, or deleted under a running engine.

Each must give, through the command line, exit 6 and one ``workflow: error:`` line naming the
database (never its password) and the cause; through the API a ``StorageError`` subclass
(``DatabaseUnavailable`` or ``SchemaOutOfDate``); and nothing half-written: the tables are
exactly as before, and once the fault is gone the trail verifies and the engine works.

Real faults where this machine allows them: a small tmpfs filled up (disk full), a tmpfs
remounted read-only, roles and databases on the real PostgreSQL server. They are skipped
with the reason when the test runs without the privileges (mounting needs root).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from helpers import (
    dump_tables,
    execute,
    leader_fire,
    lopburi_story,
    open_engine,
    report_employment,
    start_khok,
    start_lopburi,
)
from reliability import Run, assert_consistent, assert_one_error_line, record, run_cli
from workflow import (
    DatabaseUnavailable,
    Engine,
    SchemaOutOfDate,
    StorageError,
)
from workflow.storage.store import SCHEMA_REVISION

#: Every command that needs the database, as the CLI spells it (instance 1 exists where the
#: database does). Writes first: they matter most.
WRITES = [
    ["fire", "1", "kickoff", "--actor", "udomrat", "--role", "provincial_officer",
     "--set", "date=2564-02-17", "--set", "venue=v", "--set", "chair=c"],
    ["start", "one-plan", "--area", "16", "--fiscal-year", "2564", "--actor", "somchai",
     "--role", "coordinator"],
    ["actors", "grant", "malee", "coordinator"],
]
READS = [["list"], ["show", "1"], ["history", "1"], ["audit", "log"], ["audit", "verify"],
         ["audit", "digest"], ["report"], ["actors", "list"], ["audit", "denials"]]


def _cli(url: str, *args: str) -> Run:
    return run_cli(None, ["--db", url, *args])


def assert_exit_6(url: str, args: list[str], *needles: str, secret: str | None = None) -> Run:
    """``workflow --db URL ARGS`` exits 6 with one error line naming the database."""
    r = _cli(url, *args)
    assert r.code == 6, (args, r)
    assert_one_error_line(r)
    shown = make_url(url).render_as_string(hide_password=True)
    assert shown in r.err or "database" in r.err, r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)
    if secret:
        assert secret not in r.err, "the password was printed"
    return r


#: For tests that only make sense on the PostgreSQL server (overrides the db_kind fixture).
POSTGRES_ONLY = pytest.mark.parametrize(
    "db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])


def _tally(request: pytest.FixtureRequest, cases: int) -> None:
    record(request.node.nodeid, "faults", cases=cases)


# --------------------------------------------------------------------------- unreachable


UNREACHABLE = {
    "closed port": "postgresql+psycopg://workflow:s3cret-pw@127.0.0.1:1/workflow",
    "not a url": "nonsense://x",
    "unknown driver": "postgresql+nosuchdriver://u@127.0.0.1/x",
    "sqlite in a missing directory": "sqlite:////nonexistent-dir/sub/w.db",
}


@pytest.mark.parametrize("name", sorted(UNREACHABLE))
def test_unreachable_database_is_exit_6_for_every_command(
        name: str, request: pytest.FixtureRequest) -> None:
    """Unreachable database: exit 6, one line, no password, for every command; API StorageError."""
    url = UNREACHABLE[name]
    commands = [*WRITES, *READS] + ([["init"]] if "sqlite" not in name else [])
    for args in commands:
        assert_exit_6(url, args, secret="s3cret-pw")
    try:
        eng = Engine(url)
    except StorageError as e:  # a URL that is not one fails at once
        assert e.exit_code == 6
    else:
        with eng:
            for call in (lambda: eng.get(1), lambda: start_lopburi(eng), eng.verify,
                         eng.digest, lambda: eng.grant("u", "coordinator")):
                with pytest.raises(StorageError) as caught:
                    call()
                assert caught.value.exit_code == 6
                assert "s3cret-pw" not in str(caught.value)
    _tally(request, len(commands))


# --------------------------------------------------------------------------- the real server


@pytest.fixture
def pg_admin(postgres_scratch: str) -> Iterator[sa.Engine]:
    """An AUTOCOMMIT connection to the server as the admin role (creates roles)."""
    admin = sa.create_engine(postgres_scratch, isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    yield admin
    admin.dispose()


@pytest.fixture
def pg_role(pg_admin: sa.Engine) -> Iterator[Callable[[str], str]]:
    """Make a throw-away role (``LOGIN`` options given); dropped afterwards."""
    made: list[str] = []

    def make(options: str) -> str:
        name = f"wf_fault_{secrets.token_hex(3)}"
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {name} {options}")
        made.append(name)
        return name

    yield make
    with pg_admin.connect() as conn:
        for name in made:
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'")
            conn.exec_driver_sql(f"DROP OWNED BY {name}")
            conn.exec_driver_sql(f"DROP ROLE {name}")


@POSTGRES_ONLY
@pytest.mark.parametrize("fault", ["no such database", "no such role", "role may not log in",
                                   "role without privileges"])
def test_wrong_database_or_credentials_on_the_real_server(
        engine: Engine, fault: str, pg_role: Callable[[str], str],
        request: pytest.FixtureRequest) -> None:
    """Wrong database, unknown/NOLOGIN/unprivileged role: exit 6 everywhere, nothing written."""
    lopburi_story(engine)
    before = dump_tables(engine.url)
    url = make_url(engine.url)
    if fault == "no such database":
        bad = url.set(database=f"{url.database}_missing")
    elif fault == "no such role":
        bad = url.set(username="wf_no_such_role")
    elif fault == "role may not log in":
        bad = url.set(username=pg_role("NOLOGIN"))
    else:
        bad = url.set(username=pg_role("LOGIN"))
    bad_url = bad.render_as_string(hide_password=False)
    commands = [*WRITES, *READS, ["init"]]
    for args in commands:
        assert_exit_6(bad_url, args)
    with Engine(bad_url) as eng:
        with pytest.raises(StorageError):
            eng.get(1)
        with pytest.raises(StorageError):
            eng.init()
    assert dump_tables(engine.url) == before
    _tally(request, len(commands))


@POSTGRES_ONLY
def test_server_dropping_the_connection_loses_nothing(engine: Engine, pg_admin: sa.Engine
                                                      ) -> None:
    """Server drops the kept connections: next call succeeds or exits 6, nothing half-written."""
    inst, _ = lopburi_story(engine)
    khok = start_khok(engine)
    outcomes = []
    for call in (lambda: engine.get(inst.id), lambda: report_employment(engine, khok.id),
                 lambda: engine.fire_many([{"instance": khok.id,
                                            "trigger": "report_employment", "actor": "m",
                                            "role": "coordinator",
                                            "evidence": {"date": "2564-03-01",
                                                         "workers": w}} for w in range(3)])):
        before = dump_tables(engine.url)
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{make_url(engine.url).database}' "
                "AND pid <> pg_backend_pid()")
        try:
            call()
            outcomes.append("succeeded")
        except DatabaseUnavailable as e:
            assert e.exit_code == 6
            assert dump_tables(engine.url) == before
            outcomes.append("DatabaseUnavailable")
        call()  # and the engine works again
    assert_consistent(engine.url)


@POSTGRES_ONLY
def test_read_after_the_server_dropped_the_connection_is_retried(
        engine: Engine, pg_admin: sa.Engine) -> None:
    """A read after the server dropped the kept connection is retried, not failed once."""
    inst, _ = lopburi_story(engine)
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{make_url(engine.url).database}' AND pid <> pg_backend_pid()")
    assert engine.get(inst.id).state == "kicked_off"


# --------------------------------------------------------------------------- schema


def _set_revision(url: str, revision: str) -> None:
    execute(url, "UPDATE workflow_alembic_version SET version_num = :v",
            params={"v": revision})


def test_schema_from_a_newer_version_is_exit_6_upgrade_workflow(
        engine: Engine, request: pytest.FixtureRequest) -> None:
    """Schema revision 9999: every command, init too, exits 6 'upgrade workflow'; no change."""
    lopburi_story(engine)
    _set_revision(engine.url, "9999")
    before = dump_tables(engine.url)
    commands = [*WRITES, *READS, ["init"]]
    for args in commands:
        assert_exit_6(engine.url, args, "upgrade workflow", "9999")
    with Engine(engine.url) as eng:
        for call in (lambda: eng.get(1), eng.init, eng.verify):
            with pytest.raises(SchemaOutOfDate) as caught:
                call()
            assert caught.value.newer and caught.value.exit_code == 6
    assert dump_tables(engine.url) == before
    _set_revision(engine.url, SCHEMA_REVISION)
    assert_consistent(engine.url)
    _tally(request, len(commands) + 3)


def test_schema_missing_is_exit_6_run_workflow_init(
        backend: str, db_kind: str, request: pytest.FixtureRequest) -> None:
    """Empty database: every command exits 6 with the `workflow init` hint; after init all works."""
    if db_kind == "sqlite":
        path = Path(make_url(backend).database or "")
        path.write_bytes(b"")
    commands = [*WRITES, *READS]
    for args in commands:
        assert_exit_6(backend, args, "workflow init")
    eng = sa.create_engine(backend, poolclass=sa.pool.NullPool)
    with eng.connect() as conn:
        assert [t for t in sa.inspect(conn).get_table_names() if t.startswith("workflow")] == []
    eng.dispose()
    with Engine(backend) as fresh, pytest.raises(SchemaOutOfDate) as caught:
        fresh.get(1)
    assert caught.value.current is None
    assert _cli(backend, "init").code == 0
    assert _cli(backend, "actors", "grant", "somchai", "coordinator").code == 0
    assert _cli(backend, *WRITES[1]).code == 0
    assert_consistent(backend)
    _tally(request, len(commands))


def test_schema_older_than_this_workflow_is_upgraded_by_init(
        backend: str, request: pytest.FixtureRequest) -> None:
    """Schema at revision 0001: commands exit 6 'run `workflow init`'; init upgrades it."""
    from workflow.storage import migrations

    if make_url(backend).get_backend_name() == "sqlite":
        Path(make_url(backend).database or "").touch()
    eng = sa.create_engine(backend, poolclass=sa.pool.NullPool)
    with eng.connect() as conn:
        migrations.upgrade(conn, "0001")
    eng.dispose()
    commands = [*WRITES, *READS]
    for args in commands:
        assert_exit_6(backend, args, "workflow init", "0001")
    r = _cli(backend, "init")
    assert r.code == 0 and "0001" in r.out, r
    assert _cli(backend, "actors", "grant", "somchai", "coordinator").code == 0
    assert _cli(backend, *WRITES[1]).code == 0
    assert_consistent(backend)
    _tally(request, len(commands))


def test_a_dropped_table_is_repaired_by_init_or_named(engine: Engine) -> None:
    """A dropped table is repaired by `workflow init`, or the error does not send you to init."""
    execute(engine.url, "DROP TABLE workflow_denials")
    first = _cli(engine.url, "audit", "denials")
    assert first.code == 6
    assert _cli(engine.url, "init").code == 0
    again = _cli(engine.url, "audit", "denials")
    assert again.code == 0 or "workflow init" not in again.err, again


# --------------------------------------------------------------------------- read-only


def _sqlite_with_story(path: Path) -> tuple[str, int]:
    url = f"sqlite:///{path}"
    with open_engine(url) as eng:
        eng.init()
        eng.grant("udomrat", "provincial_officer")
        eng.grant("somchai", "coordinator")
        inst = start_lopburi(eng)
    return url, inst.id


def test_read_only_sqlite_file_refuses_writes_with_exit_6(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """SQLite opened read-only (mode=ro): writes exit 6, one line; reads work; nothing changes."""
    url, inst = _sqlite_with_story(tmp_path / "w.db")
    before = dump_tables(url)
    ro = f"sqlite:///file:{tmp_path / 'w.db'}?mode=ro&uri=true"
    for args in WRITES:
        assert_exit_6(ro, args, "read")
    for args in READS:
        r = _cli(ro, *args)
        assert r.code == 0, (args, r)
    with open_engine(ro) as eng:
        with pytest.raises(DatabaseUnavailable):
            eng.fire_many([{"instance": inst, "trigger": "kickoff", "actor": "u",
                            "role": "provincial_officer",
                            "evidence": {"date": "2564-02-17", "venue": "v", "chair": "c"}}])
        assert eng.verify().ok
    assert dump_tables(url) == before
    _tally(request, len(WRITES) + len(READS) + 1)


class Mount:
    """A small tmpfs at ``path`` (root only); unmounted afterwards."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a small filesystem needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Mount]]:
    mounts: list[Mount] = []

    def make(size: str) -> Mount:
        m = Mount(tmp_path / f"fs{len(mounts)}", size)
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        m.unmount()


def test_read_only_filesystem_refuses_writes_with_exit_6(
        tmpfs: Callable[[str], Mount], request: pytest.FixtureRequest) -> None:
    """Filesystem remounted read-only: writes exit 6, nothing changes; writable again, all works."""
    fs = tmpfs("4m")
    url, inst = _sqlite_with_story(fs.path / "w.db")
    before = dump_tables(url)
    fs.remount("ro")
    for args in WRITES:
        assert_exit_6(url, args)
    with open_engine(url) as eng, pytest.raises(DatabaseUnavailable):
        leader_fire(eng, inst, "kickoff")
    fs.remount("rw")
    assert dump_tables(url) == before
    with open_engine(url) as eng:
        leader_fire(eng, inst, "kickoff")
    assert_consistent(url)
    _tally(request, len(WRITES) + 1)


def test_database_on_read_only_media_can_still_be_read_and_verified(
        tmpfs: Callable[[str], Mount]) -> None:
    """A database on a read-only filesystem (a snapshot, a backup on read-only media), its
    WAL checkpointed: every read works, `audit verify` (one process or a worker's too) finds
    it intact, and writes exit 6 as before."""
    fs = tmpfs("4m")
    url, _ = _sqlite_with_story(fs.path / "w.db")
    before = dump_tables(url)
    fs.remount("ro")
    for args in [*READS, ["audit", "verify", "--jobs", "2"], ["audit", "verify", "--json"]]:
        r = _cli(url, *args)
        assert r.code == 0, (args, r)
    r = _cli(url, "audit", "verify", "--json")
    assert json.loads(r.out)["ok"] is True
    for args in WRITES:
        assert_exit_6(url, args, "read")
    assert not (fs.path / "w.db-shm").exists() and not (fs.path / "w.db-wal").exists()
    fs.remount("rw")
    assert dump_tables(url) == before


def test_copy_with_changes_only_in_its_wal_on_read_only_media_is_refused_clearly(
        tmpfs: Callable[[str], Mount], tmp_path: Path) -> None:
    """A copy taken while a writer held the database open (its -wal holds changes, no -shm)
    on read-only media: every command exits 6 with one line saying to copy it to writable
    storage; it is never read without its WAL (that would show an older trail as intact)."""
    source = tmp_path / "live.db"
    url, inst = _sqlite_with_story(source)
    keep = sqlite3.connect(source)  # holds the WAL open: the fire below stays in it
    keep.execute("PRAGMA wal_autocheckpoint=0")
    keep.execute("SELECT count(*) FROM workflow_events").fetchall()
    with open_engine(url) as eng:
        leader_fire(eng, inst, "kickoff")
    fs = tmpfs("4m")
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{source}{suffix}", fs.path / f"w.db{suffix}")
    keep.close()
    assert (fs.path / "w.db-wal").stat().st_size > 0
    fs.remount("ro")
    copy = f"sqlite:///{fs.path / 'w.db'}"
    for args in (["history", str(inst)], ["audit", "verify"], ["audit", "verify", "--jobs", "2"]):
        assert_exit_6(copy, args, "-wal", "writable storage")


# --------------------------------------------------------------------------- disk full


def _fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem of ``directory`` but for about ``leave`` bytes."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def _until_full(change: Callable[[int], Any], url: str, limit: int = 2000) -> tuple[int, Any]:
    """Make changes until one fails; check that the failure wrote nothing."""
    for n in range(limit):
        before = dump_tables(url)
        try:
            change(n)
        except StorageError as e:
            assert dump_tables(url) == before, "a failed change left something behind"
            return n, e
    raise AssertionError("the disk never filled up")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fire", "fire_many", "start_many", "cli"])
def test_disk_full_is_exit_6_and_loses_nothing(
        tmpfs: Callable[[str], Mount], how: str, request: pytest.FixtureRequest) -> None:
    """Disk full (filled tmpfs): exit 6, nothing half-written or lost; works once freed."""
    fs = tmpfs("2m")
    url = f"sqlite:///{fs.path / 'w.db'}"
    with open_engine(url) as eng:
        eng.init()
        eng.grant("malee", "coordinator")
        eng.grant("anong", "provincial_officer")
        khok = start_khok(eng).id
    filler = _fill(fs.path, leave=256 * 1024)
    note = "บันทึก " * 400  # ~2.8 kB of Thai per event, to fill the space quickly
    acknowledged = 0
    with open_engine(url) as eng:
        def change(n: int) -> None:
            nonlocal acknowledged
            if how == "fire":
                report_employment(eng, khok, workers=n, note=note)
                acknowledged += 1
            elif how == "fire_many":
                eng.fire_many([{"instance": khok, "trigger": "report_employment",
                                "actor": "malee", "role": "coordinator", "note": note,
                                "evidence": {"date": "2564-03-01", "workers": w}}
                               for w in range(5)])
                acknowledged += 5
            elif how == "start_many":
                from reliability import crash_areas

                areas = crash_areas()[n * 8:(n + 1) * 8]
                acknowledged += len(eng.start_many("one-plan", areas=areas, fiscal_year=2564,
                                                   actor="anong", role="provincial_officer",
                                                   title=note[:700], batch_size=8))
            else:
                r = _cli(url, "fire", str(khok), "report_employment", "--actor", "malee",
                         "--role", "coordinator", "--set", "date=2564-03-01",
                         "--set", f"workers={n}", "--note", note)
                if r.code == 6:
                    assert_one_error_line(r)
                    assert "full" in r.err, r.err
                    raise DatabaseUnavailable(url, r.err)
                assert r.code == 0, r
                acknowledged += 1

        done, error = _until_full(change, url)
        assert isinstance(error, DatabaseUnavailable) and error.exit_code == 6
        assert "full" in str(error), error
        assert done > 0, "the very first change did not fit: leave more room"
    filler.unlink()
    trail = assert_consistent(url)
    if how == "start_many":
        assert len(trail.instances) == 1 + acknowledged
    else:
        assert len(trail.events[khok]) == 3 + acknowledged
    with open_engine(url) as eng:
        report_employment(eng, khok)
    assert_consistent(url)
    record(request.node.nodeid, "faults", cases=1, acknowledged_before_full=acknowledged)


def test_size_limited_sqlite_is_database_unavailable(tmp_path: Path) -> None:
    """SQLite at max_page_count: DatabaseUnavailable, nothing written; a higher limit recovers."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with open_engine(url) as eng:
        eng.init()
        khok = start_khok(eng).id
    limit = {"pages": 0}
    with open_engine(url) as eng:

        @sa.event.listens_for(eng.store.engine, "connect")
        def _limit(dbapi_conn: Any, _record: Any) -> None:
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            limit["pages"] = limit["pages"] or pages + 4
            dbapi_conn.execute(f"PRAGMA max_page_count = {limit['pages']}")

        done, error = _until_full(
            lambda n: report_employment(eng, khok, workers=n, note="x" * 3000), url)
        assert "full" in str(error)
        assert done > 0
        eng.store.dispose()
        limit["pages"] += 100
        report_employment(eng, khok)
    assert_consistent(url)


# --------------------------------------------------------------------------- deleted


def test_database_file_deleted_between_commands_is_exit_6(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """SQLite file deleted between commands: each exits 6 with the init hint, no file re-created."""
    path = tmp_path / "w.db"
    url, _ = _sqlite_with_story(path)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
    for args in [*WRITES, *READS]:
        assert_exit_6(url, args, "workflow init")
    assert not path.exists()
    _tally(request, len(WRITES) + len(READS))


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_database_file_deleted_under_a_running_engine(tmp_path: Path, how: str) -> None:
    """A running engine whose SQLite file was deleted/replaced refuses changes, not loses them."""
    path = tmp_path / "w.db"
    url, inst = _sqlite_with_story(path)
    with open_engine(url) as eng:
        eng.get(inst)  # the engine is running: its connections are open
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
        if how == "replaced":  # another database now lives at the path
            _sqlite_with_story(path)
        acknowledged = None
        try:
            acknowledged = leader_fire(eng, inst, "kickoff")
        except StorageError as e:
            assert e.exit_code == 6
    if how == "deleted":
        assert acknowledged is None, "a fire was acknowledged on a deleted database"
        assert not path.exists(), "an empty database was silently re-created"
    elif acknowledged is not None:  # it went to the database now at the path: it is there
        with open_engine(url) as fresh:
            assert fresh.history(inst)[-1].hash == acknowledged.event.hash, "acknowledged, lost"
        assert_consistent(url)
