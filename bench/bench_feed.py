#!/usr/bin/env python3
"""The change feed: how soon a write on one server is readable on the other (RPO), and what an idle run costs.

    python3 bench/bench_feed.py [--files 100000] [--changes 100] [--latency-ms 1] [--driver follow|dagster]

A local pair of --files small files, synced both ways by full runs; then `ha-sync watch` on both roots and a
driver, as real processes: `ha-sync follow --pair bench --no-dry-run`, or (--driver dagster) a local Dagster
instance (the repo's dagster.yaml, its queued run coordinator) with `dagster-daemon run`, whose
ha_sync_change_feed sensor reads the tips the watchers (`--server dell|hp`) publish to the audit database and
launches real runs.  --changes single-file writes, alternating sides, one at a time: the time from the
write's return to the file being readable, with its content, on the other side (polled every 5 ms).  Prints
p50 / p95 against the schedule's RPO (a write waits up to 15 minutes for the next full run).

--latency-ms: the runs see both roots through latencyfs mounts (bench/latencyfs.c) that delay every metadata
request this long, as an NFS client would; the watchers stay on the backing folders (each server's own disk)
and the writes are made there.  The idle cost (default mode only, unless --no-idle): a changes-scope run and a
full run with nothing to do, each timed and counted in stat calls (strace -f -c), against `rsync -a --delete -n`.
Targets (issue 25): p95 <= 5 s locally, <= 10 s at 1 ms (follow); <= 15 s through Dagster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
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


@contextlib.contextmanager
def through_latency(work: str, roots: tuple[str, str], delay_ms: float) -> Iterator[tuple[str, str]]:
    """Both roots seen through latencyfs mounts (the runs' view over NFS); unmounted whatever happens."""
    if delay_ms <= 0:
        yield roots
        return
    from bench_nfs import build_latencyfs, mounted

    binary = build_latencyfs(work)
    with contextlib.ExitStack() as stack:
        seen = tuple(
            stack.enter_context(mounted(binary, root, f"{work}/mnt-{name}", int(delay_ms * 1000), cache=False))
            for name, root in zip(("dell", "hp"), roots, strict=True)
        )
        yield seen[0], seen[1]


def start_driver(driver: str, work: str, env: dict[str, str]) -> list[subprocess.Popen]:
    """The watchers and the driver, started and ready."""
    roots = [f"{work}/dell/bench", f"{work}/hp/bench"]
    if driver == "follow":
        watcher = subprocess.Popen([*HA_SYNC, "watch", *roots], env=env, stdout=subprocess.PIPE, text=True)
        assert watcher.stdout is not None and watcher.stdout.readline().startswith("ha-sync watch:")
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
        return [follower, watcher]
    procs = []
    for server, root in zip(("dell", "hp"), roots, strict=True):
        proc = subprocess.Popen(
            [*HA_SYNC, "watch", root, "--server", server], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().startswith("ha-sync watch:")
        procs.append(proc)
    daemon = subprocess.Popen(
        ["dagster-daemon", "run", "-w", os.path.join(REPO, "workspace.yaml")],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(f"{work}/daemon.log", "w"),  # noqa: SIM115 - the daemon's, for a post-mortem
    )
    return [daemon, *procs]


def arrives(src: str, dest: str, name: str, data: bytes, within: float = 120) -> float | None:
    """Write `name` on src; seconds until dest holds it (None: not within `within`)."""
    with open(f"{src}/{name}", "wb") as f:
        f.write(data)
    written = time.perf_counter()
    while time.perf_counter() - written < within:
        try:
            with open(f"{dest}/{name}", "rb") as f:
                if f.read() == data:
                    return time.perf_counter() - written
        except FileNotFoundError:
            pass
        time.sleep(0.005)  # polling the other side: the measurement itself
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--driver", choices=("follow", "dagster"), default="follow")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle cost (strace of rsync at 1M: minutes)")
    ap.add_argument("--warmup", type=float, default=200, help="seconds the first change may take (a full walk)")
    ap.add_argument("--dir", help="build the pair here and keep it: a later run with the same --dir reuses it")
    opts = ap.parse_args()
    as_installed()
    with contextlib.ExitStack() as stack:
        work = opts.dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="hasync-feed-"))
        dell, hp = f"{work}/dell", f"{work}/hp"
        built = os.path.isfile(f"{work}/built")
        if not built:
            make_small_tree(f"{dell}/bench", opts.files)
            os.makedirs(f"{hp}/bench")
            os.makedirs(f"{work}/home", exist_ok=True)
            os.symlink(os.path.join(REPO, "dagster.yaml"), f"{work}/home/dagster.yaml")
        env = {
            **os.environ,
            "HA_SYNC_DELL_ROOT": dell,
            "HA_SYNC_HP_ROOT": hp,
            "HA_SYNC_LOG_DIR": f"{work}/logs",
            "HA_SYNC_STATE_DIR": f"{work}/state",
            "HA_SYNC_PAIRS_FILE": f"{work}/pairs.toml",
            "HA_SYNC_LEASE_BACKEND": "local",
            "HA_SYNC_DRY_RUN": "false",
            "DAGSTER_HOME": f"{work}/home",
        }
        with open(env["HA_SYNC_PAIRS_FILE"], "w") as f:
            f.write('[pairs.bench]\ndescription = "bench"\n')
        if not built:
            for job in ("bench_dell_to_hp", "bench_hp_to_dell"):
                timed([*HA_SYNC, "job", job, "--no-dry-run"], env)
            open(f"{work}/built", "w").close()
        idle = {} if opts.no_idle or opts.latency_ms > 0 or opts.driver != "follow" else measure_idle(work, env)
        with through_latency(work, (dell, hp), opts.latency_ms) as (seen_dell, seen_hp):
            env = {**env, "HA_SYNC_DELL_ROOT": seen_dell, "HA_SYNC_HP_ROOT": seen_hp}
            procs = start_driver(opts.driver, work, env)
            rpo = []
            try:
                stamp = int(time.time())  # names no earlier run with the same --dir used
                # until one change arrives (the sensor's first tick only records the tips; the watchers' new
                # epoch makes the first run a full walk: through the latency bed at 1M, many minutes)
                warm, tries = 0, max(10, int(opts.warmup // 20))
                while arrives(f"{dell}/bench", f"{hp}/bench", f"warm-{stamp}-{warm}.txt", b"warm", within=20) is None:
                    warm += 1
                    if warm > tries:
                        raise SystemExit(f"no change arrived in {opts.warmup:g} s (see {work}/daemon.log)")
                for i in range(opts.changes):
                    src, dest = (dell, hp) if i % 2 == 0 else (hp, dell)
                    took = arrives(
                        f"{src}/bench", f"{dest}/bench", f"change-{stamp}-{i:04d}.txt", f"change {i}".encode()
                    )
                    if took is None:
                        raise SystemExit(f"change {i} did not arrive in 120 s")
                    rpo.append(took)
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
    rpo.sort()
    p50, p95 = statistics.median(rpo), rpo[min(len(rpo) - 1, int(0.95 * len(rpo)))]
    how = "ha-sync watch + follow" if opts.driver == "follow" else "ha-sync watch --server + the Dagster sensor"
    where = f", runs through latencyfs at {opts.latency_ms:g} ms" if opts.latency_ms > 0 else ", local"
    print(f"pair of {opts.files} files{where}; {opts.changes} single-file changes through {how}")
    print(f"RPO p50 {p50:.2f} s, p95 {p95:.2f} s, max {rpo[-1]:.2f} s (schedules alone: up to 900 s + a run)")
    if idle:
        print(f"{'idle run':<22} {'seconds':>8} {'stat calls':>11}")
        for what, (seconds, stats) in idle.items():
            print(f"{what:<22} {seconds:8.2f} {stats:11d}")


def measure_idle(work: str, env: dict[str, str]) -> dict[str, tuple[float, int]]:
    """A changes-scope run and a full run with nothing to do, and rsync -n, on the synced pair."""
    dell, hp = f"{work}/dell", f"{work}/hp"
    watcher = subprocess.Popen(
        [*HA_SYNC, "watch", f"{dell}/bench", f"{hp}/bench"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().startswith("ha-sync watch:")
        idle_changes = [*HA_SYNC, "job", "bench_dell_to_hp", "--no-dry-run", "--scope", "changes"]
        timed(idle_changes, env)  # the watcher's new epoch: this one walks everything and records positions
        full = [*HA_SYNC, "job", "bench_dell_to_hp", "--no-dry-run"]
        rsync = ["rsync", "-a", "--delete", "-n", f"{dell}/bench/", f"{hp}/bench"]
        return {
            "changes scope": (timed(idle_changes, env), stat_calls(idle_changes, env)),
            "full run": (timed(full, env), stat_calls(full, env)),
            "rsync -a --delete -n": (timed(rsync, env), stat_calls(rsync, env)),
        }
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=60)


if __name__ == "__main__":
    main()
