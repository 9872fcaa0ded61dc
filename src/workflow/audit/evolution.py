"""What the amending events mean for the trail: corrections, reverts, comments, migrations.

A mistake is never mended by rewriting the trail; it is mended by a new event that says what it
mends. This module holds the rules both sides need, so that writing and checking cannot drift
apart: the engine (``engine/amend.py``, ``engine/evolution.py``) asks it which step a revert
takes back, and verify (``audit/verify.py``) replays every chain through :class:`Amendments`
and reports an amending event whose claims do not hold:

- a ``correct`` event names an earlier event of its instance by ``of_seq`` and ``of_hash``: that
  event must exist, be earlier, carry that hash, and be one that can be corrected;
- a ``revert`` event returns the instance to the configuration before the last state change
  not yet taken back (``of_seq`` names that change): its ``to`` must be that configuration;
- a ``migrate`` event moves the instance from one stored definition to another: its evidence
  names both hashes, the first must be the one the instance ran on, the event itself is
  recorded under the second, and so is every event after it (until the next migration).

Rows are ``storage.EventRow`` tuples (or objects with the same fields).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: Events that record something about the instance's record rather than a step of the program.
COMMENT, CORRECT, REVERT, MIGRATE = "comment", "correct", "revert", "migrate"
AMENDING = frozenset({COMMENT, CORRECT, REVERT, MIGRATE})
#: Events that are not steps a revert can take back (their from and to are the same, or they
#: are not the program's steps at all).
NOT_STEPS = frozenset({"start", COMMENT, CORRECT, REVERT, MIGRATE, "overdue"})
#: Events the replay reads more of than the definition hash, the step and the hash.
SPECIAL = AMENDING | {"start"}
#: Why an event recorded under another definition than the instance ran on is wrong.
OTHER_DEFINITION = (
    "event recorded under a different definition than the instance ran on "
    "(its last start or migration)"
)
#: Events whose evidence or note a correction may amend.
UNCORRECTABLE = frozenset({"start", CORRECT, REVERT, MIGRATE, "overdue"})


class Step(NamedTuple):
    """A state change a revert could take back: its seq, hash and the configuration before."""

    seq: int
    hash: str
    before: str


#: The fields ``add`` reads, with their index in ``storage.EventRow`` order.
_READ = (
    ("seq", 2),
    ("trigger", 3),
    ("from_state", 4),
    ("to_state", 5),
    ("evidence", 10),
    ("definition_hash", 12),
    ("hash", 15),
)


@dataclass
class Amendments:
    """Replays one instance's events, in order, keeping what the amending events refer to.

    ``add(row)`` returns why the row's claims do not hold, or None.

    What it keeps per event is in flat maps of strings by seq (``hashes``, ``triggers``,
    ``befores``) and a list of seqs (``step_seqs``), never a new tuple per event: verify
    replays every stored event, and objects the cyclic garbage collector tracks, kept alive
    until the instance's chain ends, made it run often enough to cost a fifth of the scan
    (docs/performance.md, "verify").
    """

    hashes: dict[int, str] = field(default_factory=dict)  # seq -> hash
    triggers: dict[int, str] = field(default_factory=dict)  # seq -> trigger
    befores: dict[int, str] = field(default_factory=dict)  # a step's seq -> configuration
    #: The state changes a revert could take back, oldest first (see :attr:`steps`).
    step_seqs: list[int] = field(default_factory=list)
    definition_hash: str | None = None
    program_version: int | None = None
    stored_hashes: frozenset[str] | None = None
    #: The evidence text of the last ``start`` event replayed and its JSON, if it was JSON.
    start: tuple[Any, Any] = (None, None)

    @property
    def steps(self) -> list[Step]:
        """The state changes a revert could still take back, oldest first."""
        return [Step(s, self.hashes[s], self.befores[s]) for s in self.step_seqs]

    def add(self, row: Any) -> str | None:
        if isinstance(row, tuple):  # a stored row (verify: once per event)
            seq, trigger, before, after = row[2], row[3], row[4], row[5]
            evidence_text, definition_hash, digest = row[10], row[12], row[15]
        else:
            seq, trigger, before, after, evidence_text, definition_hash, digest = (
                getattr(row, name) for name, _ in _READ
            )
        reason = None
        if trigger not in SPECIAL:
            # An ordinary step (most events): recorded under the definition in force.
            # (verify's scan runs this branch inline: workflow.audit.scan.EventChecks.)
            if definition_hash != self.definition_hash:
                reason = OTHER_DEFINITION
            if type(seq) is int:
                self.hashes[seq] = digest
                self.triggers[seq] = trigger
                if trigger not in NOT_STEPS and before is not None and before != after:
                    self.step_seqs.append(seq)
                    self.befores[seq] = before
            return reason
        if trigger == "start":
            self.definition_hash = definition_hash
            try:
                identity = json.loads(evidence_text)
            except (TypeError, ValueError):
                identity, self.start = None, (None, None)
            else:
                # verify holds the instance row to this identity too: it reads it from
                # here rather than parse the same text again (the text says which it was).
                self.start = (evidence_text, identity)
            version = identity.get("program_version") if isinstance(identity, dict) else None
            self.program_version = version if type(version) is int else None
        elif trigger == MIGRATE:
            reason = self._migrate(evidence_text, definition_hash)
        elif definition_hash != self.definition_hash:
            reason = OTHER_DEFINITION
        if reason is None and trigger == CORRECT:
            reason = self._correct(seq, evidence_text, before, after)
        elif reason is None and trigger == REVERT:
            reason = self._revert(evidence_text, before, after)
        elif trigger == MIGRATE:
            self.step_seqs.clear()  # a step before a migration cannot be taken back
        elif (
            trigger not in NOT_STEPS and before is not None and before != after
            and type(seq) is int
        ):
            self.step_seqs.append(seq)
            self.befores[seq] = before
        if type(seq) is int:
            self.hashes[seq] = digest
            self.triggers[seq] = trigger
        return reason

    def _evidence(self, text: Any) -> Mapping[str, Any] | None:
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _correct(self, seq: Any, text: Any, before: Any, after: Any) -> str | None:
        ev = self._evidence(text)
        if ev is None:
            return "correction evidence is not a JSON object"
        if before != after:
            return "a correction changed the instance's state"
        of_seq, of_hash = ev.get("of_seq"), ev.get("of_hash")
        if type(of_seq) is not int or type(seq) is not int or not 1 <= of_seq < seq:
            return f"correction names no earlier event (of_seq {of_seq!r})"
        if of_seq not in self.hashes or self.hashes[of_seq] != of_hash:
            return f"correction names event {of_seq} with a hash it does not have"
        named = self.triggers[of_seq]
        if named in UNCORRECTABLE:
            return f"correction names a {named} event, which cannot be corrected"
        changes, note = ev.get("changes"), ev.get("note")
        if not isinstance(changes, dict) or not isinstance(ev.get("reason"), str):
            return "correction evidence lacks its changes or reason"
        if not changes and note is None:
            return "correction changes nothing"
        return None

    def _revert(self, text: Any, before: Any, after: Any) -> str | None:
        ev = self._evidence(text)
        if ev is None:
            return "revert evidence is not a JSON object"
        if not self.step_seqs:
            return "revert with no step to take back"
        seq = self.step_seqs.pop()
        step = Step(seq, self.hashes[seq], self.befores[seq])
        if ev.get("of_seq") != step.seq or ev.get("of_hash") != step.hash:
            return f"revert names a step other than the last one not taken back (seq {step.seq})"
        if after != step.before:
            return (
                "revert's configuration is not the one before the step it takes back "
                f"(seq {step.seq})"
            )
        return None

    def _migrate(self, text: Any, definition_hash: Any) -> str | None:
        ev = self._evidence(text)
        if ev is None:
            return "migrate evidence is not a JSON object"
        old, new = ev.get("from_definition"), ev.get("to_definition")
        if old != self.definition_hash:
            return "migrate event names a definition the instance did not run on"
        if new != definition_hash:
            return "migrate event is not recorded under the definition it migrates to"
        if ev.get("from_version") != self.program_version or type(ev.get("to_version")) is not int:
            return "migrate event's versions do not follow the instance's"
        if self.stored_hashes is not None and new not in self.stored_hashes:
            return "migrate event names a definition that is not stored"
        self.definition_hash = new
        self.program_version = ev["to_version"]
        return None


def steps_left(rows: Iterable[Any]) -> list[Step]:
    """The state changes of an instance that a revert could still take back, oldest first
    (the last is the one the next revert takes back)."""
    replay = Amendments()
    for row in rows:
        replay.add(row)
    return replay.steps
