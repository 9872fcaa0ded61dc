"""Tests of workflow.runtime.machine: compiled programs moving configurations (leaf paths).

The random walks check the machine against an independent oracle written from the program
definition alone: which transitions are candidates, which refusal comes first (role, then
evidence, then guards), what the configuration after a move must be, and what ``available``
must offer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflow.errors import (
    DefinitionError,
    EvidenceInvalid,
    GuardFailed,
    Refused,
    RoleNotAllowed,
    TriggerNotAllowed,
)
from workflow.programs.loader import load_file, load_text
from workflow.programs.model import (
    CompareGuard,
    EvidenceField,
    FunctionGuard,
    HappenedGuard,
    Label,
    Program,
    RegionsFinalGuard,
    State,
    Transition,
)
from workflow.programs.registry import Registry
from workflow.runtime.machine import CompiledMachine, GuardContext, compile_program

CORPUS = Path(__file__).parent / "corpus" / "valid"
PROGRAMS: dict[str, Program] = {p.id: p for p in Registry().programs()}
OFFICER, COORD, INSPECTOR, COMMITTEE = "provincial_officer", "coordinator", "inspector", "committee"
REGIONS = ("training", "learning_areas", "employment", "consumption", "integration",
           "standards", "digital")
Config = tuple[str, ...]


# --------------------------------------------------------------------------- the oracle


class Oracle:
    """What a program definition says must happen, computed without the machine."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.by_path: dict[str, State] = {s.path: s for s in program.all_states()}

    def enter(self, path: str) -> list[str]:
        state = self.by_path[path]
        if not state.regions:
            return [path]
        out: list[str] = []
        for r in state.regions:
            out.extend(self.enter(f"{path}.{r.name}.{r.initial}"))
        return out

    @staticmethod
    def active(config: Config) -> set[str]:
        out = set()
        for leaf in config:
            parts = leaf.split(".")
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return out

    def candidates(self, config: Config, trigger: str) -> list[Transition]:
        active = self.active(config)
        return [t for t in self.program.transitions
                if t.trigger == trigger and active.intersection(t.sources)]

    def triggers(self, config: Config) -> set[str]:
        return {t.trigger for t in self.program.transitions
                if self.active(config).intersection(t.sources)}

    def after(self, config: Config, t: Transition) -> set[str]:
        (src,) = [s for s in t.sources if s in self.active(config)]
        kept = [leaf for leaf in config if leaf != src and not leaf.startswith(src + ".")]
        return set(kept) | set(self.enter(t.dest))

    def regions_final(self, path: str, config: Config) -> bool:
        state = self.by_path[path]
        for r in state.regions:
            leaves = [p for p in config if p.startswith(f"{path}.{r.name}.")]
            if not leaves or not all(self.by_path[p].final for p in leaves):
                return False
        return bool(state.regions)

    def guard(self, g: object, t: Transition, config: Config, fired: Sequence[str],
              typed: Mapping[str, object]) -> bool:
        if isinstance(g, HappenedGuard):
            return g.trigger in fired
        if isinstance(g, RegionsFinalGuard):
            return self.regions_final(g.state, config)
        assert isinstance(g, CompareGuard)
        left = typed.get(g.field)
        right = typed.get(g.other_field) if g.other_field is not None else g.value
        if left is None or right is None:
            return True
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
        return ops[g.op](left, right)

    def available(self, config: Config, role: str | None, fired: Sequence[str]) -> list[str]:
        out = []
        for trigger in self.program.triggers:
            for t in self.candidates(config, trigger):
                if role is not None and role not in t.roles:
                    continue
                if all(self.guard(g, t, config, fired, {}) for g in t.guards
                       if isinstance(g, HappenedGuard | RegionsFinalGuard)):
                    out.append(trigger)
                    break
        return out


# --------------------------------------------------------------------------- evidence

_TEXT = st.text(alphabet="abc xyz กขคง 0123456789", min_size=1, max_size=30).filter(str.strip)


