"""Files over HTTP and on the pages (CONTRACT §7, §8): `GET /api/v1/instances/{id}/events/{seq}/
files/{field}`, fire forms with file inputs, the timeline's files and their download route, and
the admin page's grants that end; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from helpers import LOPBURI, OFFICER, dump_tables
from service_helpers import API, World, client_for, make_world
from test_attachments import JPEG, PDF, PROGRAM
from test_web_pages import csrf_of, login
from workflow import Engine
from workflow.runtime.attachments import Upload

#: kickoff-files, correctable by its officer.
FILES_PROGRAM = PROGRAM.replace(
    "initial: planned", "corrections: {roles: [provincial_officer]}\ninitial: planned")
THAI_PDF = "ใบลงชื่อ ผู้เข้าร่วม.pdf"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


@pytest.fixture
def world(backend: str, tmp_path: Path) -> Iterator[World]:
    """The service tests' accounts, on an engine that knows kickoff-files."""
    Engine(backend).init()
    w = make_world(backend)
    w.engine.close()
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "files.yaml").write_text(FILES_PROGRAM, encoding="utf-8")
    w.engine = Engine(backend, [tmp_path / "defs"])
    try:
        yield w
    finally:
        w.engine.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with client_for(world, follow_redirects=False) as c:
        yield c


def _planned(world: World) -> int:
    inst = world.engine.start("kickoff-files", area=LOPBURI, fiscal_year=2564, actor="udomrat",
                              role=OFFICER)
    return inst.id


def _kicked_off(world: World) -> int:
    iid = _planned(world)
    world.engine.fire(iid, "kickoff", actor="udomrat", role=OFFICER, evidence={
        "date": "2564-03-01", "photo": Upload("kickoff.jpg", JPEG),
        "attendance": Upload(THAI_PDF, PDF)})
    return iid


def _fire_form(page: str, csrf: str, **over: str) -> dict[str, str]:
    version = re.search(r'name="version" value="(\d+)"', page)
    assert version is not None
    data = {"csrf_token": csrf, "trigger": "kickoff", "role": OFFICER,
            "version": version.group(1), "date__d": "1", "date__m": "3", "date__y": "2564",
            "note": ""}
    data.update(over)
    return data


# --------------------------------------------------------------------------- the API


def test_api_hands_back_a_recorded_file(client: TestClient, world: World) -> None:
    """The stored bytes, their sniffed media type, attachment with the Thai name (RFC 5987),
    the sha256 as ETag, nosniff; If-None-Match with that ETag is a 304."""
    iid = _kicked_off(world)
    url = f"{API}/instances/{iid}/events/2/files/attendance"
    r = client.get(url, headers=world.auth("udomrat"))
    assert r.status_code == 200, r.text
    assert r.content == PDF
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["x-content-type-options"] == "nosniff"
    sha = Upload("x", PDF).sha256
    assert r.headers["etag"] == f'"{sha}"'
    cd = r.headers["content-disposition"]
    assert cd.startswith("attachment;")
    assert f"filename*=UTF-8''{quote(THAI_PDF, safe='')}" in cd
    assert cd.encode("ascii")  # a header is ASCII: the Thai name only percent-encoded
    photo = client.get(f"{API}/instances/{iid}/events/2/files/photo",
                       headers=world.auth("udomrat"))
    assert photo.content == JPEG and photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["content-disposition"].startswith("attachment;")  # API: always
    again = client.get(url, headers={**world.auth("udomrat"), "If-None-Match": f'"{sha}"'})
    assert again.status_code == 304 and again.content == b""
    assert client.get(url, headers=world.auth("admin")).content == PDF  # admin reads all


def test_api_file_reads_are_scoped(client: TestClient, world: World) -> None:
    """Another province's officer: 403 with the denial recorded; unknown instance, event or
    field, or a field that is not a file: 404; no credentials: 401."""
    iid = _kicked_off(world)
    before = len(world.engine.denials())
    r = client.get(f"{API}/instances/{iid}/events/2/files/photo", headers=world.auth("other"))
    assert r.status_code == 403 and r.json()["code"] == "PermissionDenied"
    assert r.headers["content-type"].startswith("application/problem+json")
    denials = world.engine.denials()
    assert len(denials) == before + 1 and denials[-1].actor == "other"
    me = world.auth("udomrat")
    for path in (f"{iid + 50}/events/2/files/photo", f"{iid}/events/9/files/photo",
                 f"{iid}/events/2/files/nothing", f"{iid}/events/2/files/date",
                 f"{iid}/events/1/files/photo"):
        r = client.get(f"{API}/instances/{path}", headers=me)
        assert r.status_code == 404, (path, r.text)
    assert client.get(f"{API}/instances/{iid}/events/2/files/photo").status_code == 401


