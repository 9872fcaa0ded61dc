"""Hooks, the outbox and the delivery worker (CONTRACT §10).

A batch of deliveries is leased (``claimed_by``/``claimed_until``) in a short transaction,
the batch's instances are read in one more, each delivery is sent outside any transaction,
and the outcomes are marked delivered or failed in short transactions by the worker that
holds the lease only. So two live workers never send one delivery twice (PostgreSQL: ``FOR
UPDATE SKIP LOCKED`` while claiming; SQLite: its write lock).

Marks are written per group: once an answer comes ``MARK_WITHIN`` (10 ms) or more after the
oldest unmarked delivery's send began, and at the end of each batch. A receiver answering
in less than that gets its marks in one transaction per ~10 ms of sending instead of one
per delivery (a commit costs about as much as a local POST); any slower receiver has each
delivery marked before the next is sent, as before. A worker killed between sending and
marking leaves the deliveries it had not marked to be sent again once their lease runs out:
at most those whose sends began in its last 10 ms, and at most one when each answer took
longer. The receiver recognises a resend by ``Workflow-Event-Id``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import random
import smtplib
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import partial
from typing import TYPE_CHECKING, Any

from workflow.audit import chain as _audit
from workflow.engine.compiled import event_of
from workflow.engine.deadlines import parse_time, stamp
from workflow.errors import NotFound, TextRefused, UsageError
from workflow.runtime import text as _text
from workflow.storage import outbox as _db

if TYPE_CHECKING:
    from workflow.engine.facade import Engine
    from workflow.records import Instance

SMTP_ENV = "WORKFLOW_SMTP_URL"
DEFAULT_MAX_ATTEMPTS = 8
#: The longest a sent delivery waits for its mark when marks are grouped (seconds).
MARK_WITHIN = 0.01
#: The longest hook URL and secret taken (a URL is shown in lists; a secret only keyed).
URL_MAX = 2_000
SECRET_MAX = 1_000
#: ``workflow_hooks.program`` and ``trigger_name`` are ``String(64)``.
HOOK_NAME_MAX = 64


def sign(secret: str, body: bytes) -> str:
    """The ``Workflow-Signature`` header value: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class HookNotFound(NotFound):
    def __init__(self, what: str, ident: int) -> None:
        super().__init__(f"no {what} {ident}")


@dataclass(frozen=True)
class Hook:
    id: int
    url: str
    program: str | None
    trigger: str | None
    has_secret: bool
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "program": self.program,
            "trigger": self.trigger,
            "secret": self.has_secret,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Delivery:
    """One outbox row: an event to deliver to one hook."""

    id: int
    hook: int
    event: int
    status: str
    attempts: int
    next_at: str
    last_error: str | None
    created_at: str
    delivered_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hook": self.hook,
            "event": self.event,
            "status": self.status,
            "attempts": self.attempts,
            "next_at": self.next_at,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
        }


