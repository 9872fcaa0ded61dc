"""The benchmarks' own data stays valid under the bundled programs.

The benchmarks build their databases with the raw driver (``benchmarks/_common.py``) and then
fire the same evidence through the engine; when the bundled programs began holding activity
dates to the instance's fiscal year, every fire benchmark failed on its first fire and no
test noticed. These run the benchmarks' building blocks on a few instances (the benchmarks
themselves take minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _common as c


@pytest.mark.parametrize("n", [3, 7300])
def test_the_fire_benchmarks_evidence_is_valid_on_the_instances_they_build(n: int) -> None:
    """Every instance of ``implementing_specs`` (some tambons twice past 7,255: duplicates)
    takes ``PROGRESS`` through ``Engine.fire``, and the trail verifies."""
    with c.scratch("sqlite", label="benchdata") as db:
        templates = c.prepare(db, ["leader-development"])
        c.build(db, templates, c.implementing_specs(n))
        engine = c.engine_for(db)
        try:
            ids = [i.id for i in engine.list(program="leader-development", state="implementing",
                                             limit=n + 1)]
            assert len(ids) == n
            for i in (ids[0], ids[-1]):
                engine.fire(i, "report_progress", actor=c.ACTOR, role="coordinator",
                            evidence=c.PROGRESS)
            assert engine.verify(jobs=1).ok
        finally:
            engine.close()
