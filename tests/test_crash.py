"""A process changing the database is killed with SIGKILL at random moments, many times.

A forked child fires in a loop (single fires, ``fire_many`` batches, ``start_many``) or runs
``init`` on an empty database, and appends one line to an acknowledgement file after each
change the engine returned from (that is, committed). The test kills it at a random moment,
then opens a fresh engine and checks: ``verify()`` passes, every instance's state is its last
event's, sequence numbers are contiguous, no batch or start transaction is half there, and
every acknowledged change is present (durability). After a killed ``init``, ``workflow init``
completes and ``workflow audit verify`` passes.

Children are forked from a fork server that has already imported workflow, so a kill cycle
costs a few tens of milliseconds. Counts grow with ``WORKFLOW_SOAK=1``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import start_khok
from reliability import (
    START_BATCH,
    START_CALL,
    assert_consistent,
    crash_child,
    read_acks,
    ready_path,
    record,
    run_cli,
    scaled,
)
from workflow import Engine

pytestmark = pytest.mark.slow

KILLS = scaled(15, 150)
#: How long a child may run before it is killed (seconds, uniform).
WINDOW = (0.02, 0.30)


@pytest.fixture(scope="module")
def fork() -> Any:
    """A fork server that has imported workflow (and the drivers) once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["helpers", "reliability", "workflow.engine.facade",
                                "workflow.cli.main",
                                "workflow.storage.migrations", "alembic.command", "psycopg",
                                "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql"])
    warm = ctx.Process(target=time.sleep, args=(0,))  # start the server (~1 s) once, here
    warm.start()
    warm.join(60)
    return ctx


def _kill_after(fork: Any, delay: float, *args: Any, ready: str | None = None,
                after_ack: bool = False) -> int | None:
    """Run crash_child(*args) in a forked child, SIGKILL it after ``delay`` seconds.

    With ``ready`` (the child's ready file) the delay counts from when the child is connected,
    not from the fork: on a loaded machine a PostgreSQL connect alone can outlast the window.
    With ``after_ack`` it counts from the child's first acknowledged change instead, so the
    cycle is sure to kill something that has committed before.
    """
    p = fork.Process(target=crash_child, args=args, daemon=True)
    p.start()
    wait_for = Path(args[3]) if after_ack else Path(ready) if ready else None
    deadline = time.monotonic() + 60
    while wait_for is not None and not (read_acks(wait_for) if after_ack else wait_for.exists()):
        assert time.monotonic() < deadline and p.is_alive(), "the child never got going"
        time.sleep(0.002)
    time.sleep(delay)
    p.kill()
    p.join(30)
    return p.exitcode


@pytest.fixture
def targets(engine: Engine) -> list[int]:
    """Four khok-nong-na instances whose employment region is underway (report_employment
    loops there, so every fire in any order is valid)."""
    return [start_khok(engine, area=a).id for a in ("160117", "160101", "160102", "160103")]


def _check_fires(trail: Any, acks: list[list[str]], cycle: int, tally: Counter[str]) -> None:
    """Single fires: each acknowledged fire is there; at most one more (committed, killed
    before its acknowledgement), and only the next one in the child's order."""
    by_note = {e["note"]: (iid, e["seq"]) for iid, evs in trail.events.items() for e in evs
               if e["note"] and e["note"].startswith(f"f:{cycle}:")}
    lost = [note for _, instance, seq, note in acks
            if by_note.get(note) != (int(instance), int(seq))]
    tally["lost"] += len(lost)
    assert not lost, f"acknowledged fires lost: {lost}"
    present = sorted(int(n.rsplit(":", 1)[1]) for n in by_note)
    assert present == list(range(1, len(present) + 1)), "a later fire without an earlier one"
    assert len(present) - len(acks) in (0, 1), (len(present), len(acks))
    tally["acknowledged"] += len(acks)
    tally["present"] += len(present)
    tally["committed_unacknowledged"] += len(present) - len(acks)


def _check_batches(trail: Any, acks: list[list[str]], cycle: int, tally: Counter[str]) -> None:
    """fire_many: every batch is all there or not at all; each acknowledged one is there."""
    counts = Counter(n for n in trail.notes.elements() if n.startswith(f"b:{cycle}:"))
    sizes = {}
    for note, count in counts.items():
        _, _, batch, size = note.split(":")
        assert count == int(size), f"half a batch: {note} has {count} of {size} events"
        sizes[int(batch)] = int(size)
    lost = [b for _, b, size in acks if sizes.get(int(b.split(":")[1])) != int(size)]
    tally["lost"] += len(lost)
    assert not lost, f"acknowledged batches lost: {lost}"
    assert sorted(sizes) == list(range(1, len(sizes) + 1)), "a later batch without an earlier"
    assert len(sizes) - len(acks) in (0, 1), (len(sizes), len(acks))
    tally["acknowledged_batches"] += len(acks)
    tally["acknowledged"] += sum(int(s) for _, _, s in acks)
    tally["present_batches"] += len(sizes)
    tally["present"] += sum(sizes.values())
    tally["committed_unacknowledged"] += len(sizes) - len(acks)


