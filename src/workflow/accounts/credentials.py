"""Token and session secrets: how they are made, stored (SHA-256 hex) and named in the trail.

API tokens are ``wft_`` and 32 random bytes in URL-safe base64 (256 bits); session cookies are
32 random bytes too, and a new one is made at every login (no fixation); each session has a
CSRF token of its own. Only the SHA-256 of a token or session secret is stored, so a copy of
the database lets no one in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "wft_"
#: Random bytes of every secret (256 bits).
SECRET_BYTES = 32
#: Longer than any secret made here: anything longer is refused before hashing.
SECRET_MAX = 200


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def new_session_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_csrf() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def digest(secret: str) -> str:
    """The SHA-256 hex of a secret: what is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def plausible(secret: object, prefix: str = "") -> bool:
    """Whether ``secret`` could be one made here (text, bounded, with the prefix)."""
    return (
        isinstance(secret, str)
        and 0 < len(secret) <= SECRET_MAX
        and secret.startswith(prefix)
        and secret.isascii()
    )


def session_via(session_hash: str) -> str:
    """How a session is named in events and ``Principal.via``: never the secret itself."""
    return f"session:{session_hash[:12]}"


def token_via(token_id: int) -> str:
    return f"token:{token_id}"


def csrf_matches(expected: str | None, given: object) -> bool:
    """Whether a form's CSRF token is the session's (constant-time comparison)."""
    if not expected or not isinstance(given, str) or not given.isascii():
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii"))


def name_key(name: str) -> str:
    """The key a name is counted under in the login failure table (its SHA-256: a password
    typed into the name field must not be stored)."""
    return hashlib.sha256(("account\x00" + name).encode("utf-8", "surrogatepass")).hexdigest()


def address_key(address: str) -> str:
    return hashlib.sha256(("address\x00" + address).encode("utf-8", "surrogatepass")).hexdigest()
