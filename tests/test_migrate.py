"""Migration of running instances (issue 13, CONTRACT §8): the next version of each bundled
program (tests/evolution_fixtures.py: a renamed state, a merged state, a new optional stage),
instances in every reachable configuration of the bundled version migrated by plan, dry runs,
refusals that change nothing, idempotent reruns, and verify catching a tampered migrate event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evolution_fixtures import BUNDLED, MAPS, NEXT, PROGRAMS, write_v2
from helpers import (
    COORDINATOR,
    KHOK_REGIONS,
    LOPBURI,
    OFFICER,
    dump_tables,
    leader_to,
    pop_denials,
    start_khok,
    start_lopburi,
)
from test_amend import _rehash
from workflow import AmendRefused, Engine, PermissionDenied, RoleNotAllowed
from workflow.engine.evolution import map_leaf


@pytest.fixture
def v2(engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    """An engine on the same database that also knows the next version of every bundled
    program."""
    directory = write_v2(tmp_path / "v2")
    with Engine(engine.url, [directory], allow_override=PROGRAMS, policy=engine.policy) as eng:
        yield eng


def _tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table less what recording a refusal adds (its denial, queued for the audit log)."""
    tables = dump_tables(url)
    pop_denials(tables)
    return tables


# --------------------------------------------------------------------------- every configuration

LEADER_PATHS = [
    [], ["kickoff"], ["kickoff", "workshop"], ["kickoff", "workshop", "report_progress"],
    ["kickoff", "workshop", "report_progress", "evaluate"],
    ["kickoff", "workshop", "report_progress", "evaluate", "award"],
    ["kickoff", "workshop", "report_progress", "evaluate", "award", "summarize"],
]


def test_leader_development_every_configuration_migrates(engine: Engine, v2: Engine) -> None:
    """planned ... summarized on the bundled version become the mapped states of the next
    and fire under it."""
    ids = []
    for i, path in enumerate(LEADER_PATHS):
        inst = start_lopburi(engine, allow_duplicate=True, title=f"#{i}")
        leader_to(engine, inst.id, path)
        ids.append(inst.id)
    result = v2.migrate("leader-development", NEXT, actor="udomrat", role=OFFICER,
                        mapping=MAPS["leader-development"])
    assert result.ok and result.migrated == len(ids)
    states = [v2.get(i).state for i in ids]
    assert states == ["planned", "launched", "workshop_held", "implementing", "assessed",
                      "assessed", "summarized"]
    last = v2.history(ids[1])[-1]
    assert last.trigger == "migrate" and last.evidence["from_version"] == BUNDLED
    assert last.evidence["map"] == {"kicked_off": "launched"}
    assert v2.get(ids[1]).program_version == NEXT
    # the new optional stage, under v2
    r = v2.fire(ids[3], "monitor", actor="somchai", role=COORDINATOR,
                evidence={"date": "2564-05-01"})
    assert r.instance.state == "monitored"
    r = v2.fire(ids[4], "award", actor="insp", role="inspector",
                evidence={"date": "2564-07-01", "level": "excellent"})
    assert r.instance.state == "assessed"
    assert v2.verify().ok
    assert engine.verify().ok  # verify needs no program files


KHOK_SETUPS: list[list[tuple[str, str]]] = [
    [],
    [("start_digital", "d")],
    [("start_digital", "d"), ("complete_digital", "d")],
    [("start_training", "d"), ("start_digital", "d")],
    [(f"start_{r}", "d") for r in KHOK_REGIONS] + [(f"complete_{r}", "d") for r in KHOK_REGIONS],
]


def _khok_fire(engine: Engine, iid: int, trigger: str) -> None:
    evidence: dict[str, Any] = {"date": "2564-02-01"}
    if trigger.startswith("complete_"):
        evidence["summary"] = "เสร็จ"
    if trigger == "evaluate":
        engine.fire(iid, trigger, actor="anong", role=OFFICER, evidence=evidence)
        return
    engine.fire(iid, trigger, actor="malee", role=COORDINATOR, evidence=evidence)


