"""Durable fires, one transaction each: the engine against the raw driver and a naive engine.

Contenders, measured in the same run on the same database, alternating in rounds:

* **engine** — ``Engine.fire(id, "report_progress", ...)`` across many leader-development
  instances standing in ``implementing`` (where every further ``report_progress`` is valid).
* **raw** — the practical limit: the driver (``sqlite3`` / ``psycopg``) running the statements
  a fire needs, with the engine's journal and sync settings: ``BEGIN IMMEDIATE`` (SQLite) /
  ``BEGIN``; ``SELECT state, active, version, head_hash ... WHERE id=?`` (``FOR UPDATE`` on
  PostgreSQL); the event hash (:func:`workflow.audit.chain.event_hash`); ``UPDATE ... WHERE id=? AND
  version=?``; ``INSERT INTO workflow_events``; ``COMMIT``.
* **naive** — what users build from the ``transitions`` FAQ: a SQLAlchemy ORM class for the
  instance row loaded with a ``Session``, a new ``transitions.Machine(model=obj, ...)`` per
  fire, an ORM event object (hash-chained the same way), ``commit()``.

All three write valid hash chains, so the database verifies at the end (checked).

    python benchmarks/fire.py [--backend sqlite|postgres] [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from transitions import Machine

from workflow.audit import chain as audit
from workflow.storage.store import os_user

TARGETS = {"sqlite": 0.40, "postgres": 0.60}
NAIVE_TARGET = 8.0


class RawFire:
    """The statements of one fire on the raw driver, in one transaction."""

    def __init__(self, db: c.Database, content_hash: str) -> None:
        self.db = db
        self.conn = db.raw()
        self.content_hash = content_hash
        self.user = os_user()
        m = db.mark
        lock = "" if db.backend == "sqlite" else " FOR UPDATE"
        self.begin = "BEGIN IMMEDIATE" if db.backend == "sqlite" else "BEGIN"
        self.select = (
            f"SELECT state, active, version, head_hash FROM workflow_instances WHERE id = {m}{lock}"
        )
        self.update = (
            f"UPDATE workflow_instances SET state = {m}, active = {m}, version = {m}, "
            f"head_hash = {m}, updated_at = {m} WHERE id = {m} AND version = {m}"
        )
        self.insert = (
            f"INSERT INTO workflow_events ({', '.join(c.EVENT_FIELDS)}) "
            f"VALUES ({', '.join([m] * len(c.EVENT_FIELDS))})"
        )
        self.dest = '["implementing"]'

    def fire(self, instance: int, evidence: dict[str, Any]) -> None:
        self.fire_batch((instance,), evidence)

    def fire_batch(self, instances: Any, evidence: dict[str, Any]) -> None:
        """Fire on each instance in turn, all in ONE transaction (what a batch API costs)."""
        conn = self.conn
        conn.execute(self.begin)
        try:
            for instance in instances:
                self._one(conn, instance, evidence)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def fire_bulk(self, instances: list[int], evidence: dict[str, Any]) -> None:
        """The same fires (distinct instances) set-wise: one SELECT ... IN, then executemany
        for the UPDATEs and the INSERTs, in one transaction: the ceiling for a batch API."""
        conn = self.conn
        m = self.db.mark
        lock = "" if self.db.backend == "sqlite" else " FOR UPDATE"
        conn.execute(self.begin)
        try:
            rows = conn.execute(
                "SELECT id, active, version, head_hash FROM workflow_instances "
                f"WHERE id IN ({', '.join([m] * len(instances))}){lock}",
                instances,
            ).fetchall()
            text = audit.canonical_json(evidence)
            updates = []
            events = []
            for instance, active, version, head in rows:
                at = c.now_utc()
                digest = audit.event_hash(
                    instance=instance,
                    seq=version + 1,
                    trigger="report_progress",
                    from_state=active,
                    to_state=self.dest,
                    actor=c.ACTOR,
                    role="coordinator",
                    os_user=self.user,
                    at=at,
                    evidence=text,
                    note=None,
                    definition_hash=self.content_hash,
                    policy="allow-all",
                    prev_hash=head,
                    hash_format=None,  # this contender writes wf1 rows (no hash_format)
                )
                updates.append(
                    ("implementing", self.dest, version + 1, digest, at, instance, version)
                )
                events.append(
                    (
                        instance,
                        version + 1,
                        "report_progress",
                        active,
                        self.dest,
                        c.ACTOR,
                        "coordinator",
                        self.user,
                        at,
                        text,
                        None,
                        self.content_hash,
                        "allow-all",
                        head,
                        digest,
                    )
                )
            if self.db.backend == "sqlite":
                conn.executemany(self.update, updates)
                conn.executemany(self.insert, events)
            else:
                with conn.cursor() as cur:
                    cur.executemany(self.update, updates)
                    cur.executemany(self.insert, events)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _one(self, conn: Any, instance: int, evidence: dict[str, Any]) -> None:
        _state, active, version, head = conn.execute(self.select, (instance,)).fetchone()
        at = c.now_utc()
        text = audit.canonical_json(evidence)
        digest = audit.event_hash(
            instance=instance,
            seq=version + 1,
            trigger="report_progress",
            from_state=active,
            to_state=self.dest,
            actor=c.ACTOR,
            role="coordinator",
            os_user=self.user,
            at=at,
            evidence=text,
            note=None,
            definition_hash=self.content_hash,
            policy="allow-all",
            prev_hash=head,
            hash_format=None,  # this contender writes wf1 rows (no hash_format)
        )
        cur = conn.execute(
            self.update,
            ("implementing", self.dest, version + 1, digest, at, instance, version),
        )
        if cur.rowcount != 1:
            raise RuntimeError("version conflict")
        conn.execute(
            self.insert,
            (
                instance,
                version + 1,
                "report_progress",
                active,
                self.dest,
                c.ACTOR,
                "coordinator",
                self.user,
                at,
                text,
                None,
                self.content_hash,
                "allow-all",
                head,
                digest,
            ),
        )

    def close(self) -> None:
        self.conn.close()


class _Base(DeclarativeBase):
    pass


class InstanceRecord(_Base):
    """The naive engine's ORM view of an instance row."""

    __tablename__ = "workflow_instances"
    id: Mapped[int] = mapped_column(primary_key=True)
    program: Mapped[str]
    state: Mapped[str]
    active: Mapped[str]
    version: Mapped[int]
    head_hash: Mapped[str]
    updated_at: Mapped[str]


