"""Comments, corrections and reverts (issue 13, CONTRACT §8): new events in the chain, never a
rewrite; refused changes leave the database as it was; verify checks their references."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import (
    COORDINATOR,
    OFFICER,
    dump_tables,
    execute,
    leader_fire,
    leader_to,
    lopburi_story,
    pop_denials,
    start_khok,
)
from workflow import (
    AmendRefused,
    Engine,
    EventNotFound,
    EvidenceInvalid,
    InstanceNotFound,
    PermissionDenied,
    RoleNotAllowed,
    UsageError,
    VersionConflict,
)
from workflow.audit.chain import row_hash
from workflow.storage.store import EventRow


def _unchanged(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table less what recording a refusal adds (a refusal for want of a permission is
    recorded as a denial, queued for the audit log)."""
    tables = dump_tables(url)
    pop_denials(tables)
    return tables


def _workshop(engine: Engine) -> int:
    """Lopburi leader-development up to its workshop (seq 3, 25 participants)."""
    inst, _ = lopburi_story(engine)
    leader_fire(engine, inst.id, "workshop")
    return inst.id


# --------------------------------------------------------------------------- comment


def test_comment_is_an_event_that_changes_no_state(engine: Engine) -> None:
    """A comment appends a `comment` event with the text as its note; state unchanged."""
    inst, _ = lopburi_story(engine)
    r = engine.comment(inst.id, actor="somchai", role=COORDINATOR, text="ฝนตก เลื่อนไป 1 สัปดาห์")
    assert (r.event.trigger, r.event.seq, r.event.note) == ("comment", 3, "ฝนตก เลื่อนไป 1 สัปดาห์")
    assert r.event.from_ == r.event.to == ("kicked_off",)
    assert r.instance.version == 3 and r.instance.state == "kicked_off"
    assert engine.verify().ok


def test_comment_refusals_change_nothing(engine: Engine) -> None:
    """Empty text is a usage error, an unknown instance not found, an unknown role refused."""
    inst, _ = lopburi_story(engine)
    before = _unchanged(engine.url)
    with pytest.raises(UsageError):
        engine.comment(inst.id, actor="somchai", role=COORDINATOR, text="  ")
    with pytest.raises(InstanceNotFound):
        engine.comment(999, actor="somchai", role=COORDINATOR, text="x")
    with pytest.raises(RoleNotAllowed):
        engine.comment(inst.id, actor="somchai", role="committee", text="x")
    assert _unchanged(engine.url) == before


# --------------------------------------------------------------------------- correct


def test_correct_amends_evidence_and_keeps_the_original(engine: Engine) -> None:
    """The Buriram case: participants 25 -> 32; history shows both, state unchanged."""
    iid = _workshop(engine)
    workshop = engine.history(iid)[2]
    r = engine.correct(iid, 3, actor="udomrat", role=OFFICER, reason="นับซ้ำจากใบลงชื่อ",
                       evidence={"participants": "32"})
    ev = r.event.evidence
    assert r.event.trigger == "correct" and r.event.from_ == r.event.to
    assert ev == {"of_seq": 3, "of_hash": workshop.hash, "reason": "นับซ้ำจากใบลงชื่อ",
                  "changes": {"participants": {"old": 25, "new": 32}}}
    events = engine.history(iid)
    assert events[2].evidence["participants"] == 25
    assert events[2].corrected_evidence is not None
    assert events[2].corrected_evidence["participants"] == 32
    assert events[2].corrected_by == (4,)
    assert events[2].to_dict()["corrected"]["evidence"]["participants"] == 32
    assert engine.verify().ok


def test_correct_twice_and_the_note(engine: Engine) -> None:
    """A second correction starts from the corrected value; a note can be corrected too."""
    iid = _workshop(engine)
    engine.correct(iid, 3, actor="udomrat", role=OFFICER, reason="r1",
                   evidence={"participants": 30})
    r = engine.correct(iid, 3, actor="udomrat", role=OFFICER, reason="r2",
                       evidence={"participants": 32}, note="ตรวจกับใบลงชื่อแล้ว")
    assert r.event.evidence["changes"] == {"participants": {"old": 30, "new": 32}}
    assert r.event.evidence["note"] == {"old": None, "new": "ตรวจกับใบลงชื่อแล้ว"}
    target = engine.history(iid)[2]
    assert target.corrected_by == (4, 5)
    assert target.corrected_note == "ตรวจกับใบลงชื่อแล้ว" and target.note is None
    assert engine.verify().ok


