"""Reads over a big database: history, report, list, verify and digest (time and peak memory).

The database (100,000 instances of the three programs, every tambon, several fiscal years,
~1,000,000 hash-chained events; ``--quick``: 5,000 / ~50,000) is bulk-built with the raw driver
exactly as the engine would have written it (see ``_common.build``) and cached at ``--db``
(a SQLite path, or a PostgreSQL database name with ``--backend postgres``) for later runs.

Measured, engine and raw-driver baseline alternating in rounds:

* ``Engine.history(id)`` of random instances (µs per call; target <= 1 ms);
* ``Engine.report()`` over everything (target <= 50 ms);
* ``Engine.list(...)`` with filters (a district, a province, a state with a limit);
* ``Engine.verify()`` and ``Engine.digest()`` in a fresh subprocess each: events/s and the
  process's peak RSS (VmHWM) (targets: verify >= 200,000 events/s, peak RSS <= 100 MB), and
  verify again over a database a tenth the size, to show memory flat in the number of events.
  verify runs with its default ``jobs`` (one worker process per CPU; the largest worker's
  peak RSS is reported beside the coordinator's) and again with ``jobs=1`` (one process).

    python benchmarks/reads.py [--db PATH] [--quick] [--json] [--backend sqlite|postgres]
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _child
import _common as c

from workflow.audit import chain as audit

TARGETS = {
    "history_ms": 1.0,
    "report_ms": 50.0,
    "verify_events_per_s": 200_000,
    "verify_peak_rss_mb": 100.0,
}


# --------------------------------------------------------------------------- the data set


def ensure_built(db: c.Database, n: int, args: Any) -> tuple[int, int]:
    """Build the data set unless ``db`` already holds it; returns (instances, events)."""
    expected = c.mixed_specs(n)
    want_events = sum(s.events for s in expected)
    exists = db.path.exists() if db.backend == "sqlite" else c.pg_exists(args.pg_url, _pg_name(db))
    if exists:
        with contextlib.suppress(Exception):
            got = c.counts(db)
            if got[0] >= n and got[1] >= want_events:
                c.log(args, f"reusing {db.url}: {got[0]:,} instances, {got[1]:,} events")
                return got
        raise SystemExit(
            f"{db.url} exists but does not hold the expected data set; remove it or pick "
            "another --db"
        )
    if db.backend == "postgres":
        c.pg_create(args.pg_url, _pg_name(db))
    c.log(args, f"building {n:,} instances / {want_events:,} events in {db.url} ...")
    t0 = time.perf_counter()
    templates = c.prepare(db)

    def progress(i: int, e: int) -> None:
        if i % 20000 == 0:
            rate = e / (time.perf_counter() - t0)
            c.log(args, f"  {i:,} instances, {e:,} events ({rate:,.0f} events/s)")

    c.build(db, templates, expected, progress=progress)
    got = c.counts(db)
    c.log(
        args, f"built in {time.perf_counter() - t0:.1f} s: {got[0]:,} instances, {got[1]:,} events"
    )
    return got


def _pg_name(db: c.Database) -> str:
    return db.url.rsplit("/", 1)[1].split("?")[0]


def sample_check(db: c.Database, args: Any) -> dict[str, Any]:
    """Check the builder against the engine: a small database built the same way must verify,
    and sampled chains of the big one must re-hash."""
    with c.scratch("sqlite", label="sample") as small:
        templates = c.prepare(small)
        c.build(small, templates, c.mixed_specs(600))
        engine = c.engine_for(small)
        small_ok = engine.verify().ok
        engine.close()
    engine = c.engine_for(db)
    ids = random.Random(1).sample(range(4, 4 + 1000), 20)
    chains_ok = True
    for i in ids:
        prev = audit.GENESIS
        for e in engine.history(i):
            ok = (
                e.prev_hash == prev
                and audit.event_hash(
                    instance=e.instance,
                    seq=e.seq,
                    trigger=e.trigger,
                    from_state=None
                    if e.from_ is None
                    else json.dumps(list(e.from_), separators=(",", ":"), ensure_ascii=False),
                    to_state=json.dumps(list(e.to), separators=(",", ":"), ensure_ascii=False),
                    actor=e.actor,
                    role=e.role,
                    os_user=e.os_user,
                    at=e.at,
                    evidence=audit.canonical_json(e.evidence),
                    note=e.note,
                    definition_hash=e.definition_hash,
                    policy=e.policy,
                    prev_hash=e.prev_hash,
                )
                == e.hash
            )
            chains_ok = chains_ok and ok
            prev = e.hash
    engine.close()
    c.log(
        args,
        f"sample check: small built database verifies: {small_ok}; 20 sampled chains: {chains_ok}",
    )
    return {"small_db_verifies": small_ok, "sampled_chains_ok": chains_ok}


# --------------------------------------------------------------------------- subprocess children


def child(kind: str, backend: str, url: str, conninfo: str | None, path: str | None) -> None:
    """Run one verify or digest (engine or raw) and print time, counts and peak memory."""
    db = c.Database(backend, url, path=Path(path) if path else None, conninfo=conninfo)
    if kind.startswith("engine"):
        engine = c.engine_for(db)
        engine.store.check_schema()
        before = c.rss_mb()
        t0 = time.perf_counter()
        if kind in ("engine-verify", "engine-verify-serial"):
            r = engine.verify(jobs=1 if kind == "engine-verify-serial" else None)
            out = {"ok": r.ok, "events": r.events_checked, "instances": r.instances_checked}
        else:
            d = engine.digest()
            out = {"ok": True, "events": d.events, "instances": d.instances}
        seconds = time.perf_counter() - t0
    else:
        conn = db.raw()
        before = c.rss_mb()
        t0 = time.perf_counter()
        fn = {"raw-verify": raw_verify, "raw-scan": raw_scan, "raw-digest": raw_digest}[kind]
        out = fn(db, conn)
        seconds = time.perf_counter() - t0
    import resource

    # verify's worker processes (one per CPU): the largest one's peak, reported beside ours.
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out.update(
        seconds=seconds,
        rss_before_mb=before,
        peak_rss_mb=c.peak_rss_mb(),
        worker_peak_rss_mb=workers,
    )
    print(json.dumps(out))


def _stream(db: c.Database, conn: Any, sql: str) -> Any:
    if db.backend == "sqlite":
        return conn.execute(sql)
    cur = conn.cursor(name="bench_stream")
    cur.itersize = 5000
    cur.execute(sql)
    return cur


def raw_verify(db: c.Database, conn: Any) -> dict[str, Any]:
    """Stream every event in (instance, seq) order and re-hash each chain: the driver's limit."""
    if db.backend == "postgres":
        conn.autocommit = False
    cols = ", ".join(c.EVENT_FIELDS)
    rows = _stream(db, conn, f"SELECT {cols} FROM workflow_events ORDER BY instance_id, seq")
    ok = True
    events = 0
    current = None
    prev = audit.GENESIS
    h = audit.event_hash
    for i, seq, trig, fr, to, actor, role, user, at, ev, note, dh, pol, ph, hh in rows:
        if i != current:
            current, prev = i, audit.GENESIS
        ok = (
            ok
            and ph == prev
            and h(
                instance=i,
                seq=seq,
                trigger=trig,
                from_state=fr,
                to_state=to,
                actor=actor,
                role=role,
                os_user=user,
                at=at,
                evidence=ev,
                note=note,
                definition_hash=dh,
                policy=pol,
                prev_hash=ph,
            )
            == hh
        )
        prev = hh
        events += 1
    return {"ok": ok, "events": events}


