#!/usr/bin/env python3
"""ha-sync against rsync where every metadata call costs a network round trip, as on the pairs' NFS exports.

    python3 bench/bench_nfs.py [--files 20000] [--big 20] [--delays 0,250,1000] [--cache] [--rounds 3]

Source and destination are each a latencyfs mount (bench/latencyfs.c: a libfuse3 passthrough that sleeps
--delays microseconds in every metadata request, kernel attribute/entry caches off; --cache: on for 3 s, as
NFS's; each mount answers up to 64 requests at once, see SERVER_THREADS). For each delay, in one run, the
median of --rounds of: (a) initial copy of N small files, (b) a no-change run, (c) 1% of the files changed,
(d) an initial copy of --big files of 64 MiB (0: skipped; the data itself is not delayed, only the requests
around it); ha-sync with its automatic walk threads and workers against `rsync -a --delete`. Prints the
ratios. Needs /dev/fuse, fuse3 and libfuse3-dev (.ci/install-system-packages installs them); every mount is
undone on any failure, SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import as_installed, ha_sync, make_small_tree, unpaired  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WHO = ("ha-sync", "rsync")
# requests one mount answers at once.  libfuse's default, 10, made the bed a server that holds a thread for each
# request's whole delay; an NFS server's threads are busy only while they work, the round trip is the wire, and
# a Linux NFS 4.1 client keeps up to 64 requests in flight (its session's slots).  A walk of 5000 files at 1 ms
# with 16 threads: 1.85 s at 10, 1.30 s at 64; rsync, one request at a time, is the same at both.
SERVER_THREADS = 64
CACHE_SECONDS = 3  # latencyfs -o cache: the kernel's attribute and entry caches last this long


def build_latencyfs(out_dir: str) -> str:
    """Compile latencyfs.c (a second or two) and return the binary's path."""
    binary = os.path.join(out_dir, "latencyfs")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True, check=True)
    subprocess.run(["gcc", "-O2", "-o", binary, os.path.join(HERE, "latencyfs.c"), *flags.stdout.split()], check=True)
    return binary


