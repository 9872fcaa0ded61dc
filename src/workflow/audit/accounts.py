"""The account event chain's cryptography: the ``wa1`` hash of an account event and the check
of each link, in the encoding of :mod:`workflow.audit.chain` (a JSON array of the tag and
every stored field but the hash, SHA-256 of its UTF-8).

One chain for every account, token and login event (they are few and global, like grants).
Nothing stored is trusted to be well-formed: a malformed value is a problem, never a crash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from workflow.audit.chain import _ENCODER, GENESIS, TIME_FORMAT
from workflow.records import VerifyProblem

#: The encoding tag of account event hashes (never mistaken for an event's, a denial's).
ACCOUNT_FORMAT = "wa1"

#: What an account event may record (``action``).
ACTIONS = frozenset(
    {
        "user_add",
        "user_disable",
        "user_enable",
        "user_passwd",
        "token_create",
        "token_revoke",
        "login",
        "login_failed",
        "login_throttled",
        "logout",
    }
)

ACCOUNT_EVENT_FIELDS = ("seq", "action", "subject", "detail", "by", "os_user", "at", "prev_hash")


def account_event_hash(row: Any) -> str:
    """The hash of an account event (``row`` is a storage.accounts.AccountEventRow, or any
    object with its fields): ``wa1`` and its fields, with the previous event's hash."""
    payload = _ENCODER.encode([ACCOUNT_FORMAT, *(getattr(row, n) for n in ACCOUNT_EVENT_FIELDS)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def link_problem(row: Any, expected: int, prev: str, last_at: str) -> str | None:
    """Why an account event does not follow its predecessor in the chain, or None."""
    try:
        if type(row.seq) is not int:
            return f"seq {row.seq!r} is not an integer"
        if row.seq != expected:
            return f"the chain jumps from {expected - 1} to {row.seq} (a record was removed)"
        if row.prev_hash != prev or account_event_hash(row) != row.hash:
            return f"record {row.seq} was altered"
        if not (isinstance(row.at, str) and TIME_FORMAT.fullmatch(row.at)):
            return f"record {row.seq} time {row.at!r} is not an ISO 8601 UTC time"
        if row.at < last_at:
            return f"time runs backwards: record {row.seq} at {row.at} is before {last_at}"
        if row.action not in ACTIONS:
            return f"record {row.seq} action {row.action!r} is not an account action"
        if not isinstance(json.loads(row.detail), dict):
            return f"record {row.seq} detail is not a JSON object"
    except (TypeError, ValueError, UnicodeError) as e:
        return f"record {row.seq!r} holds a malformed value ({type(e).__name__})"
    return None


def chain_problems(
    rows: Iterable[Any], head: tuple[int, str] | None = None
) -> list[VerifyProblem]:
    """The first broken link of the account chain (rows in ``seq`` order), as a problem
    naming its seq; with ``head`` (seq, hash) from a digest, also whether that record is
    still there unchanged (a shortened or rewritten chain)."""
    prev, expected, last_at = GENESIS, 1, ""
    hashes: dict[int, str] = {}
    for row in rows:
        reason = link_problem(row, expected, prev, last_at)
        if reason is not None:
            seq = row.seq if type(row.seq) is int else None
            return [VerifyProblem(None, seq, f"accounts: {reason}")]
        hashes[row.seq] = row.hash
        prev, expected, last_at = row.hash, row.seq + 1, row.at
    if head is not None and head[0] and hashes.get(head[0]) != head[1]:
        return [
            VerifyProblem(
                None,
                head[0],
                "accounts: the account event covered by the digest is missing or changed "
                "(the account trail was shrunk or rewritten)",
            )
        ]
    return []


def state_problems(
    rows: Iterable[Any], accounts: Iterable[Any], tokens: Iterable[Any]
) -> list[VerifyProblem]:
    """Whether the accounts and tokens in the tables are what the (intact) chain says: each
    account added by a ``user_add`` with its admin flag, disabled as its last
    ``user_disable``/``user_enable`` says; each token created by a ``token_create`` for its
    account, revoked exactly when a ``token_revoke`` says. An account made admin, enabled
    or added by SQL, or a token slipped in or un-revoked, is a problem."""
    held: dict[str, tuple[bool, bool]] = {}
    issued: dict[int, tuple[str, bool]] = {}
    for row in rows:
        detail = json.loads(row.detail)
        if row.action == "user_add":
            held[row.subject] = (bool(detail.get("admin")), False)
        elif row.action in ("user_disable", "user_enable") and row.subject in held:
            held[row.subject] = (held[row.subject][0], row.action == "user_disable")
        elif row.action == "token_create":
            issued[detail.get("token_id")] = (row.subject, False)
        elif row.action == "token_revoke" and detail.get("token_id") in issued:
            issued[detail["token_id"]] = (issued[detail["token_id"]][0], True)
    stored = {a.name: (bool(a.admin), bool(a.disabled)) for a in accounts}
    problems: list[VerifyProblem] = []
    if stored != held:
        problems.append(
            VerifyProblem(
                None,
                None,
                "accounts: the accounts differ from the account events "
                f"({len(stored.keys() - held.keys())} unrecorded, "
                f"{len(held.keys() - stored.keys())} missing, "
                f"{sum(1 for k in stored.keys() & held.keys() if stored[k] != held[k])} "
                "with another admin or disabled flag)",
            )
        )
    kept = {t.id: (t.account, t.revoked_at is not None) for t in tokens}
    if kept != issued:
        problems.append(
            VerifyProblem(
                None,
                None,
                "accounts: the API tokens differ from the account events "
                f"({len(kept.keys() - issued.keys())} unrecorded, "
                f"{len(issued.keys() - kept.keys())} missing, "
                f"{sum(1 for k in kept.keys() & issued.keys() if kept[k] != issued[k])} "
                "with another account or revocation)",
            )
        )
    return problems


def chain_head(rows: Iterable[Any]) -> tuple[int, str]:
    """(seq, hash) of the last row, or (0, GENESIS): what a digest commits to."""
    last: tuple[int, str] = (0, GENESIS)
    for row in rows:
        last = (row.seq, row.hash)
    return last
