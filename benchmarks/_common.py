"""Shared helpers for the benchmark scripts (not a test module, not part of the package).

What lives here:

* command-line options every script shares (``--json``, ``--quick``, ``--backend``, ``--pg-url``);
* scratch databases (a SQLite file in a temporary directory, or a PostgreSQL database created
  for the run and dropped after it) and raw driver connections configured exactly as the
  engine configures its own (WAL, ``synchronous=FULL``, ``foreign_keys=ON``, busy timeout);
* a **bulk builder** that writes instances and their hash-chained events directly with the
  raw driver, mirroring byte for byte what ``Engine.start`` and ``Engine.fire`` would write
  (so ``Engine.verify`` passes on the result), at tens of thousands of events a second;
* timing, medians, ratios, peak-memory readings and table printing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import workflow
from workflow.audit import chain as audit
from workflow.runtime.machine import compile_program
from workflow.storage.store import os_user

HERE = Path(__file__).resolve().parent
PROFILES = HERE / "profiles"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

INSTANCE_FIELDS = (
    "id",
    "program",
    "program_version",
    "definition_id",
    "area_code",
    "province_code",
    "fiscal_year",
    "duplicate_no",
    "title",
    "state",
    "active",
    "version",
    "head_hash",
    "created_at",
    "updated_at",
)
EVENT_FIELDS = (
    "instance_id",
    "seq",
    "trigger",
    "from_state",
    "to_state",
    "actor",
    "role",
    "os_user",
    "at",
    "evidence",
    "note",
    "definition_hash",
    "policy",
    "prev_hash",
    "hash",
)
#: What ``build`` writes: the engine's events of today, hashed as ``wf3`` and saying so.
BUILD_EVENT_FIELDS = (*EVENT_FIELDS, "auth", "hash_format")

#: The evidence the fire benchmarks record with each ``report_progress``.
PROGRESS = {"date": "2564-04-01", "summary": "ปลูกผักสวนครัว 25 ครัวเรือน", "households": 25}
ACTOR = "อุดมรัตน์ อมรเทพ"


# --------------------------------------------------------------------------- options and output


def parser(description: str, *, backend: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--quick", action="store_true", help="a fast smoke run (fewer rounds, less)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per contender (override)")
    if backend:
        p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
        p.add_argument(
            "--pg-url",
            default=os.environ.get("WORKFLOW_BENCH_PG_URL", DEFAULT_PG),
            help="a PostgreSQL server URL (SQLAlchemy form); scratch databases are created "
            "on that server and dropped afterwards (default: %(default)s)",
        )
    return p


def log(args: argparse.Namespace, *parts: object) -> None:
    """Progress notes go to stderr, so stdout stays one table or one JSON object."""
    if not getattr(args, "json", False) or os.environ.get("WORKFLOW_BENCH_VERBOSE"):
        print(*parts, file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(result, ensure_ascii=False, default=str))
    else:
        print(text)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "workflow": workflow.__version__,
    }


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def rotate(items: Sequence[Any], n: int) -> list[Any]:
    """``items`` rotated by ``n``: each round starts with a different contender."""
    k = n % len(items)
    return list(items[k:]) + list(items[:k])


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's current resident set (VmRSS) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime(TIME_FORMAT)


# --------------------------------------------------------------------------- databases


@dataclass
class Database:
    """A database for one benchmark: its SQLAlchemy URL and how to open a raw connection."""

    backend: str
    url: str  # SQLAlchemy URL, for the engine
    path: Path | None = None  # SQLite file
    conninfo: str | None = None  # libpq URL, for psycopg

    def raw(self, *, bulk: bool = False) -> Any:
        """A raw DB-API connection configured as the engine configures its own.

        SQLite: autocommit mode (transactions are begun explicitly, ``BEGIN IMMEDIATE`` for
        writes), WAL, ``synchronous=FULL``, foreign keys on, a 200 ms busy timeout. ``bulk``
        relaxes durability for building data sets only (never for anything that is timed).
        PostgreSQL: autocommit mode, transactions begun and committed explicitly.
        """
        if self.backend == "sqlite":
            assert self.path is not None
            conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=0.2)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=" + ("OFF" if bulk else "FULL"))
            conn.execute("PRAGMA foreign_keys=" + ("OFF" if bulk else "ON"))
            conn.execute("PRAGMA busy_timeout=" + ("10000" if bulk else "200"))
            return conn
        import psycopg

        assert self.conninfo is not None
        conn = psycopg.connect(self.conninfo, autocommit=True)
        if bulk:
            conn.execute("SET synchronous_commit = off")
        return conn

    @property
    def mark(self) -> str:
        """The DB-API parameter marker of this backend."""
        return "?" if self.backend == "sqlite" else "%s"

    def size_mb(self) -> float:
        if self.backend == "sqlite":
            assert self.path is not None
            total = 0
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(self.path) + suffix)
                if p.exists():
                    total += p.stat().st_size
            return total / 1e6
        with contextlib.closing(self.raw()) as conn:
            return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1e6


def libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq URL."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


def with_database(url: str, name: str) -> str:
    """``url`` with its database name replaced by ``name``."""
    base, _, tail = url.rpartition("/")
    query = ("?" + tail.split("?", 1)[1]) if "?" in tail else ""
    return f"{base}/{name}{query}"


def pg_exists(pg_url: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(libpq(pg_url), autocommit=True) as admin:
        return (
            admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def pg_create(pg_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(libpq(pg_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')


def pg_drop(pg_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(libpq(pg_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_database(backend: str, pg_url: str, location: str) -> Database:
    """A database that may already exist: a SQLite path, or a PostgreSQL database name."""
    if backend == "sqlite":
        path = Path(location).resolve()
        return Database("sqlite", f"sqlite:///{path}", path=path)
    url = with_database(pg_url, location)
    return Database("postgres", url, conninfo=libpq(url))


@contextlib.contextmanager
def scratch(backend: str, pg_url: str = DEFAULT_PG, label: str = "bench") -> Iterator[Database]:
    """A new, empty database for one run, removed afterwards."""
    if backend == "sqlite":
        root = Path(tempfile.mkdtemp(prefix=f"wf_{label}_"))
        try:
            yield open_database("sqlite", pg_url, str(root / f"{label}.db"))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    name = f"wf_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    pg_create(pg_url, name)
    try:
        yield open_database("postgres", pg_url, name)
    finally:
        pg_drop(pg_url, name)


def engine_for(db: Database, **kwargs: Any) -> workflow.Engine:
    kwargs.setdefault("policy", workflow.AllowAll())
    return workflow.Engine(db.url, **kwargs)


# --------------------------------------------------------------------------- areas


def all_tambons() -> list[str]:
    """Every tambon (subdistrict) code, province by province."""
    import geothai

    from workflow import areas

    out: list[str] = []
    for p in geothai.provinces():
        out.extend(a.code for a in areas.subdistricts_within(p.code))
    return out


# --------------------------------------------------------------------------- bulk building


def _sample_value(field: Any) -> object:
    t = field.type
    if t == "date":
        return "2564-03-01"
    if t == "text":
        return "บันทึกผลการดำเนินงาน"
    if t in ("integer", "number"):
        return int(max(field.min or 1, 1))
    if t == "boolean":
        return True
    return field.choices[0]


#: The path each program's bulk-built instances walk (a prefix of it, after ``start``).
WALKS: dict[str, list[str]] = {
    "leader-development": ["kickoff", "workshop"]
    + ["report_progress"] * 12
    + ["evaluate", "award", "summarize", "lessons_learned"],
    "khok-nong-na": [
        "enroll",
        "start_training",
        "complete_training",
        "start_learning_areas",
        "complete_learning_areas",
        "start_employment",
        "report_employment",
        "complete_employment",
        "start_consumption",
        "complete_consumption",
        "start_integration",
        "complete_integration",
        "start_standards",
        "complete_standards",
        "start_digital",
        "complete_digital",
        "evaluate",
        "close",
    ],
    "one-plan": ["collect_data", "hold_forums", "train_committee", "draft_plan"]
    + ["submit", "return_for_revision"] * 5
    + ["submit", "approve", "link_plans", "close"],
}
MAX_WALK = 1 + min(len(w) for w in WALKS.values())  # 19 events, start included


@dataclass(frozen=True)
class StepTemplate:
    trigger: str
    role: str
    from_state: str | None
    to_state: str
    state: str
    evidence: str | None  # canonical text; None for start (its evidence is the identity)


@dataclass(frozen=True)
class ProgramTemplate:
    program: str
    version: int
    definition_id: int
    content_hash: str
    steps: tuple[StepTemplate, ...]


def _config_text(config: Sequence[str]) -> str:
    return json.dumps(list(config), separators=(",", ":"), ensure_ascii=False)


def program_template(
    engine: workflow.Engine, program_id: str, definition_id: int
) -> ProgramTemplate:
    """What the engine would record along ``WALKS[program_id]``, worked out once by applying
    each trigger with the program's own compiled machine (so states, typed evidence and the
    canonical texts are exactly the engine's)."""
    program = engine.program(program_id)
    machine = compile_program(program)
    config = machine.initial()
    steps = [
        StepTemplate(
            "start", program.start_roles[0], None, _config_text(config), program.initial, None
        )
    ]
    happened: set[str] = {"start"}
    for trigger in WALKS[program_id]:
        transition = program.transitions_for(trigger)[0]
        role = transition.roles[0]
        evidence = {f.name: _sample_value(f) for f in transition.evidence if f.required}
        step = machine.apply(config, trigger, role, evidence, happened=lambda: happened)
        happened.add(trigger)
        steps.append(
            StepTemplate(
                trigger,
                role,
                _config_text(config),
                _config_text(step.after),
                machine.top_state(step.after),
                audit.canonical_json(dict(step.evidence)),
            )
        )
        config = step.after
    return ProgramTemplate(
        program.id, program.version, definition_id, program.content_hash, tuple(steps)
    )


