#!/usr/bin/env python3
"""When a server dies: how long a run takes to end by itself, and to obey SIGTERM, against rsync in the same run.

    python3 bench/bench_outage.py [--stall-timeout 60] [--mib 384] [--rsync-limit 30] [--cases before,mid-copy,sigterm]

The Dell's root is a FUSE stand-in for its NFS export (bench/latencyfs.c -o control=, driven by
bench/faultfs.py) that stops answering, as a hard NFS mount does when its server dies; the
HP's is a local folder.  Cases, each in both directions (the dead server as source, then as destination):
  before   - the server died before the run starts: seconds from the start to the run's end;
  mid-copy - it dies while --mib MiB are being copied: seconds from its death to the run's end;
  sigterm  - it dies mid-copy, SIGTERM 1 s later (stall timeout 600 s: only the signal can end it): seconds
             from the signal to the exit.
Each case checks that no file on the surviving side changed other than by whole, finished copies, and that
the next cycle after the server is back converges.  rsync -a --delete --timeout=<stall> gets the same
death and the same signal; it is given --rsync-limit seconds past ha-sync's target, then killed ("never").
Targets (issue 24): run end <= stall_timeout + 15 s; SIGTERM -> exit <= 5 s.  Needs /dev/fuse, fuse3,
libfuse3-dev and root (.ci/install-system-packages installs the packages).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_engine import as_installed  # noqa: E402
from faultfs import FaultyShare, latencyfs_binary  # noqa: E402

HA_SYNC = [sys.executable, "-m", "hasync_pipeline.cli"]


def tree_state(root: str) -> dict[str, tuple]:
    """path -> (size, mtime_ns, sha1) of every file under root, internal ones included."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root)] = (
                    st.st_size,
                    st.st_mtime_ns,
                    hashlib.file_digest(f, "sha1").hexdigest(),
                )
    return out


def staged(root: str) -> bool:
    """A copy is under way into root: ha-sync's temp file, or rsync's (.<name>.XXXXXX)."""
    return any(f.startswith((".hasync-tmp-", ".big-")) for _, _, files in os.walk(root) for f in files)


class Bed:
    """The Dell's dying share and the HP's folder, synced both ways."""

    def __init__(self, work: str, stall: float, mib: int):
        self.work, self.stall, self.mib = work, stall, mib
        self.share = FaultyShare(f"{work}/dell-disk", f"{work}/dell", binary=latencyfs_binary()).mount()
        self.dell, self.hp, self.logs = str(self.share.mountpoint), f"{work}/hp", f"{work}/logs"
        os.makedirs(self.hp, exist_ok=True)
        with open(f"{self.share.backing}/photo.jpg", "wb") as f:
            f.write(b"a photo")
        self.cycle()

    def ha_sync(self, src: str, dest: str, direction: str, stall: float | None = None) -> list[str]:
        flags = ["--pair", "bench", "--direction", direction, "--log-dir", self.logs, "--no-dry-run"]
        return [*HA_SYNC, "--src", src, "--dest", dest, *flags, "--stall-timeout", f"{stall or self.stall:g}"]

    def cycle(self) -> None:
        for src, dest, direction in ((self.dell, self.hp, "dell-to-hp"), (self.hp, self.dell, "hp-to-dell")):
            proc = subprocess.run(self.ha_sync(src, dest, direction), capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"the cycle after the outage failed: {proc.stderr}")

    def big(self, where: str, name: str) -> None:
        block = os.urandom(1 << 20)
        with open(os.path.join(where, name), "wb") as f:
            for _ in range(self.mib):
                f.write(block)

    def drop_big(self) -> None:
        """Remove the case's big file from both sides, with any partial copy a killed rsync left (.big-*)."""
        for root in (str(self.share.backing), self.hp):
            for name in os.listdir(root):
                if name.startswith(("big-", ".big-")):
                    os.remove(os.path.join(root, name))

    def close(self) -> None:
        self.share.unmount()


def ended_within(proc: subprocess.Popen, limit: float) -> float | None:
    """Seconds until proc ended, or None if it had not after `limit` (it is then killed)."""
    started = time.monotonic()
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    return time.monotonic() - started