@st.composite
def valid_value(draw: st.DrawFn, f: EvidenceField) -> tuple[object, object]:
    """A value fitting ``f`` as a caller might give it, and its canonical typed form."""
    if f.type == "text":
        text = draw(_TEXT)[: f.max_length]
        return text, text.strip()
    if f.type == "integer":
        lo = int(f.min) if f.min is not None else -10_000
        hi = int(f.max) if f.max is not None else 10_000
        n = draw(st.integers(lo, hi))
        return (str(n) if draw(st.booleans()) else n), n
    if f.type == "number":
        lo = f.min if f.min is not None else -1e6
        hi = f.max if f.max is not None else 1e6
        x = draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
        return x, (int(x) if x.is_integer() else x)
    if f.type == "date":
        d = draw(st.dates(dt.date(2000, 1, 1), dt.date(2035, 12, 31)))
        be = draw(st.booleans())
        raw = f"{d.year + 543 if be else d.year:04d}-{d.month:02d}-{d.day:02d}"
        return raw, d.isoformat()
    if f.type == "boolean":
        b = draw(st.booleans())
        raw = draw(st.sampled_from([b, str(b).lower(), "yes" if b else "no"]))
        return raw, b
    assert f.type == "choice"
    c = draw(st.sampled_from(f.choices))
    return c, c


_BROKEN: dict[str, list[object]] = {
    "text": ["a\x00b", 12.5j, ["list"]],
    "integer": ["many", 2.5, True, "1.5"],
    "number": ["lots", math.nan, math.inf, "-inf", False],
    "date": ["2564-02-30", "17/02/2021", "2021-13-01", 20210217],
    "boolean": ["maybe", 2, "2"],
    "choice": ["not_a_choice", 3.5],
}


@st.composite
def evidence_for(draw: st.DrawFn, t: Transition
                 ) -> tuple[dict[str, object], dict[str, object], str | None]:
    """(raw evidence, expected typed evidence, name of the field deliberately broken)."""
    raw: dict[str, object] = {}
    typed: dict[str, object] = {}
    for f in t.evidence:
        if f.required or draw(st.booleans()):
            raw[f.name], typed[f.name] = draw(valid_value(f))
    if draw(st.integers(0, 4)) > 0:
        return raw, typed, None
    how = draw(st.sampled_from(["missing", "undeclared", "wrong", "below"]))
    required = [f for f in t.evidence if f.required]
    bounded = [f for f in t.evidence if f.min is not None]
    if how == "missing" and required:
        f = draw(st.sampled_from(required))
        raw.pop(f.name, None)
        return raw, typed, f.name
    if how == "below" and bounded:
        f = draw(st.sampled_from(bounded))
        assert f.min is not None
        raw[f.name] = int(f.min) - 1 if f.type == "integer" else f.min - 0.5
        return raw, typed, f.name
    if how == "wrong" and t.evidence:
        f = draw(st.sampled_from(t.evidence))
        raw[f.name] = draw(st.sampled_from(_BROKEN[f.type]))
        return raw, typed, f.name
    raw["bogus_field"] = "x"
    return raw, typed, "bogus_field"


# --------------------------------------------------------------------------- random walks


_BOGUS = st.one_of(
    st.sampled_from(["to_closed", "to_cancelled", "to_planned", "__init__", "trigger", "start",
                     "state", "", "to_activities", "enroll "]),
    st.text(max_size=12),
)


