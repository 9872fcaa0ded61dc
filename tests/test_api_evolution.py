"""The HTTP routes of issue 13 (CONTRACT §8): corrections, revert, comments, migrations, as the
authenticated account, with the contract's statuses; on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from evolution_fixtures import MAPS, NEXT, PROGRAMS, write_v2
from helpers import COORDINATOR, OFFICER
from service_helpers import API, World, client_for, kickoff_body, make_world, start_body
from workflow import Engine


@pytest.fixture
def world(backend: str) -> Iterator[World]:
    Engine(backend).init()
    w = make_world(backend)
    try:
        yield w
    finally:
        w.engine.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with client_for(world) as c:
        yield c


def _kicked_off(client: TestClient, world: World) -> int:
    r = client.post(f"{API}/instances", json=start_body(), headers=world.auth("udomrat"))
    iid = int(r.json()["id"])
    r = client.post(f"{API}/instances/{iid}/events", json=kickoff_body(),
                    headers=world.auth("udomrat"))
    assert r.status_code == 201, r.text
    return iid


def test_comment_correct_revert_over_http(client: TestClient, world: World) -> None:
    """201 {event, instance} for each; the actor is the account; auth is recorded."""
    iid = _kicked_off(client, world)
    me = world.auth("udomrat")
    r = client.post(f"{API}/instances/{iid}/comments", json={"role": OFFICER, "text": "ฝนตก"},
                    headers=me)
    assert r.status_code == 201 and r.json()["event"]["trigger"] == "comment"
    assert r.json()["event"]["actor"] == "udomrat" and r.json()["event"]["auth"]
    r = client.post(f"{API}/instances/{iid}/corrections",
                    json={"seq": 2, "role": OFFICER, "reason": "เลื่อนวัน",
                          "evidence": {"date": "2564-03-01"}}, headers=me)
    assert r.status_code == 201, r.text
    assert r.json()["event"]["evidence"]["changes"]["date"]["new"] == "2021-03-01"
    events = client.get(f"{API}/instances/{iid}/events", headers=me).json()["items"]
    assert events[1]["corrected"]["evidence"]["date"] == "2021-03-01"
    r = client.post(f"{API}/instances/{iid}/revert", json={"role": OFFICER, "reason": "r"},
                    headers={**me, "If-Match": '"1"'})
    assert r.status_code == 412
    r = client.post(f"{API}/instances/{iid}/revert", json={"role": OFFICER, "reason": "r"},
                    headers=me)
    assert r.status_code == 201 and r.json()["instance"]["state"] == "planned"


def test_refusals_over_http(client: TestClient, world: World) -> None:
    """403 outside the caller's grants or role (a denial), 422 invalid, 404 unknown, 400
    an actor in the body."""
    iid = _kicked_off(client, world)
    body = {"seq": 2, "role": OFFICER, "reason": "r", "evidence": {"venue": "x"}}
    assert client.post(f"{API}/instances/{iid}/corrections", json=body,
                       headers=world.auth("other")).status_code == 403
    assert client.post(f"{API}/instances/{iid}/corrections",
                       json={**body, "role": COORDINATOR},
                       headers=world.auth("udomrat")).status_code == 403
    assert client.post(f"{API}/instances/{iid}/corrections",
                       json={**body, "evidence": {"colour": "red"}},
                       headers=world.auth("udomrat")).status_code == 422
    assert client.post(f"{API}/instances/{iid}/corrections", json={**body, "seq": 9},
                       headers=world.auth("udomrat")).status_code == 404
    assert client.post(f"{API}/instances/{iid}/comments",
                       json={"role": OFFICER, "text": "x", "actor": "someone"},
                       headers=world.auth("udomrat")).status_code in (400, 422)


def test_migrations_over_http(backend: str, world: World, tmp_path: Path) -> None:
    """dry_run answers the plan; applying migrates; a second run migrates nothing."""
    directory = write_v2(tmp_path / "v2")
    world.engine.close()
    world.engine = Engine(backend, [directory], allow_override=PROGRAMS)
    with client_for(world) as client:
        iid = _kicked_off(client, world)
    # started on the next version now (the newest); put another on the bundled one
    # through an engine without the next
    with Engine(backend) as v1:
        old = v1.start("leader-development", area="160117", fiscal_year=2565,
                       actor="udomrat", role=OFFICER)
        v1.fire(old.id, "kickoff", actor="udomrat", role=OFFICER, evidence={
            **kickoff_body()["evidence"], "date": "2564-11-17"})  # in fiscal 2565
    with client_for(world) as client:
        body = {"program": "leader-development", "to_version": NEXT, "role": OFFICER,
                "map": MAPS["leader-development"], "dry_run": True}
        r = client.post(f"{API}/migrations", json=body, headers=world.auth("udomrat"))
        assert r.status_code == 200, r.text
        assert [(i["id"], i["ok"], i["to"]) for i in r.json()["items"]] == [
            (old.id, True, ["launched"])]
        r = client.post(f"{API}/migrations", json={**body, "dry_run": False},
                        headers=world.auth("udomrat"))
        assert r.status_code == 200 and r.json()["migrated"] == 1
        r = client.post(f"{API}/migrations", json={**body, "dry_run": False},
                        headers=world.auth("udomrat"))
        assert r.json()["migrated"] == 0
        assert client.get(f"{API}/instances/{old.id}",
                          headers=world.auth("udomrat")).json()["program_version"] == NEXT
        assert iid != old.id


def test_multipart_fire_with_files(backend: str, world: World, tmp_path: Path) -> None:
    """A fire with a file part on the fire path itself (multipart/form-data): 201, the
    evidence records the file; a PDF where an image is wanted is 422; a form without its
    fields, evidence that is not a JSON object or another media type is 400; the file comes
    back through the library."""
    from test_attachments import JPEG, PDF, PROGRAM

    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "files.yaml").write_text(PROGRAM, encoding="utf-8")
    world.engine.close()
    world.engine = Engine(backend, [tmp_path / "defs"])
    me = world.auth("udomrat")
    with client_for(world) as client:
        r = client.post(f"{API}/instances", json=start_body(program="kickoff-files"), headers=me)
        iid = r.json()["id"]
        url = f"{API}/instances/{iid}/events"
        form = {"trigger": "kickoff", "role": OFFICER, "evidence": '{"date": "2564-03-01"}'}
        r = client.post(url, data=form, files={"photo": ("kickoff.jpg", PDF)}, headers=me)
        assert r.status_code == 422, r.text
        r = client.post(url, data={"trigger": "kickoff", "evidence": "{}"}, headers=me)
        assert r.status_code == 400 and "trigger, role" in r.json()["detail"]
        r = client.post(url, data={**form, "evidence": "[1]"},
                        files={"photo": ("k.jpg", JPEG)}, headers=me)
        assert r.status_code == 400 and "JSON object" in r.json()["detail"]
        r = client.post(url, content=b"trigger=kickoff", headers={
            **me, "Content-Type": "text/plain"})
        assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
        assert len(world.engine.history(iid)) == 1  # every refusal changed nothing
        r = client.post(url, data=form, files={"photo": ("kickoff.jpg", JPEG, "text/plain")},
                        headers=me)
        assert r.status_code == 201, r.text
        photo = r.json()["event"]["evidence"]["photo"]
        assert photo["media_type"] == "image/jpeg" and photo["bytes"] == len(JPEG)
        r = client.post(url, data={**form, "actor": "x"}, headers=me)
        assert r.status_code == 400
    assert world.engine.attachment(iid, 2, "photo")[1] == JPEG


def test_multipart_correction_replaces_a_file(backend: str, world: World,
                                              tmp_path: Path) -> None:
    """A correction as multipart/form-data (`workflow correct --attach` over HTTP): its file
    part replaces the photo (201; the event's file is now the new one, the original still
    in the trail); a PDF where an image is wanted is 422 and a form without its reason 400,
    neither changing anything; JSON corrections work as before."""
    from test_attachments import JPEG, PDF, PROGRAM

    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "files.yaml").write_text(PROGRAM, encoding="utf-8")
    world.engine.close()
    world.engine = Engine(backend, [tmp_path / "defs"])
    me = world.auth("udomrat")
    newer = JPEG[:-1] + b"\x01"
    with client_for(world) as client:
        r = client.post(f"{API}/instances", json=start_body(program="kickoff-files"), headers=me)
        iid = r.json()["id"]
        form = {"trigger": "kickoff", "role": OFFICER, "evidence": '{"date": "2564-03-01"}'}
        r = client.post(f"{API}/instances/{iid}/events", data=form,
                        files={"photo": ("kickoff.jpg", JPEG)}, headers=me)
        assert r.status_code == 201, r.text
        url = f"{API}/instances/{iid}/corrections"
        fix = {"seq": "2", "role": OFFICER, "reason": "รูปผิดงาน"}
        r = client.post(url, data=fix, files={"photo": ("x.jpg", PDF)}, headers=me)
        assert r.status_code == 422, r.text
        r = client.post(url, data={"seq": "2", "role": OFFICER},
                        files={"photo": ("x.jpg", newer)}, headers=me)
        assert r.status_code == 400 and "reason" in r.json()["detail"]
        assert len(world.engine.history(iid)) == 2  # the refusals changed nothing
        r = client.post(url, data=fix, files={"photo": ("ถูกต้อง.jpg", newer)}, headers=me)
        assert r.status_code == 201, r.text
        change = r.json()["event"]["evidence"]["changes"]["photo"]
        assert change["old"]["sha256"] != change["new"]["sha256"]
        assert change["new"]["name"] == "ถูกต้อง.jpg"
        r = client.get(f"{API}/instances/{iid}/events/2/files/photo", headers=me)
        assert r.status_code == 200 and r.content == newer
        r = client.post(url, json={"seq": 2, "role": OFFICER, "reason": "วันที่ผิด",
                                   "evidence": {"date": "2564-03-02"}}, headers=me)
        assert r.status_code == 201, r.text
    value, data = world.engine.attachment(iid, 2, "photo")
    assert data == newer and value["name"] == "ถูกต้อง.jpg"
    assert world.engine.verify().ok