class EventRecord(_Base):
    """The naive engine's ORM event."""

    __tablename__ = "workflow_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int]
    seq: Mapped[int]
    trigger: Mapped[str]
    from_state: Mapped[str | None]
    to_state: Mapped[str]
    actor: Mapped[str]
    role: Mapped[str]
    os_user: Mapped[str]
    at: Mapped[str]
    evidence: Mapped[str]
    note: Mapped[str | None]
    definition_hash: Mapped[str]
    policy: Mapped[str]
    prev_hash: Mapped[str]
    hash: Mapped[str]


class NaiveFire:
    """The naive engine from the transitions FAQ: ORM load, new Machine per fire, ORM write."""

    def __init__(self, db: c.Database, program: Any) -> None:
        self.Session = Session
        self.Machine = Machine
        self.Instance = InstanceRecord
        self.Event = EventRecord
        self.engine = sa.create_engine(db.url)
        if db.backend == "sqlite":
            # The database file is in WAL mode already (that is persistent); say FULL
            # explicitly so the naive engine is as durable as the others.
            @sa_event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA synchronous=FULL")

        self.lock = db.backend != "sqlite"
        self.states = [s.name for s in program.states]
        self.transitions = [
            {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
            for t in program.transitions
        ]
        self.content_hash = program.content_hash
        self.user = os_user()

    def fire(self, instance: int, evidence: dict[str, Any]) -> None:
        with self.Session(self.engine) as session:
            obj = session.get(self.Instance, instance, with_for_update=self.lock)
            assert obj is not None
            before = obj.active
            self.Machine(
                model=obj,
                states=self.states,
                transitions=self.transitions,
                initial=obj.state,
                auto_transitions=False,
            )
            obj.trigger("report_progress")  # type: ignore[attr-defined]
            at = c.now_utc()
            text = json.dumps(evidence, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            after = json.dumps([obj.state], separators=(",", ":"), ensure_ascii=False)
            seq = obj.version + 1
            digest = audit.event_hash(
                instance=instance,
                seq=seq,
                trigger="report_progress",
                from_state=before,
                to_state=after,
                actor=c.ACTOR,
                role="coordinator",
                os_user=self.user,
                at=at,
                evidence=text,
                note=None,
                definition_hash=self.content_hash,
                policy="allow-all",
                prev_hash=obj.head_hash,
                hash_format=None,  # this contender writes wf1 rows (no hash_format)
            )
            session.add(
                self.Event(
                    instance_id=instance,
                    seq=seq,
                    trigger="report_progress",
                    from_state=before,
                    to_state=after,
                    actor=c.ACTOR,
                    role="coordinator",
                    os_user=self.user,
                    at=at,
                    evidence=text,
                    note=None,
                    definition_hash=self.content_hash,
                    policy="allow-all",
                    prev_hash=obj.head_hash,
                    hash=digest,
                )
            )
            obj.active = after
            obj.version = seq
            obj.head_hash = digest
            obj.updated_at = at
            session.commit()

    def close(self) -> None:
        self.engine.dispose()


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=None, help="instances fired across")
    p.add_argument("--batch", type=int, default=None, help="fires per contender per round")
    args = p.parse_args()
    rounds = args.rounds or (3 if args.quick else 9)
    batch = args.batch or (60 if args.quick else 400)
    n_instances = args.instances or (300 if args.quick else 5000)

    with c.scratch(args.backend, args.pg_url, label="fire") as db:
        c.log(args, f"building {n_instances} instances in `implementing` ({args.backend})...")
        templates = c.prepare(db, ["leader-development"])
        c.build(db, templates, c.implementing_specs(n_instances))
        engine = c.engine_for(db)
        program = engine.program("leader-development")
        ids = [i.id for i in engine.list(program="leader-development", state="implementing")]
        raw = RawFire(db, program.content_hash)
        naive = NaiveFire(db, program)

        def engine_fire(instance: int, evidence: dict[str, Any]) -> None:
            engine.fire(
                instance, "report_progress", actor=c.ACTOR, role="coordinator", evidence=evidence
            )

        contenders = {"engine": engine_fire, "raw": raw.fire, "naive": naive.fire}
        rates: dict[str, list[float]] = {k: [] for k in contenders}
        cursor = 0
        # Warm up every contender (caches, prepared statements, compiled machines).
        for fn in contenders.values():
            for _ in range(10):
                fn(ids[cursor % len(ids)], c.PROGRESS)
                cursor += 1
        for r in range(rounds):
            for name in c.rotate(list(contenders), r):
                fn = contenders[name]
                todo = [ids[(cursor + k) % len(ids)] for k in range(batch)]
                cursor += batch
                t0 = time.perf_counter()
                for instance in todo:
                    fn(instance, c.PROGRESS)
                rates[name].append(batch / (time.perf_counter() - t0))
            c.log(
                args,
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()),
            )
        raw.close()
        naive.close()
        check = engine.verify()
        engine.close()

    med = {k: c.median(v) for k, v in rates.items()}
    target = TARGETS[args.backend]
    result = {
        "benchmark": "fire",
        "backend": args.backend,
        "machine": c.machine_info(),
        "instances": n_instances,
        "rounds": rounds,
        "fires_per_round": batch,
        "fires_per_s": med,
        "rounds_fires_per_s": rates,
        "engine_vs_raw": c.ratio(med["engine"], med["raw"]),
        "engine_vs_naive": c.ratio(med["engine"], med["naive"]),
        "target_vs_raw": target,
        "target_vs_naive": NAIVE_TARGET,
        "ms_per_fire": {k: 1000 / v for k, v in med.items()},
        "verify_ok": check.ok,
        "events_verified": check.events_checked,
    }
    text = "\n".join(
        [
            f"fire ({args.backend}): {rounds} rounds x {batch} fires per contender, "
            f"round-robin over {n_instances:,} instances; medians",
            c.table(
                ["contender", "fires/s", "ms/fire", "engine / this", "target"],
                [
                    ["engine", med["engine"], 1000 / med["engine"], 1.0, ""],
                    [
                        "raw driver",
                        med["raw"],
                        1000 / med["raw"],
                        result["engine_vs_raw"],
                        f">= {target:.2f}",
                    ],
                    [
                        "naive ORM + Machine",
                        med["naive"],
                        1000 / med["naive"],
                        result["engine_vs_naive"],
                        f">= {NAIVE_TARGET:.0f}",
                    ],
                ],
            ),
            f"verify after the run: {'ok' if check.ok else 'FAILED'} "
            f"({check.events_checked:,} events)",
        ]
    )
    c.emit(args, result, text)
    return 0 if check.ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
