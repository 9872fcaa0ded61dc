"""The hash encoding is one and the same wherever it is computed; wf3 is injective and tight."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflow.audit import chain as audit
from workflow.storage.store import EventRow

text = st.text(max_size=40)
AT = "2026-01-01T00:00:00.000000Z"


def test_row_fields_follow_the_encoding_order() -> None:
    """The fast path that slices rows relies on EventRow's column order matching the hash."""
    assert EventRow._fields[1:15] == audit._EVENT_FIELDS
    assert EventRow._fields[0] == "id" and EventRow._fields[15] == "hash"
    assert EventRow._fields[16:] == ("auth", "hash_format")


@settings(max_examples=200, deadline=None)
@given(instance=st.integers(1, 2**31), seq=st.integers(1, 10**6), trigger=text, actor=text,
       evidence=text, note=st.none() | text, prev=text, auth=st.none() | text,
       hash_format=st.sampled_from([None, "wf3"]))
def test_event_hash_equals_row_hash(instance: int, seq: int, trigger: str, actor: str,
                                    evidence: str, note: str | None, prev: str,
                                    auth: str | None, hash_format: str | None) -> None:
    """Hashing an event's fields when writing equals re-hashing its stored row when verifying,
    in every format (wf1, wf2 with auth, wf3), and the chain scan's fast path agrees."""
    fields = dict(instance=instance, seq=seq, trigger=trigger, from_state=None, to_state="[]",
                  actor=actor, role="r", os_user="u", at=AT,
                  evidence=evidence, note=note, definition_hash="d", policy="p", prev_hash=prev)
    digest = audit.event_hash(**fields, auth=auth, hash_format=hash_format)
    row = EventRow(1, instance, seq, trigger, None, "[]", actor, "r", "u",
                   AT, evidence, note, "d", "p", prev, digest, auth, hash_format)
    assert audit.row_hash(row) == digest
    assert audit.row_hash(tuple(row)) == digest
    first = row._replace(prev_hash=audit.GENESIS, seq=1)
    found = list(audit.chains([tuple(first._replace(hash=audit.row_hash(first)))]))
    assert found[0].problem is None


def test_legacy_rows_hash_as_wf1_or_wf2() -> None:
    """A row without ``hash_format`` is hashed as before 0011: wf1, or wf2 with an auth."""
    values = (7, 1, "start", None, '["planned"]', "a", "r", "u", AT, "{}", None, "d", "p",
              audit.GENESIS)
    wf1 = audit._ENCODER.encode(["wf1", *values]).encode()
    wf2 = audit._ENCODER.encode(["wf2", *values, "token:1"]).encode()
    assert audit.encode_event((*values, None), None) == wf1
    assert audit.encode_event((*values, "token:1"), None) == wf2
    assert audit.encode_event((*values, None), "wf3").startswith(b"wf3 7 1 5 -1 11 ")
    with pytest.raises(audit.UnknownFormat):
        audit.encode_event((*values, None), "wf4")


def _decode_wf3(payload: bytes) -> tuple[Any, ...]:
    """docs/audit.md's wf3, read back: the header's numbers, then the texts by length."""
    text = payload.decode("utf-8")
    header, _, body = text.partition("\n")
    tag, *numbers = header.split(" ")
    assert tag == "wf3" and len(numbers) == 15
    instance, seq, *lengths = (int(n) for n in numbers)
    texts: list[str | None] = []
    at = 0
    for n in lengths:
        texts.append(None if n == -1 else body[at : at + n])
        at += max(n, 0)
    assert at == len(body)
    return (instance, seq, *texts)


wf3_fields = st.tuples(
    st.integers(-(2**63), 2**63), st.integers(-(2**63), 2**63),
    *([st.none() | st.text()] * 13),
)


