"""Grants that expire (`actors grant ... --until DATE`, CONTRACT §8): an expired grant refuses
like a revoked one, and verify's replay of the grant chain knows when each grant ended."""

from __future__ import annotations

import datetime as dt

import pytest

from helpers import KICKOFF, LOPBURI, OFFICER
from workflow import Engine, PermissionDenied, UsageError
from workflow.access import grants as _grants
from workflow.access import policy as _policy


def _later(days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z")


def test_until_is_the_end_of_the_day_in_thailand() -> None:
    """--until 2569-03-31 (BE) ends the grant at midnight Bangkok time, 17:00 UTC."""
    assert _grants.expiry("2569-03-31") == "2026-03-31T17:00:00.000000Z"
    assert _grants.expiry("2026-03-31") == "2026-03-31T17:00:00.000000Z"
    assert _grants.expiry(None) is None
    with pytest.raises(UsageError):
        _grants.expiry("31/03/2026")


def test_expired_grant_refuses_like_a_revoked_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its end the grant covers the start; after it, the fire is refused and recorded."""
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    with Engine(engine.url) as strict:
        g = strict.grant("udomrat", OFFICER, until=tomorrow)
        assert g.expires_at is not None and not g.expired()
        assert g.to_dict()["expires_at"] == g.expires_at
        inst = strict.start("leader-development", area=LOPBURI, fiscal_year=2564,
                            actor="udomrat", role=OFFICER)
        monkeypatch.setattr(_policy, "_now", lambda: _later(3))
        with pytest.raises(PermissionDenied, match="expired"):
            strict.fire(inst.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
        assert strict.denials()[-1].action == "kickoff"
        monkeypatch.undo()
        assert strict.verify().ok


def test_renewing_a_grant_and_verify(engine: Engine) -> None:
    """Granting again with another end replaces the grant (a new grant event); the same end
    again changes nothing; verify holds the grants in force to the chain."""
    with Engine(engine.url) as strict:
        first = strict.grant("udomrat", OFFICER, until="2600-01-01")
        same = strict.grant("udomrat", OFFICER, until="2600-01-01")
        assert same.granted_at == first.granted_at
        renewed = strict.grant("udomrat", OFFICER, until="2601-01-01")
        assert renewed.expires_at == "2058-01-01T17:00:00.000000Z"
        assert [g.expires_at for g in strict.grants("udomrat")] == [renewed.expires_at]
        strict.start("leader-development", area=LOPBURI, fiscal_year=2564, actor="udomrat",
                     role=OFFICER)
        assert strict.verify().ok
        with pytest.raises(UsageError):
            strict.grant("somchai", OFFICER, until="2000-01-01")


def test_verify_refuses_an_event_after_the_grant_ended(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event recorded after its actor's grant ended is not covered (verify names it)."""
    from workflow.audit import chain as _chain

    with Engine(engine.url) as strict:
        strict.grant("udomrat", OFFICER, until=dt.date.today() + dt.timedelta(days=1))
        # the policy is fooled (its clock is early), the event's own time is late
        monkeypatch.setattr(_chain, "now_utc", lambda: _later(3))
        monkeypatch.setattr(_policy, "_now", lambda: _later(-1))
        strict.start("leader-development", area=LOPBURI, fiscal_year=2564, actor="udomrat",
                     role=OFFICER)
        monkeypatch.undo()
        problems = strict.verify().problems
        assert any("no grant covered it" in p.reason for p in problems), problems
