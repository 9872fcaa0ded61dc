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
