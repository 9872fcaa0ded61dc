"""``Accounts``: accounts, API tokens, browser sessions and login throttling on a Store.

Each change runs in one write transaction with the account event it records (``wa1`` chain,
:mod:`workflow.audit.accounts`), taken under the chain's lock so the chain has one order.
Argon2 work (hashing, verifying) is done outside any transaction: a login never holds the
database's write lock while it spends ~50 ms on a hash.

Login, in order: the failure counts for the name and the address within the window are read
(in the database, so every server process sees the same counts); over a limit, the attempt is
recorded as ``login_throttled`` and refused with :class:`Throttled` without looking at the
password. Otherwise the password is verified, against a dummy hash when the name is unknown
(so an unknown name costs what a known one does), then the outcome is written: a new session
(a new secret every login: no fixation) and ``login``, or failure rows and ``login_failed``.
"""

from __future__ import annotations

import builtins
import datetime as dt
import math
from collections.abc import Callable
from typing import Any, TypeVar

from argon2 import PasswordHasher

from workflow.accounts import credentials as cred
from workflow.accounts import passwords
from workflow.accounts.model import (
    LANGUAGES,
    Account,
    AccountEvent,
    NewToken,
    Principal,
    Session,
    Throttle,
    Token,
)
from workflow.audit import accounts as audit
from workflow.audit.chain import GENESIS, canonical_json
from workflow.errors import (
    AccountExists,
    AccountNotFound,
    ClockWentBack,
    NotAuthenticated,
    TextRefused,
    Throttled,
    TokenNotFound,
    UsageError,
)
from workflow.records import VerifyProblem
from workflow.runtime import text as rules
from workflow.runtime.evidence import parse_date
from workflow.storage import accounts as q
from workflow.storage.store import Store, os_user

T = TypeVar("T")
Clock = Callable[[], dt.datetime]

#: Display names and token labels (free text).
DISPLAY_MAX = 200
#: How a client address is kept (an IP address, or what the proxy said).
ADDRESS_MAX = 200
#: Last use of a token / session is written at most this often (seconds): a read per request
#: stays a read.
TOUCH_EVERY = 60.0

_BAD_LOGIN = "wrong name or password"


