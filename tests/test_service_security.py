"""The service's security rules in process: revoked, expired and disabled credentials, session
fixation, CSRF, login throttling, and that no request can name another actor."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service_helpers import API, PASSWORD, World, client_for, kickoff_body, make_world, start_body
from workflow import Engine
from workflow.service.auth import CSRF_HEADER, LOGIN_CSRF_COOKIE, SESSION_COOKIE


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


def login(client: TestClient, name: str = "udomrat", password: str = PASSWORD) -> Any:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    return client.post("/login", data={"name": name, "password": password,
                                       "csrf_token": token.group(1)})


def test_revoked_token_is_401(world: World, client: TestClient) -> None:
    """A revoked token stops working on the next request."""
    h = world.auth("udomrat")
    assert client.get(f"{API}/me", headers=h).status_code == 200
    world.accounts.revoke_token(world.token_ids["udomrat"], by="test")
    assert client.get(f"{API}/me", headers=h).status_code == 401


def test_expired_token_is_401(world: World, client: TestClient) -> None:
    """A token past its last day is refused."""
    new = world.accounts.create_token("udomrat", by="test", expires=world.now().date())
    h = {"Authorization": f"Bearer {new.secret}"}
    assert client.get(f"{API}/me", headers=h).status_code == 200
    world.offset = dt.timedelta(days=1)
    r = client.get(f"{API}/me", headers=h)
    assert r.status_code == 401 and r.json()["code"] == "NotAuthenticated"


def test_disabled_account_is_401_at_once(world: World, client: TestClient) -> None:
    """Disabling an account refuses its very next request, by token and by session."""
    assert login(client).status_code == 303
    assert client.get(f"{API}/me").status_code == 200
    h = world.auth("udomrat")
    world.accounts.disable("udomrat", by="test")
    assert client.get(f"{API}/me", headers=h).status_code == 401
    assert client.get(f"{API}/me").status_code == 401
    assert client.get("/").status_code == 303


def test_session_cookie_attributes_and_fixation(world: World, client: TestClient) -> None:
    """Login mints a new session: a cookie planted before is not kept; the cookie is HttpOnly
    and SameSite=Lax (Secure only over TLS)."""
    client.cookies.set(SESSION_COOKIE, "planted-by-an-attacker", domain="testserver.local")
    r = login(client)
    assert r.status_code == 303 and r.headers["location"] == "/"
    set_cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie"
                  and v.startswith(SESSION_COOKIE))
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie.replace("Lax", "lax")
    assert "Secure" not in set_cookie
    value = client.cookies.get(SESSION_COOKIE)
    assert value and value != "planted-by-an-attacker"
    home = client.get("/")
    assert home.status_code == 200 and "udomrat" in home.text


def test_secure_cookie_over_tls(world: World) -> None:
    """Over https the session cookie is Secure."""
    with client_for(world, base_url="https://testserver", follow_redirects=False) as c:
        r = login(c)
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie"
                  and v.startswith(SESSION_COOKIE))
        assert "Secure" in cookie


def test_csrf_is_required(world: World, client: TestClient, engine: Engine) -> None:
    """Session-cookie changes need the CSRF token (header for JSON, field for forms); a bearer
    token needs none; the login form needs its own."""
    r = client.post("/login", data={"name": "udomrat", "password": PASSWORD})
    assert r.status_code == 403 and client.cookies.get(SESSION_COOKIE) is None
    assert login(client).status_code == 303
    r = client.post(f"{API}/instances", json=start_body())
    assert r.status_code == 403 and r.json()["code"] == "PermissionDenied"
    csrf = client.get(f"{API}/me").json()["csrf_token"]
    r = client.post(f"{API}/instances", json=start_body(), headers={CSRF_HEADER: "wrong"})
    assert r.status_code == 403
    r = client.post(f"{API}/instances", json=start_body(), headers={CSRF_HEADER: csrf})
    assert r.status_code == 201
    assert r.json()["id"]
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/logout").status_code == 200  # a GET only shows the button
    assert client.get(f"{API}/me").status_code == 200
    r = client.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get(f"{API}/me").status_code == 401


def test_pages_redirect_to_login(client: TestClient) -> None:
    """Without a session the pages send the browser to /login (303); /login and static assets
    need nothing, and the docs page works offline (no external URL)."""
    for path in ("/", "/logout", "/api/v1/docs"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/login").status_code == 200
    assert client.get("/static/apidocs.js").status_code == 200
    assert LOGIN_CSRF_COOKIE in client.get("/login").headers["set-cookie"]


def test_docs_page_has_no_external_assets(world: World, client: TestClient) -> None:
    """The docs page and its script load nothing from another host."""
    login(client)
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    script = client.get("/static/apidocs.js").text
    for text in (page.text, script):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_login_throttling(world: World, client: TestClient) -> None:
    """Repeated wrong passwords get 429 with Retry-After; the real owner is also held back
    until the window passes (the library's Throttle)."""
    statuses = [login(client, password="wrong password!").status_code for _ in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    r = login(client, password="wrong password!")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert PASSWORD not in r.text


@pytest.mark.parametrize("how", ["body", "query", "header"])
def test_cannot_act_as_another(world: World, client: TestClient, how: str) -> None:
    """Naming an actor in the body, the query or a header is refused; the recorded actor is
    always the authenticated account."""
    h = world.auth("udomrat")
    body = start_body()
    url = f"{API}/instances"
    if how == "body":
        body["actor"] = "admin"
    elif how == "query":
        url += "?actor=admin"
    else:
        h = {**h, "X-Actor": "admin"}
    r = client.post(url, json=body, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "UsageError"
    inst = client.post(f"{API}/instances", json=start_body(),
                       headers=world.auth("udomrat")).json()
    fire = kickoff_body()
    if how == "body":
        fire["actor"] = "admin"
    r = client.post(f"{API}/instances/{inst['id']}/events" + ("?actor=admin" if how == "query"
                    else ""), json=fire, headers=h)
    assert r.status_code == 400
    assert {e.actor for e in world.engine.history(inst["id"])} == {"udomrat"}


def test_problem_shape_for_internal_errors(world: World, monkeypatch: Any,
                                           client: TestClient) -> None:
    """An unexpected error is a 500 problem that says nothing of its cause."""
    from workflow.service import calls

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(calls, "me", boom)
    r = client.get(f"{API}/me", headers=world.auth("udomrat"))
    assert r.status_code == 500 and r.json()["code"] == "InternalError"
    assert "secret detail" not in r.text


def test_oversized_or_unmeasured_bodies_are_refused_before_reading(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body declared larger than WORKFLOW_MAX_REQUEST_BYTES is 413 and a chunked one 411,
    as problems with the security headers, before any route reads it (nothing recorded);
    a body within the limit is served as usual."""
    from helpers import dump_tables

    monkeypatch.setenv("WORKFLOW_MAX_REQUEST_BYTES", "2000")
    with client_for(world) as c:
        me = world.auth("udomrat")
        before = dump_tables(world.engine.url)
        big = {**start_body(), "title": "ก" * 3000}
        r = c.post(f"{API}/instances", json=big, headers=me)
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
        assert "2000 bytes" in r.json()["detail"] and r.headers["X-Content-Type-Options"]
        r = c.post(f"{API}/instances", content=iter([b'{"program": ', b'"x"}']),
                   headers={**me, "Content-Type": "application/json"})
        assert r.status_code == 411, r.text
        r = c.post("/login", content=b"x" * 5000,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413
        assert dump_tables(world.engine.url) == before
        assert c.post(f"{API}/instances", json=start_body(), headers=me).status_code == 201
