"""Deadlines, escalation and notifications (issue 15, CONTRACT §10), on both backends."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from workflow import AllowAll, Engine
from workflow.cli.main import cli
from workflow.programs.registry import Registry

LOPBURI = "160117"
SECRET = "s3cret"


def _with_due(tmp_path: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    """Each bundled program as its next version with `due: {days: 2}` and an escalation on its
    initial state; returns the directory and (program, start role, escalation role)."""
    out = tmp_path / "defs"
    out.mkdir(exist_ok=True)
    programs = []
    for program in Registry().programs():
        text = program.source_text
        initial, escalate = program.initial, program.roles[-1]
        head = f"\n  {initial}:\n"
        assert head in text, program.id
        at = text.index(head) + len(head)
        indent = "    "
        version = f"\nversion: {program.version}\n"
        assert version in text, program.id
        text = (text[:at] + f"{indent}due: {{days: 2}}\n{indent}escalate: [{escalate}]\n"
                + text[at:]).replace(version, f"\nversion: {program.version + 1}\n", 1)
        (out / f"{program.id}.yaml").write_text(text, encoding="utf-8")
        programs.append((program.id, program.start_roles[0], escalate))
    return out, programs


def _later(days: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


@pytest.fixture
def due_engine(engine: Engine, tmp_path: Path) -> Iterator[tuple[Engine, list[Any]]]:
    defs, programs = _with_due(tmp_path)
    names = [p for p, _, _ in programs]
    eng = Engine(engine.url, [defs], policy=AllowAll(), allow_override=names)
    try:
        yield eng, programs
    finally:
        eng.close()


def test_tick_marks_each_state_entry_overdue_once(due_engine: tuple[Engine, Any]) -> None:
    """tick with a fake clock over every bundled program: one overdue event per entry."""
    eng, programs = due_engine
    ids = [eng.start(p, area=LOPBURI, fiscal_year=2565, actor="somchai", role=r).id
           for p, r, _ in programs]
    inst = eng.get(ids[0])
    assert inst.due_at is not None and not inst.overdue
    assert inst.to_dict()["due_at"] == inst.due_at
    assert eng.tick(_later(1)).recorded == ()
    assert sorted(i for i, _ in eng.tick(_later(3)).recorded) == sorted(ids)
    assert eng.tick(_later(3)).recorded == ()
    assert eng.tick(_later(30)).recorded == ()
    for i in ids:
        got = eng.get(i)
        assert got.overdue
        events = eng.history(i)
        assert [e.trigger for e in events].count("overdue") == 1
        late = events[-1]
        assert (late.actor, late.role, late.policy) == ("system", "system", "system-clock")
    assert eng.verify().ok


def test_tick_cli_json_and_list_overdue(due_engine: tuple[Engine, Any]) -> None:
    """`workflow tick --now --json`, `list --overdue` and the report's overdue column."""
    eng, programs = due_engine
    program, role, _ = programs[0]
    inst = eng.start(program, area=LOPBURI, fiscal_year=2565, actor="somchai", role=role)
    defs = ["--definitions", str(Path(eng.registry.get(program).source_file).parent)]
    over = [a for p, _, _ in programs for a in ("--allow-override", p)]
    base = ["--db", eng.url, *defs, *over]
    runner = CliRunner()
    r = runner.invoke(cli, [*base, "tick", "--now", _later(5), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["recorded"] == 1
    r = runner.invoke(cli, [*base, "list", "--overdue", "--json"])
    assert r.exit_code == 0, r.output
    assert [i["id"] for i in json.loads(r.output)] == [inst.id]
    report = eng.report(program=program)
    assert sum(row.overdue for row in report.rows) == 1
    assert report.to_dict()["rows"][0]["overdue"] == 1


def _tick_process(url: str, defs: str, names: list[str], now: str, start_at: float) -> int:
    eng = Engine(url, [defs], policy=AllowAll(), allow_override=names)
    try:
        time.sleep(max(0.0, start_at - time.time()))
        return len(eng.tick(now).recorded)
    finally:
        eng.close()


def test_two_concurrent_ticks_record_once(due_engine: tuple[Engine, Any], tmp_path: Path) -> None:
    """Two tick processes at once record one overdue event per instance, together."""
    eng, programs = due_engine
    program, role, _ = programs[0]
    ids = [eng.start(program, area=LOPBURI, fiscal_year=2565, actor="s", role=role,
                     allow_duplicate=True).id for _ in range(20)]
    names = [p for p, _, _ in programs]
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0
    with ctx.Pool(2) as pool:
        counts = pool.starmap(_tick_process, [(eng.url, str(tmp_path / "defs"), names,
                                               _later(5), start_at)] * 2)
    assert sum(counts) == len(ids)
    for i in ids:
        assert [e.trigger for e in eng.history(i)].count("overdue") == 1
    assert eng.verify().ok


def test_escalation_visible_in_show_actor(engine: Engine, tmp_path: Path) -> None:
    """The escalation role sees an overdue instance in `show --actor` and in my work."""
    defs, programs = _with_due(tmp_path)
    names = [p for p, _, _ in programs]
    program, role, escalate = next(p for p in programs if p[0] == "one-plan")
    eng = Engine(engine.url, [defs], allow_override=names)
    try:
        eng.grant("somchai", role, area=LOPBURI)
        eng.grant("boss", escalate, area="16")
        inst = eng.start(program, area=LOPBURI, fiscal_year=2565, actor="somchai", role=role)
        from workflow.engine.work import my_work

        assert [w.instance.id for w in my_work(eng, "boss")] == []
        eng.tick(_later(3))
        assert [(w.instance.id, w.escalated) for w in my_work(eng, "boss")] == [
            (inst.id, (escalate,))]
        base = ["--db", eng.url, "--definitions", str(defs),
                *[a for n in names for a in ("--allow-override", n)]]
        r = CliRunner().invoke(cli, [*base, "show", str(inst.id), "--actor", "boss", "--json"])
        assert r.exit_code == 0, r.output
        shown = json.loads(r.output)
        assert shown["overdue"] is True and shown["escalated_to"] == [escalate]
        r = CliRunner().invoke(cli, [*base, "show", str(inst.id), "--actor", "boss"])
        assert "escalated" in r.output
        assert eng.verify().ok
    finally:
        eng.close()


# --------------------------------------------------------------------------- delivery


class _Receiver:
    """A webhook receiver on 127.0.0.1 (http.server in a thread) that records deliveries."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.got: list[tuple[str, bytes, str]] = []
        self.status = status
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if delay:
                    time.sleep(delay)
                receiver.got.append((self.headers["Workflow-Event-Id"], body,
                                     self.headers.get("Workflow-Signature", "")))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def _story(eng: Engine) -> int:
    import helpers

    inst, _ = helpers.lopburi_story(eng)
    return inst.id


def test_webhook_gets_every_event_once_signed(engine: Engine, receiver: _Receiver) -> None:
    """deliver POSTs every event once, by event id, with a signature that verifies."""
    engine.notifications.add_hook(receiver.url, secret=SECRET)
    _story(engine)
    hashes = [e.hash for e in engine.audit_log()]
    stats = engine.notifications.deliver(once=True)
    assert stats.delivered == len(hashes)
    assert engine.notifications.deliver(once=True).delivered == 0
    assert sorted(h for h, _, _ in receiver.got) == sorted(hashes)
    for event_id, body, signature in receiver.got:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected)
        payload = json.loads(body)
        assert payload["event"]["hash"] == event_id
        assert payload["instance"]["id"] == payload["event"]["instance"]
    assert engine.notifications.outbox() == []


def test_hook_filters_and_rolled_back_fire(engine: Engine, receiver: _Receiver) -> None:
    """A hook for one trigger gets only that; a refused (rolled-back) fire sends nothing."""
    import helpers

    engine.notifications.add_hook(receiver.url, trigger="kickoff")
    inst = helpers.start_lopburi(engine)
    with pytest.raises(Exception):  # noqa: B017 - any refusal rolls the fire back
        engine.fire(inst.id, "kickoff", actor="somchai", role=helpers.COORDINATOR,
                    evidence={"date": "not a date"})
    assert engine.notifications.outbox() == []
    helpers.leader_fire(engine, inst.id, "kickoff")
    assert engine.notifications.deliver(once=True).delivered == 1
    assert [json.loads(b)["event"]["trigger"] for _, b, _ in receiver.got] == ["kickoff"]


def test_receiver_down_retries_then_dead(engine: Engine) -> None:
    """A receiver that answers 500 gets the retries, then the dead mark; retry re-queues."""
    down = _Receiver(status=500)
    try:
        engine.notifications.add_hook(down.url)
        import helpers

        helpers.start_lopburi(engine)
        for _ in range(3):
            engine.notifications.deliver(once=True, max_attempts=3, backoff=0.0)
        assert len(down.got) == 3
        dead = engine.notifications.outbox(dead=True)
        assert [(d.status, d.attempts) for d in dead] == [("dead", 3)]
        assert "HTTP 500" in (dead[0].last_error or "")
        down.status = 200
        engine.notifications.retry(dead[0].id)
        assert engine.notifications.deliver(once=True).delivered == 1
    finally:
        down.close()


def test_retry_keeps_a_live_workers_lease(engine: Engine) -> None:
    """`outbox retry` of a delivery a live worker has leased (it is sending it now) leaves the
    lease: no second worker can claim it; a lease that ran out is cleared and claimable."""
    from workflow.audit.chain import now_utc
    from workflow.storage import outbox as db

    engine.notifications.add_hook("http://127.0.0.1:9/unused")
    import helpers

    helpers.start_lopburi(engine)
    store = engine.store
    now = now_utc()
    later = "9999-12-31T00:00:00.000000Z"
    (claimed,) = store.run(lambda c: db.claim(c, "worker-a", now, later, 10), write=True)
    delivery = claimed[0].id
    engine.notifications.retry(delivery)
    assert store.run(lambda c: db.claim(c, "worker-b", now_utc(), later, 10), write=True) == []
    row = store.run(lambda c: db.retry(c, delivery, now_utc()), write=True)
    assert row is not None and row.claimed_by == "worker-a"
    # The lease runs out (worker-a died): a retry clears it, another worker may claim it.
    store.run(lambda c: c.execute(db.outbox_t.update().values(
        claimed_until="2000-01-01T00:00:00.000000Z")), write=True)
    engine.notifications.retry(delivery)
    (again,) = store.run(lambda c: db.claim(c, "worker-b", now_utc(), later, 10), write=True)
    assert again[0].id == delivery and again[0].claimed_by == "worker-b"


def test_smtp_hook(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mailto: hook sends each event as an e-mail through WORKFLOW_SMTP_URL."""
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")
    got: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            got.append(envelope)
            return "250 OK"

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = aiosmtpd.Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setenv("WORKFLOW_SMTP_URL", f"smtp://127.0.0.1:{port}?from=wf@example.org")
        engine.notifications.add_hook("mailto:office@example.org", secret=SECRET)
        import helpers

        helpers.start_lopburi(engine)
        assert engine.notifications.deliver(once=True).delivered == 1
        assert len(got) == 1 and got[0].rcpt_tos == ["office@example.org"]
        assert b"Workflow-Event-Id" in got[0].content
    finally:
        controller.stop()


def test_on_commit_after_commit_only(engine: Engine) -> None:
    """on_commit callbacks get typed events after the commit, none for a rollback."""
    import helpers

    seen: list[Any] = []
    committed: list[bool] = []

    def callback(event: Any) -> None:
        seen.append(event)
        committed.append(any(e.hash == event.hash for e in engine.history(event.instance)))

    remove = engine.on_commit(callback)
    inst = helpers.start_lopburi(engine)
    with pytest.raises(Exception):  # noqa: B017
        engine.fire(inst.id, "no_such_trigger", actor="a", role=helpers.COORDINATOR)
    helpers.leader_fire(engine, inst.id, "kickoff")
    assert [e.trigger for e in seen] == ["start", "kickoff"]
    assert all(committed) and all(e.id > 0 for e in seen)
    remove()
    helpers.start_lopburi(engine, area="160101")
    assert len(seen) == 2


def test_kill_9_worker_mid_batch_resends_at_most_once(engine: Engine, tmp_path: Path) -> None:
    """kill -9 of `workflow deliver` mid-batch, a few times: each event arrives, at most one
    extra copy per kill."""
    import helpers

    slow = _Receiver(delay=0.02)
    try:
        engine.notifications.add_hook(slow.url)
        for _ in range(60):
            helpers.start_lopburi(engine, allow_duplicate=True)
        hashes = {e.hash for e in engine.audit_log()}
        env = {**os.environ, "WORKFLOW_DB": engine.url}
        kills = 0
        for _ in range(3):
            before = len(slow.got)
            proc = subprocess.Popen(
                [sys.executable, "-m", "workflow.cli.main", "deliver", "--batch", "50",
                 "--timeout", "5"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.time() + 20
            while len(slow.got) == before and time.time() < deadline:
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        # The killed workers' leases run out; then one pass delivers the rest.
        from workflow.storage import outbox as _db

        engine.store.run(lambda conn: conn.execute(
            _db.outbox_t.update().values(claimed_until=None)), write=True)
        engine.notifications.deliver(once=True)
        ids = [h for h, _, _ in slow.got]
        assert set(ids) == hashes
        assert len(ids) - len(set(ids)) <= kills
    finally:
        slow.close()


def _count_writes(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list counting the write transactions the engine's store runs from now on."""
    writes = [0]
    run = engine.store.run

    def counted(fn: Any, *, write: bool = False, timeout: float | None = None) -> Any:
        writes[0] += write
        return run(fn, write=write, timeout=timeout)

    monkeypatch.setattr(engine.store, "run", counted)
    return writes


def test_fast_receiver_marks_a_batch_in_one_transaction(
        engine: Engine, receiver: _Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers within mark_within are marked in one transaction; mark_within=0: one each."""
    import helpers

    engine.notifications.add_hook(receiver.url)
    for _ in range(12):
        helpers.start_lopburi(engine, allow_duplicate=True)
    writes = _count_writes(engine, monkeypatch)
    assert engine.notifications.deliver(once=True, mark_within=60).delivered == 12
    assert writes[0] == 3
    for _ in range(12):
        helpers.start_lopburi(engine, allow_duplicate=True)
    writes[0] = 0
    assert engine.notifications.deliver(once=True, mark_within=0).delivered == 12
    assert writes[0] == 1 + 12 + 1
    assert len(receiver.got) == 24 and engine.notifications.outbox() == []


def test_slow_answers_are_marked_before_the_next_send(engine: Engine) -> None:
    """With answers slower than mark_within, each delivery is marked before the next send."""
    import helpers

    seen: list[int] = []
    slow = _Receiver(delay=0.03)
    handler = slow.server.RequestHandlerClass
    post = handler.do_POST  # type: ignore[attr-defined]

    def counting(self: Any) -> None:
        seen.append(engine.notifications.counts().get("delivered", 0))
        post(self)

    handler.do_POST = counting  # type: ignore[attr-defined]
    try:
        engine.notifications.add_hook(slow.url)
        for _ in range(5):
            helpers.start_lopburi(engine, allow_duplicate=True)
        assert engine.notifications.deliver(once=True).delivered == 5
        assert seen == [0, 1, 2, 3, 4]
    finally:
        slow.close()


@pytest.mark.parametrize("url", [
    "ftp://example.org/hook", "https:///no-host", "http://example.org:99999/",
    "https://bob:pw123@example.org/hook", "https://token@example.org/hook",
    "mailto:nobody", "https://example.org/a b",
])
def test_a_hook_url_deliveries_cannot_use_is_refused_without_echoing_a_password(
        engine: Engine, url: str) -> None:
    """A hook URL deliveries could not use (another scheme, no host, a bad port, a user name
    or password, which they would not send: the signature authenticates them) is a
    UsageError naming the problem, nothing is stored, and a password is never repeated."""
    from workflow.errors import UsageError

    with pytest.raises(UsageError) as caught:
        engine.notifications.add_hook(url)
    assert "pw123" not in str(caught.value)
    assert engine.notifications.hooks() == []