def stamp(moment: dt.datetime) -> str:
    """A time as stored (``now_utc`` format): ISO 8601 UTC with microseconds and ``Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(value: object, what: str = "account name") -> str:
    """An account name in the one canonical form of actors (``workflow.runtime.text``)."""
    return rules.identifier(value, what, rules.NAME_MAX)


def _account(row: q.AccountRow) -> Account:
    return Account(
        name=row.name,
        display_name=row.display_name,
        admin=row.admin,
        disabled=row.disabled,
        created_at=row.created_at,
        language=row.language,
    )


def _token(row: q.TokenRow) -> Token:
    return Token(
        id=row.id,
        account=row.account,
        label=row.label,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _event(row: q.AccountEventRow) -> AccountEvent:
    return AccountEvent(
        seq=row.seq,
        action=row.action,
        subject=row.subject,
        detail=AccountEvent.detail_of(row.detail),
        by=row.by,
        os_user=row.os_user,
        at=row.at,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def expiry_of(expires: dt.date | str) -> str:
    """The stored expiry of a token valid through ``expires`` (a date, or ``YYYY-MM-DD`` CE or
    BE): the last microsecond of that day, UTC."""
    try:
        day = parse_date(expires)
    except ValueError as e:
        raise UsageError(f"expiry date: {e}") from None
    return f"{day.isoformat()}T23:59:59.999999Z"


class Accounts:
    """Accounts, tokens, sessions and login throttling on ``store`` (see the module doc).

    ``now`` (a clock returning an aware UTC datetime) and ``hasher`` (an argon2
    ``PasswordHasher``) are there for tests: a fake clock instead of sleeping, cheap Argon2
    parameters instead of 64 MiB per hash.
    """

    def __init__(
        self,
        store: Store,
        *,
        idle_timeout: float = 1800,
        absolute_timeout: float = 43200,
        throttle: Throttle | None = None,
        now: Clock | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        if not (0 < idle_timeout <= absolute_timeout):
            raise UsageError(
                "session timeouts: the idle timeout must be more than 0 and at most the "
                "absolute timeout"
            )
        self.store = store
        self.idle_timeout = float(idle_timeout)
        self.absolute_timeout = float(absolute_timeout)
        self.throttle = throttle if throttle is not None else Throttle()
        self._clock: Clock = now or _utcnow
        self.hasher = hasher or passwords.default_hasher()
        self._os_user = os_user()
        self._touch = min(TOUCH_EVERY, self.idle_timeout / 10)

    # ------------------------------------------------------------------ helpers

    def _now(self) -> dt.datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment

    def _read(self, work: Callable[[Any], T]) -> T:
        return self.store.run(work)

    def _write(self, work: Callable[[Any], T]) -> T:
        return self.store.run(work, write=True)

    def _record(
        self, conn: Any, action: str, subject: str, detail: dict[str, Any], by: str
    ) -> str:
        """Append the next account event (taking the chain's lock); return its time, read
        now that the chain is locked, so that times follow the chain's order."""
        head = q.lock_account_chain(conn)
        at = stamp(self._now())
        if head is not None and at < head.at:
            raise ClockWentBack("last account event", head.at, at)
        row = q.AccountEventRow(
            seq=head.seq + 1 if head else 1,
            action=action,
            subject=subject,
            detail=canonical_json(detail),
            by=by,
            os_user=self._os_user,
            at=at,
            prev_hash=head.hash if head else GENESIS,
            hash="",
        )
        q.insert_account_event(conn, row._replace(hash=audit.account_event_hash(row)))
        return at

    @staticmethod
    def _found(conn: Any, name: str) -> q.AccountRow:
        row = q.find_account(conn, name)
        if row is None:
            raise AccountNotFound(name)
        return row

    # ------------------------------------------------------------------ accounts

    def add(
        self,
        name: str,
        password: str,
        *,
        by: str,
        admin: bool = False,
        display_name: str | None = None,
    ) -> Account:
        """A new account (AccountExists if the name is taken); the password is hashed with
        Argon2id and never kept."""
        name = _name(name)
        by = _name(by, "by")
        display = rules.free_text(display_name, "display name", DISPLAY_MAX)
        secret = passwords.checked(password)
        hashed = passwords.hash_password(self.hasher, secret)

        def work(conn: Any) -> q.AccountRow:
            q.lock_account_chain(conn)  # two adds of one name: the second sees the first
            if q.find_account(conn, name) is not None:
                raise AccountExists(name)
            at = self._record(
                conn, "user_add", name, {"admin": bool(admin), "display_name": display}, by
            )
            values = {
                "name": name,
                "display_name": display,
                "password_hash": hashed,
                "admin": bool(admin),
                "disabled": False,
                "language": "th",
                "created_at": at,
                "updated_at": at,
            }
            q.insert_account(conn, values)
            return self._found(conn, name)

        return _account(self._write(work))

    def list(self) -> builtins.list[Account]:
        """Every account, by name."""
        return [_account(r) for r in self._read(q.all_accounts)]

    def get(self, name: str) -> Account:
        name = _name(name)
        return _account(self._read(lambda conn: self._found(conn, name)))

    def disable(self, name: str, *, by: str) -> Account:
        """The account can no longer log in; its sessions end now, its tokens are refused
        from the next request on. Disabling a disabled account changes nothing."""
        return self._set_disabled(name, True, by)

    def enable(self, name: str, *, by: str) -> Account:
        """Undo :meth:`disable` (its old sessions stay ended; its tokens work again)."""
        return self._set_disabled(name, False, by)

    def _set_disabled(self, name: str, disabled: bool, by: str) -> Account:
        name = _name(name)
        by = _name(by, "by")

        def work(conn: Any) -> q.AccountRow:
            q.lock_account_chain(conn)
            row = self._found(conn, name)
            if row.disabled == disabled:
                return row
            action = "user_disable" if disabled else "user_enable"
            at = self._record(conn, action, name, {}, by)
            q.update_account(conn, name, {"disabled": disabled, "updated_at": at})
            if disabled:
                q.delete_sessions_of(conn, name)
            return self._found(conn, name)

        return _account(self._write(work))

    def set_password(self, name: str, password: str, *, by: str) -> None:
        """A new password; the account's sessions end (its tokens stay valid)."""
        name = _name(name)
        by = _name(by, "by")
        hashed = passwords.hash_password(self.hasher, passwords.checked(password))

        def work(conn: Any) -> None:
            q.lock_account_chain(conn)
            self._found(conn, name)
            at = self._record(conn, "user_passwd", name, {}, by)
            q.update_account(conn, name, {"password_hash": hashed, "updated_at": at})
            q.delete_sessions_of(conn, name)
            q.clear_failures(conn, "account", cred.name_key(name))

        self._write(work)

    def set_language(self, name: str, language: str) -> Account:
        """The language of the web pages for this account: ``th`` or ``en`` (not audited)."""
        name = _name(name)
        if language not in LANGUAGES:
            raise UsageError(f"language must be one of {', '.join(LANGUAGES)}")

        def work(conn: Any) -> q.AccountRow:
            self._found(conn, name)
            q.update_account(conn, name, {"language": language})
            return self._found(conn, name)

        return _account(self._write(work))

    # ------------------------------------------------------------------ tokens

    def create_token(
        self,
        name: str,
        *,
        by: str,
        label: str | None = None,
        expires: dt.date | str | None = None,
    ) -> NewToken:
        """A new API token for the account, valid through the end (UTC) of ``expires`` if
        given; its secret is in the result only (the database keeps its SHA-256)."""
        name = _name(name)
        by = _name(by, "by")
        label = rules.free_text(label, "label", DISPLAY_MAX)
        expires_at = expiry_of(expires) if expires is not None else None
        if expires_at is not None and expires_at < stamp(self._now()):
            raise UsageError(f"the expiry date {expires_at[:10]} has passed already")
        secret = cred.new_token_secret()

        def work(conn: Any) -> q.TokenRow:
            q.lock_account_chain(conn)
            self._found(conn, name)
            # The id is known once the row is in; the event (same transaction) names it.
            created = stamp(self._now())
            token_id = q.insert_token(
                conn,
                {
                    "account": name,
                    "token_hash": cred.digest(secret),
                    "label": label,
                    "created_at": created,
                    "expires_at": expires_at,
                    "last_used_at": None,
                    "revoked_at": None,
                },
            )
            at = self._record(
                conn,
                "token_create",
                name,
                {"token_id": token_id, "label": label, "expires_at": expires_at},
                by,
            )
            if at != created:
                q.update_token(conn, token_id, {"created_at": at})
            row = q.find_token(conn, token_id)
            assert row is not None
            return row

        return NewToken(token=_token(self._write(work)), secret=secret)

    def tokens(self, name: str | None = None) -> builtins.list[Token]:
        """The tokens (of one account, if named), by id: never their secrets."""
        account = _name(name) if name is not None else None

        def work(conn: Any) -> builtins.list[q.TokenRow]:
            if account is not None:
                self._found(conn, account)
            return q.list_tokens(conn, account)

        return [_token(r) for r in self._read(work)]

    def revoke_token(self, token_id: int, *, by: str) -> Token:
        """Withdraw a token (TokenNotFound if there is none); revoking twice changes nothing."""
        if type(token_id) is not int:
            raise UsageError(f"a token id is a number, not {token_id!r}")
        by = _name(by, "by")

        def work(conn: Any) -> q.TokenRow:
            q.lock_account_chain(conn)
            row = q.find_token(conn, token_id)
            if row is None:
                raise TokenNotFound(token_id)
            if row.revoked_at is not None:
                return row
            at = self._record(conn, "token_revoke", row.account, {"token_id": token_id}, by)
            q.update_token(conn, token_id, {"revoked_at": at})
            return row._replace(revoked_at=at)

        return _token(self._write(work))

    def authenticate_token(self, secret: str) -> Principal:
        """The principal of a bearer token, checked on every call: NotAuthenticated when the
        token is unknown, revoked or expired, or its account disabled."""
        if not cred.plausible(secret, cred.TOKEN_PREFIX):
            raise NotAuthenticated("unknown API token")
        token_hash = cred.digest(secret)
        found = self._read(lambda conn: q.token_by_hash(conn, token_hash))
        if found is None:
            raise NotAuthenticated("unknown API token")
        token, account = found
        now = self._now()
        at = stamp(now)
        if token.revoked_at is not None:
            raise NotAuthenticated(f"API token {token.id} was revoked")
        if token.expires_at is not None and at > token.expires_at:
            raise NotAuthenticated(f"API token {token.id} expired at {token.expires_at}")
        if account.disabled:
            raise NotAuthenticated(f"account {account.name!r} is disabled")
        last = token.last_used_at
        if last is None or (now - parse_stamp(last)).total_seconds() >= self._touch:
            self._write(lambda conn: q.update_token(conn, token.id, {"last_used_at": at}))
        return Principal(_account(account), cred.token_via(token.id), None)

    # ------------------------------------------------------------------ sessions

    def login(self, name: str, password: str, *, address: str) -> Session:
        """A new session for the account if the password is right (NotAuthenticated with
        one message whatever was wrong), unless throttled (Throttled, password unchecked)."""
        address = _address(address)
        try:
            canonical: str | None = _name(name)
        except TextRefused:
            canonical = None
        name_key = cred.name_key(canonical if canonical is not None else repr(name))
        address_key = cred.address_key(address)
        throttle = self.throttle
        now = self._now()
        since = stamp(now - dt.timedelta(seconds=throttle.window))

        def look(conn: Any) -> tuple[list[str], list[str], q.AccountRow | None]:
            return (
                q.failures_since(conn, "account", name_key, since),
                q.failures_since(conn, "address", address_key, since),
                q.find_account(conn, canonical) if canonical is not None else None,
            )

        by_name, by_address, row = self._read(look)
        subject = row.name if row is not None else ""
        wait = max(
            _retry_after(now, by_name, throttle.per_account, throttle.window),
            _retry_after(now, by_address, throttle.per_address, throttle.window),
        )
        if wait:
            self._write(
                lambda conn: self._record(
                    conn,
                    "login_throttled",
                    subject,
                    {"address": address, "retry_after": wait},
                    subject,
                )
            )
            raise Throttled(wait)

        stored = row.password_hash if row is not None else passwords.dummy_hash(self.hasher)
        right = passwords.verify_password(self.hasher, stored, password)
        if row is None or not right or row.disabled:
            reason = (
                "unknown account"
                if row is None
                else ("wrong password" if not right else "account disabled")
            )

            def failed(conn: Any) -> None:
                at = self._record(
                    conn, "login_failed", subject, {"address": address, "reason": reason}, subject
                )
                q.forget_failures_before(conn, since)
                q.insert_failures(
                    conn,
                    [
                        {"scope": "account", "key": name_key, "at": at},
                        {"scope": "address", "key": address_key, "at": at},
                    ],
                )

            self._write(failed)
            raise NotAuthenticated(_BAD_LOGIN)

        secret, csrf = cred.new_session_secret(), cred.new_csrf()
        session_hash = cred.digest(secret)
        via = cred.session_via(session_hash)
        rehash = (
            passwords.hash_password(self.hasher, passwords.checked(password))
            if passwords.needs_rehash(self.hasher, row.password_hash)
            else None
        )
        account_name = row.name

        def opened(conn: Any) -> tuple[q.AccountRow, str]:
            q.lock_account_chain(conn)
            current = q.find_account(conn, account_name)
            if current is None or current.disabled or current.password_hash != stored:
                # Disabled or given a new password while this login was checking.
                raise NotAuthenticated(_BAD_LOGIN)
            at = self._record(
                conn, "login", account_name, {"address": address, "session": via}, account_name
            )
            moment = parse_stamp(at)
            idle_since = stamp(moment - dt.timedelta(seconds=self.idle_timeout))
            q.delete_stale_sessions(conn, at, idle_since)
            expires = stamp(moment + dt.timedelta(seconds=self.absolute_timeout))
            q.insert_session(
                conn,
                {
                    "session_hash": session_hash,
                    "account": account_name,
                    "csrf": csrf,
                    "address": address,
                    "created_at": at,
                    "last_seen_at": at,
                    "expires_at": expires,
                },
            )
            q.clear_failures(conn, "account", name_key)
            if rehash is not None:
                q.update_account(conn, account_name, {"password_hash": rehash})
            return current, at

        current, at = self._write(opened)
        expires_at = stamp(parse_stamp(at) + dt.timedelta(seconds=self.absolute_timeout))
        return Session(
            secret=secret,
            account=_account(current),
            created_at=at,
            expires_at=expires_at,
            csrf=csrf,
            via=via,
        )

    def session(self, secret: str) -> Principal:
        """The principal of a session cookie: NotAuthenticated when unknown, idle longer than
        the idle timeout, past its absolute expiry, or its account disabled."""
        if not cred.plausible(secret):
            raise NotAuthenticated("no session; log in")
        session_hash = cred.digest(secret)
        found = self._read(lambda conn: q.session_by_hash(conn, session_hash))
        if found is None:
            raise NotAuthenticated("no session (it ended or expired); log in")
        row, account = found
        now = self._now()
        at = stamp(now)
        idle = (now - parse_stamp(row.last_seen_at)).total_seconds()
        if account.disabled or at >= row.expires_at or idle > self.idle_timeout:
            self._write(lambda conn: q.delete_session(conn, row.id))
            if account.disabled:
                raise NotAuthenticated(f"account {account.name!r} is disabled")
            raise NotAuthenticated("the session expired; log in again")
        if idle >= self._touch:
            self._write(lambda conn: q.touch_session(conn, row.id, at))
        return Principal(_account(account), cred.session_via(session_hash), row.csrf)

    def logout(self, secret: str) -> None:
        """End the session of this cookie (an unknown one: nothing to do)."""
        if not cred.plausible(secret):
            return
        session_hash = cred.digest(secret)

        def work(conn: Any) -> None:
            q.lock_account_chain(conn)
            found = q.session_by_hash(conn, session_hash)
            if found is None:
                return
            row, _ = found
            q.delete_session(conn, row.id)
            self._record(
                conn, "logout", row.account, {"session": cred.session_via(session_hash)},
                row.account,
            )

        self._write(work)

    # ------------------------------------------------------------------ the trail

    def events(self) -> builtins.list[AccountEvent]:
        """The account event chain, oldest first."""
        return [_event(r) for r in self._read(q.account_events)]

    def verify(self, head: tuple[int, str] | None = None) -> builtins.list[VerifyProblem]:
        """The account chain's first broken link, if any (empty: intact); with ``head``
        (seq, hash) from a digest, also whether that record is still there unchanged."""
        return audit.chain_problems(self._read(q.account_events), head)

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the chain's last record ((0, GENESIS) when empty): for a digest."""
        row = self._read(q.account_head)
        return (row.seq, row.hash) if row is not None else (0, GENESIS)


def _address(value: object) -> str:
    try:
        text = rules.free_text(value, "address", ADDRESS_MAX)
    except TextRefused:
        return "(unreadable)"
    return text or "(unknown)"


def _retry_after(now: dt.datetime, failures: list[str], limit: int, window: float) -> int:
    """Whole seconds until fewer than ``limit`` of ``failures`` (times, oldest first) are
    within ``window`` of the clock; 0 when they are fewer already."""
    if len(failures) < limit:
        return 0
    leaving = parse_stamp(failures[len(failures) - limit])
    left = (leaving + dt.timedelta(seconds=window) - now).total_seconds()
    return max(1, math.ceil(left))


__all__ = ["Accounts", "expiry_of", "parse_stamp", "stamp"]
