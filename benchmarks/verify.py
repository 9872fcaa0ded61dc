"""verify's rate and memory over a 1,000,000-event database, against the raw driver's re-hash.

The database is ``reads.py``'s (100,000 instances, ~1,000,000 events of the three programs,
written as the engine writes them today: ``wf3`` hashes; ``--quick``: 5,000 / ~50,000), built
once and reused from ``--db``. Each round runs, in a fresh subprocess each and in rotating
order:

* ``raw``: the baseline: the ``sqlite3`` / ``psycopg`` driver streams the same 18 columns in
  (instance, seq) order and re-hashes each event (``chain.encode_event``: wf3 for these
  rows) checking each ``prev_hash`` link, in one process: no other check, no instance rows;
* ``jobs=1``: ``verify(store, jobs=1)``, everything in one process;
* ``jobs=2``: ``verify(store, jobs=2)``, this process scanning one half of the instances
  and a worker process the other (what ``--jobs auto`` does on a 2-CPU machine).

Printed: medians over the rounds of events/s, each as a ratio to the raw baseline of the same
round set, and peak memory: the coordinator's peak RSS (VmHWM), the worker's (its VmHWM, read
from /proc just before verify stops it: ``ru_maxrss`` of children over-counts, it keeps the
parent's pages from before ``exec``) and their sum (both peaks at once: an upper bound of
the total). The verify children import only what ``workflow audit verify`` needs (the
Store and workflow.audit.verify), not this harness's helpers (which pull in the engine's
machine code), so their memory is verify's. Then one ``jobs=2`` and one ``jobs=1`` verify of
a database a tenth the size, to show memory flat in events.

    python benchmarks/verify.py [--db PATH] [--small-db PATH] [--rounds N] [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _child  # the standard library only: a verify child loads nothing more

TARGET_RATE = 200_000
TARGET_RSS_MB = 100.0
KINDS = ("raw", "jobs=1", "jobs=2")


def child(kind: str, backend: str, url: str, conninfo: str | None, path: str | None) -> None:
    """One timed run in this (fresh) process; prints one JSON line."""
    workers: list[float] = []
    if kind == "raw":
        import _common as c

        db = c.Database(backend, url, path=Path(path) if path else None, conninfo=conninfo)
        conn = db.raw()
        t0 = time.perf_counter()
        out = raw_rehash(db, conn)
    else:
        from workflow.audit import verify as _verify
        from workflow.storage.store import Store

        stop = _verify._Workers.stop

        def measured_stop(self: Any) -> None:
            workers.extend(vmhwm_mb(p.pid) for p in self.processes)
            stop(self)

        _verify._Workers.stop = measured_stop  # type: ignore[method-assign]
        store = Store(url)
        store.check_schema()
        t0 = time.perf_counter()
        result = _verify.verify(store, None, jobs=int(kind.split("=")[1]))
        out = {"ok": result.ok, "events": result.events_checked}
    seconds = time.perf_counter() - t0
    out.update(
        seconds=seconds, peak_rss_mb=vmhwm_mb("self"), worker_peak_rss_mb=sum(workers)
    )
    print(json.dumps(out))


def vmhwm_mb(pid: int | str) -> float:
    """A process's peak resident set (VmHWM) in MB, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def raw_rehash(db: Any, conn: Any) -> dict[str, Any]:
    """The driver's limit: stream every event by (instance, seq), re-hash, check the links."""
    import reads

    from workflow.audit import chain as audit

    if db.backend == "postgres":
        conn.autocommit = False
    cols = "instance_id, seq, trigger, from_state, to_state, actor, role, os_user, at, "
    cols += "evidence, note, definition_hash, policy, prev_hash, auth, hash, hash_format"
    rows = reads._stream(db, conn, f"SELECT {cols} FROM workflow_events ORDER BY instance_id, seq")
    encode, sha256 = audit.encode_event, hashlib.sha256
    ok, events, current, prev = True, 0, None, audit.GENESIS
    for row in rows:
        if row[0] != current:
            current, prev = row[0], audit.GENESIS
        digest = row[15]
        ok = ok and row[13] == prev and sha256(encode(row[:15], row[16])).hexdigest() == digest
        prev = digest
        events += 1
    return {"ok": ok, "events": events}


def run_child(kind: str, db: Any) -> dict[str, Any]:
    return _child.run(__file__, kind, db)


