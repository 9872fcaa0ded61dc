"""Hypothesis state machine: fires, comments, corrections and reverts in any order on the
bundled programs, with the trail verified after every step (issue 13)."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from helpers import LOPBURI, OFFICER
from workflow import AllowAll, Engine, WorkflowError
from workflow.audit import evolution as _evo

#: Evidence that satisfies every transition of the bundled programs (by field type).
VALUES = {"date": "2564-03-01", "text": "บันทึก", "integer": 5, "number": 5, "boolean": True}


def _evidence(engine: Engine, instance: int, trigger: str) -> dict[str, Any]:
    program = engine.definition_of(instance)
    (t, *_) = program.transitions_for(trigger)
    out: dict[str, Any] = {}
    for f in t.evidence:
        if not f.required and f.name != "end_date":
            continue
        if f.type == "choice":
            out[f.name] = f.choices[0]
        elif f.type in ("integer", "number"):
            out[f.name] = max(int(f.min or 0), 1)
        else:
            out[f.name] = VALUES[f.type]
    return out


class Amending(RuleBasedStateMachine):
    """One instance of a bundled program; every step is a fire, comment, correction or revert
    (refusals allowed), and verify must hold after each."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="wf-stateful-"))
        self.engine = Engine(f"sqlite:///{self.dir / 'w.db'}", policy=AllowAll())
        self.engine.init()
        self.instance = 0

    @initialize(program=st.sampled_from(["leader-development", "khok-nong-na", "one-plan"]))
    def start(self, program: str) -> None:
        self.instance = self.engine.start(program, area=LOPBURI, fiscal_year=2564,
                                          actor="u", role=OFFICER).id

    @rule(data=st.data())
    def fire(self, data: st.DataObject) -> None:
        available = self.engine.get(self.instance).available_triggers
        if not available:
            return
        trigger = data.draw(st.sampled_from(sorted(available)))
        if trigger == "cancel" and data.draw(st.booleans()):
            return  # keep instances running more often than not
        program = self.engine.definition_of(self.instance)
        role = program.transitions_for(trigger)[0].roles[0]
        with suppress(WorkflowError):  # a guard may refuse; nothing changes
            self.engine.fire(self.instance, trigger, actor="s", role=role,
                             evidence=_evidence(self.engine, self.instance, trigger))

    @rule(text=st.text(min_size=1, max_size=20).filter(lambda s: s.strip()))
    def comment(self, text: str) -> None:
        with suppress(WorkflowError):  # text the input rules refuse
            self.engine.comment(self.instance, actor="s", role=OFFICER, text=text)

    @rule(data=st.data())
    def correct(self, data: st.DataObject) -> None:
        events = [e for e in self.engine.history(self.instance)
                  if e.trigger not in _evo.UNCORRECTABLE]
        if not events:
            return
        target = data.draw(st.sampled_from(events))
        if target.trigger == "comment":
            with suppress(WorkflowError):  # already says exactly that
                self.engine.correct(self.instance, target.seq, actor="u", role=OFFICER,
                                    reason="พิมพ์ผิด", note=f"แก้ไข {target.seq}")
            return
        dates = [k for k in (target.corrected_evidence or target.evidence) if k == "date"]
        if not dates:
            return
        day = data.draw(st.integers(min_value=1, max_value=28))
        # the same value again, or a guard comparing dates (end_date >= date)
        with suppress(WorkflowError):
            self.engine.correct(self.instance, target.seq, actor="u", role=OFFICER,
                                reason="วันที่ผิด", evidence={"date": f"2564-04-{day:02d}"})

    @rule()
    def revert(self) -> None:
        with suppress(WorkflowError):  # nothing to take back, or a final state
            self.engine.revert(self.instance, actor="u", role=OFFICER, reason="ย้อนกลับ")

    @invariant()
    def trail_verifies(self) -> None:
        if self.instance:
            result = self.engine.verify()
            assert result.ok, result.problems
            last = self.engine.history(self.instance)[-1]
            assert self.engine.get(self.instance).active == last.to

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)


Amending.TestCase.settings = settings(
    max_examples=15, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestAmending = Amending.TestCase
