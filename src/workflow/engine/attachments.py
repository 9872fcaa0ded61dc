"""Files given as evidence, kept and handed back by the engine.

On a fire, each ``file`` field's :class:`~workflow.runtime.attachments.Upload` is stored
(content-addressed, ``workflow.storage.attachments``) inside the fire's transaction; a field
given an already-recorded file value (a correction keeping it) must name a stored file.
``attachment`` hands a recorded file back to whoever may read the instance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from workflow.errors import EventNotFound, EvidenceInvalid, NotFound, StorageError
from workflow.programs.model import Transition
from workflow.records import Event
from workflow.runtime.attachments import Upload, is_described
from workflow.storage import attachments as _stored
from workflow.storage.store import Store


class AttachmentNotFound(NotFound):
    def __init__(self, instance: int, seq: int, field: str) -> None:
        self.instance, self.seq, self.field = instance, seq, field
        super().__init__(f"event {seq} of instance {instance} records no file {field!r}")


def keep(
    store: Store,
    conn: Any,
    transition: Transition,
    typed: Mapping[str, Any],
    raw: Mapping[str, object] | None,
    at: str,
) -> None:
    """Store the files of a fire's evidence in its transaction."""
    problems = []
    for f in transition.evidence:
        value = typed.get(f.name)
        if f.type != "file" or not isinstance(value, Mapping) or not is_described(value):
            continue
        given = (raw or {}).get(f.name)
        if isinstance(given, Upload):
            _stored.put(store, conn, value["sha256"], value["media_type"], given.data, at)
        elif not _stored.exists(conn, value["sha256"]):
            problems.append((f.name, "names a file that is not stored"))
    if problems:
        raise EvidenceInvalid.of(transition.trigger, problems)


def keep_uploads(
    store: Store, conn: Any, typed: Mapping[str, Any], given: Mapping[str, object], at: str
) -> None:
    """Store the files a correction brings (its new values)."""
    for name, value in given.items():
        described = typed.get(name)
        if isinstance(value, Upload) and isinstance(described, Mapping):
            _stored.put(store, conn, described["sha256"], described["media_type"], value.data, at)


def attachment(
    store: Store, events: Sequence[Event], instance: int, seq: int, field: str
) -> tuple[Mapping[str, Any], bytes]:
    """The file event ``seq`` records in ``field`` (as corrected, if it was): its evidence
    value and its bytes, re-hashed (a changed stored file is refused, not handed out)."""
    event = next((e for e in events if e.seq == seq), None)
    if event is None:
        raise EventNotFound(instance, seq)
    evidence = event.corrected_evidence if event.corrected_by else event.evidence
    value = (evidence or {}).get(field)
    if not isinstance(value, Mapping) or not is_described(value):
        raise AttachmentNotFound(instance, seq, field)
    data = store.run(lambda conn: _stored.get(store, conn, value["sha256"]))
    if data is None:
        raise AttachmentNotFound(instance, seq, field)
    if hashlib.sha256(data).hexdigest() != value["sha256"]:
        raise StorageError(f"the stored file of {field!r} no longer matches its hash")
    return value, data

