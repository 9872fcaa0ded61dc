"""Deadlines on the pages (issue 15, CONTRACT §10), in process: the due date in BE with Thai
month names and an overdue badge on My work and the instance page, overdue items first in My
work, and an overdue instance escalated to a role shows in that role holder's My work."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers import KICKOFF, LOPBURI, OFFICER
from service_helpers import PASSWORD, make_world
from test_notify import _later, _with_due
from test_web_pages import login
from workflow import Engine
from workflow.engine.work import my_work
from workflow.service.app import create_app
from workflow.service.web import i18n

pytestmark = pytest.mark.parametrize("db_kind", ["sqlite"])


@pytest.fixture
def due(engine: Engine, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """leader-development v2 (due 2 days after entering `planned`, escalated to the
    inspector); udomrat officer and coordinator in Lopburi, `boss` inspector in Lopburi."""
    defs, programs = _with_due(tmp_path)
    world = make_world(engine.url)
    world.engine.close()
    eng = Engine(engine.url, [defs], allow_override=[p for p, _, _ in programs])
    escalate = next(e for p, _, e in programs if p == "leader-development")
    eng.grant("udomrat", "coordinator", area="16", by="test")
    world.accounts.add("boss", PASSWORD, by="test")
    eng.grant("boss", escalate, area="16", by="test")
    app = create_app(eng, accounts=world.accounts)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield {"engine": eng, "client": client, "escalate": escalate}
    eng.close()


def test_overdue_first_with_due_dates_and_badges(due: dict[str, Any]) -> None:
    eng: Engine = due["engine"]
    client: TestClient = due["client"]
    first = eng.start("leader-development", area=LOPBURI, fiscal_year=2564, actor="udomrat",
                      role=OFFICER)
    late = eng.start("leader-development", area="160118", fiscal_year=2564, actor="udomrat",
                     role=OFFICER)
    eng.fire(first.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
    assert eng.get(late.id).due_at is not None and not eng.get(late.id).overdue
    eng.tick(_later(3))
    assert eng.get(late.id).overdue and not eng.get(first.id).overdue
    login(client)
    home = client.get("/?fiscal_year=all").text
    assert home.index(f"/instances/{late.id}") < home.index(f"/instances/{first.id}")
    assert 'id="overdue-count">1 รายการเลยกำหนด แสดงไว้ก่อน' in home
    item = home[home.index(f"/instances/{late.id}"):home.index("</li>",
                                                               home.index(f"/instances/{late.id}"))]
    due_at = eng.get(late.id).due_at
    shown = i18n.be_due(due_at, "th")
    assert 'class="badge overdue">เลยกำหนด<' in item and f"กำหนด {shown}" in item
    moment = dt.datetime.fromisoformat(str(due_at).replace("Z", "+00:00")).astimezone(
        dt.timezone(dt.timedelta(hours=7)))
    assert f"{moment.day} {i18n.MONTHS_TH_SHORT[moment.month - 1]} {moment.year + 543}" in shown
    page = client.get(f"/instances/{late.id}").text
    assert 'id="overdue">เลยกำหนด<' in page and re.search(rf'id="due">{re.escape(shown)}<', page)
    assert "กำหนดเสร็จ" in page
    timeline = page[page.index('id="timeline"'):]
    assert "เลยกำหนด" in timeline and "วางแผน" in timeline  # the overdue event, readably
    other = client.get(f"/instances/{first.id}").text
    assert 'id="overdue"' not in other and 'id="due"' not in other  # kicked_off has no due


def test_escalated_instance_shows_in_the_escalation_roles_work(due: dict[str, Any]) -> None:
    eng: Engine = due["engine"]
    client: TestClient = due["client"]
    late = eng.start("leader-development", area=LOPBURI, fiscal_year=2564, actor="udomrat",
                     role=OFFICER)
    login(client, "boss")
    assert f"/instances/{late.id}" not in client.get("/?fiscal_year=all").text
    eng.tick(_later(3))
    items = my_work(eng, "boss")
    assert [(w.instance.id, w.escalated) for w in items] == [(late.id, (due["escalate"],))]
    assert items[0].triggers == eng.available_triggers(late.id, actor="boss")
    home = client.get("/?fiscal_year=all").text
    assert f"/instances/{late.id}" in home
    assert f"ส่งต่อถึงคุณ ({due['escalate']})" in home and "เลยกำหนด" in home
    for w in my_work(eng, "udomrat"):  # the library's answer stays show --actor's
        assert w.triggers == eng.available_triggers(w.instance.id, actor="udomrat")
