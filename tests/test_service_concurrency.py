"""Concurrency through the service: a real `workflow serve --workers 4` on 127.0.0.1 (SQLite and
PostgreSQL), 8 client threads with httpx.

* One instance: each client reads the ETag and fires with `If-Match`; a loser gets 412 and
  retries by reading again. Every 201 is exactly one event, and no answer is a 5xx (on SQLite
  four worker processes compete for one write lock: "database is locked" must be waited out,
  never surface).
* Many instances: the same, spread over several instances.
* The same `Idempotency-Key` from two clients at once: both get the same event (one event).

Loops are bounded (a client gives up after a fixed number of attempts) and everything stops by
itself; nothing is timed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import COORDINATOR, KICKOFF, LEADER_STEPS, LOPBURI, OFFICER
from service_helpers import API, World, make_world, serving
from workflow import Engine

WORKERS = 4
CLIENTS = 8
#: Successful fires each client wants on the one instance, and its attempts at most.
WANT_ONE = 4
MAX_ATTEMPTS = 120
PROGRESS = {"date": "2564-04-01", "summary": "ปลูกผักสวนครัว"}


@dataclass
class Served:
    base: str
    world: World
    log: Path
    instances: list[int] = field(default_factory=list)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base + API, headers=self.world.auth("udomrat"),
                            timeout=60)

    def events(self, instance: int) -> list[Any]:
        return list(self.world.engine.history(instance))


def _implementing(world: World, n: int) -> list[int]:
    """``n`` leader-development instances in Lopburi standing in ``implementing``, where every
    further ``report_progress`` (coordinator) is valid."""
    eng = world.engine
    ids = []
    for k in range(n):
        # One fiscal year (the steps' dates lie in it), so every one past the first is a
        # duplicate the caller asks for.
        inst = eng.start("leader-development", area=LOPBURI, fiscal_year=2564,
                         actor="udomrat", role=OFFICER, allow_duplicate=k > 0)
        eng.fire(inst.id, "kickoff", actor="udomrat", role=OFFICER, evidence=KICKOFF)
        role, evidence = LEADER_STEPS["workshop"]
        eng.fire(inst.id, "workshop", actor="udomrat", role=role, evidence=evidence)
        ids.append(inst.id)
    return ids


@contextmanager
def _serve(engine: Engine, tmp_path: Path, workers: int) -> Iterator[Served]:
    world = make_world(engine.url)
    try:
        world.engine.grant("udomrat", COORDINATOR, area="16", by="test")
        ids = _implementing(world, 8)
        log = tmp_path / "serve.log"
        with serving(engine.url, log, workers=workers) as base:
            yield Served(base, world, log, ids)
        text = log.read_text()
        assert "Traceback" not in text and "internal error" not in text, text[-4000:]
    finally:
        world.engine.close()


@pytest.fixture
def served(engine: Engine, tmp_path: Path) -> Iterator[Served]:
    with _serve(engine, tmp_path, WORKERS) as found:
        yield found


def _run(clients: int, work: Callable[[int], None]) -> None:
    """Run ``work(k)`` in ``clients`` threads started together; re-raise the first failure."""
    failures: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def body(k: int) -> None:
        try:
            barrier.wait(timeout=60)
            work(k)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=body, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    if failures:
        raise failures[0]


def _body() -> dict[str, Any]:
    return {"trigger": "report_progress", "role": COORDINATOR, "evidence": PROGRESS}


@dataclass
class Tally:
    """What the clients saw: statuses, and the (instance, seq, hash) of every 201."""

    statuses: Counter[int] = field(default_factory=Counter)
    fired: list[tuple[int, int, str]] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, instance: int, r: httpx.Response) -> None:
        with self.lock:
            self.statuses[r.status_code] += 1
            if r.status_code == 201:
                ev = r.json()["event"]
                self.fired.append((instance, ev["seq"], ev["hash"]))
            elif r.status_code != 412:
                self.odd.append(f"{r.status_code} {r.text[:300]}")


def _fire_until_won(c: httpx.Client, instance: int, tally: Tally, budget: list[int]) -> bool:
    """Read the ETag, fire with If-Match; on 412 read again. True once a fire got 201."""
    while budget[0] > 0:
        budget[0] -= 1
        got = c.get(f"/instances/{instance}")
        assert got.status_code == 200, got.text
        r = c.post(f"/instances/{instance}/events", json=_body(),
                   headers={"If-Match": got.headers["etag"]})
        tally.saw(instance, r)
        if r.status_code == 201:
            assert r.headers["etag"] == f'"{r.json()["instance"]["version"]}"'
            return True
        if r.status_code != 412:
            return False
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "VersionConflict"
    return False


def _check(served: Served, tally: Tally, before: dict[int, int]) -> None:
    """Every 201 is exactly one event; nothing but 201 and 412 came back; the chains verify."""
    assert not tally.odd, tally.odd[:5]
    assert set(tally.statuses) <= {201, 412}, tally.statuses
    assert tally.statuses[201] > 0
    assert len(set(tally.fired)) == len(tally.fired)  # no event reported twice
    for instance, was in before.items():
        events = served.events(instance)
        added = {(instance, e.seq, e.hash) for e in events[was:]}
        mine = {f for f in tally.fired if f[0] == instance}
        assert added == mine, (instance, len(added), len(mine))
        assert all(e.actor == "udomrat" and e.trigger == "report_progress"
                   for e in events[was:])
    assert served.world.engine.verify().ok


def test_many_clients_fire_on_one_instance(served: Served) -> None:
    """8 clients, one instance, If-Match: every 201 is one event, losers get 412 (never 5xx),
    and with this much contention some do lose."""
    instance = served.instances[0]
    before = {instance: len(served.events(instance))}
    tally = Tally()

    def client(_k: int) -> None:
        budget = [MAX_ATTEMPTS]
        with served.client() as c:
            for _ in range(WANT_ONE):
                if not _fire_until_won(c, instance, tally, budget):
                    return

    _run(CLIENTS, client)
    _check(served, tally, before)
    assert tally.statuses[412] > 0, tally.statuses
    final = served.world.engine.get(instance)
    assert final.version == before[instance] + tally.statuses[201]


def test_many_clients_fire_on_many_instances(served: Served) -> None:
    """8 clients over 8 instances, each client going round them from its own starting point:
    the same guarantees with less contention."""
    before = {i: len(served.events(i)) for i in served.instances}
    tally = Tally()
    ids = served.instances

    def client(k: int) -> None:
        budget = [MAX_ATTEMPTS]
        with served.client() as c:
            for n in range(2 * len(ids)):
                if not _fire_until_won(c, ids[(k + n) % len(ids)], tally, budget):
                    return

    _run(CLIENTS, client)
    _check(served, tally, before)
    per_instance = Counter(f[0] for f in tally.fired)
    assert set(per_instance) == set(ids)


def test_same_idempotency_key_from_two_clients_at_once(served: Served) -> None:
    """Pairs of clients send the same fire with the same Idempotency-Key at the same moment
    (half of them with If-Match too): both get 201 with the same event, one of them marked
    replayed, and exactly one event is written per key."""
    ids = served.instances[:CLIENTS // 2]
    rounds = 3
    before = {i: len(served.events(i)) for i in ids}
    etags = {}
    with served.client() as c:
        for i in ids:
            etags[i] = c.get(f"/instances/{i}").headers["etag"]
    answers: dict[tuple[int, int], list[httpx.Response]] = {}
    lock = threading.Lock()

    def client(k: int) -> None:
        instance = ids[k // 2]
        with served.client() as c:
            for r in range(rounds):
                headers = {"Idempotency-Key": f"pair-{instance}-{r}"}
                if instance % 2 == 0:
                    headers["If-Match"] = etags[instance]
                got = c.post(f"/instances/{instance}/events", json=_body(), headers=headers)
                with lock:
                    answers.setdefault((instance, r), []).append(got)
                    if got.status_code == 201 and len(answers[(instance, r)]) == 2:
                        etags[instance] = got.headers["etag"]
                pair_barrier.wait(timeout=120)

    pair_barrier = threading.Barrier(CLIENTS)
    _run(CLIENTS, client)
    for (instance, r), pair in sorted(answers.items()):
        assert [p.status_code for p in pair] == [201, 201], [p.text for p in pair]
        first, second = (p.json() for p in pair)
        assert first["event"]["hash"] == second["event"]["hash"], (instance, r)
        assert first["event"]["seq"] == second["event"]["seq"]
        assert first["instance"]["version"] == second["instance"]["version"]
        replayed = sorted(p.headers.get("idempotent-replayed", "") for p in pair)
        assert replayed == ["", "true"], (instance, r, replayed)
    for instance in ids:
        events = served.events(instance)
        assert len(events) == before[instance] + rounds
        hashes = {p.json()["event"]["hash"] for (i, _r), pair in answers.items()
                  if i == instance for p in pair}
        assert hashes == {e.hash for e in events[before[instance]:]}
    assert served.world.engine.verify().ok


def test_more_clients_than_the_pool_on_one_worker(engine: Engine, tmp_path: Path) -> None:
    """One worker, 20 clients at once, reading and firing: more requests in flight than the
    database pool (5 + 10 connections) could serve if every thread of the worker's pool kept
    its two connections. A regression test: without the service's thread limit (app.py,
    ``thread_limit``) the 8th thread waited 30 s for a connection and answered 503."""
    clients = 20
    with _serve(engine, tmp_path, workers=1) as served:
        ids = served.instances
        before = {i: len(served.events(i)) for i in ids}
        tally = Tally()
        statuses: Counter[int] = Counter()
        lock = threading.Lock()

        def client(k: int) -> None:
            budget = [MAX_ATTEMPTS]
            with httpx.Client(base_url=served.base + API, headers=served.world.auth("udomrat"),
                              timeout=httpx.Timeout(60, pool=60)) as c:
                for n in range(3):
                    got = c.get(f"/instances/{ids[(k + n) % len(ids)]}")
                    with lock:
                        statuses[got.status_code] += 1
                _fire_until_won(c, ids[k % len(ids)], tally, budget)

        _run(clients, client)
        assert set(statuses) == {200}, statuses
        _check(served, tally, before)
