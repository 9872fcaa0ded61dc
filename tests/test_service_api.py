"""The JSON API in process: every endpoint unauthenticated (401), out of scope (403 with a
denial recorded) and allowed; the contract's keys, ETag/If-Match, Idempotency-Key, paging."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers import LOPBURI, OFFICER
from service_helpers import API, World, client_for, kickoff_body, make_world, start_body
from workflow import Engine

BANGKOK = "1001"


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    w = make_world(engine.url)
    try:
        yield w
    finally:
        w.engine.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with client_for(world) as c:
        yield c


@pytest.fixture
def inst(world: World, client: TestClient) -> dict[str, Any]:
    r = client.post(f"{API}/instances", json=start_body(), headers=world.auth("udomrat"))
    assert r.status_code == 201, r.text
    return dict(r.json())


def is_problem(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert {"type", "title", "status", "detail", "code", "exit_code"} <= body.keys()
    assert body["status"] == status and body["code"] == code, body


def _endpoints(inst_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", f"{API}/me", None),
        ("GET", f"{API}/programs", None),
        ("GET", f"{API}/programs/leader-development", None),
        ("GET", f"{API}/programs/leader-development/diagram", None),
        ("POST", f"{API}/instances", start_body()),
        ("GET", f"{API}/instances", None),
        ("GET", f"{API}/instances/{inst_id}", None),
        ("POST", f"{API}/instances/{inst_id}/events", kickoff_body()),
        ("GET", f"{API}/instances/{inst_id}/events", None),
        ("GET", f"{API}/instances/{inst_id}/events/1", None),
        ("GET", f"{API}/audit/events", None),
        ("POST", f"{API}/audit/verify", None),
        ("GET", f"{API}/audit/digest", None),
        ("GET", f"{API}/audit/denials", None),
        ("GET", f"{API}/report", None),
        ("GET", f"{API}/grants", None),
        ("POST", f"{API}/grants", {"actor": "other", "role": OFFICER, "area": "11"}),
        ("DELETE", f"{API}/grants", {"actor": "other", "role": OFFICER, "area": "10"}),
        ("GET", f"{API}/openapi.json", None),
    ]


def test_every_endpoint_needs_authentication(client: TestClient, inst: dict[str, Any]) -> None:
    """Without credentials every endpoint but health is a 401 problem with WWW-Authenticate."""
    for method, path, body in _endpoints(inst["id"]):
        r = client.request(method, path, json=body)
        is_problem(r, 401, "NotAuthenticated")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["exit_code"] == 4
    assert client.get(f"{API}/health").json() == {"status": "ok"}
    r = client.get(f"{API}/me", headers={"Authorization": "Bearer wft_nonsense"})
    is_problem(r, 401, "NotAuthenticated")


WRONG_SCOPE = [
    # (who, method, path-template, body, action recorded)
    ("other", "POST", "/instances", start_body(), "start"),
    ("other", "GET", "/instances/{id}", None, None),
    ("other", "POST", "/instances/{id}/events", kickoff_body(), "kickoff"),
    ("other", "GET", "/instances/{id}/events", None, None),
    ("other", "GET", "/instances/{id}/events/1", None, None),
    ("other", "GET", "/programs/leader-development/diagram?instance={id}", None, None),
    ("udomrat", "GET", "/audit/events", None, None),
    ("udomrat", "POST", "/audit/verify", None, None),
    ("udomrat", "GET", "/audit/digest", None, None),
    ("udomrat", "GET", "/audit/denials", None, None),
    ("aud", "GET", "/grants", None, None),
    ("udomrat", "POST", "/grants", {"actor": "udomrat", "role": OFFICER}, None),
    ("udomrat", "DELETE", "/grants", {"actor": "other", "role": OFFICER, "area": "10"}, None),
]


@pytest.mark.parametrize(("who", "method", "path", "body", "action"), WRONG_SCOPE)
def test_out_of_scope_is_403_and_a_denial(
    world: World, client: TestClient, inst: dict[str, Any], who: str, method: str, path: str,
    body: dict[str, Any] | None, action: str | None,
) -> None:
    """Out of the caller's grants: 403 PermissionDenied, and the refusal is recorded."""
    before = len(world.engine.denials())
    r = client.request(method, API + path.format(id=inst["id"]), json=body,
                       headers=world.auth(who))
    is_problem(r, 403, "PermissionDenied")
    denials = world.engine.denials()
    assert len(denials) == before + 1
    assert denials[-1].actor == who
    if action:
        assert denials[-1].action == action


