"""Who may do what (CONTRACT §5), on every backend: grants scoped by role, area and program,
read-only auditors, revocation, recorded denials, and the audit of the rules themselves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from workflow import (
    AccessRequest,
    AreaNotFound,
    Engine,
    Grant,
    GrantNotFound,
    PermissionDenied,
    ProgramNotFound,
    RoleNotAllowed,
    UsageError,
)

LOPBURI_TAMBON = "160117"  # Bang Khan Mak, Mueang Lop Buri, Lop Buri (16)
BURIRAM_TAMBON = "312203"  # Sa Bua, Khaen Dong, Buri Ram (31)
KICKOFF = {"date": "2564-02-17", "venue": "ศูนย์เรียนรู้", "chair": "นายอำเภอ"}


@pytest.fixture
def guarded(engine: Engine) -> Iterator[Engine]:
    """An engine on the same database enforcing the stored grants (the default policy)."""
    eng = Engine(engine.url)
    try:
        yield eng
    finally:
        eng.close()


def start(eng: Engine, actor: str, area: str = LOPBURI_TAMBON, **kw: Any) -> int:
    return eng.start("leader-development", area=area, fiscal_year=2564, actor=actor,
                     role=kw.pop("role", "provincial_officer"), **kw).id


def test_no_grant_is_refused_and_recorded(guarded: Engine) -> None:
    """Without a grant, start is refused (exit 4), nothing is written, and a denial is kept."""
    with pytest.raises(PermissionDenied) as caught:
        start(guarded, "somchai")
    assert caught.value.exit_code == 4
    assert guarded.list() == []
    [denial] = guarded.denials()
    assert (denial.actor, denial.role, denial.action) == ("somchai", "provincial_officer", "start")
    assert "no grant" in denial.reason


def test_province_grant_works_inside_and_is_refused_outside(guarded: Engine) -> None:
    """A grant for province 16 covers its tambons and nothing in province 31."""
    guarded.grant("udomrat", "provincial_officer", area="16")
    inside = start(guarded, "udomrat")
    guarded.fire(inside, "kickoff", actor="udomrat", role="provincial_officer", evidence=KICKOFF)
    with pytest.raises(PermissionDenied, match="do not cover area 312203"):
        start(guarded, "udomrat", area=BURIRAM_TAMBON)
    assert [i.area.code for i in guarded.list()] == [LOPBURI_TAMBON]


def test_program_scoped_grant(guarded: Engine) -> None:
    """A grant limited to one program allows that program only."""
    guarded.grant("dechō", "provincial_officer", program="one-plan")
    guarded.start("one-plan", area="31", fiscal_year=2565, actor="dechō",
                  role="provincial_officer")
    with pytest.raises(PermissionDenied):
        start(guarded, "dechō", area=BURIRAM_TAMBON)


def test_role_not_granted_is_refused(guarded: Engine) -> None:
    """Holding one role does not let an actor act in another."""
    guarded.grant("udomrat", "provincial_officer", area="16")
    guarded.grant("somchai", "coordinator", area="16")
    instance = start(guarded, "udomrat")
    with pytest.raises(PermissionDenied, match="no grant for role 'provincial_officer'"):
        guarded.fire(instance, "kickoff", actor="somchai", role="provincial_officer",
                     evidence=KICKOFF)
    result = guarded.fire(instance, "kickoff", actor="somchai", role="coordinator",
                          evidence=KICKOFF)
    assert result.instance.state == "kicked_off"


def test_role_the_transition_does_not_allow_is_refused_and_recorded(guarded: Engine) -> None:
    """A granted role the transition does not list is refused (RoleNotAllowed) and recorded."""
    guarded.grant("udomrat", "provincial_officer", area="16")
    guarded.grant("somchai", "coordinator", area="16")
    instance = start(guarded, "udomrat")
    guarded.fire(instance, "kickoff", actor="udomrat", role="provincial_officer",
                 evidence=KICKOFF)
    guarded.fire(instance, "workshop", actor="somchai", role="coordinator",
                 evidence={"date": "2564-03-01", "venue": "อบต.", "participants": 25})
    with pytest.raises(RoleNotAllowed):
        guarded.fire(instance, "report_progress", actor="udomrat", role="provincial_officer",
                     evidence={"date": "2564-03-10", "summary": "x"})
    assert guarded.denials()[-1].action == "report_progress"
    assert guarded.get(instance).version == 3


def test_auditor_reads_everything_and_fires_nothing(guarded: Engine) -> None:
    """An auditor can read every instance and the trail, and is refused any change."""
    guarded.grant("udomrat", "provincial_officer", area="16")
    guarded.grant("auditor-1", "auditor")
    instance = start(guarded, "udomrat")
    assert guarded.get(instance).id == instance
    assert len(guarded.history(instance)) == 1
    assert guarded.verify().ok
    with pytest.raises(PermissionDenied, match="read-only"):
        guarded.fire(instance, "kickoff", actor="auditor-1", role="auditor", evidence=KICKOFF)
    with pytest.raises((PermissionDenied, RoleNotAllowed)):
        start(guarded, "auditor-1", role="auditor")
    assert guarded.available_triggers(instance, actor="auditor-1") == ()
    assert guarded.get(instance).version == 1


def test_revocation_takes_effect_at_once(guarded: Engine) -> None:
    """After revoke, the very next change by that actor is refused."""
    guarded.grant("udomrat", "provincial_officer", area="16")
    instance = start(guarded, "udomrat")
    guarded.revoke("udomrat", "provincial_officer", area="16")
    with pytest.raises(PermissionDenied):
        guarded.fire(instance, "kickoff", actor="udomrat", role="provincial_officer",
                     evidence=KICKOFF)
    assert guarded.grants("udomrat") == []


def test_revoking_a_grant_not_held_is_not_found(guarded: Engine) -> None:
    """Revoking a grant that does not exist says so with exit 3."""
    guarded.grant("udomrat", "provincial_officer", area="16")
    with pytest.raises(GrantNotFound) as caught:
        guarded.revoke("udomrat", "provincial_officer", area="31")
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(("role", "kw", "error"), [
    ("superuser", {}, UsageError),
    ("coordinator", {"area": "99"}, AreaNotFound),
    ("coordinator", {"program": "no-such-program"}, ProgramNotFound),
])
def test_bad_grants_are_refused(guarded: Engine, role: str, kw: dict[str, str],
                                error: type[Exception]) -> None:
    """Unknown roles, areas and programs are refused with a clear error and grant nothing."""
    with pytest.raises(error):
        guarded.grant("x", role, **kw)
    assert guarded.grants() == []


def test_thai_names_and_sql_metacharacters_are_plain_data(guarded: Engine) -> None:
    """Actor names are stored as given, never interpolated into SQL."""
    name = "อุดมรัตน์ อมรเทพ'); DROP TABLE workflow_events; --"
    guarded.grant(name, "provincial_officer", area="16")
    instance = start(guarded, name)
    assert guarded.history(instance)[0].actor == name
    assert [g.actor for g in guarded.grants()] == [name]


def test_grants_appear_in_the_audit_log_and_verify(guarded: Engine) -> None:
    """Grants and revocations are hash-chained events in the audit log, checked by verify
    and by a digest."""
    guarded.grant("udomrat", "provincial_officer", area="16", by="admin.lopburi")
    guarded.grant("somchai", "coordinator", area="1601", by="admin.lopburi")
    guarded.revoke("somchai", "coordinator", area="1601", by="admin.lopburi")
    rules = [e for e in guarded.audit_log() if e.instance is None]
    assert [(e.trigger, e.actor, e.evidence["actor"]) for e in rules] == [
        ("grant", "admin.lopburi", "udomrat"),
        ("grant", "admin.lopburi", "somchai"),
        ("revoke", "admin.lopburi", "somchai"),
    ]
    digest = guarded.digest()
    assert digest.grants[0] == 3
    assert guarded.verify(digest).ok


def test_actor_sees_only_what_they_may_fire(guarded: Engine) -> None:
    """available_triggers for an actor lists only what their grants allow on that instance."""
    guarded.grant("udomrat", "provincial_officer", area="16")
    guarded.grant("buriram-officer", "provincial_officer", area="31")
    instance = start(guarded, "udomrat")
    assert guarded.available_triggers(instance, actor="udomrat") == ("kickoff", "cancel")
    assert guarded.available_triggers(instance, actor="buriram-officer") == ()
    assert guarded.available_triggers(instance, actor="udomrat", role="coordinator") == ()


def test_custom_policy_replaces_grants_and_is_recorded(engine: Engine) -> None:
    """An embedding application's policy decides instead of the grants; its name is in the
    events it allowed and its refusals are recorded as denials."""

    class OnlyLopburi:
        name = "only-lopburi"

        def check(self, request: AccessRequest, grants: list[Grant]) -> str | None:
            return None if request.area.startswith("16") else "only Lop Buri here"

    eng = Engine(engine.url, policy=OnlyLopburi())
    try:
        instance = start(eng, "anyone")
        assert eng.history(instance)[0].policy == "only-lopburi"
        with pytest.raises(PermissionDenied, match="only Lop Buri"):
            start(eng, "anyone", area=BURIRAM_TAMBON)
        assert eng.denials()[-1].reason == "only Lop Buri here"
    finally:
        eng.close()


# --------------------------------------------------------------------------- scoped reads


@pytest.fixture
def two_provinces(guarded: Engine) -> tuple[Engine, int, int]:
    """One instance in Lop Buri and one in Buri Ram; 'lopburi' reads Lop Buri, 'audit16'
    audits it, 'both' reads the leader program everywhere."""
    guarded.grant("boss", "provincial_officer")
    a = start(guarded, "boss")
    b = start(guarded, "boss", area=BURIRAM_TAMBON)
    guarded.fire(a, "kickoff", actor="boss", role="provincial_officer", evidence=KICKOFF)
    guarded.grant("lopburi", "coordinator", area="1601")
    guarded.grant("audit16", "auditor", area="16")
    guarded.grant("both", "inspector", program="leader-development")
    return guarded, a, b


def test_a_viewer_lists_and_counts_only_what_its_grants_cover(
        two_provinces: tuple[Engine, int, int]) -> None:
    """list, report and audit_log with a viewer keep the instances its grants (any role,
    auditor included) cover; without one, everything."""
    eng, a, b = two_provinces
    for viewer in ("lopburi", "audit16"):
        assert [i.id for i in eng.list(viewer=viewer)] == [a]
        assert {r.province.code for r in eng.report(viewer=viewer).rows} == {"16"}
        assert {e.instance for e in eng.audit_log(viewer=viewer) if e.instance} == {a}
    assert [i.id for i in eng.list(viewer="both")] == [a, b]
    assert [i.id for i in eng.list(viewer="nobody")] == []
    assert eng.report(viewer="nobody").rows == ()
    assert [i.id for i in eng.list()] == [a, b]


def test_reading_an_instance_outside_the_grants_is_refused_and_recorded(
        two_provinces: tuple[Engine, int, int]) -> None:
    """get, history and diagram of an instance no grant of the viewer covers are
    PermissionDenied, each recorded as a denial; a covered one reads as without a viewer."""
    eng, a, b = two_provinces
    assert eng.get(a, viewer="lopburi") == eng.get(a)
    assert eng.history(a, viewer="audit16") == eng.history(a)
    before = len(eng.denials())
    for read in (lambda: eng.get(b, viewer="lopburi"),
                 lambda: eng.history(b, viewer="lopburi"),
                 lambda: eng.diagram("leader-development", instance=b, viewer="lopburi")):
        with pytest.raises(PermissionDenied):
            read()
    refused = eng.denials()[before:]
    assert [(d.actor, d.action, d.instance) for d in refused] == [
        ("lopburi", "read", b), ("lopburi", "history", b), ("lopburi", "diagram", b)]
    assert eng.verify().ok


def test_pages_of_a_scoped_list_follow_the_cursor(guarded: Engine) -> None:
    """limit and after page through a viewer's instances in id order, none twice or lost."""
    guarded.grant("boss", "provincial_officer")
    guarded.grant("reader", "auditor", area="16")
    tambons = ["160101", "160102", "160103", "160104", "160105"]
    ids = [start(guarded, "boss", area=t) for t in tambons]
    start(guarded, "boss", area=BURIRAM_TAMBON)
    seen: list[int] = []
    after = None
    while True:
        page = guarded.list(viewer="reader", limit=2, after=after)
        if not page:
            break
        seen += [i.id for i in page]
        after = page[-1].id
    assert seen == ids
    with pytest.raises(UsageError):
        guarded.list(after=-1)


def test_a_viewer_sees_the_denials_of_its_own_areas(
        two_provinces: tuple[Engine, int, int]) -> None:
    """denials(viewer=) keeps refusals about areas and programs the viewer's grants cover."""
    eng, a, b = two_provinces
    for instance in (a, b):
        with pytest.raises(PermissionDenied):
            eng.fire(instance, "workshop", actor="mallory", role="coordinator",
                     evidence={"date": "2564-03-01", "venue": "v", "participants": 3})
    assert [d.instance for d in eng.denials(viewer="audit16")] == [a]
    assert [d.instance for d in eng.denials()][-2:] == [a, b]
