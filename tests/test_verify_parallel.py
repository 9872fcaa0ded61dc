"""verify in worker processes (``jobs`` > 1) finds exactly what verify in one process finds.

The instances are split in instance-id ranges, one worker each; the grant, denial and account
chains, idempotency records, attachments and the digest stay with the coordinator. Whatever
an intruder changed, the answer (problems, their order, the counts) must not depend on
``jobs``, on either backend. No timings here: speed is benchmarks/reads.py's.
"""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from test_tamper import Trail, intruder, trail  # noqa: F401 (fixtures)
from workflow.audit import verify as _verify


def _both(t: Trail, digest: object = None) -> None:
    store = t.engine.store
    serial = _verify.verify(store, digest, jobs=1)  # type: ignore[arg-type]
    for jobs in (2, 3, 5):
        parallel = _verify.verify(store, digest, jobs=jobs)  # type: ignore[arg-type]
        assert parallel == serial, f"jobs={jobs}"
    assert _verify.verify(store, digest, jobs=3) == _verify.verify(store, digest, jobs=3)


def test_an_intact_trail_verifies_alike(trail: Trail) -> None:  # noqa: F811
    _both(trail)
    result = _verify.verify(trail.engine.store, None, jobs=3)
    assert result.ok and result.events_checked == 12 and result.instances_checked == 3


def test_a_tampered_trail_gives_the_same_problems_in_the_same_order(
    intruder: Trail,  # noqa: F811
    db_kind: str,
) -> None:
    t = intruder
    digest = t.engine.digest()
    # One change in every range (with jobs=3, one instance each), and more than one kind.
    t.sql("UPDATE workflow_events SET note = 'x' WHERE instance_id = :i AND seq = 2", i=t.leader)
    t.sql("DELETE FROM workflow_events WHERE instance_id = :i AND seq = 5", i=t.khok)
    t.sql("UPDATE workflow_instances SET title = 'forged' WHERE id = :i", i=t.short)
    # An idempotency record naming an event that never was.
    t.sql(
        "INSERT INTO workflow_idempotency (key, request_hash, instance_id, seq, created_at, "
        "event_hash) VALUES ('k-forged', 'r', :i, 99, '2024-01-01T00:00:00.000000Z', 'h')",
        i=t.short,
    )
    _both(t)
    _both(t, digest)
    result = _verify.verify(t.engine.store, digest, jobs=2)
    assert not result.ok
    assert {p.instance for p in result.problems} >= {t.leader, t.khok, t.short}


def test_events_of_no_instance_and_odd_ids_are_found_alike(
    intruder: Trail,  # noqa: F811
    db_kind: str,
) -> None:
    t = intruder
    # The leader's trail goes, its instance row stays: "instance has no events".
    t.sql("DELETE FROM workflow_events WHERE instance_id = :i", i=t.leader)
    if db_kind == "sqlite":  # the row goes too, the events stay: "belong to no instance"
        t.sql("DELETE FROM workflow_instances WHERE id = :i", i=t.short)
        # SQLite keeps text where an integer was: it sorts after every number, so the last
        # range (open above) must hold it, as the serial scan does.
        t.sql(
            "UPDATE workflow_events SET instance_id = 'x' || instance_id "
            "WHERE instance_id = :i AND seq = 1",
            i=t.khok,
        )
    _both(t)


def test_a_moment_the_workers_cannot_be_shown_to_share_falls_back_to_one_process(
    trail: Trail,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    db_kind: str,
) -> None:
    """SQLite: if the coordinator's instance heads differ from a worker's (a commit fell
    between their snapshots), the parallel answer is thrown away; after a few tries verify
    runs in one process, and answers the same."""
    serial = _verify.verify(trail.engine.store, None, jobs=1)
    calls = []

    def differs(ident: object, version: object, head: object) -> bytes:
        calls.append(ident)
        return b"not what the worker saw\n"

    monkeypatch.setattr(_verify, "_head_line", differs)  # in this process only
    assert _verify.verify(trail.engine.store, None, jobs=2) == serial
    if db_kind == "sqlite":
        assert calls  # compared, and found different


