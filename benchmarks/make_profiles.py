"""Profiles of the hot paths, saved as text under benchmarks/profiles/.

* ``fire_sqlite.txt`` / ``fire_postgres.txt`` — ``Engine.fire`` (report_progress across many
  instances), cProfile: time by package, top 25 by cumulative time, top 25 by own time.
* ``verify_sqlite.txt`` — ``Engine.verify`` over a bulk-built database, likewise.
* ``cli_importtime.txt`` — ``python -X importtime -c "import workflow.cli.main"``, top modules.

    python benchmarks/make_profiles.py [--quick] [--backend sqlite|postgres|both]
        [--what fire|verify|cli|all] [--verify-db PATH]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c


def _package(filename: str, funcname: str) -> str:
    """Which library a profiled function belongs to."""
    if filename == "~":
        name = funcname
        for key, label in (
            ("sqlite3", "sqlite3 (C driver: SQL execution, fsync)"),
            ("psycopg", "psycopg"),
            ("_hashlib", "hashlib"),
            ("openssl", "hashlib"),
            ("json", "json"),
            ("_json", "json"),
        ):
            if key in name:
                return label
        return "builtins/C"
    parts = Path(filename).parts
    for marker in ("workflow", "sqlalchemy", "transitions", "psycopg", "json", "hashlib"):
        if marker in parts:
            return marker
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return Path(filename).stem if "python3" in filename else "other"


def report(prof: cProfile.Profile, title: str, wall: float, calls: int, unit: str) -> str:
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    by_pkg: dict[str, float] = defaultdict(float)
    for (filename, _line, funcname), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_pkg[_package(filename, funcname)] += tt
    out = io.StringIO()
    out.write(f"{title}\n")
    out.write(
        f"{calls:,} {unit}; wall without the profiler: "
        f"{wall * 1e6 / calls:.1f} us per {unit[:-1]}\n"
    )
    out.write(f"profiled total {total:.3f} s ({total * 1e6 / calls:.1f} us per {unit[:-1]})\n\n")
    out.write("Own time by package (tottime, % of profiled total)\n")
    rows = sorted(by_pkg.items(), key=lambda kv: -kv[1])
    out.write(
        c.table(
            ["package", "s", "%", "us per " + unit[:-1]],
            [[k, v, 100 * v / total, v * 1e6 / calls] for k, v in rows],
        )
    )
    out.write("\n\n")
    for key, label in (
        ("cumulative", "Top 25 by cumulative time"),
        ("tottime", "Top 25 by own time"),
    ):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key).print_stats(25)
        text = buf.getvalue()
        text = text[text.find("   ncalls") :] if "   ncalls" in text else text
        out.write(f"{label}\n{text}\n")
    return out.getvalue()


def cumulative_share(prof: cProfile.Profile, names: list[str]) -> dict[str, float]:
    """Cumulative time of functions whose name matches, as a % of the profiled total."""
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for (filename, line, funcname), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = f"{Path(filename).name}:{line}({funcname})"
        for n in names:
            if funcname == n.split(":")[-1] and (":" not in n or n.split(":")[0] in filename):
                out[label] = max(out.get(label, 0.0), 100 * ct / total)
    return out


def _per_call(fn: Any, n: int) -> float:
    """Median over 5 repeats of the mean wall time of ``fn()`` (us), no profiler."""
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) * 1e6 / n)
    return sorted(out)[2]


def phases(engine: Any, db: c.Database, ids: list[int]) -> str:
    """Wall time of the pieces of a fire measured one by one, without a profiler.

    Best effort: it reaches into engine internals (store, compiled machine), so a piece the
    engine no longer has is reported as n/a rather than failing the run.
    """
    from workflow.audit import chain as audit
    from workflow.runtime.machine import compile_program

    rows: list[list[Any]] = []
    program = engine.program("leader-development")
    machine = compile_program(program)
    raw = db.raw()
    begin = "BEGIN IMMEDIATE" if db.backend == "sqlite" else "BEGIN"
    lock = "" if db.backend == "sqlite" else " FOR UPDATE"
    select = (
        "SELECT state, active, version, head_hash FROM workflow_instances "
        f"WHERE id = {db.mark}{lock}"
    )
    store = engine.store
    i = ids[0]
    hash_args = dict(
        instance=i,
        seq=9,
        trigger="report_progress",
        from_state='["implementing"]',
        to_state='["implementing"]',
        actor=c.ACTOR,
        role="coordinator",
        os_user="root",
        at=c.now_utc(),
        evidence=audit.canonical_json(c.PROGRESS),
        note=None,
        definition_hash=program.content_hash,
        policy="allow-all",
        prev_hash=audit.GENESIS,
    )

    def raw_empty() -> None:
        raw.execute(begin)
        raw.execute("COMMIT")

    def raw_select() -> None:
        raw.execute(begin)
        raw.execute(select, (i,)).fetchone()
        raw.execute("COMMIT")

    pieces: list[tuple[str, Any, int]] = [
        (
            "store.run(write=True) of nothing (BEGIN IMMEDIATE/COMMIT, pool)",
            lambda: store.run(lambda conn: None, write=True),
            300,
        ),
        ("  raw driver: BEGIN IMMEDIATE; COMMIT", raw_empty, 300),
        (
            "store.run(write=True) + lock_instance",
            lambda: store.run(lambda conn: store.lock_instance(conn, i), write=True),
            300,
        ),
        ("  raw driver: BEGIN; SELECT ...; COMMIT", raw_select, 300),
        (
            "machine.apply(report_progress) incl. evidence validation",
            lambda: machine.apply(("implementing",), "report_progress", "coordinator", c.PROGRESS),
            2000,
        ),
        ("audit.event_hash", lambda: audit.event_hash(**hash_args), 5000),
        ("audit.canonical_json(evidence)", lambda: audit.canonical_json(c.PROGRESS), 5000),
        ("now_utc()", c.now_utc, 5000),
        ("engine.get(id) (read transaction + Instance record)", lambda: engine.get(i), 300),
    ]
    for label, fn, n in pieces:
        try:
            rows.append([label, _per_call(fn, n)])
        except Exception as e:  # an internal that moved
            rows.append([label, f"n/a ({type(e).__name__})"])
    raw.close()

    def fire() -> None:
        engine.fire(
            ids[1], "report_progress", actor=c.ACTOR, role="coordinator", evidence=c.PROGRESS
        )

    rows.append(["Engine.fire, whole (same instance, for reference)", _per_call(fire, 200)])
    return "Pieces of a fire, wall time each, no profiler (us per call)\n" + c.table(
        ["piece", "us"], rows
    )


def profile_fire(backend: str, pg_url: str, quick: bool) -> str:
    n = 200 if quick else 3000
    fires = 200 if quick else 2000
    with c.scratch(backend, pg_url, label="prof") as db:
        templates = c.prepare(db, ["leader-development"])
        c.build(db, templates, c.implementing_specs(n))
        engine = c.engine_for(db)
        ids = [i.id for i in engine.list(state="implementing")]

        def run(count: int, offset: int) -> None:
            for k in range(count):
                engine.fire(
                    ids[(offset + k) % len(ids)],
                    "report_progress",
                    actor=c.ACTOR,
                    role="coordinator",
                    evidence=c.PROGRESS,
                )

        run(20, 0)
        t0 = time.perf_counter()
        run(fires, 20)
        wall = time.perf_counter() - t0
        prof = cProfile.Profile()
        prof.enable()
        run(fires, 20 + fires)
        prof.disable()
        pieces = phases(engine, db, ids)
        engine.close()
    head = (
        f"Engine.fire on {backend} (report_progress, round-robin over {n:,} instances, "
        f"AllowAll policy, {c.machine_info()})"
    )
    return report(prof, head, wall, fires, "fires") + "\n" + pieces + "\n"


def profile_verify(db_path: str | None, quick: bool) -> str:
    import contextlib

    with contextlib.ExitStack() as stack:
        if db_path and Path(db_path).exists():
            db = c.open_database("sqlite", c.DEFAULT_PG, db_path)
        else:
            db = stack.enter_context(c.scratch("sqlite", label="profv"))
            templates = c.prepare(db)
            c.build(db, templates, c.mixed_specs(2000 if quick else 20000))
        engine = c.engine_for(db)
        _, events = c.counts(db)
        t0 = time.perf_counter()
        result = engine.verify()
        wall = time.perf_counter() - t0
        assert result.ok, result.problems[:3]
        prof = cProfile.Profile()
        prof.enable()
        engine.verify()
        prof.disable()
        engine.close()
    head = f"Engine.verify on sqlite ({events:,} events, {c.machine_info()})"
    return report(prof, head, wall, events, "events")


def profile_cli_imports() -> str:
    """``python -X importtime -c "import workflow.cli.main"``: the modules `workflow --help`
    pays for."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import workflow.cli.main"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cum, name = (x.strip() for x in line[len("import time:") :].split("|"))
        rows.append((int(cum), int(own), name))
    total = max(r[0] for r in rows)
    top = sorted(rows, reverse=True)[:30]
    own_top = sorted(rows, key=lambda r: -r[1])[:20]
    return "\n".join(
        [
            f"Import time of workflow.cli.main ({c.machine_info()}); total {total / 1000:.0f} ms",
            "",
            "Top 30 by cumulative import time",
            c.table(
                ["module", "cumulative ms", "%", "own ms"],
                [[n.strip(), cu / 1000, 100 * cu / total, o / 1000] for cu, o, n in top],
            ),
            "",
            "Top 20 by own import time",
            c.table(
                ["module", "own ms", "%"],
                [[n.strip(), o / 1000, 100 * o / total] for _, o, n in own_top],
            ),
            "",
        ]
    )


def main() -> int:
    p = c.parser(__doc__.splitlines()[0], backend=False)
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--pg-url", default=c.DEFAULT_PG)
    p.add_argument("--what", choices=("fire", "verify", "cli", "all"), default="all")
    p.add_argument("--verify-db", default=None, help="a built reads database to verify")
    p.add_argument("--out", default=str(c.PROFILES))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    if args.what in ("fire", "all"):
        for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
            text = profile_fire(backend, args.pg_url, args.quick)
            path = out / f"fire_{backend}.txt"
            path.write_text(text)
            written[path.name] = str(path)
            c.log(args, text)
    if args.what in ("cli", "all"):
        text = profile_cli_imports()
        path = out / "cli_importtime.txt"
        path.write_text(text)
        written[path.name] = str(path)
        c.log(args, text)
    if args.what in ("verify", "all"):
        text = profile_verify(args.verify_db, args.quick)
        path = out / "verify_sqlite.txt"
        path.write_text(text)
        written[path.name] = str(path)
        c.log(args, text)
    c.emit(args, {"benchmark": "profiles", "files": written}, "\n".join(written.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
