"""One command, one transaction: what a ``workflow`` process costs a PostgreSQL server.

Every commit is a WAL flush on the server, so a command that commits five times where one
would do is five times the load on a busy multi-host database. Counted the way an operator
sees it: ``pg_stat_database.xact_commit`` of the database, before and after one real
``workflow`` process, against a bare SQLAlchemy connect plus one transaction (SQLAlchemy's
own first-connect queries included). The schema check, the definition read and the triggers
shown after a fire all ride in the command's one transaction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from conftest import POSTGRES_ENV, initialized_postgres

pytestmark = pytest.mark.postgres

SCRIPT = Path(sys.executable).with_name("workflow")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "workflow.cli.main"]
Run = Callable[[list[str]], tuple[int, str]]
BARE = "import sqlalchemy as sa, sys; c = sa.create_engine(sys.argv[1]).connect(); " \
    "c.exec_driver_sql('SELECT 1'); c.commit()"


@pytest.fixture
def commits(postgres_scratch: str) -> Iterator[Run]:
    """Run one process; return how many transactions it committed on the database, and its
    output."""
    initialized_postgres(postgres_scratch)
    name = make_url(postgres_scratch).database
    admin = sa.create_engine(os.environ[POSTGRES_ENV], isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)

    def counter() -> int:
        with admin.connect() as conn:
            # A backend reports its counts as it exits: wait until the database is idle.
            deadline = time.monotonic() + 10
            while conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %(n)s", {"n": name}
            ).scalar() and time.monotonic() < deadline:
                time.sleep(0.02)
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            return int(conn.exec_driver_sql(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %(n)s", {"n": name}
            ).scalar())

    def run(args: list[str]) -> tuple[int, str]:
        before = counter()
        env = {k: v for k, v in os.environ.items() if k != "WORKFLOW_DB"}
        r = subprocess.run(args, env={**env, "WORKFLOW_DB": postgres_scratch},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return counter() - before, r.stdout

    yield run
    admin.dispose()


def test_one_cli_fire_show_and_history_commit_once(commits: Run, postgres_scratch: str) -> None:
    """``fire``, ``show`` and ``history`` each commit no more than a bare connect and one
    transaction (it was 5 for a fire: schema check, fire, a nested definition read, a trigger
    read afterwards, and the session's timeouts set in a transaction of their own)."""
    bare, _ = commits([sys.executable, "-c", BARE, postgres_scratch])
    assert bare >= 1
    commits([*COMMAND, "actors", "grant", "a", "coordinator"])
    _, out = commits([*COMMAND, "start", "leader-development", "--area", "160117",
                      "--fiscal-year", "2564", "--actor", "a", "--role", "coordinator", "--json"])
    instance = str(json.loads(out)["id"])
    fire, _ = commits([*COMMAND, "fire", instance, "kickoff", "--actor", "a", "--role",
                       "coordinator", "--set", "date=2564-03-03", "--set", "venue=v",
                       "--set", "chair=c"])
    show, _ = commits([*COMMAND, "show", instance])
    history, _ = commits([*COMMAND, "history", instance])
    assert fire <= bare
    assert show <= bare
    assert history <= bare