def test_openapi_documents_the_file_route(client: TestClient, world: World) -> None:
    """The route is in the OpenAPI document with a binary 200 and the problem responses."""
    spec = client.get(f"{API}/openapi.json", headers=world.auth("admin")).json()
    op = spec["paths"]["/api/v1/instances/{instance}/events/{seq}/files/{field}"]["get"]
    assert op["responses"]["200"]["content"]["*/*"]["schema"]["format"] == "binary"
    assert {"403", "404"} <= set(op["responses"])


# --------------------------------------------------------------------------- the fire form


def test_fire_form_has_file_inputs(client: TestClient, world: World) -> None:
    """A file field is a file input accepting its media types, and the form is multipart."""
    iid = _planned(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    assert 'enctype="multipart/form-data"' in page
    assert re.search(r'<input id="f-kickoff-photo" name="photo" type="file" accept="image/\*"',
                     page)
    assert 'name="attendance" type="file" accept="application/pdf"' in page
    assert "ขนาดไม่เกิน 2 KB" in page and "ชนิดไฟล์: image/*" in page


def test_fire_form_records_files(client: TestClient, world: World) -> None:
    """A post with a photo records it (sha256, name, sniffed type, size); an empty file input
    is no file; the timeline names the file with its size and type and links it."""
    iid = _planned(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    r = client.post(f"/instances/{iid}/fire", data=_fire_form(page, csrf_of(page)),
                    files={"photo": ("ภาพประชุม.jpg", JPEG, "application/octet-stream"),
                           "attendance": ("", b"", "application/octet-stream")})
    assert r.status_code == 303, r.text
    event = world.engine.history(iid)[-1]
    assert event.evidence["photo"] == {"sha256": Upload("x", JPEG).sha256,
                                       "name": "ภาพประชุม.jpg", "media_type": "image/jpeg",
                                       "bytes": len(JPEG)}
    assert "attendance" not in event.evidence
    assert event.auth is not None and event.auth.startswith("session:")
    timeline = client.get(f"/instances/{iid}").text.split('id="timeline"')[1]
    href = f"/instances/{iid}/files/2/photo"
    assert f'<img src="{href}" alt="ภาพประชุม.jpg"' in timeline
    assert f'href="{href}?download=1" download' in timeline
    assert "ภาพประชุม.jpg (522 ไบต์, image/jpeg)" in timeline


def test_refused_files_are_shown_at_the_field_and_change_nothing(
        client: TestClient, world: World) -> None:
    """A PDF as the photo, or a photo over its 2,000 bytes: 422, the reason in Thai next to
    the field, the chosen name recalled, nothing recorded."""
    iid = _planned(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    before = dump_tables(world.engine.url)
    r = client.post(f"/instances/{iid}/fire", data=_fire_form(page, csrf_of(page)),
                    files={"photo": ("photo.jpg", PDF, "image/jpeg")})
    assert r.status_code == 422
    err = re.search(r'id="f-kickoff-photo-err">([^<]+)<', r.text)
    assert err is not None and "application/pdf" in err.group(1) and "image/*" in err.group(1)
    assert "ไฟล์ที่เลือกไว้: photo.jpg" in r.text
    r = client.post(f"/instances/{iid}/fire", data=_fire_form(page, csrf_of(page)),
                    files={"photo": ("big.jpg", JPEG * 10, "image/jpeg")})
    assert r.status_code == 422
    err = re.search(r'id="f-kickoff-photo-err">([^<]+)<', r.text)
    assert err is not None and "ใหญ่เกินไป" in err.group(1) and "2 KB" in err.group(1)
    r = client.post(f"/instances/{iid}/fire", data=_fire_form(page, csrf_of(page), date__y=""),
                    files={"photo": ("ok.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 422 and 'id="f-kickoff-date-err"' in r.text
    assert dump_tables(world.engine.url) == before


def test_fire_with_a_file_needs_the_csrf_token(client: TestClient, world: World) -> None:
    """A multipart fire without the session's CSRF token: 403, nothing recorded."""
    iid = _planned(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    before = dump_tables(world.engine.url)
    r = client.post(f"/instances/{iid}/fire", data=_fire_form(page, "forged"),
                    files={"photo": ("k.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 403
    assert dump_tables(world.engine.url) == before


# --------------------------------------------------------------------------- the download route


def test_file_route_serves_images_inline_and_the_rest_as_downloads(
        client: TestClient, world: World) -> None:
    """A JPEG is shown inline (a download with ?download=1); a PDF is always a download; both
    with nosniff, their ETag and a sandboxing CSP."""
    iid = _kicked_off(world)
    login(client)
    photo = client.get(f"/instances/{iid}/files/2/photo")
    assert photo.status_code == 200 and photo.content == JPEG
    assert photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["content-disposition"].startswith("inline;")
    assert "sandbox" in photo.headers["content-security-policy"]
    assert photo.headers["x-content-type-options"] == "nosniff"
    saved = client.get(f"/instances/{iid}/files/2/photo?download=1")
    assert saved.headers["content-disposition"].startswith("attachment;")
    pdf = client.get(f"/instances/{iid}/files/2/attendance")
    assert pdf.content == PDF and pdf.headers["content-disposition"].startswith("attachment;")
    assert quote(THAI_PDF, safe="") in pdf.headers["content-disposition"]


def test_file_route_is_scoped_like_the_instance_page(client: TestClient, world: World) -> None:
    """No session: to /login; another province: a 403 page with the denial recorded; an
    unknown field or event: a 404 page."""
    iid = _kicked_off(world)
    assert client.get(f"/instances/{iid}/files/2/photo").headers["location"] == "/login"
    login(client, "other")
    before = len(world.engine.denials())
    r = client.get(f"/instances/{iid}/files/2/photo")
    assert r.status_code == 403 and "text/html" in r.headers["content-type"]
    assert r.content != JPEG
    assert len(world.engine.denials()) == before + 1
    login(client, "udomrat")
    assert client.get(f"/instances/{iid}/files/2/nothing").status_code == 404
    assert client.get(f"/instances/{iid}/files/7/photo").status_code == 404


def test_a_corrected_file_shows_as_corrected(client: TestClient, world: World) -> None:
    """After a correction replaces the photo, the timeline links the new file (marked
    corrected), the first one is struck through unlinked, and both routes serve the new."""
    iid = _kicked_off(world)
    world.engine.correct(iid, 2, actor="udomrat", role=OFFICER, reason="ภาพผิดงาน",
                         evidence={"photo": Upload("ภาพใหม่.png", PNG)})
    login(client)
    timeline = client.get(f"/instances/{iid}").text.split('id="timeline"')[1]
    kickoff = timeline.split('id="e2"')[1]
    assert "ภาพใหม่.png" in kickoff and "ไฟล์ที่แก้ไขแล้ว" in kickoff
    assert "<del>kickoff.jpg (522 ไบต์, image/jpeg)</del>" in kickoff
    correction = timeline.split('id="e3"')[1].split('id="e2"')[0]
    assert "kickoff.jpg (522 ไบต์, image/jpeg) → ภาพใหม่.png" in correction
    assert client.get(f"/instances/{iid}/files/2/photo").content == PNG
    assert client.get(f"{API}/instances/{iid}/events/2/files/photo",
                      headers=world.auth("udomrat")).content == PNG


def test_the_correction_form_replaces_a_file(client: TestClient, world: World) -> None:
    """The instance page's correction form offers the file fields (with the file's name) and
    a file input; posting a new photo records a correction whose file the timeline then
    shows; a file field picked without a file, or a PDF where an image is wanted, is
    refused on the page and changes nothing."""
    iid = _kicked_off(world)
    login(client)
    page = client.get(f"/instances/{iid}").text
    form = page.split('id="act-correct"')[1].split("</form>")[0]
    assert 'enctype="multipart/form-data"' in form and 'type="file"' in form
    assert '<option value="2:photo">' in form and "kickoff.jpg" in form
    fix = {"csrf_token": csrf_of(page), "role": OFFICER, "target": "2:photo",
           "value": "", "reason": "ภาพผิดงาน"}
    before = dump_tables(world.engine.store.url)
    r = client.post(f"/instances/{iid}/correct", data=fix)
    assert r.status_code == 400 and "เลือกไฟล์ใหม่สำหรับช่องที่เป็นไฟล์" in r.text
    r = client.post(f"/instances/{iid}/correct", data=fix,
                    files={"file": ("ผิด.pdf", PDF, "application/pdf")})
    assert r.status_code == 422 and 'id="correct-error"' in r.text
    assert dump_tables(world.engine.store.url) == before
    r = client.post(f"/instances/{iid}/correct", data=fix,
                    files={"file": ("ภาพใหม่.png", PNG, "image/png")})
    assert r.status_code == 303, r.text
    timeline = client.get(f"/instances/{iid}").text.split('id="timeline"')[1]
    assert "ภาพใหม่.png" in timeline.split('id="e2"')[1]
    assert client.get(f"/instances/{iid}/files/2/photo").content == PNG
    assert world.engine.history(iid)[-1].evidence["reason"] == "ภาพผิดงาน"
    assert world.engine.verify().ok


# --------------------------------------------------------------------------- grants that end


def _grant_form(page: str, **over: str) -> dict[str, str]:
    data = {"csrf_token": csrf_of(page), "actor": "other", "role": OFFICER, "area": "16",
            "program": "", "until__d": "30", "until__m": "9", "until__y": "2600"}
    data.update(over)
    return data


def test_admin_grants_until_a_be_date(client: TestClient, world: World,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The grant form's BE date ends the grant at the end of that day (Thai time); the table
    shows the end, and marks the grant once it has expired."""
    from workflow.access import policy

    login(client, "admin")
    page = client.get("/admin").text
    assert 'name="until__d"' in page and 'name="until__y"' in page
    r = client.post("/admin/grant", data=_grant_form(page))
    assert r.status_code == 200 and "บันทึกแล้ว" in r.text, r.text
    granted = [g for g in world.engine.grants("other") if g.area == "16"]
    assert [g.expires_at for g in granted] == ["2057-09-30T17:00:00.000000Z"]
    row = next(tr for tr in r.text.split("<tr") if ">other<" in tr and ">16<" in tr)
    assert "30 ก.ย. 2600" in row and "หมดอายุแล้ว" not in row
    assert "ไม่มีกำหนด" in r.text  # the grants without an end say so
    monkeypatch.setattr(policy, "_now", lambda: "2057-10-01T00:00:00.000000Z")
    page = client.get("/admin").text
    row = next(tr for tr in page.split("<tr") if ">other<" in tr and ">16<" in tr)
    assert "หมดอายุแล้ว" in row


def test_admin_grant_refusals_change_nothing(client: TestClient, world: World) -> None:
    """An end date given in part: 422 with the message; an end already past: 422; no CSRF
    token: 403; a non-admin: 403 with the denial recorded. No grant is made by any."""
    login(client, "admin")
    page = client.get("/admin").text
    before = world.engine.grants()
    r = client.post("/admin/grant", data=_grant_form(page, until__m=""))
    assert r.status_code == 422 and "กรอกวัน เดือน และปี พ.ศ. ให้ครบ" in r.text
    r = client.post("/admin/grant", data=_grant_form(page, until__y="2500"))
    assert r.status_code == 422
    r = client.post("/admin/grant", data=_grant_form(page, csrf_token="forged"))
    assert r.status_code == 403
    login(client, "udomrat")
    mine = client.get("/").text
    denials = len(world.engine.denials())
    r = client.post("/admin/grant", data=_grant_form(mine))
    assert r.status_code == 403 and len(world.engine.denials()) == denials + 1
    assert world.engine.grants() == before


def test_file_sizes_read_as_people_read_them() -> None:
    """Bytes, KB and MB, in Thai and English."""
    from workflow.service.web.i18n import file_size

    assert file_size(772, "th") == "772 ไบต์" and file_size(772, "en") == "772 bytes"
    assert file_size(2000, "en") == "2 KB" and file_size(1536, "th") == "1.5 KB"
    assert file_size(10 * 1024 * 1024, "en") == "10 MB"


def test_file_problems_are_translated() -> None:
    """The engine's reasons for a file field, in Thai; English keeps the engine's words."""
    from workflow.service.web.i18n import field_problem

    assert field_problem("th", "is an empty file") == "ไฟล์ว่างเปล่า"
    assert "2 KB" in field_problem("th", "is 5120 bytes; at most 2000 allowed")
    assert "application/pdf" in field_problem(
        "th", "is application/pdf (by its content); allowed: image/*")
    assert field_problem("en", "is an empty file") == "is an empty file"
