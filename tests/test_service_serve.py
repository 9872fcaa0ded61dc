"""`workflow serve` as a real subprocess on 127.0.0.1 (SQLite and PostgreSQL), driven by httpx:
accounts and tokens made by the CLI, a start and a fire, and no secret in any log line; and
`workflow backup`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import KICKOFF, LOPBURI, OFFICER
from service_helpers import cli, serving
from workflow import Engine

PASSWORD = "a long enough password"


@pytest.fixture
def served(engine: Engine, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(base URL, database URL, log file) of a `workflow serve --workers 2` on the engine's
    database."""
    log = tmp_path / "serve.log"
    with serving(engine.url, log, workers=2) as base:
        yield base, engine.url, log


def test_serve_start_and_fire_with_a_token(served: tuple[str, str, Path]) -> None:
    """The README's walk-through: an account and a token from the CLI, then start and fire
    over HTTP with If-Match and Idempotency-Key; no password, token or cookie is logged."""
    base, url, log = served
    r = cli(url, "users", "add", "udomrat", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    assert cli(url, "actors", "grant", "udomrat", OFFICER, "--area", "16").returncode == 0
    made = cli(url, "tokens", "create", "udomrat", "--label", "curl", "--json")
    assert made.returncode == 0, made.stderr
    import json

    token = json.loads(made.stdout)["token"]
    listed = cli(url, "tokens", "list", "--json")
    assert token not in listed.stdout and json.loads(listed.stdout)[0]["account"] == "udomrat"
    h = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=h, timeout=30) as c:
        inst = c.post("/api/v1/instances", json={"program": "leader-development",
                                                  "area": LOPBURI, "fiscal_year": 2564,
                                                  "role": OFFICER})
        assert inst.status_code == 201, inst.text
        iid = inst.json()["id"]
        etag = c.get(f"/api/v1/instances/{iid}").headers["etag"]
        body = {"trigger": "kickoff", "role": OFFICER, "evidence": KICKOFF}
        fired = c.post(f"/api/v1/instances/{iid}/events", json=body,
                       headers={"If-Match": etag, "Idempotency-Key": "kick-1"})
        assert fired.status_code == 201, fired.text
        again = c.post(f"/api/v1/instances/{iid}/events", json=body,
                       headers={"If-Match": etag, "Idempotency-Key": "kick-1"})
        assert again.json()["event"]["hash"] == fired.json()["event"]["hash"]
        stale = c.post(f"/api/v1/instances/{iid}/events", json=body,
                       headers={"If-Match": etag})
        assert stale.status_code == 412
        assert stale.headers["content-type"].startswith("application/problem+json")
        # a browser login too: the cookie must not reach the log either
        form = httpx.get(f"{base}/login")
        csrf = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        logged = httpx.post(f"{base}/login", cookies=form.cookies, data={
            "name": "udomrat", "password": PASSWORD, "csrf_token": csrf})
        assert logged.status_code == 303
        cookie = logged.cookies["workflow_session"]
        assert httpx.get(f"{base}/api/v1/me", cookies={"workflow_session": cookie}
                         ).json()["name"] == "udomrat"
    time.sleep(0.5)
    text = log.read_text()
    assert '"POST /api/v1/instances/' in text and "udomrat" in text
    for secret in (token, PASSWORD, cookie, csrf, token[4:20]):
        assert secret not in text


def test_cli_users_and_tokens(engine: Engine) -> None:
    """users add/list/disable/passwd and tokens create/list/revoke, passwords from stdin only."""
    url = engine.url
    assert cli(url, "users", "add", "ann", "--admin", "--display-name", "Ann",
               "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    assert cli(url, "users", "add", "ann", "--password-stdin",
               stdin=PASSWORD + "\n").returncode == 5
    assert cli(url, "users", "add", "bob", "--password-stdin", stdin="short\n").returncode != 0
    users = cli(url, "users", "list", "--json")
    import json

    assert [(u["name"], u["admin"]) for u in json.loads(users.stdout)] == [("ann", True)]
    assert cli(url, "users", "passwd", "ann", "--password-stdin",
               stdin="another long password\n").returncode == 0
    made = json.loads(cli(url, "tokens", "create", "ann", "--expires", "2999-12-31",
                          "--json").stdout)
    assert set(made) >= {"id", "token", "expires_at"}
    assert cli(url, "tokens", "revoke", str(made["id"])).returncode == 0
    assert json.loads(cli(url, "tokens", "list", "ann", "--json").stdout)[0]["revoked_at"]
    assert cli(url, "tokens", "revoke", "999").returncode == 3
    assert cli(url, "users", "disable", "ann").returncode == 0
    assert json.loads(cli(url, "users", "list", "--json").stdout)[0]["disabled"] is True


def test_backup(engine: Engine, tmp_path: Path, db_kind: str) -> None:
    """SQLite: a verified copy that never overwrites; PostgreSQL: use pg_dump (exit 2)."""
    target = tmp_path / "copy.db"
    r = cli(engine.url, "backup", str(target), "--json")
    if db_kind == "postgres":
        assert r.returncode == 2 and "pg_dump" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    assert out["ok"] is True and out["integrity"] == "ok" and out["verify"]["ok"] is True
    with Engine(f"sqlite:///{target}") as copy:
        assert copy.verify().ok
    again = cli(engine.url, "backup", str(target))
    assert again.returncode == 2 and "overwrite" in again.stderr
    assert not list(tmp_path.glob(".copy.db.partial-*"))
