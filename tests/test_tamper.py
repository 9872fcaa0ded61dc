"""An intruder with SQL access edits the trail directly; verify() must notice, on every backend.

The intruder first drops the append-only triggers (after we check that they do refuse UPDATE
and DELETE), then changes rows. Every change must make ``verify()`` fail with its first problem
naming the right instance (and event, where there is one). Changes that leave every chain
consistent (removing the newest events, or whole instances, or rewriting a chain from some
point on) can only be caught against a digest taken before: ``verify(digest)`` must.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import leader_to, lopburi_story, report_employment, sql_engine, start_khok
from workflow import Engine, VerifyResult
from workflow.audit.chain import row_hash

APPEND_ONLY = ("workflow_events", "workflow_grant_events", "workflow_denials")


@dataclass
class Trail:
    """A small trail: two leader-development instances and one khok-nong-na."""

    engine: Engine
    db: sa.Engine
    leader: int  # 5 events
    khok: int  # 5 events
    short: int  # 2 events

    def sql(self, statement: str, **params: Any) -> None:
        with self.db.begin() as conn:
            conn.execute(sa.text(statement), params)

    def events(self, instance: int) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM workflow_events WHERE instance_id = :i "
                                        "ORDER BY seq"), {"i": instance}).mappings().all()
        return [dict(r) for r in rows]

    def instance(self, instance: int) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM workflow_instances WHERE id = :i"),
                               {"i": instance}).mappings().one()
        return dict(row)

    def drop_triggers(self) -> list[str]:
        """Drop the events' append-only triggers; return the DDL that re-creates them."""
        with self.db.connect() as conn:
            if self.db.dialect.name == "postgresql":
                ddl = [r[0] for r in conn.exec_driver_sql(
                    "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                    "WHERE tgname = 'workflow_events_append_only'")]
            else:
                ddl = [r[0] for r in conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
                    "('workflow_events_no_update', 'workflow_events_no_delete')")]
        if self.db.dialect.name == "postgresql":
            self.sql("DROP TRIGGER workflow_events_append_only ON workflow_events")
        else:
            self.sql("DROP TRIGGER workflow_events_no_update")
            self.sql("DROP TRIGGER workflow_events_no_delete")
        return ddl


@pytest.fixture
def trail(engine: Engine) -> Iterator[Trail]:
    leader, _ = lopburi_story(engine)
    leader_to(engine, leader.id, ["workshop", "report_progress", "report_progress"])
    khok = start_khok(engine)
    report_employment(engine, khok.id)
    report_employment(engine, khok.id, workers=7)
    short, _ = lopburi_story(engine, area="160101")
    db = sql_engine(engine.url)
    t = Trail(engine, db, leader.id, khok.id, short.id)
    assert [len(t.events(i)) for i in (t.leader, t.khok, t.short)] == [5, 5, 2]
    assert engine.verify().ok
    try:
        yield t
    finally:
        db.dispose()


@pytest.fixture
def intruder(trail: Trail) -> Iterator[Trail]:
    """The trail, with the append-only triggers dropped."""
    ddl = trail.drop_triggers()
    assert len(ddl) == (1 if trail.db.dialect.name == "postgresql" else 2)
    yield trail
    # Put them back, so that the next test can reuse the schema instead of re-creating it.
    for statement in ddl:
        trail.sql(statement)


def first_problem(result: VerifyResult) -> tuple[int | None, int | None]:
    assert not result.ok, "verify() did not notice the change"
    assert result.problems
    p = result.problems[0]
    assert p.reason
    return p.instance, p.seq


# --------------------------------------------------------------------------- the triggers


@pytest.mark.parametrize("statement", [
    "UPDATE {table} SET {column} = {column}",
    "DELETE FROM {table}",
    "TRUNCATE {table} CASCADE",
])
def test_append_only_triggers_refuse_update_and_delete(trail: Trail, statement: str) -> None:
    """Before an intruder drops them, the triggers refuse UPDATE, DELETE and (PostgreSQL,
    which has it) TRUNCATE on the trails."""
    if statement.startswith("TRUNCATE") and trail.db.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE (DELETE is its only way to empty a table)")
    names = set(sa.inspect(trail.db).get_table_names())
    for table in APPEND_ONLY:
        if table not in names:
            continue
        column = "seq" if table == "workflow_grant_events" else "id"
        if table != "workflow_events":  # make sure there is a row to refuse
            with trail.db.connect() as conn:
                if not conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar():
                    continue
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            trail.sql(statement.format(table=table, column=column))
    assert trail.engine.verify().ok
    assert len(trail.events(trail.leader)) == 5


# --------------------------------------------------------------------------- events


HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00",
                                      exclude_categories=("Cs",)), max_size=40)
