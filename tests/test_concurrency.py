"""Several real processes changing one database at once, on every backend.

Four ``spawn``-ed processes fire ``report_employment`` (which loops on
``activities.employment.underway``, so every fire is valid whatever the order) at one instance
and at many; others race to start the same program for the same area and year. Afterwards the
trail must add up: one event per success, contiguous sequence numbers, each instance at the
version of its last event, a chain that verifies, and nothing but WorkflowErrors raised.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.pool import Pool

import pytest

from helpers import fire_worker, is_workflow_error, start_khok, start_worker, warm_up
from workflow import DuplicateInstance, Engine

PROCESSES = 4
FIRES = 25


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    """A pool of spawned processes, started once for the module (spawning costs ~1 s)."""
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as p:
        p.map(warm_up, [0.3] * PROCESSES, chunksize=1)
        yield p


def _race(pool: Pool, fn: object, args: list[tuple[object, ...]]) -> list[object]:
    """Run ``fn`` once per args tuple, all released at the same moment; bounded in time."""
    start_at = time.time() + 0.3
    result = pool.starmap_async(fn, [(*a, start_at) for a in args], chunksize=1)  # type: ignore[arg-type]
    return result.get(timeout=60)


def _check_trail(engine: Engine, instance_ids: list[int], before: dict[int, int],
                 successes: list[tuple[int, int]]) -> None:
    added = Counter(i for i, _ in successes)
    assert len(set(successes)) == len(successes), "two fires reported the same (instance, seq)"
    for i in instance_ids:
        history = engine.history(i)
        assert [e.seq for e in history] == list(range(1, len(history) + 1)), i
        assert len(history) - before[i] == added[i], i
        assert engine.get(i).version == history[-1].seq
        new = {(i, e.seq) for e in history[before[i]:]}
        assert new == {s for s in successes if s[0] == i}
        for prev, nxt in itertools.pairwise(history):
            assert nxt.prev_hash == prev.hash
    result = engine.verify()
    assert result.ok, result.problems


def test_concurrent_fires_at_one_instance(engine: Engine, pool: Pool) -> None:
    """4 processes x 25 fires at one instance: every fire lands once, the chain holds."""
    inst = start_khok(engine)
    before = {inst.id: len(engine.history(inst.id))}
    results = _race(pool, fire_worker,
                    [(engine.url, [inst.id], FIRES, seed) for seed in range(PROCESSES)])
    successes = [s for ok, _ in results for s in ok]
    errors = [e for _, errs in results for e in errs]
    assert all(is_workflow_error(e) for e in errors), Counter(errors)
    _check_trail(engine, [inst.id], before, successes)
    # Nothing else can refuse a report_employment: every attempt must have succeeded.
    assert errors == [], Counter(errors)
    assert len(successes) == PROCESSES * FIRES
    assert engine.get(inst.id).version == before[inst.id] + PROCESSES * FIRES


def test_concurrent_fires_at_many_instances(engine: Engine, pool: Pool) -> None:
    """4 processes x 25 fires spread over 6 instances: per-instance chains stay contiguous."""
    areas = ["160117", "160101", "160102", "160103", "1601", "16"]
    ids = [start_khok(engine, area=a).id for a in areas]
    before = {i: len(engine.history(i)) for i in ids}
    results = _race(pool, fire_worker,
                    [(engine.url, ids, FIRES, seed) for seed in range(PROCESSES)])
    successes = [s for ok, _ in results for s in ok]
    errors = [e for _, errs in results for e in errs]
    assert all(is_workflow_error(e) for e in errors), Counter(errors)
    _check_trail(engine, ids, before, successes)
    assert errors == [], Counter(errors)
    assert len(successes) == PROCESSES * FIRES


def test_concurrent_duplicate_starts(engine: Engine, pool: Pool) -> None:
    """Processes racing to start one program/area/year: exactly one wins, the rest are
    refused as DuplicateInstance."""
    areas = ["160117", "160101", "160102", "160103", "160104", "160105"]
    results = _race(pool, start_worker, [(engine.url, areas, seed) for seed in range(PROCESSES)])
    outcomes = [o for per_worker in results for o in per_worker]
    errors = [e for _, _, e in outcomes if e is not None]
    assert all(is_workflow_error(e) for e in errors), Counter(errors)
    for area in areas:
        mine = [(i, e) for a, i, e in outcomes if a == area]
        winners = [i for i, e in mine if e is None]
        assert len(winners) == 1, (area, mine)
        assert sorted(e for _, e in mine if e is not None) == ["DuplicateInstance"] * (
            PROCESSES - 1), (area, mine)
        listed = engine.list(program="khok-nong-na", area=area)
        assert [x.id for x in listed] == winners
    assert engine.verify().ok


def test_start_losing_the_duplicate_race_is_duplicate_instance(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start whose duplicate check ran before the winner committed (so its insert hits the
    unique index) is refused as DuplicateInstance, like any other duplicate."""
    winner = start_khok(engine, enroll=False)
    real = engine.store.find_duplicate
    calls: list[int] = []

    def stale_once(*args: object, **kwargs: object) -> tuple[int | None, int]:
        calls.append(1)
        if len(calls) == 1:
            return None, 0  # what a loser saw just before the winner committed
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.store, "find_duplicate", stale_once)
    with pytest.raises(DuplicateInstance) as caught:
        start_khok(engine, enroll=False)
    assert caught.value.existing == winner.id
    assert [i.id for i in engine.list()] == [winner.id]