@settings(max_examples=300, deadline=None)
@given(values=wf3_fields)
def test_wf3_round_trip(values: tuple[Any, ...]) -> None:
    """A wf3 payload reads back to exactly the fields it encodes (so no two events share one),
    and no wf3 payload is a wf1/wf2 JSON payload (a relabelled event cannot keep its hash)."""
    payload = audit.wf3_payload(values)
    assert _decode_wf3(payload) == values
    assert payload.startswith(b"wf3 ") and not payload.startswith(b"[")


@pytest.mark.parametrize("bad", [1.0, True, "1", b"1", None])
def test_wf3_is_strict_about_integers(bad: object) -> None:
    """wf3 refuses an instance or seq that is not an int (a float, bool, text, bytes, null)."""
    values = [7, 1, *["x"] * 13]
    for i in (0, 1):
        changed = list(values)
        changed[i] = bad
        with pytest.raises(TypeError):
            audit.wf3_payload(changed)


@pytest.mark.parametrize("bad", [1, 1.5, b"x", ["x"]])
def test_wf3_is_strict_about_texts(bad: object) -> None:
    """wf3 refuses a text field holding anything but text or null."""
    with pytest.raises(TypeError):
        audit.wf3_payload([7, 1, "t", bad, *["x"] * 11])


def _base(hash_format: str | None, auth: str | None = "token:3") -> EventRow:
    row = EventRow(1, 7, 1, "start", None, '["planned"]', "udomrat", "provincial_officer",
                   "root", AT, '{"date":"2021-02-17"}', None, "d" * 64, "grants",
                   audit.GENESIS, "", auth, hash_format)
    return row._replace(hash=audit.row_hash(row))


def test_any_change_changes_the_hash() -> None:
    """Changing any single hashed field of an event changes its hash, in every format."""
    for hash_format, auth in ((None, None), (None, "token:3"), ("wf3", None), ("wf3", "t")):
        base = _base(hash_format, auth)
        for i, name in enumerate((*audit._EVENT_FIELDS, "auth"), start=1):
            i = 16 if name == "auth" else i
            value = base[i]
            if name == "auth" and hash_format is None:
                continue  # wf1 vs wf2: the tests below
            changed = (value + 1) if isinstance(value, int) else (
                "x" if value is None else value + "x")
            assert audit.row_hash(base._replace(**{name: changed})) != base.hash, name


def _problem(row: EventRow) -> str | None:
    [chain] = audit.chains([tuple(row)])
    return chain.problem.reason if chain.problem else None


# Values a changed field may take: text (including empty, non-ASCII, a NUL), null, numbers.
other_values = st.one_of(st.text(max_size=20), st.none(), st.integers(), st.binary(max_size=4))


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from([*audit._EVENT_FIELDS, "auth", "hash_format"]),
       value=other_values, auth=st.none() | st.just("session:0123456789ab"))
def test_any_change_to_a_wf3_event_is_caught(field: str, value: object,
                                             auth: str | None) -> None:
    """Any change to any hashed field of a wf3 event (its format tag included) makes the
    chain scan report the event; an unchanged one passes."""
    base = _base("wf3", auth)
    assert _problem(base) is None
    if getattr(base, field) == value and type(getattr(base, field)) is type(value):
        return
    changed = base._replace(**{field: value})
    assert _problem(changed) is not None, (field, value)


@pytest.mark.parametrize("stored,relabelled", [
    ("wf3", None), ("wf3", "wf1"), ("wf3", "wf2"), (None, "wf3"), ("wf3", "WF3"),
])
@pytest.mark.parametrize("auth", [None, "token:3"])
def test_a_relabelled_format_is_caught(stored: str | None, relabelled: str | None,
                                       auth: str | None) -> None:
    """A downgrade (wf3 relabelled as wf1/wf2) or an upgrade (wf1/wf2 relabelled as wf3)
    breaks the event's hash; a format no workflow writes is named as such."""
    reason = _problem(_base(stored, auth)._replace(hash_format=relabelled))
    assert reason is not None
    if relabelled in ("wf1", "wf2", "WF3"):
        assert "not one workflow writes" in reason
    else:
        assert "hash does not match" in reason
