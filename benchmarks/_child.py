"""A timed contender in a fresh process of its own: ``script --child KIND`` on a database.

Light on purpose (the standard library only): a script reads its child options here before
it imports the harness's helpers (``_common`` loads the engine's machine code), so that a
child measuring ``workflow audit verify`` holds only what verify loads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

OPTIONS = ("--child", "--child-url", "--child-backend", "--child-conninfo", "--child-path")


def add_options(p: argparse.ArgumentParser) -> None:
    """The hidden options of :func:`run` on ``p``."""
    for name in OPTIONS:
        p.add_argument(name, default=None, help=argparse.SUPPRESS)


def options() -> argparse.Namespace | None:
    """This process's child options, or None when it is not a child."""
    if "--child" not in sys.argv:
        return None
    p = argparse.ArgumentParser(add_help=False)
    add_options(p)
    args, _ = p.parse_known_args()
    return args


def run(script: str, kind: str, db: Any) -> dict[str, Any]:
    """Run ``script --child KIND`` on ``db`` (a ``_common.Database``) in a fresh process;
    its last line of output, as JSON."""
    cmd = [sys.executable, str(Path(script).resolve()), "--child", kind]
    cmd += ["--child-url", db.url, "--child-backend", db.backend]
    if db.conninfo:
        cmd += ["--child-conninfo", db.conninfo]
    if db.path:
        cmd += ["--child-path", str(db.path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
