"""The instance page's mending forms (issue 13, CONTRACT §8), in process: a comment, a
correction of an earlier event (the original kept beside it), a revert offered only when
allowed; each CSRF-protected, through the API's library calls, refused with the engine's
message when the role may not; the timeline shows these events readably."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers import KICKOFF, LOPBURI, OFFICER
from service_helpers import World, client_for, make_world
from test_web_pages import csrf_of, login
from workflow import Engine

pytestmark = pytest.mark.parametrize("db_kind", ["sqlite"])


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    w = make_world(engine.url)
    w.engine.grant("other", "coordinator", area="16", by="test")  # a coordinator in Lopburi too
    try:
        yield w
    finally:
        w.engine.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with client_for(world, follow_redirects=False) as c:
        yield c


def kicked_off(world: World) -> int:
    inst = world.engine.start("leader-development", area=LOPBURI, fiscal_year=2564,
                              actor="udomrat", role=OFFICER, title=None)
    world.engine.fire(inst.id, "kickoff", actor="udomrat", role=OFFICER,
                      evidence={**KICKOFF, "participants": 52}, note="นัดแรก")
    return inst.id


def test_comment_is_recorded_and_shown(world: World, client: TestClient) -> None:
    """The comment form posts with CSRF (403 without), records a comment event through
    calls.comment (the session as its auth), and the timeline shows its text."""
    iid = kicked_off(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    assert 'action="/instances/1/comment"' in page
    assert client.post(f"/instances/{iid}/comment",
                       data={"role": OFFICER, "text": "x"}).status_code == 403
    r = client.post(f"/instances/{iid}/comment",
                    data={"csrf_token": csrf_of(page), "role": OFFICER,
                          "text": "เลื่อนการประชุมเนื่องจากประธานติดภารกิจ"})
    assert r.status_code == 303, r.text
    last = world.engine.history(iid)[-1]
    assert last.trigger == "comment" and last.actor == "udomrat"
    assert last.auth is not None and last.auth.startswith("session:")
    shown = client.get(r.headers["location"]).text
    assert "บันทึกแล้ว: ความเห็น" in shown
    assert re.search(r'class="note comment-text">เลื่อนการประชุมเนื่องจากประธานติดภารกิจ<',
                     shown)
    empty = client.post(f"/instances/{iid}/comment",
                        data={"csrf_token": csrf_of(page), "role": OFFICER, "text": " "})
    assert empty.status_code == 400 and 'id="comment-error"' in empty.text


def test_correction_shows_the_original_beside(world: World, client: TestClient) -> None:
    """The officer corrects the kickoff's participants (52 -> 25) and a date typed in BE,
    with a reason; the timeline shows the corrected values, the original struck out, and the
    correction event's changes; a missing reason is refused with the engine's message."""
    iid = kicked_off(world)
    login(client)
    page = client.get(f"/instances/{iid}?correct=2").text
    assert '<option value="2:date" selected>' in page  # the event's first field
    assert "2:__note__" in page and "1:" not in re.sub(r"#e1|e1\b", "", "".join(
        re.findall(r'<option value="(\d+:[^"]*)"', page)))  # the start is not correctable
    csrf = csrf_of(page)
    r = client.post(f"/instances/{iid}/correct",
                    data={"csrf_token": csrf, "role": OFFICER, "target": "2:participants",
                          "value": "25", "reason": ""})
    assert r.status_code == 400 and 'id="correct-error"' in r.text and "reason" in r.text
    r = client.post(f"/instances/{iid}/correct",
                    data={"csrf_token": csrf, "role": OFFICER, "target": "2:participants",
                          "value": "0", "reason": "พิมพ์ผิด"})
    assert r.status_code == 422 and "ต่ำกว่าค่าต่ำสุด 1" in r.text
    r = client.post(f"/instances/{iid}/correct",
                    data={"csrf_token": csrf, "role": OFFICER, "target": "2:participants",
                          "value": "25", "reason": "พิมพ์ผิด ใบลงชื่อมีผู้เข้าร่วม 25 คน"})
    assert r.status_code == 303, r.text
    r = client.post(f"/instances/{iid}/correct",
                    data={"csrf_token": csrf, "role": OFFICER, "target": "2:date",
                          "value": "18/2/2564", "reason": "วันที่ผิด"})
    assert r.status_code == 303, r.text
    r = client.post(f"/instances/{iid}/correct",
                    data={"csrf_token": csrf, "role": OFFICER, "target": "2:__note__",
                          "value": "นัดจริง", "reason": "หมายเหตุผิด"})
    assert r.status_code == 303, r.text
    events = world.engine.history(iid)
    assert events[1].corrected_evidence is not None
    assert events[1].corrected_evidence["participants"] == 25
    assert events[1].corrected_evidence["date"] == "2021-02-18"
    assert events[1].corrected_note == "นัดจริง"
    page = client.get(f"/instances/{iid}").text
    kick = page[page.index('id="e2"'):page.index('id="e1"')]
    assert "<dd>25</dd>" in kick and "<del>52</del>" in kick
    assert "18 ก.พ. 2564" in kick and "<del>17 ก.พ. 2564</del>" in kick
    assert "แก้ไขโดยรายการ #3, #4, #5" in kick and "<del>นัดแรก</del>" in kick
    correction = page[page.index('id="e3"'):page.index('id="e2"')]
    assert "แก้ไขบันทึก #2 ประชุมสร้างความเข้าใจ" in correction
    assert "52 → 25" in correction and "พิมพ์ผิด ใบลงชื่อมีผู้เข้าร่วม 25 คน" in correction


def test_a_role_that_may_not_is_refused_with_the_engines_message(
    world: World, client: TestClient
) -> None:
    """A coordinator sees the comment form but neither correction nor revert; posting a
    correction or revert anyway is refused with the engine's message, nothing recorded."""
    iid = kicked_off(world)
    login(client, "other")
    page = client.get(f"/instances/{iid}").text
    assert 'id="act-comment"' in page
    assert 'id="act-correct"' not in page and 'id="act-revert"' not in page
    before = len(world.engine.history(iid))
    csrf = csrf_of(page)
    r = client.post(f"/instances/{iid}/correct",
                    data={"csrf_token": csrf, "role": "coordinator",
                          "target": "2:participants", "value": "25", "reason": "x"})
    assert r.status_code == 403 and "บทบาทนี้บันทึกขั้นตอนนี้ไม่ได้" in r.text
    r = client.post(f"/instances/{iid}/revert",
                    data={"csrf_token": csrf, "role": "coordinator", "reason": "x"})
    assert r.status_code == 403 and 'id="revert-error"' in r.text
    r = client.post(f"/instances/{iid}/revert",
                    data={"csrf_token": csrf, "role": OFFICER, "reason": "x"})
    assert r.status_code == 403 and "ระบบบันทึกการปฏิเสธไว้แล้ว" in r.text  # no such grant
    assert len(world.engine.history(iid)) == before


