"""Tests of workflow.programs.loader: the YAML definition format, its validator, its codes.

The corpus under ``tests/corpus/`` drives most of them:

* ``valid/*.yaml`` must load with no problem at all;
* ``invalid/*.yaml`` start with ``# expect: CODE...`` (the codes the loader must report, as a
  multiset) and mark the offending lines with ``# <- CODE``; each problem must be reported on
  the line that carries its marker.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflow.errors import DefinitionError, Problem
from workflow.programs.loader import CODES, check_file, check_text, load_file, load_text
from workflow.programs.model import (
    CompareGuard,
    FunctionGuard,
    HappenedGuard,
    Program,
    RegionsFinalGuard,
)
from workflow.programs.registry import Registry, bundled_files
from workflow.runtime.machine import compile_program

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.yaml"))
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))
DOCS = HERE.parent / "docs" / "definitions.md"
#: The newest version of each bundled program is ``{program}.yaml``; older versions stay,
#: verbatim, as ``{program}.v{N}.yaml`` (instances keep the version they started on).
BUNDLED = {p.stem: p for p in bundled_files() if "." not in p.stem}
EVERY_BUNDLED = {p.stem: p for p in bundled_files()}

PROBLEM_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<code>E\d{3}) (?P<message>\S.*)$")


def expected_codes(path: Path) -> Counter[str]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = re.match(r"^# expect: ((?:E\d{3}\s*)+)", first)
    assert m, f"{path.name}: first line must be '# expect: E0xx ...'"
    return Counter(m.group(1).split())


def marked_lines(path: Path) -> Counter[tuple[int, str]]:
    """(line, code) for every ``<- CODE [CODE...]`` marker in the file."""
    out: Counter[tuple[int, str]] = Counter()
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = re.search(r"<-((?:\s+E\d{3})+)", text)
        if m:
            for code in m.group(1).split():
                out[(number, code)] += 1
    return out


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_there() -> None:
    assert len(VALID) >= 4
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_corpus_loads(path: Path) -> None:
    program, problems = check_file(path)
    assert problems == []
    assert isinstance(program, Program)
    assert load_file(path) == program
    compile_program(program)  # a valid program is a runnable one


#: Corpus files whose problem the loader reports, but not yet on the right line.
KNOWN_LINE_BUGS: dict[str, str] = {}


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(reason=KNOWN_LINE_BUGS[p.name], strict=True))
    if p.name in KNOWN_LINE_BUGS else p for p in INVALID], ids=lambda p: p.name)
def test_invalid_corpus_reports_exactly_the_expected_problems(path: Path) -> None:
    _, problems = check_file(path)
    assert Counter(p.code for p in problems) == expected_codes(path), [str(p) for p in problems]
    markers = marked_lines(path)
    assert sum(markers.values()) == len(problems), f"{path.name}: one marker per problem"
    assert Counter((p.line, p.code) for p in problems) == markers, [str(p) for p in problems]
    # The first problem (in report order) is on the first marked line.
    assert problems[0].line == min(line for line, _ in markers)
    for p in problems:
        assert p.file == str(path)
        assert p.code in CODES
        assert p.message.strip()
    with pytest.raises(DefinitionError) as caught:
        load_file(path)
    assert caught.value.problems == tuple(problems)
    assert caught.value.exit_code == 1


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_problem_str_is_file_line_code_message(path: Path) -> None:
    _, problems = check_file(path)
    for p in problems:
        m = PROBLEM_LINE.match(str(p))
        assert m, str(p)
        assert (m["file"], int(m["line"]), m["code"], m["message"]) == (
            str(path), p.line, p.code, p.message)


def test_problem_str_format() -> None:
    assert str(Problem("defs/x.yaml", 12, "E020", "unknown state 'a'")) == (
        "defs/x.yaml:12: E020 unknown state 'a'")


def test_every_problem_kind_in_the_corpus() -> None:
    """The invalid corpus exercises every code the loader itself reports."""
    seen = set()
    for path in INVALID:
        seen |= set(expected_codes(path))
    # E060 needs two files (see test_same_version_twice), E070 the bundled programs too (see
    # test_definition_source.py).
    assert set(CODES) - seen == {"E060", "E070"}


def test_all_problems_of_a_file_are_reported_at_once() -> None:
    _, problems = check_file(CORPUS / "invalid" / "three_problems.yaml")
    assert len(problems) == 3
    assert sorted(p.code for p in problems) == ["E010", "E013", "E030"]
    assert [p.line for p in problems] == sorted(p.line for p in problems)


def test_problems_are_sorted_by_line() -> None:
    for path in INVALID:
        _, problems = check_file(path)
        assert problems == sorted(problems, key=lambda p: (p.line, p.code))


def test_filename_is_used_in_problems() -> None:
    _, problems = check_text("- a list\n", "somewhere/x.yaml")
    assert [str(p) for p in problems] == [
        "somewhere/x.yaml:1: E002 a definition must be a mapping, not a list"]


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    program, problems = check_file(missing)
    assert program is None and [p.code for p in problems] == ["E001"]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"program: caf\xe9\n")
    program, problems = check_file(latin)
    assert program is None and [p.code for p in problems] == ["E001"]


def test_same_version_twice_with_different_content(tmp_path: Path) -> None:
    text = (CORPUS / "valid" / "minimal.yaml").read_text(encoding="utf-8")
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(text.replace("Kicked off", "Kicked-off"), encoding="utf-8")
    with pytest.raises(DefinitionError) as caught:
        Registry([tmp_path], bundled=False)
    assert [p.code for p in caught.value.problems] == ["E060"]
    # The same content twice is fine.
    (tmp_path / "b.yaml").write_text(text, encoding="utf-8")
    assert [p.id for p in Registry([tmp_path], bundled=False).programs()] == [
        "leader-development"]


# --------------------------------------------------------------------------- YAML specifics


def test_yes_no_on_off_stay_strings() -> None:
    program = load_file(CORPUS / "valid" / "yes_no_on_off.yaml")
    assert program.initial == "off"
    assert [s.name for s in program.states] == ["off", "on", "yes", "no"]
    assert program.roles == ("yes", "on")
    assert program.triggers == ("on", "yes", "no")
    assert program.transitions_for("yes")[0].sources == ("on", "off")
    for t in program.transitions:
        assert all(isinstance(x, str) for x in (t.trigger, t.dest, *t.sources, *t.roles))


def test_true_false_are_still_booleans() -> None:
    program = load_file(CORPUS / "valid" / "minimal.yaml")
    assert program.state("closed").final is True  # type: ignore[union-attr]
    assert program.transitions[0].evidence[0].required is True


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['echo hacked']\n",
    "program: !!python/name:os.system\n",
    "program: !!python/object/new:builtins.dict {}\n",
])
def test_nothing_is_evaluated_as_code(text: str) -> None:
    program, problems = check_text(text)
    assert program is None
    assert [p.code for p in problems] == ["E001"]


def test_minimal_contract_example() -> None:
    program = load_file(CORPUS / "valid" / "minimal.yaml")
    assert program.id == "leader-development"
    assert program.version == 1
    assert program.start_roles == ("provincial_officer",)
    kickoff = program.transitions_for("kickoff")[0]
    assert [(f.name, f.type, f.required) for f in kickoff.evidence] == [
        ("date", "date", True), ("venue", "text", True),
        ("participants", "integer", False), ("level", "choice", False)]
    assert kickoff.field("participants").min == 1  # type: ignore[union-attr]
    assert kickoff.field("level").choices == ("outstanding", "excellent")  # type: ignore[union-attr]


def test_start_roles_default_to_every_role() -> None:
    program = load_file(CORPUS / "valid" / "parallel.yaml")
    assert program.start_roles == program.roles == ("coordinator", "provincial_officer")


def test_all_features() -> None:
    program = load_file(CORPUS / "valid" / "all_features.yaml")
    assert program.description is not None and program.sources
    types = {f.type for t in program.transitions for f in t.evidence}
    assert types == {"text", "integer", "number", "date", "boolean", "choice"}
    guards = [g for t in program.transitions for g in t.guards]
    assert {type(g) for g in guards} == {
        HappenedGuard, RegionsFinalGuard, CompareGuard, FunctionGuard}
    compares = [g for g in guards if isinstance(g, CompareGuard)]
    assert any(g.other_field for g in compares) and any(g.other_field is None for g in compares)
    review = program.transitions_for("review")[0]
    assert review.field("summary").max_length == 200  # type: ignore[union-attr]
    assert review.field("amount").max == 1000000.5  # type: ignore[union-attr]
    assert review.field("date").label.en == "Date"  # type: ignore[union-attr]
    # "*" means every non-final top-level state.
    assert program.transitions_for("cancel")[0].sources == (
        "proposed", "reviewing", "approved", "paid")
    assert program.transitions_for("close")[0].sources == ("approved", "paid")
    # Regions without th/en have no label; states inside them are dotted paths.
    reviewing = program.state("reviewing")
    assert reviewing is not None and reviewing.parallel
    assert [r.name for r in reviewing.regions] == ["finance", "legal"]
    assert reviewing.regions[1].label is None
    assert program.state("reviewing.legal.checked").final  # type: ignore[union-attr]


def test_version_must_be_a_positive_integer() -> None:
    text = (CORPUS / "valid" / "minimal.yaml").read_text(encoding="utf-8")
    for bad in ("0", "-1", '"one"', "1.5", "true", "[1]", '"2"'):
        _, problems = check_text(text.replace("version: 1 ", f"version: {bad} "))
        assert [p.code for p in problems] == ["E050"], bad
    program, problems = check_text(text.replace("version: 1 ", "version: 7 "))
    assert problems == [] and program is not None and program.version == 7


def test_content_hash_follows_the_text() -> None:
    text = (CORPUS / "valid" / "minimal.yaml").read_text(encoding="utf-8")
    a, b = load_text(text), load_text(text + "\n# a comment\n")
    assert a.content_hash != b.content_hash
    assert load_text(text).content_hash == a.content_hash
    assert a.source_text == text


# --------------------------------------------------------------------------- edge cases

_HEAD = """\
program: sample
version: 1
title: {th: "ตัวอย่าง", en: "Sample"}
roles: [coordinator]
initial: planned
"""


@pytest.mark.parametrize("transitions", ["[]", """
  - trigger: close
    from: planned
    to: closed
    label: {th: "ปิด", en: "Close"}
    roles: [coordinator]"""])
def test_a_program_needs_states(transitions: str) -> None:
    # Was a KeyError in meaning() (with a transition) or a program that could not compile.
    _, problems = check_text(_HEAD + f"states: {{}}\ntransitions: {transitions}\n")
    assert [p.code for p in problems] == ["E012"]


@pytest.mark.parametrize(("value", "type_"), [
    ("abc", "integer"), ("null", "integer"), ("2.5", "integer"), ("[1]", "integer"),
    ("'2564-02-30'", "date"), ("maybe", "boolean"), ("good", "choice"), ("nan", "number"),
])
def test_compare_value_must_fit_the_field(value: str, type_: str) -> None:
    # Was accepted, and machine.apply then raised ValueError.
    choices = ", choices: [outstanding, excellent]" if type_ == "choice" else ""
    text = _HEAD + f"""\
