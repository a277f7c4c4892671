"""Is a pair root across a network?  Then every metadata call is a round trip (0.2-1 ms on a LAN) and
the walk and the copies pay by overlapping many of them; on a local disk they pay by not contending.

Measured on bench/'s latency bed (bench_nfs.py, 1 ms per request): the walk with 16 threads instead of 1
made a no-change run of 5000 files 0.07x rsync's time; 16 workers instead of 4 halved an initial copy of
2000 files (19.7 s -> 10.0 s; rsync 85 s).  Once the bed answered 64 requests at once, as NFS does, 32
workers copied 5000 files in 10.7-11.6 s against 16's 15.4-16.9 s (3 rounds each; 7.4-8.6 s against
8.4-9.5 s at 250 us) for 27 MiB more in all (PSS of the 33 processes: 138 MiB); 32 walk threads were no
faster than 16 at 250 us.  Locally, 1 walk thread and 4 workers are the fastest measured on 2 cores
(bench_engine.py).
"""

from __future__ import annotations

import os
import time

AUTO_THREADS = 16  # walk threads across a network
AUTO_WORKERS = 32  # worker processes copying into a network filesystem
LOCAL_WORKERS = 4  # the seed's default, the fastest measured locally on 2 cores
_NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "fuse", "sshfs")
_SLOW_STAT = 200e-6  # seconds: a stat slower than this went over a network (a local one takes ~2 us)


def on_network(root: str) -> bool:
    """By the filesystem's type in /proc/mounts, or, failing that, by a stat of the root slower than a local
    one can be (an NFS attribute cache can hide the latency from the stat: hence the type first)."""
    if _filesystem_type(root).split(".")[0] in _NETWORK_FS:
        return True
    times = []
    try:
        for _ in range(3):
            started = time.perf_counter()
            os.stat(root)
            times.append(time.perf_counter() - started)
    except OSError:
        return False  # not there (the run is refused later, saying so)
    return sorted(times)[1] > _SLOW_STAT


def workers_for(network: bool, setting: int) -> int:
    """Worker processes for copies into a destination: the setting, or (0) chosen by where it is (`network`:
    on_network of it, asked in a child: liveness.py)."""
    if setting:
        return setting
    return AUTO_WORKERS if network else LOCAL_WORKERS


def _filesystem_type(path: str) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it in /proc/mounts)."""
    return _mount_of(os.path.realpath(path))[1]


def _mount_of(path: str) -> tuple[str, str]:
    """(source, type) of the longest mount point above `path` in /proc/mounts; nothing on a share is read."""
    best, found = "", ("", "")
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, found = point, (fields[0].replace("\\040", " "), fields[2])
    except OSError:
        return "", ""
    return found


def mount_source(root: str) -> str:
    """What a network filesystem at `root` is mounted from ("192.168.2.100:/data/media"), else "": for
    naming a side that stopped answering.  By the path as given (realpath would stat every component of
    it, and a dead server's root never answers), so a symlink on the way is not followed."""
    source, kind = _mount_of(os.path.abspath(root))
    return source if kind.split(".")[0] in _NETWORK_FS and ":" in source else ""