def test_instance_record_marks_corrected_events(engine: Engine) -> None:
    """get() (show --json, GET /instances/{id}) names each corrected event with the
    corrections that amended it; an uncorrected instance says so; lists leave it out."""
    iid = _workshop(engine)
    assert engine.get(iid).to_dict()["corrected"] == []
    engine.correct(iid, 3, actor="udomrat", role=OFFICER, reason="r1",
                   evidence={"participants": 30})
    engine.comment(iid, actor="udomrat", role=OFFICER, text="ตรวจแล้ว")
    engine.correct(iid, 2, actor="udomrat", role=OFFICER, reason="r2", evidence={"venue": "x"})
    engine.correct(iid, 3, actor="udomrat", role=OFFICER, reason="r3",
                   evidence={"participants": 32})
    inst = engine.get(iid)
    assert inst.corrected == ((2, (6,)), (3, (4, 7)))
    assert inst.to_dict()["corrected"] == [{"seq": 2, "by": [6]}, {"seq": 3, "by": [4, 7]}]
    assert "corrected" not in engine.list()[0].to_dict()


def test_correct_refusals_change_nothing(engine: Engine) -> None:
    """Invalid values, an unknown seq, a start event, no change, no reason, the wrong role."""
    iid = _workshop(engine)
    before = _unchanged(engine.url)
    with pytest.raises(EvidenceInvalid):
        engine.correct(iid, 3, actor="u", role=OFFICER, reason="r", evidence={"participants": 0})
    with pytest.raises(EvidenceInvalid):
        engine.correct(iid, 3, actor="u", role=OFFICER, reason="r", evidence={"colour": "red"})
    with pytest.raises(EventNotFound):
        engine.correct(iid, 9, actor="u", role=OFFICER, reason="r", evidence={"venue": "x"})
    with pytest.raises(AmendRefused):
        engine.correct(iid, 1, actor="u", role=OFFICER, reason="r", evidence={"title": "x"})
    with pytest.raises(AmendRefused):
        engine.correct(iid, 3, actor="u", role=OFFICER, reason="r",
                       evidence={"participants": 25})
    with pytest.raises(UsageError):
        engine.correct(iid, 3, actor="u", role=OFFICER, reason=" ", evidence={"venue": "x"})
    with pytest.raises(RoleNotAllowed):
        engine.correct(iid, 3, actor="s", role=COORDINATOR, reason="r", evidence={"venue": "x"})
    with pytest.raises(EvidenceInvalid):  # a required field cannot be removed
        engine.correct(iid, 3, actor="u", role=OFFICER, reason="r", evidence={"venue": ""})
    assert _unchanged(engine.url) == before


def test_correction_roles_are_declared_per_program(engine: Engine, tmp_path: Any) -> None:
    """`corrections: {roles: [coordinator]}` lets a coordinator correct, not the officer."""
    from workflow.programs.registry import Registry

    text = Registry().get("one-plan").source_text.replace(
        "program: one-plan", "program: one-plan-local\ncorrections: {roles: [coordinator]}", 1)
    (tmp_path / "local.yaml").write_text(text, encoding="utf-8")
    with Engine(engine.url, [tmp_path], policy=engine.policy) as eng:
        inst = eng.start("one-plan-local", area="160117", fiscal_year=2564, actor="u",
                         role=OFFICER)
        eng.fire(inst.id, "collect_data", actor="s", role=COORDINATOR,
                 evidence={"date": "2564-01-05"})
        with pytest.raises(RoleNotAllowed):
            eng.correct(inst.id, 2, actor="u", role=OFFICER, reason="r",
                        evidence={"date": "2564-01-06"})
        r = eng.correct(inst.id, 2, actor="s", role=COORDINATOR, reason="r",
                        evidence={"date": "2564-01-06"})
        assert r.event.evidence["changes"] == {"date": {"old": "2021-01-05",
                                                        "new": "2021-01-06"}}


