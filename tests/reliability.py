"""Shared pieces of the reliability suite (concurrency, crashes, tampering, hostile input,
environment faults): counts that grow with ``WORKFLOW_SOAK=1``, the figures report, the
independent consistency check run after every crash, and the functions that worker processes
run (kept in a plain module so that they pickle by reference into spawned and forked children).

Figures: with ``WORKFLOW_RELIABILITY_REPORT=FILE`` set, each reliability test merges what it
tried into that JSON file under ``fast`` or ``soak`` and its test id (a re-run replaces its own
entry). ``python tests/reliability.py FILE`` prints the totals as the table docs/reliability.md
shows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import json
import os
import random
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOAK = os.environ.get("WORKFLOW_SOAK", "").strip() not in ("", "0")
REPORT_ENV = "WORKFLOW_RELIABILITY_REPORT"


def scaled(fast: int, soak: int) -> int:
    """``fast`` in the CI run, ``soak`` under ``WORKFLOW_SOAK=1``."""
    return soak if SOAK else fast


def record(test: str, kind: str, **figures: Any) -> None:
    """Merge this test's figures into the report file (if ``WORKFLOW_RELIABILITY_REPORT``)."""
    path = os.environ.get(REPORT_ENV, "").strip()
    if not path:
        return
    import fcntl

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        mode = "soak" if SOAK else "fast"
        section = data.setdefault(mode, {})
        section[test] = {"kind": kind, **figures,
                         "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False),
                       encoding="utf-8")
        tmp.replace(target)


# --------------------------------------------------------------------------- the trail, raw


@dataclass
class Trail:
    """Every instance row and event row, read with plain SQL (not through the engine)."""

    instances: dict[int, dict[str, Any]]
    events: dict[int, list[dict[str, Any]]]  # instance id -> its events by seq
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def event_count(self) -> int:
        return sum(len(v) for v in self.events.values())


def read_trail(url: str) -> Trail:
    import sqlalchemy as sa

    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            instances = {r["id"]: dict(r) for r in conn.execute(sa.text(
                "SELECT * FROM workflow_instances ORDER BY id")).mappings()}
            events: dict[int, list[dict[str, Any]]] = {}
            notes: Counter[str] = Counter()
            for r in conn.execute(sa.text(
                    "SELECT * FROM workflow_events ORDER BY instance_id, seq")).mappings():
                events.setdefault(r["instance_id"], []).append(dict(r))
                if r["note"]:
                    notes[r["note"]] += 1
    finally:
        eng.dispose()
    return Trail(instances, events, notes)


def assert_consistent(url: str) -> Trail:
    """The checks every reliability test ends with, on a freshly opened engine.

    ``verify()`` passes; and, independently of it: every instance's events are numbered
    1..n without a gap, the instance row is at version n, its state, active leaves, head hash
    and updated_at are those of its last event, and no event belongs to no instance.
    """
    from workflow import AllowAll, Engine

    with Engine(url, policy=AllowAll()) as fresh:
        result = fresh.verify()
    assert result.ok, result.problems[:5]
    trail = read_trail(url)
    assert set(trail.events) <= set(trail.instances), "events of no instance"
    for iid, row in trail.instances.items():
        evs = trail.events.get(iid, [])
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), (iid, "seq gap")
        last = evs[-1]
        assert row["version"] == last["seq"], iid
        assert row["head_hash"] == last["hash"], iid
        assert row["active"] == last["to_state"], iid
        assert row["state"] == json.loads(last["to_state"])[0].split(".")[0], iid
        assert row["updated_at"] == last["at"], iid
        for prev, nxt in itertools.pairwise(evs):
            assert nxt["prev_hash"] == prev["hash"], (iid, nxt["seq"])
    assert result.events_checked == trail.event_count
    return trail


# --------------------------------------------------------------------------- the command line


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def run_cli(capsys: Any, args: list[str]) -> Run:
    """``workflow ARGS`` in-process, as the console script runs it: stdout and stderr are
    UTF-8 streams with the error handlers a real process has (strict, backslashreplace)."""
    from workflow.cli.main import main

    if capsys is not None:
        capsys.readouterr()
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            out.flush()
            err.flush()
    if capsys is not None:
        stray = capsys.readouterr()
        assert stray.out == stray.err == "", f"printed around the streams: {stray}"
    return Run(code, out.buffer.getvalue().decode("utf-8", "replace"),  # type: ignore[attr-defined]
               err.buffer.getvalue().decode("utf-8", "replace"))  # type: ignore[attr-defined]


def cli_outcome(capsys: Any, *args: str) -> tuple[int, str, str]:
    """``workflow ARGS`` in-process as :func:`run_cli` runs it: (exit code, stdout, stderr)."""
    r = run_cli(capsys, list(args))
    return r.code, r.out, r.err