@dataclass
class DeliveryStats:
    """What a delivery pass did."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    lost_lease: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "dead": self.dead,
            "lost_lease": self.lost_lease,
        }


def _check_url(value: object) -> str:
    url = _text.free_text(value, "hook URL", URL_MAX) or ""
    if any(c.isspace() for c in url):
        raise UsageError("a hook URL has no white space inside (percent-encode it)")
    try:
        parsed = urllib.parse.urlsplit(url)
        host, _ = parsed.hostname, parsed.port  # a bad port or IPv6 address: ValueError
    except ValueError as e:
        raise UsageError(f"not a usable hook URL ({e}): {url!r}") from None
    if parsed.scheme in ("http", "https") and host:
        if "@" in parsed.netloc:
            # Deliveries would not send it (the receiver checks Workflow-Signature instead),
            # and a listing would show the password to everyone who reads hooks.
            raise UsageError(
                "a hook URL carries no user name or password: the receiver authenticates "
                "deliveries by their Workflow-Signature (give the hook a secret)"
            )
        return url
    if parsed.scheme == "mailto" and "@" in parsed.path and len(parsed.path) <= 254:
        return url
    raise UsageError(f"a hook is an http(s):// URL or mailto:ADDRESS, not {url!r}")


def _check_secret(value: object) -> str | None:
    """A hook's HMAC secret as given (not normalised: its bytes key the signature); blank is
    none. Errors never quote it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TextRefused("hook secret", "must be text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TextRefused("hook secret", "is not valid UTF-8 text") from None
    if not value.strip():
        return None
    if len(value) > SECRET_MAX:
        raise TextRefused("hook secret", f"is {len(value)} characters long; at most "
                          f"{SECRET_MAX} allowed")
    for char in value:
        if _text.forbidden_in_text(char, multiline=False):
            raise TextRefused("hook secret", f"contains the control character "
                              f"{_text.describe(char)}")
    return value


class _Sender:
    """Sends one payload to one hook; keeps an HTTP connection per host and one SMTP
    session, reopened after an error."""

    def __init__(self, timeout: float, smtp_url: str | None) -> None:
        self.timeout = timeout
        self.smtp_url = smtp_url
        self._http: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._smtp: smtplib.SMTP | None = None

    def close(self) -> None:
        for conn in self._http.values():
            conn.close()
        self._http.clear()
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None

    def send(self, hook: _db.HookRow, event_hash: str, body: bytes, subject: str) -> None:
        headers = {"Content-Type": "application/json", "Workflow-Event-Id": event_hash}
        if hook.secret:
            headers["Workflow-Signature"] = sign(hook.secret, body)
        if hook.url.startswith("mailto:"):
            self._mail(hook.url[len("mailto:") :], headers, body, subject)
        else:
            self._post(hook.url, headers, body)

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> None:
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in (0, 1):
            conn = self._http.get(key)
            fresh = conn is None
            if conn is None:
                cls = (
                    http.client.HTTPSConnection
                    if parts.scheme == "https"
                    else http.client.HTTPConnection
                )
                conn = self._http[key] = cls(parts.netloc, timeout=self.timeout)
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._http.pop(key, None)
                if fresh or attempt:
                    raise DeliveryFailed(f"{type(e).__name__}: {e}") from e
                continue  # a kept connection the server closed: once more on a new one
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self._http.pop(key, None)
            if not 200 <= response.status < 300:
                raise DeliveryFailed(f"HTTP {response.status} {response.reason}")
            return

    def _mail(self, to: str, headers: dict[str, str], body: bytes, subject: str) -> None:
        if not self.smtp_url:
            raise DeliveryFailed(f"no SMTP server: set {SMTP_ENV} (smtp://host:port?from=...)")
        url = urllib.parse.urlsplit(self.smtp_url)
        query = dict(urllib.parse.parse_qsl(url.query))
        message = EmailMessage()
        message["From"] = query.get("from", "workflow@localhost")
        message["To"] = urllib.parse.unquote(to)
        message["Subject"] = subject
        message["Message-ID"] = f"<{headers['Workflow-Event-Id']}@workflow>"
        for name in ("Workflow-Event-Id", "Workflow-Signature"):
            if name in headers:
                message[name] = headers[name]
        message.set_content(body.decode("utf-8"))
        try:
            if self._smtp is None:
                cls = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
                smtp = cls(url.hostname or "localhost", url.port or 0, timeout=self.timeout)
                if query.get("starttls") == "1":
                    smtp.starttls()
                if url.username:
                    smtp.login(
                        urllib.parse.unquote(url.username),
                        urllib.parse.unquote(url.password or ""),
                    )
                self._smtp = smtp
            self._smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as e:
            if self._smtp is not None:
                self._smtp.close()
            self._smtp = None
            raise DeliveryFailed(f"{type(e).__name__}: {e}") from e


class DeliveryFailed(Exception):
    """A receiver did not take a delivery (retried later, or marked dead)."""


def _hook(r: _db.HookRow) -> Hook:
    return Hook(r.id, r.url, r.program, r.trigger_name, bool(r.secret), r.created_at)


def _delivery(r: _db.OutboxRow) -> Delivery:
    return Delivery(r.id, r.hook_id, r.event_id, r.status, r.attempts, r.next_at, r.last_error,
                    r.created_at, r.delivered_at)


class Notifications:
    """Hooks, the outbox and delivery over one Engine's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store

    # -- hooks

    def add_hook(
        self,
        url: str,
        *,
        program: str | None = None,
        trigger: str | None = None,
        secret: str | None = None,
    ) -> Hook:
        """A new receiver of every event (of ``program``, with ``trigger``, if given).

        Raises:
            UsageError: not an ``http(s)://`` or ``mailto:`` URL; a trigger, URL or secret
                the text rules refuse (``workflow.runtime.text``; the secret is never quoted).
            ProgramNotFound: ``program`` is not a known program.
        """
        url = _check_url(url)
        trigger = _text.optional_identifier(trigger, "trigger", HOOK_NAME_MAX)
        program = _text.optional_identifier(program, "program", HOOK_NAME_MAX)
        secret = _check_secret(secret)
        if program is not None:
            program = self.engine.program(program).id
        now = _audit.now_utc()
        hook_id = self.store.run(
            lambda conn: _db.add_hook(conn, url, program, trigger, secret, now),
            write=True,
        )
        return Hook(hook_id, url, program, trigger, bool(secret), now)

    def hooks(self) -> list[Hook]:
        """The receivers in force, oldest first (never their secrets)."""
        return [_hook(r) for r in self.store.run(_db.hooks)]

    def remove_hook(self, hook_id: int) -> Hook:
        """Remove a receiver (its pending deliveries are no longer sent); returns it.

        Raises:
            NotFound: no hook ``hook_id`` in force.
        """
        now = _audit.now_utc()
        row = self.store.run(lambda conn: _db.remove_hook(conn, hook_id, now), write=True)
        if row is None:
            raise HookNotFound("hook", hook_id)
        return _hook(row)

    # -- the outbox

    def outbox(
        self, dead: bool = False, limit: int = 1000, after: int | None = None
    ) -> list[Delivery]:
        """Deliveries not yet delivered (or only the dead ones), oldest first: at most
        ``limit``, with ids above ``after`` (the last id of the previous page)."""
        rows = self.store.run(lambda conn: _db.outbox(conn, dead, limit, after))
        return [_delivery(r) for r in rows]

    def counts(self) -> dict[str, int]:
        return self.store.run(_db.outbox_counts)

    def retry(self, delivery_id: int) -> Delivery:
        """Put a dead or pending delivery back in line now, its attempts counted afresh;
        returns it as it is now.

        Raises:
            NotFound: no such delivery, or it was delivered already.
        """
        now = _audit.now_utc()
        row = self.store.run(lambda conn: _db.retry(conn, delivery_id, now), write=True)
        if row is None:
            raise HookNotFound("undelivered outbox entry", delivery_id)
        return _delivery(row)

    # -- delivery

    def deliver(
        self,
        *,
        once: bool = True,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        batch: int = 50,
        timeout: float = 10.0,
        backoff: float = 2.0,
        max_backoff: float = 3600.0,
        idle: float = 1.0,
        smtp_url: str | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        mark_within: float = MARK_WITHIN,
    ) -> DeliveryStats:
        """Deliver due outbox entries: one pass over what is due now (``once``), else keep
        running until ``should_stop()``. A failed attempt waits ``backoff * 2**attempts``
        seconds (at most ``max_backoff``) times a random factor 0.5-1.5; the
        ``max_attempts``-th failure marks the delivery dead.

        Each batch is leased in one short transaction and its instances are read in another.
        Outcomes are marked in one short transaction per group: as soon as an answer comes
        ``mark_within`` seconds or more after the oldest unmarked delivery's send began, and
        at the end of the batch. A worker killed between sending and marking sends again only
        the deliveries it had not marked: those whose sends began in its last ``mark_within``
        seconds, and at most one when each answer takes that long or longer."""
        if max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1")
        if mark_within < 0:
            raise UsageError("mark_within must not be negative")
        worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        sender = _Sender(timeout, smtp_url if smtp_url is not None else os.environ.get(SMTP_ENV))
        stats = DeliveryStats()
        lease = dt.timedelta(seconds=timeout * (batch + 1) + 60)
        marks = _Marks(self.store, worker, stats, mark_within)
        try:
            while True:
                now = parse_time(_audit.now_utc())
                claimed = self.store.run(
                    partial(_db.claim, worker=worker, now=stamp(now), until=stamp(now + lease),
                            limit=batch),
                    write=True,
                )
                if not claimed:
                    if once or should_stop():
                        return stats
                    time.sleep(idle)
                    continue
                # Every instance of the batch in one read (the engine's own read side).
                records = self.engine._queries.get_many({e.instance_id for _, _, e in claimed})
                instances: dict[int, dict[str, Any]] = {}
                try:
                    for row, hook, event_row in claimed:
                        self._one(sender, marks, row, hook, event_row, records, instances,
                                  max_attempts, backoff, max_backoff)
                finally:
                    marks.flush()
                if should_stop():
                    return stats
        finally:
            sender.close()

    def _one(
        self,
        sender: _Sender,
        marks: _Marks,
        row: _db.OutboxRow,
        hook: _db.HookRow,
        event_row: Any,
        records: dict[int, Instance],
        instances: dict[int, dict[str, Any]],
        max_attempts: int,
        backoff: float,
        max_backoff: float,
    ) -> None:
        event = event_of(event_row)
        instance = instances.get(event_row.instance_id)
        if instance is None:
            record = records.get(event_row.instance_id)
            if record is None:  # not read with the batch: read it alone (or InstanceNotFound)
                record = self.engine.get(event_row.instance_id)
            instance = instances[event_row.instance_id] = record.to_dict()
        body = json.dumps(
            {"event": event.to_dict(), "instance": instance},
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")
        subject = f"[workflow] {instance['program']} #{event.instance}: {event.trigger}"
        began = time.monotonic()
        try:
            sender.send(hook, event.hash, body, subject)
        except DeliveryFailed as e:
            error = str(e)
            dead = row.attempts + 1 >= max_attempts
            delay = min(backoff * 2**row.attempts, max_backoff) * random.uniform(0.5, 1.5)
            later = stamp(parse_time(_audit.now_utc()) + dt.timedelta(seconds=delay))
            marks.failed(row.id, began, later, error, dead)
            return
        marks.delivered(row.id, began)


class _Marks:
    """The outcomes of sent deliveries, written in one short transaction per group (see
    :meth:`Notifications.deliver`), only for deliveries whose lease the worker still holds."""

    def __init__(self, store: Any, worker: str, stats: DeliveryStats, within: float) -> None:
        self.store = store
        self.worker = worker
        self.stats = stats
        self.within = within
        self.done: list[int] = []
        self.failures: list[tuple[int, str, str, bool]] = []
        self.first: float | None = None

    def delivered(self, outbox_id: int, began: float) -> None:
        """``outbox_id`` was delivered; its send began at ``began`` (``time.monotonic``)."""
        self.done.append(outbox_id)
        self._added(began)

    def failed(self, outbox_id: int, began: float, next_at: str, error: str, dead: bool
               ) -> None:
        self.failures.append((outbox_id, next_at, error, dead))
        self.stats.errors.append(error)
        self._added(began)

    def _added(self, began: float) -> None:
        if self.first is None:
            self.first = began
        if time.monotonic() - self.first >= self.within:
            self.flush()

    def flush(self) -> None:
        done, failures = self.done, self.failures
        if not done and not failures:
            return
        self.done, self.failures, self.first = [], [], None
        now = _audit.now_utc()
        worker = self.worker

        def work(conn: Any) -> tuple[int, list[bool]]:
            marked = _db.delivered(conn, done, worker, now)
            kept = [_db.failed(conn, i, worker, later, error, dead)
                    for i, later, error, dead in failures]
            return marked, kept

        marked, kept = self.store.run(work, write=True)
        self.stats.delivered += marked
        self.stats.lost_lease += len(done) - marked
        for (_, _, _, dead), ok in zip(failures, kept, strict=True):
            if not ok:
                self.stats.lost_lease += 1
            elif dead:
                self.stats.dead += 1
            else:
                self.stats.failed += 1