def test_good_cases(world: World, client: TestClient, inst: dict[str, Any]) -> None:
    """Each endpoint answers its allowed caller with the contract's keys."""
    h = world.auth("udomrat")
    me = client.get(f"{API}/me", headers=h).json()
    assert me["name"] == "udomrat" and me["admin"] is False
    assert [g["role"] for g in me["grants"]] == [OFFICER]
    progs = client.get(f"{API}/programs", headers=h).json()
    assert {"leader-development"} <= {p["program"] for p in progs["items"]}
    assert client.get(f"{API}/programs/leader-development?version=1",
                      headers=h).json()["program"] == "leader-development"
    d = client.get(f"{API}/programs/leader-development/diagram?format=dot&instance={inst['id']}",
                   headers=h)
    assert d.status_code == 200 and d.text.startswith("digraph")
    assert {"id", "program", "program_version", "area", "fiscal_year", "state", "active",
            "version", "created_at", "updated_at", "available_triggers"} <= inst.keys()
    shown = client.get(f"{API}/instances/{inst['id']}", headers=h)
    assert shown.headers["etag"] == '"1"'
    assert "kickoff" in shown.json()["available_triggers"]
    listed = client.get(f"{API}/instances", headers=h).json()
    assert [i["id"] for i in listed["items"]] == [inst["id"]] and listed["next_cursor"] is None
    assert client.get(f"{API}/instances", headers=world.auth("other")).json()["items"] == []
    r = client.post(f"{API}/instances/{inst['id']}/events", json=kickoff_body(),
                    headers={**h, "If-Match": '"1"'})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/api/v1/instances/{inst['id']}/events/2"
    assert r.headers["etag"] == '"2"'
    fired = r.json()
    assert fired["event"]["actor"] == "udomrat" and fired["instance"]["version"] == 2
    assert client.get(r.headers["location"], headers=h).json()["trigger"] == "kickoff"
    events = client.get(f"{API}/instances/{inst['id']}/events", headers=h).json()
    assert [e["trigger"] for e in events["items"]] == ["start", "kickoff"]
    assert {"id", "instance", "seq", "trigger", "from", "to", "actor", "role", "at",
            "evidence", "note", "hash", "prev_hash"} <= events["items"][1].keys()
    report = client.get(f"{API}/report?fiscal_year=2564", headers=h).json()
    assert report["total"] == 1
    assert client.get(f"{API}/report", headers=world.auth("other")).json()["total"] == 0
    for who in ("aud", "admin"):
        a = world.auth(who)
        log = client.get(f"{API}/audit/events", headers=a).json()
        assert [e["trigger"] for e in log["items"] if e["instance"]] == ["start", "kickoff"]
        assert client.post(f"{API}/audit/verify", headers=a).json()["ok"] is True
        assert "root" in client.get(f"{API}/audit/digest", headers=a).json()
        assert "items" in client.get(f"{API}/audit/denials", headers=a).json()
    a = world.auth("admin")
    assert client.get(f"{API}/instances/{inst['id']}", headers=a).status_code == 200
    g = client.post(f"{API}/grants", json={"actor": "other", "role": OFFICER, "area": "11"},
                    headers=a)
    assert g.status_code == 201 and g.json()["granted_by"] == "admin"
    assert {x["area"] for x in client.get(f"{API}/grants?actor=other", headers=a)
            .json()["items"]} == {"10", "11"}
    r = client.request("DELETE", f"{API}/grants",
                       json={"actor": "other", "role": OFFICER, "area": "11"}, headers=a)
    assert r.status_code == 200 and r.json()["area"] == "11"
    spec = client.get(f"{API}/openapi.json", headers=a).json()
    assert spec["openapi"].startswith("3.1") and f"{API}/instances/{{instance}}/events" in \
        spec["paths"]


def test_start_is_201_with_location(world: World, client: TestClient) -> None:
    """A start answers 201, Location of the new instance and its ETag."""
    r = client.post(f"{API}/instances", json=start_body(title="รุ่นที่ 1"),
                    headers=world.auth("udomrat"))
    assert r.status_code == 201
    assert r.headers["location"] == f"/api/v1/instances/{r.json()['id']}"
    assert r.headers["etag"] == '"1"' and r.json()["title"] == "รุ่นที่ 1"


def test_if_match_mismatch_is_412(world: World, client: TestClient,
                                  inst: dict[str, Any]) -> None:
    """A stale If-Match is 412 VersionConflict (exit 5); a malformed one is 400."""
    h = world.auth("udomrat")
    r = client.post(f"{API}/instances/{inst['id']}/events", json=kickoff_body(),
                    headers={**h, "If-Match": '"7"'})
    is_problem(r, 412, "VersionConflict")
    assert r.json()["exit_code"] == 5
    r = client.post(f"{API}/instances/{inst['id']}/events", json=kickoff_body(),
                    headers={**h, "If-Match": "seven"})
    is_problem(r, 400, "UsageError")
    assert world.engine.get(inst["id"]).version == 1


