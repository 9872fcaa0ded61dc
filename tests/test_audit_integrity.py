"""Audit and authorization integrity (issue 9 items 1-5), on SQLite and PostgreSQL.

An insider with SQL access works around the engine: grants that never went through a grant
event, an area flipped for one fire, key rows re-pointed, denials deleted, TRUNCATE, rows no
parser expects, clocks that run backwards. ``verify`` (and ``verify --digest``) must catch each
of them, and never crash doing so; the engine refuses what it can refuse at write time.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    COORDINATOR,
    KICKOFF,
    LEADER_STEPS,
    LOPBURI,
    OFFICER,
    dump_tables,
    execute,
    sql_engine,
)
from reliability import assert_one_error_line, run_cli
from workflow import (
    ClockWentBack,
    Engine,
    KeyRecordMismatch,
    PermissionDenied,
    VerifyResult,
)
from workflow.audit import chain as audit_mod
from workflow.audit.chain import denial_hash, grant_hash, row_hash
from workflow.storage.store import DenialRow, EventRow, GrantEventRow

APPEND_ONLY = (
    "workflow_events", "workflow_grant_events", "workflow_denials", "workflow_account_events"
)


# --------------------------------------------------------------------------- helpers


def triggers_ddl(db: sa.Engine) -> list[str]:
    """The DDL of every append-only trigger (to put them back after an intruder's visit)."""
    with db.connect() as conn:
        if db.dialect.name == "postgresql":
            return [r[0] for r in conn.exec_driver_sql(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgname LIKE 'workflow_%%'")]
        return [r[0] for r in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'workflow_%'")]


def drop_triggers(db: sa.Engine) -> None:
    with db.begin() as conn:
        if db.dialect.name == "postgresql":
            for name, table in conn.exec_driver_sql(
                    "SELECT tgname, tgrelid::regclass::text FROM pg_trigger "
                    "WHERE NOT tgisinternal AND tgname LIKE 'workflow_%%'").all():
                conn.exec_driver_sql(f"DROP TRIGGER {name} ON {table}")
        else:
            for (name,) in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                    "AND name LIKE 'workflow_%'").all():
                conn.exec_driver_sql(f"DROP TRIGGER {name}")


@dataclass
class World:
    """A database with grants, two leader-development instances and a denial, as the CLI's
    default policy (stored grants) leaves it; ``db`` is the intruder's raw SQL access."""

    engine: Engine
    db: sa.Engine
    a: int  # kicked off in 160117
    b: int  # kicked off in 160101

    def sql(self, statement: str, **params: Any) -> None:
        with self.db.begin() as conn:
            conn.execute(sa.text(statement), params)

    def rows(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(statement), params).mappings()]


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    url = engine.url
    e = Engine(url)  # the default policy: stored grants
    e.grant("udomrat", OFFICER, area="16")
    e.grant("somchai", COORDINATOR, area="1601")
    a = e.start("leader-development", area=LOPBURI, fiscal_year=2564, actor="udomrat",
                role=OFFICER, key="start-a")
    e.fire(a.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF, key="kick-a")
    b = e.start("leader-development", area="160101", fiscal_year=2564, actor="udomrat",
                role=OFFICER)
    e.fire(b.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF, key="kick-b")
    with pytest.raises(PermissionDenied):
        e.fire(a.id, "workshop", actor="mallory", role=COORDINATOR,
               evidence=LEADER_STEPS["workshop"][1])
    e.accounts.add("udomrat", "a long enough password", by="admin")  # an account event too
    db = sql_engine(url)
    ddl = triggers_ddl(db)
    w = World(e, db, a.id, b.id)
    assert e.verify().ok
    try:
        yield w
    finally:
        # Put the schema back as init made it, so the next test can reuse it.
        drop_triggers(db)
        for statement in ddl:
            w.sql(statement)
        db.dispose()
        e.close()


def problems(result: VerifyResult) -> list[tuple[int | None, int | None, str]]:
    assert not result.ok, "verify() did not notice"
    return [(p.instance, p.seq, p.reason) for p in result.problems]


WORKSHOP = LEADER_STEPS["workshop"][1]


# --------------------------------------------------------------------------- 1. grants


def test_grant_row_inserted_used_and_deleted_is_caught(world: World) -> None:
    """A grant row written straight into workflow_grants (no grant event), used for a fire and
    deleted again leaves an event no grant covered: verify names that event."""
    w = world
    w.sql("INSERT INTO workflow_grants (actor, role, area_code, program, granted_by, "
          "granted_at) VALUES ('mallory', 'coordinator', '', '', 'x', "
          "'2021-01-01T00:00:00.000000Z')")
    fired = w.engine.fire(w.a, "workshop", actor="mallory", role=COORDINATOR, evidence=WORKSHOP)
    w.sql("DELETE FROM workflow_grants WHERE actor = 'mallory'")
    found = problems(w.engine.verify())
    assert found[0][:2] == (w.a, fired.event.seq)
    assert "no grant covered it" in found[0][2]
    assert "mallory" in found[0][2]


def test_area_flipped_for_one_fire_is_caught(world: World) -> None:
    """An instance's area_code flipped into a grant's scope for one fire and back: the fire is
    checked against the area its hashed start event recorded, which no grant of its actor
    covered."""
    w = world
    w.engine.grant("narong", COORDINATOR, area="10")  # Bangkok only
    w.sql("UPDATE workflow_instances SET area_code = '100101', province_code = '10' "
          "WHERE id = :i", i=w.a)
    fired = w.engine.fire(w.a, "workshop", actor="narong", role=COORDINATOR, evidence=WORKSHOP)
    w.sql("UPDATE workflow_instances SET area_code = :a, province_code = '16' WHERE id = :i",
          a=LOPBURI, i=w.a)
    found = problems(w.engine.verify())
    assert found[0][:2] == (w.a, fired.event.seq)
    assert "area 160117" in found[0][2]


def test_fires_covered_at_their_time_verify_after_revocation(world: World) -> None:
    """Grants are replayed in time order: a fire made while the grant was held stays valid
    after the grant is revoked, and a grant given later does not cover earlier events."""
    w = world
    w.engine.fire(w.a, "workshop", actor="somchai", role=COORDINATOR, evidence=WORKSHOP)
    w.engine.revoke("somchai", COORDINATOR, area="1601")
    assert w.engine.verify().ok
    # Give somchai's grant a revocation time before his fire: the fire is then uncovered.
    drop_triggers(w.db)
    grants = w.rows("SELECT * FROM workflow_grant_events ORDER BY seq")
    fire_at = w.rows("SELECT at FROM workflow_events WHERE instance_id = :i AND seq = 3",
                     i=w.a)[0]["at"]
    revoke = grants[-1]
    assert revoke["action"] == "revoke"
    earlier = grants[-2]["at"]  # still after the previous record: the chain stays in order
    assert earlier < fire_at
    rehash_grant_chain(w, revoke["seq"], at=earlier)
    found = problems(w.engine.verify())
    assert found[0][:2] == (w.a, 3)


def test_events_of_another_policy_are_not_held_to_grants(engine: Engine) -> None:
    """An event the recorded policy (here allow-all) permitted is not checked against stored
    grants: verify stays clean with no grant at all."""
    inst = engine.start("leader-development", area=LOPBURI, fiscal_year=2564, actor="x",
                        role=OFFICER)
    engine.fire(inst.id, "kickoff", actor="x", role=OFFICER, evidence=KICKOFF)
    assert engine.verify().ok


def test_rewritten_fire_key_row_cannot_replay_another_instances_event(world: World) -> None:
    """A fire key row re-pointed at another instance's event (even with that event's hash)
    is refused on replay (KeyRecordMismatch, exit 5) and verify names it."""
    w = world
    b_kick = w.rows("SELECT hash, at FROM workflow_events WHERE instance_id = :i AND seq = 2",
                    i=w.b)[0]
    before = dump_tables(w.engine.url)
    w.sql("UPDATE workflow_idempotency SET instance_id = :b, event_hash = :h "
          "WHERE key = 'kick-a'", b=w.b, h=b_kick["hash"])
    with pytest.raises(KeyRecordMismatch):
        w.engine.fire(w.a, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF,
                      key="kick-a")
    after = dump_tables(w.engine.url)
    assert {k: v for k, v in after.items() if k != "workflow_idempotency"} == {
        k: v for k, v in before.items() if k != "workflow_idempotency"}
    found = problems(w.engine.verify())
    assert any("kick-a" in reason for _, _, reason in found)


def test_key_row_pointed_at_a_twin_event_with_other_evidence_is_refused(world: World) -> None:
    """A fire key row re-pointed, with the right hash, at an event of the same instance,
    trigger, actor, role and note that recorded other evidence is refused on replay."""
    w = world
    e = w.engine
    first = e.fire(w.a, "workshop", actor="somchai", role=COORDINATOR, key="ws-a",
                   evidence={"date": "2564-03-01", "venue": "one", "participants": 5})
    twin = e.fire(w.a, "report_progress", actor="somchai", role=COORDINATOR, key="rp-1",
                  evidence={"date": "2564-04-01", "summary": "first"})
    again = e.fire(w.a, "report_progress", actor="somchai", role=COORDINATOR,
                   evidence={"date": "2564-05-01", "summary": "second"})
    assert first.event.seq < twin.event.seq < again.event.seq
    w.sql("UPDATE workflow_idempotency SET seq = :s, event_hash = :h WHERE key = 'rp-1'",
          s=again.event.seq, h=again.event.hash)
    with pytest.raises(KeyRecordMismatch):
        e.fire(w.a, "report_progress", actor="somchai", role=COORDINATOR, key="rp-1",
               evidence={"date": "2564-04-01", "summary": "first"})
    w.sql("UPDATE workflow_idempotency SET seq = :s, event_hash = :h WHERE key = 'rp-1'",
          s=twin.event.seq, h=twin.event.hash)
    replay = e.fire(w.a, "report_progress", actor="somchai", role=COORDINATOR, key="rp-1",
                    evidence={"date": "2564-04-01", "summary": "first"})
    assert replay.replayed and replay.event.seq == twin.event.seq


def test_rewritten_start_key_row_cannot_hand_out_another_instance(world: World) -> None:
    """A start key row re-pointed at another instance is refused on replay and caught."""
    w = world
    b_start = w.rows("SELECT hash FROM workflow_events WHERE instance_id = :i AND seq = 1",
                     i=w.b)[0]
    w.sql("UPDATE workflow_idempotency SET instance_id = :b, event_hash = :h "
          "WHERE key = 'start-a'", b=w.b, h=b_start["hash"])
    with pytest.raises(KeyRecordMismatch):
        w.engine.start("leader-development", area=LOPBURI, fiscal_year=2564, actor="udomrat",
                       role=OFFICER, key="start-a")
    assert not w.engine.verify().ok


def test_consistently_rewritten_key_row_is_caught_by_a_digest(world: World) -> None:
    """A key row rewritten to name another event with every column consistent passes the
    plain verify (nothing else records it) but not the digest taken before."""
    w = world
    digest = w.engine.digest()
    b_kick = w.rows("SELECT hash, at FROM workflow_events WHERE instance_id = :i AND seq = 2",
                    i=w.b)[0]
    w.sql("UPDATE workflow_idempotency SET instance_id = :b, event_hash = :h, created_at = :t "
          "WHERE key = 'kick-a'", b=w.b, h=b_kick["hash"], t=b_kick["at"])
    assert w.engine.verify().ok
    found = problems(w.engine.verify(digest))
    assert any(reason.startswith("keys:") for _, _, reason in found)


def test_key_row_naming_a_missing_event_is_caught(world: World) -> None:
    """A key row pointing at an event that does not exist is a problem of verify."""
    w = world
    w.sql("UPDATE workflow_idempotency SET seq = 99 WHERE key = 'kick-a'")
    found = problems(w.engine.verify())
    assert (w.a, 99) in [(i, s) for i, s, _ in found]


# --------------------------------------------------------------------------- 2. denials


def test_denials_are_chained(world: World) -> None:
    """Each denial is the next link of one hash chain (seq, prev_hash, hash)."""
    w = world
    with pytest.raises(PermissionDenied):
        w.engine.start("one-plan", area=LOPBURI, fiscal_year=2564, actor="mallory",
                       role="coordinator")
    denials = w.engine.denials()
    assert [d.seq for d in denials] == [1, 2]
    assert denials[0].prev_hash == "0" * 64 and denials[1].prev_hash == denials[0].hash
    for d in denials:
        row = DenialRow(d.id, d.actor, d.role, d.action, d.program, d.instance, d.area,
                        d.reason, d.os_user, d.at, d.seq, d.prev_hash, d.hash)
        assert denial_hash(row) == d.hash


@pytest.mark.parametrize("change", [
    "DELETE FROM workflow_denials WHERE seq = 1",
    "UPDATE workflow_denials SET reason = 'nothing to see' WHERE seq = 1",
    "UPDATE workflow_denials SET actor = 'someone else' WHERE seq = 2",
    "INSERT INTO workflow_denials (actor, role, action, reason, os_user, at, prev_hash, hash) "
    "VALUES ('x', 'r', 'a', 'why', 'u', '2021-01-01T00:00:00.000000Z', '', '')",
])
def test_deleting_or_editing_a_denial_is_caught(world: World, change: str) -> None:
    """Deleting, editing or inserting a denial (triggers dropped) breaks the denial chain."""
    w = world
    with pytest.raises(PermissionDenied):
        w.engine.fire(w.b, "workshop", actor="mallory", role=COORDINATOR, evidence=WORKSHOP)
    drop_triggers(w.db)
    w.sql(change)
    found = problems(w.engine.verify())
    assert any(reason.startswith("denials:") for _, _, reason in found)


def test_deleting_the_newest_denial_is_caught_by_a_digest(world: World) -> None:
    """The newest denial removed leaves a consistent chain; the digest taken before names it."""
    w = world
    digest = w.engine.digest()
    drop_triggers(w.db)
    w.sql("DELETE FROM workflow_denials")
    assert w.engine.verify().ok
    found = problems(w.engine.verify(digest))
    assert found[0][:2] == (None, 1) and found[0][2].startswith("denials:")


def _refuse_denial_inserts(w: World) -> None:
    """Make the database refuse every new denial, as a full disk or a read-only file would."""
    if w.db.dialect.name == "postgresql":
        w.sql("CREATE FUNCTION workflow_test_full() RETURNS trigger AS $$ BEGIN "
              "RAISE EXCEPTION 'could not extend file: No space left on device'; END; $$ "
              "LANGUAGE plpgsql")
        w.sql("CREATE TRIGGER workflow_test_full BEFORE INSERT ON workflow_denials "
              "FOR EACH ROW EXECUTE FUNCTION workflow_test_full()")
    else:
        w.sql("CREATE TRIGGER workflow_test_full BEFORE INSERT ON workflow_denials "
              "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")


def _drop_refusal(w: World) -> None:
    if w.db.dialect.name == "postgresql":
        w.sql("DROP TRIGGER workflow_test_full ON workflow_denials")
        w.sql("DROP FUNCTION workflow_test_full()")
    else:
        w.sql("DROP TRIGGER workflow_test_full")


def test_unrecordable_denial_is_said_on_stderr(world: World, capsys: Any) -> None:
    """A denial the database will not take is said on stderr (one warning line) and the
    refusal keeps its own line and exit code 4."""
    w = world
    _refuse_denial_inserts(w)
    try:
        r = run_cli(capsys, ["--db", w.engine.url, "fire", str(w.a), "workshop",
                             "--actor", "mallory", "--role", COORDINATOR,
                             "--set", "date=2564-03-03", "--set", "venue=x",
                             "--set", "participants=3"])
    finally:
        _drop_refusal(w)
    assert r.code == 4, r
    lines = r.err.splitlines()
    assert len(lines) == 2, r.err
    assert lines[0].startswith("workflow: warning: this refusal could not be recorded")
    assert "full" in lines[0] or "space" in lines[0]
    assert lines[1].startswith("workflow: error: ") and "mallory" in lines[1]
    assert len(w.engine.denials()) == 1
    assert w.engine.verify().ok


def test_init_upgrades_a_0003_database_and_chains_its_denials(backend: str) -> None:
    """`init` on a 0003 database adds the denial chain: existing denials become its first
    links, in id order, and verify is clean; key rows get their event's hash."""
    from workflow.storage import migrations

    if backend.startswith("sqlite"):
        Path(backend.removeprefix("sqlite:///")).touch()
    db = sql_engine(backend)
    with db.connect() as conn:
        migrations.upgrade(conn, "0003")
    execute(backend, *[
        "INSERT INTO workflow_denials (actor, role, action, program, instance_id, area_code, "
        f"reason, os_user, at) VALUES ('m{n}', 'coordinator', 'workshop', NULL, NULL, NULL, "
        f"'holds no grant', 'u', '2021-01-0{n}T00:00:00.000000Z')" for n in (1, 2, 3)])
    with Engine(backend) as e:
        assert e.init()[0] == "0003"
        denials = e.denials()
        assert [(d.seq, d.actor) for d in denials] == [(1, "m1"), (2, "m2"), (3, "m3")]
        assert e.verify().ok
        with pytest.raises(PermissionDenied):
            e.start("one-plan", area=LOPBURI, fiscal_year=2564, actor="m4", role="coordinator")
        assert [d.seq for d in e.denials()] == [1, 2, 3, 4]
        assert e.verify().ok
    db.dispose()


def test_migration_encodes_denials_as_audit_does() -> None:
    """The migration's own copy of the denial encoding equals workflow.audit.chain.denial_hash."""
    mig = importlib.import_module("workflow.storage.migrations.versions.0004_audit_hardening")
    row = DenialRow(7, "อุดม", "coordinator", "workshop", None, 3, "160117", "why", "u",
                    "2021-01-01T00:00:00.000000Z", 2, "a" * 64, "")
    assert mig._denial_hash(row._asdict()) == denial_hash(row)


# --------------------------------------------------------------------------- 3. TRUNCATE


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"], indirect=True)
def test_truncate_is_refused_on_every_audit_table(world: World) -> None:
    """PostgreSQL: TRUNCATE of any append-only table is refused, even for the owner."""
    for table in APPEND_ONLY:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            world.sql(f"TRUNCATE {table} CASCADE")
    assert world.engine.verify().ok


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"], indirect=True)
def test_table_writer_who_is_not_the_owner_cannot_change_the_trail(world: World) -> None:
    """PostgreSQL: a role with every table privilege but no ownership can neither UPDATE,
    DELETE nor TRUNCATE an audit table, nor disable its triggers."""
    role = f"workflow_writer_{secrets.token_hex(4)}"
    w = world
    w.sql(f"CREATE ROLE {role} NOLOGIN")
    try:
        w.sql(f"GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO {role}")
        w.sql(f"GRANT USAGE ON SCHEMA public TO {role}")
        for table in APPEND_ONLY:
            column = "seq" if table != "workflow_events" else "id"
            for statement in (f"UPDATE {table} SET {column} = {column}",
                              f"DELETE FROM {table}",
                              f"TRUNCATE {table} CASCADE",
                              f"ALTER TABLE {table} DISABLE TRIGGER USER"):
                with w.db.connect() as conn, pytest.raises(sa.exc.DBAPIError,
                                                            match=r"append-only|owner"):
                    conn.exec_driver_sql(f"SET ROLE {role}")
                    conn.exec_driver_sql(statement)
        with w.db.connect() as conn:  # the privileges are real: it may read and append
            conn.exec_driver_sql(f"SET ROLE {role}")
            assert conn.exec_driver_sql("SELECT count(*) FROM workflow_events").scalar() == 4
        assert w.engine.verify().ok
    finally:
        w.sql(f"DROP OWNED BY {role}")
        w.sql(f"DROP ROLE {role}")


@pytest.mark.parametrize("table", [
    "workflow_events", "workflow_grant_events", "workflow_denials"])
def test_emptied_trail_fails_against_a_digest(world: World, table: str, tmp_path: Path) -> None:
    """Emptying the events (and instances), the grant events or the denials is exit 1 against
    a digest taken before, even where the emptied chain is still 'consistent'."""
    w = world
    digest = w.engine.digest()
    drop_triggers(w.db)
    if table == "workflow_events":
        w.sql("DELETE FROM workflow_idempotency")
        w.sql("DELETE FROM workflow_events")
        w.sql("DELETE FROM workflow_instances")
    else:
        w.sql(f"DELETE FROM {table}")
        if table == "workflow_grant_events":
            w.sql("DELETE FROM workflow_grants")
    assert not w.engine.verify(digest).ok
    digest_file = tmp_path / "digest.json"
    digest_file.write_text(json.dumps(digest.to_dict()))
    r = run_cli(None, ["--db", w.engine.url, "audit", "verify", "--digest", str(digest_file)])
    assert r.code == 1, r


# --------------------------------------------------------------------------- 4. crafted rows


CRAFTED: list[Any] = [
    None, "", "[]", "{}", "[1]", '["x"]', "null", '"text"', "not json", "[[]]", '{"a": 1}',
    0, -1, 2**62, 3.5, "2021-01-01", "ขั้นตอน", "\u202e", "x" * 5000,
]
CRAFTED_SQLITE_ONLY = ["CAST(X'fffe' AS TEXT)", "X'00ff'"]

CRAFTABLE = {
    "workflow_events": ["instance_id", "seq", "trigger", "from_state", "to_state", "actor",
                        "role", "os_user", "at", "evidence", "note", "definition_hash",
                        "policy", "prev_hash", "hash"],
    "workflow_instances": ["program", "program_version", "definition_id", "area_code",
                           "province_code", "fiscal_year", "duplicate_no", "title", "state",
                           "active", "version", "head_hash", "created_at", "updated_at"],
    "workflow_grant_events": ["seq", "action", "scope", "by", "os_user", "at", "prev_hash",
                              "hash"],
    "workflow_denials": ["seq", "actor", "role", "action", "program", "instance_id",
                         "area_code", "reason", "os_user", "at", "prev_hash", "hash"],
    "workflow_idempotency": ["key", "request_hash", "instance_id", "seq", "created_at",
                             "event_hash"],
    "workflow_grants": ["actor", "role", "area_code", "program", "granted_by", "granted_at"],
    "workflow_definitions": ["source_text", "content_hash", "program", "version"],
}


def _snapshot(w: World) -> dict[str, list[dict[str, Any]]]:
    return {t: w.rows(f"SELECT * FROM {t}") for t in CRAFTABLE}


def _put_back(w: World, saved: dict[str, list[dict[str, Any]]]) -> None:
    with w.db.begin() as conn:
        if w.db.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        else:
            conn.exec_driver_sql("SET CONSTRAINTS ALL DEFERRED")
        for table in ("workflow_idempotency", "workflow_events", "workflow_instances",
                      "workflow_definitions", "workflow_grant_events", "workflow_denials",
                      "workflow_grants"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        for table in ("workflow_definitions", "workflow_instances", "workflow_events",
                      "workflow_idempotency", "workflow_grant_events", "workflow_denials",
                      "workflow_grants"):
            for row in saved[table]:
                cols = ", ".join(f'"{c}"' for c in row)
                conn.execute(sa.text(f"INSERT INTO {table} ({cols}) VALUES "
                                     f"({', '.join(':' + c for c in row)})"), row)


def test_verify_never_crashes_on_crafted_rows(world: World, db_kind: str) -> None:
    """Hypothesis: any column of any audited table set to a crafted value (not JSON, empty
    list, wrong type, NULL, bad UTF-8, absurd numbers) makes verify(digest) report problems
    naming an instance or a chain, never raise; the CLI says exit 1, not 70."""
    w = world
    w.engine.grant("inspector1", "inspector", program="leader-development")
    digest = w.engine.digest()
    drop_triggers(w.db)
    saved = _snapshot(w)
    cells = [(t, c) for t, cols in CRAFTABLE.items() for c in cols]
    values: list[Any] = CRAFTED + (CRAFTED_SQLITE_ONLY if db_kind == "sqlite" else [])
    tally = {"tried": 0, "refused by the database": 0}

    @settings(max_examples=60 if db_kind == "sqlite" else 30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(cell=st.sampled_from(cells), value=st.sampled_from(values),
           which=st.integers(0, 10))
    def check(cell: tuple[str, str], value: Any, which: int) -> None:
        table, column = cell
        rows = saved[table]
        if not rows:
            return
        row = rows[which % len(rows)]
        where = " AND ".join(f'"{k}" = :w_{k}' for k in row if row[k] is not None
                             and k not in ("source_text",))
        literal = isinstance(value, str) and value.startswith(("CAST(", "X'"))
        target = value if literal else ":v"
        params = {f"w_{k}": v for k, v in row.items()}
        try:
            with w.db.begin() as conn:
                if w.db.dialect.name == "sqlite":
                    conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
                conn.execute(sa.text(f'UPDATE {table} SET "{column}" = {target} WHERE {where}'),
                             {**params, "v": value})
        except sa.exc.DBAPIError:  # PostgreSQL types, NOT NULL, unique keys
            tally["refused by the database"] += 1
            return
        tally["tried"] += 1
        try:
            result = w.engine.verify(digest)
            unchanged = not literal and row[column] == value
            if not unchanged:
                assert not result.ok, (table, column, value)
            for p in result.problems:
                assert p.instance is None or type(p.instance) is int
                assert p.seq is None or type(p.seq) is int
        finally:
            _put_back(w, saved)

    check()
    assert w.engine.verify(digest).ok
    assert tally["tried"] > 10, tally


def test_cli_verify_reports_malformed_rows_and_goes_on(world: World, capsys: Any) -> None:
    """Malformed rows in two instances (an empty configuration, start evidence a list; hashes
    recomputed) are two problems with their instance and seq, exit 1 and no traceback."""
    w = world
    drop_triggers(w.db)
    # Hashes recomputed, so the chains hold and the values themselves must be looked at.
    rehash_chain(w, w.a, 2, to_state="[]")
    rehash_chain(w, w.b, 1, evidence="[]")
    r = run_cli(capsys, ["--db", w.engine.url, "audit", "verify", "--json"])
    assert r.code == 1, r
    result = json.loads(r.out)
    assert {p["instance"] for p in result["problems"]} >= {w.a, w.b}
    assert all(isinstance(p["seq"], int) for p in result["problems"])


@pytest.mark.parametrize("db_kind", ["sqlite"], indirect=True)
def test_text_that_is_not_utf8_is_a_problem_not_a_crash(world: World, capsys: Any) -> None:
    """SQLite keeps any bytes as TEXT: an event note and a grant event's `by` that are not
    UTF-8 are problems (exit 1) of that instance and of the grant chain, not a failed read.
    (PostgreSQL refuses such text on write, so there is nothing to read back.)"""
    w = world
    drop_triggers(w.db)
    w.sql("UPDATE workflow_events SET note = CAST(X'fffe41' AS TEXT) "
          "WHERE instance_id = :i AND seq = 2", i=w.a)
    w.sql("UPDATE workflow_grant_events SET by = CAST(X'c328' AS TEXT) WHERE seq = 1")
    found = problems(w.engine.verify())
    assert (w.a, 2) in [p[:2] for p in found]
    assert any(reason.startswith("grants:") for _, _, reason in found)
    r = run_cli(capsys, ["--db", w.engine.url, "audit", "verify"])
    assert r.code == 1 and "Traceback" not in r.err, r
    assert f"instance {w.a} seq 2" in r.out


def _run_cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workflow.cli.main", *args], capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=60,
                          check=False, env={**os.environ, "WORKFLOW_TRACEBACK": ""})


def _digest_file(kind: str, tmp_path: Path, good: dict[str, Any]) -> str:
    path = tmp_path / f"digest-{kind}.json"
    if kind == "infinity":
        path.write_text(json.dumps(good).replace('"instances": 2', '"instances": Infinity'))
    elif kind == "nan":
        path.write_text(json.dumps({**good, "events": float("nan")}))
    elif kind == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "huge":
        with open(path, "wb") as fh:
            fh.truncate(audit_mod.DIGEST_LIMIT + 1)
    elif kind == "dev-zero":
        return "/dev/zero"
    elif kind == "directory":
        return str(tmp_path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "not-an-object":
        path.write_text("[1, 2, 3]")
    elif kind == "bool-count":
        path.write_text(json.dumps({**good, "instances": True}))
    elif kind == "text-seq":
        heads = {k: {**v, "seq": str(v["seq"])} for k, v in good["heads"].items()}
        path.write_text(json.dumps({**good, "heads": heads}))
    elif kind == "bad-key":
        path.write_text(json.dumps({**good, "heads": {"x": {"seq": 1, "hash": "0" * 64}}}))
    elif kind == "not-utf8":
        path.write_bytes(b'{"heads": "\xff"}')
    elif kind == "missing":
        return str(tmp_path / "nope.json")
    return str(path)


@pytest.mark.parametrize("kind", [
    "infinity", "nan", "deep", "huge", "dev-zero", "directory", "fifo", "not-an-object",
    "bool-count", "text-seq", "bad-key", "not-utf8", "missing"])
def test_malformed_digest_file_is_one_line_exit_2(world: World, tmp_path: Path,
                                                  kind: str) -> None:
    """A digest file that is not one (Infinity, NaN, deep nesting, larger than the limit,
    /dev/zero, a directory, a FIFO, not an object, wrong types) is exit 2 with one line, at
    once (the real console script, so a hang or a traceback would show)."""
    good = world.engine.digest().to_dict()
    assert good["instances"] == 2
    p = _run_cli_process("--db", world.engine.url, "audit", "verify", "--digest",
                         _digest_file(kind, tmp_path, good))
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("workflow: error: "), p.stderr
    assert len(lines[0]) < 300


def test_old_digest_without_denials_still_verifies(world: World) -> None:
    """A digest written before denials, keys and accounts were covered still reads and
    verifies."""
    d = world.engine.digest()
    old = {k: v for k, v in d.to_dict().items() if k not in ("denials", "keys", "accounts")}
    old["root"] = audit_mod.Digest.root_of(d.heads, d.grants)
    assert world.engine.verify(old).ok


# --------------------------------------------------------------------------- 5. time


def _clock(monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    monkeypatch.setattr(audit_mod, "now_utc", lambda: at)


def test_event_earlier_than_the_instances_last_is_refused(
        world: World, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """A fire whose clock reads earlier than the instance's last event is refused in its
    transaction (ClockWentBack, exit 5, one line) and changes nothing."""
    w = world
    before = dump_tables(w.engine.url)
    _clock(monkeypatch, "2020-01-01T00:00:00.000000Z")
    with pytest.raises(ClockWentBack):
        w.engine.fire(w.a, "workshop", actor="somchai", role=COORDINATOR, evidence=WORKSHOP)
    r = run_cli(capsys, ["--db", w.engine.url, "fire", str(w.a), "workshop",
                         "--actor", "somchai", "--role", COORDINATOR, "--set",
                         "date=2564-03-03", "--set", "venue=x", "--set", "participants=3"])
    assert r.code == 5, r
    assert_one_error_line(r)
    assert "clock" in r.err
    assert dump_tables(w.engine.url) == before
    monkeypatch.undo()
    assert w.engine.verify().ok


def test_in_a_batch_time_must_not_run_backwards_either(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """fire_many refuses the whole batch when its clock is behind an instance's last event."""
    w = world
    before = dump_tables(w.engine.url)
    _clock(monkeypatch, "2020-01-01T00:00:00.000000Z")
    with pytest.raises(ClockWentBack):
        w.engine.fire_many([{"instance": w.a, "trigger": "workshop", "actor": "somchai",
                             "role": COORDINATOR, "evidence": WORKSHOP}])
    assert dump_tables(w.engine.url) == before


def test_grant_or_denial_earlier_than_its_chain_is_not_recorded(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grant with the clock behind the grant chain is refused (ClockWentBack); a refusal
    with the clock behind the denial chain is still refused, its record said unrecorded."""
    w = world
    before = dump_tables(w.engine.url)
    _clock(monkeypatch, "2020-01-01T00:00:00.000000Z")
    with pytest.raises(ClockWentBack):
        w.engine.grant("x", COORDINATOR)
    with pytest.raises(PermissionDenied) as caught:
        w.engine.fire(w.a, "workshop", actor="mallory", role=COORDINATOR, evidence=WORKSHOP)
    assert "clock" in caught.value.denial_unrecorded  # type: ignore[attr-defined]
    assert dump_tables(w.engine.url) == before


def rehash_chain(w: World, instance: int, seq: int, **changes: Any) -> None:
    """What a careful intruder does: change event ``seq`` and re-hash the chain from there."""
    events = w.rows("SELECT * FROM workflow_events WHERE instance_id = :i ORDER BY seq",
                    i=instance)
    prev = events[seq - 2]["hash"] if seq > 1 else "0" * 64
    for e in events[seq - 1:]:
        if e["seq"] == seq:
            e.update(changes)
        e["prev_hash"] = prev
        e["hash"] = row_hash(tuple(e[c] for c in EventRow._fields))
        sets = ", ".join(f"{c} = :{c}" for c in ("prev_hash", "hash", *changes))
        w.sql(f"UPDATE workflow_events SET {sets} WHERE id = :id", **e)
        prev = e["hash"]
    last = events[-1]
    w.sql("UPDATE workflow_instances SET head_hash = :h, updated_at = :u, active = :a "
          "WHERE id = :i", h=last["hash"], u=last["at"], a=last["to_state"], i=instance)


def rehash_grant_chain(w: World, seq: int, **changes: Any) -> None:
    rows = w.rows("SELECT * FROM workflow_grant_events ORDER BY seq")
    prev = rows[seq - 2]["hash"] if seq > 1 else "0" * 64
    for r in rows[seq - 1:]:
        if r["seq"] == seq:
            r.update(changes)
        r["prev_hash"] = prev
        r["hash"] = grant_hash(GrantEventRow(**r))
        w.sql("UPDATE workflow_grant_events SET at = :at, prev_hash = :p, hash = :h "
              "WHERE seq = :s", at=r["at"], p=r["prev_hash"], h=r["hash"], s=r["seq"])
        prev = r["hash"]


def rehash_denial_chain(w: World, seq: int, **changes: Any) -> None:
    rows = w.rows("SELECT * FROM workflow_denials ORDER BY seq")
    prev = rows[seq - 2]["hash"] if seq > 1 else "0" * 64
    for r in rows[seq - 1:]:
        if r["seq"] == seq:
            r.update(changes)
        r["prev_hash"] = prev
        r["hash"] = denial_hash(DenialRow(**r))
        w.sql("UPDATE workflow_denials SET at = :at, prev_hash = :p, hash = :h "
              "WHERE seq = :s", at=r["at"], p=r["prev_hash"], h=r["hash"], s=r["seq"])
        prev = r["hash"]


@pytest.mark.parametrize("chain", ["events", "grant events", "denials"])
def test_verify_flags_time_running_backwards(world: World, chain: str) -> None:
    """A back-dated record with every hash recomputed verifies as a chain, but its time runs
    backwards: verify names it (events, grant chain, denial chain)."""
    w = world
    drop_triggers(w.db)
    early = "2020-01-01T00:00:00.000000Z"
    if chain == "events":
        rehash_chain(w, w.a, 2, at=early)
        expected: tuple[int | None, int | None] = (w.a, 2)
        prefix = ""
    elif chain == "grant events":
        rehash_grant_chain(w, 2, at=early)
        expected, prefix = (None, 2), "grants:"
    else:
        with pytest.raises(PermissionDenied):
            w.engine.fire(w.b, "workshop", actor="mallory", role=COORDINATOR,
                          evidence=WORKSHOP)
        rehash_denial_chain(w, 2, at=early)
        expected, prefix = (None, 2), "denials:"
    found = problems(w.engine.verify())
    match = [p for p in found if p[:2] == expected and p[2].startswith(prefix)]
    assert match and "backwards" in match[0][2], found


# --------------------------------------------------------------------------- the docs


def test_every_test_docs_audit_names_exists() -> None:
    """Every test docs/audit.md names as proof (`file.py::test`, or `::test` after it) exists."""
    import re

    root = Path(__file__).resolve().parent
    text = (root.parent / "docs" / "audit.md").read_text(encoding="utf-8")
    named: list[tuple[str, str]] = []
    for cell in re.findall(r"`([a-z_]*\.py)?::(test_\w+)`|`([a-z_]+\.py)`", text):
        file, test, alone = cell
        if alone:
            named.append((alone, ""))
            current = alone
        elif file:
            named.append((file, test))
            current = file
        else:
            named.append((current, test))
    assert len(named) > 10
    for file, test in named:
        source = (root / file).read_text(encoding="utf-8")
        assert not test or f"def {test}(" in source, f"{file}::{test} named in docs/audit.md"


# --------------------------------------------------------------------------- wf2: auth


def _fire_with_auth(w: World, auth: str) -> Any:
    return w.engine.fire(w.a, "workshop", actor="udomrat", role=OFFICER, evidence=WORKSHOP,
                         auth=auth)


def test_event_records_how_its_caller_was_authenticated_under_wf2(world: World) -> None:
    """An event fired with ``auth`` stores and shows it, is hashed as wf2 (not wf1), verifies."""
    r = _fire_with_auth(world, "token:7")
    assert r.event.auth == "token:7" and r.event.to_dict()["auth"] == "token:7"
    (row,) = world.rows("SELECT * FROM workflow_events WHERE id = :id", id=r.event.id)
    stored = EventRow(**row)
    assert stored.auth == "token:7"
    assert row_hash(stored) == r.event.hash != row_hash(stored._replace(auth=None))
    assert [e.auth for e in world.engine.history(world.a)] == [None, None, "token:7"]
    assert world.engine.verify().ok


@pytest.mark.parametrize("change", ["NULL", "'token:8'", "'session:0123456789ab'"])
def test_recorded_auth_blanked_or_changed_is_caught(world: World, change: str) -> None:
    """Blanking or changing an event's recorded authentication breaks its hash."""
    r = _fire_with_auth(world, "session:ffffffffffff")
    drop_triggers(world.db)
    world.sql(f"UPDATE workflow_events SET auth = {change} WHERE id = :id", id=r.event.id)
    assert problems(world.engine.verify())[0][:2] == (world.a, r.event.seq)


def test_auth_slipped_into_a_command_line_event_is_caught(world: World) -> None:
    """Claiming a wf1 event came through the service (an auth added later) is caught."""
    drop_triggers(world.db)
    world.sql("UPDATE workflow_events SET auth = 'token:1' WHERE instance_id = :i AND seq = 2",
              i=world.b)
    assert problems(world.engine.verify())[0][:2] == (world.b, 2)


def test_wf1_events_of_a_0006_database_verify_after_init(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`init` on a 0006 database with (wf1) events adds ``auth`` and ``hash_format``; its wf1
    events still verify, and wf3 events (with an auth) chain after them."""
    with Engine(backend) as e, monkeypatch.context() as m:
        m.setattr(audit_mod, "EVENT_FORMAT", None)  # what a workflow before 0011 wrote
        e.init()
        e.grant("udomrat", OFFICER, area="16")
        inst = e.start("leader-development", area=LOPBURI, fiscal_year=2564,
                       actor="udomrat", role=OFFICER)
        e.fire(inst.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
    # What a 0006 database looks like: no auth column, no hash_format column.
    execute(backend, "ALTER TABLE workflow_events DROP COLUMN hash_format",
            "ALTER TABLE workflow_events DROP COLUMN auth",
            "UPDATE workflow_alembic_version SET version_num = '0006'")
    with Engine(backend) as e:
        assert e.init()[0] == "0006"
        assert e.verify().ok
        e.fire(inst.id, "workshop", actor="udomrat", role=OFFICER, evidence=WORKSHOP,
               auth="token:1")
        result = e.verify()
        assert result.ok and result.events_checked == 3
        eng = sql_engine(backend)
        with eng.connect() as conn:
            formats = [r[0] for r in conn.execute(
                sa.text("SELECT hash_format FROM workflow_events ORDER BY seq"))]
        eng.dispose()
        assert formats == [None, None, "wf3"]


def test_account_made_admin_by_sql_is_caught_by_verify_and_digest(world: World) -> None:
    """`audit verify` holds the accounts to their chain: an account made admin by SQL is a
    problem; a digest also pins the account chain's head."""
    d = world.engine.digest()
    assert d.accounts is not None and d.accounts[0] == 1
    world.sql("UPDATE workflow_accounts SET admin = :t WHERE name = 'udomrat'", t=True)
    reasons = [r for _, _, r in problems(world.engine.verify())]
    assert any("admin or disabled flag" in r for r in reasons)
    world.sql("UPDATE workflow_accounts SET admin = :f WHERE name = 'udomrat'", f=False)
    drop_triggers(world.db)
    world.sql("DELETE FROM workflow_account_events")
    assert world.engine.verify(d.to_dict()).problems
