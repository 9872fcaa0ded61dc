"""The accounts library (issue 11): accounts, passwords, API tokens, sessions, throttling and
the account event chain, on SQLite and PostgreSQL, with a fake clock (no test sleeps)."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import execute, sql_engine
from workflow import Engine
from workflow.accounts import Accounts, Throttle, csrf_matches, passwords
from workflow.accounts.credentials import TOKEN_PREFIX
from workflow.audit.accounts import account_event_hash
from workflow.errors import (
    AccountExists,
    AccountNotFound,
    NotAuthenticated,
    TextRefused,
    Throttled,
    TokenNotFound,
    UsageError,
    WorkflowError,
)
from workflow.storage.accounts import AccountEventRow

#: Cheap Argon2id parameters: the tests are about the rules, not the cost.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"
EVENTS_TABLE = "workflow_account_events"
TABLES = ("workflow_accounts", "workflow_tokens", "workflow_sessions",
          "workflow_login_failures", EVENTS_TABLE)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(engine: Engine, clock: Clock, **kwargs: Any) -> Accounts:
    return Accounts(engine.store, now=clock, hasher=CHEAP, **kwargs)


@pytest.fixture
def accounts(engine: Engine, clock: Clock) -> Iterator[Accounts]:
    yield make(engine, clock)


def dump(url: str) -> str:
    """Every row of the account tables as text (what someone with a copy of the database sees)."""
    eng = sql_engine(url)
    try:
        with eng.connect() as conn:
            return "\n".join(
                repr(tuple(row))
                for t in TABLES
                for row in conn.exec_driver_sql(f"SELECT * FROM {t}")
            )
    finally:
        eng.dispose()


def actions(accounts: Accounts) -> list[str]:
    return [e.action for e in accounts.events()]


# --------------------------------------------------------------------------- accounts


def test_add_list_get_disable_enable_and_passwd(accounts: Accounts, clock: Clock) -> None:
    """Accounts are added, listed by name, disabled (idempotently), enabled, given passwords."""
    udom = accounts.add("udom", PASSWORD, by="admin", admin=True, display_name="อุดม")
    accounts.add("anong", PASSWORD, by="admin")
    assert udom.admin and not udom.disabled and udom.display_name == "อุดม"
    assert udom.to_dict() == {"name": "udom", "display_name": "อุดม", "admin": True,
                              "disabled": False, "created_at": "2026-12-01T08:00:00.000000Z",
                              "language": "th"}
    assert [a.name for a in accounts.list()] == ["anong", "udom"]
    assert accounts.get("udom") == udom
    with pytest.raises(AccountNotFound):
        accounts.get("nobody")
    clock.advance(1)
    assert accounts.disable("anong", by="admin").disabled
    assert accounts.disable("anong", by="admin").disabled  # no second event
    assert not accounts.enable("anong", by="admin").disabled
    accounts.set_password("udom", "another long one", by="admin")
    with pytest.raises(NotAuthenticated):
        accounts.login("udom", PASSWORD, address="10.0.0.1")
    assert accounts.login("udom", "another long one", address="10.0.0.1").account.name == "udom"
    assert accounts.set_language("udom", "en").language == "en"
    with pytest.raises(UsageError):
        accounts.set_language("udom", "fr")
    assert actions(accounts) == ["user_add", "user_add", "user_disable", "user_enable",
                                 "user_passwd", "login_failed", "login"]
    assert accounts.verify() == []


def test_duplicate_name_is_account_exists_also_in_another_unicode_form(accounts: Accounts) -> None:
    """A taken name, even typed decomposed (NFD) or with spaces around it, is AccountExists."""
    accounts.add("อุดมรัตน์", PASSWORD, by="admin")
    for same in ("อุดมรัตน์", unicodedata.normalize("NFD", "อุดมรัตน์"), "  อุดมรัตน์ "):
        with pytest.raises(AccountExists) as caught:
            accounts.add(same, PASSWORD, by="admin")
        assert caught.value.exit_code == 5
    with pytest.raises(TextRefused):
        accounts.add("udom\u200b", PASSWORD, by="admin")
    assert len(accounts.list()) == 1


def test_password_too_short_is_refused_without_showing_it(accounts: Accounts) -> None:
    """A password under 8 characters is a UsageError that does not quote it; nothing is stored."""
    with pytest.raises(UsageError) as caught:
        accounts.add("udom", "s3cr3t!", by="admin")
    assert "s3cr3t!" not in str(caught.value) and "8" in str(caught.value)
    accounts.add("udom", PASSWORD, by="admin")
    with pytest.raises(UsageError):
        accounts.set_password("udom", "short", by="admin")
    assert actions(accounts) == ["user_add"]


# --------------------------------------------------------------------------- tokens


def test_token_create_authenticate_and_last_used(accounts: Accounts, clock: Clock) -> None:
    """A token is ≥256 bits, shown once, authenticates as its account and records its last use."""
    accounts.add("udom", PASSWORD, by="admin")
    new = accounts.create_token("udom", by="admin", label="reporting service")
    assert new.secret.startswith(TOKEN_PREFIX) and len(new.secret) >= len(TOKEN_PREFIX) + 43
    assert set(new.to_dict()) == {"id", "token", "expires_at"}
    assert new.secret not in repr(new)
    [listed] = accounts.tokens("udom")
    assert listed.last_used_at is None and "token" not in listed.to_dict()
    clock.advance(5)
    who = accounts.authenticate_token(new.secret)
    assert who.account.name == "udom" and who.via == f"token:{new.token.id}"
    assert who.session_csrf is None
    assert accounts.tokens()[0].last_used_at == "2026-12-01T08:00:05.000000Z"
    for bad in ("", "wft_", new.secret + "x", new.secret[:-1], "Bearer " + new.secret, None, 7):
        with pytest.raises(NotAuthenticated):
            accounts.authenticate_token(bad)  # type: ignore[arg-type]
    with pytest.raises(AccountNotFound):
        accounts.create_token("nobody", by="admin")
    with pytest.raises(AccountNotFound):
        accounts.tokens("nobody")


def test_token_expires_at_the_end_of_its_day_given_in_ce_or_be(
        accounts: Accounts, clock: Clock) -> None:
    """A token expiring 2026-12-02 (or BE 2569-12-02) works until that day ends (UTC), not after."""
    accounts.add("udom", PASSWORD, by="admin")
    ce = accounts.create_token("udom", by="admin", expires="2026-12-02")
    be = accounts.create_token("udom", by="admin", expires="2569-12-02")
    assert ce.token.expires_at == be.token.expires_at == "2026-12-02T23:59:59.999999Z"
    clock.now = dt.datetime(2026, 12, 2, 23, 59, 59, 999999, tzinfo=dt.UTC)
    accounts.authenticate_token(ce.secret)
    clock.advance(0.000001)
    for new in (ce, be):
        with pytest.raises(NotAuthenticated, match="expired"):
            accounts.authenticate_token(new.secret)
    with pytest.raises(UsageError, match="passed"):
        accounts.create_token("udom", by="admin", expires="2026-12-01")
    with pytest.raises(UsageError):
        accounts.create_token("udom", by="admin", expires="2026-02-30")


def test_revoked_token_is_refused_and_unknown_id_is_token_not_found(accounts: Accounts) -> None:
    """Revoking refuses the token from the next call on; revoking twice is quiet; no id: 404."""
    accounts.add("udom", PASSWORD, by="admin")
    new = accounts.create_token("udom", by="admin")
    accounts.authenticate_token(new.secret)
    revoked = accounts.revoke_token(new.token.id, by="admin")
    assert revoked.revoked_at is not None
    assert accounts.revoke_token(new.token.id, by="admin") == revoked
    with pytest.raises(NotAuthenticated, match="revoked"):
        accounts.authenticate_token(new.secret)
    with pytest.raises(TokenNotFound) as caught:
        accounts.revoke_token(999, by="admin")
    assert caught.value.exit_code == 3
    assert actions(accounts) == ["user_add", "token_create", "token_revoke"]


def test_disabled_account_token_session_and_login_are_refused(
        accounts: Accounts, clock: Clock) -> None:
    """Disabling refuses the account's token and session on the very next call, and its logins."""
    accounts.add("udom", PASSWORD, by="admin")
    new = accounts.create_token("udom", by="admin")
    session = accounts.login("udom", PASSWORD, address="10.0.0.1")
    accounts.authenticate_token(new.secret)
    accounts.session(session.secret)
    accounts.disable("udom", by="admin")
    with pytest.raises(NotAuthenticated):
        accounts.authenticate_token(new.secret)
    with pytest.raises(NotAuthenticated):
        accounts.session(session.secret)
    with pytest.raises(NotAuthenticated) as caught:
        accounts.login("udom", PASSWORD, address="10.0.0.1")
    assert str(caught.value) == "wrong name or password"
    accounts.enable("udom", by="admin")
    accounts.authenticate_token(new.secret)
    with pytest.raises(NotAuthenticated):  # its sessions ended with the disable
        accounts.session(session.secret)


