"""The HTTP service: fires through `workflow serve` against `Engine.fire` in-process, and reads.

Per backend (PostgreSQL, then SQLite), on a scratch database of leader-development instances
standing in ``implementing`` (every further ``report_progress`` is valid), measured in the same
run, alternating in rounds (each round starts with a different contender):

* **engine** — ``Engine.fire(id, "report_progress", ...)`` in this process, from 8 threads on
  one engine, each thread on instances of its own (the baseline: the same fires, no HTTP).
* **http** — ``POST /api/v1/instances/{id}/events`` to a ``workflow serve --workers 2``
  subprocess on 127.0.0.1, from 8 client threads (httpx, keep-alive), each on instances of its
  own, authenticated by an API token; every fire is checked (201) and its latency recorded.

Then, on the demo database (``workflow demo``), ``GET /api/v1/instances/{id}`` from one client
(latency of each request) against ``Engine.get`` in-process. Medians over rounds; the database
verifies at the end over everything both contenders wrote (checked).

    python benchmarks/service.py [--backends postgres,sqlite] [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as c  # noqa: E402
import httpx  # noqa: E402
from argon2 import PasswordHasher  # noqa: E402

import workflow  # noqa: E402
from workflow.accounts import Accounts  # noqa: E402
from workflow.engine.demo import load  # noqa: E402

CLIENTS = 8
WORKERS = 2
ACCOUNT = "bench"
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TARGET_GET_P50_MS = 5.0
WORKFLOW = [sys.executable, "-c", "from workflow.cli.main import main; main()"]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(url: str, workers: int, log: Path) -> Iterator[str]:
    """A `workflow serve` subprocess on a free port of 127.0.0.1; its base URL."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*WORKFLOW, "--db", url, "serve", "--port", str(port), "--workers", str(workers)],
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"workflow serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def token_for(engine: workflow.Engine, name: str, *, admin: bool = False) -> str:
    """An account (cheap password hash: it is never used) and an API token for it."""
    acc = Accounts(engine.store, hasher=PasswordHasher(time_cost=1, memory_cost=1024,
                                                       parallelism=1))
    acc.add(name, "a benchmark password", by="bench", admin=admin)
    return str(acc.create_token(name, by="bench", label="bench").secret)


def threaded(parts: list[list[int]], fire: Callable[[int, int], None]) -> float:
    """Run ``fire(k, instance)`` for each instance of ``parts[k]`` in thread ``k``, all started
    together; the wall time from the start to the last one done."""
    barrier = threading.Barrier(len(parts) + 1)
    errors: list[BaseException] = []

    def body(k: int) -> None:
        barrier.wait()
        try:
            for instance in parts[k]:
                fire(k, instance)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(len(parts))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return elapsed


def fires(args: Any, backend: str) -> dict[str, Any]:
    rounds = args.rounds or (2 if args.quick else 7)
    batch = 80 if args.quick else 400  # fires per contender per round
    n_instances = 400 if args.quick else 4000
    with c.scratch(backend, args.pg_url, label="http") as db, \
            tempfile.TemporaryDirectory(prefix="wf_http_") as tmp:
        c.log(args, f"{backend}: building {n_instances} instances in `implementing`...")
        templates = c.prepare(db, ["leader-development"])
        c.build(db, templates, c.implementing_specs(n_instances))
        # The service decides by stored grants: the benchmark's account is a coordinator
        # everywhere, and the in-process engine uses the same policy and the same actor.
        engine = workflow.Engine(db.url)
        engine.grant(ACCOUNT, "coordinator", by="bench")
        token = token_for(engine, ACCOUNT)
        ids = [i.id for i in engine.list(program="leader-development", state="implementing",
                                          limit=n_instances)]
        body = {"trigger": "report_progress", "role": "coordinator", "evidence": c.PROGRESS}

        def engine_fire(_k: int, instance: int) -> None:
            engine.fire(instance, "report_progress", actor=ACCOUNT, role="coordinator",
                        evidence=c.PROGRESS)

        with serve(db.url, WORKERS, Path(tmp) / "serve.log") as base:
            clients = [httpx.Client(base_url=base, timeout=60,
                                    headers={"Authorization": f"Bearer {token}"})
                       for _ in range(CLIENTS)]
            latencies: list[list[float]] = [[] for _ in range(CLIENTS)]

            def http_fire(k: int, instance: int) -> None:
                t0 = time.perf_counter()
                r = clients[k].post(f"/api/v1/instances/{instance}/events", json=body)
                latencies[k].append(time.perf_counter() - t0)
                if r.status_code != 201:
                    raise RuntimeError(f"fire answered {r.status_code}: {r.text[:300]}")

            contenders = {"engine": engine_fire, "http": http_fire}
            rates: dict[str, list[float]] = {k: [] for k in contenders}
            p50s: list[float] = []
            p99s: list[float] = []
            cursor = 0
            for fn in contenders.values():  # warm up: connections, caches, compiled machines
                parts = [[ids[(cursor + k * 5 + j) % len(ids)] for j in range(5)]
                         for k in range(CLIENTS)]
                cursor += 5 * CLIENTS
                threaded(parts, fn)
            for r in range(rounds):
                for name in c.rotate(list(contenders), r):
                    per = batch // CLIENTS
                    parts = [[ids[(cursor + k * per + j) % len(ids)] for j in range(per)]
                             for k in range(CLIENTS)]
                    cursor += per * CLIENTS
                    for lat in latencies:
                        lat.clear()
                    elapsed = threaded(parts, contenders[name])
                    rates[name].append(per * CLIENTS / elapsed)
                    if name == "http":
                        every = [x for lat in latencies for x in lat]
                        p50s.append(percentile(every, 0.50) * 1000)
                        p99s.append(percentile(every, 0.99) * 1000)
                c.log(args, f"{backend} round {r + 1}/{rounds}: "
                      + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items())
                      + f", http p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms")
            for client in clients:
                client.close()
        check = engine.verify()
        engine.close()
    med = {k: c.median(v) for k, v in rates.items()}
    return {
        "backend": backend,
        "rounds": rounds,
        "fires_per_round": batch,
        "instances": n_instances,
        "fires_per_s": med,
        "rounds_fires_per_s": rates,
        "http_vs_engine": c.ratio(med["http"], med["engine"]),
        "http_p50_ms": c.median(p50s),
        "http_p99_ms": c.median(p99s),
        "rounds_p50_ms": p50s,
        "rounds_p99_ms": p99s,
        "verify_ok": check.ok,
        "events_verified": check.events_checked,
    }


