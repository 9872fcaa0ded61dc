"""Notifications: what an active webhook costs a fire, and delivery throughput.

* **fires/s without a hook / with one active webhook hook** — ``Engine.fire(id,
  "report_progress", ...)`` on leader-development instances in ``implementing``, in
  alternating rounds (the hook is added before and removed after each "with" round), medians
  compared: the outbox row is written by a trigger in the fire's own transaction, so the
  ratio should stay >= 0.9.
* **delivery** — ``Notifications.deliver`` of every outbox row the "with" rounds wrote, to a
  local receiver (``http.server`` on 127.0.0.1, keep-alive, answers 204), one leased batch
  of ``--batch`` rows per round, alternating with the same number of bare POSTs of a
  delivery's body to the same receiver on one kept-alive ``http.client`` connection (no
  database: what the receiver alone allows), medians compared.

    python benchmarks/notify.py [--backend sqlite|postgres] [--quick] [--json]
"""

from __future__ import annotations

import http.client
import http.server
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))

import _common as c  # noqa: E402


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=None)
    p.add_argument("--batch", type=int, default=None,
                   help="Outbox rows leased per delivery round (default: the fires per round)")
    args = p.parse_args()
    n_instances = args.instances or (200 if args.quick else 2000)
    rounds = args.rounds or (4 if args.quick else 10)
    batch = 100 if args.quick else 300
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    with c.scratch(args.backend, getattr(args, "pg_url", c.DEFAULT_PG), "notify") as db:
        templates = c.prepare(db, ["leader-development"])
        c.build(db, templates, c.implementing_specs(n_instances))
        engine = c.engine_for(db)
        ids = [i.id for i in engine.list(program="leader-development", state="implementing")]
        notes = engine.notifications

        def fire(instance: int) -> None:
            engine.fire(instance, "report_progress", actor=c.ACTOR, role="coordinator",
                        evidence=c.PROGRESS)

        rates: dict[str, list[float]] = {"without hook": [], "with hook": []}
        cursor = 0
        for _ in range(20):
            fire(ids[cursor % len(ids)])
            cursor += 1
        for r in range(rounds):
            for name in c.rotate(list(rates), r):
                hook = notes.add_hook(url, secret="s") if name == "with hook" else None
                todo = [ids[(cursor + k) % len(ids)] for k in range(batch)]
                cursor += batch
                t0 = time.perf_counter()
                for instance in todo:
                    fire(instance)
                rates[name].append(batch / (time.perf_counter() - t0))
                if hook is not None:
                    notes.remove_hook(hook.id)
            c.log(args, f"round {r + 1}/{rounds}: "
                  + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()))
        pending = notes.counts().get("pending", 0)
        # The hooks were removed (removed hooks get nothing): bring them back for delivery.
        from workflow.storage import outbox as db_outbox

        engine.store.run(
            lambda conn: conn.execute(db_outbox.hooks_t.update().values(removed_at=None)),
            write=True,
        )
        # A body of a delivery's size, for the bare POSTs.
        sample = engine.audit_log(limit=1)[0]
        body = json.dumps({"event": sample.to_dict(), "instance": engine.get(
            sample.instance).to_dict()}, ensure_ascii=False).encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)

        def bare(n: int) -> None:
            for _ in range(n):
                conn.request("POST", "/hook", body=body,
                             headers={"Content-Type": "application/json"})
                conn.getresponse().read()

        per_round = args.batch or batch
        delivery: dict[str, list[float]] = {"bare POSTs": [], "deliver": []}
        delivered = 0
        bare_total = 0
        elapsed = 0.0
        r = 0
        while delivered < pending:
            for name in c.rotate(list(delivery), r):
                t0 = time.perf_counter()
                if name == "deliver":
                    done = notes.deliver(once=True, batch=per_round,
                                         should_stop=lambda: True).delivered
                    spent = time.perf_counter() - t0
                    delivered += done
                    elapsed += spent
                else:
                    bare(per_round)
                    done = per_round
                    bare_total += per_round
                    spent = time.perf_counter() - t0
                delivery[name].append(done / spent if spent else 0.0)
            r += 1
            c.log(args, f"delivery round {r}: "
                  + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in delivery.items()))
            if delivery["deliver"][-1] == 0:
                break
        conn.close()
        check = engine.verify()
        engine.close()
    server.shutdown()
    med = {k: c.median(v) for k, v in rates.items()}
    dmed = {k: c.median(v) for k, v in delivery.items()}
    result = {
        "backend": args.backend,
        "fires_per_s": med,
        "ratio_with_to_without": c.ratio(med["with hook"], med["without hook"]),
        "outbox_rows": pending,
        "delivered": delivered,
        "received": _Handler.received - bare_total,
        "deliveries_per_s": delivered / elapsed if elapsed else 0.0,
        "delivery_round_medians_per_s": dmed,
        "ratio_deliver_to_bare": c.ratio(dmed["deliver"], dmed["bare POSTs"]),
        "verify_ok": check.ok,
        "machine": c.machine_info(),
    }
    text = "\n".join([
        f"notify benchmark ({args.backend}, {rounds} rounds of {batch} fires, medians)",
        c.table(["", "fires/s"], [(k, f"{v:.0f}") for k, v in med.items()]),
        f"with/without: {result['ratio_with_to_without']:.2f} (want >= 0.90)",
        f"delivery: {delivered} of {pending} outbox rows in {elapsed:.2f}s = "
        f"{result['deliveries_per_s']:.0f}/s (want >= 500); received {result['received']}",
        f"delivery rounds of {per_round}, medians:",
        c.table(["", "per s"], [(k, f"{v:.0f}") for k, v in dmed.items()]),
        f"deliver/bare POSTs: {result['ratio_deliver_to_bare']:.2f}",
        f"verify: {'ok' if check.ok else 'FAILED'}",
    ])
    c.emit(args, result, text)
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
