"""Shared set-up of the service tests: accounts, grants and tokens on a fresh database, an
in-process client of the app, and a real `workflow serve` subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from helpers import KICKOFF, LOPBURI, OFFICER
from workflow import Engine
from workflow.accounts import Accounts
from workflow.service.app import create_app

PASSWORD = "correct horse battery"
API = "/api/v1"


@dataclass
class World:
    """Accounts on one database: ``admin`` (admin flag, no grants), ``udomrat`` (officer in
    Lopburi, province 16), ``other`` (officer in Bangkok, 10), ``aud`` (auditor in 16)."""

    engine: Engine
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, int] = field(default_factory=dict)
    #: Added to the real time by the accounts' clock (tests move time instead of sleeping).
    offset: dt.timedelta = dt.timedelta(0)
    accounts: Any = None

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def make_world(url: str) -> World:
    engine = Engine(url)  # the stored grants decide, as in production
    world = World(engine)
    # Cheap Argon2 parameters: the tests are about the service, not the hash's cost.
    world.accounts = acc = Accounts(
        engine.store, now=world.now,
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    acc.add("admin", PASSWORD, by="test", admin=True, display_name="Admin")
    for name in ("udomrat", "other", "aud"):
        acc.add(name, PASSWORD, by="test")
    engine.grant("udomrat", OFFICER, area="16", by="test")
    engine.grant("other", OFFICER, area="10", by="test")
    engine.grant("aud", "auditor", area="16", by="test")
    for name in ("admin", "udomrat", "other", "aud"):
        new = acc.create_token(name, by="test", label="tests")
        world.tokens[name] = new.secret
        world.token_ids[name] = new.token.id
    return world


@contextmanager
def client_for(world: World, **kwargs: Any) -> Iterator[TestClient]:
    app = create_app(world.engine, accounts=world.accounts)
    with TestClient(app, raise_server_exceptions=False, **kwargs) as c:
        yield c


def start_body(**over: Any) -> dict[str, Any]:
    body = {"program": "leader-development", "area": LOPBURI, "fiscal_year": 2564,
            "role": OFFICER}
    body.update(over)
    return body


def kickoff_body(**over: Any) -> dict[str, Any]:
    body = {"trigger": "kickoff", "role": OFFICER, "evidence": dict(KICKOFF)}
    body.update(over)
    return body


# --------------------------------------------------------------------------- a real server

#: The console script, as installed (`workflow ...`).
WORKFLOW = [sys.executable, "-c", "from workflow.cli.main import main; main()"]


def cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WORKFLOW, "--db", url, *args],
                          input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WORKFLOW_DB": url})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(url: str, log: Path, *, workers: int = 2, args: tuple[str, ...] = (),
            startup: float = 60, env: dict[str, str] | None = None) -> Iterator[str]:
    """The base URL of a `workflow serve --workers N` subprocess on ``url``, listening on a
    free port of 127.0.0.1 and writing its log to ``log``; stopped (SIGTERM, then SIGKILL)
    when the block ends."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*WORKFLOW, "--db", url, *args, "serve", "--port", str(port), "--workers",
             str(workers)], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup
        while True:
            try:
                if httpx.get(f"{base}{API}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
