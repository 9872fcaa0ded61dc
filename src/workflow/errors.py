"""The exceptions of workflow: one root, a shallow tree, one exit code per branch.

Every error the engine raises on purpose is a :class:`WorkflowError`. Each branch maps to one
exit code of the command line (CONTRACT §4), so the CLI needs no table of its own::

    WorkflowError                      (exit_code 1)
    ├── DefinitionError                1   a definition file is invalid (carries .problems)
    ├── UsageError                     2   a request that cannot be understood (bad option value)
    │   ├── TextRefused                    typed text not in canonical form, or too long
    │   └── FileRefused                    a named file that is not a readable regular file
    ├── NotFound                       3
    │   ├── ProgramNotFound
    │   ├── InstanceNotFound
    │   ├── AreaNotFound               (also: a name matching several areas, with .candidates)
    │   ├── StateNotFound              a state no (such) program has
    │   ├── GrantNotFound
    │   ├── AccountNotFound
    │   └── TokenNotFound
    ├── Refused                        4
    │   ├── TriggerNotAllowed          unknown trigger, or not allowed in the current state
    │   ├── EvidenceInvalid            missing, undeclared or ill-typed evidence
    │   ├── GuardFailed
    │   ├── RoleNotAllowed             the transition does not allow this role
    │   │   └── UnknownRole            the program does not declare this role at all
    │   ├── PermissionDenied           the actor holds no grant covering this change
    │   ├── NotAuthenticated           no valid credentials (HTTP 401)
    │   └── Throttled                  too many failed logins; try after .retry_after s (429)
    ├── Conflict                       5
    │   ├── VersionConflict            --expect-version did not match, or a concurrent change won
    │   ├── DuplicateInstance
    │   ├── IdempotencyConflict        a key reused for a different request
    │   ├── KeyRecordMismatch          a key's stored record names an event not of its request
    │   ├── ClockWentBack              this host's clock is behind the record it would follow
    │   ├── DefinitionChanged          a stored (program, version) differs from the file
    │   └── AccountExists              an account of that name exists already
    └── StorageError                   6
        ├── DatabaseUnavailable        down, locked, read-only, full, bad credentials
        └── SchemaOutOfDate            missing, older or newer schema

Exceptions carry their data as attributes and build their own message, so callers can react
to the data and the CLI can print ``str(error)`` as its one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class WorkflowError(Exception):
    """Root of every error workflow raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Problem:
    """One problem found in a definition file, reported as ``FILE:LINE: CODE message``."""

    file: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code} {self.message}"


class DefinitionError(WorkflowError):
    """A definition file is invalid; ``problems`` lists every problem found in it."""

    exit_code = 1

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = str(self.problems[0]) if self.problems else "invalid definition"
        more = len(self.problems) - 1
        super().__init__(first + (f" (and {more} more)" if more > 0 else ""))


class UsageError(WorkflowError):
    """A request the engine cannot understand (a malformed value, a bad option)."""

    exit_code = 2


class TextRefused(UsageError):
    """Text a caller typed breaks the rules of ``workflow.runtime.text`` (``what`` names the value,
    ``char`` the offending character, if one)."""

    def __init__(self, what: str, reason: str, char: str | None = None) -> None:
        self.what = what
        self.reason = reason
        self.char = char
        super().__init__(f"{what} {reason}")


