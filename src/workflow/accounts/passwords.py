"""Passwords: Argon2id hashes (argon2-cffi), the length rule, and a dummy hash so that a login
for a name that does not exist costs what a real one does.

A password is never put in a message, an event or a log line: errors name the rule broken,
never the value.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from workflow.errors import UsageError

#: The fewest characters a password may have.
PASSWORD_MIN = 8
#: The most (hashing is linear in the length: a megabyte "password" is a denial of service).
PASSWORD_MAX = 1024


def default_hasher() -> PasswordHasher:
    """Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile)."""
    return PasswordHasher()


def checked(password: object) -> str:
    """The password in its canonical form (Unicode NFC: the same characters typed on two
    keyboards are the same password), or UsageError naming the rule it breaks."""
    if not isinstance(password, str):
        raise UsageError("the password must be text")
    text = unicodedata.normalize("NFC", password)
    if len(text) < PASSWORD_MIN:
        raise UsageError(f"the password is too short: at least {PASSWORD_MIN} characters")
    if len(text) > PASSWORD_MAX:
        raise UsageError(f"the password is too long: at most {PASSWORD_MAX} characters")
    if "\x00" in text:
        raise UsageError("the password must not contain a NUL character")
    return text


def hash_password(hasher: PasswordHasher, password: str) -> str:
    """The Argon2id hash of a password that passed :func:`checked`."""
    return hasher.hash(password)


def verify_password(hasher: PasswordHasher, stored: str, password: object) -> bool:
    """Whether ``password`` matches the stored hash (False for anything malformed)."""
    if not isinstance(password, str) or len(password) > 4 * PASSWORD_MAX:
        # Still pay for one verification, so the answer takes as long as any other.
        password = ""
    candidate = unicodedata.normalize("NFC", password)
    try:
        return bool(hasher.verify(stored, candidate))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(hasher: PasswordHasher, stored: str) -> bool:
    try:
        return bool(hasher.check_needs_rehash(stored))
    except (InvalidHashError, ValueError):
        return False


@lru_cache(maxsize=8)
def _dummy(time_cost: int, memory_cost: int, parallelism: int, hash_len: int) -> str:
    hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, hash_len=hash_len
    )
    return hasher.hash("workflow: no such account, same cost")


def dummy_hash(hasher: PasswordHasher) -> str:
    """A hash made with ``hasher``'s parameters, to verify against when the account does not
    exist (made once per process and parameters)."""
    return _dummy(hasher.time_cost, hasher.memory_cost, hasher.parallelism, hasher.hash_len)