states:
  planned: {{th: "วางแผน", en: "Planned"}}
  closed:  {{th: "ปิด", en: "Closed", final: true}}
transitions:
  - trigger: close
    from: planned
    to: closed
    label: {{th: "ปิด", en: "Close"}}
    roles: [coordinator]
    evidence:
      x: {{type: {type_}{choices}}}
    guards:
      - compare: x
        op: "=="
        value: {value}
"""
    _, problems = check_text(text)
    assert [(p.line, p.code) for p in problems] == [(20, "E042")], [str(p) for p in problems]


_DATE_GUARD = _HEAD + """\
states:
  planned: {th: "วางแผน", en: "Planned"}
  closed:  {th: "ปิด", en: "Closed", final: true}
transitions:
  - trigger: close
    from: planned
    to: closed
    label: {th: "ปิด", en: "Close"}
    roles: [coordinator]
    evidence:
      d: {type: date}
    guards:
      - compare: d
        op: "=="
        value: VALUE
"""


@pytest.mark.parametrize("text", [
    _DATE_GUARD.replace("VALUE", "2564-02-30"),
    _HEAD.replace("version: 1", "version: 2021-02-30"),
    "sources: [2021-13-01]\n",
])
def test_unquoted_impossible_date_is_a_problem_not_a_crash(text: str) -> None:
    _, problems = check_text(text)
    assert problems


def test_unquoted_be_date_constant_means_the_same_as_quoted() -> None:
    quoted = compile_program(load_text(_DATE_GUARD.replace("VALUE", '"2564-02-17"')))
    bare = compile_program(load_text(_DATE_GUARD.replace("VALUE", "2564-02-17")))
    assert quoted.apply(("planned",), "close", "coordinator", {"d": "2021-02-17"})
    assert bare.apply(("planned",), "close", "coordinator", {"d": "2021-02-17"})


@pytest.mark.parametrize(("value", "type_"), [
    ("'2564-02-17'", "date"), ("'2021-02-17'", "date"), ("2021-02-17", "date"), ("3", "number"),
    ("2.5", "number"), ("'7'", "integer"), ("yes", "boolean"), ("excellent", "choice"),
])
def test_compare_values_that_fit(value: str, type_: str) -> None:
    choices = ", choices: [outstanding, excellent]" if type_ == "choice" else ""
    text = _HEAD + f"""\