def reads(args: Any, backend: str) -> dict[str, Any]:
    """GET /api/v1/instances/{id} on the demo database, one client, against Engine.get."""
    rounds = args.rounds or (2 if args.quick else 7)
    per = 50 if args.quick else 300
    with c.scratch(backend, args.pg_url, label="http_demo") as db, \
            tempfile.TemporaryDirectory(prefix="wf_http_") as tmp:
        engine = workflow.Engine(db.url)
        ids = list(load(engine).instances)
        token = token_for(engine, "auditor-bench", admin=True)
        with serve(db.url, WORKERS, Path(tmp) / "serve.log") as base, \
                httpx.Client(base_url=base, timeout=60,
                             headers={"Authorization": f"Bearer {token}"}) as client:

            def http_get(instance: int) -> None:
                r = client.get(f"/api/v1/instances/{instance}")
                if r.status_code != 200:
                    raise RuntimeError(f"GET answered {r.status_code}: {r.text[:300]}")

            def engine_get(instance: int) -> None:
                engine.get(instance)

            contenders = {"engine": engine_get, "http": http_get}
            p50: dict[str, list[float]] = {k: [] for k in contenders}
            for fn in contenders.values():
                for i in ids * 5:
                    fn(i)
            for r in range(rounds):
                for name in c.rotate(list(contenders), r):
                    fn = contenders[name]
                    times = []
                    for n in range(per):
                        t0 = time.perf_counter()
                        fn(ids[n % len(ids)])
                        times.append(time.perf_counter() - t0)
                    p50[name].append(percentile(times, 0.5) * 1000)
            c.log(args, f"{backend} GET p50 per round (ms): "
                  + ", ".join(f"{k} {[round(x, 2) for x in v]}" for k, v in p50.items()))
        engine.close()
    return {"backend": backend, "rounds": rounds, "gets_per_round": per,
            "instances": len(ids), "get_p50_ms": {k: c.median(v) for k, v in p50.items()},
            "rounds_get_p50_ms": p50}


def main() -> int:
    p = c.parser(__doc__.splitlines()[0], backend=False)
    p.add_argument("--backends", default="postgres,sqlite",
                   help="comma-separated, in order (default: %(default)s)")
    p.add_argument("--pg-url", default=os.environ.get("WORKFLOW_BENCH_PG_URL", c.DEFAULT_PG),
                   help="a PostgreSQL server URL (SQLAlchemy form); scratch databases are "
                   "created on it and dropped afterwards (default: %(default)s)")
    args = p.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    fire_rows = [fires(args, b) for b in backends]
    read_rows = [reads(args, b) for b in backends]
    ok = all(r["verify_ok"] for r in fire_rows)
    result = {"benchmark": "http", "machine": c.machine_info(), "clients": CLIENTS,
              "workers": WORKERS, "fires": fire_rows, "reads": read_rows,
              "targets": {"http_vs_engine": TARGET_RATIO, "http_p99_ms": TARGET_P99_MS,
                          "get_p50_ms": TARGET_GET_P50_MS}}
    first = fire_rows[0]
    text = "\n".join([
        f"HTTP fire: `workflow serve --workers {WORKERS}`, {CLIENTS} concurrent clients, "
        f"{first['rounds']} rounds x {first['fires_per_round']} fires per contender; medians",
        c.table(
            ["backend", "engine fires/s", "http fires/s", "http / engine", "target",
             "http p50 ms", "http p99 ms", "target p99"],
            [[r["backend"], r["fires_per_s"]["engine"], r["fires_per_s"]["http"],
              r["http_vs_engine"], f">= {TARGET_RATIO}", r["http_p50_ms"], r["http_p99_ms"],
              f"<= {TARGET_P99_MS:.0f} ms"] for r in fire_rows]),
        "",
        f"GET /api/v1/instances/{{id}} on the demo database, one client, "
        f"{read_rows[0]['rounds']} rounds x {read_rows[0]['gets_per_round']} reads; "
        "median of the rounds' p50",
        c.table(
            ["backend", "Engine.get p50 ms", "HTTP GET p50 ms", "target"],
            [[r["backend"], r["get_p50_ms"]["engine"], r["get_p50_ms"]["http"],
              f"<= {TARGET_GET_P50_MS:.0f} ms"] for r in read_rows]),
        "verify after the fires: "
        + ", ".join(f"{r['backend']} {'ok' if r['verify_ok'] else 'FAILED'} "
                    f"({r['events_verified']:,} events)" for r in fire_rows),
    ])
    c.emit(args, result, text)
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
