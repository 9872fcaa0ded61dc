"""The frozen, typed objects of the accounts library, each with ``to_dict()`` giving the keys
of CONTRACT §7 (never a password hash, never a token or session secret unless it is the one
moment it is shown: ``NewToken``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from workflow.errors import UsageError

#: The languages of the web pages an account may choose.
LANGUAGES = ("th", "en")
WINDOW_ENV = "WORKFLOW_LOGIN_WINDOW"


@dataclass(frozen=True)
class Account:
    """A person (or a service) who logs in; ``name`` is the actor that grants apply to."""

    name: str
    display_name: str | None
    admin: bool
    disabled: bool
    created_at: str
    language: str = "th"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "admin": self.admin,
            "disabled": self.disabled,
            "created_at": self.created_at,
            "language": self.language,
        }


@dataclass(frozen=True)
class Token:
    """An API token as listed: never its secret (only its SHA-256 is stored)."""

    id: int
    account: str
    label: str | None
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "label": self.label,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class NewToken:
    """A token just created, with its secret: shown once, never stored or shown again."""

    token: Token
    secret: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.token.id, "token": self.secret, "expires_at": self.token.expires_at}

    def __repr__(self) -> str:  # a traceback or log line of this object shows no secret
        return f"NewToken(token={self.token!r}, secret='***')"


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the service knows it: the account and how it authenticated."""

    account: Account
    via: str  # "token:<id>" or "session:<first 12 hex of the session id's sha256>"
    session_csrf: str | None = None  # the session's CSRF token (None for bearer tokens)

    def __repr__(self) -> str:
        return f"Principal(account={self.account!r}, via={self.via!r})"


@dataclass(frozen=True)
class Session:
    """A browser session just opened by a login; ``secret`` is the cookie value, known only
    now (the database keeps its SHA-256)."""

    secret: str
    account: Account
    created_at: str
    expires_at: str  # the absolute expiry; the idle expiry moves with each use
    csrf: str
    via: str = ""  # "session:<first 12 hex of the secret's sha256>", as Principal.via

    def __repr__(self) -> str:
        return (
            f"Session(account={self.account!r}, created_at={self.created_at!r}, "
            f"expires_at={self.expires_at!r}, via={self.via!r}, secret='***', csrf='***')"
        )


@dataclass(frozen=True)
class AccountEvent:
    """One record of the account chain (``workflow_account_events``)."""

    seq: int
    action: str
    subject: str
    detail: dict[str, Any]
    by: str
    os_user: str
    at: str
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "action": self.action,
            "subject": self.subject,
            "detail": self.detail,
            "by": self.by,
            "os_user": self.os_user,
            "at": self.at,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @staticmethod
    def detail_of(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError:
            return {"unreadable": text}
        return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True)
class Throttle:
    """Login throttling: more than ``per_account`` failures of one account name, or
    ``per_address`` from one address, within the last ``window`` seconds → Throttled."""

    window: float = 900
    per_account: int = 5
    per_address: int = 20

    def __post_init__(self) -> None:
        if not (self.window > 0 and self.per_account >= 1 and self.per_address >= 1):
            raise UsageError(
                "login throttling needs a window of more than 0 s and limits of at least 1"
            )

    @classmethod
    def from_env(cls) -> Throttle:
        """The defaults, with the window from ``WORKFLOW_LOGIN_WINDOW`` (seconds) if set."""
        raw = os.environ.get(WINDOW_ENV, "").strip()
        if not raw:
            return cls()
        try:
            window = float(raw)
        except ValueError:
            raise UsageError(f"{WINDOW_ENV} is a number of seconds, not {raw!r}") from None
        return cls(window=window)
