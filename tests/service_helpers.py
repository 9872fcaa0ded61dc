"""Shared set-up of the service tests: accounts, grants and tokens on a fresh database, and an
in-process client of the app."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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