def walk(data: st.DataObject, program: Program, steps: int) -> None:
    machine = compile_program(program)
    oracle = Oracle(program)
    roles = [*program.roles, "auditor"]
    config: Config = machine.initial()
    assert set(config) == set(oracle.enter(program.initial))
    fired: list[str] = []
    after_final = 0
    for _ in range(steps):
        if machine.is_final(config):
            after_final += 1  # a few tries at a final configuration, then the walk is over
            if after_final > 3:
                break
        # what the machine says about the current configuration
        assert set(machine.triggers_from(config)) == oracle.triggers(config)
        assert not any(tr.startswith("to_") for tr in machine.triggers_from(config))
        for role in (None, *roles):
            assert list(machine.available(config, role=role, happened=lambda: tuple(fired))) == (
                oracle.available(config, role, fired))
        assert machine.is_final(config) == (not oracle.triggers(config))

        # what to try
        here = sorted(oracle.triggers(config))
        kind = data.draw(st.integers(0, 19))
        if here and kind >= 2:
            usual = [tr for tr in here if tr != "cancel"] or here
            trigger = data.draw(st.sampled_from(here if kind == 2 else usual))
        elif kind == 1:
            trigger = data.draw(st.sampled_from(program.triggers))
        else:
            trigger = data.draw(_BOGUS)
        cands = oracle.candidates(config, trigger)
        if cands:
            assert len(cands) == 1, "bundled programs have one transition per (trigger, state)"
            t = cands[0]
            permitted = list(t.roles)
            role = data.draw(st.sampled_from(permitted if data.draw(st.integers(0, 3)) else roles))
            raw, typed, broken = data.draw(evidence_for(t))
        else:
            t = None
            role = data.draw(st.sampled_from(roles))
            raw, typed, broken = {}, {}, None

        try:
            step = machine.apply(config, trigger, role, raw, happened=lambda: tuple(fired))
        except Refused as e:
            if t is None:
                assert isinstance(e, TriggerNotAllowed), e
                assert e.known == (trigger in program.triggers)
            elif role not in t.roles:
                assert isinstance(e, RoleNotAllowed), e
                assert e.role == role and set(e.allowed) == set(t.roles)
            elif broken is not None:
                assert isinstance(e, EvidenceInvalid), e
                assert e.field == broken and e.trigger == trigger
            else:
                assert isinstance(e, GuardFailed), e
                assert not all(oracle.guard(g, t, config, fired, typed) for g in t.guards)
            continue
        # Anything but a Refused propagates and fails the test. A success must be the one move
        # the definition allows.
        assert t is not None, f"{trigger!r} succeeded from {config}"
        assert role in t.roles
        assert broken is None
        assert step.transition == t
        assert step.before == config
        assert step.evidence == typed
        assert list(step.evidence) == [f.name for f in t.evidence if f.name in typed]
        for g in t.guards:
            assert oracle.guard(g, t, config, fired, typed), g
        expected = oracle.after(config, t)
        assert set(step.after) == expected and len(step.after) == len(expected)
        # Other regions are untouched by a move inside one region.
        if "." in t.dest and t.dest.split(".")[0] == config[0].split(".")[0]:
            region = ".".join(t.dest.split(".")[:2]) + "."
            assert [p for p in step.after if not p.startswith(region)] == [
                p for p in config if not p.startswith(region)]
        fired.append(trigger)
        config = step.after
    # Applying never changes the machine: the start is still the start.
    assert set(machine.initial()) == set(oracle.enter(program.initial))


@pytest.mark.parametrize("program_id", sorted(PROGRAMS))
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_walk(program_id: str, data: st.DataObject) -> None:
    walk(data, PROGRAMS[program_id], steps=60)


@pytest.mark.parametrize("name", ["parallel.yaml", "all_features.yaml", "yes_no_on_off.yaml",
                                  "minimal.yaml"])
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_walk_corpus(name: str, data: st.DataObject) -> None:
    program = load_file(CORPUS / name)
    # Function guards are exercised separately; here the oracle covers the declarative kinds.
    program = dataclasses.replace(program, content_hash=program.content_hash + "-no-functions",
                                  transitions=tuple(
        dataclasses.replace(t, guards=tuple(g for g in t.guards
                                            if not isinstance(g, FunctionGuard)))
        for t in program.transitions))
    walk(data, program, steps=30)


# --------------------------------------------------------------------------- unit tests

LEADER_PATH: list[tuple[str, str, dict[str, object]]] = [
    ("kickoff", OFFICER, {"date": "2564-02-17", "venue": "ศูนย์เรียนรู้", "chair": "นายอำเภอ"}),
    ("workshop", COORD, {"date": "2565-03-03", "venue": "บ้านสระบัว", "participants": 25,
                         "end_date": "2565-03-04"}),
    ("report_progress", COORD, {"date": "2564-04-01", "summary": "ปลูกผัก"}),
    ("report_progress", COORD, {"date": "2564-05-01", "summary": "เลี้ยงไก่"}),
    ("evaluate", OFFICER, {"date": "2564-06-01", "method": "Like & Follow และ Share"}),
    ("award", INSPECTOR, {"date": "2564-07-01", "level": "excellent"}),
    ("summarize", OFFICER, {"date": "2564-08-01", "venue": "ที่ว่าการอำเภอ"}),
    ("lessons_learned", OFFICER, {"date": "2564-09-01", "summary": "บทเรียน"}),
]


def khok_path() -> list[tuple[str, str, dict[str, object]]]:
    steps: list[tuple[str, str, dict[str, object]]] = [
        ("enroll", OFFICER, {"date": "2564-01-13", "households": 30})]
    for r in REGIONS:
        steps.append((f"start_{r}", COORD, {"date": "2564-02-01"}))
        if r == "employment":
            steps.append(("report_employment", COORD, {"date": "2564-03-01", "workers": 0}))
        steps.append((f"complete_{r}", COORD, {"date": "2564-09-01", "summary": "เสร็จ"}))
    steps.append(("evaluate", OFFICER, {"date": "2564-09-15"}))
    steps.append(("close", OFFICER, {"date": "2564-09-30"}))
    return steps


