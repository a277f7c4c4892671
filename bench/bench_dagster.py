#!/usr/bin/env python3
"""Dagster overhead: a real `dagster job execute -j media_dell_to_hp` and `dg launch --job media_dell_to_hp`
against the `ha-sync` CLI on the same no-change pair of N files (each size in one run, the three commands in
alternating rounds, medians), and the fixed cost of a run of an empty pair against `python -c "import dagster"`.

    python3 bench/bench_dagster.py [--files 20000,100000] [--dir /tmp/hasync-bench-dagster] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import as_installed, make_small_tree  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="20000,100000", help="comma-separated pair sizes")
    ap.add_argument("--dir", default="/tmp/hasync-bench-dagster")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    as_installed()
    for files in (int(n) for n in args.files.split(",")):
        measure(files, args.dir, args.rounds)


def measure(files: int, base: str, rounds: int) -> None:
    shutil.rmtree(base, ignore_errors=True)
    home = os.path.join(base, "home")
    os.makedirs(home)
    os.symlink(os.path.join(REPO, "dagster.yaml"), os.path.join(home, "dagster.yaml"))
    env = {
        **os.environ,
        "DAGSTER_HOME": home,
        "HA_SYNC_DELL_ROOT": os.path.join(base, "dell"),
        "HA_SYNC_HP_ROOT": os.path.join(base, "hp"),
        "HA_SYNC_LOG_DIR": os.path.join(base, "logs"),
        "HA_SYNC_STATE_DIR": os.path.join(base, "state"),
        "HA_SYNC_LEASE_BACKEND": "local",
        "HA_SYNC_DRY_RUN": "false",
    }
    try:
        print(f"building {files} files ...", flush=True)
        make_small_tree(os.path.join(base, "dell", "media"), files)
        os.makedirs(os.path.join(base, "hp"))
        subprocess.run(["cp", "-a", os.path.join(base, "dell", "media"), os.path.join(base, "hp", "media")], check=True)
        for side in ("dell", "hp"):
            os.makedirs(os.path.join(base, side, "games"))
        cli = [
            os.path.join(BIN, "ha-sync"),
            "--src",
            os.path.join(base, "dell", "media"),
            "--dest",
            os.path.join(base, "hp", "media"),
            "--pair",
            "media",
            "--log-dir",
            os.path.join(base, "logs"),
            "--no-dry-run",
        ]
        code = ["-m", "hasync_pipeline.definitions"]
        job = [os.path.join(BIN, "dagster"), "job", "execute", *code, "-j"]
        dg = [os.path.join(BIN, "dg"), "launch", *code, "--job"]
        timed(cli, env)  # the first sync (the journal) and a first Dagster run: not what is measured
        timed(job + ["media_dell_to_hp"], env)
        d, g, c, e, imp = [], [], [], [], []
        for _ in range(rounds):
            c.append(timed(cli, env))
            d.append(timed(job + ["media_dell_to_hp"], env))
            g.append(timed(dg + ["media_dell_to_hp"], env))
            e.append(timed(job + ["games_dell_to_hp"], env))
            imp.append(timed([sys.executable, "-c", "import dagster"], env))
        med = statistics.median
        print(
            f"no-change pair of {files} files, medians of {rounds}: ha-sync CLI {med(c):.2f}s | "
            f"dagster job execute {med(d):.2f}s (+{med(d) - med(c):.2f}s) | dg launch {med(g):.2f}s "
            f"(+{med(g) - med(c):.2f}s)"
        )
        print(
            f"empty pair: dagster job execute {med(e):.2f}s | python -c 'import dagster' {med(imp):.2f}s | "
            f"fixed cost of a run beyond the import {med(e) - med(imp):.2f}s",
            flush=True,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
