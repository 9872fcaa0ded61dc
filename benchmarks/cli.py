"""CLI start-up: wall time of ``workflow --help`` and ``workflow show ID`` (target --help <= 0.3 s).

Each command runs as a fresh subprocess, the contenders alternating in rounds; medians.
Baselines: ``python -c pass`` (the interpreter alone) and ``python -c "import workflow"``
(the package's import cost). ``workflow show`` reads an instance of a small SQLite database.

    python benchmarks/cli.py [--quick] [--json] [--runs N]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

TARGET_HELP_S = 0.3


def main() -> int:
    p = c.parser(__doc__.splitlines()[0], backend=False)
    p.add_argument("--runs", type=int, default=None, help="runs of each command")
    args = p.parse_args()
    runs = args.runs or args.rounds or (5 if args.quick else 21)
    exe = shutil.which("workflow", path=str(Path(sys.executable).parent)) or shutil.which(
        "workflow"
    )
    if exe is None:
        raise SystemExit("the `workflow` command is not installed (pip install -e .)")

    with c.scratch("sqlite", label="cli") as db:
        engine = c.engine_for(db)
        engine.init()
        inst = engine.start(
            "leader-development",
            area="160117",
            fiscal_year=2564,
            actor=c.ACTOR,
            role="provincial_officer",
        )
        engine.fire(
            inst.id,
            "kickoff",
            actor=c.ACTOR,
            role="provincial_officer",
            evidence={"date": "2564-02-17", "venue": "ศาลาประชาคม", "chair": "นายอำเภอ"},
        )
        engine.close()
        env = dict(os.environ, WORKFLOW_DB=db.url)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import workflow'": [sys.executable, "-c", "import workflow"],
            "workflow --help": [exe, "--help"],
            "workflow --version": [exe, "--version"],
            f"workflow show {inst.id}": [exe, "show", str(inst.id)],
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        for cmd in commands.values():  # warm the page cache
            subprocess.run(cmd, env=env, capture_output=True, check=True)
        for r in range(runs):
            for name in c.rotate(list(commands), r):
                t0 = time.perf_counter()
                subprocess.run(commands[name], env=env, capture_output=True, check=True)
                times[name].append(time.perf_counter() - t0)

    med = {k: c.median(v) for k, v in times.items()}
    base = med["python -c pass"]
    help_s = med["workflow --help"]
    result = {
        "benchmark": "cli",
        "machine": c.machine_info(),
        "runs": runs,
        "seconds": med,
        "runs_seconds": times,
        "help_s": help_s,
        "show_s": med[f"workflow show {inst.id}"],
        "target_help_s": TARGET_HELP_S,
        "met": help_s <= TARGET_HELP_S,
    }
    rows = []
    for name, s in med.items():
        target = met = ""
        if name == "workflow --help":
            target, met = f"<= {TARGET_HELP_S}", "yes" if result["met"] else "NO"
        rows.append([name, s, s - base, min(times[name]), target, met])
    text = "\n".join(
        [
            f"CLI start-up: median wall time of {runs} runs each, fresh subprocesses, alternating",
            c.table(["command", "median s", "over python", "best s", "target", "met"], rows),
        ]
    )
    c.emit(args, result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
