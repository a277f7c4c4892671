#!/usr/bin/env python3
"""Two-way benchmark: an `ha-sync` cycle (dell -> hp, then hp -> dell, the journal read and compared each
time) against Unison and rclone bisync on the same trees, measured in the same run, as ratios.

    python3 bench/bench_two_way.py [--files 20000 100000] [--rounds 3] [--dir /dev/shm/hasync-2way]

For each tree size: (1) a no-change cycle; (2) a cycle after 1% of the files changed on one side and 1% on
the other.  Every tool has synced the trees once before (Unison's archives, rclone's listings, our
journal), as in production.  Needs Debian's unison and rclone (`apt-get install unison rclone`).  Time is
wall clock of the whole command(s), medians of --rounds, the contenders taking turns going first.
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
from bench_engine import as_installed, make_small_tree, run  # noqa: E402  (the same trees as the one-way benchmark)

HA_SYNC = [sys.executable, "-m", "hasync_pipeline.cli"]


class Contender:
    def __init__(self, name: str, base: str):
        self.name, self.base = name, base
        self.a, self.b = os.path.join(base, name, "dell"), os.path.join(base, name, "hp")
        self.state = os.path.join(base, name, "state")

    def cycle(self) -> list[list[str]]:
        raise NotImplementedError

    def prime(self) -> list[list[str]]:
        return self.cycle()


class HaSync(Contender):
    def cycle(self) -> list[list[str]]:
        common = [
            "--pair",
            "bench",
            "--log-dir",
            os.path.join(self.state, "logs"),
            "--no-dry-run",
            "--delete-missing",
            "--trash-retain-days",
            "0",
            "--db-dsn",
            f"sqlite:///{os.path.join(self.state, 'audit.sqlite3')}",
        ]
        return [
            HA_SYNC + ["--src", self.a, "--dest", self.b, "--direction", "dell-to-hp", *common],
            HA_SYNC + ["--src", self.b, "--dest", self.a, "--direction", "hp-to-dell", *common],
        ]


class Unison(Contender):
    def cycle(self) -> list[list[str]]:
        return [
            [
                "env",
                f"UNISON={self.state}",
                "unison",
                self.a,
                self.b,
                "-batch",
                "-auto",
                "-times",
                "-silent",
                "-confirmbigdel=false",
                "-fastcheck",
                "true",
            ]
        ]


class Bisync(Contender):
    def cycle(self) -> list[list[str]]:
        return [["rclone", "bisync", self.a, self.b, "--workdir", self.state, "--config", "/dev/null", "-q"]]

    def prime(self) -> list[list[str]]:
        return [self.cycle()[0] + ["--resync"]]


def timed(commands: list[list[str]]) -> float:
    return sum(run(cmd)[0] for cmd in commands)


def change_one_percent_each_side(c: Contender, files: int, salt: int) -> None:
    for root, start in ((c.a, 0), (c.b, 50)):
        for i in range(start, files, 100):
            d = os.path.join(root, f"d{i // 1000:04d}", f"s{(i // 100) % 10}")
            with open(os.path.join(d, f"file-{i:07d}.dat"), "ab") as f:
                f.write(b"changed %d" % salt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, nargs="+", default=[20_000, 100_000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default="/dev/shm/hasync-2way")
    args = p.parse_args()
    for tool in ("unison", "rclone"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install unison rclone)")
    as_installed()
    print(f"{'case':<28}{'ha-sync':>10}{'unison':>10}{'bisync':>10}{'/unison':>10}{'/bisync':>10}", flush=True)
    for files in args.files:
        shutil.rmtree(args.dir, ignore_errors=True)
        contenders = [HaSync("hasync", args.dir), Unison("unison", args.dir), Bisync("bisync", args.dir)]
        seed = os.path.join(args.dir, "seed")
        make_small_tree(seed, files)
        for c in contenders:
            os.makedirs(c.state)
            for root in (c.a, c.b):
                subprocess.run(["cp", "-a", seed, root], check=True)
            timed(c.prime())
        for case in ("no change", "1% changed on each side"):
            times: dict[str, list[float]] = {c.name: [] for c in contenders}
            for r in range(args.rounds):
                order = contenders[r % 3 :] + contenders[: r % 3]
                for c in order:
                    if case != "no change":
                        change_one_percent_each_side(c, files, r)
                    times[c.name].append(timed(c.cycle()))
            med = {name: statistics.median(t) for name, t in times.items()}
            print(
                f"{f'{files} files, {case}':<28}{med['hasync']:>9.2f}s{med['unison']:>9.2f}s{med['bisync']:>9.2f}s"
                f"{med['hasync'] / med['unison']:>9.2f}x{med['hasync'] / med['bisync']:>9.2f}x",
                flush=True,
            )
        for c in contenders:  # the cycles must have left each pair equal, or the timing means nothing
            diff = subprocess.run(["diff", "-rq", "-x", ".hasync*", c.a, c.b], capture_output=True, text=True)
            if diff.returncode != 0:
                raise SystemExit(f"{c.name} left the two sides different: {diff.stdout[:500]}")
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    time.tzset()
    main()