EVENT_COLUMNS: dict[str, st.SearchStrategy[Any]] = {
    "trigger": TEXT.filter(bool),
    "from_state": st.none() | TEXT,
    "to_state": TEXT,
    "actor": TEXT,
    "role": TEXT,
    "os_user": TEXT,
    "at": st.text(alphabet="0123456789-:TZ.", max_size=32),
    "evidence": TEXT | st.dictionaries(st.sampled_from(["date", "venue", "x"]), TEXT,
                                       max_size=2).map(json.dumps),
    "note": st.none() | TEXT,
    "definition_hash": HEX,
    "policy": TEXT,
    "prev_hash": HEX,
    "hash": HEX,
}


def test_altering_any_event_column_is_detected(intruder: Trail, db_kind: str) -> None:
    """Changing any hashed column of any event breaks that instance's chain at that event."""
    t = intruder
    events = {i: t.events(i) for i in (t.leader, t.khok, t.short)}
    targets = [(i, e["seq"]) for i, evs in events.items() for e in evs]

    @settings(max_examples=100 if db_kind == "sqlite" else 40, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(target=st.sampled_from(targets), data=st.data())
    def check(target: tuple[int, int], data: st.DataObject) -> None:
        instance, seq = target
        column = data.draw(st.sampled_from(sorted(EVENT_COLUMNS)), label="column")
        old = events[instance][seq - 1][column]
        new = data.draw(EVENT_COLUMNS[column].filter(lambda v: v != old), label="new value")
        where = "WHERE instance_id = :i AND seq = :s"
        t.sql(f"UPDATE workflow_events SET {column} = :v {where}", v=new, i=instance, s=seq)
        try:
            assert first_problem(t.engine.verify()) == (instance, seq)
        finally:
            t.sql(f"UPDATE workflow_events SET {column} = :v {where}", v=old, i=instance, s=seq)
        assert t.engine.verify().ok  # restored for the next example

    check()


def test_moving_an_event_to_another_instance_is_detected(intruder: Trail) -> None:
    """An event moved to another instance breaks both chains; the first named is one of them."""
    t = intruder
    t.sql("UPDATE workflow_events SET instance_id = :to WHERE instance_id = :i AND seq = 3",
          to=t.short, i=t.leader)
    result = t.engine.verify()
    named = {p.instance for p in result.problems}
    assert first_problem(result)[0] == min(t.leader, t.short)
    assert {t.leader, t.short} <= named


def test_changing_an_event_seq_is_detected(intruder: Trail) -> None:
    """Renumbering an event leaves a gap the chain notices."""
    t = intruder
    t.sql("UPDATE workflow_events SET seq = 42 WHERE instance_id = :i AND seq = 2", i=t.khok)
    assert first_problem(t.engine.verify()) == (t.khok, 3)


@pytest.mark.parametrize("seq", [1, 3, 5])
def test_deleting_an_event_is_detected(intruder: Trail, seq: int) -> None:
    """Deleting the first, a middle or the last event of an instance is detected."""
    t = intruder
    t.sql("DELETE FROM workflow_events WHERE instance_id = :i AND seq = :s", i=t.leader, s=seq)
    instance, at = first_problem(t.engine.verify())
    assert instance == t.leader
    assert at == {1: 2, 3: 4, 5: 4}[seq]


def test_swapping_two_events_is_detected(intruder: Trail) -> None:
    """Swapping the seq of two events breaks the chain where the first of them now stands."""
    t = intruder
    swap = "UPDATE workflow_events SET seq = :to WHERE instance_id = :i AND seq = :s"
    t.sql(swap, to=99, i=t.leader, s=2)
    t.sql(swap, to=2, i=t.leader, s=3)
    t.sql(swap, to=3, i=t.leader, s=99)
    assert first_problem(t.engine.verify()) == (t.leader, 2)


def _forge(t: Trail, instance: int, seq: int, prev_hash: str, **changes: Any) -> dict[str, Any]:
    """A copy of the instance's last event as event ``seq``, hashed as the engine would."""
    row = {**t.events(instance)[-1], "seq": seq, "prev_hash": prev_hash,
           "note": "forged", **changes}
    row.pop("id")
    row["hash"] = row_hash(SimpleNamespace(**row))
    return row


def _insert(t: Trail, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    values = ", ".join(f":{c}" for c in row)
    t.sql(f"INSERT INTO workflow_events ({columns}) VALUES ({values})", **row)


@pytest.mark.parametrize("hashed", [True, False], ids=["valid-hash", "bogus-hash"])
def test_appending_a_forged_event_is_detected(intruder: Trail, hashed: bool) -> None:
    """A forged newest event is detected: by its hash, or else by the instance row."""
    t = intruder
    head = t.events(t.leader)[-1]["hash"]
    row = _forge(t, t.leader, 6, head)
    if not hashed:
        row["hash"] = "f" * 64
    _insert(t, row)
    assert first_problem(t.engine.verify()) == (t.leader, 6)


def test_inserting_a_forged_event_in_the_middle_is_detected(intruder: Trail) -> None:
    """An event slipped in between two others (later ones renumbered) breaks the chain."""
    t = intruder
    t.sql("UPDATE workflow_events SET seq = seq + 100 WHERE instance_id = :i AND seq >= 3",
          i=t.leader)
    t.sql("UPDATE workflow_events SET seq = seq - 99 WHERE instance_id = :i AND seq > 100",
          i=t.leader)
    prev = t.events(t.leader)[1]["hash"]
    _insert(t, _forge(t, t.leader, 3, prev))
    assert first_problem(t.engine.verify()) == (t.leader, 4)


# --------------------------------------------------------------------------- instances


INSTANCE_CHANGES: dict[str, Any] = {
    "state": "closed",
    "active": '["closed"]',
    "version": 6,
    "area_code": "160102",
    "province_code": "31",
    "fiscal_year": 2565,
    "title": "forged",
    "head_hash": "0" * 64,
    "program_version": 9,
    "duplicate_no": 1,
    "created_at": "2021-02-17T00:00:00.000000Z",
    "updated_at": "2021-02-17T00:00:00.000000Z",
}


@pytest.mark.parametrize("column", sorted(INSTANCE_CHANGES))
def test_altering_an_instance_row_is_detected(intruder: Trail, column: str) -> None:
    """The instance row must agree with its start event and its last event."""
    t = intruder
    t.sql(f"UPDATE workflow_instances SET {column} = :v WHERE id = :i",
          v=INSTANCE_CHANGES[column], i=t.leader)
    instance, seq = first_problem(t.engine.verify())
    assert instance == t.leader
    assert seq in (0, 5)


def test_pointing_an_instance_at_another_definition_is_detected(intruder: Trail) -> None:
    """An instance switched to another stored definition no longer matches its events."""
    t = intruder
    other = t.instance(t.khok)["definition_id"]
    t.sql("UPDATE workflow_instances SET definition_id = :d WHERE id = :i", d=other, i=t.leader)
    assert first_problem(t.engine.verify())[0] == t.leader


# --------------------------------------------------------------------------- only a digest


def test_truncating_the_newest_event_needs_a_digest(intruder: Trail) -> None:
    """Removing the newest event and rolling the instance back leaves a consistent chain;
    verify(digest) taken before names the instance and the missing event."""
    t = intruder
    digest = t.engine.digest()
    events = t.events(t.leader)
    last, prev = events[-1], events[-2]
    t.sql("DELETE FROM workflow_events WHERE id = :e", e=last["id"])
    t.sql("UPDATE workflow_instances SET version = :v, head_hash = :h, active = :a, state = :s, "
          "updated_at = :u WHERE id = :i", v=prev["seq"], h=prev["hash"], a=prev["to_state"],
          s=json.loads(prev["to_state"])[0].split(".")[0], u=prev["at"], i=t.leader)
    assert t.engine.verify().ok  # consistent: nothing but the digest can tell
    assert first_problem(t.engine.verify(digest)) == (t.leader, last["seq"])
    assert first_problem(t.engine.verify(json.loads(json.dumps(digest.to_dict())))) == (
        t.leader, last["seq"])


def test_rewriting_a_chain_needs_a_digest(intruder: Trail) -> None:
    """Rewriting an event and re-hashing every later one keeps the chain consistent;
    verify(digest) taken before still names the instance."""
    t = intruder
    digest = t.engine.digest()
    prev = None
    for e in t.events(t.leader):
        if e["seq"] >= 2:
            if e["seq"] == 3:
                e["evidence"] = e["evidence"].replace("25", "250")
            e["prev_hash"] = prev
            e["hash"] = row_hash(SimpleNamespace(**e))
            t.sql("UPDATE workflow_events SET evidence = :ev, prev_hash = :p, hash = :h "
                  "WHERE id = :id", ev=e["evidence"], p=e["prev_hash"], h=e["hash"], id=e["id"])
        prev = e["hash"]
    t.sql("UPDATE workflow_instances SET head_hash = :h WHERE id = :i", h=prev, i=t.leader)
    assert t.engine.verify().ok
    assert first_problem(t.engine.verify(digest)) == (t.leader, 5)


def test_deleting_a_whole_instance_needs_a_digest(intruder: Trail) -> None:
    """An instance removed with all its events is only missed by verify(digest)."""
    t = intruder
    digest = t.engine.digest()
    t.sql("DELETE FROM workflow_idempotency WHERE instance_id = :i", i=t.khok)
    t.sql("DELETE FROM workflow_events WHERE instance_id = :i", i=t.khok)
    t.sql("DELETE FROM workflow_instances WHERE id = :i", i=t.khok)
    assert t.engine.verify().ok
    assert first_problem(t.engine.verify(digest)) == (t.khok, 5)


def test_deleting_an_instance_row_but_not_its_events_is_detected(intruder: Trail) -> None:
    """Events whose instance row is gone are reported under that instance."""
    t = intruder
    if t.db.dialect.name == "postgresql":
        t.sql("ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_instance_id_fkey")
    # (SQLite enforces foreign keys only where a connection turns them on, as workflow does.)
    t.sql("DELETE FROM workflow_instances WHERE id = :i", i=t.short)
    assert first_problem(t.engine.verify())[0] == t.short


# --------------------------------------------------------------------------- definitions


def test_replacing_a_stored_definition_text_is_detected(intruder: Trail) -> None:
    """A stored definition whose text was replaced no longer matches its hash."""
    t = intruder
    with t.db.connect() as conn:
        text = conn.execute(sa.text("SELECT source_text FROM workflow_definitions "
                                    "WHERE program = 'leader-development'")).scalar_one()
    forged = text.replace("required: true", "required: false")
    assert forged != text
    t.sql("UPDATE workflow_definitions SET source_text = :s WHERE program = "
          "'leader-development'", s=forged)
    result = t.engine.verify()
    first_problem(result)
    assert "leader-development" in result.problems[0].reason


def test_replacing_a_stored_definition_with_its_hash_is_detected(intruder: Trail) -> None:
    """A definition replaced together with its content hash no longer matches the events
    recorded under it: every instance on it is named."""
    import hashlib

    t = intruder
    with t.db.connect() as conn:
        text = conn.execute(sa.text("SELECT source_text FROM workflow_definitions "
                                    "WHERE program = 'leader-development'")).scalar_one()
    forged = text.replace("required: true", "required: false")
    t.sql("UPDATE workflow_definitions SET source_text = :s, content_hash = :h "
          "WHERE program = 'leader-development'", s=forged,
          h=hashlib.sha256(forged.encode("utf-8")).hexdigest())
    result = t.engine.verify()
    assert first_problem(result)[0] == t.leader
    assert {p.instance for p in result.problems} == {t.leader, t.short}


# --------------------------------------------------------------------------- reliability (issue 6)

import itertools  # noqa: E402

from reliability import record, scaled  # noqa: E402

TAMPER_EXAMPLES = scaled(40, 400)


def _trail_events(t: Trail) -> dict[int, list[dict[str, Any]]]:
    return {i: t.events(i) for i in (t.leader, t.khok, t.short)}


def _tamper_settings(db_kind: str) -> settings:
    return settings(max_examples=TAMPER_EXAMPLES if db_kind == "sqlite" else TAMPER_EXAMPLES // 2,
                    deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _restore(t: Trail, events: dict[int, list[dict[str, Any]]],
             instances: dict[int, dict[str, Any]]) -> None:
    """Put every event and instance row back exactly as it was (the intruder's undo)."""
    with t.db.begin() as conn:
        conn.execute(sa.text("DELETE FROM workflow_events"))
        for row in instances.values():
            sets = ", ".join(f"{c} = :{c}" for c in row if c != "id")
            conn.execute(sa.text(f"UPDATE workflow_instances SET {sets} WHERE id = :id"), row)
        for evs in events.values():
            for e in evs:
                cols = ", ".join(e)
                conn.execute(sa.text(f"INSERT INTO workflow_events ({cols}) VALUES "
                                     f"({', '.join(':' + c for c in e)})"), e)
    assert t.engine.verify().ok


def test_deleting_or_swapping_any_events_is_detected(
        intruder: Trail, db_kind: str, request: pytest.FixtureRequest) -> None:
    """Hypothesis: deleting any event or swapping any two is detected, naming that instance."""
    t = intruder
    events = _trail_events(t)
    instances = {i: t.instance(i) for i in events}
    singles = [(i, e["seq"]) for i, evs in events.items() for e in evs]
    pairs = [(i, a["seq"], b["seq"]) for i, evs in events.items()
             for a, b in itertools.combinations(evs, 2)]
    tally = {"tried": 0, "caught": 0}

    @_tamper_settings(db_kind)
    @given(action=st.sampled_from(["delete", "swap"]), data=st.data())
    def check(action: str, data: st.DataObject) -> None:
        tally["tried"] += 1
        if action == "delete":
            instance, seq = data.draw(st.sampled_from(singles))
            t.sql("DELETE FROM workflow_events WHERE instance_id = :i AND seq = :s",
                  i=instance, s=seq)
            expected = {seq, seq + 1} if seq < len(events[instance]) else {seq - 1, seq}
        else:
            instance, a, b = data.draw(st.sampled_from(pairs))
            swap = "UPDATE workflow_events SET seq = :to WHERE instance_id = :i AND seq = :s"
            t.sql(swap, to=999, i=instance, s=a)
            t.sql(swap, to=a, i=instance, s=b)
            t.sql(swap, to=b, i=instance, s=999)
            expected = {a}
        try:
            found = first_problem(t.engine.verify())
            assert found[0] == instance and found[1] in expected, (found, instance, expected)
            tally["caught"] += 1
        finally:
            _restore(t, events, instances)

    check()
    record(request.node.nodeid, "tamper", tried=tally["tried"], caught=tally["caught"])


INSTANCE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "program": st.sampled_from(["one-plan", "khok-nong-na", "leader-development", "x"]),
    "program_version": st.integers(0, 9),
    "area_code": st.sampled_from(["160117", "160101", "10", "999999", ""]),
    "province_code": st.sampled_from(["16", "10", "99", ""]),
    "fiscal_year": st.integers(2400, 2800),
    "duplicate_no": st.integers(0, 3),
    "title": st.none() | TEXT,
    "state": st.sampled_from(["planned", "kicked_off", "activities", "closed", "cancelled"]),
    "active": st.sampled_from(['["planned"]', '["kicked_off"]', '["closed"]']) | TEXT,
    "version": st.integers(0, 50),
    "head_hash": HEX,
    "created_at": st.text(alphabet="0123456789-:TZ.", max_size=32),
    "updated_at": st.text(alphabet="0123456789-:TZ.", max_size=32),
}


def test_altering_any_instance_column_to_any_value_is_detected(
        intruder: Trail, db_kind: str, request: pytest.FixtureRequest) -> None:
    """Hypothesis: any instance column set to any other value is detected, naming that instance."""
    t = intruder
    rows = {i: t.instance(i) for i in (t.leader, t.khok, t.short)}
    tally = {"tried": 0, "caught": 0, "refused by the database": 0}

    @_tamper_settings(db_kind)
    @given(instance=st.sampled_from(sorted(rows)),
           column=st.sampled_from(sorted(INSTANCE_VALUES)), data=st.data())
    def check(instance: int, column: str, data: st.DataObject) -> None:
        old = rows[instance][column]
        new = data.draw(INSTANCE_VALUES[column].filter(lambda v: v != old), label="new value")
        tally["tried"] += 1
        where = "WHERE id = :i"
        try:
            t.sql(f"UPDATE workflow_instances SET {column} = :v {where}", v=new, i=instance)
        except sa.exc.IntegrityError:  # the database itself refused (a unique key)
            tally["refused by the database"] += 1
            return
        try:
            assert first_problem(t.engine.verify())[0] == instance
            tally["caught"] += 1
        finally:
            t.sql(f"UPDATE workflow_instances SET {column} = :v {where}", v=old, i=instance)
        assert t.engine.verify().ok

    check()
    record(request.node.nodeid, "tamper", tried=tally["tried"], caught=tally["caught"],
           refused_by_the_database=tally["refused by the database"])


def test_truncating_any_instance_needs_and_gets_a_digest(
        intruder: Trail, db_kind: str, request: pytest.FixtureRequest) -> None:
    """Hypothesis: newest k events removed consistently pass verify() but not verify(digest)."""
    t = intruder
    digest = t.engine.digest()
    events = _trail_events(t)
    instances = {i: t.instance(i) for i in events}
    tally = {"tried": 0, "caught": 0}

    @_tamper_settings(db_kind)
    @given(instance=st.sampled_from(sorted(events)), data=st.data())
    def check(instance: int, data: st.DataObject) -> None:
        evs = events[instance]
        keep = data.draw(st.integers(1, len(evs) - 1), label="events kept")
        last, head = evs[-1], evs[keep - 1]
        tally["tried"] += 1
        t.sql("DELETE FROM workflow_events WHERE instance_id = :i AND seq > :k",
              i=instance, k=keep)
        t.sql("UPDATE workflow_instances SET version = :v, head_hash = :h, active = :a, "
              "state = :s, updated_at = :u WHERE id = :i", v=keep, h=head["hash"],
              a=head["to_state"], s=json.loads(head["to_state"])[0].split(".")[0],
              u=head["at"], i=instance)
        try:
            assert t.engine.verify().ok  # consistent: nothing but the digest can tell
            assert first_problem(t.engine.verify(digest)) == (instance, last["seq"])
            tally["caught"] += 1
        finally:
            _restore(t, events, instances)

    check()
    record(request.node.nodeid, "tamper", tried=tally["tried"], caught=tally["caught"])


@pytest.fixture
def granted(trail: Trail) -> Iterator[Trail]:
    """The trail with three grants and one revocation, the grant trails' triggers dropped."""
    e = trail.engine
    e.grant("udomrat", "provincial_officer", area="16")
    e.grant("somchai", "coordinator")
    e.grant("inspector1", "inspector", program="leader-development")
    e.revoke("somchai", "coordinator")
    dialect = trail.db.dialect.name
    with trail.db.connect() as conn:
        if dialect == "postgresql":
            ddl = [r[0] for r in conn.exec_driver_sql(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgname = 'workflow_grant_events_append_only'")]
        else:
            ddl = [r[0] for r in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE "
                "'workflow_grant_events_no_%'")]
    if dialect == "postgresql":
        trail.sql("DROP TRIGGER workflow_grant_events_append_only ON workflow_grant_events")
    else:
        trail.sql("DROP TRIGGER workflow_grant_events_no_update")
        trail.sql("DROP TRIGGER workflow_grant_events_no_delete")
    assert e.verify().ok
    yield trail
    for statement in ddl:
        trail.sql(statement)


GRANT_EVENT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "action": st.sampled_from(["grant", "revoke", "x"]),
    "scope": st.sampled_from(['{"actor":"x","area":null,"program":null,"role":"auditor"}',
                              "{}", "not json"]) | TEXT,
    "by": TEXT,
    "os_user": TEXT,
    "at": st.text(alphabet="0123456789-:TZ.", max_size=32),
    "prev_hash": HEX,
    "hash": HEX,
}


def test_altering_the_grant_trail_is_detected(
        granted: Trail, db_kind: str, request: pytest.FixtureRequest) -> None:
    """Hypothesis: any grant-event field altered, or a grant added/removed/widened, is detected."""
    t = granted
    with t.db.connect() as conn:
        grant_events = [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM workflow_grant_events ORDER BY seq")).mappings()]
        grants = [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM workflow_grants ORDER BY id")).mappings()]
    tally = {"tried": 0, "caught": 0}

    def restore_grants() -> None:
        with t.db.begin() as conn:
            conn.execute(sa.text("DELETE FROM workflow_grants"))
            for g in grants:
                conn.execute(sa.text(f"INSERT INTO workflow_grants ({', '.join(g)}) VALUES "
                                     f"({', '.join(':' + c for c in g)})"), g)

    @_tamper_settings(db_kind)
    @given(kind=st.sampled_from(["event", "grant"]), data=st.data())
    def check(kind: str, data: st.DataObject) -> None:
        if kind == "event":
            row = data.draw(st.sampled_from(grant_events))
            column = data.draw(st.sampled_from(sorted(GRANT_EVENT_VALUES)))
            new = data.draw(GRANT_EVENT_VALUES[column].filter(lambda v: v != row[column]))
            tally["tried"] += 1
            t.sql(f"UPDATE workflow_grant_events SET {column} = :v WHERE seq = :s",
                  v=new, s=row["seq"])
        else:
            change = data.draw(st.sampled_from(["add", "remove", "widen"]))
            tally["tried"] += 1
            if change == "add":
                t.sql("INSERT INTO workflow_grants (actor, role, area_code, program, "
                      "granted_by, granted_at) VALUES ('mallory', 'inspector', '', '', 'x', "
                      "'2021-01-01T00:00:00.000000Z')")
            elif change == "remove":
                t.sql("DELETE FROM workflow_grants WHERE actor = 'udomrat'")
            else:
                t.sql("UPDATE workflow_grants SET area_code = '' WHERE actor = 'udomrat'")
        try:
            result = t.engine.verify()
            first_problem(result)
            assert any(p.reason.startswith("grants:") for p in result.problems)
            tally["caught"] += 1
        finally:
            if kind == "event":
                t.sql(f"UPDATE workflow_grant_events SET {column} = :v WHERE seq = :s",
                      v=row[column], s=row["seq"])
            else:
                restore_grants()
        assert t.engine.verify().ok

    check()
    record(request.node.nodeid, "tamper", tried=tally["tried"], caught=tally["caught"])


@pytest.mark.parametrize("column", ["granted_by", "granted_at"])
def test_rewriting_who_granted_is_detected(granted: Trail, column: str) -> None:
    """Rewriting granted_by or granted_at of a grant in force is detected."""
    t = granted
    t.sql(f"UPDATE workflow_grants SET {column} = 'mallory' WHERE actor = 'udomrat'")
    first_problem(t.engine.verify())


# --------------------------------------------------------------------------- denials


def _drop_trail_triggers(t: Trail, table: str) -> list[str]:
    """Drop every append-only trigger of ``table``; return the DDL that re-creates them."""
    with t.db.connect() as conn:
        if t.db.dialect.name == "postgresql":
            found = conn.exec_driver_sql(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
                f"AND tgrelid = '{table}'::regclass").all()
        else:
            found = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                f"AND tbl_name = '{table}'").all()
    for name, _ in found:
        t.sql(f"DROP TRIGGER {name} ON {table}" if t.db.dialect.name == "postgresql"
              else f"DROP TRIGGER {name}")
    return [ddl for _, ddl in found]


@pytest.fixture
def denied(trail: Trail) -> Iterator[Trail]:
    """The trail with three denials (the stored-grants policy refused three attempts), the
    denials' triggers dropped."""
    from workflow import PermissionDenied

    with Engine(trail.engine.url) as strict:
        for actor in ("mallory", "trudy", "eve"):
            with pytest.raises(PermissionDenied):
                strict.fire(trail.leader, "evaluate", actor=actor, role="provincial_officer",
                            evidence={"date": "2564-06-01", "method": "x"})
    ddl = _drop_trail_triggers(trail, "workflow_denials")
    assert trail.engine.verify().ok
    yield trail
    for statement in ddl:
        trail.sql(statement)


DENIAL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "actor": TEXT,
    "role": TEXT,
    "action": TEXT,
    "program": st.none() | TEXT,
    "instance_id": st.none() | st.integers(0, 9),
    "area_code": st.none() | st.sampled_from(["160117", "10", ""]),
    "reason": TEXT,
    "os_user": TEXT,
    "at": st.text(alphabet="0123456789-:TZ.", max_size=32),
    "seq": st.none() | st.integers(0, 9),
    "prev_hash": HEX,
    "hash": HEX,
}


def test_altering_the_denial_trail_is_detected(
        denied: Trail, db_kind: str, request: pytest.FixtureRequest) -> None:
    """Hypothesis: any denial column altered, a denial deleted, swapped or forged (back-dated
    with its hash recomputed, or not hashed) is detected by verify(digest), naming the denial
    chain."""
    from workflow.audit.chain import denial_hash
    from workflow.storage.store import DenialRow

    t = denied
    digest = t.engine.digest()
    with t.db.connect() as conn:
        saved = [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM workflow_denials ORDER BY seq")).mappings()]
    assert [d["seq"] for d in saved] == [1, 2, 3]
    tally = {"tried": 0, "caught": 0, "refused by the database": 0}

    def restore() -> None:
        with t.db.begin() as conn:
            conn.execute(sa.text("DELETE FROM workflow_denials"))
            for d in saved:
                conn.execute(sa.text(f"INSERT INTO workflow_denials ({', '.join(d)}) VALUES "
                                     f"({', '.join(':' + c for c in d)})"), d)

    @_tamper_settings(db_kind)
    @given(kind=st.sampled_from(["alter", "delete", "swap", "forge"]), data=st.data())
    def check(kind: str, data: st.DataObject) -> None:
        row = data.draw(st.sampled_from(saved))
        try:
            if kind == "alter":
                column = data.draw(st.sampled_from(sorted(DENIAL_VALUES)))
                new = data.draw(DENIAL_VALUES[column].filter(lambda v: v != row[column]))
                t.sql(f"UPDATE workflow_denials SET {column} = :v WHERE id = :i",
                      v=new, i=row["id"])
            elif kind == "delete":
                t.sql("DELETE FROM workflow_denials WHERE id = :i", i=row["id"])
            elif kind == "swap":
                other = data.draw(st.sampled_from([d for d in saved if d is not row]))
                for col in ("reason", "actor", "at"):
                    t.sql(f"UPDATE workflow_denials SET {col} = :v WHERE id = :i",
                          v=other[col], i=row["id"])
            else:
                # A well-formed denial appended now is only a new record; a forgery is
                # back-dated (hashed and linked, its time before the head) or not hashed.
                head = saved[-1]
                hashed = data.draw(st.booleans())
                at = "2020-01-01T00:00:00.000000Z" if hashed else head["at"]
                forged = DenialRow(0, "mallory", "coordinator", "workshop", None, None, None,
                                   "forged", "x", at, 4, head["hash"], "")
                values = forged._replace(hash=denial_hash(forged) if hashed else "0" * 64)
                cols = [c for c in DenialRow._fields if c != "id"]
                t.sql(f"INSERT INTO workflow_denials ({', '.join(cols)}) VALUES "
                      f"({', '.join(':' + c for c in cols)})",
                      **{c: getattr(values, c) for c in cols})
        except sa.exc.DBAPIError:  # types, NOT NULL, the unique seq
            tally["refused by the database"] += 1
            restore()
            return
        tally["tried"] += 1
        try:
            result = t.engine.verify(digest)
            first_problem(result)
            assert any(p.reason.startswith("denials:") for p in result.problems), result
            tally["caught"] += 1
        finally:
            restore()
        assert t.engine.verify(digest).ok

    check()
    record(request.node.nodeid, "tamper", tried=tally["tried"], caught=tally["caught"],
           refused_by_the_database=tally["refused by the database"])


# --------------------------------------------------------------------------- idempotency


KEY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "key": TEXT.filter(bool),
    "request_hash": HEX,
    "instance_id": st.integers(1, 4),
    "seq": st.integers(0, 7),
    "created_at": st.text(alphabet="0123456789-:TZ.", max_size=32),
    "event_hash": HEX,
}


def test_altering_idempotency_rows_is_detected(
        trail: Trail, db_kind: str, request: pytest.FixtureRequest) -> None:
    """Hypothesis: any idempotency row altered (re-pointed at another event, with or without
    that event's hash and time), deleted or forged is detected by verify(digest); a replay
    never answers with an event that is not its request's."""
    from workflow import KeyRecordMismatch, WorkflowError

    t = trail
    e = t.engine
    fired = leader_to(e, t.leader, [])  # nothing: the leader stays where the trail left it
    assert fired is None
    e.fire(t.leader, "report_progress", actor="somchai", role="coordinator",
           evidence={"date": "2564-05-01", "summary": "x"}, key="k-leader")
    report_employment(e, t.khok, workers=9, key="k-khok")
    e.start("one-plan", area="160102", fiscal_year=2564, actor="x", role="coordinator",
            key="k-start")
    digest = e.digest()
    with t.db.connect() as conn:
        saved = [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM workflow_idempotency ORDER BY key")).mappings()]
        events = [dict(r) for r in conn.execute(sa.text(
            "SELECT instance_id, seq, hash, at FROM workflow_events")).mappings()]
    assert len(saved) == 3
    tally = {"tried": 0, "caught": 0, "refused by the database": 0}

    def restore() -> None:
        with t.db.begin() as conn:
            conn.execute(sa.text("DELETE FROM workflow_idempotency"))
            for k in saved:
                conn.execute(sa.text(f"INSERT INTO workflow_idempotency ({', '.join(k)}) "
                                     f"VALUES ({', '.join(':' + c for c in k)})"), k)

    @_tamper_settings(db_kind)
    @given(kind=st.sampled_from(["alter", "repoint", "delete", "forge"]), data=st.data())
    def check(kind: str, data: st.DataObject) -> None:
        row = data.draw(st.sampled_from(saved))
        try:
            if kind == "alter":
                column = data.draw(st.sampled_from(sorted(KEY_VALUES)))
                new = data.draw(KEY_VALUES[column].filter(lambda v: v != row[column]))
                t.sql(f"UPDATE workflow_idempotency SET {column} = :v WHERE key = :k",
                      v=new, k=row["key"])
            elif kind == "repoint":
                target = data.draw(st.sampled_from(
                    [ev for ev in events if (ev["instance_id"], ev["seq"])
                     != (row["instance_id"], row["seq"])]))
                consistent = data.draw(st.booleans())
                t.sql("UPDATE workflow_idempotency SET instance_id = :i, seq = :s"
                      + (", event_hash = :h, created_at = :a" if consistent else "")
                      + " WHERE key = :k", i=target["instance_id"], s=target["seq"],
                      h=target["hash"], a=target["at"], k=row["key"])
            elif kind == "delete":
                t.sql("DELETE FROM workflow_idempotency WHERE key = :k", k=row["key"])
            else:
                target = data.draw(st.sampled_from(events))
                t.sql("INSERT INTO workflow_idempotency (key, request_hash, instance_id, seq, "
                      "created_at, event_hash) VALUES ('forged', :r, :i, :s, :a, :h)",
                      r="0" * 64, i=target["instance_id"], s=target["seq"], a=target["at"],
                      h=target["hash"])
        except sa.exc.DBAPIError:  # a key that exists already, a type
            tally["refused by the database"] += 1
            restore()
            return
        tally["tried"] += 1
        try:
            first_problem(e.verify(digest))
            tally["caught"] += 1
            if kind == "repoint" and row["key"] == "k-leader":
                # The replay of the very request re-checks what the record names.
                with pytest.raises(KeyRecordMismatch):
                    e.fire(t.leader, "report_progress", actor="somchai", role="coordinator",
                           evidence={"date": "2564-05-01", "summary": "x"}, key="k-leader")
            if kind == "repoint" and row["key"] == "k-start":
                with pytest.raises(WorkflowError):
                    e.start("one-plan", area="160102", fiscal_year=2564, actor="x",
                            role="coordinator", key="k-start")
        finally:
            restore()
        assert e.verify(digest).ok

    check()
    record(request.node.nodeid, "tamper", tried=tally["tried"], caught=tally["caught"],
           refused_by_the_database=tally["refused by the database"])