# --------------------------------------------------------------------------- reliability (issue 6)

import os  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from helpers import dump_tables, lopburi_story, report_employment  # noqa: E402
from reliability import (  # noqa: E402
    HOLD_LOCK,
    SOAK,
    assert_consistent,
    host_worker,
    record,
    scaled,
    stage_worker,
)
from workflow import DatabaseUnavailable  # noqa: E402
from workflow.cli.main import main  # noqa: E402
from workflow.storage.store import Store  # noqa: E402

HOST_THREADS = 2
HOST_ROUNDS = scaled(15, 250)
HOST_BATCH = 4


@pytest.mark.slow
def test_two_hosts_batches_and_single_fires(engine: Engine, pool: Pool,
                                            request: pytest.FixtureRequest) -> None:
    """Two hosts (processes x 2 threads): fire_many batches vs single fires; trail adds up."""
    areas = ["160117", "160101", "160102", "160103", "160104", "160105", "160106"]
    ids = [start_khok(engine, area=a).id for a in areas]
    shared, own_a, own_b = ids[:3], ids[3:5], ids[5:]
    before = {i: len(engine.history(i)) for i in ids}
    t0 = time.monotonic()
    results = _race(pool, host_worker, [
        (engine.url, "A", shared, own_a, HOST_THREADS, HOST_ROUNDS, HOST_BATCH, 1),
        (engine.url, "B", shared, own_b, HOST_THREADS, HOST_ROUNDS, 1, 2),
    ])
    successes = [s for ok, _, _ in results for s in ok]
    errors = [e for _, errs, _ in results for e in errs]
    batches = {note: n for _, _, b in results for note, n in b.items()}
    assert all(is_workflow_error(e) for e in errors), Counter(errors)
    assert errors == [], Counter(errors)
    _check_trail(engine, ids, before, successes)
    # Host B never touched its neighbour's own instances, nor host A host B's.
    touched = {i for i, _ in successes}
    assert touched <= set(ids)
    # fire_many is all-or-nothing: each committed batch's note is on exactly its events.
    trail = assert_consistent(engine.url)
    assert dict(trail.notes) == batches
    assert sum(batches.values()) == len(successes) == HOST_THREADS * HOST_ROUNDS * (
        HOST_BATCH + 1)
    record(request.node.nodeid, "concurrency", processes=2, threads=2 * HOST_THREADS,
           fires=len(successes), batches=sum(1 for n in batches if n.startswith("A:")),
           seconds=round(time.monotonic() - t0, 1))


def _hold_write_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process takes SQLite's write lock (raw sqlite3, BEGIN IMMEDIATE) and holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.fixture
def sqlite_khok(tmp_path: Path) -> Iterator[tuple[Engine, int]]:
    """An engine on a SQLite file with one khok-nong-na instance ready for report_employment."""
    from helpers import open_engine

    with open_engine(f"sqlite:///{tmp_path / 'w.db'}") as eng:
        eng.init()
        yield eng, start_khok(eng).id


