"""The web pages in process (TestClient): redirects, CSRF, forms generated from the definition,
validation messages, BE dates, scoped reads with recorded denials, exports and admin."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from helpers import KICKOFF, LOPBURI, OFFICER, execute
from service_helpers import PASSWORD, World, client_for, make_world
from workflow import Engine
from workflow.engine.work import _instances, my_work

#: In-process page tests run on SQLite; the browser test covers PostgreSQL.
pytestmark = pytest.mark.parametrize("db_kind", ["sqlite"])

PAGES = ("/", "/instances/1", "/start", "/report", "/list", "/audit", "/audit/verify",
         "/audit/export.csv", "/audit/export.xlsx", "/admin", "/logout", "/migrate")


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    w = make_world(engine.url)
    try:
        yield w
    finally:
        w.engine.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with client_for(world, follow_redirects=False) as c:
        yield c


def login(client: TestClient, name: str = "udomrat") -> None:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    r = client.post("/login", data={"name": name, "password": PASSWORD,
                                    "csrf_token": token.group(1)})
    assert r.status_code == 303, r.text


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def lopburi(world: World, fiscal_year: int = 2564) -> int:
    inst = world.engine.start("leader-development", area=LOPBURI, fiscal_year=fiscal_year,
                              actor="udomrat", role=OFFICER)
    return inst.id


def kickoff_form(instance: int, version: int, csrf: str, **over: Any) -> dict[str, str]:
    data = {"csrf_token": csrf, "trigger": "kickoff", "role": OFFICER, "version": str(version),
            "date__d": "17", "date__m": "2", "date__y": "2564",
            "venue": KICKOFF["venue"], "chair": KICKOFF["chair"], "note": ""}
    data.update(over)
    return data


def test_pages_without_a_session_redirect_to_login(client: TestClient) -> None:
    """Every page sends a browser without a session to /login."""
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path


def test_login_page_is_thai_first_with_an_english_switch(client: TestClient) -> None:
    """The login page is Thai by default, English with ?lang=en, labels on both fields."""
    th = client.get("/login")
    assert '<html lang="th">' in th.text and "เข้าสู่ระบบ" in th.text
    assert '<label for="name">' in th.text and '<label for="password">' in th.text
    en = client.get("/login?lang=en")
    assert '<html lang="en">' in en.text and "Log in" in en.text


def test_wrong_password_is_shown_in_thai(client: TestClient) -> None:
    """A failed login re-shows the form with the catalogue's message (401)."""
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"name": "udomrat", "password": "nope nope nope",
                                    "csrf_token": token})
    assert r.status_code == 401 and "ชื่อผู้ใช้หรือรหัสผ่านไม่ถูกต้อง" in r.text


def test_my_work_lists_what_i_can_fire(world: World, client: TestClient) -> None:
    """My work shows the Lopburi instance to its officer with its Thai area name, falls back to
    every year when the current fiscal year is empty, and filters by year and area."""
    lopburi(world)
    world.engine.start("leader-development", area="100101", fiscal_year=2564, actor="other",
                       role=OFFICER)
    login(client)
    home = client.get("/")
    assert home.status_code == 200
    assert "ต.บางขันหมาก อ.เมืองลพบุรี จ.ลพบุรี" in home.text
    assert "1 รายการ" in home.text and "/instances/1" in home.text
    assert "/instances/2" not in home.text  # Bangkok: another officer's
    assert "ไม่มีงานในปีงบประมาณ" in home.text  # the current year is empty: every year shown
    assert "/instances/1" not in client.get("/?fiscal_year=2565").text
    assert "/instances/1" in client.get("/?fiscal_year=2564&area=ลพบุรี").text
    bad = client.get("/?area=nowhere-at-all")
    assert bad.status_code == 200 and 'role="alert"' in bad.text