@contextlib.contextmanager
def mounted(binary: str, backing: str, mountpoint: str, delay_us: int, cache: bool) -> Iterator[str]:
    os.makedirs(backing, exist_ok=True)
    os.makedirs(mountpoint, exist_ok=True)
    cmd = [binary, backing, mountpoint, "-o", f"delay_us={delay_us},max_threads={SERVER_THREADS}"]
    cmd += ["-o", "cache"] if cache else []
    subprocess.run(cmd, check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {proc.stderr[-2000:]}")
    return time.perf_counter() - started


def rsync(src: str, dest: str) -> list[str]:
    return ["rsync", "-a", "--delete", "--exclude=/.hasync*", f"{src}/", f"{dest}/"]


def change_one_percent(root: str, round_no: int) -> None:
    for dirpath, _, files in os.walk(root):
        if ".hasync" in dirpath:
            continue
        for name in sorted(files)[::100]:
            with open(os.path.join(dirpath, name), "ab") as f:
                f.write(b"changed %d\n" % round_no)


def run_case(
    contenders: dict[str, tuple[Callable[[], None], Callable[[], list[str]]]], rounds: int
) -> dict[str, float]:
    """contenders: name -> (prepare, command); the median seconds of each, the two taking turns going first."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    order = list(contenders)
    for r in range(rounds):
        for who in order if r % 2 == 0 else order[::-1]:
            prepare, command = contenders[who]
            prepare()
            times[who].append(timed(command()))
    return {k: statistics.median(v) for k, v in times.items()}


def clear(folder: str) -> None:
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def lay_out(seed: str | None, backing: str, cache: bool) -> None:
    """Put a case's tree in place (None: empty) beneath the delay, in the mount's backing folder: through the
    mount, 20k files took 18 minutes at 1 ms before anything was measured.  With the kernel's caches on, wait
    for what it cached of the old tree to expire."""
    clear(backing)
    if seed is not None:
        shutil.copytree(seed, backing, symlinks=True, dirs_exist_ok=True)
    if cache:
        time.sleep(CACHE_SECONDS + 0.5)


def make_big_tree(root: str, count: int) -> None:
    block = os.urandom(1 << 20)
    os.makedirs(root)
    for i in range(count):
        with open(os.path.join(root, f"big-{i:02d}.bin"), "wb") as f:
            for _ in range(64):
                f.write(block)


def measure(
    binary: str, base: str, seed: str, big_seed: str | None, delay: int, cache: bool, rounds: int
) -> dict[str, dict[str, float]]:
    """The cases at one delay: {case: {contender: median seconds}}."""
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(mounted(binary, f"{base}/b-src", f"{base}/m-src", delay, cache))
        dest = {w: stack.enter_context(mounted(binary, f"{base}/b-{w}", f"{base}/m-{w}", delay, cache)) for w in WHO}
        lay_out(seed, f"{base}/b-src", cache)
        logs = os.path.join(base, "logs")
        deletes = ("--delete-missing", "--max-delete", "100")  # as rsync --delete
        cmds = {
            "ha-sync": partial(ha_sync, src, dest["ha-sync"], logs, *deletes),
            "rsync": partial(rsync, src, dest["rsync"]),
        }

        def from_empty(who: str) -> None:
            lay_out(None, f"{base}/b-{who}", cache)  # emptied beneath the delay, as the source is laid out
            if who == "ha-sync":
                unpaired(src)  # a first sync again

        counter = itertools.count()
        results = {
            "(a) initial copy": run_case({w: (partial(from_empty, w), cmds[w]) for w in WHO}, rounds),
            "(b) no change": run_case({w: (lambda: None, cmds[w]) for w in WHO}, rounds),
            "(c) 1% changed": run_case(
                {w: (lambda: change_one_percent(src, next(counter)), cmds[w]) for w in WHO}, rounds
            ),
        }
        if big_seed is not None:
            lay_out(big_seed, f"{base}/b-src", cache)
            results["(d) 64 MiB files"] = run_case({w: (partial(from_empty, w), cmds[w]) for w in WHO}, rounds)
        return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=20, help="files of 64 MiB in case (d); 0: no case (d)")
    ap.add_argument("--delays", default="0,250,1000", help="microseconds per metadata request")
    ap.add_argument("--cache", action="store_true", help="kernel attribute/entry caches on (3 s), as NFS's")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the trees and mounts go (created; default: a new temp folder)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_nfs: terminated"))  # so the mounts are undone
    if not os.path.exists("/dev/fuse"):
        raise SystemExit("bench_nfs: /dev/fuse is absent here: no latency bed")
    base = args.dir or tempfile.mkdtemp(prefix="hasync-bench-nfs-")
    os.makedirs(base, exist_ok=True)
    os.environ.setdefault("HA_SYNC_STATE_DIR", os.path.join(base, "state"))
    os.environ.setdefault("HA_SYNC_LEASE_BACKEND", "local")
    as_installed()
    binary = build_latencyfs(base)
    seed = os.path.join(base, "seed")
    make_small_tree(seed, args.files)
    big_seed = os.path.join(base, "big-seed") if args.big else None
    if big_seed is not None:
        make_big_tree(big_seed, args.big)
    print(f"{args.files} files, {args.rounds} rounds, caches {'on (3 s)' if args.cache else 'off'}", flush=True)
    try:
        for delay in (int(d) for d in args.delays.split(",")):
            for case, t in measure(binary, base, seed, big_seed, delay, args.cache, args.rounds).items():
                print(
                    f"delay {delay:>5} us  {case:<18} ha-sync {t['ha-sync']:7.2f} s  rsync {t['rsync']:7.2f} s"
                    f"  ratio {t['ha-sync'] / t['rsync']:.2f}x",
                    flush=True,
                )
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
