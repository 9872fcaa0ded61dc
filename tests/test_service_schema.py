"""schemathesis against the served OpenAPI (SQLite and PostgreSQL).

A real `workflow serve` on the demo database; an admin account's token reads the OpenAPI
document (it needs credentials) and goes with every generated request. For every operation,
a bounded, derandomized run of generated requests (valid and invalid ones) checks: no 5xx,
every status code is documented, every response has a documented content type and matches its
documented schema. Nothing is timed; the run is deterministic and ends by itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from helpers import OFFICER
from service_helpers import API, cli, make_world, serving
from workflow import Engine
from workflow.engine.demo import load

#: Generated requests per operation (each is one HTTP request).
MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def served_demo(engine: Engine, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(base URL, admin's auth header) of a `workflow serve` on the demo database."""
    load(engine)
    world = make_world(engine.url)
    # Some generated starts may succeed (201, then 409 for the same again).
    world.engine.grant("admin", OFFICER, area="16", by="test")
    # The log's key, so that the checkpoint and proof routes answer with what they publish.
    assert cli(engine.url, "audit", "keygen", "--out", str(tmp_path / "log")).returncode == 0
    key = {"WORKFLOW_AUDIT_KEY": str(tmp_path / "log.key")}
    try:
        with serving(engine.url, tmp_path / "serve.log", workers=1, env=key) as base:
            yield base, world.auth("admin")
        text = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in text, text[-4000:]
    finally:
        world.engine.close()


def _examples(operation: Any, base: str, auth: dict[str, str],
              session: requests.Session) -> Any:
    """A Hypothesis test sending ``operation``'s generated requests and checking each answer."""

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't dig
        suppress_health_check=list(HealthCheck), print_blob=False,
    )
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base, session=session, headers=auth, checks=CHECKS,
                               timeout=60)

    return run


#: Operations of issue 15's router (tick, hooks, outbox): generated requests reach them too.
NOTIFY_OPERATIONS = {"POST /api/v1/tick", "GET /api/v1/hooks", "POST /api/v1/hooks",
                     "DELETE /api/v1/hooks/{hook}", "GET /api/v1/outbox",
                     "POST /api/v1/outbox/{delivery}/retry"}


def test_the_served_api_keeps_its_openapi_document(
        served_demo: tuple[str, dict[str, str]]) -> None:
    """Every operation (issue 15's six among them) answers generated requests as documented."""
    base, auth = served_demo
    schema = schemathesis.openapi.from_url(f"{base}{API}/openapi.json", headers=auth,
                                           timeout=30)
    failures: list[str] = []
    operations = 0
    labels: set[str] = set()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            labels.add(operation.label)

            try:
                _examples(operation, base, auth, session)()
            except (Exception, BaseExceptionGroup) as e:  # schemathesis' FailureGroup
                # One entry per operation that failed, then on to the next operation.
                first = str(e).strip().splitlines()
                failures.append(f"{operation.label}: {' | '.join(first[:12])}")
    assert operations >= 32
    assert "GET /api/v1/instances/{instance}/events/{seq}/files/{field}" in labels
    fire = schema.raw_schema["paths"]["/api/v1/instances/{instance}/events"]["post"]
    assert {"application/json", "multipart/form-data"} <= set(fire["requestBody"]["content"])
    assert labels >= NOTIFY_OPERATIONS, sorted(NOTIFY_OPERATIONS - labels)
    assert not failures, "\n\n".join(failures)
