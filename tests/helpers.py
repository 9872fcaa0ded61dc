"""Shared helpers for the engine, concurrency and tamper tests.

Kept in a plain module (not conftest) so that the worker functions of the concurrency tests can
be pickled by reference and imported by ``spawn``-ed processes.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from workflow import AllowAll, Engine, FireResult, Instance, WorkflowError

# --------------------------------------------------------------------------- the stories

#: Tambon Bang Khan Mak, Mueang Lop Buri (seed 000).
LOPBURI = "160117"
OFFICER = "provincial_officer"
COORDINATOR = "coordinator"
INSPECTOR = "inspector"

KICKOFF = {
    "date": "2564-02-17",
    "venue": "ศูนย์เรียนรู้ หมู่ที่ 1 ตำบลบางขันหมาก",
    "chair": "นายอำเภอเมืองลพบุรี",
}

#: Leader-development steps after kickoff: (trigger, role, evidence).
LEADER_STEPS: dict[str, tuple[str, dict[str, Any]]] = {
    "kickoff": (OFFICER, KICKOFF),
    "workshop": (COORDINATOR, {"date": "2564-03-03", "venue": "บ้านสระบัว", "participants": 25,
                               "end_date": "2564-03-04"}),
    "report_progress": (COORDINATOR, {"date": "2564-04-01", "summary": "ปลูกผักสวนครัว"}),
    "evaluate": (OFFICER, {"date": "2564-06-01", "method": "Like & Follow และ Share"}),
    "award": (INSPECTOR, {"date": "2564-07-01", "level": "excellent"}),
    "summarize": (OFFICER, {"date": "2564-08-01", "venue": "ศาลาประชาคม"}),
    "lessons_learned": (OFFICER, {"date": "2564-09-01", "summary": "ถอดบทเรียน"}),
    "close": (OFFICER, {"date": "2564-09-15"}),
}

KHOK_REGIONS = ("training", "learning_areas", "employment", "consumption", "integration",
                "standards", "digital")


def start_lopburi(engine: Engine, *, area: str = LOPBURI, fiscal_year: int = 2564,
                  actor: str = "udomrat", **kwargs: Any) -> Instance:
    """Start leader-development for Tambon Bang Khan Mak, FY 2564 (seed 000)."""
    return engine.start("leader-development", area=area, fiscal_year=fiscal_year, actor=actor,
                        role=OFFICER, **kwargs)


def lopburi_story(engine: Engine, **kwargs: Any) -> tuple[Instance, FireResult]:
    """Start the Lopburi leader-development story and fire its kickoff (17 Feb 2564)."""
    inst = start_lopburi(engine, **kwargs)
    result = engine.fire(inst.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
    return inst, result


def leader_fire(engine: Engine, instance_id: int, trigger: str, actor: str = "somchai",
                **kwargs: Any) -> FireResult:
    """Fire one leader-development step with its usual role and evidence."""
    role, evidence = LEADER_STEPS[trigger]
    return engine.fire(instance_id, trigger, actor=actor, role=role, evidence=evidence, **kwargs)


def leader_to(engine: Engine, instance_id: int, triggers: Iterable[str]) -> FireResult | None:
    """Fire the given leader-development steps in order; return the last result."""
    last = None
    for trigger in triggers:
        last = leader_fire(engine, instance_id, trigger)
    return last


def start_khok(engine: Engine, area: str = LOPBURI, fiscal_year: int = 2564, *,
               enroll: bool = True, employment: bool = True, **kwargs: Any) -> Instance:
    """Start khok-nong-na; optionally enroll and start the employment region."""
    inst = engine.start("khok-nong-na", area=area, fiscal_year=fiscal_year, actor="anong",
                        role=OFFICER, **kwargs)
    if enroll:
        engine.fire(inst.id, "enroll", actor="anong", role=OFFICER,
                    evidence={"date": "2564-01-13", "households": 12})
    if enroll and employment:
        engine.fire(inst.id, "start_employment", actor="malee", role=COORDINATOR,
                    evidence={"date": "2564-02-01"})
    return engine.get(inst.id)


def report_employment(engine: Engine, instance_id: int, workers: int = 5, **kwargs: Any
                      ) -> FireResult:
    return engine.fire(instance_id, "report_employment", actor="malee", role=COORDINATOR,
                       evidence={"date": "2564-03-01", "workers": workers}, **kwargs)


def be_date(day: dt.date) -> str:
    """A date written with its Buddhist-Era year, as the source documents do."""
    return f"{day.year + 543:04d}-{day.month:02d}-{day.day:02d}"


# --------------------------------------------------------------------------- raw database


def sql_engine(url: str) -> sa.Engine:
    """A plain SQLAlchemy engine on the test database (for dumps and intruders)."""
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def open_engine(url: str, *args: Any, **kwargs: Any) -> Engine:
    """An engine with the AllowAll policy (the tests that need grants make their own)."""
    return Engine(url, *args, policy=AllowAll(), **kwargs)


_REFLECTED: dict[tuple[str, tuple[str, ...]], sa.MetaData] = {}


def dump_tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ``workflow_*`` table, ordered by primary key."""
    eng = sql_engine(url)
    try:
        with eng.connect() as conn:
            names = tuple(sorted(n for n in sa.inspect(conn).get_table_names()
                                 if n.startswith("workflow_")))
            # Reflecting is slow; one schema revision has one set of tables, so reuse it.
            key = (eng.dialect.name, names)
            meta = _REFLECTED.get(key)
            if meta is None:
                meta = sa.MetaData()
                meta.reflect(conn, only=list(names))
                _REFLECTED[key] = meta
            out: dict[str, list[tuple[Any, ...]]] = {}
            for name in names:
                table = meta.tables[name]
                order = list(table.primary_key.columns) or list(table.columns)
                rows = conn.execute(sa.select(table).order_by(*order)).all()
                out[name] = [tuple(r) for r in rows]
        return out
    finally:
        eng.dispose()


