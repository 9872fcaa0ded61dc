"""A trail written across hash formats: wf1 and wf2 events (before revision 0011) and wf3 ones.

Old events keep their encodings; new ones are wf3 and say so in ``hash_format``. A database
mixing them verifies, in one process or several, on every backend; relabelling an event's
format (a downgrade to wf1/wf2 or an upgrade to wf3) is caught as an altered event.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import (
    leader_fire,
    leader_to,
    lopburi_story,
    report_employment,
    sql_engine,
    start_khok,
)
from test_tamper import Trail, first_problem
from workflow import Engine
from workflow.audit import chain as audit
from workflow.audit import verify as _verify


@pytest.fixture
def mixed(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trail]:
    """Three instances: the leader's chain is wf1, wf2, then wf3 events; khok-nong-na's is
    wf1 then wf3 (with an auth); the short one is wf1 only. Triggers dropped (an intruder)."""
    with monkeypatch.context() as m:
        m.setattr(audit, "EVENT_FORMAT", None)  # what workflow wrote before 0011
        leader, _ = lopburi_story(engine)
        leader_to(engine, leader.id, ["workshop"])
        with_auth = leader_fire(engine, leader.id, "report_progress", auth="token:7")
        assert with_auth.event.auth == "token:7"
        khok = start_khok(engine)
        short, _ = lopburi_story(engine, area="160101")
    leader_to(engine, leader.id, ["report_progress"])
    report_employment(engine, khok.id, auth="session:0123456789ab")
    report_employment(engine, khok.id, workers=7)
    db = sql_engine(engine.url)
    t = Trail(engine, db, leader.id, khok.id, short.id)
    ddl = t.drop_triggers()
    try:
        yield t
    finally:
        for statement in ddl:
            t.sql(statement)
        db.dispose()


def _formats(t: Trail, instance: int) -> list[tuple[str | None, bool]]:
    return [(e["hash_format"], e["auth"] is not None) for e in t.events(instance)]


def test_a_trail_mixing_wf1_wf2_and_wf3_events_verifies(mixed: Trail) -> None:
    """wf1, wf2 and wf3 events, in one chain and across instances, verify serially and in
    parallel, and the new events are stored as wf3."""
    t = mixed
    assert _formats(t, t.leader) == [
        (None, False), (None, False), (None, False), (None, True), ("wf3", False),
    ]
    assert _formats(t, t.khok)[-2:] == [("wf3", True), ("wf3", False)]
    assert {f for f, _ in _formats(t, t.short)} == {None}
    serial = _verify.verify(t.engine.store, None, jobs=1)
    assert serial.ok, serial.problems
    assert serial.events_checked == sum(len(t.events(i)) for i in (t.leader, t.khok, t.short))
    for jobs in (2, 3):
        assert _verify.verify(t.engine.store, None, jobs=jobs) == serial


@pytest.mark.parametrize(
    "seq,relabel",
    [
        (5, None),  # wf3 -> NULL: a downgrade to wf1 (no auth)
        (5, "wf1"),  # an explicit label no stored event carries
        (4, "wf3"),  # wf2 -> wf3: an upgrade
        (2, "wf3"),  # wf1 -> wf3
        (5, "wf4"),
    ],
)
def test_relabelling_an_events_format_is_caught(mixed: Trail, seq: int,
                                                relabel: str | None) -> None:
    """A downgrade (wf3 -> wf1/wf2) or an upgrade (wf1/wf2 -> wf3) of an event's stored
    format, or a format no workflow wrote, is reported at that event, in every process count."""
    t = mixed
    t.sql("UPDATE workflow_events SET hash_format = :f WHERE instance_id = :i AND seq = :s",
          f=relabel, i=t.leader, s=seq)
    result = _verify.verify(t.engine.store, None, jobs=1)
    assert first_problem(result) == (t.leader, seq)
    assert _verify.verify(t.engine.store, None, jobs=2) == result


def test_a_downgrade_with_the_auth_dropped_is_caught(mixed: Trail) -> None:
    """A wf3 event with an auth relabelled NULL and its auth blanked (so that it would read
    as wf1) does not verify: its hash covers the tag and the auth."""
    t = mixed
    t.sql("UPDATE workflow_events SET hash_format = NULL, auth = NULL "
          "WHERE instance_id = :i AND seq = 4", i=t.khok)
    assert first_problem(_verify.verify(t.engine.store, None, jobs=1)) == (t.khok, 4)


def test_parallel_verify_equals_serial_on_a_tampered_mixed_trail(mixed: Trail) -> None:
    """With one change in each instance (a wf1 event altered, a wf3 event relabelled, a wf3
    event's auth changed), verify in 2 and 3 processes reports exactly what verify in one
    process does, starting with the same first problem."""
    t = mixed
    t.sql("UPDATE workflow_events SET note = 'x' WHERE instance_id = :i AND seq = 2", i=t.short)
    t.sql("UPDATE workflow_events SET hash_format = NULL WHERE instance_id = :i AND seq = 5",
          i=t.leader)
    t.sql("UPDATE workflow_events SET auth = 'token:8' WHERE instance_id = :i AND seq = 4",
          i=t.khok)
    serial = _verify.verify(t.engine.store, None, jobs=1)
    assert {(p.instance, p.seq) for p in serial.problems} == {
        (t.leader, 5), (t.khok, 4), (t.short, 2),
    }
    for jobs in (2, 3):
        parallel = _verify.verify(t.engine.store, None, jobs=jobs)
        assert parallel == serial, jobs
        assert parallel.problems[0] == serial.problems[0]
