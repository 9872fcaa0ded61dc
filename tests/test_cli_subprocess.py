"""The real ``workflow`` console script, run as a separate process (CONTRACT §4).

Slower than tests/test_cli.py, so only what needs a real process: the installed entry point,
the default ``./workflow.db`` in the current directory, what reaches the terminal on an error,
exit codes as the shell sees them, and bytes written to a pipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("workflow")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "workflow.cli.main"]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def workflow(tmp_path: Path) -> Run:
    """Run the console script in ``tmp_path`` with a clean environment for workflow."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORKFLOW_DB", "WORKFLOW_TRACEBACK", "PYTHONIOENCODING")
    }

    def run(
        *args: str, extra_env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*(command or COMMAND), *args],
            cwd=tmp_path,
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=120,
            check=False,
        )

    return run


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("workflow: error: ")
    return lines[0]


def test_help(workflow: Run, tmp_path: Path) -> None:
    p = workflow("--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Usage: workflow")
    for command in (
        "init",
        "programs",
        "start",
        "fire",
        "show",
        "list",
        "history",
        "audit",
        "report",
        "demo",
    ):
        assert command in p.stdout
    assert p.stderr == ""
    assert not (tmp_path / "workflow.db").exists()
    m = workflow("--help", command=[sys.executable, "-m", "workflow.cli.main"])
    assert m.returncode == 0
    assert m.stdout == p.stdout


def test_demo_then_verify_with_the_default_database(workflow: Run, tmp_path: Path) -> None:
    demo = workflow("demo")
    assert demo.returncode == 0, demo.stderr
    assert "Traceback" not in demo.stderr
    assert (tmp_path / "workflow.db").exists()
    assert "ลพบุรี" in demo.stdout
    verify = workflow("audit", "verify", "--json")
    assert verify.returncode == 0, verify.stderr
    data = json.loads(verify.stdout)
    assert data["ok"] is True
    assert data["instances_checked"] == 5
    again = workflow("demo")
    assert again.returncode == 0, again.stderr
    assert "(0 stages recorded by this run)" in again.stdout
    assert workflow("audit", "verify").returncode == 0

    csv = subprocess.run(
        [*COMMAND, "audit", "log", "--format", "csv"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert csv.returncode == 0
    assert csv.stdout.startswith(b"\xef\xbb\xbf")
    assert (
        "บางขันหมาก".encode() in csv.stdout
        or "ลพบุรี".encode() in csv.stdout
        or "อุดมรัตน์".encode() in csv.stdout
    )


def test_errors_are_one_line_with_the_contract_exit_code(workflow: Run, tmp_path: Path) -> None:
    before = workflow("list")
    assert before.returncode == 6
    assert "workflow init" in one_error_line(before)
    assert not (tmp_path / "workflow.db").exists()

    assert workflow("init").returncode == 0
    missing = workflow("show", "999")
    assert missing.returncode == 3
    assert "999" in one_error_line(missing)
    assert missing.stdout == ""

    usage = workflow(
        "start", "one-plan", "--area", "16", "--fiscal-year", "2564", "--role", "coordinator"
    )
    assert usage.returncode == 2
    assert "--actor" in one_error_line(usage)

    area = workflow(
        "start",
        "one-plan",
        "--area",
        "99",
        "--fiscal-year",
        "2564",
        "--actor",
        "a",
        "--role",
        "coordinator",
    )
    assert area.returncode == 3
    one_error_line(area)


def test_traceback_flag(workflow: Run) -> None:
    assert workflow("init").returncode == 0
    p = workflow("--traceback", "show", "999")
    assert p.returncode != 0
    assert "Traceback (most recent call last)" in p.stderr
    assert "InstanceNotFound" in p.stderr
    env = workflow("show", "999", extra_env={"WORKFLOW_TRACEBACK": "1"})
    assert "Traceback (most recent call last)" in env.stderr


def test_traceback_flag_keeps_the_exit_code(workflow: Run) -> None:
    assert workflow("init").returncode == 0
    assert workflow("--traceback", "show", "999").returncode == 3


def test_json_survives_a_non_utf8_stdout(workflow: Run) -> None:
    p = workflow(
        "programs", "show", "one-plan", "--json", extra_env={"PYTHONIOENCODING": "latin-1"}
    )
    assert p.returncode == 0, p.stderr
