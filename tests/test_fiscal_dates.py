"""Date sanity (CONTRACT §8): a date field declared `within: fiscal_year` must fall in the
instance's Buddhist-Era fiscal year; the refusal names the year's bounds in BE."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import LOPBURI, OFFICER, dump_tables
from workflow import Engine, EvidenceInvalid
from workflow.programs.loader import check_text
from workflow.runtime.evidence import fiscal_year_bounds

PROGRAM = """\
program: fy-check
version: 1
title: {th: "ทดสอบ", en: "FY check"}
roles: [provincial_officer]
initial: planned
states:
  planned: {th: "วางแผน", en: "Planned"}
  met: {th: "ประชุมแล้ว", en: "Met"}
  closed: {th: "ปิด", en: "Closed", final: true}
transitions:
  - trigger: meet
    from: planned
    to: met
    label: {th: "ประชุม", en: "Meet"}
    roles: [provincial_officer]
    evidence:
      date: {type: date, required: true, within: fiscal_year}
      plan_date: {type: date}
  - trigger: close
    from: met
    to: closed
    label: {th: "ปิด", en: "Close"}
    roles: [provincial_officer]
"""


def test_bounds_of_a_fiscal_year() -> None:
    """FY 2564 runs from 1 Oct 2020 to 30 Sep 2021."""
    first, last = fiscal_year_bounds(2564)
    assert (first.isoformat(), last.isoformat()) == ("2020-10-01", "2021-09-30")


def test_within_is_for_dates_only() -> None:
    """`within` on a text field, or an unknown `within`, is E041."""
    bad = PROGRAM.replace("plan_date: {type: date}", "plan_date: {type: text, within: fiscal_year}")
    _, problems = check_text(bad)
    assert [p.code for p in problems] == ["E041"]
    bad = PROGRAM.replace("plan_date: {type: date}", "plan_date: {type: date, within: ever}")
    assert [p.code for p in check_text(bad)[1]] == ["E041"]
    program, problems = check_text(PROGRAM)
    assert not problems and program is not None
    assert program.transitions[0].evidence[0].within == "fiscal_year"


def test_a_date_outside_the_fiscal_year_is_refused(engine: Engine, tmp_path: Path) -> None:
    """1 Oct 2564 is FY 2565: refused for an FY 2564 instance, naming 2563-10-01 to
    2564-09-30; the last day of the year is fine; an undeclared date is not checked."""
    (tmp_path / "fy.yaml").write_text(PROGRAM, encoding="utf-8")
    with Engine(engine.url, [tmp_path], policy=engine.policy) as eng:
        inst = eng.start("fy-check", area=LOPBURI, fiscal_year=2564, actor="u", role=OFFICER)
        before = dump_tables(engine.url)
        with pytest.raises(EvidenceInvalid, match="2563-10-01 to 2564-09-30") as e:
            eng.fire(inst.id, "meet", actor="u", role=OFFICER, evidence={"date": "2564-10-01"})
        assert "fiscal year 2564" in str(e.value)
        assert dump_tables(engine.url) == before
        r = eng.fire(inst.id, "meet", actor="u", role=OFFICER,
                     evidence={"date": "2564-09-30", "plan_date": "2570-01-01"})
        assert r.event.evidence["date"] == "2021-09-30"
        with pytest.raises(EvidenceInvalid, match="outside fiscal year"):
            eng.correct(inst.id, 2, actor="u", role=OFFICER, reason="r",
                        evidence={"date": "2563-09-30"})
        eng.correct(inst.id, 2, actor="u", role=OFFICER, reason="r",
                    evidence={"date": "2563-10-01"})
        assert eng.verify().ok


def test_dates_are_prefilled_with_a_year_of_the_instances_fiscal_year() -> None:
    """The year offered in an empty date is this year when it lies in the instance's fiscal
    year (FY N: Oct N-1 to Sep N), else the fiscal year itself (never a year its
    `within: fiscal_year` dates would refuse)."""
    import datetime as dt

    from workflow.programs.registry import Registry
    from workflow.service.web import forms

    program = Registry().get("leader-development")
    for today, fiscal_year, offered in [(dt.date(2026, 12, 6), 2570, "2569"),
                                        (dt.date(2027, 3, 1), 2570, "2570"),
                                        (dt.date(2026, 12, 6), 2564, "2564")]:
        form = forms.fire_form(program, "kickoff", ("planned",), ["provincial_officer"], "th")
        forms.prefill_dates(form, fiscal_year, today)
        assert [c.year for c in form.controls if c.kind == "date"] == [offered]
