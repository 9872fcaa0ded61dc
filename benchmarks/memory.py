"""Engine process memory while firing across 100,000 instances (target: RSS <= 150 MB).

A database of 100,000 leader-development instances standing in ``implementing`` (``--quick``:
5,000) is bulk-built (cached at ``--db``). A fresh subprocess then fires one
``report_progress`` on every instance, round-robin, through ``Engine.fire`` (one transaction
each), sampling its resident set as it goes; it reports the peak (VmHWM). The baseline is
a subprocess doing the same fires with the raw driver (the floor: interpreter, SQLAlchemy and
the driver loaded, nothing kept), over the first 10,000 instances.

    python benchmarks/memory.py [--db PATH] [--quick] [--json] [--backend sqlite|postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

TARGET_MB = 150.0


def child(kind: str, db: c.Database, fires: int) -> None:
    import workflow

    engine = c.engine_for(db)
    with contextlib.closing(db.raw()) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM workflow_instances WHERE state = 'implementing' ORDER BY id"
            ).fetchall()
        ]
    program = engine.program("leader-development")
    samples: list[tuple[int, float]] = []
    if kind == "engine":
        engine.store.check_schema()

        def fire(i: int) -> None:
            engine.fire(
                i, "report_progress", actor=c.ACTOR, role="coordinator", evidence=c.PROGRESS
            )

    else:
        from fire import RawFire

        raw = RawFire(db, program.content_hash)

        def fire(i: int) -> None:
            raw.fire(i, c.PROGRESS)

    start_rss = c.rss_mb()
    step = max(fires // 20, 1)
    t0 = time.perf_counter()
    for k in range(fires):
        fire(ids[k % len(ids)])
        if (k + 1) % step == 0:
            samples.append((k + 1, c.rss_mb()))
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "kind": kind,
                "fires": fires,
                "instances_touched": min(fires, len(ids)),
                "seconds": seconds,
                "rss_start_mb": start_rss,
                "rss_end_mb": c.rss_mb(),
                "peak_rss_mb": c.peak_rss_mb(),
                "samples": samples,
                "workflow": workflow.__version__,
            }
        )
    )


def run_child(kind: str, db: c.Database, fires: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--fires",
        str(fires),
        "--child-url",
        db.url,
        "--backend",
        db.backend,
    ]
    if db.path:
        cmd += ["--child-path", str(db.path)]
    if db.conninfo:
        cmd += ["--child-conninfo", db.conninfo]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--db", default=None, help="where to keep the built database for reuse")
    p.add_argument("--instances", type=int, default=None)
    p.add_argument("--fires", type=int, default=None, help="fires (default: one per instance)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-url", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-conninfo", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        db = c.Database(
            args.backend,
            args.child_url,
            path=Path(args.child_path) if args.child_path else None,
            conninfo=args.child_conninfo,
        )
        child(args.child, db, args.fires)
        return 0
    n = args.instances or (5_000 if args.quick else 100_000)
    fires = args.fires or n
    with contextlib.ExitStack() as stack:
        if args.db:
            db = c.open_database(args.backend, args.pg_url, args.db)
            fresh = not (
                db.path.exists() if db.backend == "sqlite" else c.pg_exists(args.pg_url, args.db)
            )
            if fresh and db.backend == "postgres":
                c.pg_create(args.pg_url, args.db)
        else:
            db = stack.enter_context(c.scratch(args.backend, args.pg_url, label="memory"))
            fresh = True
        if fresh:
            c.log(args, f"building {n:,} instances in `implementing` ...")
            templates = c.prepare(db, ["leader-development"])
            c.build(db, templates, c.implementing_specs(n))
        instances = c.counts(db)[0]
        if instances < n:
            raise SystemExit(f"{db.url} holds {instances:,} instances, fewer than {n:,}")
        c.log(args, f"engine: {fires:,} fires across {n:,} instances in a subprocess ...")
        eng = run_child("engine", db, fires)
        c.log(args, f"engine: peak {eng['peak_rss_mb']:.1f} MB in {eng['seconds']:.0f} s")
        raw = run_child("raw", db, min(fires, 10_000))
        c.log(args, f"raw: peak {raw['peak_rss_mb']:.1f} MB")

    result = {
        "benchmark": "memory",
        "backend": args.backend,
        "machine": c.machine_info(),
        "instances": n,
        "engine": eng,
        "raw": raw,
        "target_mb": TARGET_MB,
        "met": eng["peak_rss_mb"] <= TARGET_MB,
    }
    curve = ", ".join(
        f"{k:,}: {v:.0f}" for k, v in eng["samples"][:: max(len(eng["samples"]) // 5, 1)]
    )
    text = "\n".join(
        [
            f"memory ({args.backend}): fires round-robin across {n:,} instances, in a subprocess",
            c.table(
                [
                    "process",
                    "fires",
                    "RSS at start (MB)",
                    "RSS at end (MB)",
                    "peak RSS (MB)",
                    "target",
                    "met",
                ],
                [
                    [
                        "engine (Engine.fire)",
                        eng["fires"],
                        eng["rss_start_mb"],
                        eng["rss_end_mb"],
                        eng["peak_rss_mb"],
                        f"<= {TARGET_MB:.0f}",
                        "yes" if result["met"] else "NO",
                    ],
                    [
                        "raw driver",
                        raw["fires"],
                        raw["rss_start_mb"],
                        raw["rss_end_mb"],
                        raw["peak_rss_mb"],
                        "",
                        "",
                    ],
                ],
            ),
            f"engine RSS by fires done (MB): {curve}",
        ]
    )
    c.emit(args, result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