def test_my_work_agrees_with_show_actor(world: World) -> None:
    """The library's my_work gives, per instance, exactly Engine.available_triggers(actor=)."""
    eng = world.engine
    world.engine.grant("udomrat", "coordinator", area="1601", by="test")
    first = lopburi(world)
    eng.fire(first, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
    lopburi(world, fiscal_year=2565)
    eng.start("khok-nong-na", area="1601", fiscal_year=2564, actor="udomrat", role=OFFICER)
    items = {w.instance.id: w.triggers for w in my_work(eng, "udomrat")}
    for inst in eng.list():
        expected = eng.available_triggers(inst.id, actor="udomrat")
        assert items.get(inst.id, ()) == expected, inst.id
    assert my_work(eng, "aud") == []  # an auditor fires nothing
    for filters in ({}, {"area": "1601"}, {"fiscal_year": 2565}, {"program": "khok-nong-na"},
                    {"state": "kicked_off"}):  # my_work's lighter read is Engine.list's
        assert _instances(eng, **{"program": None, "state": None, "area": None,
                                  "fiscal_year": None, **filters}, viewer="udomrat") == \
            eng.list(viewer="udomrat", **filters), filters


def test_instance_page_form_is_generated_from_the_definition(world: World,
                                                             client: TestClient) -> None:
    """The kickoff form: BE date parts with Thai month names, required marks, min on integers,
    optional fields folded in <details>, the version carried, labels for every control."""
    iid = lopburi(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    assert "ประชุมสร้างความเข้าใจในการขับเคลื่อนโครงการ (Kick off)" in page
    assert 'name="date__d"' in page and 'name="date__y"' in page and "กุมภาพันธ์" in page
    assert 'name="version" value="1"' in page
    assert re.search(r'name="participants" type="number" step="1" min="1"', page)
    assert '<details class="more"' in page
    assert page.index('name="venue"') < page.index('<details class="more"') < page.index(
        'name="participants"')
    for control in re.findall(r'<(?:input|select|textarea) id="([^"]+)"', page):
        assert f'for="{control}"' in page, control
    assert "ต.บางขันหมาก อ.เมืองลพบุรี จ.ลพบุรี" in page


def test_fire_shows_the_engine_messages_then_records(world: World, client: TestClient) -> None:
    """A kickoff without its venue is refused (422) with the message next to the field and
    the typed values kept; with it, it is recorded and shown in BE with Thai month names."""
    iid = lopburi(world)
    login(client)
    csrf = csrf_of(client.get(f"/instances/{iid}").text)
    r = client.post(f"/instances/{iid}/fire", data=kickoff_form(iid, 1, csrf, venue=""))
    assert r.status_code == 422
    assert re.search(r'id="f-kickoff-venue-err">จำเป็นต้องกรอก<', r.text)
    assert KICKOFF["chair"] in r.text  # kept
    r = client.post(f"/instances/{iid}/fire", data=kickoff_form(iid, 1, csrf, date__m=""))
    assert r.status_code == 422 and "กรอกวัน เดือน และปี พ.ศ. ให้ครบ" in r.text
    r = client.post(f"/instances/{iid}/fire",
                    data=kickoff_form(iid, 1, csrf, participants="0"))
    assert r.status_code == 422 and "ต่ำกว่าค่าต่ำสุด 1" in r.text
    assert world.engine.get(iid).state == "planned"
    r = client.post(f"/instances/{iid}/fire", data=kickoff_form(iid, 1, csrf))
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "17 ก.พ. 2564" in page and "บันทึกแล้ว" in page
    assert world.engine.get(iid).state == "kicked_off"
    assert world.engine.history(iid)[-1].evidence["date"] == "2021-02-17"


def test_fire_without_csrf_is_403(world: World, client: TestClient) -> None:
    """A fire form without the session's CSRF token is refused and changes nothing."""
    iid = lopburi(world)
    login(client)
    r = client.post(f"/instances/{iid}/fire", data=kickoff_form(iid, 1, "forged"))
    assert r.status_code == 403
    assert world.engine.get(iid).state == "planned"


def test_concurrent_change_says_someone_else_recorded(world: World,
                                                      client: TestClient) -> None:
    """A form drawn at version 1, posted after another change, shows who won and a reload."""
    iid = lopburi(world)
    login(client)
    csrf = csrf_of(client.get(f"/instances/{iid}").text)
    world.engine.fire(iid, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
    r = client.post(f"/instances/{iid}/fire", data=kickoff_form(iid, 1, csrf))
    assert r.status_code == 409
    assert "มีผู้อื่นเพิ่งบันทึก" in r.text and "โหลดหน้าใหม่" in r.text


def test_another_provinces_instance_is_403_and_recorded(world: World,
                                                         client: TestClient) -> None:
    """An officer of Bangkok opening a Lopburi instance gets a 403 page; a denial is kept."""
    iid = lopburi(world)
    login(client, "other")
    before = len(world.engine.denials())
    r = client.get(f"/instances/{iid}")
    assert r.status_code == 403 and "ไม่มีสิทธิ์" in r.text
    assert "บางขันหมาก" not in r.text
    denials = world.engine.denials()
    assert len(denials) == before + 1 and denials[-1].actor == "other"
    assert client.get(f"/instances/{iid}/diagram.svg").status_code == 403


def test_language_switch_is_remembered_for_the_account(world: World,
                                                       client: TestClient) -> None:
    """The switch posts with CSRF, stores the account's language and the pages follow it."""
    login(client)
    csrf = csrf_of(client.get("/").text)
    assert client.post("/language", data={"lang": "en", "next": "/"}).status_code == 403
    r = client.post("/language", data={"lang": "en", "next": "/report", "csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/report"
    assert world.accounts.get("udomrat").language == "en"
    assert "Dashboard" in client.get("/report").text
    assert client.post("/language", data={"lang": "th", "next": "//evil.example",
                                          "csrf_token": csrf}).headers["location"] == "/"


def test_engine_errors_are_translated_by_class(world: World, client: TestClient) -> None:
    """An instance that does not exist: a 404 page with the catalogue's Thai text."""
    login(client)
    r = client.get("/instances/999")
    assert r.status_code == 404 and "ไม่พบรายการนี้" in r.text


def test_start_single_and_bulk(world: World, client: TestClient) -> None:
    """Start one tambon by its Thai name, then every tambon of a district; a duplicate is
    refused with the instance it collides with."""
    login(client)
    csrf = csrf_of(client.get("/start").text)
    form = {"csrf_token": csrf, "program": "leader-development", "area": "บางขันหมาก ลพบุรี",
            "fiscal_year": "2564", "role": OFFICER, "title": "", "district": ""}
    r = client.post("/start", data=form)
    assert r.status_code == 303 and r.headers["location"].startswith("/instances/")
    again = client.post("/start", data=form)
    assert again.status_code == 409 and "รายการที่ 1" in again.text
    r = client.post("/start/bulk", data={**form, "district": "1601"})
    assert r.status_code == 200 and 'id="bulk-done"' in r.text
    n = len(world.engine.list(area="1601"))
    assert n > 5 and f"เริ่มแล้ว {n - 1} ตำบล (ข้าม 1" in r.text


def test_report_cells_link_to_the_filtered_list(world: World, client: TestClient) -> None:
    """The dashboard counts by province and state; a cell opens the matching list."""
    lopburi(world)
    login(client)
    page = client.get("/report?fiscal_year=2564").text
    link = re.search(r'href="(/list\?[^"]*state=planned[^"]*)"', page)
    assert link is not None and "ลพบุรี" in page
    listed = client.get(link.group(1).replace("&amp;", "&"))
    assert listed.status_code == 200 and "/instances/1" in listed.text


def test_audit_pages_need_an_auditor(world: World, client: TestClient) -> None:
    """A coordinator without an auditor grant gets 403 pages (denials recorded)."""
    login(client)
    before = len(world.engine.denials())
    for path in ("/audit", "/audit/verify", "/audit/export.csv", "/audit/export.xlsx"):
        assert client.get(path).status_code == 403, path
    assert len(world.engine.denials()) == before + 4


def test_audit_exports_keep_thai_and_neutralise_formulas(world: World,
                                                         client: TestClient) -> None:
    """The auditor's CSV and XLSX: Thai intact, one XLSX column per evidence field, a note
    starting with = arrives as text."""
    iid = lopburi(world)
    world.engine.fire(iid, "kickoff", actor="udomrat", role=OFFICER,
                      evidence={**KICKOFF, "participants": 40}, note="=HYPERLINK(\"x\")")
    login(client, "aud")
    page = client.get("/audit?program=leader-development")
    assert page.status_code == 200 and "ประชุมสร้างความเข้าใจ" in page.text
    csv = client.get("/audit/export.csv?program=leader-development")
    assert csv.status_code == 200 and KICKOFF["venue"] in csv.content.decode("utf-8-sig")
    xlsx = client.get("/audit/export.xlsx?program=leader-development")
    assert xlsx.status_code == 200
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    for name in ("date", "venue", "chair", "participants"):
        assert header.count(f"evidence.{name}") == 1
    kick = next(r for r in rows[1:] if r[header.index("trigger")] == "kickoff")
    assert kick[header.index("evidence.venue")] == KICKOFF["venue"]
    assert kick[header.index("evidence.participants")] == 40
    assert kick[header.index("note")] == "'=HYPERLINK(\"x\")"
    assert sheet.cell(row=rows.index(kick) + 1, column=header.index("note") + 1).data_type == "s"


def test_verify_page_runs_verify(world: World, client: TestClient) -> None:
    """The verify button (with CSRF) runs verify and says all is intact."""
    lopburi(world)
    login(client, "aud")
    page = client.get("/audit/verify").text
    assert client.post("/audit/verify", data={}).status_code == 403
    r = client.post("/audit/verify", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 200 and "ถูกต้องทั้งหมด" in r.text


def test_admin_page_is_for_admins(world: World, client: TestClient) -> None:
    """A coordinator gets 403 on /admin; the admin adds an account, grants it a role and
    creates a token shown once."""
    login(client)
    assert client.get("/admin").status_code == 403
    client.cookies.clear()
    login(client, "admin")
    csrf = csrf_of(client.get("/admin").text)
    r = client.post("/admin/add", data={"csrf_token": csrf, "name": "somchai",
                                        "display_name": "สมชาย", "password": PASSWORD})
    assert r.status_code == 200 and "สมชาย" in r.text
    r = client.post("/admin/grant", data={"csrf_token": csrf, "actor": "somchai",
                                          "role": "coordinator", "area": "1601",
                                          "program": ""})
    assert r.status_code == 200
    assert any(g.actor == "somchai" for g in world.engine.grants())
    r = client.post("/admin/token", data={"csrf_token": csrf, "name": "somchai",
                                          "label": "phone"})
    assert r.status_code == 200 and 'id="new-token"' in r.text
    assert client.post("/admin/disable", data={"name": "somchai"}).status_code == 403
    r = client.post("/admin/disable", data={"csrf_token": csrf, "name": "somchai"})
    assert r.status_code == 200 and world.accounts.get("somchai").disabled



def test_admin_page_lists_hooks_and_retries_dead_deliveries(world: World,
                                                            client: TestClient) -> None:
    """/admin lists hooks (no secret) and dead deliveries; retry needs CSRF and an admin."""
    notes = world.engine.notifications
    notes.add_hook("http://127.0.0.1:1/hook", program="leader-development",
                   trigger="start", secret="do-not-show-me")
    notes.add_hook("mailto:office@example.org")
    lopburi(world)
    assert notes.deliver(once=True, max_attempts=1, timeout=2).dead == 2
    dead = notes.outbox(dead=True)
    login(client, "admin")
    page = client.get("/admin").text
    assert "ผู้รับการแจ้งเตือน" in page and "การแจ้งเตือนที่ส่งไม่สำเร็จ" in page
    assert "http://127.0.0.1:1/hook" in page and "mailto:office@example.org" in page
    assert "<td>leader-development</td><td>start</td>" in page
    assert "do-not-show-me" not in page
    assert page.count('action="/admin/retry-delivery"') == 2
    csrf = csrf_of(page)
    client.post("/language", data={"lang": "en", "next": "/admin", "csrf_token": csrf})
    english = client.get("/admin").text
    assert "Failed deliveries" in english and "Retry" in english
    client.post("/language", data={"lang": "th", "next": "/admin", "csrf_token": csrf})
    assert client.post("/admin/retry-delivery", data={"id": dead[0].id}).status_code == 403
    r = client.post("/admin/retry-delivery", data={"csrf_token": csrf, "id": dead[0].id})
    assert r.status_code == 200 and "บันทึกแล้ว" in r.text
    assert [d.id for d in notes.outbox(dead=True)] == [dead[1].id]
    assert r.text.count('action="/admin/retry-delivery"') == 1
    r = client.post("/admin/retry-delivery", data={"csrf_token": csrf, "id": "x1"})
    assert r.status_code == 422
    client.cookies.clear()
    login(client)
    denials = len(world.engine.denials())
    officer_csrf = csrf_of(client.get("/").text)
    r = client.post("/admin/retry-delivery", data={"csrf_token": officer_csrf,
                                                   "id": dead[1].id})
    assert r.status_code == 403
    assert len(world.engine.denials()) == denials + 1
    assert [d.id for d in notes.outbox(dead=True)] == [dead[1].id]


def test_verify_page_checks_an_uploaded_digest(world: World, client: TestClient) -> None:
    """On /audit/verify the auditor uploads a digest (multipart, CSRF): one taken earlier is
    ok and says the digest matches; one whose instance head was changed shows the problem;
    a file that is not a digest is refused with the reader's message; without the CSRF token
    nothing runs."""
    import json

    iid = lopburi(world)
    taken = world.engine.digest().to_dict()
    world.engine.fire(iid, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
    login(client, "aud")
    page = client.get("/audit/verify").text
    assert 'enctype="multipart/form-data"' in page and 'name="digest"' in page
    csrf = csrf_of(page)

    def upload(body: bytes, token: str = csrf) -> Any:
        return client.post("/audit/verify/digest", data={"csrf_token": token},
                           files={"digest": ("digest.json", body, "application/json")})

    assert upload(json.dumps(taken).encode(), "forged").status_code == 403
    ok = upload(json.dumps(taken).encode())
    assert ok.status_code == 200, ok.text
    assert "ถูกต้องทั้งหมด" in ok.text and "และตรงกับไดเจสต์" in ok.text
    changed = json.loads(json.dumps(taken))
    changed["heads"][str(iid)]["hash"] = "0" * 64  # a digest that does not add up
    refused = upload(json.dumps(changed).encode())
    assert refused.status_code == 400 and "does not add up" in refused.text
    execute(world.engine.url, "DROP TRIGGER workflow_events_no_update",
            "UPDATE workflow_events SET note = 'แก้ไขย้อนหลัง' "
            "WHERE instance_id = :i AND seq = 2", params={"i": iid})  # tampered with
    bad = upload(json.dumps(taken).encode())
    assert bad.status_code == 200 and 'id="verify-result"' in bad.text
    assert "พบความผิดปกติ" in bad.text and f"/instances/{iid}#e2" in bad.text
    junk = upload(b"not json at all")
    assert junk.status_code == 400 and "digest.json" in junk.text
    assert "ข้อมูลที่ส่งมาไม่ถูกต้อง" in junk.text
    missing = client.post("/audit/verify/digest", data={"csrf_token": csrf})
    assert missing.status_code == 400 and "กรุณาเลือกไฟล์ไดเจสต์" in missing.text


@pytest.mark.parametrize("bad", ["²", "abc", "", "9" * 5000])
def test_admin_id_fields_that_are_no_id_are_refused(world: World, client: TestClient,
                                                    bad: str) -> None:
    """A token or delivery id that is not one (a superscript, words, nothing, 5,000 digits)
    is a refusal on the admin page, never a 500."""
    login(client, "admin")
    csrf = csrf_of(client.get("/admin").text)
    for action in ("revoke-token", "retry-delivery"):
        r = client.post(f"/admin/{action}", data={"csrf_token": csrf, "id": bad})
        assert 400 <= r.status_code < 500, (action, r.status_code)