def test_khok_nong_na_regions_migrate_leaf_by_leaf(engine: Engine, v2: Engine) -> None:
    """Each region's leaf is mapped on its own: digital pending -> underway (merged), the
    other regions keep their states; `evaluated` becomes `reviewed`."""
    ids = [engine.start("khok-nong-na", area=LOPBURI, fiscal_year=2564, actor="anong",
                        role=OFFICER, allow_duplicate=True).id]
    for setup in KHOK_SETUPS:
        iid = start_khok(engine, employment=False, allow_duplicate=True).id
        for trigger, _ in setup:
            _khok_fire(engine, iid, trigger)
        ids.append(iid)
    _khok_fire(engine, ids[-1], "evaluate")
    result = v2.migrate("khok-nong-na", NEXT, actor="anong", role=OFFICER,
                        mapping=MAPS["khok-nong-na"])
    assert result.ok and result.migrated == len(ids)
    insts = [v2.get(i) for i in ids]
    assert insts[0].state == "planned"
    assert "activities.digital.underway" in insts[1].active
    assert "activities.digital.pending" not in insts[1].active
    assert "activities.training.pending" in insts[1].active
    assert "activities.digital.underway" in insts[2].active
    assert "activities.digital.done" in insts[3].active
    assert {"activities.training.underway", "activities.digital.underway"} <= set(insts[4].active)
    assert insts[5].state == "reviewed"
    assert "start_digital" not in insts[1].available_triggers
    v2.fire(ids[1], "complete_digital", actor="malee", role=COORDINATOR,
            evidence={"date": "2564-03-01", "summary": "ระบบพร้อม"})
    v2.fire(ids[5], "audit", actor="anong", role=OFFICER, evidence={"date": "2564-09-01"})
    assert v2.get(ids[5]).state == "audited"
    assert v2.verify().ok


ONE_PLAN_STEPS = [
    ("collect_data", "coordinator", {"date": "2564-01-05"}),
    ("hold_forums", "coordinator", {"date": "2564-01-20", "villages": 8, "participants": 240}),
    ("train_committee", "coordinator", {"date": "2564-02-10", "venue": "อบต.", "participants": 30}),
    ("draft_plan", "coordinator", {"date": "2564-03-01", "projects": 12}),
    ("submit", "coordinator", {"date": "2564-03-15"}),
    ("approve", "committee", {"date": "2564-04-01", "chair": "นายก อบต."}),
    ("link_plans", "coordinator", {"date": "2564-05-01"}),
]


def test_one_plan_every_configuration_migrates(engine: Engine, v2: Engine) -> None:
    """planned ... linked on the bundled version migrate; a consulted instance without forums
    must hold them before training the committee (the new guard), which it still can."""
    ids = []
    for n in range(len(ONE_PLAN_STEPS) + 1):
        iid = engine.start("one-plan", area=LOPBURI, fiscal_year=2564, actor="u", role=OFFICER,
                           allow_duplicate=True).id
        for trigger, role, evidence in ONE_PLAN_STEPS[:n]:
            engine.fire(iid, trigger, actor="s", role=role, evidence=evidence)
        ids.append(iid)
    dry = v2.migrate("one-plan", NEXT, actor="u", role=OFFICER, mapping=MAPS["one-plan"],
                     dry_run=True)
    assert dry.ok and dry.migrated == 0 and len(dry.items) == len(ids)
    result = v2.migrate("one-plan", NEXT, actor="u", role=OFFICER, mapping=MAPS["one-plan"])
    assert [v2.get(i).state for i in ids] == [
        "planned", "consulted", "consulted", "committee_trained", "drafted", "under_review",
        "approved", "integrated"]
    assert result.migrated == len(ids)
    assert "train_committee" not in v2.get(ids[1]).available_triggers
    assert "train_committee" in v2.get(ids[2]).available_triggers
    v2.fire(ids[6], "publish", actor="s", role=COORDINATOR, evidence={"date": "2564-04-15"})
    assert v2.verify().ok


# --------------------------------------------------------------------------- plans and refusals


def test_dry_run_reports_problems_and_changes_nothing(engine: Engine, v2: Engine) -> None:
    """Without --map a renamed state is unmapped: the dry run says so per instance; applying
    is refused (exit 4) and nothing changes."""
    planned = start_lopburi(engine).id
    kicked = start_lopburi(engine, allow_duplicate=True).id
    leader_to(engine, kicked, ["kickoff"])
    before = _tables(engine.url)
    dry = v2.migrate("leader-development", NEXT, actor="u", role=OFFICER, dry_run=True)
    items = {i.id: i for i in dry.items}
    assert items[planned].ok and items[planned].to == ("planned",)
    assert not items[kicked].ok and "kicked_off" in (items[kicked].problem or "")
    assert set(items[kicked].to_dict()) >= {"id", "from", "to", "ok", "problem"}
    assert _tables(engine.url) == before
    with pytest.raises(AmendRefused, match="nothing was migrated"):
        v2.migrate("leader-development", NEXT, actor="u", role=OFFICER)
    assert _tables(engine.url) == before