def run(machine: CompiledMachine, steps: Sequence[tuple[str, str, Mapping[str, object]]],
        config: Config | None = None) -> tuple[Config, list[str]]:
    config = config or machine.initial()
    fired: list[str] = []
    for trigger, role, evidence in steps:
        config = machine.apply(config, trigger, role, evidence,
                               happened=lambda: tuple(fired)).after
        fired.append(trigger)
    return config, fired


@pytest.mark.parametrize("program_id", sorted(PROGRAMS))
def test_initial_configuration(program_id: str) -> None:
    assert compile_program(PROGRAMS[program_id]).initial() == ("planned",)


def test_khok_nong_na_enroll_enters_the_seven_regions() -> None:
    machine = compile_program(PROGRAMS["khok-nong-na"])
    step = machine.apply(("planned",), "enroll", OFFICER, {"date": "2564-01-13", "households": 3})
    assert step.after == tuple(f"activities.{r}.pending" for r in REGIONS)
    assert step.evidence == {"date": "2021-01-13", "households": 3}


def test_khok_nong_na_region_moves_keep_the_other_regions() -> None:
    machine = compile_program(PROGRAMS["khok-nong-na"])
    config, _ = run(machine, khok_path()[:2])
    assert config == tuple(f"activities.{r}.{'underway' if r == 'training' else 'pending'}"
                           for r in REGIONS)
    # Moving regions in any order gives the same (normalised) configuration.
    enrolled = machine.apply(("planned",), "enroll", OFFICER,
                             {"date": "2564-01-13", "households": 1}).after
    d = {"date": "2564-02-01"}
    a, _ = run(machine, [("start_digital", COORD, d), ("start_training", COORD, d)], enrolled)
    b, _ = run(machine, [("start_training", COORD, d), ("start_digital", COORD, d)], enrolled)
    assert a == b


def test_khok_nong_na_full_path() -> None:
    machine = compile_program(PROGRAMS["khok-nong-na"])
    config, _ = run(machine, khok_path())
    assert config == ("closed",)
    assert machine.is_final(config)
    assert machine.triggers_from(config) == ()


def test_khok_nong_na_evaluate_waits_for_every_region() -> None:
    machine = compile_program(PROGRAMS["khok-nong-na"])
    steps = khok_path()
    config, _ = run(machine, steps[:-3])  # digital started, not completed
    assert not machine.regions_final("activities", config)
    assert "evaluate" in machine.triggers_from(config)
    assert "evaluate" not in machine.available(config)
    with pytest.raises(GuardFailed):
        machine.apply(config, "evaluate", OFFICER, {"date": "2564-09-15"})
    config, _ = run(machine, steps[-3:-2], config)
    assert machine.regions_final("activities", config)
    assert machine.available(config) == ("evaluate", "cancel")
    assert machine.available(config, role=COORD) == ()


def test_khok_nong_na_cancel_from_inside_the_regions() -> None:
    machine = compile_program(PROGRAMS["khok-nong-na"])
    config, _ = run(machine, khok_path()[:4])
    step = machine.apply(config, "cancel", OFFICER, {"reason": "น้ำท่วม"})
    assert step.after == ("cancelled",)
    assert machine.is_final(step.after)


def test_available_filters_by_role() -> None:
    machine = compile_program(PROGRAMS["leader-development"])
    assert machine.available(("planned",)) == ("kickoff", "cancel")
    assert machine.available(("planned",), role=OFFICER) == ("kickoff", "cancel")
    assert machine.available(("planned",), role=COORD) == ("kickoff",)
    assert machine.available(("planned",), role=INSPECTOR) == ()
    assert machine.available(("planned",), role="auditor") == ()
    assert machine.available(("evaluated",), role=INSPECTOR) == ("award",)