def prepare(db: Database, programs: Sequence[str] = tuple(WALKS)) -> dict[str, ProgramTemplate]:
    """Create the schema, store each program's definition the way the engine does (one real
    ``Engine.start`` per program, fiscal year 2400, which no bulk instance uses) and return the
    templates the bulk builder writes from."""
    engine = engine_for(db)
    try:
        engine.init()
        for program in programs:
            with contextlib.suppress(workflow.DuplicateInstance):
                engine.start(
                    program,
                    area="100101",
                    fiscal_year=2400,
                    actor=ACTOR,
                    role=engine.program(program).start_roles[0],
                )
        with contextlib.closing(db.raw()) as conn:
            ids = dict(
                (p, i)
                for i, p in conn.execute("SELECT id, program FROM workflow_definitions").fetchall()
            )
        return {p: program_template(engine, p, ids[p]) for p in programs}
    finally:
        engine.close()


@dataclass(frozen=True)
class Spec:
    program: str
    area: str
    fiscal_year: int
    events: int  # 1 = just started; at most len(template.steps)
    duplicate_no: int = 0  # another instance of the program, area and fiscal year


def build(
    db: Database,
    templates: dict[str, ProgramTemplate],
    specs: Iterable[Spec],
    *,
    policy: str = "allow-all",
    chunk: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Write instances and their events directly with the raw driver, hash chains and all.

    Each instance is what ``Engine.start`` followed by ``events - 1`` fires along the program's
    walk would have written: the ``start`` event's evidence is the instance's identity, every
    event is hashed with :func:`workflow.audit.chain.event_hash` in the format the engine
    writes now (``wf3``, named in ``hash_format``), the instance carries its last
    event's configuration, hash, version and time. Returns (instances, events) written.
    """
    user = os_user()
    conn = db.raw(bulk=True)
    instances = events = 0
    try:
        first_id = (
            (conn.execute("SELECT COALESCE(MAX(id), 0) FROM workflow_instances").fetchone()[0]) + 1
        )
        next_id = first_id
        # Timestamps: one second per instance, one millisecond per event, from a fixed origin.
        origin = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
        batch_i: list[tuple[Any, ...]] = []
        batch_e: list[tuple[Any, ...]] = []
        for spec in specs:
            t = templates[spec.program]
            iid = next_id
            next_id += 1
            base = origin + dt.timedelta(seconds=iid)
            identity = audit.canonical_json(
                {
                    "program": t.program,
                    "program_version": t.version,
                    "area": spec.area,
                    "fiscal_year": spec.fiscal_year,
                    "title": None,
                    "duplicate_no": spec.duplicate_no,
                }
            )
            prev = audit.GENESIS
            created = at = ""
            for seq, step in enumerate(t.steps[: spec.events], start=1):
                at = (base + dt.timedelta(milliseconds=seq)).strftime(TIME_FORMAT)
                if seq == 1:
                    created = at
                evidence = identity if step.evidence is None else step.evidence
                digest = audit.event_hash(
                    instance=iid,
                    seq=seq,
                    trigger=step.trigger,
                    from_state=step.from_state,
                    to_state=step.to_state,
                    actor=ACTOR,
                    role=step.role,
                    os_user=user,
                    at=at,
                    evidence=evidence,
                    note=None,
                    definition_hash=t.content_hash,
                    policy=policy,
                    prev_hash=prev,
                    hash_format=audit.EVENT_FORMAT,
                )
                batch_e.append(
                    (
                        iid,
                        seq,
                        step.trigger,
                        step.from_state,
                        step.to_state,
                        ACTOR,
                        step.role,
                        user,
                        at,
                        evidence,
                        None,
                        t.content_hash,
                        policy,
                        prev,
                        digest,
                        None,
                        audit.EVENT_FORMAT,
                    )
                )
                prev = digest
            last = t.steps[spec.events - 1]
            batch_i.append(
                (
                    iid,
                    t.program,
                    t.version,
                    t.definition_id,
                    spec.area,
                    spec.area[:2],
                    spec.fiscal_year,
                    spec.duplicate_no,
                    None,
                    last.state,
                    last.to_state,
                    spec.events,
                    prev,
                    created,
                    at,
                )
            )
            instances += 1
            events += spec.events
            if len(batch_i) >= chunk:
                _flush(db, conn, batch_i, batch_e)
                if progress:
                    progress(instances, events)
        _flush(db, conn, batch_i, batch_e)
        if db.backend == "postgres":
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('workflow_instances', 'id'), "
                "(SELECT MAX(id) FROM workflow_instances))"
            )
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('workflow_events', 'id'), "
                "(SELECT MAX(id) FROM workflow_events))"
            )
            conn.execute("ANALYZE")
        else:
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return instances, events


def _flush(
    db: Database, conn: Any, batch_i: list[tuple[Any, ...]], batch_e: list[tuple[Any, ...]]
) -> None:
    if not batch_i:
        return
    if db.backend == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT INTO workflow_instances ({', '.join(INSTANCE_FIELDS)}) "
            f"VALUES ({', '.join('?' * len(INSTANCE_FIELDS))})",
            batch_i,
        )
        conn.executemany(
            f"INSERT INTO workflow_events ({', '.join(BUILD_EVENT_FIELDS)}) "
            f"VALUES ({', '.join('?' * len(BUILD_EVENT_FIELDS))})",
            batch_e,
        )
        conn.execute("COMMIT")
    else:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(
                f"COPY workflow_instances ({', '.join(INSTANCE_FIELDS)}) FROM STDIN"
            ) as cp:
                for row in batch_i:
                    cp.write_row(row)
            with cur.copy(
                f"COPY workflow_events ({', '.join(BUILD_EVENT_FIELDS)}) FROM STDIN"
            ) as cp:
                for row in batch_e:
                    cp.write_row(row)
    batch_i.clear()
    batch_e.clear()


def implementing_specs(n: int, *, year: int = 2564) -> list[Spec]:
    """``n`` leader-development instances standing in ``implementing`` (start, kickoff,
    workshop, report_progress), where every further ``report_progress`` is valid: all of
    fiscal year ``year``, which :data:`PROGRESS`'s date lies in (the bundled version 2 holds
    activity dates to the instance's fiscal year), a tambon's further ones as duplicates."""
    tambons = all_tambons()
    return [
        Spec("leader-development", tambons[i % len(tambons)], year, 4, i // len(tambons))
        for i in range(n)
    ]


def mixed_specs(n: int, *, first_year: int = 2561) -> list[Spec]:
    """``n`` instances of the three programs, every tambon, successive fiscal years, with
    1 to 19 events each (10 on average: 100,000 instances carry ~1,000,000 events)."""
    tambons = all_tambons()
    programs = list(WALKS)
    out = []
    for i in range(n):
        j = i // len(programs)
        out.append(
            Spec(
                programs[i % len(programs)],
                tambons[j % len(tambons)],
                first_year + j // len(tambons),
                1 + (j * 7 + i) % MAX_WALK,
            )
        )
    return out


def counts(db: Database) -> tuple[int, int]:
    with contextlib.closing(db.raw()) as conn:
        i = conn.execute("SELECT COUNT(*) FROM workflow_instances").fetchone()[0]
        e = conn.execute("SELECT COUNT(*) FROM workflow_events").fetchone()[0]
    return int(i), int(e)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out
