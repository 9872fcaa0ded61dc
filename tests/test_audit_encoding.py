"""The hash encoding is one and the same wherever it is computed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workflow.audit import chain as audit
from workflow.storage.store import EventRow

text = st.text(max_size=40)


def test_row_fields_follow_the_encoding_order() -> None:
    """The fast path that slices rows relies on EventRow's column order matching the hash."""
    assert EventRow._fields[1:15] == audit._EVENT_FIELDS
    assert EventRow._fields[0] == "id" and EventRow._fields[15] == "hash"


@settings(max_examples=200, deadline=None)
@given(instance=st.integers(1, 2**31), seq=st.integers(1, 10**6), trigger=text, actor=text,
       evidence=text, note=st.none() | text, prev=text)
def test_event_hash_equals_row_hash(instance: int, seq: int, trigger: str, actor: str,
                                    evidence: str, note: str | None, prev: str) -> None:
    """Hashing an event's fields when writing equals re-hashing its stored row when verifying."""
    fields = dict(instance=instance, seq=seq, trigger=trigger, from_state=None, to_state="[]",
                  actor=actor, role="r", os_user="u", at="2026-01-01T00:00:00.000000Z",
                  evidence=evidence, note=note, definition_hash="d", policy="p", prev_hash=prev)
    digest = audit.event_hash(**fields)
    row = EventRow(1, instance, seq, trigger, None, "[]", actor, "r", "u",
                   "2026-01-01T00:00:00.000000Z", evidence, note, "d", "p", prev, digest)
    assert audit.row_hash(row) == digest
    assert audit.row_hash(tuple(row)) == digest
    found = list(audit.chains([tuple(row._replace(prev_hash=audit.GENESIS, seq=1,
                                                  hash=audit.row_hash(row._replace(
                                                      prev_hash=audit.GENESIS, seq=1))))]))
    assert found[0].problem is None


def test_any_change_changes_the_hash() -> None:
    """Changing any single hashed field of an event changes its hash."""
    base = EventRow(1, 7, 2, "kickoff", '["planned"]', '["kicked_off"]', "udomrat",
                    "provincial_officer", "root", "2026-01-01T00:00:00.000000Z",
                    '{"date":"2021-02-17"}', None, "d" * 64, "grants", "0" * 64, "")
    original = audit.row_hash(base)
    for i, name in enumerate(audit._EVENT_FIELDS, start=1):
        value = base[i]
        changed = (value + 1) if isinstance(value, int) else ("x" if value is None else value + "x")
        assert audit.row_hash(base._replace(**{name: changed})) != original, name