def test_rerun_is_idempotent_and_selection_filters(engine: Engine, v2: Engine) -> None:
    """A second run finds nothing to do; --area and --fiscal-year select; finished instances
    are left alone."""
    lop = start_lopburi(engine).id
    other = start_lopburi(engine, area="310101").id  # Buriram
    year = start_lopburi(engine, fiscal_year=2565).id
    done = start_lopburi(engine, allow_duplicate=True).id
    engine.fire(done, "cancel", actor="u", role=OFFICER, evidence={"reason": "งบประมาณ"})
    seen: list[int] = []
    first = v2.migrate("leader-development", NEXT, actor="u", role=OFFICER, area="16",
                       fiscal_year=2564, mapping=MAPS["leader-development"], batch_size=1,
                       progress=seen.append)
    assert [i.id for i in first.items] == [lop] and seen == [1]
    assert v2.get(other).program_version == BUNDLED and v2.get(year).program_version == BUNDLED
    assert v2.get(done).program_version == BUNDLED
    before = _tables(engine.url)
    again = v2.migrate("leader-development", NEXT, actor="u", role=OFFICER, area="16",
                       fiscal_year=2564, mapping=MAPS["leader-development"])
    assert again.items == () and _tables(engine.url) == before
    assert v2.verify().ok


def test_unmeetable_guard_is_reported(engine: Engine, v2: Engine, tmp_path: Path) -> None:
    """A version after the next of one-plan whose forums are held only from `planned`: an
    instance already past it that never held forums cannot meet train_committee's guard, and
    the plan says so."""
    from workflow.programs.registry import Registry

    text = Registry([tmp_path / "v2"], allow_override=PROGRAMS).get("one-plan", NEXT).source_text
    old = "  - trigger: hold_forums\n    from: consulted\n"
    assert old in text
    text = text.replace(old, "  - trigger: hold_forums\n    from: planned\n")
    (tmp_path / "v3").mkdir()
    text = text.replace(f"version: {NEXT}\n", f"version: {NEXT + 1}\n")
    (tmp_path / "v3" / "one-plan-v3.yaml").write_text(text, encoding="utf-8")
    iid = engine.start("one-plan", area=LOPBURI, fiscal_year=2564, actor="u", role=OFFICER).id
    engine.fire(iid, "collect_data", actor="s", role=COORDINATOR, evidence={"date": "2564-01-05"})
    with Engine(engine.url, [tmp_path / "v3"], allow_override=PROGRAMS,
                policy=engine.policy) as v3:
        dry = v3.migrate("one-plan", NEXT + 1, actor="u", role=OFFICER, mapping=MAPS["one-plan"],
                         dry_run=True)
    (item,) = dry.items
    assert not item.ok and "needs an earlier hold_forums" in (item.problem or "")


def test_who_may_migrate(engine: Engine, v2: Engine) -> None:
    """Only the program's correction roles; with stored grants the actor needs a grant for
    the instance's area; refusals are recorded and change nothing else."""
    iid = start_lopburi(engine).id
    before = _tables(engine.url)
    with pytest.raises(RoleNotAllowed):
        v2.migrate("leader-development", NEXT, actor="s", role=COORDINATOR)
    directory = Path(v2.registry.get("leader-development", NEXT).source_file).parent
    with Engine(engine.url, [directory], allow_override=PROGRAMS) as strict:
        strict.grant("udomrat", OFFICER, area="31")
        before = _tables(engine.url)
        with pytest.raises(PermissionDenied):
            strict.migrate("leader-development", NEXT, actor="udomrat", role=OFFICER)
        assert _tables(engine.url) == before
        assert [d.action for d in strict.denials()][-1] == "migrate"
        strict.grant("udomrat", OFFICER, area="16")
        strict.migrate("leader-development", NEXT, actor="udomrat", role=OFFICER)
        assert strict.get(iid).program_version == NEXT
        assert strict.verify().ok


def test_map_leaf_by_exact_path_or_prefix() -> None:
    """An exact entry wins; else the longest prefix maps everything under it."""
    m = {"activities.digital": "activities.online", "activities.digital.done": "activities.x"}
    assert map_leaf("activities.digital.pending", m) == "activities.online.pending"
    assert map_leaf("activities.digital.done", m) == "activities.x"
    assert map_leaf("planned", m) == "planned"