def one_case(bed: Bed, case: str, reading: bool, cmd: Callable[[str, str, str], list[str]], limit: float) -> tuple:
    """(seconds or None, exit code, the survivor changed?) of one run of `cmd` in `case`."""
    src, dest = (bed.dell, bed.hp) if reading else (bed.hp, bed.dell)
    direction = "dell-to-hp" if reading else "hp-to-dell"
    if case != "before":  # something to be copying when the server dies
        name = f"big-{time.monotonic_ns()}.bin"
        bed.big(str(bed.share.backing) if reading else bed.hp, name)
    survivor = tree_state(bed.hp)
    if case == "before":
        bed.share.hang()
    proc = subprocess.Popen(cmd(src, dest, direction), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if case != "before":
        staging_in = bed.hp if reading else str(bed.share.backing)
        deadline = time.monotonic() + 120
        while not staged(staging_in) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # polling the copy's first staged bytes
        bed.share.hang()
    if case == "sigterm":
        time.sleep(1.0)  # the bench's one wait on time: the run is now blocked in the dead share
        proc.send_signal(signal.SIGTERM)
    took = ended_within(proc, limit)
    bed.share.heal()
    after = tree_state(bed.hp)
    if reading:  # the HP is the destination: whole new files may have arrived, nothing else may change
        changed = any(after.get(path) != state for path, state in survivor.items() if not path.startswith(".hasync"))
    else:
        changed = after != survivor
    return took, proc.returncode, changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stall-timeout", type=float, default=60.0)
    ap.add_argument("--mib", type=int, default=384, help="MiB being copied when the server dies")
    ap.add_argument("--rsync-limit", type=float, default=30.0, help="s rsync gets past ha-sync's target")
    ap.add_argument("--cases", default="before,mid-copy,sigterm", help="which cases, comma-separated")
    opts = ap.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        raise SystemExit("needs root and /dev/fuse")
    as_installed()
    target = opts.stall_timeout + 15
    rows = []
    with tempfile.TemporaryDirectory(prefix="hasync-outage-") as work:
        bed = Bed(work, opts.stall_timeout, opts.mib)
        try:
            for case in opts.cases.split(","):
                for reading in (True, False):
                    stall = 600.0 if case == "sigterm" else None
                    limit = (5 if case == "sigterm" else target) + opts.rsync_limit
                    ours = one_case(
                        bed, case, reading, lambda s, d, dr, stall=stall: bed.ha_sync(s, d, dr, stall), limit
                    )
                    bed.cycle()  # the pair recovers: the next cycle converges (else SystemExit)
                    bed.drop_big()
                    timeout = f"--timeout={int(opts.stall_timeout)}"
                    rsync_cmd = ["rsync", "-a", "--delete", timeout]
                    rsync = one_case(bed, case, reading, lambda s, d, _, cmd=rsync_cmd: [*cmd, s + "/", d], limit)
                    bed.drop_big()
                    bed.cycle()
                    rows.append((case, "dell (source)" if reading else "dell (destination)", ours, rsync))
        finally:
            bed.close()

    def shown(took: float | None) -> str:
        return "never" if took is None else f"{took:.1f} s"

    print(f"stall_timeout {opts.stall_timeout:g} s; target: run end <= {target:g} s, SIGTERM -> exit <= 5 s")
    print(
        f"{'case':<9} {'dead server':<19} {'ha-sync':>9} {'exit':>4} {'survivor':>9}   {'rsync':>9} {'exit':>4}  ratio"
    )
    for case, side, (took, code, changed), (r_took, r_code, _) in rows:
        ratio = f"{r_took / took:.1f}x" if took and r_took else ("rsync never ended" if took else "-")
        print(
            f"{case:<9} {side:<19} {shown(took):>9} {code:>4} {'CHANGED' if changed else 'unchanged':>9}   "
            f"{shown(r_took):>9} {r_code:>4}  {ratio}"
        )


if __name__ == "__main__":
    main()