class FileRefused(UsageError):
    """A file that cannot or must not be read (``workflow.runtime.files``); ``reason`` says why in a
    few words ("is a FIFO (named pipe), not a regular file")."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class NotFound(WorkflowError):
    """Something named by the caller does not exist."""

    exit_code = 3


class ProgramNotFound(NotFound):
    def __init__(self, program: str, version: int | None = None, known: Sequence[str] = ()) -> None:
        self.program = program
        self.version = version
        self.known = tuple(known)
        what = f"{program!r} version {version}" if version is not None else repr(program)
        hint = f" (known: {', '.join(self.known)})" if self.known else ""
        super().__init__(f"unknown program {what}{hint}")


class InstanceNotFound(NotFound):
    def __init__(self, instance: object) -> None:
        self.instance = instance
        super().__init__(f"no instance {instance!r}")


class AreaNotFound(NotFound):
    """No area matches, or a name matches several (``candidates`` then lists them)."""

    def __init__(self, query: str, candidates: Sequence[str] = ()) -> None:
        self.query = query
        self.candidates = tuple(candidates)
        if self.candidates:
            shown = "; ".join(self.candidates[:10])
            more = f"; and {len(self.candidates) - 10} more" if len(self.candidates) > 10 else ""
            msg = f"area {query!r} is ambiguous, give a code: {shown}{more}"
        else:
            msg = (
                f"unknown area {query!r} "
                "(give a DOPA code: 2, 4 or 6 digits, or a Thai/English name)"
            )
        super().__init__(msg)


class StateNotFound(NotFound):
    """A state filter naming a state that no program (or not the given one) has: an empty
    answer would look like "nothing is in that state" when the name is simply wrong."""

    def __init__(self, state: str, program: str | None, known: Sequence[str]) -> None:
        self.state = state
        self.program = program
        self.known = tuple(known)
        where = f"program {program}" if program else "any program"
        super().__init__(
            f"unknown state {state!r}: not a top-level state of {where} "
            f"(states: {', '.join(self.known)})"
        )


class GrantNotFound(NotFound):
    def __init__(self, actor: str, role: str, area: str | None, program: str | None) -> None:
        self.actor, self.role, self.area, self.program = actor, role, area, program
        scope = f" area {area}" if area else " everywhere"
        scope += f" program {program}" if program else ""
        super().__init__(f"{actor!r} holds no grant {role}{scope}")


class EventNotFound(NotFound):
    def __init__(self, instance: int, seq: object) -> None:
        self.instance = instance
        self.seq = seq
        super().__init__(f"instance {instance} has no event {seq}")


class AccountNotFound(NotFound):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no account {name!r}")


class TokenNotFound(NotFound):
    def __init__(self, token_id: object) -> None:
        self.token_id = token_id
        super().__init__(f"no API token {token_id!r}")


class Refused(WorkflowError):
    """The change is not allowed; nothing was written."""

    exit_code = 4


class TriggerNotAllowed(Refused):
    def __init__(self, trigger: str, state: str, allowed: Sequence[str], known: bool) -> None:
        self.trigger = trigger
        self.state = state
        self.allowed = tuple(allowed)
        self.known = known
        now = ", ".join(self.allowed) if self.allowed else "none"
        if known:
            msg = f"trigger {trigger!r} is not allowed in state {state!r} (allowed now: {now})"
        else:
            msg = f"unknown trigger {trigger!r} (allowed now: {now})"
        super().__init__(msg)


class EvidenceInvalid(Refused):
    """Evidence refused. ``problems`` lists every (field, reason) found, so that a form can
    mark all of them at once; ``field`` and ``reason`` are the first of them."""

    def __init__(
        self,
        trigger: str,
        field: str,
        reason: str,
        *,
        problems: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.trigger = trigger
        self.problems = tuple(problems) or ((field, reason),)
        self.field, self.reason = self.problems[0]
        self.fields = tuple(name for name, _ in self.problems)
        if len(self.problems) == 1:
            msg = f"evidence {self.field!r} for {trigger!r}: {self.reason}"
        else:
            each = "; ".join(f"{name!r} {why}" for name, why in self.problems)
            msg = f"evidence for {trigger!r} has {len(self.problems)} problems: {each}"
        super().__init__(msg)

    @classmethod
    def of(cls, trigger: str, problems: Sequence[tuple[str, str]]) -> EvidenceInvalid:
        """One error for every problem found (at least one)."""
        return cls(trigger, problems[0][0], problems[0][1], problems=problems)


class AmendRefused(Refused):
    """A comment, correction, revert or migration that cannot be made as asked."""


class GuardFailed(Refused):
    def __init__(self, trigger: str, guard: str) -> None:
        self.trigger = trigger
        self.guard = guard
        super().__init__(f"{trigger!r} refused: guard not met: {guard}")


class RoleNotAllowed(Refused):
    def __init__(self, trigger: str, role: str, allowed: Sequence[str]) -> None:
        self.trigger = trigger
        self.role = role
        self.allowed = tuple(allowed)
        super().__init__(
            f"role {role!r} may not fire {trigger!r} (allowed roles: {', '.join(self.allowed)})"
        )


class UnknownRole(RoleNotAllowed):
    """A role the program does not declare: a typo or the wrong program, not a missing grant
    (saying "holds no grant" would send the operator to grant a role that cannot act)."""

    def __init__(self, program: str, role: str, roles: Sequence[str]) -> None:
        self.program = program
        self.role = role
        self.roles = tuple(roles)
        self.trigger = ""
        self.allowed = self.roles
        WorkflowError.__init__(
            self, f"unknown role {role!r} for program {program} (roles: {', '.join(self.roles)})"
        )


class PermissionDenied(Refused):
    def __init__(self, actor: str, role: str, action: str, reason: str) -> None:
        self.actor = actor
        self.role = role
        self.action = action
        self.reason = reason
        super().__init__(f"{actor!r} as {role} may not {action}: {reason}")


class NotAuthenticated(Refused):
    """No valid credentials: an unknown, revoked or expired token, an unknown, idle or expired
    session, a wrong name or password, a disabled account. The message never says which
    secret was given, nor (for a login) whether the name exists."""

    def __init__(self, reason: str = "not authenticated") -> None:
        self.reason = reason
        super().__init__(reason)


class Throttled(Refused):
    """Too many failed logins for this account or from this address within the window: the
    attempt was refused without checking the password; ``retry_after`` whole seconds on."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed logins; try again in {retry_after} s")


