"""The HTTP routes of issue 15 (CONTRACT §10): tick, hooks and the outbox, for admins only
(401 without credentials, 403 and a recorded denial for anyone else), with the JSON keys of
the CLI's --json; on both backends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers import LOPBURI, OFFICER
from service_helpers import API, World, client_for, make_world
from test_notify import _later, _with_due
from workflow import Engine

SECRET = "hook-secret-ไม่บอกใคร-42"
#: Nothing listens on port 1 of 127.0.0.1: a delivery there fails at once.
NOWHERE = "http://127.0.0.1:1/hook"
HOOK_KEYS = {"id", "url", "program", "trigger", "secret", "created_at"}
DELIVERY_KEYS = {"id", "hook", "event", "status", "attempts", "next_at", "last_error",
                 "created_at", "delivered_at"}


@pytest.fixture
def world(backend: str, tmp_path: Path) -> Iterator[World]:
    """The service's accounts, on an engine whose programs have due states (version 2 of each
    bundled program: due 2 days after the initial state is entered)."""
    Engine(backend).init()
    w = make_world(backend)
    first = w.engine
    defs, programs = _with_due(tmp_path)
    w.engine = Engine(backend, [defs], allow_override=[p for p, _, _ in programs])
    try:
        yield w
    finally:
        w.engine.close()
        first.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with client_for(world) as c:
        yield c


def _dead_delivery(world: World) -> dict[str, Any]:
    """A hook nobody answers, an event, one failed attempt: a dead delivery (its JSON)."""
    world.engine.notifications.add_hook(NOWHERE)
    world.engine.start("leader-development", area=LOPBURI, fiscal_year=2565, actor="udomrat",
                       role=OFFICER)
    stats = world.engine.notifications.deliver(once=True, max_attempts=1, timeout=2)
    assert stats.dead == 1
    return world.engine.notifications.outbox(dead=True)[0].to_dict()


def _operations(delivery: int, hook: int) -> list[tuple[str, str, dict[str, Any] | None, str]]:
    """(method, path, body, the action a denial records) of every route of this router."""
    return [
        ("POST", f"{API}/tick", {}, "tick"),
        ("GET", f"{API}/hooks", None, "list hooks"),
        ("POST", f"{API}/hooks", {"url": "https://example.org/h", "secret": SECRET}, "add hook"),
        ("DELETE", f"{API}/hooks/{hook}", None, "remove hook"),
        ("GET", f"{API}/outbox?dead=true", None, "list outbox"),
        ("POST", f"{API}/outbox/{delivery}/retry", None, "retry delivery"),
    ]


def _state(world: World) -> tuple[Any, ...]:
    """Everything these routes could change: hooks, outbox, events."""
    notes = world.engine.notifications
    return (notes.hooks(), notes.outbox(), len(world.engine.audit_log()))


def _is_problem(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["code"] == code, body


def test_every_route_needs_authentication(world: World, client: TestClient) -> None:
    """Without credentials each route is a 401 problem and changes nothing."""
    d = _dead_delivery(world)
    before = _state(world)
    for method, path, body, _ in _operations(d["id"], d["hook"]):
        _is_problem(client.request(method, path, json=body), 401, "NotAuthenticated")
    assert _state(world) == before


@pytest.mark.parametrize("who", ["udomrat", "aud"])
def test_non_admins_get_403_and_a_recorded_denial(world: World, client: TestClient,
                                                  who: str) -> None:
    """A non-admin gets 403 on every route, a denial (role admin) naming the action, no change."""
    d = _dead_delivery(world)
    before = _state(world)
    for method, path, body, action in _operations(d["id"], d["hook"]):
        count = len(world.engine.denials())
        r = client.request(method, path, json=body, headers=world.auth(who))
        _is_problem(r, 403, "PermissionDenied")
        denials = world.engine.denials()
        assert len(denials) == count + 1, path
        assert (denials[-1].actor, denials[-1].role, denials[-1].action) == (who, "admin", action)
        assert SECRET not in r.text
    assert _state(world) == before


def test_tick_over_http(world: World, client: TestClient) -> None:
    """POST /tick records each past-due entry once, with tick --json's keys; a bad now is 400."""
    inst = world.engine.start("leader-development", area=LOPBURI, fiscal_year=2565,
                              actor="udomrat", role=OFFICER)
    admin = world.auth("admin")
    for bad in ("yesterday", "0001-01-01T00:00:00+01:00"):
        r = client.post(f"{API}/tick", json={"now": bad}, headers=admin)
        _is_problem(r, 400, "UsageError")
    r = client.post(f"{API}/tick", json={"now": _later(5), "actor": "x"}, headers=admin)
    _is_problem(r, 400, "UsageError")
    assert len(world.engine.history(inst.id)) == 1
    r = client.post(f"{API}/tick", headers=admin)  # no body: the server's clock, not due yet
    assert r.status_code == 200, r.text
    assert r.json()["recorded"] == 0
    r = client.post(f"{API}/tick", json={"now": _later(5)}, headers=admin)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"now", "checked", "recorded", "overdue"}
    assert out["recorded"] == 1 and out["overdue"] == [
        {"instance": inst.id, "state": inst.state}]
    assert world.engine.history(inst.id)[-1].trigger == "overdue"
    assert client.post(f"{API}/tick", json={"now": _later(5)},
                       headers=admin).json()["recorded"] == 0