# --------------------------------------------------------------------------- sessions


def test_session_idle_expiry(engine: Engine, clock: Clock) -> None:
    """A session used within the idle timeout lives on; one idle longer is refused and forgotten."""
    accounts = make(engine, clock, idle_timeout=600, absolute_timeout=3600)
    accounts.add("udom", PASSWORD, by="admin")
    session = accounts.login("udom", PASSWORD, address="10.0.0.1")
    for _ in range(3):
        clock.advance(590)
        assert accounts.session(session.secret).account.name == "udom"
    clock.advance(601)
    with pytest.raises(NotAuthenticated, match="expired"):
        accounts.session(session.secret)
    clock.advance(-601)  # the row is gone: no going back
    with pytest.raises(NotAuthenticated):
        accounts.session(session.secret)


def test_session_absolute_expiry(engine: Engine, clock: Clock) -> None:
    """A session in constant use still ends at its absolute expiry."""
    accounts = make(engine, clock, idle_timeout=600, absolute_timeout=3600)
    accounts.add("udom", PASSWORD, by="admin")
    session = accounts.login("udom", PASSWORD, address="10.0.0.1")
    assert session.expires_at == "2026-12-01T09:00:00.000000Z"
    for _ in range(7):
        clock.advance(500)
        accounts.session(session.secret)
    clock.advance(100)  # 3600 s after login
    with pytest.raises(NotAuthenticated):
        accounts.session(session.secret)


