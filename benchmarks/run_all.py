"""Run every benchmark (``--quick`` or full) and print a summary against the targets.

Each benchmark runs as its own subprocess with ``--json``, one after the other (never in
parallel: they would disturb each other's timings); their full results can be saved with
``--out``. PostgreSQL parts are skipped with ``--no-postgres`` or when no server answers.

    python benchmarks/run_all.py [--quick] [--json] [--out results.json] [--data-dir DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

HERE = Path(__file__).resolve().parent


def pg_up(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(c.libpq(url), connect_timeout=3):
            return True
    except Exception:
        return False


def run(script: str, extra: list[str], quick: bool, log: Any) -> dict[str, Any] | None:
    cmd = [sys.executable, str(HERE / script), "--json", *extra] + (["--quick"] if quick else [])
    log(f"$ {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log(f"  ({time.perf_counter() - t0:.0f} s, exit {done.returncode})")
    if done.returncode != 0 or not done.stdout.strip():
        log(done.stderr[-3000:])
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = c.parser(__doc__.splitlines()[0], backend=False)
    p.add_argument("--pg-url", default=c.DEFAULT_PG)
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--out", default=None, help="save every benchmark's JSON here")
    p.add_argument(
        "--data-dir",
        default=None,
        help="keep the big built databases here for reuse (reads.db, memory.db)",
    )
    args = p.parse_args()

    def log(*parts: object) -> None:
        print(*parts, file=sys.stderr, flush=True)

    pg = not args.no_postgres and pg_up(args.pg_url)
    backends = ["sqlite", "postgres"] if pg else ["sqlite"]
    pgargs = ["--pg-url", args.pg_url]
    data = Path(args.data_dir).resolve() if args.data_dir else None
    if data:
        data.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": c.machine_info(), "quick": args.quick}
    for b in backends:
        results[f"fire/{b}"] = run("fire.py", ["--backend", b, *pgargs], args.quick, log)
        results[f"fire_many/{b}"] = run("fire_many.py", ["--backend", b, *pgargs], args.quick, log)
        results[f"start/{b}"] = run("start.py", ["--backend", b, *pgargs], args.quick, log)
    reads_db = (
        ["--db", str(data / ("reads_quick.db" if args.quick else "reads.db"))] if data else []
    )
    memory_db = (
        ["--db", str(data / ("memory_quick.db" if args.quick else "memory.db"))] if data else []
    )
    results["reads/sqlite"] = run("reads.py", reads_db, args.quick, log)
    results["memory/sqlite"] = run("memory.py", memory_db, args.quick, log)
    results["cli"] = run("cli.py", [], args.quick, log)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))

    rows = summary(results, backends)
    missing = [k for k, v in results.items() if v is None]
    text = "\n".join(
        [
            f"workflow benchmarks ({'quick' if args.quick else 'full'}) on {results['machine']}",
            c.table(["measure", "figure", "target", "met"], rows),
        ]
        + ([f"failed to run: {', '.join(missing)}"] if missing else [])
    )
    c.emit(
        args,
        {
            "summary": [
                dict(zip(["measure", "figure", "target", "met"], r, strict=True)) for r in rows
            ],
            **results,
        },
        text,
    )
    return 1 if missing else 0


def summary(r: dict[str, Any], backends: list[str]) -> list[list[Any]]:
    rows: list[list[Any]] = []

    def add(measure: str, value: Any, target: str, ok: bool | None, fmt: str = "{:,.2f}") -> None:
        shown = fmt.format(value) if isinstance(value, int | float) else str(value)
        rows.append([measure, shown, target, "" if ok is None else ("yes" if ok else "NO")])

    for b in backends:
        f = r.get(f"fire/{b}")
        if f:
            t = f["target_vs_raw"]
            add(f"fire {b}: engine fires/s", f["fires_per_s"]["engine"], "", None, "{:,.0f}")
            add(f"fire {b}: raw driver fires/s", f["fires_per_s"]["raw"], "", None, "{:,.0f}")
            add(f"fire {b}: naive fires/s", f["fires_per_s"]["naive"], "", None, "{:,.0f}")
            add(
                f"fire {b}: engine / raw",
                f["engine_vs_raw"],
                f">= {t:.2f}x",
                f["engine_vs_raw"] >= t,
            )
            add(
                f"fire {b}: engine / naive",
                f["engine_vs_naive"],
                ">= 8x",
                f["engine_vs_naive"] >= 8,
            )
        fm = r.get(f"fire_many/{b}")
        if fm:
            if fm.get("implemented"):
                best = fm["best_fire_many_per_s"]
                if b == "sqlite":
                    add(
                        "fire_many sqlite: fires/s (best batch)",
                        best,
                        ">= 25,000",
                        best >= 25000,
                        "{:,.0f}",
                    )
                else:
                    add(f"fire_many {b}: fires/s (best batch)", best, "", None, "{:,.0f}")
            else:
                add(f"fire_many {b}", "not implemented", ">= 25,000" if b == "sqlite" else "", None)
        s = r.get(f"start/{b}")
        if s:
            add(f"start {b}: starts/s", s["starts_per_s"]["start"], "", None, "{:,.0f}")
            many = s["starts_per_s"].get("bulk: start_many")
            add(
                f"bulk start {b}: {s['bulk_tambons']} tambons of {s['bulk_area']}, starts/s",
                many if many is not None else "not implemented",
                "",
                None,
                "{:,.0f}",
            )
    rd = r.get("reads/sqlite")
    if rd:
        t = rd["targets"]
        add(
            f"history (sqlite, {rd['events']:,} events), us",
            rd["history_us"]["engine"],
            "<= 1,000",
            rd["history_us"]["engine"] <= 1000 * t["history_ms"],
            "{:,.0f}",
        )
        add(
            "report over everything, ms",
            rd["report_ms"]["engine"],
            "<= 50",
            rd["report_ms"]["engine"] <= t["report_ms"],
            "{:,.1f}",
        )
        for name, v in rd["list_ms"].items():
            add(f"list ({name}, {v['rows']:,} rows), ms", v["engine"], "", None, "{:,.1f}")
        v = rd["verify"]
        add(
            "verify, events/s",
            v["events_per_s"],
            ">= 200,000",
            v["events_per_s"] >= t["verify_events_per_s"],
            "{:,.0f}",
        )
        add(
            "verify, peak RSS MB",
            v["peak_rss_mb"],
            "<= 100",
            v["peak_rss_mb"] <= t["verify_peak_rss_mb"],
            "{:,.0f}",
        )
        add("digest, s", rd["digest"]["seconds"], "", None, "{:,.2f}")
        add("digest, peak RSS MB", rd["digest"]["peak_rss_mb"], "", None, "{:,.0f}")
    m = r.get("memory/sqlite")
    if m:
        add(
            f"RSS firing across {m['instances']:,} instances, MB",
            m["engine"]["peak_rss_mb"],
            "<= 150",
            m["met"],
            "{:,.0f}",
        )
    cl = r.get("cli")
    if cl:
        add("workflow --help, s", cl["help_s"], "<= 0.3", cl["met"], "{:.3f}")
        add("workflow show ID, s", cl["show_s"], "", None, "{:.3f}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