# --------------------------------------------------------------------------- revert


def test_revert_returns_to_the_configuration_before_the_last_step(engine: Engine) -> None:
    """Revert the workshop: back to kicked_off; reverting again takes back the kickoff."""
    iid = _workshop(engine)
    r = engine.revert(iid, actor="udomrat", role=OFFICER, reason="บันทึกผิดขั้น")
    assert (r.event.trigger, r.event.from_, r.event.to) == (
        "revert", ("workshop_held",), ("kicked_off",))
    assert r.event.evidence["of_seq"] == 3
    assert r.instance.state == "kicked_off" and "workshop" in r.instance.available_triggers
    r = engine.revert(iid, actor="udomrat", role=OFFICER, reason="ยังไม่ได้ประชุม")
    assert r.event.to == ("planned",) and r.event.evidence["of_seq"] == 2
    with pytest.raises(AmendRefused):
        engine.revert(iid, actor="udomrat", role=OFFICER, reason="nothing left")
    leader_fire(engine, iid, "kickoff")
    assert engine.get(iid).state == "kicked_off"
    assert engine.verify().ok


def test_revert_in_a_parallel_region(engine: Engine) -> None:
    """Khok Nong Na: taking back start_employment puts only that region back to pending."""
    inst = start_khok(engine)
    r = engine.revert(inst.id, actor="anong", role=OFFICER, reason="ผิดแปลง")
    assert "activities.employment.pending" in r.instance.active
    assert "activities.employment.underway" not in r.instance.active
    assert engine.verify().ok


def test_revert_refusals_change_nothing(engine: Engine) -> None:
    """From a final state (not allowed by the bundled programs), a stale version, no step."""
    inst, _ = lopburi_story(engine)
    leader_to(engine, inst.id, ["workshop", "report_progress", "evaluate", "summarize", "close"])
    fresh = engine.start("one-plan", area="160117", fiscal_year=2564, actor="u", role=OFFICER)
    before = _unchanged(engine.url)
    with pytest.raises(AmendRefused, match="final"):
        engine.revert(inst.id, actor="udomrat", role=OFFICER, reason="r")
    with pytest.raises(AmendRefused):
        engine.revert(fresh.id, actor="udomrat", role=OFFICER, reason="r")
    with pytest.raises(VersionConflict):
        engine.revert(fresh.id, actor="udomrat", role=OFFICER, reason="r", expect_version=7)
    with pytest.raises(RoleNotAllowed):
        engine.revert(fresh.id, actor="somchai", role=COORDINATOR, reason="r")
    assert _unchanged(engine.url) == before


# --------------------------------------------------------------------------- grants


def test_refusal_for_want_of_a_grant_is_recorded(engine: Engine) -> None:
    """With stored grants, correcting without a grant is refused and recorded as a denial."""
    iid = _workshop(engine)
    with Engine(engine.url) as strict:
        strict.grant("somchai", COORDINATOR)
        strict.comment(iid, actor="somchai", role=COORDINATOR, text="ok")
        before = _unchanged(engine.url)
        with pytest.raises(PermissionDenied):
            strict.correct(iid, 3, actor="udomrat", role=OFFICER, reason="r",
                           evidence={"participants": 30})
        with pytest.raises(PermissionDenied):
            strict.revert(iid, actor="udomrat", role=OFFICER, reason="r")
        assert _unchanged(engine.url) == before
        actions = [d.action for d in strict.denials()]
        assert actions[-2:] == ["correct", "revert"]
        assert strict.verify().ok


# --------------------------------------------------------------------------- tampering