def test_revert_is_offered_only_when_allowed(world: World, client: TestClient) -> None:
    """Right after the start there is nothing to take back: no revert form. After the
    kickoff the form names it; reverting returns the instance to planned and the timeline
    says back to which state."""
    inst = world.engine.start("leader-development", area=LOPBURI, fiscal_year=2564,
                              actor="udomrat", role=OFFICER)
    login(client)
    page = client.get(f"/instances/{inst.id}").text
    assert 'id="act-revert"' not in page and 'id="act-correct"' in page
    world.engine.fire(inst.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
    page = client.get(f"/instances/{inst.id}").text
    assert 'id="act-revert"' in page and "#2 ประชุมสร้างความเข้าใจ" in page
    r = client.post(f"/instances/{inst.id}/revert",
                    data={"csrf_token": csrf_of(page), "role": OFFICER, "version": "1",
                          "reason": "การประชุมยังไม่ได้จัด"})
    assert r.status_code == 409  # drawn at another version
    r = client.post(f"/instances/{inst.id}/revert",
                    data={"csrf_token": csrf_of(page), "role": OFFICER, "version": "2",
                          "reason": "การประชุมยังไม่ได้จัด"})
    assert r.status_code == 303, r.text
    assert world.engine.get(inst.id).state == "planned"
    page = client.get(f"/instances/{inst.id}").text
    back = page[page.index('id="e3"'):page.index('id="e2"')]
    assert "ย้อนขั้นตอน #2" in back and "วางแผน" in back and "การประชุมยังไม่ได้จัด" in back
    assert 'id="act-revert"' not in page  # nothing left to take back


def test_start_event_reads_as_program_area_and_year(world: World, client: TestClient) -> None:
    """The start event shows program, area and fiscal year by name, not raw keys, and no
    `title: None`."""
    iid = kicked_off(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    start = page[page.index('id="e1"'):page.index("</ol>", page.index('id="e1"'))]
    assert "ต.บางขันหมาก อ.เมืองลพบุรี จ.ลพบุรี" in start and "2564" in start
    assert "None" not in start and "duplicate_no" not in start and "program_version" not in start


@pytest.mark.parametrize("digits", ["²", "๒", "1" * 5000, "٣"])
def test_odd_digits_in_page_forms_are_refused_not_a_crash(
    world: World, client: TestClient, digits: str
) -> None:
    """Characters `str.isdigit` passes but `int` refuses (superscripts), digits `int` reads
    (Thai, Arabic-Indic) and 5,000-digit numbers, in every field a page reads as a number
    (date parts, the version, the correction's target, the report's cursor): an answer
    below 500, and nothing recorded but what the digits rightly say (Thai 2 is 2)."""
    iid = kicked_off(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    csrf = csrf_of(page)
    before = len(world.engine.history(iid))
    from test_web_pages import kickoff_form

    for data in ({"csrf_token": csrf, "trigger": "workshop", "role": "coordinator",
                  "version": "2", "date__d": digits, "date__m": "3", "date__y": "2564",
                  "venue": "บ้านสระบัว", "participants": "25", "note": ""},
                 {**kickoff_form(iid, 1, csrf), "date__y": digits}):
        assert client.post(f"/instances/{iid}/fire", data=data).status_code < 500
    r = client.post(f"/instances/{iid}/revert", data={"csrf_token": csrf, "role": OFFICER,
                                                     "reason": "r", "version": digits})
    assert r.status_code < 500
    r = client.post(f"/instances/{iid}/correct",
                    data={"csrf_token": csrf, "role": OFFICER, "target": f"{digits}:venue",
                          "value": "x", "reason": "r"})
    assert r.status_code < 500
    assert client.get(f"/report?after={digits}").status_code < 500
    history = world.engine.history(iid)
    assert all(e.trigger in ("workshop", "revert", "correct") for e in history[before:])


def test_migrate_page_checks_the_plan_then_migrates(world: World, tmp_path: Path) -> None:
    """/migrate: "check the plan" lists each instance's move and changes nothing; a state
    the new version lacks is shown as the problem until the map names it; "migrate" moves
    them (a migrate event each); without CSRF it is 403; a bad map line is refused."""
    from evolution_fixtures import NEXT, PROGRAMS, write_v2
    from helpers import dump_tables

    world.engine.close()
    world.engine = Engine(world.engine.url, [write_v2(tmp_path / "next")],
                          allow_override=PROGRAMS)
    with Engine(world.engine.url) as bundled:  # started on the bundled version
        inst = bundled.start("leader-development", area=LOPBURI, fiscal_year=2564,
                             actor="udomrat", role=OFFICER)
        bundled.fire(inst.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
    with client_for(world, follow_redirects=False) as client:
        login(client)
        page = client.get("/migrate").text
        assert 'action="/migrate"' in page
        form = {"csrf_token": csrf_of(page), "program": "leader-development",
                "to_version": str(NEXT), "role": OFFICER, "area": "16", "map": ""}
        before = dump_tables(world.engine.url)
        r = client.post("/migrate", data=form)
        assert r.status_code == 200 and 'id="migrate-result"' in r.text
        assert "kicked_off" in r.text and "badge overdue" in r.text  # not a state of NEXT
        r = client.post("/migrate", data={**form, "map": "kicked_off=launched"})
        assert "launched" in r.text and "badge overdue" not in r.text
        assert dump_tables(world.engine.url) == before  # a plan changes nothing
        assert client.post("/migrate", data={**form, "csrf_token": "x", "apply": "1",
                                             "map": "kicked_off=launched"}).status_code == 403
        r = client.post("/migrate", data={**form, "map": "kicked_off", "apply": "1"})
        assert r.status_code == 422 and "OLD=NEW" in r.text
        assert dump_tables(world.engine.url) == before
        r = client.post("/migrate", data={**form, "map": "kicked_off=launched\n", "apply": "1"})
        assert r.status_code == 200 and "ย้ายแล้ว 1 โครงการ" in r.text
    moved = world.engine.get(inst.id)
    assert (moved.program_version, moved.state) == (NEXT, "launched")
    assert world.engine.history(inst.id)[-1].trigger == "migrate"