def pop_denials(dump: dict[str, list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    """Take out of a table dump (``dump_tables``) what recording refusals adds, and return
    the denial rows: a denial is recorded on purpose (CONTRACT §5), with its entry in the
    audit log's queue (migration 0008), while everything else must stay as it was."""
    queue = dump.get("workflow_audit_queue")
    if queue is not None:
        dump["workflow_audit_queue"] = [r for r in queue if r[1] != "denial"]
    return dump.pop("workflow_denials", [])


def execute(url: str, *statements: str | sa.TextClause, params: Mapping[str, Any] | None = None
            ) -> None:
    """Run raw statements in one committed transaction (what an intruder with SQL does)."""
    eng = sql_engine(url)
    try:
        with eng.begin() as conn:
            for s in statements:
                conn.execute(sa.text(s) if isinstance(s, str) else s, dict(params or {}))
    finally:
        eng.dispose()


# --------------------------------------------------------------------------- workers


def _wait_until(start_at: float) -> None:
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)


def fire_worker(url: str, instance_ids: Sequence[int], fires: int, seed: int, start_at: float
                ) -> tuple[list[tuple[int, int]], list[str]]:
    """Fire ``report_employment`` ``fires`` times at random instances of ``instance_ids``.

    Returns the (instance, seq) of every success and the class name of every exception.
    """
    rng = random.Random(seed)
    successes: list[tuple[int, int]] = []
    errors: list[str] = []
    engine = Engine(url, policy=AllowAll())
    try:
        _wait_until(start_at)
        for i in range(fires):
            target = rng.choice(list(instance_ids))
            try:
                result = engine.fire(target, "report_employment", actor=f"worker{seed}",
                                     role=COORDINATOR,
                                     evidence={"date": "2564-03-01", "workers": i})
            except Exception as e:  # record everything; the test decides what is acceptable
                errors.append(type(e).__name__)
            else:
                successes.append((result.event.instance, result.event.seq))
    finally:
        engine.close()
    return successes, errors


def start_worker(url: str, areas: Sequence[str], seed: int, start_at: float
                 ) -> list[tuple[str, int | None, str | None]]:
    """Try to start khok-nong-na FY 2564 for each area in turn, all workers racing.

    Returns (area, instance id, None) for a success or (area, None, error class name).
    """
    out: list[tuple[str, int | None, str | None]] = []
    engine = Engine(url, policy=AllowAll())
    try:
        _wait_until(start_at)
        for area in areas:
            try:
                inst = engine.start("khok-nong-na", area=area, fiscal_year=2564,
                                    actor=f"worker{seed}", role=OFFICER)
            except Exception as e:
                out.append((area, None, type(e).__name__))
            else:
                out.append((area, inst.id, None))
    finally:
        engine.close()
    return out


def warm_up(seconds: float) -> int:
    """Occupy a pool process for a moment (so that every process of the pool is started)."""
    import os

    time.sleep(seconds)
    return os.getpid()


def is_workflow_error(name: str) -> bool:
    """Whether an exception class name (from a worker) names a WorkflowError subclass."""
    import workflow

    cls = getattr(workflow, name, None)
    return isinstance(cls, type) and issubclass(cls, WorkflowError)