states:
  planned: {{th: "วางแผน", en: "Planned"}}
  closed:  {{th: "ปิด", en: "Closed", final: true}}
transitions:
  - trigger: close
    from: planned
    to: closed
    label: {{th: "ปิด", en: "Close"}}
    roles: [coordinator]
    evidence:
      x: {{type: {type_}{choices}}}
    guards:
      - compare: x
        op: "=="
        value: {value}
"""
    _, problems = check_text(text)
    assert problems == []


# --------------------------------------------------------------------------- bundled programs

OFFICER, COORD, INSPECTOR, COMMITTEE = "provincial_officer", "coordinator", "inspector", "committee"
# trigger: (from, to, roles, required evidence) as in CONTRACT §2 (cancel is added below).
ContractRow = tuple[tuple[str, ...], str, frozenset[str], frozenset[str]]


def _row(sources: str, dest: str, roles: str, required: str) -> ContractRow:
    return (tuple(sources.split()), dest, frozenset(roles.split()), frozenset(required.split()))


LEADER: dict[str, ContractRow] = {
    "kickoff": _row("planned", "kicked_off", f"{OFFICER} {COORD}", "date venue chair"),
    "workshop": _row("kicked_off", "workshop_held", f"{COORD} {OFFICER}",
                     "date venue participants"),
    "report_progress": _row("workshop_held implementing", "implementing", COORD, "date summary"),
    "evaluate": _row("implementing", "evaluated", f"{COORD} {OFFICER}", "date method"),
    "award": _row("evaluated", "awarded", INSPECTOR, "date level"),
    "summarize": _row("evaluated awarded", "summarized", OFFICER, "date venue"),
    "lessons_learned": _row("summarized", "closed", OFFICER, "date summary"),
    "close": _row("summarized", "closed", OFFICER, "date"),
}
REGIONS = ("training", "learning_areas", "employment", "consumption", "integration",
           "standards", "digital")
KHOK: dict[str, ContractRow] = {
    "enroll": _row("planned", "activities", OFFICER, "date households"),
    **{f"start_{r}": _row(f"activities.{r}.pending", f"activities.{r}.underway", COORD, "date")
       for r in REGIONS},
    **{f"complete_{r}": _row(f"activities.{r}.underway", f"activities.{r}.done", COORD,
                             "date summary") for r in REGIONS},
    "report_employment": _row("activities.employment.underway", "activities.employment.underway",
                              COORD, "date workers"),
    "evaluate": _row("activities", "evaluated", OFFICER, "date"),
    "close": _row("evaluated", "closed", OFFICER, "date"),
}
ONE_PLAN: dict[str, ContractRow] = {
    "collect_data": _row("planned", "data_collected", COORD, "date"),
    "hold_forums": _row("data_collected", "forums_held", COORD, "date villages participants"),
    "train_committee": _row("forums_held", "committee_trained", f"{COORD} {OFFICER}",
                            "date venue participants"),
    "draft_plan": _row("committee_trained", "drafted", COORD, "date projects"),
    "submit": _row("drafted", "under_review", COORD, "date"),
    "return_for_revision": _row("under_review", "drafted", COMMITTEE, "date reason"),
    "approve": _row("under_review", "approved", COMMITTEE, "date chair"),
    "link_plans": _row("approved", "linked", f"{COORD} {OFFICER}", "date"),
    "close": _row("linked", "closed", OFFICER, "date"),
}
CONTRACT: dict[str, dict[str, object]] = {
    "leader-development": {
        "roles": {COORD, OFFICER, INSPECTOR},
        "states": {"planned", "kicked_off", "workshop_held", "implementing", "evaluated",
                   "awarded", "summarized", "closed", "cancelled"},
        "transitions": LEADER,
        # (trigger, field): minimum
        "min": {("workshop", "participants"): 1},
        "choices": {("award", "level"): {"outstanding", "excellent"}},
        "happened": {"lessons_learned": "award"},
        "regions_final": {},
    },
    "khok-nong-na": {
        "roles": {COORD, OFFICER},
        "states": {"planned", "activities", "evaluated", "closed", "cancelled"}
        | {f"activities.{r}.{s}" for r in REGIONS for s in ("pending", "underway", "done")},
        "transitions": KHOK,
        "min": {("enroll", "households"): 1, ("report_employment", "workers"): 0},
        "choices": {},
        "happened": {},
        "regions_final": {"evaluate": "activities"},
    },
    "one-plan": {
        "roles": {COORD, OFFICER, COMMITTEE},
        "states": {"planned", "data_collected", "forums_held", "committee_trained", "drafted",
                   "under_review", "approved", "linked", "closed", "cancelled"},
        "transitions": ONE_PLAN,
        "min": {("hold_forums", "villages"): 1, ("hold_forums", "participants"): 1,
                ("train_committee", "participants"): 1, ("draft_plan", "projects"): 0},
        "choices": {},
        "happened": {},
        "regions_final": {},
    },
}
FIELD_TYPES = {"date": "date", "venue": "text", "chair": "text", "summary": "text",
               "method": "text", "reason": "text", "level": "choice", "participants": "integer",
               "households": "integer", "workers": "integer", "villages": "integer",
               "projects": "integer"}


def _bundled(program_id: str) -> Program:
    program, problems = check_file(BUNDLED[program_id])
    assert problems == [], [str(p) for p in problems]
    assert program is not None
    return program


def test_bundled_files_are_the_three_programs() -> None:
    """One current file per contract program, the newest version; each older version's file
    is named by its version."""
    assert set(BUNDLED) == set(CONTRACT)
    registry = Registry()
    assert {p.id for p in registry.programs()} == set(CONTRACT)
    for stem, path in EVERY_BUNDLED.items():
        program = check_file(path)[0]
        assert program is not None, stem
        name, _, older = stem.partition(".")
        assert program.id == name
        newest = registry.get(name).version
        assert (older == f"v{program.version}" and program.version < newest) or (
            not older and program.version == newest), stem


@pytest.mark.parametrize("stem", sorted(EVERY_BUNDLED))
def test_bundled_program_matches_the_contract(stem: str) -> None:
    """Every bundled version keeps the contract's states, triggers, roles and evidence."""
    program_id = stem.partition(".")[0]
    program, problems = check_file(EVERY_BUNDLED[stem])
    assert problems == [] and program is not None, [str(p) for p in problems]
    spec = CONTRACT[program_id]
    assert program.id == program_id
    assert program.version >= 1
    assert program.initial == "planned"
    assert set(program.roles) == spec["roles"]
    assert set(program.start_roles) <= set(program.roles) and program.start_roles
    assert {s.path for s in program.all_states()} == spec["states"]
    finals = {s.path for s in program.all_states() if s.final}
    assert {"closed", "cancelled"} <= finals
    assert all(p in ("closed", "cancelled") or p.endswith(".done") for p in finals)

    top_non_final = tuple(s.path for s in program.states if not s.final)
    table = dict(spec["transitions"])  # type: ignore[call-overload]
    table["cancel"] = (top_non_final, "cancelled", frozenset({OFFICER}), frozenset({"reason"}))
    assert set(program.triggers) == set(table)
    for trigger, (sources, dest, roles, required) in table.items():
        (t,) = program.transitions_for(trigger)  # one transition per trigger
        assert set(t.sources) == set(sources), trigger
        assert t.dest == dest, trigger
        assert set(t.roles) == roles, trigger
        assert {f.name for f in t.evidence if f.required} == required, trigger
        for f in t.evidence:
            if f.name in FIELD_TYPES and f.required:
                assert f.type == FIELD_TYPES[f.name], (trigger, f.name)
    for (trigger, name), minimum in spec["min"].items():  # type: ignore[attr-defined]
        f = program.transitions_for(trigger)[0].field(name)
        assert f is not None and f.min == minimum, (trigger, name)
    for (trigger, name), choices in spec["choices"].items():  # type: ignore[attr-defined]
        f = program.transitions_for(trigger)[0].field(name)
        assert f is not None and set(f.choices) == choices
    for trigger, t in ((t.trigger, t) for t in program.transitions):
        happened = {g.trigger for g in t.guards if isinstance(g, HappenedGuard)}
        regions = {g.state for g in t.guards if isinstance(g, RegionsFinalGuard)}
        assert happened == ({spec["happened"][trigger]} if trigger in spec["happened"]  # type: ignore[index,operator]
                            else set()), trigger
        assert regions == ({spec["regions_final"][trigger]} if trigger in spec["regions_final"]  # type: ignore[index,operator]
                           else set()), trigger
        assert not any(isinstance(g, FunctionGuard) for g in t.guards)


