"""The storage and engine contract (CONTRACT §3, §4, §6), written once, run on every backend.

Every test takes the ``engine`` (or ``backend``) fixture, so it runs on SQLite and on
PostgreSQL alike. Refusals are checked twice: the right ``WorkflowError`` subclass and exit code,
and a database left exactly as it was (every row of every ``workflow_*`` table compared).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    COORDINATOR,
    INSPECTOR,
    KHOK_REGIONS,
    KICKOFF,
    LOPBURI,
    OFFICER,
    be_date,
    dump_tables,
    leader_fire,
    leader_to,
    lopburi_story,
    open_engine,
    pop_denials,
    report_employment,
    start_khok,
    start_lopburi,
)
from workflow import (
    AreaNotFound,
    Conflict,
    DatabaseUnavailable,
    DefinitionChanged,
    Digest,
    DuplicateInstance,
    Engine,
    Event,
    EvidenceInvalid,
    FireRequest,
    FireResult,
    GuardContext,
    GuardFailed,
    IdempotencyConflict,
    Instance,
    InstanceNotFound,
    PermissionDenied,
    ProgramNotFound,
    RoleNotAllowed,
    SchemaOutOfDate,
    TriggerNotAllowed,
    UnknownRole,
    UsageError,
    VersionConflict,
    WorkflowError,
)
from workflow.errors import TextRefused
from workflow.programs.registry import bundled_files

INSTANCE_KEYS = {"id", "program", "program_version", "area", "fiscal_year", "state", "active",
                 "version", "created_at", "updated_at", "available_triggers"}
EVENT_KEYS = {"id", "instance", "seq", "trigger", "from", "to", "actor", "role", "at",
              "evidence", "note", "hash", "prev_hash"}
GENESIS = "0" * 64
DENIALS = "workflow_denials"


def bundled_text(program: str) -> str:
    for f in bundled_files():
        if f.stem == program:
            return f.read_text(encoding="utf-8")
    raise AssertionError(f"no bundled {program}")


def is_utc_iso(text: str) -> bool:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.utcoffset() == dt.timedelta(0)


# --------------------------------------------------------------------------- schema


def test_init_is_idempotent(engine: Engine) -> None:
    """init() on an initialised database changes nothing and reports the same revision."""
    lopburi_story(engine)
    before = dump_tables(engine.url)
    first = engine.init()
    with Engine(engine.url) as other:
        second = other.init()
    assert first[0] == first[1] == second[0] == second[1]
    assert dump_tables(engine.url) == before


def test_command_without_schema_raises_schema_out_of_date(backend: str) -> None:
    """Commands on a database without schema raise SchemaOutOfDate (6) and create nothing."""
    eng = Engine(backend)
    try:
        for command in (lambda: eng.get(1), lambda: start_lopburi(eng), lambda: eng.list(),
                        lambda: eng.verify(), lambda: eng.history(1)):
            with pytest.raises(SchemaOutOfDate) as caught:
                command()
            assert caught.value.exit_code == 6
    finally:
        eng.close()
    if backend.startswith("sqlite"):
        assert not Path(backend.removeprefix("sqlite:///")).exists()
    else:
        assert dump_tables(backend) == {}


# --------------------------------------------------------------------------- start and fire


def test_start_returns_instance_with_contract_fields(engine: Engine) -> None:
    """start() returns a frozen Instance whose to_dict() has every contract key."""
    inst = start_lopburi(engine, title="บางขันหมาก 2564")
    assert isinstance(inst, Instance)
    d = inst.to_dict()
    assert d.keys() >= INSTANCE_KEYS
    assert d["program"] == "leader-development"
    assert d["program_version"] == 2  # the newest bundled version
    assert d["area"] == {"code": LOPBURI, "name_th": "บางขันหมาก", "name_en": "Bang Khanmak"}
    assert d["fiscal_year"] == 2564
    assert d["state"] == "planned"
    assert d["active"] == ["planned"]
    assert d["version"] == 1
    assert "kickoff" in d["available_triggers"] and "cancel" in d["available_triggers"]
    assert is_utc_iso(d["created_at"]) and d["created_at"] == d["updated_at"]
    json.dumps(d, ensure_ascii=False)
    with pytest.raises(FrozenInstanceError):
        inst.state = "closed"  # type: ignore[misc]
    assert engine.get(inst.id) == inst


def test_start_accepts_an_area_name(engine: Engine) -> None:
    """An area given by a name that resolves to exactly one area is stored as its code."""
    inst = engine.start("leader-development", area="Khao Khlung", fiscal_year="2564",
                        actor="ratchaburi", role=OFFICER)
    assert inst.area.code == "700513"


def test_start_event_is_seq_1_trigger_start(engine: Engine) -> None:
    """Starting an instance is its first event: seq 1, trigger start, chained from genesis."""
    inst = start_lopburi(engine)
    (event,) = engine.history(inst.id)
    assert isinstance(event, Event)
    d = event.to_dict()
    assert d.keys() >= EVENT_KEYS
    assert d["seq"] == 1 and d["trigger"] == "start" and d["instance"] == inst.id
    assert d["from"] is None and d["to"] == "planned"
    assert d["actor"] == "udomrat" and d["role"] == OFFICER
    assert d["prev_hash"] == GENESIS and len(d["hash"]) == 64
    assert is_utc_iso(d["at"])


def test_fire_appends_a_chained_event(engine: Engine) -> None:
    """fire() appends an event with the contract keys whose prev_hash is the previous hash."""
    inst, result = lopburi_story(engine)
    assert isinstance(result, FireResult) and not result.replayed
    d = result.event.to_dict()
    assert d.keys() >= EVENT_KEYS
    assert (d["seq"], d["trigger"], d["from"], d["to"]) == (2, "kickoff", "planned", "kicked_off")
    assert (d["actor"], d["role"], d["note"]) == ("udomrat", OFFICER, None)
    start_event = engine.history(inst.id)[0]
    assert d["prev_hash"] == start_event.hash
    assert result.instance.state == "kicked_off" and result.instance.version == 2
    assert result.instance.available_triggers == engine.available_triggers(inst.id)
    fired = leader_fire(engine, inst.id, "workshop", note="  วันแรก  ")
    assert fired.event.prev_hash == result.event.hash
    assert fired.event.note == "วันแรก"
    full = result.to_dict()
    assert {"event", "instance"} <= full.keys()
    assert [e.seq for e in engine.history(inst.id)] == [1, 2, 3]


def test_buddhist_era_dates_are_stored_as_ce(engine: Engine) -> None:
    """A BE date (2564-02-17) is stored, hashed and returned as CE (2021-02-17)."""
    inst, result = lopburi_story(engine)
    assert result.event.evidence["date"] == "2021-02-17"
    assert engine.history(inst.id)[-1].evidence["date"] == "2021-02-17"
    stored = dump_tables(engine.url)["workflow_events"][-1]
    assert '"date":"2021-02-17"' in "".join(str(c) for c in stored)
    ce = leader_fire(engine, inst.id, "workshop")  # given as BE 2564-03-03 / 2564-03-04
    assert (ce.event.evidence["date"], ce.event.evidence["end_date"]) == ("2021-03-03",
                                                                          "2021-03-04")
    assert engine.verify().ok


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def world(engine: Engine) -> dict[str, int]:
    """A few instances in telling states for the refusal tests."""
    kicked, _ = lopburi_story(engine)
    summarized = start_lopburi(engine, area="160101")
    leader_to(engine, summarized.id, ["kickoff", "workshop", "report_progress", "evaluate",
                                      "summarize"])
    closed = start_lopburi(engine, area="1601")
    leader_to(engine, closed.id, ["kickoff", "workshop", "report_progress", "evaluate",
                                  "summarize", "close"])
    evaluated = start_lopburi(engine, area="160102")
    leader_to(engine, evaluated.id, ["kickoff", "workshop", "report_progress", "evaluate"])
    khok = start_khok(engine)
    return {"kicked": kicked.id, "summarized": summarized.id, "closed": closed.id,
            "evaluated": evaluated.id, "khok": khok.id}


Attempt = Callable[[Engine, dict[str, int]], object]


def _fire(which: str, trigger: str, role: str = OFFICER, evidence: dict[str, Any] | None = None,
          **kw: Any) -> Attempt:
    return lambda e, w: e.fire(w[which], trigger, actor="somchai", role=role,
                               evidence=evidence, **kw)


WORKSHOP = {"date": "2564-03-03", "venue": "บ้านสระบัว", "participants": 25}

REFUSALS: list[tuple[str, Attempt, type[WorkflowError], int]] = [
    ("unknown trigger", _fire("kicked", "no_such_trigger"), TriggerNotAllowed, 4),
    ("transitions to_<state> backdoor", _fire("kicked", "to_closed"), TriggerNotAllowed, 4),
    ("python dunder as trigger", _fire("kicked", "__init__"), TriggerNotAllowed, 4),
    ("start is not a trigger", _fire("kicked", "start"), TriggerNotAllowed, 4),
    ("trigger not allowed in state",
     _fire("kicked", "award", INSPECTOR, {"date": "2564-07-01", "level": "excellent"}),
     TriggerNotAllowed, 4),
    ("fire on a closed instance", _fire("closed", "cancel", evidence={"reason": "x"}),
     TriggerNotAllowed, 4),
    ("region trigger in the wrong region state",
     _fire("khok", "complete_training", COORDINATOR, {"date": "2564-03-01", "summary": "x"}),
     TriggerNotAllowed, 4),
    ("missing required evidence",
     _fire("kicked", "workshop", COORDINATOR, {"date": "2564-03-03", "venue": "v"}),
     EvidenceInvalid, 4),
    ("no evidence at all", _fire("kicked", "workshop", COORDINATOR), EvidenceInvalid, 4),
    ("undeclared evidence (typo)",
     _fire("kicked", "workshop", COORDINATOR, {**WORKSHOP, "particpants": 3}), EvidenceInvalid, 4),
    ("ill-typed integer",
     _fire("kicked", "workshop", COORDINATOR, {**WORKSHOP, "participants": "many"}),
     EvidenceInvalid, 4),
    ("integer below minimum",
     _fire("kicked", "workshop", COORDINATOR, {**WORKSHOP, "participants": 0}),
     EvidenceInvalid, 4),
    ("not a real date",
     _fire("kicked", "workshop", COORDINATOR, {**WORKSHOP, "date": "2564-02-30"}),
     EvidenceInvalid, 4),
    ("boolean as integer",
     _fire("kicked", "workshop", COORDINATOR, {**WORKSHOP, "participants": True}),
     EvidenceInvalid, 4),
    ("empty required text",
     _fire("summarized", "cancel", evidence={"reason": "  "}), EvidenceInvalid, 4),
    ("choice outside its choices",
     _fire("evaluated", "award", INSPECTOR, {"date": "2564-07-01", "level": "gold"}),
     EvidenceInvalid, 4),
    ("guard: lessons_learned without an award",
     _fire("summarized", "lessons_learned", evidence={"date": "2564-09-01", "summary": "s"}),
     GuardFailed, 4),
    ("guard: workshop end_date before date",
     _fire("kicked", "workshop", COORDINATOR, {**WORKSHOP, "end_date": "2564-03-02"}),
     GuardFailed, 4),
    ("guard: evaluate before every region is done",
     _fire("khok", "evaluate", evidence={"date": "2564-09-01"}), GuardFailed, 4),
    ("role not allowed by the transition",
     _fire("kicked", "workshop", INSPECTOR, WORKSHOP), RoleNotAllowed, 4),
    ("role not declared by the program",
     _fire("kicked", "workshop", "chief", WORKSHOP), UnknownRole, 4),
    ("auditor is read-only", _fire("kicked", "workshop", "auditor", WORKSHOP),
     PermissionDenied, 4),
    ("role not allowed to start",
     lambda e, w: e.start("leader-development", area="160103", fiscal_year=2564, actor="x",
                          role=INSPECTOR), RoleNotAllowed, 4),
    ("unknown instance",
     lambda e, w: e.fire(999_999, "kickoff", actor="x", role=OFFICER, evidence=KICKOFF),
     InstanceNotFound, 3),
    ("unknown program",
     lambda e, w: e.start("no-such-program", area=LOPBURI, fiscal_year=2564, actor="x",
                          role=OFFICER), ProgramNotFound, 3),
    ("unknown area code",
     lambda e, w: e.start("leader-development", area="999999", fiscal_year=2564, actor="x",
                          role=OFFICER), AreaNotFound, 3),
    ("unknown area name",
     lambda e, w: e.start("leader-development", area="Atlantis", fiscal_year=2564, actor="x",
                          role=OFFICER), AreaNotFound, 3),
    ("ambiguous area name",
     lambda e, w: e.start("leader-development", area="Sa Bua", fiscal_year=2564, actor="x",
                          role=OFFICER), AreaNotFound, 3),
    ("CE year given as fiscal year",
     lambda e, w: e.start("leader-development", area=LOPBURI, fiscal_year=2021, actor="x",
                          role=OFFICER), UsageError, 2),
    ("empty actor",
     lambda e, w: e.fire(w["kicked"], "workshop", actor="  ", role=COORDINATOR,
                         evidence=WORKSHOP), TextRefused, 2),
    ("actor with a zero-width space",
     lambda e, w: e.fire(w["kicked"], "workshop", actor="som\u200bchai", role=COORDINATOR,
                         evidence=WORKSHOP), TextRefused, 2),
    ("duplicate start",
     lambda e, w: start_lopburi(e), DuplicateInstance, 5),
    ("expect_version mismatch",
     _fire("kicked", "workshop", COORDINATOR, WORKSHOP, expect_version=1), VersionConflict, 5),
]


@pytest.mark.parametrize(("attempt", "error", "exit_code"),
                         [pytest.param(a, e, c, id=name) for name, a, e, c in REFUSALS])
def test_refusal_raises_and_changes_nothing(engine: Engine,
                                            world: dict[str, int], attempt: Attempt,
                                            error: type[WorkflowError], exit_code: int) -> None:
    """Each refusal raises its WorkflowError subclass and exit code; no row changes."""
    before = dump_tables(engine.url)
    with pytest.raises(error) as caught:
        attempt(engine, world)
    assert type(caught.value) is error
    assert caught.value.exit_code == exit_code
    assert str(caught.value)
    after = dump_tables(engine.url)
    denials_before = pop_denials(before)
    denials_after = pop_denials(after)
    assert after == before
    # Refusals for want of a permission are recorded (CONTRACT §5), and only those.
    recorded = 1 if issubclass(error, RoleNotAllowed | PermissionDenied) else 0
    assert denials_after[:len(denials_before)] == denials_before
    assert len(denials_after) - len(denials_before) == recorded


def test_refusal_details(engine: Engine, world: dict[str, int]) -> None:
    """Refusals carry their data: unknown vs known trigger, the field, the candidates."""
    with pytest.raises(TriggerNotAllowed) as unknown:
        engine.fire(world["kicked"], "to_closed", actor="x", role=OFFICER)
    assert unknown.value.known is False
    assert "workshop" in unknown.value.allowed
    with pytest.raises(TriggerNotAllowed) as known:
        engine.fire(world["kicked"], "award", actor="x", role=INSPECTOR,
                    evidence={"date": "2564-07-01", "level": "excellent"})
    assert known.value.known is True and known.value.state == "kicked_off"
    with pytest.raises(EvidenceInvalid) as typo:
        engine.fire(world["kicked"], "workshop", actor="x", role=COORDINATOR,
                    evidence={**WORKSHOP, "particpants": 3})
    assert typo.value.field == "particpants"
    with pytest.raises(AreaNotFound) as ambiguous:
        start_lopburi(engine, area="Sa Bua")
    assert any(c.startswith("312203") for c in ambiguous.value.candidates)
    assert any(c.startswith("450306") for c in ambiguous.value.candidates)
    with pytest.raises(DuplicateInstance) as dup:
        start_lopburi(engine)
    assert dup.value.existing == world["kicked"]
    with pytest.raises(VersionConflict) as vc:
        engine.fire(world["kicked"], "workshop", actor="x", role=COORDINATOR,
                    evidence=WORKSHOP, expect_version=7)
    assert (vc.value.expected, vc.value.actual) == (7, 2)


def test_read_refusals(engine: Engine) -> None:
    """Reads of an unknown instance raise InstanceNotFound (3)."""
    for read in (engine.get, engine.history, engine.available_triggers, engine.definition_of):
        with pytest.raises(InstanceNotFound) as caught:
            read(424242)
        assert caught.value.exit_code == 3
    with pytest.raises(ProgramNotFound):
        engine.list(program="no-such-program")


# ------------------------------------------------------------- duplicates, versions, keys


def test_allow_duplicate_starts_a_second_instance(engine: Engine) -> None:
    """allow_duplicate starts another instance for the same program, area and year."""
    first = start_lopburi(engine)
    second = start_lopburi(engine, allow_duplicate=True)
    third = start_lopburi(engine, allow_duplicate=True)
    assert len({first.id, second.id, third.id}) == 3
    with pytest.raises(DuplicateInstance):
        start_lopburi(engine)
    other_year = start_lopburi(engine, fiscal_year=2565)
    other_program = start_khok(engine, enroll=False)
    assert other_year.id and other_program.id
    assert len(engine.list(program="leader-development", area=LOPBURI, fiscal_year=2564)) == 3
    assert engine.verify().ok


def test_expect_version(engine: Engine) -> None:
    """expect_version equal to the current version fires; a stale one is refused."""
    inst, result = lopburi_story(engine)
    fired = leader_fire(engine, inst.id, "workshop", expect_version=result.instance.version)
    assert fired.instance.version == 3
    with pytest.raises(VersionConflict) as caught:
        leader_fire(engine, inst.id, "report_progress", expect_version=2)
    assert caught.value.exit_code == 5 and isinstance(caught.value, Conflict)


def test_idempotent_fire(engine: Engine) -> None:
    """The same key returns the first result (replayed) and adds no event."""
    inst, _ = lopburi_story(engine)
    first = leader_fire(engine, inst.id, "workshop", key="ws-1")
    assert not first.replayed
    before = dump_tables(engine.url)
    again = leader_fire(engine, inst.id, "workshop", key="ws-1")
    assert again.replayed
    assert again.event == first.event
    assert again.instance.version == first.instance.version == 3
    assert dump_tables(engine.url) == before
    # Even after the instance moved on, the key replays the first result.
    leader_fire(engine, inst.id, "report_progress")
    later = leader_fire(engine, inst.id, "workshop", key="ws-1")
    assert later.replayed and later.event == first.event
    assert len(engine.history(inst.id)) == 4


def test_idempotency_conflict(engine: Engine) -> None:
    """The same key for a different request raises IdempotencyConflict (5), changes nothing."""
    inst, _ = lopburi_story(engine)
    leader_fire(engine, inst.id, "workshop", key="k")
    before = dump_tables(engine.url)
    with pytest.raises(IdempotencyConflict) as caught:
        engine.fire(inst.id, "report_progress", actor="somchai", role=COORDINATOR,
                    evidence={"date": "2564-04-01", "summary": "s"}, key="k")
    assert caught.value.exit_code == 5
    with pytest.raises(IdempotencyConflict):
        engine.fire(inst.id, "workshop", actor="somchai", role=COORDINATOR,
                    evidence={**WORKSHOP, "participants": 26}, key="k")
    with pytest.raises(IdempotencyConflict):
        start_lopburi(engine, area="160101", key="k")
    assert dump_tables(engine.url) == before


def test_idempotent_start(engine: Engine) -> None:
    """A start with a key returns the same instance again and starts nothing new."""
    first = start_lopburi(engine, key="start-1")
    before = dump_tables(engine.url)
    again = start_lopburi(engine, key="start-1")
    assert again.id == first.id
    assert dump_tables(engine.url) == before
    with pytest.raises(IdempotencyConflict):
        start_lopburi(engine, key="start-1", title="another")


@pytest.mark.parametrize("refusal", ["idempotency key", "permission"])
def test_refused_start_of_a_new_program_stores_nothing(db_kind: str, engine: Engine,
                                                       refusal: str) -> None:
    """A start refused inside its transaction stores nothing, not even its definition."""
    lopburi_story(engine, key="k")
    before = dump_tables(engine.url)
    if refusal == "idempotency key":
        with pytest.raises(IdempotencyConflict):
            start_khok(engine, enroll=False, key="k")
    else:
        with Engine(engine.url) as strict, pytest.raises(PermissionDenied):
            start_khok(strict, enroll=False)
    after = dump_tables(engine.url)
    pop_denials(after), pop_denials(before)
    assert after == before


# --------------------------------------------------------------------------- the stories


def test_khok_nong_na_parallel_regions_end_to_end(engine: Engine) -> None:
    """Enroll, run all seven regions (with the employment loop), evaluate once done, close."""
    inst = start_khok(engine, enroll=False)
    enrolled = engine.fire(inst.id, "enroll", actor="anong", role=OFFICER,
                           evidence={"date": "2564-01-13", "households": 12, "budget": "1,500.50"})
    assert enrolled.event.evidence["budget"] == 1500.5
    i = enrolled.instance
    assert i.state == "activities"
    assert list(i.active) == [f"activities.{r}.pending" for r in KHOK_REGIONS]
    assert i.to_dict()["active"] == list(i.active)
    assert "evaluate" not in i.available_triggers
    for region in KHOK_REGIONS:
        r = engine.fire(inst.id, f"start_{region}", actor="malee", role=COORDINATOR,
                        evidence={"date": "2564-02-01"})
        assert f"activities.{region}.underway" in r.instance.active
    for n in range(3):
        looped = report_employment(engine, inst.id, workers=10 + n)
        assert looped.event.to_dict()["from"] == looped.event.to_dict()["to"]
        assert "activities.employment.underway" in looped.instance.active
    for region in KHOK_REGIONS:
        with pytest.raises(GuardFailed):
            engine.fire(inst.id, "evaluate", actor="anong", role=OFFICER,
                        evidence={"date": "2564-09-01"})
        r = engine.fire(inst.id, f"complete_{region}", actor="malee", role=COORDINATOR,
                        evidence={"date": "2564-08-01", "summary": f"{region} เสร็จ"})
        assert f"activities.{region}.done" in r.instance.active
    with pytest.raises(TriggerNotAllowed):
        report_employment(engine, inst.id)
    done = engine.get(inst.id)
    assert list(done.active) == [f"activities.{r}.done" for r in KHOK_REGIONS]
    assert "evaluate" in done.available_triggers
    evaluated = engine.fire(inst.id, "evaluate", actor="anong", role=OFFICER,
                            evidence={"date": "2564-09-01", "score": 88})
    assert evaluated.instance.state == "evaluated"
    assert evaluated.instance.active == ("evaluated",)
    assert evaluated.event.to_dict()["from"] == [f"activities.{r}.done" for r in KHOK_REGIONS]
    closed = engine.fire(inst.id, "close", actor="anong", role=OFFICER,
                         evidence={"date": "2564-09-30"})
    assert closed.instance.state == "closed" and closed.instance.final
    assert closed.instance.available_triggers == ()
    history = engine.history(inst.id)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert len(history) == 1 + 1 + 7 + 3 + 7 + 2
    assert engine.verify().ok


def test_cancel_from_inside_parallel_state(engine: Engine) -> None:
    """cancel works from the parallel state and leaves every region."""
    inst = start_khok(engine)
    report_employment(engine, inst.id)
    cancelled = engine.fire(inst.id, "cancel", actor="anong", role=OFFICER,
                            evidence={"reason": "งบประมาณถูกตัด"})
    assert cancelled.instance.state == "cancelled"
    assert cancelled.instance.active == ("cancelled",)
    assert cancelled.instance.final
    with pytest.raises(TriggerNotAllowed):
        report_employment(engine, inst.id)
    assert engine.verify().ok


def test_khok_regions_finish_in_any_order(engine: Engine) -> None:
    """Regions finish in any order: the last-declared region done first breaks nothing."""
    inst = start_khok(engine, employment=False)
    for region in reversed(KHOK_REGIONS):
        engine.fire(inst.id, f"start_{region}", actor="malee", role=COORDINATOR,
                    evidence={"date": "2564-02-01"})
        engine.fire(inst.id, f"complete_{region}", actor="malee", role=COORDINATOR,
                    evidence={"date": "2564-03-01", "summary": "ok"})
    assert "evaluate" in engine.get(inst.id).available_triggers


def test_lessons_learned_allowed_after_award(engine: Engine) -> None:
    """The happened-guard of lessons_learned holds once an award event happened."""
    inst, _ = lopburi_story(engine)
    summarized = leader_to(engine, inst.id, ["workshop", "report_progress", "report_progress",
                                             "evaluate", "award", "summarize"])
    assert summarized is not None
    assert "lessons_learned" in summarized.instance.available_triggers
    done = leader_fire(engine, inst.id, "lessons_learned")
    assert done.instance.state == "closed" and done.instance.final
    other = start_lopburi(engine, area="160101")
    leader_to(engine, other.id, ["kickoff", "workshop", "report_progress", "evaluate",
                                 "summarize"])
    assert "lessons_learned" not in engine.get(other.id).available_triggers
    assert "close" in engine.get(other.id).available_triggers


# --------------------------------------------------------------------------- reads


@pytest.fixture
def several(engine: Engine) -> dict[str, int]:
    lop, _ = lopburi_story(engine)
    lop2 = start_lopburi(engine, area="160101", fiscal_year=2565)
    buri = engine.start("leader-development", area="310101", fiscal_year=2564, actor="buriram",
                        role=COORDINATOR)
    khok = start_khok(engine, area="1601")
    ratchaburi = engine.start("one-plan", area="700513", fiscal_year=2564, actor="ratchaburi",
                              role=engine.program("one-plan").start_roles[0])
    return {"lop": lop.id, "lop2": lop2.id, "buri": buri.id, "khok": khok.id,
            "ratchaburi": ratchaburi.id}


def test_list_filters(engine: Engine, several: dict[str, int]) -> None:
    """list() filters by program, state, area (prefix: everything inside) and fiscal year."""
    ids = lambda xs: [x.id for x in xs]  # noqa: E731
    s = several
    assert ids(engine.list()) == sorted(s.values())
    assert ids(engine.list(area="16")) == [s["lop"], s["lop2"], s["khok"]]
    assert ids(engine.list(area="1601")) == [s["lop"], s["lop2"], s["khok"]]
    assert ids(engine.list(area=LOPBURI)) == [s["lop"]]
    assert ids(engine.list(area="Lop Buri")) == [s["lop"], s["lop2"], s["khok"]]
    assert ids(engine.list(program="leader-development")) == [s["lop"], s["lop2"], s["buri"]]
    assert ids(engine.list(state="kicked_off")) == [s["lop"]]
    assert ids(engine.list(state="activities")) == [s["khok"]]
    assert ids(engine.list(fiscal_year=2565)) == [s["lop2"]]
    assert ids(engine.list(program="leader-development", area="16", fiscal_year=2564)) == [
        s["lop"]]
    assert engine.list(area="31", state="closed") == []


def test_history_order(engine: Engine) -> None:
    """history() lists the instance's events oldest first, seq 1..n, only its own."""
    inst, _ = lopburi_story(engine)
    other, _ = lopburi_story(engine, area="160101")
    leader_to(engine, inst.id, ["workshop", "report_progress", "report_progress"])
    leader_fire(engine, other.id, "workshop")
    history = engine.history(inst.id)
    assert [e.trigger for e in history] == ["start", "kickoff", "workshop", "report_progress",
                                           "report_progress"]
    assert [e.seq for e in history] == [1, 2, 3, 4, 5]
    assert all(e.instance == inst.id for e in history)
    assert [e.at for e in history] == sorted(e.at for e in history)
    for prev, nxt in itertools.pairwise(history):
        assert nxt.prev_hash == prev.hash
    assert engine.get(inst.id).version == 5


