#!/usr/bin/env python3
"""Dashboard speed: every page and API route against a real MariaDB holding N operation rows (default
1,000,000) spread over 50,000 iterations of the six pairs (every 15 minutes, both directions, ending now, so
the pair pages' last 7/30 days are full), a fifth of them updates and deletes, some conflicts.
Target: under 200 ms each.

    python3 bench/bench_dashboard.py [--ops 1000000] [--iterations 50000]   (needs Debian's mariadb-server)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from starlette.testclient import TestClient  # noqa: E402

from hasync_pipeline.audit import AuditStore  # noqa: E402
from hasync_pipeline.dashboard.app import create_app  # noqa: E402
from hasync_pipeline.devtools.mariadb import MariaDB  # noqa: E402

PAIRS = ["media", "photos", "owncloud", "games", "infra", "ai"]


def fill(server: MariaDB, database: str, iterations: int, ops: int) -> None:
    rnd = random.Random(7)
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=15 * (iterations // 12 + 1))
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(f"USE {database}")
        conn.autocommit(False)
        rows = []
        for i in range(iterations):
            t = start + timedelta(minutes=15 * (i // 12), seconds=i % 12)  # 12 runs per 15-minute slot
            rows.append(
                (
                    PAIRS[i % 6],
                    ("dell_to_hp", "hp_to_dell")[i // 6 % 2],
                    "/mnt/a",
                    "/mnt/b",
                    t,
                    t + timedelta(seconds=30),
                    rnd.choice(["success"] * 8 + ["partial_failure", "failed"]),
                    i % 3 == 0,
                    rnd.randint(0, 50),
                    rnd.randint(0, 5),
                    rnd.randint(0, 3),
                    100,
                    0,
                    1000,
                    None,
                    f"run-{i}",
                    1 if i % 50 == 0 else None,
                )
            )
        cur.executemany(
            "INSERT INTO sync_iterations (sync_pair, direction, src, dest, started_at, ended_at, status,"
            " dry_run, files_created, files_updated, files_deleted, files_skipped, files_failed,"
            " total_bytes_transferred, error_message, run_id, files_conflicted) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,"
            "%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            rows,
        )
        per = max(1, ops // iterations)
        batch = []
        for n in range(ops):
            it = n // per % iterations + 1
            operation = ("create", "create", "create", "create", "update", "delete")[n % 6]
            reason = "conflict: changed on both sides; the other is now x" if n % 97 == 0 else None
            batch.append(
                (
                    it,
                    0,
                    operation,
                    f"dir{n % 100:02d}/{n:08d}.jpg",
                    None if operation == "create" else 900,
                    None if operation == "delete" else 1000,
                    "2026-01-01 00:00:00.000",
                    "2026-01-01 00:00:00.100",
                    "fail" if n % 53 == 0 else "success",
                    reason,
                )
            )
            if len(batch) == 20000:
                cur.executemany(
                    "INSERT INTO sync_operations (iteration_id, dry_run, operation, filepath, size_before,"
                    " size_after, started_at, ended_at, status, reason) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    batch,
                )
                batch = []
        if batch:
            cur.executemany(
                "INSERT INTO sync_operations (iteration_id, dry_run, operation, filepath, size_before,"
                " size_after, started_at, ended_at, status, reason) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                batch,
            )
        conn.commit()
        cur.execute("ANALYZE TABLE sync_iterations, sync_operations")


def timed(client: TestClient, url: str, rounds: int = 20) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        resp = client.get(url)
        times.append(time.perf_counter() - t0)
        assert resp.status_code == 200, resp.text
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--iterations", type=int, default=50_000)
    args = ap.parse_args()
    server = MariaDB()
    try:
        database = server.new_database()
        dsn = server.go_dsn(database)
        AuditStore(dsn).ensure_schema()
        print(f"filling {args.iterations} iterations and {args.ops} operations ...", flush=True)
        fill(server, database, args.iterations, args.ops)
        client = TestClient(create_app(dsn))
        mid = args.iterations // 2
        for url in (
            "/",
            "/api/pairs",
            "/api/iterations?limit=20",
            "/api/iterations?pair=photos&limit=20",
            f"/api/operations?iteration_id={mid}&page_size=100",
            f"/api/operations?iteration_id={mid}&operation=delete&status=success&prefix=dir1",
            f"/iterations/{mid}",
            f"/iterations/{mid}?operation=update&prefix=dir0",
            "/pairs/photos",
            "/api/conflicts?pair=photos",
            "/api/trash?pair=photos",
            "/metrics",
        ):
            print(f"{url:<62} median {timed(client, url):7.1f} ms  (target < 200 ms)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
