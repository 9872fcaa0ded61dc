"""The pages in a real browser: Debian's Chromium driven by Playwright against a `workflow serve`
subprocess (a coordinator's kickoff, an auditor's exports and verify), with screenshots at
1280 and 360 px into artifacts/screenshots/ and axe-core run on every page."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from openpyxl import load_workbook

from helpers import KHOK_REGIONS, KICKOFF, LOPBURI, OFFICER
from service_helpers import PASSWORD, make_world, serving
from workflow import Engine
from workflow.accounts import Accounts
from workflow.runtime.attachments import Upload

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("WORKFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"]
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"needs Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A `workflow serve` on a database with the service tests' accounts (udomrat: officer in
    Lopburi; other: officer in Bangkok; aud: auditor in Lopburi; admin) and two instances."""
    world = make_world(engine.url)
    world.engine.grant("admin", OFFICER, area="16", by="test")
    world.engine.grant("admin", "coordinator", area="16", by="test")
    leader = world.engine.start("leader-development", area=LOPBURI, fiscal_year=2564,
                                actor="udomrat", role=OFFICER, title="ตำบลนำร่อง บางขันหมาก")
    khok = world.engine.start("khok-nong-na", area="160118", fiscal_year=2564,
                              actor="udomrat", role=OFFICER)
    world.engine.close()
    log = tmp_path / "serve.log"
    with serving(engine.url, log, workers=1) as base:
        yield {"base": base, "leader": leader.id, "khok": khok.id, "url": engine.url,
               "log": log}


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def log_in(page: Any, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button.primary")
    page.wait_for_url(f"{base}/")


def test_coordinator_records_a_kickoff(site: dict[str, Any], browser: Any) -> None:
    """Log in, find the instance in My work, record a kickoff without its venue (the message
    shows next to the field), then with it; the timeline shows the BE date."""
    base = site["base"]
    page = browser.new_page(viewport={"width": 360, "height": 800})
    log_in(page, base, "udomrat")
    page.click(f"a[href='/instances/{site['leader']}']")
    page.wait_for_url(f"{base}/instances/{site['leader']}")
    page.click("#act-kickoff > summary")
    page.fill("#f-kickoff-date-d", "17")
    page.select_option("#f-kickoff-date-m", "2")
    page.fill("#f-kickoff-date-y", "2564")
    page.fill("#f-kickoff-chair", KICKOFF["chair"])
    page.click("#act-kickoff button.primary")
    error = page.locator("#f-kickoff-venue-err")
    assert error.inner_text() == "จำเป็นต้องกรอก"
    assert page.locator("#f-kickoff-chair").input_value() == KICKOFF["chair"]
    page.fill("#f-kickoff-venue", KICKOFF["venue"])
    page.click("#act-kickoff button.primary")
    page.wait_for_url(f"{base}/instances/{site['leader']}?recorded=kickoff")
    assert "Kick off" in page.locator("#state").inner_text()
    assert "17 ก.พ. 2564" in page.locator("#timeline").inner_text()
    with Engine(site["url"]) as eng:
        last = eng.history(site["leader"])[-1]
        assert last.trigger == "kickoff" and last.actor == "udomrat"
        assert last.auth is not None and last.auth.startswith("session:")


def _record(page: Any, base: str, instance: int, trigger: str, fields: dict[str, str]) -> None:
    """Open ``trigger``'s form on the instance page, fill it (a date given as BE
    ``DD-MM-YYYY`` goes to the day, month and year controls; the rest by field name) and
    record it; the page comes back saying so."""
    page.click(f"#act-{trigger} > summary")
    prefix = f"#f-{trigger}"
    for name, value in fields.items():
        if name == "date":
            day, month, year = value.split("-")
            page.fill(f"{prefix}-date-d", day)
            page.select_option(f"{prefix}-date-m", str(int(month)))
            page.fill(f"{prefix}-date-y", year)
        else:
            page.fill(f"{prefix}-{name}", value)
    page.click(f"#act-{trigger} button.primary")
    page.wait_for_url(f"{base}/instances/{instance}?recorded={trigger}")


def test_coordinator_completes_khok_regions_in_any_order_then_evaluates(
    site: dict[str, Any], browser: Any
) -> None:
    """Khok Nong Na through the instance page's forms: the officer enrols, the coordinator
    starts and completes the seven activities in a scrambled order (evaluate is not offered
    while one is open: its guard wants every region done), then the officer evaluates."""
    base, khok = site["base"], site["khok"]
    with Engine(site["url"]) as eng:
        Accounts(eng.store, hasher=PasswordHasher(time_cost=1, memory_cost=1024,
                                                   parallelism=1)).add(
            "somchai", PASSWORD, by="test", display_name="สมชาย ใจดี")
        eng.grant("somchai", "coordinator", area="1601", by="test")
    officer = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(officer, base, "udomrat")
    officer.goto(f"{base}/instances/{khok}")
    _record(officer, base, khok, "enroll", {"date": "10-01-2564", "households": "12"})
    coordinator = browser.new_page(viewport={"width": 360, "height": 800})
    log_in(coordinator, base, "somchai")
    coordinator.click(f"a[href='/instances/{khok}']")
    coordinator.wait_for_url(f"{base}/instances/{khok}")
    starts = ("digital", "training", "standards", "employment", "learning_areas",
              "integration", "consumption")
    completes = ("employment", "consumption", "digital", "learning_areas", "training",
                 "standards", "integration")
    for region in starts:
        _record(coordinator, base, khok, f"start_{region}", {"date": "01-02-2564"})
    for n, region in enumerate(completes, 1):
        _record(coordinator, base, khok, f"complete_{region}",
                {"date": f"{n:02d}-03-2564", "summary": f"กิจกรรม {region} แล้วเสร็จ"})
        lane = coordinator.locator(f".lanes li.lane >> nth={KHOK_REGIONS.index(region)}")
        assert "เสร็จแล้ว" in lane.inner_text()
        officer.goto(f"{base}/instances/{khok}")
        assert (officer.locator("#act-evaluate").count() == 1) == (n == len(completes))
    assert coordinator.locator("#act-evaluate").count() == 0  # the officer's step
    _record(officer, base, khok, "evaluate", {"date": "15-03-2564"})
    assert "ติดตามประเมินผลแล้ว" in officer.locator("#state").inner_text()
    with Engine(site["url"]) as eng:
        inst = eng.get(khok)
        assert inst.state == "evaluated"
        done = [e.trigger.removeprefix("complete_") for e in eng.history(khok)
                if e.trigger.startswith("complete_")]
        assert done == list(completes)
        assert all(e.actor == "somchai" for e in eng.history(khok)
                   if e.trigger.startswith(("start_", "complete_")))
        assert eng.verify().ok


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_auditor_filters_exports_and_verifies(site: dict[str, Any], browser: Any,
                                              tmp_path: Path) -> None:
    """The auditor filters the log by program, downloads CSV and XLSX (Thai intact, one column
    per evidence field) and runs verify."""
    with Engine(site["url"]) as eng:
        eng.fire(site["leader"], "kickoff", actor="udomrat", role=OFFICER,
                 evidence={**KICKOFF, "participants": 35})
    base = site["base"]
    page = browser.new_page(accept_downloads=True)
    log_in(page, base, "aud")
    page.goto(f"{base}/audit")
    page.select_option("#a-program", "leader-development")
    page.click("form[aria-label] button[type=submit]")
    page.wait_for_url(f"{base}/audit?*program=leader-development*")
    assert "ประชุมสร้างความเข้าใจ" in page.locator("table.audit").inner_text()
    with page.expect_download() as got:
        page.click("#dl-csv")
    csv_path = tmp_path / "audit.csv"
    got.value.save_as(csv_path)
    assert KICKOFF["venue"] in csv_path.read_text(encoding="utf-8-sig")
    with page.expect_download() as got:
        page.click("#dl-xlsx")
    xlsx_path = tmp_path / "audit.xlsx"
    got.value.save_as(xlsx_path)
    sheet = load_workbook(io.BytesIO(xlsx_path.read_bytes())).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    assert {"evidence.venue", "evidence.chair", "evidence.participants"} <= set(header)
    events = [r for r in rows[1:] if r[header.index("instance")] is not None]  # not grants
    assert events and all(r[header.index("program")] == "leader-development" for r in events)
    kick = next(r for r in rows[1:] if r[header.index("trigger")] == "kickoff")
    assert kick[header.index("evidence.venue")] == KICKOFF["venue"]
    page.goto(f"{base}/audit/verify")
    page.click("#run-verify")
    assert "ถูกต้องทั้งหมด" in page.locator("#verify-result").inner_text()


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_other_province_sees_a_403_page(site: dict[str, Any], browser: Any) -> None:
    """An officer of Bangkok cannot open the Lopburi instance: a 403 page, a denial kept."""
    page = browser.new_page()
    log_in(page, site["base"], "other")
    assert f"/instances/{site['leader']}" not in page.content()
    response = page.goto(f"{site['base']}/instances/{site['leader']}")
    assert response is not None and response.status == 403
    assert "ไม่มีสิทธิ์" in page.locator("h1").inner_text()
    with Engine(site["url"]) as eng:
        assert any(d.actor == "other" and d.instance == site["leader"] for d in eng.denials())


def _overflow(page: Any) -> int:
    """How many pixels the page is wider than the window (0 or less: it fits)."""
    return int(page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"))


def _axe(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [v for v in result if v.get("impact") in ("serious", "critical")]


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_every_page_screenshots_and_axe(site: dict[str, Any], browser: Any) -> None:
    """Each page at 1280 and 360 px: no horizontal overflow, Thai rendered with a Thai font,
    a screenshot kept, and no serious or critical axe-core violation."""
    base = site["base"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    paths = {
        "work": "/", "instance": f"/instances/{site['leader']}",
        "khok": f"/instances/{site['khok']}", "start": "/start", "report": "/report",
        "list": "/list?program=leader-development", "audit": "/audit",
        "verify": "/audit/verify", "admin": "/admin", "migrate": "/migrate",
    }
    found: dict[str, list[str]] = {}
    for width in (1280, 360):
        context = browser.new_context(viewport={"width": width, "height": 900},
                                      bypass_csp=True)  # lets the test inject axe
        page = context.new_page()
        page.goto(f"{base}/login")
        page.screenshot(path=str(SHOTS / f"login-{width}.png"), full_page=True)
        found.update({f"login@{width}": [v["id"] for v in _axe(page)]})
        log_in(page, base, "admin")
        for name, path in paths.items():
            response = page.goto(base + path)
            assert response is not None and response.status == 200, path
            if name == "instance":
                page.click("#act-kickoff > summary")
            overflow = _overflow(page)
            assert overflow <= 0, f"{path} overflows at {width}px by {overflow}px"
            assert page.evaluate("document.fonts.check('16px Loma, Garuda, sans-serif', 'ก')")
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            bad = _axe(page)
            if bad:
                found[f"{name}@{width}"] = [
                    f"{v['id']}: {v['nodes'][0]['html'][:120]}" for v in bad]
        context.close()
    found = {k: v for k, v in found.items() if v}
    assert not found, found
    assert shutil.which("fc-list") is None or subprocess.run(
        ["fc-list", ":lang=th", "family"], capture_output=True, text=True).stdout.strip()


@pytest.fixture
def files_site(engine: Engine, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A `workflow --definitions DIR serve` knowing kickoff-files (a photo, an attendance
    PDF), with the service tests' accounts and one planned instance in Lopburi."""
    from test_attachments import PROGRAM

    definitions = tmp_path / "defs"
    definitions.mkdir()
    (definitions / "files.yaml").write_text(PROGRAM, encoding="utf-8")
    make_world(engine.url).engine.close()
    with Engine(engine.url, [definitions]) as eng:
        inst = eng.start("kickoff-files", area=LOPBURI, fiscal_year=2564, actor="udomrat",
                         role=OFFICER)
    with serving(engine.url, tmp_path / "serve.log", workers=1,
                 args=("--definitions", str(definitions))) as base:
        yield {"base": base, "instance": inst.id, "url": engine.url,
               "definitions": definitions}


def test_coordinator_attaches_a_photo_and_downloads_it(files_site: dict[str, Any],
                                                       browser: Any) -> None:
    """At 360 px: attach a JPEG to the kickoff through the form's file input (accepting
    images), record it, find it in the timeline (name, size, type, thumbnail) and download it
    back byte for byte; the page neither overflows nor has a serious axe violation."""
    import base64

    base, iid = files_site["base"], files_site["instance"]
    context = browser.new_context(viewport={"width": 360, "height": 800},
                                  accept_downloads=True, bypass_csp=True)
    page = context.new_page()
    SHOTS.mkdir(parents=True, exist_ok=True)
    log_in(page, base, "udomrat")
    # A real photo (64 x 48 JPEG, well under the field's 2,000 bytes), drawn by the browser.
    jpeg = base64.b64decode(page.evaluate("""() => {
        const c = document.createElement('canvas'); c.width = 64; c.height = 48;
        const g = c.getContext('2d'); g.fillStyle = '#0b3d6b'; g.fillRect(0, 0, 64, 48);
        g.fillStyle = '#f5c518'; g.fillRect(8, 8, 24, 24);
        return c.toDataURL('image/jpeg', 0.8).split(',')[1]; }"""))
    assert jpeg[:3] == b"\xff\xd8\xff" and len(jpeg) <= 2000
    page.goto(f"{base}/instances/{iid}")
    page.click("#act-kickoff > summary")
    page.fill("#f-kickoff-date-d", "1")
    page.select_option("#f-kickoff-date-m", "3")
    page.fill("#f-kickoff-date-y", "2564")
    page.click("#act-kickoff details.more > summary")
    photo = page.locator("#f-kickoff-photo")
    assert photo.get_attribute("accept") == "image/*"
    photo.set_input_files(files=[{"name": "ภาพประชุม.jpg", "mimeType": "image/jpeg",
                                  "buffer": jpeg}])
    overflow = _overflow(page)
    assert overflow <= 0, f"the form with its file inputs overflows at 360px by {overflow}px"
    page.screenshot(path=str(SHOTS / "files-form-360.png"), full_page=True)
    page.click("#act-kickoff button.primary")
    page.wait_for_url(f"{base}/instances/{iid}?recorded=kickoff")
    entry = page.locator("#e2")
    assert f"ภาพประชุม.jpg ({len(jpeg)} ไบต์, image/jpeg)" in entry.inner_text()
    thumbnail = entry.locator("img")
    assert thumbnail.get_attribute("src") == f"/instances/{iid}/files/2/photo"
    # The thumbnail loads lazily: once scrolled to, as a reader on a phone would.
    thumbnail.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete", arg=thumbnail.element_handle())
    assert thumbnail.evaluate("img => img.complete && img.naturalWidth") == 64  # it shows
    overflow = _overflow(page)
    assert overflow <= 0, f"the instance page overflows at 360px by {overflow}px"
    page.screenshot(path=str(SHOTS / "files-360.png"), full_page=True)
    assert not _axe(page)
    with page.expect_download() as got:
        entry.locator("a.download").click()
    download = got.value
    assert download.suggested_filename == "ภาพประชุม.jpg"
    assert Path(download.path()).read_bytes() == jpeg
    context.close()
    with Engine(files_site["url"], [files_site["definitions"]]) as eng:
        last = eng.history(iid)[-1]
        assert last.evidence["photo"]["name"] == "ภาพประชุม.jpg"  # type: ignore[index]
        assert last.auth is not None and last.auth.startswith("session:")
        assert eng.verify().ok


def test_officer_replaces_a_wrong_photo_from_the_correction_form(
        files_site: dict[str, Any], browser: Any) -> None:
    """At 360 px: the kickoff's photo was the wrong one; the officer opens the correction
    form, picks the photo field, chooses the right file and gives the reason; the timeline
    then shows the new photo and marks the first corrected; the page neither overflows nor
    has a serious axe violation, and the trail verifies."""
    from test_attachments import JPEG

    base, iid = files_site["base"], files_site["instance"]
    with Engine(files_site["url"], [files_site["definitions"]]) as eng:
        eng.fire(iid, "kickoff", actor="udomrat", role=OFFICER,
                 evidence={"date": "2564-03-01", "photo": Upload("ผิดงาน.jpg", JPEG)})
    context = browser.new_context(viewport={"width": 360, "height": 800}, bypass_csp=True)
    page = context.new_page()
    SHOTS.mkdir(parents=True, exist_ok=True)
    log_in(page, base, "udomrat")
    page.goto(f"{base}/instances/{iid}")
    page.click("#act-correct > summary")
    page.select_option("#m-correct-target", "2:photo")
    right = JPEG[:-1] + b"\x02"
    page.set_input_files("#m-correct-file", files=[
        {"name": "ภาพที่ถูกต้อง.jpg", "mimeType": "image/jpeg", "buffer": right}])
    page.fill("#m-correct-reason", "แนบรูปผิดงาน")
    overflow = _overflow(page)
    assert overflow <= 0, f"the correction form overflows at 360px by {overflow}px"
    page.screenshot(path=str(SHOTS / "files-correct-360.png"), full_page=True)
    page.click("#act-correct button.primary")
    page.wait_for_url(f"{base}/instances/{iid}?recorded=correct#timeline")
    kickoff = page.locator("#e2").text_content() or ""  # the original is folded away
    assert "ภาพที่ถูกต้อง.jpg" in kickoff and "ผิดงาน.jpg" in kickoff
    assert not _axe(page)
    context.close()
    with Engine(files_site["url"], [files_site["definitions"]]) as eng:
        assert eng.attachment(iid, 2, "photo")[1] == right
        assert eng.history(iid)[-1].evidence["reason"] == "แนบรูปผิดงาน"
        assert eng.verify().ok