def test_hooks_over_http(world: World, client: TestClient,
                         caplog: pytest.LogCaptureFixture) -> None:
    """Hooks are added (201), paged, removed (then 404); the secret is never answered or logged."""
    admin = world.auth("admin")
    caplog.set_level(logging.DEBUG)
    r = client.post(f"{API}/hooks", headers=admin, json={
        "url": "https://example.org/events", "program": "leader-development",
        "trigger": "kickoff", "secret": SECRET})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert set(hook) == HOOK_KEYS
    assert (hook["url"], hook["program"], hook["trigger"], hook["secret"]) == (
        "https://example.org/events", "leader-development", "kickoff", True)
    assert SECRET not in r.text
    r = client.post(f"{API}/hooks", headers=admin, json={"url": "mailto:office@example.org"})
    assert r.status_code == 201 and r.json()["secret"] is False
    page = client.get(f"{API}/hooks", headers=admin)
    assert page.status_code == 200 and SECRET not in page.text
    assert [h["id"] for h in page.json()["items"]] == [hook["id"], r.json()["id"]]
    first = client.get(f"{API}/hooks?limit=1", headers=admin).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = client.get(f"{API}/hooks?limit=1&cursor={first['next_cursor']}",
                        headers=admin).json()
    assert second["items"][0]["id"] == r.json()["id"] and second["next_cursor"] is None
    r = client.delete(f"{API}/hooks/{hook['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["id"] == hook["id"] and SECRET not in r.text
    assert [h.id for h in world.engine.notifications.hooks()] == [hook["id"] + 1]
    _is_problem(client.delete(f"{API}/hooks/{hook['id']}", headers=admin), 404, "NotFound")
    _is_problem(client.delete(f"{API}/hooks/999999", headers=admin), 404, "NotFound")
    assert not any(SECRET in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"url": "ftp://example.org/x"}, 400, "UsageError"),
    ({"url": "https://example.org/a b"}, 400, "UsageError"),
    ({"url": "http://[::1/h"}, 400, "UsageError"),
    ({"url": "http://example.org:port/h"}, 400, "UsageError"),
    ({"url": "https://example.org/\x00"}, 400, "TextRefused"),
    ({"url": "https://example.org/h", "secret": SECRET + "\x00"}, 400, "TextRefused"),
    ({"url": "https://example.org/h", "secret": 42}, 400, "UsageError"),
    ({"url": "https://example.org/h", "trigger": "t" * 65}, 400, "TextRefused"),
    ({"url": "https://example.org/h", "trigger": "kick\u200boff"}, 400, "TextRefused"),
    ({"url": "https://example.org/h", "actor": "admin"}, 400, "UsageError"),
    ({"program": "leader-development"}, 400, "UsageError"),
    ({"url": "https://example.org/h", "program": "no-such-program"}, 404, "ProgramNotFound"),
])
def test_bad_hook_input_is_a_problem_and_adds_nothing(
        world: World, client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    """A refused hook is a 400 problem (404: unknown program), adds nothing, quotes no secret."""
    r = client.post(f"{API}/hooks", json=body, headers=world.auth("admin"))
    _is_problem(r, status, code)
    assert SECRET not in r.text
    assert world.engine.notifications.hooks() == []


def test_outbox_over_http(world: World, client: TestClient) -> None:
    """The outbox pages with the CLI's keys; retry re-queues a dead delivery; unknown id: 404."""
    d = _dead_delivery(world)
    admin = world.auth("admin")
    dead = client.get(f"{API}/outbox?dead=true", headers=admin)
    assert dead.status_code == 200, dead.text
    assert [set(x) for x in dead.json()["items"]] == [DELIVERY_KEYS]
    assert dead.json()["items"][0]["status"] == "dead" and dead.json()["next_cursor"] is None
    world.engine.start("leader-development", area="160101", fiscal_year=2565,
                       actor="udomrat", role=OFFICER)  # a second, pending delivery
    page = client.get(f"{API}/outbox?limit=1", headers=admin).json()
    assert [x["id"] for x in page["items"]] == [d["id"]] and page["next_cursor"]
    rest = client.get(f"{API}/outbox?limit=1&cursor={page['next_cursor']}",
                      headers=admin).json()
    assert [x["status"] for x in rest["items"]] == ["pending"] and rest["next_cursor"] is None
    _is_problem(client.get(f"{API}/outbox?cursor=nonsense", headers=admin), 400, "UsageError")
    r = client.post(f"{API}/outbox/{d['id']}/retry", headers=admin)
    assert r.status_code == 200, r.text
    assert set(r.json()) == DELIVERY_KEYS
    assert (r.json()["status"], r.json()["attempts"]) == ("pending", 0)
    assert client.get(f"{API}/outbox?dead=true", headers=admin).json()["items"] == []
    _is_problem(client.post(f"{API}/outbox/999999/retry", headers=admin), 404, "NotFound")
    _is_problem(client.post(f"{API}/outbox/0/retry", headers=admin), 400, "UsageError")
    world.engine.store.run(lambda conn: conn.exec_driver_sql(
        "UPDATE workflow_outbox SET status = 'delivered'"), write=True)
    _is_problem(client.post(f"{API}/outbox/{d['id']}/retry", headers=admin), 404, "NotFound")


def test_the_openapi_document_describes_the_routes(world: World, client: TestClient) -> None:
    """The OpenAPI document has each route, its 401/403 problems and its response schema."""
    spec = client.get(f"{API}/openapi.json", headers=world.auth("admin")).json()
    for method, path in [("post", "/tick"), ("get", "/hooks"), ("post", "/hooks"),
                         ("delete", "/hooks/{hook}"), ("get", "/outbox"),
                         ("post", "/outbox/{delivery}/retry")]:
        operation = spec["paths"][API + path][method]
        assert {"401", "403"} <= set(operation["responses"]), path
        ok = next(s for s in operation["responses"] if s.startswith("2"))
        assert "schema" in operation["responses"][ok]["content"]["application/json"], path
    schemas = spec["components"]["schemas"]
    assert "secret" in schemas["HookBody"]["properties"]
    assert schemas["HookOut"]["properties"]["secret"]["type"] == "boolean"