def _rehash(url: str, instance: int, seq: int, **changes: Any) -> None:
    """What an intruder with SQL does: change an event and re-hash it (and the chain after)."""
    from helpers import sql_engine

    eng = sql_engine(url)
    try:
        with eng.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            else:
                conn.exec_driver_sql("DROP TRIGGER workflow_events_no_update")
            cols = ", ".join(EventRow._fields)
            rows = [EventRow(*r) for r in conn.exec_driver_sql(
                f"SELECT {cols} FROM workflow_events WHERE instance_id = {instance} ORDER BY seq")]
            prev = None
            last = rows[-1]
            for r in rows:
                new = r._replace(**changes) if r.seq == seq else r
                if prev is not None:
                    new = new._replace(prev_hash=prev)
                new = new._replace(hash=row_hash(new))
                import sqlalchemy as sa

                conn.execute(sa.text(
                    "UPDATE workflow_events SET evidence = :e, to_state = :t, "
                    "definition_hash = :d, prev_hash = :p, hash = :h WHERE id = :id"),
                    {"e": new.evidence, "t": new.to_state, "d": new.definition_hash,
                     "p": new.prev_hash, "h": new.hash, "id": r.id})
                prev = new.hash
                last = new
            conn.execute(sa.text("UPDATE workflow_instances SET head_hash = :h, active = :a "
                                 "WHERE id = :i"), {"h": prev, "a": last.to_state, "i": instance})
    finally:
        eng.dispose()


def test_verify_catches_a_correction_naming_another_hash(engine: Engine) -> None:
    """A correction whose of_hash was rewritten (and the chain re-hashed) is caught."""
    iid = _workshop(engine)
    r = engine.correct(iid, 3, actor="u", role=OFFICER, reason="r",
                       evidence={"participants": 32})
    evidence = dict(r.event.evidence)
    evidence["of_hash"] = "f" * 64
    _rehash(engine.url, iid, 4, evidence=json.dumps(evidence, sort_keys=True,
                                                    separators=(",", ":"), ensure_ascii=False))
    result = engine.verify()
    assert not result.ok
    assert any(p.instance == iid and p.seq == 4 and "hash it does not have" in p.reason
               for p in result.problems), result.problems


def test_verify_catches_a_correction_naming_a_later_event(engine: Engine) -> None:
    """A correction's of_seq rewritten to name itself is caught."""
    iid = _workshop(engine)
    r = engine.correct(iid, 3, actor="u", role=OFFICER, reason="r",
                       evidence={"participants": 32})
    evidence = dict(r.event.evidence, of_seq=4)
    _rehash(engine.url, iid, 4, evidence=json.dumps(evidence, sort_keys=True,
                                                    separators=(",", ":"), ensure_ascii=False))
    assert any(p.seq == 4 and "earlier" in p.reason for p in engine.verify().problems)


def test_verify_catches_a_revert_to_another_configuration(engine: Engine) -> None:
    """A revert rewritten to jump elsewhere (chain re-hashed, instance row adjusted) is caught."""
    iid = _workshop(engine)
    engine.revert(iid, actor="u", role=OFFICER, reason="r")
    _rehash(engine.url, iid, 4, to_state='["planned"]')
    execute(engine.url, f"UPDATE workflow_instances SET state = 'planned' WHERE id = {iid}")
    assert any(p.seq == 4 and "revert" in p.reason for p in engine.verify().problems)


def test_a_step_taken_back_did_not_happen(engine: Engine) -> None:
    """After the award is reverted, lessons_learned (guard: an award happened) is refused
    until an award is fired again."""
    from workflow import GuardFailed

    inst, _ = lopburi_story(engine)
    leader_to(engine, inst.id, ["workshop", "report_progress", "evaluate", "award"])
    engine.revert(inst.id, actor="u", role=OFFICER, reason="ผลยังไม่ประกาศ")
    leader_fire(engine, inst.id, "summarize")
    with pytest.raises(GuardFailed):
        leader_fire(engine, inst.id, "lessons_learned")
    assert "lessons_learned" not in engine.get(inst.id).available_triggers
    assert engine.verify().ok


def test_the_amending_triggers_are_reserved() -> None:
    """A program cannot declare a trigger named comment, correct, revert or migrate (E015)."""
    from workflow.programs.loader import check_text
    from workflow.programs.registry import Registry

    text = Registry().get("one-plan").source_text.replace("trigger: submit", "trigger: revert")
    assert "E015" in {p.code for p in check_text(text)[1]}
