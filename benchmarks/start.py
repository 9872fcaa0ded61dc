"""Starts: ``Engine.start`` one by one, and a bulk start of every tambon of a district/province.

Contenders, alternating in rounds on one database (every start uses a fresh fiscal year, so
none is a duplicate):

* **start** — ``Engine.start(program, area=..., fiscal_year=...)``, one transaction each;
* **raw start** — the raw driver running what a start needs, one transaction each:
  ``BEGIN IMMEDIATE``; the duplicate check (``SELECT id, duplicate_no ... WHERE program=? AND
  area_code=? AND fiscal_year=?``); ``INSERT`` the instance; the start event's hash;
  ``INSERT`` the event; ``UPDATE`` the instance's head hash; ``COMMIT``;
* **bulk start** — ``Engine.start_many(program, areas=[every tambon of a province],
  fiscal_year=..., actor=..., role=...)``; against a loop of ``Engine.start`` over the same
  tambons and the raw driver starting them all in one transaction.

If the engine has no ``start_many`` the bulk part says so and is skipped.

    python benchmarks/start.py [--backend sqlite|postgres] [--quick] [--json] [--area CODE]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from workflow import areas as _areas
from workflow.audit import chain as audit
from workflow.storage.store import os_user

PROGRAM = "leader-development"
ROLE = "provincial_officer"


class RawStart:
    def __init__(self, db: c.Database, template: c.ProgramTemplate) -> None:
        self.db = db
        self.conn = db.raw()
        self.t = template
        self.user = os_user()
        m = db.mark
        self.begin = "BEGIN IMMEDIATE" if db.backend == "sqlite" else "BEGIN"
        self.find = (
            f"SELECT id, duplicate_no FROM workflow_instances WHERE program = {m} "
            f"AND area_code = {m} AND fiscal_year = {m} ORDER BY duplicate_no"
        )
        fields = c.INSTANCE_FIELDS[1:]
        self.insert_instance = (
            f"INSERT INTO workflow_instances ({', '.join(fields)}) "
            f"VALUES ({', '.join([m] * len(fields))}) RETURNING id"
        )
        self.insert_event = (
            f"INSERT INTO workflow_events ({', '.join(c.EVENT_FIELDS)}) "
            f"VALUES ({', '.join([m] * len(c.EVENT_FIELDS))})"
        )
        self.set_head = f"UPDATE workflow_instances SET head_hash = {m} WHERE id = {m}"

    def start(self, areas: list[str], year: int, one_transaction: bool) -> None:
        conn = self.conn
        if one_transaction:
            conn.execute(self.begin)
        for area in areas:
            if not one_transaction:
                conn.execute(self.begin)
            self._one(area, year)
            if not one_transaction:
                conn.execute("COMMIT")
        if one_transaction:
            conn.execute("COMMIT")

    def _one(self, area: str, year: int) -> None:
        conn, t = self.conn, self.t
        if conn.execute(self.find, (t.program, area, year)).fetchall():
            raise RuntimeError("duplicate")
        at = c.now_utc()
        first = t.steps[0]
        (iid,) = conn.execute(
            self.insert_instance,
            (
                t.program,
                t.version,
                t.definition_id,
                area,
                area[:2],
                year,
                0,
                None,
                first.state,
                first.to_state,
                1,
                audit.GENESIS,
                at,
                at,
            ),
        ).fetchone()
        evidence = audit.canonical_json(
            {
                "program": t.program,
                "program_version": t.version,
                "area": area,
                "fiscal_year": year,
                "title": None,
                "duplicate_no": 0,
            }
        )
        digest = audit.event_hash(
            instance=iid,
            seq=1,
            trigger="start",
            from_state=None,
            to_state=first.to_state,
            actor=c.ACTOR,
            role=ROLE,
            os_user=self.user,
            at=at,
            evidence=evidence,
            note=None,
            definition_hash=t.content_hash,
            policy="allow-all",
            prev_hash=audit.GENESIS,
            hash_format=None,  # this contender writes wf1 rows (no hash_format)
        )
        conn.execute(
            self.insert_event,
            (
                iid,
                1,
                "start",
                None,
                first.to_state,
                c.ACTOR,
                ROLE,
                self.user,
                at,
                evidence,
                None,
                t.content_hash,
                "allow-all",
                audit.GENESIS,
                digest,
            ),
        )
        conn.execute(self.set_head, (digest, iid))

    def close(self) -> None:
        self.conn.close()


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--area",
        default=None,
        help="province or district whose tambons the bulk start covers "
        "(default: 30, Nakhon Ratchasima; 3001 with --quick)",
    )
    args = p.parse_args()
    import workflow

    rounds = args.rounds or (3 if args.quick else 7)
    batch = 30 if args.quick else 200
    bulk_area = args.area or ("3001" if args.quick else "30")
    bulk_areas = [a.code for a in _areas.subdistricts_within(bulk_area)]
    has_many = hasattr(workflow.Engine, "start_many")
    tambons = c.all_tambons()
    year = 2410

    def next_year() -> int:
        nonlocal year
        year += 1
        return year

    with c.scratch(args.backend, args.pg_url, label="start") as db:
        templates = c.prepare(db, [PROGRAM])
        engine = c.engine_for(db)
        raw = RawStart(db, templates[PROGRAM])
        offset = 0

        def slice_() -> list[str]:
            nonlocal offset
            out = [tambons[(offset + k) % len(tambons)] for k in range(batch)]
            offset += batch
            return out

        def engine_single() -> int:
            y = next_year()
            for a in slice_():
                engine.start(PROGRAM, area=a, fiscal_year=y, actor=c.ACTOR, role=ROLE)
            return batch

        def raw_single() -> int:
            raw.start(slice_(), next_year(), one_transaction=False)
            return batch

        def bulk_many() -> int:
            created = engine.start_many(
                PROGRAM, areas=bulk_areas, fiscal_year=next_year(), actor=c.ACTOR, role=ROLE
            )
            assert len(created) == len(bulk_areas)
            return len(bulk_areas)

        def bulk_loop() -> int:
            y = next_year()
            for a in bulk_areas:
                engine.start(PROGRAM, area=a, fiscal_year=y, actor=c.ACTOR, role=ROLE)
            return len(bulk_areas)

        def bulk_raw() -> int:
            raw.start(bulk_areas, next_year(), one_transaction=True)
            return len(bulk_areas)

        contenders: dict[str, Any] = {
            "start": engine_single,
            "raw start": raw_single,
            "bulk: Engine.start loop": bulk_loop,
            "bulk: raw, one transaction": bulk_raw,
        }
        if has_many:
            contenders["bulk: start_many"] = bulk_many
        rates: dict[str, list[float]] = {k: [] for k in contenders}
        seconds: dict[str, list[float]] = {k: [] for k in contenders}
        for r in range(rounds):
            for name in c.rotate(list(contenders), r):
                t0 = time.perf_counter()
                n = contenders[name]()
                dt = time.perf_counter() - t0
                rates[name].append(n / dt)
                seconds[name].append(dt)
            c.log(
                args,
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()),
            )
        raw.close()
        check = engine.verify()
        engine.close()

    med = {k: c.median(v) for k, v in rates.items()}
    wall = {k: c.median(v) for k, v in seconds.items()}
    rows = [
        [
            "Engine.start",
            med["start"],
            1000 / med["start"],
            "",
            c.ratio(med["start"], med["raw start"]),
        ],
        ["raw driver start", med["raw start"], 1000 / med["raw start"], "", 1.0],
    ]
    bulk_rows = []
    for name in ("bulk: start_many", "bulk: Engine.start loop", "bulk: raw, one transaction"):
        if name in med:
            ref = med.get("bulk: start_many")
            bulk_rows.append(
                [name[6:], med[name], wall[name], c.ratio(ref, med[name]) if ref else ""]
            )
    result = {
        "benchmark": "start",
        "backend": args.backend,
        "machine": c.machine_info(),
        "rounds": rounds,
        "starts_per_s": med,
        "seconds": wall,
        "rounds_starts_per_s": rates,
        "start_vs_raw": c.ratio(med["start"], med["raw start"]),
        "start_many_implemented": has_many,
        "bulk_area": bulk_area,
        "bulk_tambons": len(bulk_areas),
        "start_many_vs_loop": c.ratio(
            med.get("bulk: start_many", float("nan")), med["bulk: Engine.start loop"]
        ),
        "verify_ok": check.ok,
    }
    area = _areas.get(bulk_area)
    text = "\n".join(
        [
            f"start ({args.backend}): {rounds} rounds x {batch} starts per contender; medians",
            c.table(["contender", "starts/s", "ms/start", "", "engine / raw"], rows),
            "",
            f"bulk start: every tambon of {area.display()} ({len(bulk_areas)} tambons)"
            + ("" if has_many else "; start_many: not implemented"),
            c.table(["contender", "starts/s", "seconds", "start_many / this"], bulk_rows),
            f"verify after the run: {'ok' if check.ok else 'FAILED'} "
            f"({check.events_checked:,} events)",
        ]
    )
    c.emit(args, result, text)
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