def test_khok_nong_na_regions() -> None:
    program = _bundled("khok-nong-na")
    activities = program.state("activities")
    assert activities is not None
    assert tuple(r.name for r in activities.regions) == REGIONS
    for r in activities.regions:
        assert r.initial == "pending"
        assert [(s.name, s.final) for s in r.states] == [
            ("pending", False), ("underway", False), ("done", True)]


@pytest.mark.parametrize("program_id", sorted(CONTRACT))
def test_bundled_labels_are_complete(program_id: str) -> None:
    program = _bundled(program_id)
    labelled = [program.title, *(s.label for s in program.all_states()),
                *(t.label for t in program.transitions)]
    for s in program.all_states():
        labelled.extend(r.label for r in s.regions if r.label is not None)
        assert all(r.label is not None for r in s.regions), s.path
    for t in program.transitions:
        labelled.extend(f.label for f in t.evidence if f.label is not None)
    for label in labelled:
        assert label.th.strip() and label.th != "?"
        assert label.en.strip() and label.en != "?"
        assert re.search(r"[\u0E00-\u0E7F]", label.th), label  # Thai script
    assert re.search(r"[\u0E00-\u0E7F]", program.title.th)


# --------------------------------------------------------------------------- docs


def test_docs_list_every_code() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for code in CODES:
        assert re.search(rf"^\|\s*`?{code}`?\s*\|", text, re.M), f"{code} missing from {DOCS}"


