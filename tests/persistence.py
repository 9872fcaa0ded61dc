"""The storage contract, written once: what a bare ``Store`` promises on any backend.

In the style of eventsourcing's ``tests/persistence.py``: ``StoreContract`` holds the tests and
is never collected itself (its name does not start with ``Test``); ``test_storage_contract.py``
runs it once per backend by subclassing it and giving the ``url`` fixture (the URL of an EMPTY
database). Each test talks to the ``Store`` alone, with no Engine, program or policy above it:
rows in, rows out, and driver errors out as ``WorkflowError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from workflow import (
    Conflict,
    DatabaseUnavailable,
    DefinitionChanged,
    SchemaOutOfDate,
    WorkflowError,
)
from workflow.storage.store import (
    SCHEMA_REVISION,
    VERSION_TABLE,
    DenialRow,
    EventRow,
    GrantEventRow,
    GrantRow,
    InstanceRow,
    KeyRow,
    Store,
)

AT = "2026-12-01T00:00:00.000000Z"
LATER = "2026-12-02T00:00:00.000000Z"
H0, H1, H2, H3 = ("0" * 64, "1" * 64, "2" * 64, "3" * 64)


def instance_values(definition_id: int, **changes: Any) -> dict[str, Any]:
    """The columns of a new instance row (every one the table requires)."""
    values: dict[str, Any] = {
        "program": "khok_nong_na",
        "program_version": 1,
        "definition_id": definition_id,
        "area_code": "160117",
        "province_code": "16",
        "fiscal_year": 2564,
        "duplicate_no": 0,
        "title": None,
        "state": "planning",
        "active": '["planning"]',
        "version": 0,
        "head_hash": H0,
        "created_at": AT,
        "updated_at": AT,
    }
    values.update(changes)
    return values


def event_values(instance_id: int, seq: int, **changes: Any) -> dict[str, Any]:
    """The columns of a new event row (all of EventRow but the id)."""
    values: dict[str, Any] = {
        "instance_id": instance_id,
        "seq": seq,
        "trigger": f"step{seq}",
        "from_state": None if seq == 1 else f"s{seq - 1}",
        "to_state": f"s{seq}",
        "actor": "somchai",
        "role": "coordinator",
        "os_user": "tester",
        "at": AT,
        "evidence": "{}",
        "note": None,
        "definition_hash": H1,
        "policy": "allow_all",
        "prev_hash": H0,
        "hash": f"{seq:064d}",
        "auth": None,
        "hash_format": "wf3",
    }
    values.update(changes)
    return values


def denial_values(seq: int | None, **changes: Any) -> dict[str, Any]:
    """The columns of a new denial row."""
    values: dict[str, Any] = {
        "actor": "mallory",
        "role": "coordinator",
        "action": "fire",
        "program": "khok_nong_na",
        "instance_id": None,
        "area_code": "160117",
        "reason": "no grant",
        "os_user": "tester",
        "at": AT,
        "seq": seq,
        "prev_hash": H0 if seq is not None else "",
        "hash": f"{seq:064d}" if seq is not None else "",
    }
    values.update(changes)
    return values


class StoreContract:
    """Tests every backend's Store must pass; a subclass provides ``url`` (an empty database)."""

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError("a backend's subclass gives the URL of an empty database")

    @pytest.fixture
    def store(self, url: str) -> Iterator[Store]:
        """A Store on a freshly initialised, empty schema."""
        store = Store(url)
        store.init()
        try:
            yield store
        finally:
            store.dispose()

    @pytest.fixture
    def definition_id(self, store: Store) -> int:
        """The id of one stored program version."""
        return store.run(
            lambda conn: store.ensure_definition(
                conn, "khok_nong_na", 1, H1, "khok.yaml", "id: khok_nong_na", AT
            ),
            write=True,
        )

    @staticmethod
    def new_instance(store: Store, definition_id: int, **changes: Any) -> int:
        return store.run(
            lambda conn: store.insert_instance(conn, instance_values(definition_id, **changes)),
            write=True,
        )

    @staticmethod
    def add_events(store: Store, instance_id: int, seqs: range) -> None:
        def work(conn: Connection) -> None:
            for seq in seqs:
                store.insert_event(conn, event_values(instance_id, seq))

        store.run(work, write=True)

    # ------------------------------------------------------------------ schema

    def test_init_twice_is_safe(self, url: str) -> None:
        """init creates the schema at SCHEMA_REVISION; a second init changes nothing."""
        store = Store(url)
        try:
            assert store.init() == (None, SCHEMA_REVISION)
            assert store.init() == (SCHEMA_REVISION, SCHEMA_REVISION)
            assert store.current_revision() == SCHEMA_REVISION
            store.check_schema()
        finally:
            store.dispose()

    def test_missing_schema_is_schema_out_of_date(self, url: str) -> None:
        """Without init, check_schema, run and snapshot raise SchemaOutOfDate (current None)."""
        store = Store(url)
        try:
            assert store.current_revision() is None
            with pytest.raises(SchemaOutOfDate) as caught:
                store.check_schema()
            assert caught.value.current is None and caught.value.expected == SCHEMA_REVISION
            with pytest.raises(SchemaOutOfDate):
                store.run(lambda conn: store.get_instance(conn, 1))
            with pytest.raises(SchemaOutOfDate), store.snapshot():
                pass
            if store.sqlite_path is not None:
                assert not store.sqlite_path.exists(), "a read created the database file"
        finally:
            store.dispose()

    @pytest.mark.parametrize(("recorded", "newer"), [("0004", False), ("9999", True)])
    def test_other_revision_is_schema_out_of_date(
        self, store: Store, recorded: str, newer: bool
    ) -> None:
        """A schema at an older or newer revision is refused, saying which (``newer``)."""

        def set_revision(conn: Connection) -> None:
            conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '{recorded}'")

        store.run(set_revision, write=True)
        other = Store(store.url)
        try:
            with pytest.raises(SchemaOutOfDate) as caught:
                other.run(lambda conn: None)
            assert (caught.value.current, caught.value.newer) == (recorded, newer)
        finally:
            other.dispose()

    # ------------------------------------------------------------------ definitions

    def test_definition_stored_once_and_pinned(self, store: Store, definition_id: int) -> None:
        """ensure_definition stores a version once; the same version with other text is refused."""

        def again(content_hash: str) -> int:
            return store.run(
                lambda conn: store.ensure_definition(
                    conn, "khok_nong_na", 1, content_hash, "khok.yaml", "id: khok_nong_na", LATER
                ),
                write=True,
            )

        assert again(H1) == definition_id
        with pytest.raises(DefinitionChanged):
            again(H2)
        row = store.run(lambda conn: store.definition(conn, definition_id))
        assert (row.program, row.version, row.content_hash, row.source) == (
            "khok_nong_na", 1, H1, "bundled",
        )
        assert store.run(store.all_definitions) == [row]

    # ------------------------------------------------------------------ instances

    def test_instance_insert_lock_and_get(self, store: Store, definition_id: int) -> None:
        """An inserted instance reads back whole, locked or not; a missing id is None."""
        instance_id = self.new_instance(store, definition_id)
        expected = InstanceRow(id=instance_id, **instance_values(definition_id))
        assert store.run(lambda conn: store.lock_instance(conn, instance_id), write=True) == (
            expected
        )
        assert store.run(lambda conn: store.get_instance(conn, instance_id)) == expected
        assert store.run(lambda conn: store.get_instance(conn, instance_id + 99)) is None
        locked = store.run(lambda conn: store.lock_instances(conn, [instance_id]), write=True)
        assert locked == {instance_id: expected}

    def test_advance_instance_is_compare_and_swap(self, store: Store, definition_id: int) -> None:
        """advance_instance moves a row at the expected version; a stale version changes nothing."""
        instance_id = self.new_instance(store, definition_id)

        def advance(version: int, state: str) -> bool:
            return store.run(
                lambda conn: store.advance_instance(
                    conn, instance_id, version, state, f'["{state}"]', H2, LATER
                ),
                write=True,
            )

        assert advance(0, "working") is True
        moved = store.run(lambda conn: store.get_instance(conn, instance_id))
        assert moved is not None
        assert (moved.state, moved.version, moved.head_hash, moved.updated_at) == (
            "working", 1, H2, LATER,
        )
        assert advance(0, "elsewhere") is False
        assert store.run(lambda conn: store.get_instance(conn, instance_id)) == moved

    def test_advance_instances_counts_only_current_rows(
        self, store: Store, definition_id: int
    ) -> None:
        """advance_instances moves the rows still at their expected version, and counts them."""
        a = self.new_instance(store, definition_id, area_code="160101")
        b = self.new_instance(store, definition_id, area_code="160102")
        rows = store.run(lambda conn: store.lock_instances(conn, [b, a]), write=True)
        moves = [
            (rows[a]._replace(state="done", version=1, updated_at=LATER), 0),
            (rows[b]._replace(state="done", version=1, updated_at=LATER), 7),  # stale
        ]
        assert store.run(lambda conn: store.advance_instances(conn, moves), write=True) == 1
        after = store.run(lambda conn: store.lock_instances(conn, [a, b]), write=True)
        assert after[a] == moves[0][0]
        assert after[b] == rows[b]

    def test_set_head_and_find_duplicate(self, store: Store, definition_id: int) -> None:
        """set_head rewrites the head hash; find_duplicate gives (first id, next duplicate no)."""
        first = self.new_instance(store, definition_id)
        self.new_instance(store, definition_id, duplicate_no=1)
        store.run(lambda conn: store.set_head(conn, first, H3), write=True)
        row = store.run(lambda conn: store.get_instance(conn, first))
        assert row is not None and row.head_hash == H3
        assert store.run(
            lambda conn: store.find_duplicate(conn, "khok_nong_na", "160117", 2564)
        ) == (first, 2)
        assert store.run(
            lambda conn: store.find_duplicate(conn, "khok_nong_na", "160117", 2565)
        ) == (None, 0)

    def test_duplicate_start_is_conflict(self, store: Store, definition_id: int) -> None:
        """A second instance with the same (program, area, year, duplicate_no) is a Conflict."""
        self.new_instance(store, definition_id)
        with pytest.raises(Conflict):
            self.new_instance(store, definition_id)
        assert len(store.run(store.list_instances)) == 1

    def test_list_instances_and_report(self, store: Store, definition_id: int) -> None:
        """list_instances filters by program, state, area prefix and year; report groups them."""
        a = self.new_instance(store, definition_id, area_code="160101")
        b = self.new_instance(store, definition_id, area_code="160201", state="done")
        c = self.new_instance(
            store, definition_id, area_code="500101", province_code="50", fiscal_year=2565
        )

        def ids(**filters: Any) -> list[int]:
            return [r.id for r in store.run(lambda conn: store.list_instances(conn, **filters))]

        assert ids() == [a, b, c]
        assert ids(area="16") == [a, b]
        assert ids(area="1601") == [a]
        assert ids(area="160201") == [b]
        assert ids(state="done") == [b]
        assert ids(fiscal_year=2565) == [c]
        assert ids(program="other") == []
        assert ids(limit=2) == [a, b]
        report = store.run(lambda conn: store.report(conn, fiscal_year=2564))
        assert sorted(report) == [
            ("khok_nong_na", "16", "done", '["planning"]', definition_id, 1),
            ("khok_nong_na", "16", "planning", '["planning"]', definition_id, 1),
        ]

    # ------------------------------------------------------------------ events

    def test_events_append_and_read_back_in_seq_order(
        self, store: Store, definition_id: int
    ) -> None:
        """Events read back whole and in seq order (events_of, event_at, triggers_of)."""
        instance_id = self.new_instance(store, definition_id)
        self.add_events(store, instance_id, range(1, 4))
        rows = store.run(lambda conn: store.events_of(conn, instance_id))
        assert [r.seq for r in rows] == [1, 2, 3]
        assert rows[1] == EventRow(id=rows[1].id, **event_values(instance_id, 2))
        assert store.run(lambda conn: store.event_at(conn, instance_id, 2)) == rows[1]
        assert store.run(lambda conn: store.event_at(conn, instance_id, 9)) is None
        assert store.run(lambda conn: store.triggers_of(conn, instance_id)) == {
            "step1", "step2", "step3",
        }

    def test_insert_events_returns_ids_in_order(self, store: Store, definition_id: int) -> None:
        """insert_events stores a batch and returns each event's id, in the batch's order."""
        a = self.new_instance(store, definition_id, area_code="160101")
        b = self.new_instance(store, definition_id, area_code="160102")
        batch = [event_values(a, 1), event_values(b, 1), event_values(a, 2)]
        ids = store.run(lambda conn: store.insert_events(conn, batch), write=True)
        assert store.run(lambda conn: store.insert_events(conn, []), write=True) == []
        stored = {
            (r.instance_id, r.seq): r.id
            for i in (a, b)
            for r in store.run(lambda conn, i=i: store.events_of(conn, i))
        }
        assert ids == [stored[(a, 1)], stored[(b, 1)], stored[(a, 2)]]

    def test_same_event_seq_twice_is_conflict(self, store: Store, definition_id: int) -> None:
        """Two events with one (instance, seq) collide: a Conflict, and nothing is stored."""
        instance_id = self.new_instance(store, definition_id)

        def twice(conn: Connection) -> None:
            store.insert_event(conn, event_values(instance_id, 1))
            store.insert_event(conn, event_values(instance_id, 1, hash=H3))

        with pytest.raises(Conflict):
            store.run(twice, write=True)
        assert store.run(lambda conn: store.events_of(conn, instance_id)) == []

    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE workflow_events SET note = 'edited'",
            "DELETE FROM workflow_events",
            "UPDATE workflow_grant_events SET action = 'grant2'",
            "DELETE FROM workflow_grant_events",
            "UPDATE workflow_denials SET reason = 'none'",
            "DELETE FROM workflow_denials",
        ],
    )
    def test_audit_tables_are_append_only(
        self, store: Store, definition_id: int, statement: str
    ) -> None:
        """The triggers refuse UPDATE and DELETE on events, grant events and denials."""
        instance_id = self.new_instance(store, definition_id)
        self.add_events(store, instance_id, range(1, 2))
        store.run(
            lambda conn: store.insert_grant_event(
                conn, GrantEventRow(1, "grant", "{}", "admin", "tester", AT, H0, H1)
            ),
            write=True,
        )
        store.run(lambda conn: store.insert_denial(conn, denial_values(1)), write=True)
        with pytest.raises(WorkflowError) as caught:
            store.run(lambda conn: conn.exec_driver_sql(statement), write=True)
        assert "append-only" in str(caught.value)
        assert len(store.run(lambda conn: store.events_of(conn, instance_id))) == 1
        assert len(store.run(store.grant_events)) == 1
        assert len(store.run(store.denials)) == 1

    # ------------------------------------------------------------------ idempotency keys

    def test_idempotency_key_insert_and_find(self, store: Store, definition_id: int) -> None:
        """A key reads back whole, an unknown key is None, a key stored twice is a Conflict."""
        instance_id = self.new_instance(store, definition_id)

        def insert(conn: Connection) -> None:
            store.insert_key(conn, "k-1", H1, instance_id, 1, AT, H2)

        store.run(insert, write=True)
        assert store.run(lambda conn: store.find_key(conn, "k-1")) == KeyRow(
            "k-1", H1, instance_id, 1, AT, H2
        )
        assert store.run(lambda conn: store.find_key(conn, "k-2")) is None
        with pytest.raises(Conflict):
            store.run(insert, write=True)

    # ------------------------------------------------------------------ grants and denials

    def test_grants_insert_find_list_delete(self, store: Store) -> None:
        """Grants read back by actor (locked or not), by scope, all in order; delete removes one."""

        def grant(actor: str, area: str) -> None:
            values = {
                "actor": actor,
                "role": "coordinator",
                "area_code": area,
                "program": "",
                "granted_by": "admin",
                "granted_at": AT,
            }
            store.run(lambda conn: store.insert_grant(conn, values), write=True)

        grant("somsri", "16")
        grant("somchai", "160117")
        grant("somchai", "")
        found = store.run(
            lambda conn: store.find_grant(conn, "somchai", "coordinator", "160117", "")
        )
        assert isinstance(found, GrantRow) and found.granted_by == "admin"
        assert store.run(
            lambda conn: store.find_grant(conn, "somchai", "officer", "160117", "")
        ) is None
        mine = store.run(lambda conn: store.grants_for(conn, "somchai"))
        assert sorted(g.area_code for g in mine) == ["", "160117"]
        locked = store.run(lambda conn: store.grants_for(conn, "somchai", lock=True), write=True)
        assert sorted(locked) == sorted(mine)
        assert [(g.actor, g.area_code) for g in store.run(store.all_grants)] == [
            ("somchai", ""), ("somchai", "160117"), ("somsri", "16"),
        ]
        store.run(lambda conn: store.delete_grant(conn, found.id), write=True)
        assert [g.area_code for g in store.run(lambda conn: store.grants_for(conn, "somchai"))] == [
            ""
        ]
        with pytest.raises(Conflict):
            grant("somsri", "16")

    def test_grant_event_chain_head(self, store: Store) -> None:
        """The grant chain starts empty; its head is the highest seq; events read back in order."""
        assert store.run(store.lock_grant_chain, write=True) is None
        rows = [
            GrantEventRow(1, "grant", '{"actor":"a"}', "admin", "tester", AT, H0, H1),
            GrantEventRow(2, "revoke", '{"actor":"a"}', "admin", "tester", LATER, H1, H2),
        ]

        def append(conn: Connection) -> None:
            for row in rows:
                store.insert_grant_event(conn, row)

        store.run(append, write=True)
        assert store.run(store.lock_grant_chain, write=True) == rows[1]
        assert store.run(store.grant_head) == rows[1]
        assert store.run(store.grant_events) == rows

    def test_denials_chain_head_and_order(self, store: Store) -> None:
        """The denial head is the highest seq; reads go in seq order (unchained last in streams)."""
        assert store.run(store.lock_denial_chain, write=True) is None

        def record(conn: Connection) -> None:
            store.insert_denial(conn, denial_values(None, reason="before chaining"))
            store.insert_denial(conn, denial_values(2, actor="eve"))
            store.insert_denial(conn, denial_values(1))

        store.run(record, write=True)
        head = store.run(store.lock_denial_chain, write=True)
        assert isinstance(head, DenialRow) and (head.seq, head.actor) == (2, "eve")
        assert store.run(store.denial_head) == head
        chained = [d for d in store.run(store.denials) if d.seq is not None]
        assert [d.seq for d in chained] == [1, 2]
        assert len(store.run(lambda conn: store.denials(conn, 2))) == 2
        with store.snapshot() as conn:
            streamed = list(store.stream_denials(conn))
        assert [d.seq for d in streamed] == [1, 2, None]

    # ------------------------------------------------------------------ snapshots and streams

    def test_snapshot_streams_everything_in_order(self, store: Store, definition_id: int) -> None:
        """Snapshot streams: instances by id, events by (instance, seq), keys by key."""
        a = self.new_instance(store, definition_id, area_code="160101")
        b = self.new_instance(store, definition_id, area_code="160102")
        self.add_events(store, b, range(1, 3))
        self.add_events(store, a, range(1, 3))

        def keys(conn: Connection) -> None:
            store.insert_key(conn, "z", H1, a, 1, AT, "1" * 64)
            store.insert_key(conn, "m", H1, b, 1, AT, "1" * 64)

        store.run(keys, write=True)
        with store.snapshot() as conn:
            instances = [r.id for r in store.stream_instances(conn)]
            events = [(r.instance_id, r.seq) for r in store.stream_events(conn)]
            key_rows = [k.key for k in store.stream_keys(conn)]
            grant_head, denial_head = store.grant_head(conn), store.denial_head(conn)
        assert instances == [a, b]
        assert events == [(a, 1), (a, 2), (b, 1), (b, 2)]
        assert key_rows == ["m", "z"]
        assert (grant_head, denial_head) == (None, None)

    def test_audit_log_and_non_bundled(self, store: Store, definition_id: int) -> None:
        """audit_log adds program and area to events; non_bundled_instances finds extra rules."""
        a = self.new_instance(store, definition_id, area_code="160101")
        self.add_events(store, a, range(1, 3))
        log = store.run(lambda conn: list(store.audit_log(conn, instance=a)))
        assert [(e.seq, p, area) for e, p, area in log] == [
            (1, "khok_nong_na", "160101"), (2, "khok_nong_na", "160101"),
        ]
        assert store.run(lambda conn: list(store.audit_log(conn, actor="nobody"))) == []
        assert store.run(store.non_bundled_instances) == []
        extra = store.run(
            lambda conn: store.ensure_definition(
                conn, "khok_nong_na", 2, H2, "extra/khok.yaml", "id: khok_nong_na", AT,
                source="extra/khok.yaml",
            ),
            write=True,
        )
        b = self.new_instance(store, extra, area_code="160102", program_version=2)
        assert store.run(store.non_bundled_instances) == [
            (b, "khok_nong_na", 2, "extra/khok.yaml")
        ]

    # ------------------------------------------------------------------ transactions and faults

    def test_run_rolls_back_when_fn_fails(self, store: Store, definition_id: int) -> None:
        """A function that raises leaves nothing behind: its whole transaction rolls back."""

        class Refused(WorkflowError):
            pass

        def work(conn: Connection) -> None:
            store.insert_instance(conn, instance_values(definition_id))
            raise Refused("no")

        with pytest.raises(Refused):
            store.run(work, write=True)
        assert store.run(store.list_instances) == []

    def test_driver_errors_become_workflow_errors(self, store: Store) -> None:
        """Driver errors leave run as DatabaseUnavailable (cause kept; a lost table: damaged)."""
        with pytest.raises(DatabaseUnavailable) as caught:
            store.run(lambda conn: conn.exec_driver_sql("SELEC 1"))
        assert caught.value.__cause__ is not None
        assert caught.value.url == store.safe_url
        with pytest.raises(DatabaseUnavailable, match="damaged"):
            store.run(lambda conn: conn.exec_driver_sql("SELECT * FROM workflow_missing"))
        # The Store is still usable after a failed transaction.
        assert store.run(store.list_instances) == []