def _check_starts(trail: Any, acks: list[list[str]], cycle: int, tally: Counter[str]) -> None:
    """start_many: whole transactions of 4 starts, each acknowledged one there, each new
    instance with exactly its start event."""
    per_title = Counter(r["title"] for r in trail.instances.values()
                        if r["title"] and r["title"].startswith(f"s:{cycle}:"))
    for iid, row in trail.instances.items():
        if row["title"] in per_title:
            assert [e["trigger"] for e in trail.events[iid]] == ["start"], iid
    for title, count in per_title.items():
        assert count % START_BATCH == 0 and count <= START_CALL, f"half a transaction: {title}"
    acked: dict[str, int] = {}
    for _, title, done in acks:
        acked[title] = max(acked.get(title, 0), int(done))
    lost = {t: done - per_title.get(t, 0) for t, done in acked.items()
            if per_title.get(t, 0) < done}
    tally["lost"] += sum(lost.values())
    assert not lost, f"acknowledged starts lost: {lost}"
    extra = sum(per_title.values()) - sum(acked.values())
    assert 0 <= extra <= START_BATCH, extra
    tally["acknowledged"] += sum(acked.values())
    tally["present"] += sum(per_title.values())
    tally["committed_unacknowledged"] += extra


CHECKS = {"fire": _check_fires, "fire_many": _check_batches, "start_many": _check_starts}


@pytest.mark.parametrize("mode", sorted(CHECKS))
def test_sigkill_while_changing_leaves_a_consistent_durable_trail(
        engine: Engine, targets: list[int], fork: Any, mode: str, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """SIGKILL mid-change, many times: verify passes, nothing half-done, no acknowledged loss."""
    rng = random.Random(f"{request.node.nodeid}")
    tally: Counter[str] = Counter({"kills": 0, "acknowledged": 0, "present": 0, "lost": 0})
    t0 = time.monotonic()
    for cycle in range(1, KILLS + 1):
        ack = tmp_path / f"ack-{cycle}"
        # The last cycle makes sure at least one change committed before a kill in this run.
        code = _kill_after(fork, rng.uniform(*WINDOW), engine.url, mode, cycle, str(ack),
                           targets, rng.randrange(1 << 30), ready=ready_path(str(ack)),
                           after_ack=cycle == KILLS and tally["acknowledged"] == 0)
        assert code == -signal.SIGKILL, f"the child ended by itself (exit {code}) before the kill"
        tally["kills"] += 1
        trail = assert_consistent(engine.url)
        CHECKS[mode](trail, read_acks(ack), cycle, tally)
    tally["events_at_end"] = trail.event_count
    assert tally["acknowledged"] > 0, "no kill came late enough for a change to commit"
    record(request.node.nodeid, "crash", mode=mode, seconds=round(time.monotonic() - t0, 1),
           **tally)


# --------------------------------------------------------------------------- init


def _reset(url: str, db_kind: str) -> None:
    """Make the database empty again (no file for SQLite, an empty schema for PostgreSQL)."""
    if db_kind == "sqlite":
        path = Path(sa.engine.make_url(url).database or "")
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
    else:
        from conftest import empty_postgres

        empty_postgres(url)


def _revision(url: str) -> str:
    """What a killed init left: no database, no schema, or the revision recorded."""
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            if not sa.inspect(conn).has_table("workflow_alembic_version"):
                tables = [t for t in sa.inspect(conn).get_table_names()
                          if t.startswith("workflow_")]
                return "tables without revision" if tables else "empty"
            return str(conn.exec_driver_sql(
                "SELECT version_num FROM workflow_alembic_version").scalar())
    finally:
        eng.dispose()


def _cli(*args: str) -> tuple[int, str]:
    r = run_cli(None, list(args))
    return r.code, r.err


@pytest.fixture
def init_timing(backend: str, db_kind: str, fork: Any, tmp_path: Path
                ) -> Iterator[tuple[float, float]]:
    """When, after its start, a child begins and finishes init (to aim the kills at it)."""
    ack = tmp_path / "ack-calibrate"
    p = fork.Process(target=crash_child, args=(backend, "init", 0, str(ack), [], 0), daemon=True)
    t0 = time.monotonic()
    p.start()
    begun = 0.0
    while len(read_acks(ack)) < 2:
        assert time.monotonic() - t0 < 60 and p.is_alive(), "init did not finish"
        if not begun and read_acks(ack):
            begun = time.monotonic() - t0
        time.sleep(0.002)
    done = time.monotonic() - t0
    p.kill()
    p.join(30)
    _reset(backend, db_kind)
    yield begun, done


def test_sigkill_during_init_then_init_completes(
        backend: str, db_kind: str, fork: Any, tmp_path: Path, init_timing: tuple[float, float],
        request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL during init on an empty database: `workflow init` then completes, verify passes."""
    rng = random.Random(request.node.nodeid)
    left: Counter[str] = Counter()
    t0 = time.monotonic()
    kills = 0
    for cycle in range(1, KILLS + 1):
        _reset(backend, db_kind)
        ack = tmp_path / f"ack-{cycle}"
        begun, done = init_timing
        code = _kill_after(fork, rng.uniform(0.7 * begun, 1.1 * done), backend, "init",
                           cycle, str(ack), [], cycle)
        assert code == -signal.SIGKILL, code
        kills += 1
        phase = ["before init", "during init", "after init"][len(read_acks(ack))]
        state = _revision(backend) if (db_kind != "sqlite" or Path(
            sa.engine.make_url(backend).database or "").exists()) else "no file"
        left[f"{phase}: {state}"] += 1
        if phase == "after init":
            assert state not in ("empty", "no file"), "an acknowledged init was lost"
        code, err = _cli("--db", backend, "init")
        assert code == 0, err
        code, err = _cli("--db", backend, "audit", "verify")
        assert code == 0, err
        if cycle % 5 == 1:  # now and then, the engine works on the repaired schema
            with Engine(backend) as eng:
                eng.grant("u", "provincial_officer")
                eng.start("one-plan", area="16", fiscal_year=2564, actor="u",
                          role="provincial_officer")
            assert_consistent(backend)
    record(request.node.nodeid, "crash", mode="init", kills=kills,
           init_seconds=round(init_timing[1] - init_timing[0], 3),
           seconds=round(time.monotonic() - t0, 1), left=dict(left))
