#!/usr/bin/env python3
"""The change feed: how soon a write on one server is readable on the other (RPO), and what an idle run costs.

    python3 bench/bench_feed.py [--files 100000] [--changes 100]

A local pair of --files small files, synced both ways by full runs; then `ha-sync watch` on both roots and
`ha-sync follow --pair bench --no-dry-run`, as real processes.  --changes single-file writes, alternating
sides, one at a time: the time from the write's return to the file being readable, with its content, on the
other side (polled every 5 ms).  Prints p50 / p95 against the schedule's RPO (a write waits up to 15 minutes
for the next full run) and, for the idle cost, a changes-scope run and a full run with nothing to do, each
timed and counted in stat calls (strace -f -c), against `rsync -a --delete -n` on the same pair.
Target (issue 25): follow p95 <= 5 s locally.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_engine import as_installed, make_small_tree  # noqa: E402

HA_SYNC = [sys.executable, "-m", "hasync_pipeline.cli"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def stat_calls(cmd: list[str], env: dict[str, str]) -> int:
    """stat-family system calls of a command and its children (strace -f -c), or -1 without strace."""
    if shutil.which("strace") is None:
        return -1
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(
            ["strace", "-f", "-c", "-e", "trace=newfstatat,statx,fstat,lstat,stat", "-o", out.name, *cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for line in out.read().splitlines():
            fields = line.split()
            if fields and fields[-1] == "total":  # % time, seconds, usecs/call, calls, [errors,] total
                return int(fields[3])
    return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--changes", type=int, default=100)
    opts = ap.parse_args()
    as_installed()
    with tempfile.TemporaryDirectory(prefix="hasync-feed-") as work:
        dell, hp = f"{work}/dell", f"{work}/hp"
        make_small_tree(f"{dell}/bench", opts.files)
        os.makedirs(f"{hp}/bench")
        env = {
            **os.environ,
            "HA_SYNC_DELL_ROOT": dell,
            "HA_SYNC_HP_ROOT": hp,
            "HA_SYNC_LOG_DIR": f"{work}/logs",
            "HA_SYNC_STATE_DIR": f"{work}/state",
            "HA_SYNC_PAIRS_FILE": f"{work}/pairs.toml",
            "HA_SYNC_LEASE_BACKEND": "local",
        }
        with open(env["HA_SYNC_PAIRS_FILE"], "w") as f:
            f.write('[pairs.bench]\ndescription = "bench"\n')
        for job in ("bench_dell_to_hp", "bench_hp_to_dell"):
            timed([*HA_SYNC, "job", job, "--no-dry-run"], env)
        watcher = subprocess.Popen(
            [*HA_SYNC, "watch", f"{dell}/bench", f"{hp}/bench"], env=env, stdout=subprocess.PIPE, text=True
        )
        assert watcher.stdout is not None and watcher.stdout.readline().startswith("ha-sync watch:")
        idle_changes = [*HA_SYNC, "job", "bench_dell_to_hp", "--no-dry-run", "--scope", "changes"]
        timed(idle_changes, env)  # the first changes run walks everything and records its positions
        idle = {
            "changes scope": (timed(idle_changes, env), stat_calls(idle_changes, env)),
            "full run": (
                timed([*HA_SYNC, "job", "bench_dell_to_hp", "--no-dry-run"], env),
                stat_calls([*HA_SYNC, "job", "bench_dell_to_hp", "--no-dry-run"], env),
            ),
            "rsync -a --delete -n": (
                timed(["rsync", "-a", "--delete", "-n", f"{dell}/bench/", f"{hp}/bench"], env),
                stat_calls(["rsync", "-a", "--delete", "-n", f"{dell}/bench/", f"{hp}/bench"], env),
            ),
        }
        follower = subprocess.Popen(
            [*HA_SYNC, "follow", "--pair", "bench", "--no-dry-run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert follower.stdout is not None
        while not follower.stdout.readline().startswith("ha-sync follow: following"):
            pass
        rpo = []
        try:
            for i in range(opts.changes):
                src, dest = (dell, hp) if i % 2 == 0 else (hp, dell)
                name, data = f"bench/change-{i:04d}.txt", f"change {i}".encode()
                with open(f"{src}/{name}", "wb") as f:
                    f.write(data)
                written = time.perf_counter()
                while True:
                    try:
                        with open(f"{dest}/{name}", "rb") as f:
                            if f.read() == data:
                                break
                    except FileNotFoundError:
                        pass
                    if time.perf_counter() - written > 120:
                        raise SystemExit(f"change {i} did not arrive in 120 s")
                    time.sleep(0.005)  # polling the other side: the measurement itself
                rpo.append(time.perf_counter() - written)
        finally:
            for proc in (follower, watcher):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    rpo.sort()
    p50, p95 = statistics.median(rpo), rpo[min(len(rpo) - 1, int(0.95 * len(rpo)))]
    print(f"pair of {opts.files} files; {opts.changes} single-file changes through ha-sync watch + follow")
    print(f"RPO p50 {p50:.2f} s, p95 {p95:.2f} s, max {rpo[-1]:.2f} s (schedules alone: up to 900 s + a run)")
    print(f"{'idle run':<22} {'seconds':>8} {'stat calls':>11}")
    for what, (seconds, stats) in idle.items():
        print(f"{what:<22} {seconds:8.2f} {stats:11d}")


if __name__ == "__main__":
    main()