def test_idempotency_key_replays(world: World, client: TestClient, inst: dict[str, Any]) -> None:
    """The same Idempotency-Key gives the first result again and appends nothing; the same
    key for another request is 409."""
    h = {**world.auth("udomrat"), "Idempotency-Key": "k-1"}
    first = client.post(f"{API}/instances/{inst['id']}/events", json=kickoff_body(), headers=h)
    again = client.post(f"{API}/instances/{inst['id']}/events", json=kickoff_body(), headers=h)
    assert first.status_code == again.status_code == 201
    assert first.json()["event"] == again.json()["event"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(world.engine.history(inst["id"])) == 2
    other = client.post(f"{API}/instances/{inst['id']}/events",
                        json=kickoff_body(note="different"), headers=h)
    is_problem(other, 409, "IdempotencyConflict")
    s1 = client.post(f"{API}/instances", json=start_body(allow_duplicate=True),
                     headers={**world.auth("udomrat"), "Idempotency-Key": "s-1"})
    s2 = client.post(f"{API}/instances", json=start_body(allow_duplicate=True),
                     headers={**world.auth("udomrat"), "Idempotency-Key": "s-1"})
    assert s1.json()["id"] == s2.json()["id"]


def test_errors_map_to_the_status_table(world: World, client: TestClient,
                                        inst: dict[str, Any]) -> None:
    """404, 409, 422 and 400 problems carry the contract's code and exit code."""
    h = world.auth("udomrat")
    is_problem(client.get(f"{API}/instances/999999", headers=h), 404, "InstanceNotFound")
    is_problem(client.get(f"{API}/programs/nope", headers=h), 404, "ProgramNotFound")
    is_problem(client.post(f"{API}/instances", json=start_body(), headers=h), 409,
               "DuplicateInstance")
    r = client.post(f"{API}/instances/{inst['id']}/events",
                    json=kickoff_body(evidence={}), headers=h)
    is_problem(r, 422, "EvidenceInvalid")
    assert {p["field"] for p in r.json()["problems"]} >= {"date", "venue", "chair"}
    is_problem(client.post(f"{API}/instances/{inst['id']}/events",
                           json=kickoff_body(trigger="close"), headers=h),
               422, "TriggerNotAllowed")
    is_problem(client.post(f"{API}/instances/{inst['id']}/events",
                           json=kickoff_body(role="nobody"), headers=h), 403, "UnknownRole")
    is_problem(client.post(f"{API}/instances", json={"program": 1}, headers=h), 400,
               "UsageError")
    is_problem(client.get(f"{API}/instances/abc", headers=h), 400, "UsageError")
    is_problem(client.get(f"{API}/instances?cursor=@@@", headers=h), 400, "UsageError")
    is_problem(client.get(f"{API}/nowhere", headers=h), 404, "NotFound")


def test_pagination(world: World, client: TestClient) -> None:
    """Lists come in pages: following next_cursor visits every item once, oldest first."""
    h = world.auth("udomrat")
    ids = [client.post(f"{API}/instances", json=start_body(allow_duplicate=True),
                       headers=h).json()["id"] for _ in range(5)]
    client.post(f"{API}/instances", json=start_body(area=BANGKOK), headers=world.auth("other"))
    for path, key in ((f"{API}/instances", "id"), (f"{API}/audit/events", "hash")):
        seen: list[Any] = []
        cursor = None
        who = world.auth("udomrat" if "instances" in path else "admin")
        while True:
            url = f"{path}?limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = client.get(url, headers=who).json()
            assert len(page["items"]) <= 2
            seen.extend(i[key] for i in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        if key == "id":
            assert seen == ids  # scoped: not the Bangkok one
        else:
            assert len(seen) >= 7
    is_problem(client.get(f"{API}/instances?limit=0", headers=h), 400, "UsageError")


def test_the_area_scope_follows_the_grant(world: World, client: TestClient) -> None:
    """An account sees the instances inside its grant's area (here province 16), not others."""
    client.post(f"{API}/instances", json=start_body(area=BANGKOK), headers=world.auth("other"))
    mine = client.get(f"{API}/instances?area={LOPBURI}", headers=world.auth("udomrat")).json()
    assert mine["items"] == []
    every = client.get(f"{API}/instances", headers=world.auth("admin")).json()
    assert [i["area"]["code"] for i in every["items"]] == [BANGKOK]


def test_a_grant_over_http_may_end(world: World, client: TestClient) -> None:
    """POST /grants takes `until` (BE or CE, as `actors grant --until`): the grant answers
    with its `expires_at`; a date that is not one is a 400 and grants nothing; revoking
    takes no `until`."""
    admin = world.auth("admin")
    r = client.post(f"{API}/grants", json={"actor": "other", "role": OFFICER, "area": "12",
                                          "until": "2599-12-31"}, headers=admin)
    assert r.status_code == 201, r.text
    assert (r.json()["expires_at"] or "").startswith("2056-12-31")
    before = client.get(f"{API}/grants?actor=other", headers=admin).json()["items"]
    r = client.post(f"{API}/grants", json={"actor": "other", "role": OFFICER, "area": "13",
                                          "until": "31/12/2599"}, headers=admin)
    is_problem(r, 400, "UsageError")
    assert client.get(f"{API}/grants?actor=other", headers=admin).json()["items"] == before
    r = client.request("DELETE", f"{API}/grants", headers=admin, json={
        "actor": "other", "role": OFFICER, "area": "12", "until": "2599-12-31"})
    assert r.status_code == 400