def test_audit_log_filters(engine: Engine, several: dict[str, int]) -> None:
    """audit_log() filters by actor, program, area and since/until (CE or BE dates)."""
    everything = engine.audit_log()
    assert len(everything) == sum(len(engine.history(i)) for i in several.values())
    assert [e.at for e in everything] == sorted(e.at for e in everything)
    assert all(e.to_dict().keys() >= EVENT_KEYS for e in everything)
    by_actor = engine.audit_log(actor="buriram")
    assert [(e.instance, e.trigger) for e in by_actor] == [(several["buri"], "start")]
    khok = engine.audit_log(program="khok-nong-na")
    assert {e.instance for e in khok} == {several["khok"]}
    assert [e.trigger for e in khok] == ["start", "enroll", "start_employment"]
    assert {e.instance for e in engine.audit_log(area="31")} == {several["buri"]}
    first = dt.date.fromisoformat(everything[0].at[:10])  # UTC days the events fell on
    last = dt.date.fromisoformat(everything[-1].at[:10])
    for since in (first.isoformat(), be_date(first), first, "2564-01-01", "2021-01-01"):
        assert len(engine.audit_log(since=since)) == len(everything), since
    for until in (last.isoformat(), be_date(last), last):
        assert len(engine.audit_log(until=until)) == len(everything), until
    assert engine.audit_log(since=be_date(last + dt.timedelta(days=1))) == []
    assert engine.audit_log(until=be_date(first - dt.timedelta(days=1))) == []
    assert engine.audit_log(until="2564-12-31") == []
    middle = everything[len(everything) // 2].at
    assert [e.at for e in engine.audit_log(since=middle)] == [e.at for e in everything
                                                              if e.at >= middle]
    with pytest.raises(UsageError):
        engine.audit_log(since="last tuesday")


def test_report_counts_per_province_and_state(engine: Engine, several: dict[str, int]) -> None:
    """report() counts instances per program, province and state; khok counts regions done."""
    report = engine.report()
    rows = {(r.program, r.province.code, r.state): r for r in report.rows}
    assert rows[("leader-development", "16", "kicked_off")].count == 1
    assert rows[("leader-development", "16", "planned")].count == 1
    assert rows[("leader-development", "31", "planned")].count == 1
    assert rows[("leader-development", "16", "kicked_off")].province.name_en == "Lop Buri"
    khok_row = rows[("khok-nong-na", "16", "activities")]
    assert khok_row.count == 1
    assert khok_row.regions_done == {r: 0 for r in KHOK_REGIONS}
    assert report.total == len(several)
    # Finish two regions of the one khok instance and start a second one elsewhere in Lopburi.
    for region in ("training", "standards"):
        engine.fire(several["khok"], f"start_{region}", actor="m", role=COORDINATOR,
                    evidence={"date": "2564-02-01"})
        engine.fire(several["khok"], f"complete_{region}", actor="m", role=COORDINATOR,
                    evidence={"date": "2564-03-01", "summary": "ok"})
    start_khok(engine, area="160101", employment=False)
    khok_row = {(r.program, r.province.code, r.state): r
                for r in engine.report(program="khok-nong-na").rows}[
        ("khok-nong-na", "16", "activities")]
    assert khok_row.count == 2
    assert khok_row.regions_done == {r: (1 if r in ("training", "standards") else 0)
                                     for r in KHOK_REGIONS}
    assert khok_row.to_dict()["regions_done"]["training"] == 1
    only_2565 = engine.report(fiscal_year=2565)
    assert [(r.program, r.state, r.count) for r in only_2565.rows] == [
        ("leader-development", "planned", 1)]
    assert json.dumps(engine.report().to_dict(), ensure_ascii=False)


# --------------------------------------------------------------------------- audit


def test_verify_clean_trail(engine: Engine, several: dict[str, int]) -> None:
    """verify() on an untouched trail is ok and counts every event and instance."""
    result = engine.verify()
    assert result.ok and result.problems == ()
    assert result.instances_checked == len(several)
    assert result.events_checked == len(engine.audit_log())
    d = result.to_dict()
    assert {"ok", "events_checked", "instances_checked", "problems"} <= d.keys()


def test_verify_empty_database(engine: Engine) -> None:
    """verify() on an initialised, empty database is ok with nothing checked."""
    result = engine.verify()
    assert (result.ok, result.events_checked, result.instances_checked) == (True, 0, 0)


def test_digest_and_verify_with_digest(engine: Engine, several: dict[str, int]) -> None:
    """A digest verifies now, after a JSON round trip, and after more events are appended."""
    digest = engine.digest()
    assert isinstance(digest, Digest)
    assert digest.instances == len(several)
    assert digest.events == len(engine.audit_log())
    assert engine.verify(digest).ok
    text = json.dumps(digest.to_dict())
    assert engine.verify(json.loads(text)).ok
    assert engine.verify(json.loads(text)).digest_checked
    leader_fire(engine, several["lop"], "workshop")
    start_lopburi(engine, area="160102")
    assert engine.verify(digest).ok
    forged = json.loads(text)
    forged["root"] = "0" * 64
    with pytest.raises(UsageError):
        engine.verify(forged)


# --------------------------------------------------------------------------- definitions


def _copy_program(directory: Path, program: str, new_id: str) -> Path:
    """The bundled program as a new program ``new_id`` (at version 1: a program of its own)."""
    text = bundled_text(program).replace(f"program: {program}\n", f"program: {new_id}\n", 1)
    assert f"program: {new_id}\n" in text
    text = re.sub(r"\nversion: \d+\n", "\nversion: 1\n", text, count=1)
    path = directory / f"{new_id}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_instance_keeps_its_stored_definition(backend: str, tmp_path: Path) -> None:
    """A changed file with the same version is refused for new starts; old instances go on;
    with a bumped version new instances use v2 while old ones stay on v1."""
    defs = tmp_path / "defs"
    defs.mkdir()
    path = _copy_program(defs, "leader-development", "leader-copy")
    with open_engine(backend, definitions=[defs]) as eng:
        eng.init()
        old = eng.start("leader-copy", area=LOPBURI, fiscal_year=2564, actor="u", role=OFFICER)
    original = path.read_text(encoding="utf-8")
    changed = original.replace('en: "Kick-off meeting"', 'en: "Kick-off meeting (changed)"')
    changed = changed.replace("      chair:\n        type: text\n        required: true\n",
                              "      chair:\n        type: text\n", 1)
    assert changed != original
    path.write_text(changed, encoding="utf-8")
    with open_engine(backend, definitions=[defs]) as eng:
        with pytest.raises(DefinitionChanged) as caught:
            eng.start("leader-copy", area="160101", fiscal_year=2564, actor="u", role=OFFICER)
        assert caught.value.exit_code == 5
        # The old instance still runs on the stored text, where chair is required.
        with pytest.raises(EvidenceInvalid):
            eng.fire(old.id, "kickoff", actor="u", role=OFFICER,
                     evidence={"date": "2564-02-17", "venue": "v"})
        fired = eng.fire(old.id, "kickoff", actor="u", role=OFFICER, evidence=KICKOFF)
        assert fired.instance.program_version == 1
        assert eng.definition_of(old.id).version == 1
        assert eng.verify().ok
    path.write_text(changed.replace("version: 1\n", "version: 2\n", 1), encoding="utf-8")
    with open_engine(backend, definitions=[defs]) as eng:
        new = eng.start("leader-copy", area="160101", fiscal_year=2564, actor="u", role=OFFICER)
        assert new.program_version == 2
        fired_new = eng.fire(new.id, "kickoff", actor="u", role=OFFICER,
                             evidence={"date": "2564-02-17", "venue": "v"})  # chair optional
        assert fired_new.instance.state == "kicked_off"
        with pytest.raises(EvidenceInvalid):
            eng.fire(old.id, "workshop", actor="u", role=COORDINATOR,
                     evidence={"date": "2564-03-03", "venue": "v"})
        again = eng.fire(old.id, "workshop", actor="u", role=COORDINATOR, evidence=WORKSHOP)
        assert again.instance.program_version == 1
        assert eng.get(old.id).program_version == 1
        assert eng.verify().ok
    # Even with the file gone, the old instances keep working from the stored text.
    path.unlink()
    with open_engine(backend) as eng:
        assert eng.get(old.id).state == "workshop_held"
        assert eng.available_triggers(new.id)
        assert eng.verify().ok


CORE_ONLY = """\
program: field-visit
version: 1
title: {th: "การลงพื้นที่", en: "Field visit"}
roles: [coordinator, provincial_officer]
initial: planned
states:
  planned: {th: "วางแผน", en: "Planned"}
  visited: {th: "ลงพื้นที่แล้ว", en: "Visited"}
  closed:  {th: "ปิด", en: "Closed", final: true}
transitions:
  - trigger: visit
    from: planned
    to: visited
    label: {th: "ลงพื้นที่", en: "Visit"}
    roles: [coordinator]
    evidence:
      date:         {type: date, required: true}
      venue:        {type: text, required: true}
      participants: {type: integer, min: 1}
      level:        {type: choice, choices: [outstanding, excellent]}
      score:        {type: number, max: 10}
      photos:       {type: boolean}
  - trigger: close
    from: visited
    to: closed
    label: {th: "ปิด", en: "Close"}
    roles: [provincial_officer]
"""


def test_custom_program_with_core_keys_loads(backend: str, tmp_path: Path) -> None:
    """A definition using only the core keys loads from a definitions directory and runs."""
    (tmp_path / "field-visit.yaml").write_text(CORE_ONLY, encoding="utf-8")
    with open_engine(backend, definitions=[tmp_path]) as eng:
        eng.init()
        assert "field-visit" in [p.id for p in eng.programs()]
        inst = eng.start("field-visit", area=LOPBURI, fiscal_year=2564, actor="a",
                         role=COORDINATOR)
        r = eng.fire(inst.id, "visit", actor="a", role=COORDINATOR,
                     evidence={"date": "2564-05-01", "venue": "v", "participants": "3",
                               "level": "excellent", "score": 9.5, "photos": "yes"})
        assert r.event.evidence == {"date": "2021-05-01", "venue": "v", "participants": 3,
                                    "level": "excellent", "score": 9.5, "photos": True}
        with pytest.raises(RoleNotAllowed):
            eng.fire(inst.id, "close", actor="a", role=COORDINATOR)
        closed = eng.fire(inst.id, "close", actor="a", role=OFFICER)
        assert closed.instance.final
        assert eng.verify().ok


GUARDED = """\
program: budget-check
version: 1
title: {th: "ตรวจงบประมาณ", en: "Budget check"}
roles: [coordinator]
initial: planned
states:
  planned:  {th: "วางแผน", en: "Planned"}
  approved: {th: "อนุมัติ", en: "Approved", final: true}
transitions:
  - trigger: approve
    from: planned
    to: approved
    label: {th: "อนุมัติ", en: "Approve"}
    roles: [coordinator]
    evidence:
      budget: {type: number, required: true, min: 0}
    guards:
      - function: budget_ok
"""


def _budget_world(backend: str, directory: Path) -> int:
    (directory / "budget-check.yaml").write_text(GUARDED, encoding="utf-8")
    with open_engine(backend, definitions=[directory]) as eng:
        eng.init()
        return eng.start("budget-check", area=LOPBURI, fiscal_year=2564, actor="a",
                         role=COORDINATOR).id


def test_unregistered_guard_function_refuses(backend: str, tmp_path: Path) -> None:
    """A guard function the definition names but nobody registered refuses (GuardFailed)."""
    inst = _budget_world(backend, tmp_path)
    before = dump_tables(backend)
    with open_engine(backend, definitions=[tmp_path]) as bare:
        with pytest.raises(GuardFailed) as caught:
            bare.fire(inst, "approve", actor="a", role=COORDINATOR, evidence={"budget": 5})
        assert "budget_ok" in str(caught.value) and caught.value.exit_code == 4
    assert dump_tables(backend) == before


def test_registered_guard_function(backend: str, tmp_path: Path) -> None:
    """A named guard function registered via Engine(guards=...) decides, seeing the attempt."""
    inst = _budget_world(backend, tmp_path)
    before = dump_tables(backend)
    seen: list[GuardContext] = []

    def budget_ok(ctx: GuardContext) -> bool:
        seen.append(ctx)
        return float(ctx.evidence["budget"]) <= 1000

    with open_engine(backend, definitions=[tmp_path], guards={"budget_ok": budget_ok}) as eng:
        with pytest.raises(GuardFailed):
            eng.fire(inst, "approve", actor="a", role=COORDINATOR, evidence={"budget": 5000})
        assert dump_tables(backend) == before
        ok = eng.fire(inst, "approve", actor="a", role=COORDINATOR, evidence={"budget": 500})
        assert ok.instance.state == "approved"
    ctx = seen[-1]
    assert ctx.evidence == {"budget": 500}
    assert (ctx.program, ctx.trigger, ctx.actor, ctx.role) == ("budget-check", "approve", "a",
                                                               COORDINATOR)
    assert (ctx.instance, ctx.area, ctx.fiscal_year) == (inst, LOPBURI, 2564)


def test_default_policy_needs_grants(backend: str) -> None:
    """With the default policy a start or fire needs a covering grant (PermissionDenied, 4);
    the refusal is recorded as a denial and changes nothing else."""
    with Engine(backend) as eng:
        eng.init()
        before = dump_tables(backend)
        with pytest.raises(PermissionDenied) as caught:
            start_lopburi(eng)
        assert caught.value.exit_code == 4
        after = dump_tables(backend)
        assert len(pop_denials(after)) == len(pop_denials(before)) + 1
        assert after == before
        assert [d.actor for d in eng.denials()] == ["udomrat"]
        eng.grant("udomrat", OFFICER, area="16", by="admin")
        inst, _ = lopburi_story(eng)
        with pytest.raises(PermissionDenied):
            start_lopburi(eng, area="310101")
        with pytest.raises(PermissionDenied):  # holds no coordinator grant
            leader_fire(eng, inst.id, "workshop", actor="udomrat")
        eng.revoke("udomrat", OFFICER, area="16", by="admin")
        with pytest.raises(PermissionDenied):
            eng.fire(inst.id, "cancel", actor="udomrat", role=OFFICER, evidence={"reason": "x"})
        assert eng.get(inst.id).version == 2
        assert eng.verify().ok


# --------------------------------------------------------------------------- faults


def test_database_down_is_database_unavailable() -> None:
    """An unreachable PostgreSQL server raises DatabaseUnavailable (6), not a driver error."""
    pytest.importorskip("psycopg")
    eng = Engine("postgresql+psycopg://nobody@127.0.0.1:1/x")
    try:
        for command in (lambda: eng.get(1), lambda: eng.init(), lambda: start_lopburi(eng)):
            with pytest.raises(DatabaseUnavailable) as caught:
                command()
            assert caught.value.exit_code == 6
            assert "nobody" in str(caught.value) or "127.0.0.1" in str(caught.value)
    finally:
        eng.close()


def _read_only_sqlite(path: Path, how: str) -> str:
    if how == "uri":
        return f"sqlite:///file:{path}?mode=ro&uri=true"
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions; the `uri` variant covers read-only")
    for p in path.parent.iterdir():
        p.chmod(0o444)
    path.parent.chmod(0o555)
    return f"sqlite:///{path}"


@pytest.mark.parametrize("how", ["uri", "chmod"])
def test_read_only_sqlite_is_database_unavailable(tmp_path: Path, how: str) -> None:
    """A read-only SQLite database refuses fire with DatabaseUnavailable (6); nothing changes."""
    path = tmp_path / "db" / "workflow.db"
    with open_engine(f"sqlite:///{path}") as eng:
        eng.init()
        inst, _ = lopburi_story(eng)
    snapshot = tmp_path / "snapshot.db"
    with sqlite3.connect(path) as src, sqlite3.connect(snapshot) as dst:
        src.backup(dst)
    before = dump_tables(f"sqlite:///{snapshot}")
    url = _read_only_sqlite(path, how)
    try:
        with open_engine(url) as ro:
            assert ro.get(inst.id).state == "kicked_off"
            with pytest.raises(DatabaseUnavailable) as caught:
                leader_fire(ro, inst.id, "workshop")
            assert caught.value.exit_code == 6
            with pytest.raises(DatabaseUnavailable):
                start_lopburi(ro, area="160101")
    finally:
        path.parent.chmod(0o755)
        for p in path.parent.iterdir():
            p.chmod(0o644)
    assert dump_tables(f"sqlite:///{path}") == before
    shutil.rmtree(path.parent)


def _village_hall_versions(tmp_path: Path) -> tuple[Path, Path]:
    """Two definition folders: village-hall v1 (regions walls, roof) and v3 (floor, roof)."""
    parallel = (Path(__file__).parent / "corpus" / "valid" / "parallel.yaml").read_text("utf-8")
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "village-hall.yaml").write_text(parallel.replace("version: 2\n", "version: 1\n"),
                                           encoding="utf-8")
    (new / "village-hall.yaml").write_text(
        parallel.replace("version: 2\n", "version: 3\n").replace("walls", "floor"),
        encoding="utf-8")
    return old, new