def test_text_that_is_not_utf8_in_a_workers_range_is_found_alike(
    intruder: Trail,  # noqa: F811
    db_kind: str,
) -> None:
    """A worker that meets SQLite TEXT that is not UTF-8 has verify read again leniently, as
    one process does, and both answer the same; PostgreSQL refuses to store such text at all,
    so there the trail stays whole and verifies alike."""
    t = intruder
    if db_kind == "postgres":
        with pytest.raises(sa.exc.DataError, match="UTF8"):
            t.sql(
                "UPDATE workflow_events SET note = convert_from('\\xff6e6f'::bytea, 'UTF8') "
                "WHERE instance_id = :i AND seq = 3",
                i=t.khok,
            )
        _both(t)
        assert _verify.verify(t.engine.store, None, jobs=3).ok
        return
    t.sql(
        "UPDATE workflow_events SET note = CAST(x'ff6e6f' AS TEXT) "
        "WHERE instance_id = :i AND seq = 3",
        i=t.khok,  # with jobs=2 or 3, a worker's range
    )
    _both(t)
    assert not _verify.verify(t.engine.store, None, jobs=3).ok


def test_a_worker_imports_neither_sqlalchemy_nor_the_engine() -> None:
    """A worker's program (workflow.audit.scan) reads through the bare driver: starting one
    does not import SQLAlchemy or the engine."""
    import subprocess
    import sys

    code = (
        "import sys; from workflow.audit.scan import worker_main; "
        "print(sorted(m for m in ('sqlalchemy', 'workflow.engine', 'workflow.storage.store') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@given(st.integers(min_value=2, max_value=16))
def test_the_ranges_cover_the_instances_and_shrink_at_the_end(processes: int) -> None:
    """The cuts of a parallel verify ascend inside (0, 1); the first ranges are equal and
    the last ones each no larger than the one before, down to a small share."""
    cuts = _verify._cuts(processes)
    assert all(0 < a < b < 1 for a, b in itertools.pairwise(cuts))
    sizes = [b - a for a, b in zip([0.0, *cuts], cuts, strict=False)]
    size = 1 / (processes * _verify.RANGES_PER_JOB)
    assert sizes[0] == pytest.approx(size)
    tail = sizes[len(sizes) // 2 :]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(tail))
    assert 1 - cuts[-1] < size / 4  # the last range is a fraction of an equal one
    assert len(cuts) < processes * _verify.RANGES_PER_JOB * 2


def test_instance_bounds_split_at_the_fractions_asked(trail: Trail) -> None:  # noqa: F811
    """Store.instance_bounds cuts the instances at the fractions asked, by id; cuts that
    would leave a range empty are dropped."""
    store = trail.engine.store
    with store.snapshot() as conn:
        ids = [r[0] for r in store.stream_heads(conn)]
        assert store.instance_bounds(conn, [0.34, 0.67]) == [ids[1], ids[2]]
        assert store.instance_bounds(conn, [0.01, 0.02]) == []  # position 0: nothing below
        assert store.instance_bounds(conn, []) == []


def test_replaying_events_keeps_no_new_objects_the_collector_tracks() -> None:
    """An instance's replay (verify runs it on every stored event) keeps what it needs in
    flat maps: replaying more events leaves no more objects for the cyclic garbage
    collector, which otherwise ran often enough to cost a fifth of verify's scan."""
    import gc

    from workflow.audit.evolution import Amendments

    def replay(n: int) -> int:
        a = Amendments()
        rows = [
            (seq, 1, seq, "step", f'["s{seq}"]', f'["s{seq + 1}"]', "a", "r", "u", "t",
             "{}", None, "d", "p", "h", f"hash{seq}", None, "wf3")
            for seq in range(1, n + 1)
        ]
        gc.collect()
        before = len(gc.get_objects())
        for row in rows:
            a.add(row)
        after = len(gc.get_objects())
        assert [s.seq for s in a.steps] == list(range(1, n + 1))
        return after - before

    assert replay(2000) == replay(10)


def test_a_pass_that_fails_before_its_scan_leaves_the_workers_in_step(
    trail: Trail,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers' answers to a pass's start are read when its scan begins; when the
    pass fails before that (here: text that is not UTF-8 met in the grant chain, so verify
    reads again leniently), the next pass on the same workers reads them first and answers
    as one process does."""
    serial = _verify.verify(trail.engine.store, None, jobs=1)
    real = _verify._verify_grants
    calls: list[bool] = []

    def once_undecodable(*args: object, **kwargs: object) -> object:
        calls.append(True)
        if len(calls) == 1:
            raise _verify._Undecodable()
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_verify, "_verify_grants", once_undecodable)
    assert _verify.verify(trail.engine.store, None, jobs=3) == serial
    assert len(calls) == 2