def test_available_hides_lessons_learned_until_award_happened() -> None:
    machine = compile_program(PROGRAMS["leader-development"])
    without_award = [s for s in LEADER_PATH[:-1] if s[0] != "award"]
    config, fired = run(machine, without_award)
    assert config == ("summarized",)
    assert machine.available(config, happened=lambda: fired) == ("close", "cancel")
    assert machine.available(config) == ("close", "cancel")  # no history: nothing happened
    assert "lessons_learned" in machine.triggers_from(config)
    with pytest.raises(GuardFailed) as caught:
        machine.apply(config, "lessons_learned", OFFICER,
                      {"date": "2564-09-01", "summary": "x"}, happened=lambda: fired)
    assert "award" in str(caught.value)

    config, fired = run(machine, LEADER_PATH[:-1])
    assert "award" in fired
    assert machine.available(config, happened=lambda: fired) == (
        "lessons_learned", "close", "cancel")
    assert machine.available(config, role=COORD, happened=lambda: fired) == ()
    config, _ = run(machine, LEADER_PATH)
    assert config == ("closed",)


def test_compare_guard_on_evidence() -> None:
    machine = compile_program(PROGRAMS["leader-development"])
    config, _ = run(machine, LEADER_PATH[:1])
    base = {"date": "2565-03-03", "venue": "บ้านสระบัว", "participants": 25}
    with pytest.raises(GuardFailed):
        machine.apply(config, "workshop", COORD, {**base, "end_date": "2565-03-02"})
    # end_date is optional: left out, the comparison passes.
    assert machine.apply(config, "workshop", COORD, base).after == ("workshop_held",)
    # BE and CE are compared as the same calendar.
    step = machine.apply(config, "workshop", COORD, {**base, "end_date": "2022-03-03"})
    assert step.evidence["end_date"] == step.evidence["date"] == "2022-03-03"


def test_refusal_order_role_then_evidence_then_guard() -> None:
    machine = compile_program(PROGRAMS["leader-development"])
    config, _ = run(machine, LEADER_PATH[:1])
    bad = {"date": "2565-03-03", "venue": "x", "participants": 0, "end_date": "2500-01-01"}
    with pytest.raises(RoleNotAllowed):
        machine.apply(config, "workshop", INSPECTOR, bad)
    with pytest.raises(EvidenceInvalid) as caught:
        machine.apply(config, "workshop", COORD, bad)
    assert caught.value.field == "participants"
    with pytest.raises(GuardFailed):
        machine.apply(config, "workshop", COORD, {**bad, "participants": 1})


@pytest.mark.parametrize("program_id", sorted(PROGRAMS))
@pytest.mark.parametrize("trigger", ["to_closed", "to_cancelled", "to_planned", "__init__",
                                     "trigger", "start", "may_cancel", "is_planned"])
def test_no_backdoor_triggers(program_id: str, trigger: str) -> None:
    machine = compile_program(PROGRAMS[program_id])
    assert not any(t.startswith("to_") for t in machine.triggers_from(("planned",)))
    with pytest.raises(TriggerNotAllowed) as caught:
        machine.apply(("planned",), trigger, OFFICER, {})
    assert caught.value.known is False


def test_trigger_not_allowed_in_this_state() -> None:
    machine = compile_program(PROGRAMS["one-plan"])
    with pytest.raises(TriggerNotAllowed) as caught:
        machine.apply(("planned",), "approve", COMMITTEE, {"date": "2564-11-26", "chair": "x"})
    assert caught.value.known is True
    assert set(caught.value.allowed) == {"collect_data", "cancel"}
    # Nothing leaves a final state.
    for final in ("closed", "cancelled"):
        assert machine.triggers_from((final,)) == ()
        with pytest.raises(TriggerNotAllowed):
            machine.apply((final,), "cancel", OFFICER, {"reason": "again"})


def test_one_plan_revision_loop() -> None:
    machine = compile_program(PROGRAMS["one-plan"])
    d = {"date": "2564-11-26"}
    steps: list[tuple[str, str, dict[str, object]]] = [
        ("collect_data", COORD, d),
        ("hold_forums", COORD, {**d, "villages": 12, "participants": 80}),
        ("train_committee", OFFICER, {**d, "venue": "VDO", "participants": 40}),
        ("draft_plan", COORD, {**d, "projects": 0}),
        ("submit", COORD, d),
        ("return_for_revision", COMMITTEE, {**d, "reason": "เพิ่มโครงการ"}),
        ("submit", COORD, d),
        ("approve", COMMITTEE, {**d, "chair": "กำนัน"}),
        ("link_plans", OFFICER, d),
        ("close", OFFICER, d),
    ]
    config, fired = run(machine, steps)
    assert config == ("closed",) and fired.count("submit") == 2