def test_report_counts_regions_by_the_instances_own_version(backend: str, tmp_path: Path) -> None:
    """regions_done reads the regions of the version an instance runs on, not the newest one:
    a newer version may rename, add or drop regions."""
    old, new = _village_hall_versions(tmp_path)
    with open_engine(backend, definitions=[old]) as eng:
        eng.init()
        inst = eng.start("village-hall", area=LOPBURI, fiscal_year=2564, actor="a",
                         role=COORDINATOR)
        eng.fire(inst.id, "begin", actor="a", role=OFFICER)
        eng.fire(inst.id, "raise_walls", actor="a", role=COORDINATOR)
    with open_engine(backend, definitions=[new]) as eng:
        assert eng.program("village-hall").version == 3
        (row,) = eng.report(program="village-hall").rows
        assert (row.state, row.count) == ("building", 1)
        assert row.regions_done == {"walls": 1, "roof": 0}


def test_one_report_counts_each_version_by_its_own_regions(backend: str, tmp_path: Path) -> None:
    """One engine holding instances on two versions whose parallel regions differ counts each
    instance's regions by its own version in the same report."""
    old, new = _village_hall_versions(tmp_path)
    with open_engine(backend, definitions=[old]) as eng:
        eng.init()
        first = eng.start("village-hall", area=LOPBURI, fiscal_year=2564, actor="a",
                          role=COORDINATOR)
        eng.fire(first.id, "begin", actor="a", role=OFFICER)
        eng.fire(first.id, "raise_walls", actor="a", role=COORDINATOR)
    with open_engine(backend, definitions=[new]) as eng:
        second = eng.start("village-hall", area="160101", fiscal_year=2564, actor="a",
                           role=COORDINATOR)
        assert second.program_version == 3
        eng.fire(second.id, "begin", actor="a", role=OFFICER)
        eng.fire(second.id, "raise_floor", actor="a", role=COORDINATOR)
        (row,) = eng.report(program="village-hall").rows
        assert (row.state, row.count) == ("building", 2)
        assert row.regions_done == {"walls": 1, "floor": 1, "roof": 0}


def test_fire_many_takes_fire_requests_and_mappings(engine: Engine) -> None:
    """fire_many accepts typed FireRequest objects, mappings, or both mixed in one batch."""
    a = start_lopburi(engine)
    b = start_lopburi(engine, area="160101")
    results = engine.fire_many([
        FireRequest(a.id, "kickoff", actor="somchai", role=OFFICER, evidence=KICKOFF),
        {"instance": b.id, "trigger": "kickoff", "actor": "somchai", "role": OFFICER,
         "evidence": KICKOFF},
    ])
    assert [r.instance.state for r in results] == ["kicked_off", "kicked_off"]
    with pytest.raises(FrozenInstanceError):
        request = FireRequest(a.id, "workshop", actor="x", role=OFFICER)
        request.actor = "y"  # type: ignore[misc]
