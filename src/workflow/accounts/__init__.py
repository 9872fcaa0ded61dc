"""Accounts for the service: who may log in, with what, and the audited trail of it.

Accounts (an account's name is the actor that grants apply to), Argon2id passwords, API
tokens (shown once, stored as SHA-256, optionally expiring, revocable), browser sessions
(a new secret at every login, idle and absolute expiry, a CSRF token each), login throttling
per account and per address (counted in the database, shared by every server process), and
the hash-chained account event log (``wa1``). Library only: the tables and queries are in
``workflow.storage.accounts``, the HTTP service in ``workflow.service``.

For the service::

    accounts = Accounts(engine.store, throttle=Throttle.from_env())
    principal = accounts.authenticate_token(bearer)       # every request: NotAuthenticated
    session = accounts.login(name, password, address=ip)  # NotAuthenticated / Throttled
    principal = accounts.session(cookie)                  # every request: NotAuthenticated
    csrf_matches(principal.session_csrf, form_token)      # every state-changing form post
    accounts.logout(cookie)

``Throttled.retry_after`` is the Retry-After header; ``Principal.via`` is what the engine
records as ``auth``. Errors never quote a password, token or session secret.
"""

from __future__ import annotations

from workflow.accounts.credentials import csrf_matches
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
from workflow.accounts.passwords import PASSWORD_MIN
from workflow.accounts.service import Accounts

__all__ = [
    "LANGUAGES",
    "PASSWORD_MIN",
    "Account",
    "AccountEvent",
    "Accounts",
    "NewToken",
    "Principal",
    "Session",
    "Throttle",
    "Token",
    "csrf_matches",
]