@pytest.mark.slow
def test_sqlite_write_lock_held_by_another_process_is_waited_for(
        sqlite_khok: tuple[Engine, int], tmp_path: Path) -> None:
    """Raw BEGIN IMMEDIATE held ~1 s elsewhere: reads go on; fire/fire_many/start wait, succeed."""
    eng, inst = sqlite_khok
    for change in (
        lambda: report_employment(eng, inst),
        lambda: eng.fire_many([{"instance": inst, "trigger": "report_employment",
                                "actor": "malee", "role": "coordinator",
                                "evidence": {"date": "2564-03-01", "workers": w}}
                               for w in range(3)]),
        lambda: start_khok(eng, area="160101", enroll=False),
    ):
        holder = _hold_write_lock(tmp_path / "w.db", 1.0)
        try:
            t0 = time.monotonic()
            assert eng.get(inst).version >= 3  # a reader does not wait for the writer
            assert time.monotonic() - t0 < 0.5
            change()
            waited = time.monotonic() - t0
        finally:
            holder.wait(10)
        assert waited >= 0.8, "the change did not wait for the lock"
    assert_consistent(eng.url)


@pytest.mark.slow
@pytest.mark.parametrize("via", ["api", "cli"])
def test_sqlite_write_lock_held_too_long_is_exit_6(
        sqlite_khok: tuple[Engine, int], tmp_path: Path, via: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A write lock held past the retry deadline: exit 6 naming the lock, nothing written."""
    eng, inst = sqlite_khok
    if not SOAK:  # the soak waits out the real 30 s; CI shortens the retry deadline to 1 s
        defaults = dict(Store.run.__kwdefaults__ or {})
        assert "timeout" in defaults
        monkeypatch.setattr(Store.run, "__kwdefaults__", {**defaults, "timeout": 1.0})
    hold = 3.0 if not SOAK else 40.0
    before = dump_tables(eng.url)
    holder = _hold_write_lock(tmp_path / "w.db", hold)
    try:
        if via == "api":
            with pytest.raises(DatabaseUnavailable) as caught:
                report_employment(eng, inst)
            assert caught.value.exit_code == 6
            assert "locked" in str(caught.value)
            assert not isinstance(caught.value.__cause__, DatabaseUnavailable)
        else:
            with pytest.raises(SystemExit) as exited:
                main(["--db", eng.url, "fire", str(inst), "report_employment", "--actor",
                      "malee", "--role", "coordinator", "--set", "date=2564-03-01",
                      "--set", "workers=3"])
            assert exited.value.code == 6
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("workflow: error: ") and "locked" in err
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(10)
    assert dump_tables(eng.url) == before
    report_employment(eng, inst)
    assert_consistent(eng.url)


def test_sqlite_lock_holder_killed_mid_transaction(sqlite_khok: tuple[Engine, int],
                                                   tmp_path: Path) -> None:
    """A raw writer SIGKILLed mid-transaction leaves nothing; the engine's next fire works."""
    eng, inst = sqlite_khok
    db = tmp_path / "w.db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE')\n"
         "c.execute(\"UPDATE workflow_instances SET state = 'forged', version = version + 7\")\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n", str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    before = eng.get(inst).version
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    assert report_employment(eng, inst).instance.version == before + 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM workflow_instances WHERE state = 'forged'"
                            ).fetchone() == (0,)
    assert_consistent(eng.url)


def test_racing_for_the_same_stage_one_wins(engine: Engine, pool: Pool,
                                            request: pytest.FixtureRequest) -> None:
    """Processes racing for the same next stage: one wins each, the rest TriggerNotAllowed."""
    inst, _ = lopburi_story(engine)
    races = [
        [("workshop",)] * PROCESSES,
        [("report_progress",)] * PROCESSES,  # loops on implementing: every one succeeds
        [("evaluate",)] * PROCESSES,
        [("summarize",)] * PROCESSES,
        [("close",), ("cancel",)] * (PROCESSES // 2),  # two ways out of summarized
    ]
    tried = 0
    for race in races:
        version = engine.get(inst.id).version
        outcomes = _race(pool, stage_worker, [(engine.url, inst.id, t) for (t,) in race])
        tried += len(race)
        wins = [o for o in outcomes if o[1] is None]
        refused = [o[1] for o in outcomes if o[1] is not None]
        expected = len(race) if race[0][0] == "report_progress" else 1
        assert len(wins) == expected, outcomes
        assert set(refused) <= {"TriggerNotAllowed"}, outcomes
        assert engine.get(inst.id).version == version + expected
    assert engine.get(inst.id).state in ("closed", "cancelled")
    triggers = [e.trigger for e in engine.history(inst.id)]
    assert all(triggers.count(t) == 1 for t in ("workshop", "evaluate", "summarize"))
    assert_consistent(engine.url)
    record(request.node.nodeid, "concurrency", processes=PROCESSES, fires=tried,
           stages=len(races))