# --------------------------------------------------------------------------- never crash

_TEXTS = [p.read_text(encoding="utf-8") for p in [*BUNDLED.values(), *VALID]]


def _check_never_raises(text: str) -> None:
    program, problems = check_text(text, "fuzz.yaml")
    assert isinstance(problems, list)
    for p in problems:
        assert isinstance(p, Problem) and p.code in CODES and p.line >= 1
        assert PROBLEM_LINE.match(str(p)), str(p)
    if not problems:
        assert isinstance(program, Program)
        compile_program(program)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_random_text_never_raises(text: str) -> None:
    _check_never_raises(text)


@pytest.mark.parametrize("text", ["program: a\x0c\n", "\x1f", "title: \x1b[1m\n", "a: \x7f"])
def test_control_characters_are_a_problem_not_a_crash(text: str) -> None:
    program, problems = check_text(text)
    assert program is None and [p.code for p in problems] == ["E001"]


_YAMLISH = st.text(alphabet=" :-{}[]\"'#&*!|>~,.?%@`\t\n0123456789abyzอ", min_size=1, max_size=4)


@st.composite
def mutated_definitions(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(_TEXTS)).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "change", "insert", "truncate"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "change" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + draw(_YAMLISH)[0] + lines[i][j + 1:]
        elif op == "insert":
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + draw(_YAMLISH) + lines[i][j:]
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        if not lines:
            lines = [""]
    return "\n".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_definitions())
def test_mutated_definitions_never_raise(text: str) -> None:
    _check_never_raises(text)