def test_each_login_makes_a_new_session_secret_and_logout_ends_one(accounts: Accounts) -> None:
    """Every login mints a new secret and CSRF token (no fixation); logout ends only its session."""
    accounts.add("udom", PASSWORD, by="admin")
    first = accounts.login("udom", PASSWORD, address="10.0.0.1")
    second = accounts.login("udom", PASSWORD, address="10.0.0.1")
    assert first.secret != second.secret and first.csrf != second.csrf
    assert first.secret not in repr(first) and first.csrf not in repr(first)
    who = accounts.session(second.secret)
    assert who.via == second.via and who.via.startswith("session:") and len(who.via) == 20
    assert csrf_matches(who.session_csrf, second.csrf)
    assert not csrf_matches(who.session_csrf, first.csrf)
    assert not csrf_matches(who.session_csrf, None)
    accounts.logout(first.secret)
    with pytest.raises(NotAuthenticated):
        accounts.session(first.secret)
    accounts.session(second.secret)
    accounts.logout(first.secret)  # unknown now: nothing happens
    accounts.logout("made-up")
    with pytest.raises(NotAuthenticated):
        accounts.session("made-up")  # a session id the client chose is never one
    assert actions(accounts) == ["user_add", "login", "login", "logout"]


def test_login_with_unknown_name_costs_a_verification(
        accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown name verifies the password against a dummy hash: the work of any login."""
    accounts.add("udom", PASSWORD, by="admin")
    calls: list[str] = []
    real = passwords.verify_password

    def counting(hasher: PasswordHasher, stored: str, password: object) -> bool:
        calls.append(stored)
        return real(hasher, stored, password)

    monkeypatch.setattr(passwords, "verify_password", counting)
    for name in ("nobody", "udom", "bad\u200bname"):
        with pytest.raises(NotAuthenticated) as caught:
            accounts.login(name, "wrong password!", address="10.0.0.1")
        assert str(caught.value) == "wrong name or password"
    assert len(calls) == 3 and calls[0] == calls[2] == passwords.dummy_hash(CHEAP) != calls[1]
    assert [e.subject for e in accounts.events()][1:] == ["", "udom", ""]


# --------------------------------------------------------------------------- throttling


def test_throttling_per_account_then_the_owner_logs_in_after_the_window(
        engine: Engine, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """3 failures in the window throttle the account, password unchecked; later it works."""
    accounts = make(engine, clock, throttle=Throttle(window=900, per_account=3, per_address=100))
    accounts.add("udom", PASSWORD, by="admin")
    for n in range(3):
        clock.advance(10)
        with pytest.raises(NotAuthenticated):
            accounts.login("udom", f"guess number {n}", address=f"10.0.0.{n}")
    checked: list[object] = []
    monkeypatch.setattr(passwords, "verify_password", lambda *a: checked.append(a) or True)
    clock.advance(100)
    for address in ("10.0.0.9", "10.0.0.10"):  # a brute force from anywhere
        with pytest.raises(Throttled) as caught:
            accounts.login("udom", PASSWORD, address=address)
        assert caught.value.retry_after == 900 - 100 - 20 and caught.value.exit_code == 4
    assert checked == []
    monkeypatch.undo()
    clock.advance(caught.value.retry_after)
    session = accounts.login("udom", PASSWORD, address="10.0.0.9")
    assert session.account.name == "udom"
    assert actions(accounts) == ["user_add", *["login_failed"] * 3, *["login_throttled"] * 2,
                                 "login"]
    assert accounts.events()[4].detail == {"address": "10.0.0.9", "retry_after": 780}


def test_throttling_per_address_spares_other_addresses(engine: Engine, clock: Clock) -> None:
    """Failures from one address across names throttle that address only, unknown names included."""
    accounts = make(engine, clock, throttle=Throttle(window=60, per_account=100, per_address=3))
    accounts.add("udom", PASSWORD, by="admin")
    for name in ("anong", "somchai", "udom"):
        with pytest.raises(NotAuthenticated):
            accounts.login(name, "wrong password", address="192.0.2.7")
    with pytest.raises(Throttled) as caught:
        accounts.login("udom", PASSWORD, address="192.0.2.7")
    assert caught.value.retry_after == 60
    assert accounts.login("udom", PASSWORD, address="192.0.2.8").account.name == "udom"
    clock.advance(61)
    assert accounts.login("udom", PASSWORD, address="192.0.2.7").account.name == "udom"


def test_throttle_counts_are_shared_by_every_accounts_object(engine: Engine, clock: Clock) -> None:
    """Counts live in the database: a second server process (another Accounts) sees them."""
    throttle = Throttle(window=900, per_account=2, per_address=100)
    one, two = make(engine, clock, throttle=throttle), make(engine, clock, throttle=throttle)
    one.add("udom", PASSWORD, by="admin")
    with pytest.raises(NotAuthenticated):
        one.login("udom", "wrong password", address="10.0.0.1")
    with pytest.raises(NotAuthenticated):
        two.login("udom", "wrong password", address="10.0.0.2")
    with pytest.raises(Throttled):
        one.login("udom", PASSWORD, address="10.0.0.3")


# --------------------------------------------------------------------------- no secrets


def test_no_secret_in_any_row_event_or_message(engine: Engine, accounts: Accounts) -> None:
    """No password, token or session secret is stored, recorded in an event or put in an error."""
    password, wrong = "ghp-very-secret-pass", "ghp-wrong-secret-pass"
    accounts.add("udom", password, by="admin")
    new = accounts.create_token("udom", by="admin", label="ci")
    session = accounts.login("udom", password, address="10.0.0.1")
    messages: list[str] = []
    for attempt in (lambda: accounts.login("udom", wrong, address="10.0.0.1"),
                    lambda: accounts.login(password, password, address="10.0.0.1"),
                    lambda: accounts.add("anong", "ghp-sh", by="admin"),
                    lambda: accounts.set_password("udom", "ghp-sh", by="admin"),
                    lambda: accounts.authenticate_token(new.secret + "x"),
                    lambda: accounts.session(session.secret + "x")):
        with pytest.raises(WorkflowError) as caught:
            attempt()
        messages.append(str(caught.value) + repr(caught.value.args))
    accounts.revoke_token(new.token.id, by="admin")
    with pytest.raises(NotAuthenticated) as caught:
        accounts.authenticate_token(new.secret)
    messages.append(str(caught.value))
    accounts.logout(session.secret)
    rows = dump(engine.url)
    events = repr([e.to_dict() for e in accounts.events()])
    assert "login_failed" in events and "token_revoke" in events
    for secret in (password, wrong, "ghp-sh", new.secret, new.secret[len(TOKEN_PREFIX):],
                   session.secret, session.csrf):
        assert secret not in rows or secret == session.csrf, secret
        assert secret not in events, secret
        assert all(secret not in m for m in messages), secret
    assert session.csrf not in events


# --------------------------------------------------------------------------- the chain


def _tamper(url: str, statement: str) -> None:
    """Change the account trail the way an intruder with the owner's SQL rights would."""
    if url.startswith("sqlite"):
        execute(url, f"DROP TRIGGER {EVENTS_TABLE}_no_update",
                f"DROP TRIGGER {EVENTS_TABLE}_no_delete", statement)
    else:
        execute(url, f"ALTER TABLE {EVENTS_TABLE} DISABLE TRIGGER {EVENTS_TABLE}_append_only",
                statement)


def test_account_events_are_append_only(engine: Engine, accounts: Accounts) -> None:
    """The database refuses UPDATE and DELETE of account events."""
    accounts.add("udom", PASSWORD, by="admin")
    for statement in (f"UPDATE {EVENTS_TABLE} SET by = 'x'", f"DELETE FROM {EVENTS_TABLE}"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            execute(engine.url, statement)
    assert accounts.verify() == []


@pytest.mark.parametrize("statement, reason", [
    (f"UPDATE {EVENTS_TABLE} SET detail = '{{}}', subject = 'anong' WHERE seq = 1",
     "record 1 was altered"),
    (f"DELETE FROM {EVENTS_TABLE} WHERE seq = 2", "jumps from 1 to 3"),
    (f"UPDATE {EVENTS_TABLE} SET action = 'user_enable' WHERE seq = 3", "record 3 was altered"),
])
def test_chain_tampering_is_found_by_verify(
        engine: Engine, accounts: Accounts, statement: str, reason: str) -> None:
    """An altered or removed account event is reported by verify, naming the first broken record."""
    accounts.add("udom", PASSWORD, by="admin", admin=True)
    accounts.create_token("udom", by="admin")
    accounts.disable("udom", by="admin")
    assert accounts.verify() == []
    _tamper(engine.url, statement)
    [problem] = accounts.verify()
    assert reason in problem.reason and problem.reason.startswith("accounts: ")


def test_removing_the_newest_event_is_found_against_a_head(
        engine: Engine, accounts: Accounts) -> None:
    """Cutting the chain's tail leaves a valid chain; the head a digest kept shows the cut."""
    accounts.add("udom", PASSWORD, by="admin")
    accounts.disable("udom", by="admin")
    head = accounts.head()
    assert head[0] == 2
    _tamper(engine.url, f"DELETE FROM {EVENTS_TABLE} WHERE seq = 2")
    assert accounts.verify() == []
    [problem] = accounts.verify(head)
    assert problem.seq == 2 and "missing or changed" in problem.reason


def test_the_account_hash_is_wa1_over_every_field() -> None:
    """The stored hash is SHA-256 of ["wa1", fields...] in the audit encoding; each field counts."""
    row = AccountEventRow(1, "user_add", "อุดม", '{"admin":true}', "root", "u",
                          "2026-12-01T08:00:00.000000Z", "0" * 64, "")
    digest = account_event_hash(row)
    import hashlib
    import json
    payload = json.dumps(["wa1", *row[:8]], separators=(",", ":"), ensure_ascii=False)
    assert digest == hashlib.sha256(payload.encode()).hexdigest()
    for n in range(8):
        changed = row._replace(**{row._fields[n]: 2 if n == 0 else row[n] + "x"})
        assert account_event_hash(changed) != digest


# --------------------------------------------------------------------------- schema


def test_init_upgrades_a_0005_database_to_0006(backend: str, clock: Clock) -> None:
    """`init` on a 0005 database adds the account tables, keeps its grants; accounts work."""
    from workflow.storage import migrations

    if backend.startswith("sqlite"):
        Path(backend.removeprefix("sqlite:///")).touch()
    db = sql_engine(backend)
    with db.connect() as conn:
        migrations.upgrade(conn, "0005")
        assert not sa.inspect(conn).has_table(EVENTS_TABLE)
    db.dispose()
    execute(backend, "INSERT INTO workflow_grants (actor, role, area_code, program, granted_by, "
                     "granted_at) VALUES ('udom', 'coordinator', '', '', 'root', "
                     "'2021-01-01T00:00:00.000000Z')")
    with Engine(backend) as e:
        assert e.init() == ("0005", "0006")
        assert e.init() == ("0006", "0006")
        accounts = Accounts(e.store, now=clock, hasher=CHEAP)
        accounts.add("udom", PASSWORD, by="admin")
        assert accounts.login("udom", PASSWORD, address="10.0.0.1").account.name == "udom"
        assert accounts.verify() == []
        assert [g.actor for g in e.grants()] == ["udom"]


def test_accounts_on_an_old_schema_ask_for_init(backend: str) -> None:
    """Before `init` has added the account tables, the library says to run `workflow init`."""
    from workflow.errors import SchemaOutOfDate
    from workflow.storage import migrations

    if backend.startswith("sqlite"):
        Path(backend.removeprefix("sqlite:///")).touch()
    db = sql_engine(backend)
    with db.connect() as conn:
        migrations.upgrade(conn, "0005")
    db.dispose()
    with Engine(backend) as e, pytest.raises(SchemaOutOfDate, match="workflow init"):
        Accounts(e.store, hasher=CHEAP).list()


# --------------------------------------------------------------------------- passwords


@settings(max_examples=40, deadline=None)
@given(password=st.text(min_size=8, max_size=40).filter(lambda p: "\x00" not in p),
       other=st.text(max_size=40))
def test_any_password_round_trips_and_any_other_fails(password: str, other: str) -> None:
    """Any acceptable password verifies against its hash (also as NFD); any other fails."""
    stored = passwords.hash_password(CHEAP, passwords.checked(password))
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(CHEAP, stored, password)
    assert passwords.verify_password(CHEAP, stored, unicodedata.normalize("NFD", password))
    if unicodedata.normalize("NFC", other) != unicodedata.normalize("NFC", password):
        assert not passwords.verify_password(CHEAP, stored, other)


def test_the_default_hasher_is_argon2id() -> None:
    """Without a test hasher, passwords are hashed with argon2-cffi's Argon2id defaults."""
    hasher = passwords.default_hasher()
    assert hasher.hash("a long password").startswith("$argon2id$")
    assert passwords.dummy_hash(hasher).startswith("$argon2id$")
