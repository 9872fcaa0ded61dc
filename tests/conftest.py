"""Fixtures shared by the tests: an empty database on every backend, and an engine on it.

``backend`` is parametrised over SQLite (a file in ``tmp_path``) and PostgreSQL (found through
``WORKFLOW_TEST_POSTGRES_URL``, an admin URL such as
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). For PostgreSQL one scratch database
``workflow_test_<random>`` is created per session and dropped at its end; each test gets it with
a fresh, empty ``public`` schema (dropping and re-creating the schema takes ~15 ms, far less
than creating a database per test).

With ``WORKFLOW_REQUIRE_POSTGRES=1`` the session fails unless PostgreSQL tests ran and none of
them was skipped: CI uses it to prove the PostgreSQL half of the contract was exercised.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))  # `import helpers`, also in spawned workers

from workflow import AllowAll, Engine

POSTGRES_ENV = "WORKFLOW_TEST_POSTGRES_URL"
# pytest-xdist workers are started with COLUMNS=80, and the CLI honours COLUMNS (narrow
# terminals get event blocks): the tests start without it and set it where they mean it.
os.environ.pop("COLUMNS", None)
REQUIRE_ENV = "WORKFLOW_REQUIRE_POSTGRES"


# --------------------------------------------------------------------------- PostgreSQL


def _admin_engine(admin_url: str) -> sa.Engine:
    return sa.create_engine(admin_url, isolation_level="AUTOCOMMIT",
                            poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})


@pytest.fixture(scope="session")
def postgres_scratch() -> Iterator[str]:
    """URL of a scratch PostgreSQL database for this session (skips if there is no server)."""
    admin_url = os.environ.get(POSTGRES_ENV, "").strip()
    if not admin_url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (an admin SQLAlchemy URL, e.g. "
                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres)")
    try:
        admin = _admin_engine(admin_url)
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as e:
        pytest.skip(f"PostgreSQL at {make_url(admin_url).render_as_string(hide_password=True)} "
                    f"is unreachable ({type(e).__name__}: {str(e).strip().splitlines()[0]})")
    name = f"workflow_test_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


def _terminate_others(conn: sa.Connection) -> None:
    # A pooled connection a failed test left behind must not block DDL or TRUNCATE.
    conn.exec_driver_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def empty_postgres(url: str) -> None:
    """Make the scratch database empty: no workflow tables, triggers or functions left."""
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as conn:
            _terminate_others(conn)
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        eng.dispose()


_FINGERPRINT_QUERIES = (
    "SELECT table_name, column_name, data_type, is_nullable, column_default "
    "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "SELECT tgname, tgrelid::regclass::text, tgenabled FROM pg_trigger "
    "WHERE NOT tgisinternal ORDER BY 1, 2",
    "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
    "JOIN pg_namespace n ON n.oid = c.connamespace WHERE nspname = 'public' ORDER BY 1",
    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "SELECT proname, md5(prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE nspname = 'public' ORDER BY 1",
    "SELECT version_num FROM workflow_alembic_version",
)


def _fingerprint(conn: sa.Connection) -> tuple[Any, ...] | None:
    """Everything about the schema a test could have changed (not the rows)."""
    if not sa.inspect(conn).has_table("workflow_alembic_version"):
        return None
    return tuple(tuple(tuple(r) for r in conn.exec_driver_sql(q)) for q in _FINGERPRINT_QUERIES)


class _PostgresSchema:
    #: The schema right after a real `init` in this session.
    fresh: tuple[Any, ...] | None = None


def initialized_postgres(url: str) -> None:
    """Make the scratch database hold a freshly initialised, empty workflow schema.

    ``init`` (Alembic) costs ~0.3 s; when the schema is still exactly the one a real ``init``
    made earlier in this session (tables, columns, constraints, indexes, triggers, functions
    and revision all unchanged), emptying the tables is enough and takes ~15 ms.
    """
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as conn:
            _terminate_others(conn)
            current = _fingerprint(conn)
            if current is not None and current == _PostgresSchema.fresh:
                tables = [t for t in sa.inspect(conn).get_table_names()
                          if t != "workflow_alembic_version"]
                # The audit tables refuse TRUNCATE (BEFORE TRUNCATE triggers); as superuser,
                # replica mode skips ordinary triggers for this transaction only.
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                conn.exec_driver_sql(
                    f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
                return
    finally:
        eng.dispose()
    empty_postgres(url)
    with Engine(url) as fresh:
        fresh.init()
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            _PostgresSchema.fresh = _fingerprint(conn)
    finally:
        eng.dispose()


_SQLITE_TEMPLATE: dict[str, Path] = {}


def initialized_sqlite(path: Path, factory: pytest.TempPathFactory) -> None:
    """Copy a database file made by a real ``init`` once per session (init costs ~0.1 s)."""
    template = _SQLITE_TEMPLATE.get("path")
    if template is None:
        template = factory.mktemp("template") / "workflow.db"
        with Engine(f"sqlite:///{template}") as eng:
            eng.init()
        # Closing the last connection checkpoints the WAL into the file.
        assert not Path(f"{template}-wal").exists()
        _SQLITE_TEMPLATE["path"] = template
    shutil.copyfile(template, path)


# --------------------------------------------------------------------------- backends


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_kind(request: pytest.FixtureRequest) -> str:
    """Which backend a test runs on; every database fixture below follows it."""
    return str(request.param)


@pytest.fixture
def backend(db_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLAlchemy URL of an EMPTY database (no schema; for SQLite the file does not exist)."""
    if "engine" in request.fixturenames:
        raise pytest.UsageError("use engine.url in a test that takes the engine fixture")
    if db_kind == "sqlite":
        return f"sqlite:///{tmp_path / 'workflow.db'}"
    url = str(request.getfixturevalue("postgres_scratch"))
    empty_postgres(url)
    return url


