#!/usr/bin/env python3
"""Audit flush benchmark: one opslog of N operations into a real MariaDB, in rows/s, against PyMySQL's own
executemany of the same rows (the floor any flush stands on).

    python3 bench/bench_audit.py [--ops 100000]      (needs Debian's mariadb-server)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hasync_pipeline.audit import AuditStore, flush_file  # noqa: E402
from hasync_pipeline.audit.opslog import OpslogWriter  # noqa: E402
from hasync_pipeline.devtools.mariadb import MariaDB  # noqa: E402


def make_opslog(folder: str, ops: int) -> str:
    writer = OpslogWriter(
        folder,
        {
            "run_id": f"bench-{time.time_ns()}",
            "pair": "media",
            "direction": "dell_to_hp",
            "src": "/mnt/dell/media",
            "dest": "/mnt/hp/media",
            "started_at": "2026-11-22T10:00:00.000Z",
            "dry_run": 0,
        },
    )
    for i in range(ops):
        writer._line(
            {
                "type": "op",
                "dry_run": 0,
                "operation": "create",
                "filepath": f"photos/2026/{i:07d}.jpg",
                "size_before": None,
                "size_after": 3_000_000,
                "md5_before": None,
                "md5_after": None,
                "started_at": "2026-11-22T10:00:01.000Z",
                "ended_at": "2026-11-22T10:00:01.250Z",
                "status": "success",
                "error_message": None,
                "bytes": 3_000_000,
            }
        )
    writer.close(
        {
            "ended_at": "2026-11-22T10:05:00.000Z",
            "status": "success",
            "files_created": ops,
            "files_updated": 0,
            "files_deleted": 0,
            "files_skipped": 0,
            "files_failed": 0,
            "total_bytes_transferred": 3_000_000 * ops,
            "error_message": None,
        }
    )
    return writer.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=100_000)
    args = ap.parse_args()
    server = MariaDB()
    try:
        dsn = server.go_dsn(server.new_database())
        store = AuditStore(dsn)
        store.ensure_schema()
        folder = tempfile.mkdtemp(prefix="hasync-bench-audit-")
        path = make_opslog(folder, args.ops)
        t0 = time.perf_counter()
        outcome = flush_file(store, path)
        ours = time.perf_counter() - t0
        assert outcome.written and store.count_operations() == args.ops
        with server.root() as conn, conn.cursor() as cur:  # the floor: executemany of the same rows
            cur.execute(f"USE {store.url.database}")
            rows = [
                (
                    1,
                    0,
                    "create",
                    f"photos/2026/{i:07d}.jpg",
                    None,
                    3_000_000,
                    None,
                    None,
                    "2026-11-22 10:00:01.000",
                    "2026-11-22 10:00:01.250",
                    "success",
                    None,
                )
                for i in range(args.ops)
            ]
            conn.autocommit(False)
            t0 = time.perf_counter()
            for i in range(0, len(rows), 5000):
                cur.executemany(
                    "INSERT INTO sync_operations (iteration_id, dry_run, operation, filepath, size_before,"
                    " size_after, md5_before, md5_after, started_at, ended_at, status, error_message)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    rows[i : i + 5000],
                )
            conn.commit()
            floor = time.perf_counter() - t0
        print(
            f"flush of {args.ops} operations into MariaDB {args.ops / ours:,.0f} rows/s ({ours:.2f}s, parse + one "
            f"transaction); PyMySQL executemany alone {args.ops / floor:,.0f} rows/s; ratio {ours / floor:.2f}x"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