class Conflict(WorkflowError):
    """The change collides with the stored state; nothing was written."""

    exit_code = 5


class VersionConflict(Conflict):
    def __init__(self, instance: int, expected: int, actual: int) -> None:
        self.instance = instance
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"instance {instance} is at version {actual}, not {expected} (changed meanwhile?)"
        )


class DuplicateInstance(Conflict):
    def __init__(self, program: str, area: str, fiscal_year: int, existing: int) -> None:
        self.program = program
        self.area = area
        self.fiscal_year = fiscal_year
        self.existing = existing
        super().__init__(
            f"{program} already runs for area {area} in fiscal year {fiscal_year} "
            f"(instance {existing}); pass --allow-duplicate to start another"
        )


class IdempotencyConflict(Conflict):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used for a different request")


class KeyRecordMismatch(Conflict):
    """The stored record of an idempotency key points at an event that is not the result of
    this request (another instance, trigger or actor, or a changed event): the record was
    altered. Nothing is answered from it and nothing is changed."""

    def __init__(self, key: str, instance: int, seq: int) -> None:
        self.key, self.instance, self.seq = key, instance, seq
        super().__init__(
            f"idempotency key {key!r} is recorded as instance {instance} event {seq}, which is "
            "not this request's result (the key record was altered?); nothing was changed, "
            "run `workflow audit verify`"
        )


class ClockWentBack(Conflict):
    """The clock of the host writing reads earlier than the record it would follow.

    Times in the trail never run backwards: an event earlier than its instance's last one
    (or a grant event or denial earlier than its chain's head) is refused, in the write
    transaction, rather than recorded with a time that sorts before its cause."""

    def __init__(self, what: str, last: str, now: str) -> None:
        self.what, self.last, self.now = what, last, now
        super().__init__(
            f"this host's clock reads {now}, earlier than the {what} it would follow "
            f"({last}); refusing to record time running backwards (check the clock)"
        )


class DefinitionChanged(Conflict):
    def __init__(self, program: str, version: int, stored: str, current: str) -> None:
        self.program, self.version, self.stored, self.current = program, version, stored, current
        super().__init__(
            f"definition {program} version {version} differs from the one stored "
            f"(hash {current[:12]} vs {stored[:12]}); give the changed file a new version"
        )


class AccountExists(Conflict):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an account {name!r} exists already")


class StorageError(WorkflowError):
    """The database cannot be used as asked."""

    exit_code = 6


class DatabaseUnavailable(StorageError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"database {url} unavailable: {reason}")


class SchemaOutOfDate(StorageError):
    """The schema is missing or older than this code expects (or newer: then upgrade workflow)."""

    def __init__(self, url: str, current: str | None, expected: str, newer: bool = False) -> None:
        self.url = url
        self.current = current
        self.expected = expected
        self.newer = newer
        if current is None:
            msg = f"database {url} has no workflow schema; run `workflow init`"
        elif newer:
            msg = (
                f"database {url} is at schema {current}, newer than this workflow knows "
                f"({expected}); upgrade workflow"
            )
        else:
            msg = (
                f"database {url} is at schema {current}, this workflow needs {expected}; "
                "run `workflow init`"
            )
        super().__init__(msg)