def main() -> int:
    mine = _child.options()
    if mine is not None:  # before the harness's helpers are imported
        child(mine.child, mine.child_backend, mine.child_url, mine.child_conninfo,
              mine.child_path)
        return 0
    import _common as c
    import reads

    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--db", default=None, help="where to keep the 1M-event database for reuse")
    p.add_argument("--small-db", default=None, help="where to keep the tenth-size database")
    p.add_argument("--instances", type=int, default=None)
    _child.add_options(p)
    args = p.parse_args()
    n = args.instances or (5_000 if args.quick else 100_000)
    rounds = args.rounds or (2 if args.quick else 5)
    with contextlib.ExitStack() as stack:
        db = _database(stack, args, args.db, "verify")
        instances, events = reads.ensure_built(db, n, args)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        loads = []
        for r in range(rounds):
            for kind in c.rotate(KINDS, r):
                out = run_child(kind, db)
                runs[kind].append(out)
                c.log(
                    args,
                    f"round {r + 1}/{rounds} {kind}: ok={out['ok']} "
                    f"{out['events'] / out['seconds']:,.0f} events/s, {out['seconds']:.2f} s, "
                    f"peak RSS {out['peak_rss_mb']:.0f} MB + worker "
                    f"{out['worker_peak_rss_mb']:.0f} MB",
                )
            loads.append(os.getloadavg()[0])
        small = _database(stack, args, args.small_db, "verify10")
        reads.ensure_built(small, max(n // 10, 100), args)
        flat = run_child("jobs=2", small)
        flat_serial = run_child("jobs=1", small)
    result = summarize(runs, instances, events, rounds, loads, flat, flat_serial)
    result.update(benchmark="verify", backend=args.backend, machine=c.machine_info())
    c.emit(args, result, render(result))
    return 0 if all(x["ok"] for v in runs.values() for x in v) else 1


def _database(stack: contextlib.ExitStack, args: Any, where: str | None, label: str) -> Any:
    import _common as c
    import reads

    if where:
        return c.open_database(args.backend, args.pg_url, where)
    db = stack.enter_context(c.scratch(args.backend, args.pg_url, label=label))
    if db.backend == "postgres":
        c.pg_drop(args.pg_url, reads._pg_name(db))  # ensure_built creates it
    return db


def summarize(
    runs: dict[str, list[dict[str, Any]]],
    instances: int,
    events: int,
    rounds: int,
    loads: list[float],
    flat: dict[str, Any],
    flat_serial: dict[str, Any],
) -> dict[str, Any]:
    import _common as c

    out: dict[str, Any] = {"instances": instances, "events": events, "rounds": rounds}
    raw_rate = c.median([x["events"] / x["seconds"] for x in runs["raw"]])
    for kind, items in runs.items():
        rate = c.median([x["events"] / x["seconds"] for x in items])
        peak = max(x["peak_rss_mb"] for x in items)
        worker = max(x["worker_peak_rss_mb"] for x in items)
        out[kind] = {
            "ok": all(x["ok"] for x in items),
            "events_per_s": rate,
            "seconds": c.median([x["seconds"] for x in items]),
            "vs_raw": rate / raw_rate,
            "peak_rss_mb": peak,
            "worker_peak_rss_mb": worker,
            "total_rss_mb": peak + worker,
            "rates": [round(x["events"] / x["seconds"]) for x in items],
        }
    out["load_average_1min"] = loads
    out["flat"] = {
        "events": flat["events"],
        "jobs=2 total_rss_mb": flat["peak_rss_mb"] + flat["worker_peak_rss_mb"],
        "jobs=1 peak_rss_mb": flat_serial["peak_rss_mb"],
    }
    return out


def render(r: dict[str, Any]) -> str:
    import _common as c

    rows = []
    for kind in KINDS:
        v = r[kind]
        rows.append(
            [
                {"raw": "raw driver re-hash (1 process)"}.get(kind, f"verify {kind}"),
                v["events_per_s"],
                c.ratio(v["events_per_s"], r["raw"]["events_per_s"]),
                v["seconds"],
                v["peak_rss_mb"],
                v["worker_peak_rss_mb"] if kind == "jobs=2" else "",
                v["total_rss_mb"] if kind != "raw" else "",
            ]
        )
    best = r["jobs=2"]
    each = max(best["peak_rss_mb"], best["worker_peak_rss_mb"]) <= TARGET_RSS_MB
    lines = [
        f"verify ({r.get('backend', 'sqlite')}): {r['instances']:,} instances, "
        f"{r['events']:,} events; medians of {r['rounds']} rounds, fresh process each; "
        f"1-min load average after each round: "
        + ", ".join(f"{x:.1f}" for x in r["load_average_1min"]),
        c.table(
            [
                "contender",
                "events/s",
                "vs raw",
                "seconds",
                "peak RSS MB",
                "worker peak MB",
                "total MB",
            ],
            rows,
        ),
        "rounds (events/s): "
        + "; ".join(f"{k} " + ", ".join(f"{x:,}" for x in r[k]["rates"]) for k in KINDS),
        f"memory flat in events: {r['flat']['events']:,} events: jobs=2 total "
        f"{r['flat']['jobs=2 total_rss_mb']:.0f} MB, jobs=1 "
        f"{r['flat']['jobs=1 peak_rss_mb']:.0f} MB",
        f"target >= {TARGET_RATE:,} events/s: "
        f"{'met' if best['events_per_s'] >= TARGET_RATE else 'NOT met'} "
        f"({best['events_per_s']:,.0f}); peak RSS <= {TARGET_RSS_MB:.0f} MB per process: "
        f"{'met' if each else 'NOT met'}"
        f", all processes together: "
        f"{'met' if best['total_rss_mb'] <= TARGET_RSS_MB else 'NOT met'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
