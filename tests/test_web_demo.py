"""`workflow demo` gives a new user accounts to open the web pages with, as the README says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from workflow import Engine
from workflow.service.app import create_app


def test_demo_accounts_find_the_five_stories_in_my_work(tmp_path: Any) -> None:
    """`workflow demo` prints demo-only accounts; demo-officer logs in and finds the five
    stories in My work, as the README says."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    exe = Path(sys.executable).parent / "workflow"
    out = subprocess.run([str(exe), "--db", url, "demo"], capture_output=True, text=True,
                         encoding="utf-8", check=True).stdout
    assert "DEMO ONLY" in out
    password = re.search(r"^\s+demo-officer\s+(\S+)$", out, re.M)
    assert password is not None
    with Engine(url) as engine:
        client = TestClient(create_app(engine), base_url="http://testserver")
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        r = client.post("/login", data={"name": "demo-officer", "password": password.group(1),
                                        "csrf_token": token.group(1)})
        assert r.status_code == 200, r.status_code
        home = client.get("/")
        assert home.status_code == 200
        for instance in engine.list():
            assert f"/instances/{instance.id}" in home.text
