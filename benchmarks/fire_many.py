"""Batched fires: ``Engine.fire_many`` (many instances, one transaction) against the raw driver.

Contenders, alternating in rounds on one database:

* **fire_many** — ``engine.fire_many(requests)``: one ``report_progress`` on each of B distinct
  instances standing in ``implementing``, all in one transaction, same checks and audit records
  as single fires;
* **raw batch** — the raw driver running the same statements for B fires (read, hash, UPDATE
  with version check, INSERT the event) inside one ``BEGIN IMMEDIATE ... COMMIT``;
* **raw bulk** — the same fires set-wise: one ``SELECT ... WHERE id IN (...)``, then
  ``executemany`` for the UPDATEs and the INSERTs: the ceiling for a batch API;
* **fire (single)** — ``Engine.fire`` one transaction each, for scale.

If the engine has no ``fire_many`` the script says so and exits 0.

    python benchmarks/fire_many.py [--backend sqlite|postgres] [--quick] [--json]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
from fire import RawFire

TARGET = 25_000  # fires/s on SQLite


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None, help="batch sizes, comma-separated")
    p.add_argument("--instances", type=int, default=None)
    args = p.parse_args()
    import workflow

    if not hasattr(workflow.Engine, "fire_many"):
        result = {"benchmark": "fire_many", "backend": args.backend, "implemented": False}
        c.emit(args, result, "fire_many: not implemented")
        return 0
    rounds = args.rounds or (3 if args.quick else 7)
    sizes = [int(s) for s in (args.sizes or ("100" if args.quick else "100,1000")).split(",")]
    n_instances = args.instances or (2000 if args.quick else 20000)
    singles = 30 if args.quick else 200

    with c.scratch(args.backend, args.pg_url, label="firemany") as db:
        c.log(args, f"building {n_instances} instances in `implementing` ({args.backend})...")
        templates = c.prepare(db, ["leader-development"])
        c.build(db, templates, c.implementing_specs(n_instances))
        engine = c.engine_for(db)
        program = engine.program("leader-development")
        ids = [i.id for i in engine.list(program="leader-development", state="implementing")]
        raw = RawFire(db, program.content_hash)
        cursor = 0

        def take(n: int) -> list[int]:
            nonlocal cursor
            out = [ids[(cursor + k) % len(ids)] for k in range(n)]
            cursor += n
            return out

        def engine_batch(batch: list[int]) -> None:
            results = engine.fire_many(
                [
                    {
                        "instance": i,
                        "trigger": "report_progress",
                        "actor": c.ACTOR,
                        "role": "coordinator",
                        "evidence": c.PROGRESS,
                    }
                    for i in batch
                ]
            )
            assert len(results) == len(batch)

        def raw_batch(batch: list[int]) -> None:
            raw.fire_batch(batch, c.PROGRESS)

        def raw_bulk(batch: list[int]) -> None:
            raw.fire_bulk(batch, c.PROGRESS)

        def singles_fn(batch: list[int]) -> None:
            for i in batch:
                engine.fire(
                    i, "report_progress", actor=c.ACTOR, role="coordinator", evidence=c.PROGRESS
                )

        contenders: dict[str, tuple[Any, int | None]] = {}
        for size in sizes:
            contenders[f"fire_many x{size}"] = (engine_batch, size)
            contenders[f"raw batch x{size}"] = (raw_batch, size)
            contenders[f"raw bulk x{size}"] = (raw_bulk, size)
        contenders["fire (single)"] = (singles_fn, None)
        rates: dict[str, list[float]] = {k: [] for k in contenders}
        for fn, size in contenders.values():  # warm-up
            fn(take(size or 5))
        for r in range(rounds):
            for name in c.rotate(list(contenders), r):
                fn, size = contenders[name]
                # Large batches repeat so each timing covers a few thousand fires.
                reps = 1 if size is None else max(1, 2000 // size)
                n = singles if size is None else size
                batches = [take(n) for _ in range(reps)]
                t0 = time.perf_counter()
                for b in batches:
                    fn(b)
                rates[name].append(n * reps / (time.perf_counter() - t0))
            c.log(
                args,
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()),
            )
        raw.close()
        check = engine.verify()
        engine.close()

    med = {k: c.median(v) for k, v in rates.items()}
    rows = []
    summary: dict[str, Any] = {}
    for size in sizes:
        e, r = med[f"fire_many x{size}"], med[f"raw batch x{size}"]
        b = med[f"raw bulk x{size}"]
        rows.append([f"fire_many, batch {size}", e, 1e6 / e, 1.0, ""])
        rows.append([f"raw driver, batch {size}, row by row", r, 1e6 / r, c.ratio(e, r), ""])
        rows.append([f"raw driver, batch {size}, executemany", b, 1e6 / b, c.ratio(e, b), ""])
        summary[str(size)] = {
            "engine": e,
            "raw": r,
            "raw_bulk": b,
            "engine_vs_raw": c.ratio(e, r),
            "engine_vs_raw_bulk": c.ratio(e, b),
        }
    s = med["fire (single)"]
    rows.append(["Engine.fire, 1 per transaction", s, 1e6 / s, "", ""])
    best = max(med[f"fire_many x{size}"] for size in sizes)
    result = {
        "benchmark": "fire_many",
        "backend": args.backend,
        "implemented": True,
        "machine": c.machine_info(),
        "rounds": rounds,
        "instances": n_instances,
        "fires_per_s": med,
        "rounds_fires_per_s": rates,
        "by_size": summary,
        "best_fire_many_per_s": best,
        "target_per_s": TARGET if args.backend == "sqlite" else None,
        "verify_ok": check.ok,
    }
    text = "\n".join(
        [
            f"fire_many ({args.backend}): {rounds} rounds, distinct instances per batch "
            f"(round-robin over {n_instances:,}); medians",
            c.table(["contender", "fires/s", "us/fire", "fire_many / this", ""], rows),
            f"best fire_many: {best:,.0f} fires/s"
            + (f" (target >= {TARGET:,} on SQLite)" if args.backend == "sqlite" else ""),
            f"verify after the run: {'ok' if check.ok else 'FAILED'} "
            f"({check.events_checked:,} events)",
        ]
    )
    c.emit(args, result, text)
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