@pytest.fixture
def engine(db_kind: str, request: pytest.FixtureRequest, tmp_path: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An ``Engine`` on a database whose schema is initialised and empty (``engine.url``).

    It uses the ``AllowAll`` policy: these tests are about the engine and storage contract,
    not about grants (which ``test_default_policy_needs_grants`` covers).
    """
    if db_kind == "sqlite":
        path = tmp_path / "workflow.db"
        initialized_sqlite(path, tmp_path_factory)
        url = f"sqlite:///{path}"
    else:
        url = str(request.getfixturevalue("postgres_scratch"))
        initialized_postgres(url)
    eng = Engine(url, policy=AllowAll())
    eng.init()  # a no-op on an initialised schema, as the contract promises
    try:
        yield eng
    finally:
        eng.close()


# --------------------------------------------------------- CI: prove PostgreSQL ran


class _PostgresTally:
    ran = 0
    skipped: list[str] = []  # noqa: RUF012


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgres" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if report.outcome == "skipped" and not hasattr(report, "wasxfail"):
            _PostgresTally.skipped.append(report.nodeid)
        elif report.when == "call" or report.outcome == "failed":
            _PostgresTally.ran += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(REQUIRE_ENV) != "1" or hasattr(session.config, "workerinput"):
        # An xdist worker sees only its share of the tests: the controller, which receives
        # every worker's reports, decides.
        return
    tally = _PostgresTally
    problem = None
    if tally.skipped:
        problem = (f"{len(tally.skipped)} PostgreSQL test(s) were skipped, e.g. "
                   f"{tally.skipped[0]}; is {POSTGRES_ENV} set and the server up?")
    elif tally.ran == 0:
        problem = f"no PostgreSQL test ran; is {POSTGRES_ENV} set?"
    if problem is None:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"{REQUIRE_ENV}=1: {problem}"
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(message, red=True, bold=True)
    else:
        print(message, file=sys.stderr)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