# --------------------------------------------------------------------------- tampering


def test_verify_catches_a_tampered_migrate_event(engine: Engine, v2: Engine) -> None:
    """A migrate event whose from_definition was rewritten (chain re-hashed) is caught, and so
    is an instance row put back on its old version after its migration."""
    iid = start_lopburi(engine).id
    v2.migrate("leader-development", NEXT, actor="u", role=OFFICER)
    event = v2.history(iid)[-1]
    evidence = dict(event.evidence, from_definition="0" * 64)
    _rehash(engine.url, iid, event.seq, evidence=json.dumps(
        evidence, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    problems = v2.verify().problems
    assert any(p.seq == event.seq and "did not run on" in p.reason for p in problems), problems


def test_verify_catches_an_instance_put_back_on_its_old_version(
    engine: Engine, v2: Engine
) -> None:
    """The instance row's version and definition are what its migrate event says."""
    from helpers import execute

    iid = start_lopburi(engine).id
    old = engine.store.run(lambda c: engine.store.get_instance(c, iid))
    assert old is not None
    v2.migrate("leader-development", NEXT, actor="u", role=OFFICER)
    execute(engine.url, f"UPDATE workflow_instances SET program_version = {BUNDLED}, "
                        f"definition_id = {old.definition_id} WHERE id = {iid}")
    problems = v2.verify().problems
    assert any(p.instance == iid and "program_version" in p.reason for p in problems), problems


# --------------------------------------------------------------------------- the bundled v1 -> v2


def test_bundled_version_1_instances_migrate_to_version_2(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instances of a database from before version 2 shipped (one with a date version 1
    allowed outside its fiscal year) migrate to the bundled version 2 with no map, keep their
    evidence, and then fire under version 2's fiscal-year rule; verify passes."""
    from workflow import EvidenceInvalid
    from workflow.programs import registry

    every = registry.bundled_files
    monkeypatch.setattr(registry, "bundled_files",
                        lambda: [f for f in every() if f.name.endswith(".v1.yaml")])
    with Engine(engine.url, policy=engine.policy) as old:
        assert old.program("leader-development").version == 1
        iid = start_lopburi(old).id
        old.fire(iid, "kickoff", actor="udomrat", role=OFFICER,
                 evidence={"date": "2563-02-17", "venue": "ศาลาประชาคม", "chair": "นายอำเภอ"})
    monkeypatch.setattr(registry, "bundled_files", every)
    assert engine.program("leader-development").version == 2
    dry = engine.migrate("leader-development", 2, actor="udomrat", role=OFFICER, dry_run=True)
    assert [(i.id, i.ok) for i in dry.items] == [(iid, True)]
    engine.migrate("leader-development", 2, actor="udomrat", role=OFFICER)
    inst = engine.get(iid)
    assert (inst.program_version, inst.state) == (2, "kicked_off")
    assert engine.history(iid)[1].evidence["date"] == "2020-02-17"  # as recorded, not re-judged
    with pytest.raises(EvidenceInvalid, match="outside fiscal year 2564"):
        engine.fire(iid, "workshop", actor="somchai", role=COORDINATOR,
                    evidence={"date": "2565-03-03", "venue": "บ้านสระบัว", "participants": 25})
    engine.fire(iid, "workshop", actor="somchai", role=COORDINATOR,
                evidence={"date": "2564-03-03", "venue": "บ้านสระบัว", "participants": 25})
    assert engine.verify().ok


@pytest.mark.parametrize("program", ["leader-development", "one-plan", "khok-nong-na"])
def test_bundled_version_2_declares_dates_within_the_fiscal_year_and_due(program: str) -> None:
    """Version 2 of every bundled program keeps version 1's states and triggers and adds
    `within: fiscal_year` dates and one due state escalated to the provincial officer."""
    from workflow.programs.registry import Registry

    reg = Registry()
    v1, v2 = reg.get(program, 1), reg.get(program, 2)
    assert {s.path for s in v1.all_states()} == {s.path for s in v2.all_states()}
    assert set(v1.triggers) == set(v2.triggers)
    within = [t.trigger for t in v2.transitions for f in t.evidence if f.within]
    assert within and not any(f.within for t in v1.transitions for f in t.evidence)
    due = [s for s in v2.all_states() if s.due is not None]
    assert len(due) == 1 and due[0].escalate == ("provincial_officer",)
