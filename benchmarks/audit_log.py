"""The audit log's costs at scale: integration, checkpoint, inclusion and consistency proofs.

Fills a fresh SQLite database's log queue with N synthetic entries (random 32-byte hashes,
as the triggers would queue them), integrates them, then times a checkpoint (root from the
stored nodes + Ed25519 signature), inclusion proofs of random leaves and a consistency proof.
Prints one JSON object. ``python benchmarks/audit_log.py --entries 1000000 --db /tmp/wf_log.db``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from workflow import Engine
from workflow.audit import log, merkle
from workflow.audit.note import Signer
from workflow.storage import auditlog as q


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/wf_audit_log.db")
    ap.add_argument("--proofs", type=int, default=200)
    args = ap.parse_args()
    path = Path(args.db)
    url = f"sqlite:///{path}"
    engine = Engine(url)
    fresh = not path.exists()
    engine.init()
    with engine.store.snapshot() as conn:
        have = q.tree_size(conn) + q.queue_length(conn)
    out: dict[str, object] = {"entries": args.entries}
    if fresh or have < args.entries:
        rng = random.Random(7)
        t = time.perf_counter()
        with engine.store.engine.begin() as conn:
            cur = conn.connection.cursor()
            batch = []
            for i in range(have, args.entries):
                batch.append(("event", i + 1, rng.randbytes(32).hex()))
                if len(batch) == 50_000:
                    cur.executemany("INSERT INTO workflow_audit_queue (source, source_id, "
                                    "entry_hash) VALUES (?, ?, ?)", batch)
                    batch.clear()
            if batch:
                cur.executemany("INSERT INTO workflow_audit_queue (source, source_id, "
                                "entry_hash) VALUES (?, ?, ?)", batch)
        out["queue_fill_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        n = log.integrate(engine.store)
        secs = time.perf_counter() - t
        out["integrated"] = n
        out["integrate_s"] = round(secs, 2)
        out["integrate_entries_per_s"] = round(n / secs) if secs else None
        print(f"integrated {n} in {secs:.1f}s", file=sys.stderr)
    signer = Signer.generate("bench.example/audit")
    times = []
    for _ in range(5):
        t = time.perf_counter()
        cp = engine.checkpoint(signer)
        times.append(time.perf_counter() - t)
    out["checkpoint_s_median"] = round(statistics.median(times), 4)
    size = int(cp.splitlines()[1])
    rng = random.Random(11)
    times, lengths = [], []
    with engine.store.snapshot() as conn:
        root = log.head(conn, size).root
        for _ in range(args.proofs):
            i = rng.randrange(size)
            t = time.perf_counter()
            proof = log.inclusion_proofs(conn, [i], size)[0]
            times.append(time.perf_counter() - t)
            lengths.append(len(proof))
            leaf = merkle.leaf_hash(_entry(conn, i))
            assert merkle.verify_inclusion(i, size, leaf, proof, root)
        t = time.perf_counter()
        cproof = log.consistency_proof(conn, size // 3, size)
        out["consistency_proof_ms"] = round((time.perf_counter() - t) * 1000, 2)
        out["consistency_proof_hashes"] = len(cproof)
    out["inclusion_proof_ms_median"] = round(statistics.median(times) * 1000, 3)
    out["inclusion_proof_ms_p99"] = round(sorted(times)[int(len(times) * 0.99) - 1] * 1000, 3)
    out["inclusion_proof_hashes_max"] = max(lengths)
    out["db_bytes"] = os.path.getsize(path)
    print(json.dumps(out))
    engine.close()


def _entry(conn: object, i: int) -> bytes:
    import sqlalchemy as sa

    h = conn.execute(  # type: ignore[attr-defined]
        sa.text("SELECT entry_hash FROM workflow_audit_log WHERE leaf_index = :i"), {"i": i}
    ).scalar()
    return bytes.fromhex(h)


if __name__ == "__main__":
    main()