# --------------------------------------------------------------------------- function guards


def _features() -> tuple[CompiledMachine, Config]:
    machine = compile_program(load_file(CORPUS / "all_features.yaml"))
    config = machine.apply(machine.initial(), "review", COORD,
                           {"date": "2564-01-01", "summary": "s", "kind": "loan"}).after
    config = machine.apply(config, "check_finance", COMMITTEE).after
    config = machine.apply(config, "check_legal", COMMITTEE).after
    assert config == ("reviewing.finance.checked", "reviewing.legal.checked")
    return machine, config


def test_function_guard_receives_a_context() -> None:
    machine, config = _features()
    seen: list[GuardContext] = []

    def budget_available(ctx: GuardContext) -> bool:
        seen.append(ctx)
        return ctx.evidence.get("score", 0) != 99  # type: ignore[comparison-overlap]

    functions = {"budget_available": budget_available}
    context = {"actor": "udomrat", "instance": 7, "area": "160117", "fiscal_year": 2564}
    step = machine.apply(config, "approve", COMMITTEE, {"date": "2564-02-01", "score": 70},
                         functions=functions, context=context)
    assert step.after == ("approved",)
    (ctx,) = seen
    assert (ctx.program, ctx.program_version, ctx.trigger, ctx.role) == (
        "community-fund", 3, "approve", COMMITTEE)
    assert (ctx.actor, ctx.instance, ctx.area, ctx.fiscal_year) == ("udomrat", 7, "160117", 2564)
    assert ctx.evidence == {"date": "2021-02-01", "score": 70}
    assert ctx.active == config
    with pytest.raises(GuardFailed):
        machine.apply(config, "approve", COMMITTEE, {"date": "2564-02-01", "score": 99},
                      functions=functions, context=context)
    # The declarative guards come first: score > 50 fails before the function is asked.
    seen.clear()
    with pytest.raises(GuardFailed):
        machine.apply(config, "approve", COMMITTEE, {"date": "2564-02-01", "score": 10},
                      functions=functions, context=context)
    assert seen == []


def test_function_guard_missing_false_or_raising_is_refused() -> None:
    machine, config = _features()
    ev = {"date": "2564-02-01"}
    ctx = {"actor": "a"}
    with pytest.raises(GuardFailed) as caught:
        machine.apply(config, "approve", COMMITTEE, ev, context=ctx)
    assert "budget_available" in str(caught.value)
    with pytest.raises(GuardFailed):
        machine.apply(config, "approve", COMMITTEE, ev, context=ctx,
                      functions={"budget_available": lambda c: False})

    def boom(c: GuardContext) -> bool:
        raise RuntimeError("ledger offline")

    with pytest.raises(GuardFailed) as caught:
        machine.apply(config, "approve", COMMITTEE, ev, context=ctx,
                      functions={"budget_available": boom})
    assert "ledger offline" in str(caught.value)


@pytest.mark.parametrize("context", [None, {"instance": 1, "area": "160117", "fiscal_year": 2564}])
def test_function_guard_without_actor_in_context(context: dict[str, object] | None) -> None:
    # Was a TypeError (GuardContext needs an actor) for exactly what engine.fire passed.
    machine, config = _features()
    seen: list[GuardContext] = []
    step = machine.apply(config, "approve", COMMITTEE, {"date": "2564-02-01"}, context=context,
                         functions={"budget_available": lambda c: seen.append(c) is None})
    assert step.after == ("approved",)
    assert seen[0].actor == "" and seen[0].trigger == "approve"


# --------------------------------------------------------------------------- found bugs


def _program(transitions: list[Transition], states: tuple[State, ...]) -> Program:
    return Program(id="sample", version=1, title=Label("ตัวอย่าง", "Sample"),
                   roles=("coordinator",), start_roles=("coordinator",), initial="planned",
                   states=states, transitions=tuple(transitions), content_hash="x" * 64)