def control_characters(text: str) -> list[str]:
    """Control characters (CR, ESC, ...) that would let an argument rewrite the terminal."""
    return [c for c in text if unicodedata.category(c) == "Cc"]


def assert_one_error_line(r: Run) -> None:
    """One line of text, or with --json one JSON error object carrying the exit code."""
    assert "Traceback" not in r.err + r.out, r.err
    if r.err.startswith("{"):
        assert json.loads(r.err)["error"]["exit_code"] == r.code, r.err
    else:
        assert r.err.startswith("workflow: error: "), r.err
    assert r.err.endswith("\n") and r.err.count("\n") == 1, f"not one line: {r.err!r}"
    assert not control_characters(r.err[:-1]), f"control characters in: {r.err!r}"
    assert r.out == "", f"output beside an error: {r.out[:200]!r}"


# --------------------------------------------------------------------------- crash children


class Ack:
    """Lines a child appends (unbuffered, one write each) after each acknowledged change."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, *parts: object) -> None:
        os.write(self.fd, (" ".join(str(p) for p in parts) + "\n").encode())


def read_acks(path: Path) -> list[list[str]]:
    """The complete lines a killed child acknowledged (a torn last line is ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return [line.split(" ") for line in lines[:-1] if line]


#: Tambons of Lop Buri, Sing Buri and Ang Thong: start_many's areas in the crash tests.
def crash_areas() -> list[str]:
    from workflow import areas

    return [a.code for p in ("16", "17", "15") for a in areas.subdistricts_within(p)]


START_BATCH = 4  # start_many's transaction size in the crash test
START_CALL = 12  # areas per start_many call (three transactions)


def ready_path(ack_path: str) -> str:
    """The file a crash child creates once it is connected and about to change things."""
    return f"{ack_path}.ready"


def crash_child(url: str, mode: str, cycle: int, ack_path: str, instance_ids: Sequence[int],
                seed: int) -> None:
    """Change the database in a loop until killed, acknowledging each committed change.

    ``fire``: single report_employment fires, note ``f:CYCLE:N``; ack ``F instance seq note``.
    ``fire_many``: batches of 1-6 fires over the instances, each event's note
    ``b:CYCLE:BATCH:SIZE``; ack ``B CYCLE:BATCH SIZE``.
    ``start_many``: calls of 12 areas in transactions of 4, title ``s:CYCLE:CALL``, fiscal
    year 2400 + CYCLE; ack ``S title started_so_far`` after each transaction.
    ``init``: create the schema; ack ``I begin`` before and ``I done`` after.
    """
    from helpers import COORDINATOR, OFFICER
    from workflow import AllowAll, Engine

    rng = random.Random(seed)
    ack = Ack(ack_path)
    engine = Engine(url, policy=AllowAll())
    if mode != "init":
        # Connected and warmed up: the parent aims its kill from here, so a slow connect on a
        # loaded machine does not eat the whole window (``ready_path`` is beside the acks).
        if instance_ids:
            engine.get(instance_ids[0])
        Path(ready_path(ack_path)).touch()
    if mode == "init":
        ack("I", "begin")
        engine.init()
        ack("I", "done")
        time.sleep(60)
        return
    n = 0
    if mode == "fire":
        while True:
            n += 1
            note = f"f:{cycle}:{n}"
            r = engine.fire(rng.choice(instance_ids), "report_employment", actor="crash",
                            role=COORDINATOR, evidence={"date": "2564-03-01", "workers": n},
                            note=note)
            ack("F", r.event.instance, r.event.seq, note)
    elif mode == "fire_many":
        while True:
            n += 1
            size = rng.randint(1, 6)
            note = f"b:{cycle}:{n}:{size}"
            engine.fire_many([
                {"instance": rng.choice(instance_ids), "trigger": "report_employment",
                 "actor": "crash", "role": COORDINATOR, "note": note,
                 "evidence": {"date": "2564-03-01", "workers": i}}
                for i in range(size)])
            ack("B", f"{cycle}:{n}", size)
    elif mode == "start_many":
        areas = crash_areas()
        programs = ("one-plan", "leader-development", "khok-nong-na")
        for program in programs:
            for call in range(len(areas) // START_CALL):
                n += 1
                title = f"s:{cycle}:{n}"
                chunk = areas[call * START_CALL:(call + 1) * START_CALL]
                done = [0]

                def progress(k: int, title: str = title, done: list[int] = done) -> None:
                    done[0] += k
                    ack("S", title, done[0])

                engine.start_many(program, areas=chunk, fiscal_year=2400 + cycle,
                                  actor="crash", role=OFFICER, title=title,
                                  batch_size=START_BATCH, progress=progress)
        time.sleep(60)
    else:  # pragma: no cover
        raise ValueError(mode)


# --------------------------------------------------------------------------- two hosts


def host_worker(url: str, host: str, shared: Sequence[int], own: Sequence[int], threads: int,
                rounds: int, batch: int, seed: int, start_at: float
                ) -> tuple[list[tuple[int, int]], list[str], dict[str, int]]:
    """One engine "host" (its own process, Engine and connection pool) with ``threads``
    request threads. Host ``A`` fires ``fire_many`` batches of ``batch`` fires spread over
    the shared and its own instances; any other host fires one at a time.

    Returns every committed (instance, seq), the class name of every exception, and for
    each committed batch its note and size.
    """
    from helpers import COORDINATOR
    from workflow import AllowAll, Engine

    engine = Engine(url, policy=AllowAll())
    successes: list[tuple[int, int]] = []
    errors: list[str] = []
    batches: dict[str, int] = {}
    lock = threading.Lock()
    targets = list(shared) + list(own)

    def work(t: int) -> None:
        rng = random.Random(seed * 100 + t)
        for r in range(rounds):
            note = f"{host}:{t}:{r}"
            try:
                if host == "A":
                    results = engine.fire_many([
                        {"instance": rng.choice(targets), "trigger": "report_employment",
                         "actor": f"host{host}", "role": COORDINATOR, "note": note,
                         "evidence": {"date": "2564-03-01", "workers": i}}
                        for i in range(batch)])
                else:
                    results = [engine.fire(rng.choice(targets), "report_employment",
                                           actor=f"host{host}", role=COORDINATOR, note=note,
                                           evidence={"date": "2564-03-01", "workers": r})]
            except Exception as e:  # the test decides what is acceptable
                with lock:
                    errors.append(type(e).__name__)
            else:
                with lock:
                    successes.extend((x.event.instance, x.event.seq) for x in results)
                    batches[note] = len(results)

    try:
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    finally:
        engine.close()
    return successes, errors, batches


def stage_worker(url: str, instance: int, trigger: str, start_at: float
                 ) -> tuple[str, str | None]:
    """Fire one leader-development stage (its usual role and evidence) at the given moment;
    return (trigger, None) or (trigger, the exception's class name)."""
    from helpers import LEADER_STEPS
    from workflow import AllowAll, Engine

    role, evidence = LEADER_STEPS.get(trigger, ("provincial_officer", {"reason": "race"}))
    with Engine(url, policy=AllowAll()) as engine:
        engine.registry.programs()
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            engine.fire(instance, trigger, actor="racer", role=role, evidence=evidence)
        except Exception as e:
            return trigger, type(e).__name__
    return trigger, None


# --------------------------------------------------------------------------- SQLite lock holder

#: A separate process that takes SQLite's write lock with plain sqlite3 and holds it.
HOLD_LOCK = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE IF NOT EXISTS intruder_lock (x)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
print("released", flush=True)
"""


# --------------------------------------------------------------------------- summary


KIND_TITLES = {"concurrency": "Concurrency (real processes)", "crash": "Crashes (SIGKILL)",
               "tamper": "Tampering (Hypothesis)", "hostile": "Hostile input (Hypothesis)",
               "faults": "Environment faults"}


NOT_ADDITIVE = {"processes", "threads", "stages", "init_seconds"}


def summarize(data: Mapping[str, Any]) -> str:
    """The report as the Markdown tables of docs/reliability.md: one per kind of test, one
    row per test, a total row."""
    out = []
    for mode in ("fast", "soak"):
        tests = data.get(mode)
        if not tests:
            continue
        out.append(f"### {mode} run\n")
        for kind in KIND_TITLES:
            entries = {t: e for t, e in sorted(tests.items()) if e.get("kind") == kind}
            if not entries:
                continue
            columns: list[str] = []
            for e in entries.values():
                columns += [k for k in e if k not in ("kind", "at") and k not in columns]
            out.append(f"**{KIND_TITLES[kind]}**\n")
            out.append("| test | " + " | ".join(c.replace("_", " ") for c in columns) + " |")
            out.append("|---" * (len(columns) + 1) + "|")
            totals: Counter[str] = Counter()
            for test, e in entries.items():
                cells = []
                for c in columns:
                    v = e.get(c, "")
                    if isinstance(v, dict):
                        v = "; ".join(f"{k} {n}" for k, n in sorted(v.items()))
                    elif (isinstance(v, int | float) and not isinstance(v, bool)
                          and c not in NOT_ADDITIVE):
                        totals[c] += v
                    cells.append(str(v))
                name = test.split("::", 1)[-1]
                out.append(f"| {name} | " + " | ".join(cells) + " |")
            out.append("| **total** | " + " | ".join(
                str(round(totals[c], 1)) if c in totals else "" for c in columns) + " |")
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    with suppress(IndexError):
        print(summarize(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