def raw_scan(db: c.Database, conn: Any) -> dict[str, Any]:
    """Stream every event in (instance, seq) order without hashing: the cost of reading."""
    if db.backend == "postgres":
        conn.autocommit = False
    cols = ", ".join(c.EVENT_FIELDS)
    events = 0
    for _row in _stream(db, conn, f"SELECT {cols} FROM workflow_events ORDER BY instance_id, seq"):
        events += 1
    return {"ok": True, "events": events}


def raw_digest(db: c.Database, conn: Any) -> dict[str, Any]:
    import hashlib

    if db.backend == "postgres":
        conn.autocommit = False
    h = hashlib.sha256()
    n = events = 0
    for iid, version, head in _stream(
        db, conn, "SELECT id, version, head_hash FROM workflow_instances ORDER BY id"
    ):
        h.update(f"{iid}:{version}:{head}\n".encode())
        n += 1
        events += version
    return {"ok": True, "events": events, "instances": n, "root": h.hexdigest()}


def run_child(kind: str, db: Any) -> dict[str, Any]:
    return _child.run(__file__, kind, db)


# --------------------------------------------------------------------------- in-process reads


class RawReads:
    def __init__(self, db: c.Database) -> None:
        self.db = db
        self.conn = db.raw()
        m = db.mark
        self.history_sql = (
            f"SELECT id, {', '.join(c.EVENT_FIELDS)} FROM workflow_events "
            f"WHERE instance_id = {m} ORDER BY seq"
        )
        self.report_sql = (
            "SELECT program, province_code, state, active, COUNT(*) FROM workflow_instances "
            "GROUP BY program, province_code, state, active ORDER BY program, province_code, state"
        )
        cols = ", ".join(c.INSTANCE_FIELDS)
        self.list_sql = {
            "district": f"SELECT {cols} FROM workflow_instances WHERE area_code LIKE {m} "
            f"AND fiscal_year = {m} ORDER BY id",
            "province": f"SELECT {cols} FROM workflow_instances WHERE province_code = {m} "
            f"AND program = {m} ORDER BY id",
            "state": f"SELECT {cols} FROM workflow_instances WHERE state = {m} "
            f"AND program = {m} ORDER BY id LIMIT 100",
        }

    def _q(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.db.backend == "sqlite":
            self.conn.execute("BEGIN")
            rows = self.conn.execute(sql, params).fetchall()
            self.conn.execute("COMMIT")
            return rows
        with self.conn.transaction():
            return self.conn.execute(sql, params).fetchall()

    def history(self, i: int) -> int:
        return len(self._q(self.history_sql, (i,)))

    def report(self) -> int:
        return len(self._q(self.report_sql))

    def list(self, which: str, params: tuple[Any, ...]) -> int:
        return len(self._q(self.list_sql[which], params))


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--db", default=None, help="where to keep the built database for reuse")
    p.add_argument("--instances", type=int, default=None)
    _child.add_options(p)
    args = p.parse_args()
    if args.child:
        child(args.child, args.child_backend, args.child_url, args.child_conninfo, args.child_path)
        return 0

    n = args.instances or (5_000 if args.quick else 100_000)
    rounds = args.rounds or (3 if args.quick else 7)
    heavy_rounds = 1 if args.quick else 3
    with contextlib.ExitStack() as stack:
        if args.db:
            db = c.open_database(args.backend, args.pg_url, args.db)
        else:
            db = stack.enter_context(c.scratch(args.backend, args.pg_url, label="reads"))
            if db.backend == "postgres":  # ensure_built creates it
                c.pg_drop(args.pg_url, _pg_name(db))
        instances, events = ensure_built(db, n, args)
        checks = sample_check(db, args)
        result = measure(db, args, rounds, heavy_rounds)
        # Memory flat in the number of events: verify a database a tenth the size.
        small = stack.enter_context(c.scratch(args.backend, args.pg_url, label="reads10"))
        if small.backend == "postgres":
            c.pg_drop(args.pg_url, _pg_name(small))
        ensure_built(small, max(n // 10, 100), args)
        small_verify = run_child("engine-verify", small)
        if args.db is None and db.backend == "postgres":
            c.pg_drop(args.pg_url, _pg_name(db))

    result.update(
        benchmark="reads",
        backend=args.backend,
        machine=c.machine_info(),
        instances=instances,
        events=events,
        size_mb=None,
        checks=checks,
        verify_small=small_verify,
        targets=TARGETS,
    )
    print_result(args, result)
    ok = checks["small_db_verifies"] and checks["sampled_chains_ok"] and result["verify"]["ok"]
    return 0 if ok else 1


def measure(db: c.Database, args: Any, rounds: int, heavy_rounds: int) -> dict[str, Any]:
    engine = c.engine_for(db)
    raw = RawReads(db)
    rng = random.Random(7)
    max_id = c.counts(db)[0]
    lists = {
        "district": (
            lambda: engine.list(area="3001", fiscal_year=2561),
            ("3001%", 2561),
        ),
        "province": (
            lambda: engine.list(area="30", program="leader-development"),
            ("30", "leader-development"),
        ),
        "state": (
            lambda: engine.list(state="implementing", program="leader-development", limit=100),
            ("implementing", "leader-development"),
        ),
    }
    timings: dict[str, list[float]] = {}

    def add(key: str, seconds: float) -> None:
        timings.setdefault(key, []).append(seconds)

    sizes: dict[str, int] = {}
    # Warm up both sides.
    engine.history(5)
    raw.history(5)
    engine.report()
    for r in range(rounds):
        ids = [rng.randint(4, max_id) for _ in range(200)]
        for side in c.rotate(["engine", "raw"], r):
            for i in ids:
                t0 = time.perf_counter()
                engine.history(i) if side == "engine" else raw.history(i)
                add(f"history/{side}", time.perf_counter() - t0)
            t0 = time.perf_counter()
            engine.report() if side == "engine" else raw.report()
            add(f"report/{side}", time.perf_counter() - t0)
            for name, (fn, params) in lists.items():
                t0 = time.perf_counter()
                got = fn() if side == "engine" else raw.list(name, params)
                add(f"list {name}/{side}", time.perf_counter() - t0)
                sizes[name] = len(got) if isinstance(got, list) else got
        c.log(
            args,
            f"round {r + 1}/{rounds}: history engine "
            f"{1e6 * c.median(timings['history/engine'][-200:]):.0f} us, report "
            f"{1e3 * timings['report/engine'][-1]:.1f} ms",
        )
    engine.close()
    heavy: dict[str, list[dict[str, Any]]] = {}
    for r in range(heavy_rounds):
        for kind in c.rotate(
            [
                "engine-verify",
                "engine-verify-serial",
                "raw-verify",
                "raw-scan",
                "engine-digest",
                "raw-digest",
            ],
            r,
        ):
            out = run_child(kind, db)
            heavy.setdefault(kind, []).append(out)
            c.log(
                args,
                f"{kind}: {out['events'] / out['seconds']:,.0f} events/s, "
                f"{out['seconds']:.2f} s, peak RSS {out['peak_rss_mb']:.0f} MB",
            )
    med = {k: c.median(v) for k, v in timings.items()}

    def summary(kind: str) -> dict[str, Any]:
        runs = heavy[kind]
        secs = c.median([x["seconds"] for x in runs])
        return {
            "ok": all(x["ok"] for x in runs),
            "seconds": secs,
            "events": runs[0]["events"],
            "events_per_s": runs[0]["events"] / secs,
            "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
            "worker_peak_rss_mb": max(x.get("worker_peak_rss_mb", 0.0) for x in runs),
            "rss_before_mb": c.median([x["rss_before_mb"] for x in runs]),
        }

    return {
        "rounds": rounds,
        "history_us": {"engine": 1e6 * med["history/engine"], "raw": 1e6 * med["history/raw"]},
        "report_ms": {"engine": 1e3 * med["report/engine"], "raw": 1e3 * med["report/raw"]},
        "list_ms": {
            name: {
                "engine": 1e3 * med[f"list {name}/engine"],
                "raw": 1e3 * med[f"list {name}/raw"],
                "rows": sizes[name],
            }
            for name in lists
        },
        "verify": summary("engine-verify"),
        "verify_serial": summary("engine-verify-serial"),
        "verify_raw": summary("raw-verify"),
        "scan_raw": summary("raw-scan"),
        "digest": summary("engine-digest"),
        "digest_raw": summary("raw-digest"),
    }


def print_result(args: Any, r: dict[str, Any]) -> None:
    t = r["targets"]
    h, rep = r["history_us"], r["report_ms"]
    rows: list[list[Any]] = [
        [
            "history of one instance (us)",
            h["engine"],
            h["raw"],
            c.ratio(h["raw"], h["engine"]),
            f"<= {t['history_ms'] * 1000:.0f}",
            _ok(h["engine"] <= t["history_ms"] * 1000),
        ],
        [
            "report over everything (ms)",
            rep["engine"],
            rep["raw"],
            c.ratio(rep["raw"], rep["engine"]),
            f"<= {t['report_ms']:.0f}",
            _ok(rep["engine"] <= t["report_ms"]),
        ],
    ]
    labels = {
        "district": "list: a district, one year (ms)",
        "province": "list: a province, one program (ms)",
        "state": "list: a state, limit 100 (ms)",
    }
    for name, v in r["list_ms"].items():
        rows.append(
            [
                f"{labels[name]} [{v['rows']:,} rows]",
                v["engine"],
                v["raw"],
                c.ratio(v["raw"], v["engine"]),
                "",
                "",
            ]
        )
    v, vr, d, dr = r["verify"], r["verify_raw"], r["digest"], r["digest_raw"]
    rows += [
        [
            "verify (events/s)",
            v["events_per_s"],
            vr["events_per_s"],
            c.ratio(v["events_per_s"], vr["events_per_s"]),
            f">= {t['verify_events_per_s']:,}",
            _ok(v["events_per_s"] >= t["verify_events_per_s"]),
        ],
        [
            "  verify --jobs 1, one process (events/s)",
            r["verify_serial"]["events_per_s"],
            "",
            c.ratio(r["verify_serial"]["events_per_s"], vr["events_per_s"]),
            "",
            "",
        ],
        [
            "  raw: stream the events, no hashing (events/s)",
            "",
            r["scan_raw"]["events_per_s"],
            "",
            "",
            "",
        ],
        [
            "verify peak RSS (MB)",
            v["peak_rss_mb"],
            vr["peak_rss_mb"],
            "",
            f"<= {t['verify_peak_rss_mb']:.0f}",
            _ok(v["peak_rss_mb"] <= t["verify_peak_rss_mb"]),
        ],
        [
            "verify peak RSS, largest worker process (MB)",
            v["worker_peak_rss_mb"],
            "",
            "",
            f"<= {t['verify_peak_rss_mb']:.0f}",
            _ok(v["worker_peak_rss_mb"] <= t["verify_peak_rss_mb"]),
        ],
        [
            f"verify peak RSS, {r['verify_small']['events']:,} events (MB)",
            r["verify_small"]["peak_rss_mb"],
            "",
            "",
            "flat",
            "",
        ],
        [
            "digest (events covered/s)",
            d["events_per_s"],
            dr["events_per_s"],
            c.ratio(d["events_per_s"], dr["events_per_s"]),
            "",
            "",
        ],
        ["digest (s)", d["seconds"], dr["seconds"], "", "", ""],
        ["digest peak RSS (MB)", d["peak_rss_mb"], dr["peak_rss_mb"], "", "", ""],
    ]
    text = "\n".join(
        [
            f"reads ({r['backend']}): {r['instances']:,} instances, {r['events']:,} events; "
            f"medians of {r['rounds']} rounds (verify/digest: fresh subprocess each)",
            c.table(
                ["measure", "engine", "raw driver", "engine / raw speed", "target", "met"], rows
            ),
            f"verify: {'ok' if v['ok'] else 'FAILED'}; builder checks: {r['checks']}",
        ]
    )
    c.emit(args, r, text)


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


if __name__ == "__main__":
    sys.exit(main())