def test_a_region_moves_while_the_last_region_is_done() -> None:
    # Was an AttributeError ('scoped_enter') from transitions 0.9.3's final-state check, in
    # apply and in available, whenever the LAST region was final and another region moved.
    machine = compile_program(PROGRAMS["khok-nong-na"])
    config, _ = run(machine, [
        ("enroll", OFFICER, {"date": "2564-01-13", "households": 30}),
        ("start_digital", COORD, {"date": "2564-02-01"}),
        ("complete_digital", COORD, {"date": "2564-03-01", "summary": "ระบบพร้อมใช้"}),
    ])
    assert machine.available(config) == (*(f"start_{r}" for r in REGIONS[:-1]), "cancel")
    step = machine.apply(config, "start_training", COORD, {"date": "2564-03-02"})
    assert step.after == (
        *(f"activities.{r}.{'underway' if r == 'training' else 'pending'}" for r in REGIONS[:-1]),
        "activities.digital.done")


def test_regions_may_finish_in_definition_order() -> None:
    machine = compile_program(PROGRAMS["khok-nong-na"])
    config, _ = run(machine, khok_path()[:3])
    assert config[0] == "activities.training.done"
    step = machine.apply(config, "start_digital", COORD, {"date": "2564-03-02"})
    assert step.after[-1] == "activities.digital.underway"


def test_compare_with_an_unfit_constant_is_refused_not_a_crash() -> None:
    # The loader refuses such a guard (E042); a Program built in Python must not crash either.
    states = (State("planned", "planned", Label("ก", "a")),
              State("closed", "closed", Label("ข", "b"), final=True))
    t = Transition("close", ("planned",), "closed", Label("ปิด", "Close"), ("coordinator",),
                   evidence=(EvidenceField("n", "integer"),),
                   guards=(CompareGuard("n", ">", value="abc"),))
    machine = CompiledMachine(_program([t], states))
    with pytest.raises(Refused):
        machine.apply(("planned",), "close", "coordinator", {"n": 3})


def test_entering_a_region_leaf_from_outside_is_refused_by_the_loader() -> None:
    # It used to load, and the machine then entered that one leaf only, leaving the other
    # regions without a state.
    text = (CORPUS / "parallel.yaml").read_text(encoding="utf-8") + """\
  - trigger: prefab
    from: planned
    to: building.roof.framed
    label: {th: "หลังคาสำเร็จรูป", en: "Prefabricated roof"}
    roles: [coordinator]
"""
    with pytest.raises(DefinitionError) as caught:
        load_text(text)
    assert [p.code for p in caught.value.problems] == ["E025"]
    # Entering the parallel state itself enters every region.
    machine = compile_program(load_file(CORPUS / "parallel.yaml"))
    step = machine.apply(("planned",), "begin", OFFICER)
    assert step.after == ("building.walls.waiting", "building.roof.waiting")


# --------------------------------------------------------------------------- compiling


def test_compiled_once_per_program_version() -> None:
    program = PROGRAMS["leader-development"]
    assert compile_program(program) is compile_program(program)
    again = load_text(program.source_text, "elsewhere.yaml")
    assert again is not program
    assert compile_program(again) is compile_program(program)
    changed = load_text(program.source_text + "\n# changed\n")
    assert compile_program(changed) is not compile_program(program)
    newer = program.version + 1
    bumped = load_text(program.source_text.replace(
        f"\nversion: {program.version}\n", f"\nversion: {newer}\n", 1))
    assert bumped.version == newer
    assert compile_program(bumped) is not compile_program(program)
    assert compile_program(bumped).program.version == newer


def test_compile_program_concurrently_gives_one_machine() -> None:
    program = load_text(PROGRAMS["one-plan"].source_text + "\n# fresh for this test\n")
    barrier = threading.Barrier(8)

    def compile_it() -> CompiledMachine:
        barrier.wait()
        return compile_program(program)

    with ThreadPoolExecutor(8) as pool:
        machines = list(pool.map(lambda _: compile_it(), range(8)))
    assert all(m is machines[0] for m in machines)


def test_apply_is_thread_safe() -> None:
    khok = compile_program(PROGRAMS["khok-nong-na"])
    leader = compile_program(PROGRAMS["leader-development"])
    barrier = threading.Barrier(8)

    def work(i: int) -> list[Config]:
        barrier.wait()
        out = []
        for _ in range(15):
            if i % 2:
                out.append(run(khok, khok_path())[0])
            else:
                out.append(run(leader, LEADER_PATH)[0])
            # and a refusal in between, which must not leak into the next apply
            with pytest.raises(Refused):
                khok.apply(("planned",), "evaluate", OFFICER, {"date": "2564-01-01"})
        return out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for i, configs in enumerate(results):
        assert configs == [("closed",)] * 15, i
