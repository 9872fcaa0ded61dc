"""Races decided by locks, made deterministic (issue 9, items 8-11), on SQLite and PostgreSQL.

Each race pauses one side *inside* its open transaction (a hook wraps one store method of
that side's engine: the real statement runs, then the thread waits for the test), starts
the other side, and waits until that side is provably blocked: on PostgreSQL a lock wait of
this database shows in ``pg_locks``; on SQLite the side's store has failed at least one
attempt on the write lock and is retrying. Only then is the first side released. No sleep
decides an outcome, so each test fails the same way every time on code that does not
serialise, and passes every time on code that does.

The waits of item 11 are tried with real CLI processes and a short configured timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import KICKOFF, LOPBURI, OFFICER, dump_tables, report_employment, start_khok
from workflow import (
    DatabaseUnavailable,
    Engine,
    GrantNotFound,
    PermissionDenied,
    UsageError,
)

ACTOR = "udomrat"
WAIT = 20.0  # seconds any step may take before the test calls it hung


# --------------------------------------------------------------------------- machinery


@dataclass
class Side:
    """One racer: an engine of its own (own pool, own connections) run in a thread."""

    url: str
    engine: Engine = field(init=False)
    attempts: int = 0
    result: Any = None
    error: BaseException | None = None
    thread: threading.Thread | None = None
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.engine = Engine(self.url)
        self.engine.grants()  # schema checked now: later connects are the call's attempts
        real = self.engine.store.connect

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.attempts += 1
            return real(*args, **kwargs)

        self.engine.store.connect = counting  # type: ignore[method-assign]

    def pause_after(self, method: str) -> None:
        """Make the store method run, then hold this side's transaction open until released."""
        real = getattr(self.engine.store, method)

        def paused(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            self.reached.set()
            assert self.release.wait(WAIT), "never released"
            return out

        setattr(self.engine.store, method, paused)

    def go(self, call: Callable[[Engine], Any]) -> Side:
        def body() -> None:
            try:
                self.result = call(self.engine)
            except BaseException as e:
                self.error = e

        self.attempts = 0
        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        return self

    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def join(self) -> Side:
        assert self.thread is not None
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the racer hung"
        return self


def _lock_waits(url: str) -> int:
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database()").scalar_one())
    finally:
        eng.dispose()


def wait_blocked(side: Side) -> None:
    """Return once ``side`` waits for a lock (or has finished: then the race was lost)."""
    deadline = time.monotonic() + WAIT
    while not side.done():
        if side.url.startswith("sqlite"):
            if side.attempts >= 2:  # one attempt already failed on the write lock
                return
        elif _lock_waits(side.url) > 0:
            return
        assert time.monotonic() < deadline, "the second racer neither waited nor finished"
        time.sleep(0.01)


@pytest.fixture
def sides(engine: Engine) -> Iterator[Callable[[], Side]]:
    """Make racers on the test database (each with the default policy: stored grants)."""
    made: list[Side] = []

    def make() -> Side:
        made.append(Side(engine.url))
        return made[-1]

    yield make
    for s in made:
        s.release.set()
        if s.thread is not None:
            s.thread.join(WAIT)
        s.engine.close()


def _grant_trail(eng: Engine) -> list[tuple[str, str]]:
    return [(e.trigger, e.evidence["actor"]) for e in eng.audit_log() if e.instance is None]


def _kickoff(eng: Engine, instance: int, **kwargs: Any) -> Any:
    return eng.fire(instance, "kickoff", actor=ACTOR, role=OFFICER, evidence=KICKOFF, **kwargs)


def _start(eng: Engine, area: str = "160101", **kwargs: Any) -> Any:
    return eng.start("leader-development", area=area, fiscal_year=2564, actor=ACTOR,
                     role=OFFICER, **kwargs)


def _revoke(eng: Engine) -> Any:
    return eng.revoke(ACTOR, OFFICER, by="admin")


def _grant(eng: Engine) -> Any:
    return eng.grant(ACTOR, OFFICER, by="admin")


@pytest.fixture
def granted(engine: Engine) -> int:
    """ACTOR holds provincial_officer everywhere; one leader-development instance, planned."""
    engine.grant(ACTOR, OFFICER, by="admin")
    return int(_start(engine, area=LOPBURI).id)


CHANGES: dict[str, Callable[[Engine, int], Any]] = {
    "fire": lambda eng, inst: _kickoff(eng, inst),
    "start": lambda eng, inst: _start(eng),
}


# --------------------------------------------------------------------------- item 8


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_change_arriving_during_a_revoke_is_refused(
        engine: Engine, granted: int, sides: Callable[[], Side], change: str) -> None:
    """A fire/start that checks its grant while a revoke is uncommitted waits, then is refused."""
    revoker, changer = sides(), sides()
    revoker.pause_after("delete_grant")
    revoker.go(_revoke)
    assert revoker.reached.wait(WAIT)
    changer.go(lambda eng: CHANGES[change](eng, granted))
    wait_blocked(changer)
    assert not changer.done(), f"the {change} went ahead while the revoke was uncommitted"
    revoker.release.set()
    revoker.join(), changer.join()
    assert revoker.error is None
    assert isinstance(changer.error, PermissionDenied), changer.error
    assert [e.trigger for e in engine.history(granted)] == ["start"]
    assert len(engine.list()) == 1
    assert engine.denials()[-1].actor == ACTOR
    assert engine.verify().ok


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_revoke_waits_for_a_change_that_checked_the_grant(
        engine: Engine, granted: int, sides: Callable[[], Side], change: str) -> None:
    """A revoke arriving after a fire/start checked its grant commits only after that change."""
    changer, revoker = sides(), sides()
    changer.pause_after("grants_for")
    changer.go(lambda eng: CHANGES[change](eng, granted))
    assert changer.reached.wait(WAIT)
    revoker.go(_revoke)
    wait_blocked(revoker)
    assert not revoker.done(), "the revoke committed while a change relied on the grant"
    changer.release.set()
    changer.join(), revoker.join()
    assert changer.error is None and revoker.error is None, (changer.error, revoker.error)
    revoked_at = [e.at for e in engine.audit_log() if e.trigger == "revoke"]
    changed_at = max(e.at for e in engine.audit_log() if e.instance is not None)
    assert len(revoked_at) == 1 and changed_at < revoked_at[0]
    # And after the revoke, nothing more is allowed.
    with pytest.raises(PermissionDenied):
        CHANGES[change](Engine(engine.url), granted)
    assert engine.verify().ok


def test_grant_during_a_revoke_of_the_same_grant_is_not_lost(
        engine: Engine, granted: int, sides: Callable[[], Side]) -> None:
    """A grant racing a revoke of the same grant acts on the revoke's outcome: it re-grants."""
    revoker, granter = sides(), sides()
    revoker.pause_after("delete_grant")
    revoker.go(_revoke)
    assert revoker.reached.wait(WAIT)
    granter.go(_grant)
    wait_blocked(granter)
    revoker.release.set()
    revoker.join(), granter.join()
    assert revoker.error is None and granter.error is None, (revoker.error, granter.error)
    assert [(g.actor, g.role) for g in engine.grants()] == [(ACTOR, OFFICER)]
    assert [t for t, _ in _grant_trail(engine)] == ["grant", "revoke", "grant"]
    assert engine.verify().ok


# --------------------------------------------------------------------------- item 10


def test_concurrent_identical_grants_record_one_grant(
        engine: Engine, sides: Callable[[], Side]) -> None:
    """Two identical grants at once: both succeed (no exit 6), exactly one grant event."""
    first, second = sides(), sides()
    first.pause_after("insert_grant")
    first.go(_grant)
    assert first.reached.wait(WAIT)
    second.go(_grant)
    wait_blocked(second)
    first.release.set()
    first.join(), second.join()
    assert first.error is None and second.error is None, (first.error, second.error)
    assert first.result == second.result
    assert _grant_trail(engine) == [("grant", ACTOR)]
    assert engine.verify().ok


def test_concurrent_identical_revokes_record_one_revocation(
        engine: Engine, granted: int, sides: Callable[[], Side]) -> None:
    """Two identical revokes at once: one revokes, the other is GrantNotFound (exit 3), as
    when run one after the other; exactly one revoke event."""
    first, second = sides(), sides()
    first.pause_after("delete_grant")
    first.go(_revoke)
    assert first.reached.wait(WAIT)
    second.go(_revoke)
    wait_blocked(second)
    first.release.set()
    first.join(), second.join()
    assert first.error is None
    assert isinstance(second.error, GrantNotFound) and second.error.exit_code == 3
    assert [t for t, _ in _grant_trail(engine)] == ["grant", "revoke"]
    assert engine.grants() == []
    assert engine.verify().ok


# --------------------------------------------------------------------------- item 9


@pytest.mark.parametrize("expect", [None, 1])
def test_overlapping_fires_with_one_key_both_get_the_first_result(
        engine: Engine, granted: int, sides: Callable[[], Side], expect: int | None) -> None:
    """Same --key fired twice at once (with or without --expect-version): one event, and
    the second gets the first's result (replayed), not a refusal or a conflict."""
    first, second = sides(), sides()
    first.pause_after("insert_key")
    first.go(lambda eng: _kickoff(eng, granted, key="k-1", expect_version=expect))
    assert first.reached.wait(WAIT)
    second.go(lambda eng: _kickoff(eng, granted, key="k-1", expect_version=expect))
    wait_blocked(second)
    first.release.set()
    first.join(), second.join()
    assert first.error is None and second.error is None, (first.error, second.error)
    assert second.result.replayed and not first.result.replayed
    assert second.result.event == first.result.event
    assert second.result.instance.version == first.result.instance.version == 2
    assert [e.trigger for e in engine.history(granted)] == ["start", "kickoff"]
    assert engine.verify().ok


def test_overlapping_starts_with_one_key_both_get_the_first_instance(
        engine: Engine, granted: int, sides: Callable[[], Side]) -> None:
    """Same --key started twice at once: one instance; the second returns it."""
    first, second = sides(), sides()
    first.pause_after("insert_key")
    first.go(lambda eng: _start(eng, key="s-1"))
    assert first.reached.wait(WAIT)
    second.go(lambda eng: _start(eng, key="s-1"))
    wait_blocked(second)
    first.release.set()
    first.join(), second.join()
    assert first.error is None and second.error is None, (first.error, second.error)
    assert second.result.id == first.result.id
    assert len(engine.list(area="160101")) == 1
    assert engine.verify().ok


def test_retry_with_a_key_ignores_a_stale_expect_version(engine: Engine, granted: int) -> None:
    """A same-key retry returns the first result even though --expect-version no longer
    matches (the first attempt checked it); a new key with that version is a conflict."""
    eng = Engine(engine.url)
    first = _kickoff(eng, granted, key="k-2", expect_version=1)
    again = _kickoff(eng, granted, key="k-2", expect_version=1)
    other = _kickoff(eng, granted, key="k-2", expect_version=7)
    assert again.replayed and other.replayed
    assert again.event == other.event == first.event
    from workflow import VersionConflict

    with pytest.raises(VersionConflict):
        _kickoff(eng, granted, key="k-3", expect_version=1)
    assert [e.trigger for e in engine.history(granted)] == ["start", "kickoff"]


# --------------------------------------------------------------------------- item 11


def _cli(url: str, *args: str, env: dict[str, str] | None = None
         ) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "workflow.cli.main", "--db", url, *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0


HOLD_EXCLUSIVE = r"""
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
c.execute("PRAGMA locking_mode=EXCLUSIVE")
c.execute("BEGIN EXCLUSIVE")
c.execute("CREATE TABLE IF NOT EXISTS intruder_lock (x)")
if sys.argv[2] == "commit":
    c.execute("COMMIT")  # exclusive mode keeps the file locked: no reader gets in either
print("locked", flush=True)
time.sleep(60)
"""


@contextmanager
def held(url: str, what: str, instance: int | None = None) -> Iterator[None]:
    """Another session holds a lock: ``row`` the instance row (FOR UPDATE), ``table`` every
    workflow table (LOCK TABLE ... ACCESS EXCLUSIVE); on SQLite the file's write lock, or
    (``table``) the whole file exclusively, so that not even readers get in."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        mode = "commit" if what == "table" else "hold"
        holder = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE if what == "table"
                                   else HOLD_WRITE, path, mode],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            yield
        finally:
            holder.kill()
            holder.wait(10)
        return
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn, conn.begin():
            if what == "row":
                conn.exec_driver_sql(
                    f"SELECT id FROM workflow_instances WHERE id = {int(instance or 0)} FOR UPDATE")
            else:
                conn.exec_driver_sql(
                    "LOCK TABLE workflow_events, workflow_instances IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        eng.dispose()


HOLD_WRITE = r"""
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(60)
"""

FIRE = ["fire", "{inst}", "report_employment", "--actor", "malee", "--role", "coordinator",
        "--set", "date=2564-03-01", "--set", "workers=3"]


def _fire_args(inst: int) -> list[str]:
    return [a.format(inst=inst) for a in FIRE]


def _one_error_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("workflow: error: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("how", ["option", "env"])
def test_fire_behind_a_locked_instance_gives_up_in_bounded_time(
        engine: Engine, how: str) -> None:
    """`fire` behind another session's lock on the instance: exit 6 after the configured
    lock timeout (option or env), one line naming what it waited for, nothing written."""
    inst = start_khok(engine).id
    before = dump_tables(engine.url)
    args, env = (["--lock-timeout", "0.5"], None) if how == "option" else (
        [], {"WORKFLOW_LOCK_TIMEOUT": "0.5"})
    with held(engine.url, "row", inst):
        code, out, err, took = _cli(engine.url, *args, *_fire_args(inst), env=env)
    assert code == 6, (code, out, err)
    line = _one_error_line(err)
    assert out == ""
    assert "0.5 s" in line and "lock timeout" in line
    if engine.url.startswith("sqlite"):
        assert "locked by another writer" in line
    else:
        assert f"instance {inst} (locked by another session)" in line
    assert took < 10, took  # the interpreter's start-up plus 0.5 s, not forever
    assert dump_tables(engine.url) == before
    assert report_employment(engine, inst).instance.version == engine.get(inst).version


def test_verify_behind_a_table_lock_gives_up_in_bounded_time(engine: Engine) -> None:
    """`audit verify` behind LOCK TABLE ... ACCESS EXCLUSIVE (SQLite: a file locked
    exclusively): exit 6 after the lock timeout with one line naming the wait."""
    start_khok(engine)
    engine.store.dispose()  # SQLite: no connection of ours may hold the file open meanwhile
    with held(engine.url, "table"):
        code, out, err, took = _cli(engine.url, "audit", "verify",
                                    env={"WORKFLOW_LOCK_TIMEOUT": "0.5"})
    assert code == 6, (code, out, err)
    line = _one_error_line(err)
    assert "0.5 s" in line
    assert ("locked by another writer" if engine.url.startswith("sqlite")
            else "the workflow tables (locked by another session)") in line
    assert took < 10, took
    assert _cli(engine.url, "audit", "verify")[0] == 0


def test_lock_released_within_the_timeout_is_waited_for(engine: Engine) -> None:
    """A lock held for less than the lock timeout is waited out: the fire succeeds."""
    inst = start_khok(engine).id
    eng = Engine(engine.url, lock_timeout=15)
    eng.grant("malee", "coordinator")
    done = threading.Event()
    with held(engine.url, "row", inst):
        t = threading.Thread(target=lambda: (report_employment(eng, inst), done.set()),
                             daemon=True)
        t.start()
        assert not done.wait(0.3)
    t.join(WAIT)
    assert done.is_set()
    eng.close()


@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_statement_timeout_bounds_a_statement(engine: Engine) -> None:
    """With statement_timeout shorter than lock_timeout, a blocked fire is cancelled after
    it (DatabaseUnavailable naming the statement timeout), and nothing is written
    (PostgreSQL only: SQLite has no statement timeout)."""
    inst = start_khok(engine).id
    eng = Engine(engine.url, lock_timeout=20, statement_timeout=0.3)
    eng.grant("malee", "coordinator")
    before = dump_tables(engine.url)
    t0 = time.monotonic()
    with held(engine.url, "row", inst), pytest.raises(DatabaseUnavailable) as caught:
        report_employment(eng, inst)
    assert time.monotonic() - t0 < 5
    assert "0.3 s (statement timeout" in str(caught.value)
    assert dump_tables(engine.url) == before
    eng.close()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "abc", "100000"])
def test_bad_timeouts_are_usage_errors(engine: Engine, value: str) -> None:
    """A lock or statement timeout that is not a positive number of seconds: exit 2, one
    line; the same from the API and the environment."""
    for args, env in ((["--lock-timeout", value], None),
                      (["--statement-timeout", value], None),
                      ([], {"WORKFLOW_LOCK_TIMEOUT": value})):
        code, _out, err, _ = _cli(engine.url, *args, "list", env=env)
        assert code == 2, (args, env, code, err)
        _one_error_line(err)
    with pytest.raises(UsageError):
        Engine(engine.url, lock_timeout=float(value) if value != "abc" else value)  # type: ignore[arg-type]


def _wait_cli_blocked(url: str, proc: subprocess.Popen[str]) -> None:
    """Wait until a CLI process is inside its change: PostgreSQL shows its lock wait; on
    SQLite it has the database file open (it cannot get further while the lock is held)."""
    deadline = time.monotonic() + WAIT
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite") else None
    while proc.poll() is None:
        if path is None:
            if _lock_waits(url) > 0:
                return
        else:
            fds = Path(f"/proc/{proc.pid}/fd")
            with_file = False
            for fd in list(fds.iterdir()) if fds.exists() else []:
                with suppress(OSError):
                    with_file = with_file or os.readlink(fd) == path
            if with_file:
                return
        assert time.monotonic() < deadline, "the CLI neither waited nor finished"
        time.sleep(0.01)


@pytest.mark.parametrize("action", ["grant", "revoke"])
def test_cli_racing_an_identical_grant_or_revoke_exits_cleanly(
        engine: Engine, granted: int, sides: Callable[[], Side], action: str) -> None:
    """`workflow actors grant/revoke` racing the same change in another session: grant
    exit 0 (idempotent), revoke exit 3 with one "holds no grant" line; never exit 6 with a
    driver message; one event each."""
    first = sides()
    if action == "grant":
        first.engine.revoke(ACTOR, OFFICER, by="admin")  # so that the grant is new
        first.pause_after("insert_grant")
        first.go(_grant)
    else:
        first.pause_after("delete_grant")
        first.go(_revoke)
    assert first.reached.wait(WAIT)
    proc = subprocess.Popen([sys.executable, "-m", "workflow.cli.main", "--db", engine.url,
                             "actors", action, ACTOR, OFFICER],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_cli_blocked(engine.url, proc)
        first.release.set()
        first.join()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first.error is None
    trail = [t for t, _ in _grant_trail(engine)]
    if action == "grant":
        assert proc.returncode == 0, (out, err)
        assert err == ""
        assert trail == ["grant", "revoke", "grant"]
    else:
        assert proc.returncode == 3, (out, err)
        assert _one_error_line(err) and "holds no grant" in err
        assert trail == ["grant", "revoke"]
    assert engine.verify().ok
