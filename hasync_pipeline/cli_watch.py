"""`ha-sync watch ROOT...`: watch this server's pair roots and keep their change logs (feed/watcher.py), until
SIGTERM or SIGINT.  Run it on each server, on its own disks (not through NFS: a client sees no events)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

from .feed.watcher import Watcher


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ha-sync watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", help="pair roots on this server's own disks, e.g. /data/media")
    args = parser.parse_args(argv)
    missing = [root for root in args.roots if not os.path.isdir(root)]
    if missing:
        print(f"ha-sync watch: not a folder: {', '.join(missing)} (is the disk mounted?)", file=sys.stderr)
        return 2
    stopped: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopped.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    watcher = Watcher([os.path.abspath(root) for root in args.roots])
    print(f"ha-sync watch: watching {', '.join(args.roots)}", flush=True)
    try:
        for _ in watcher.run(stop=lambda: bool(stopped)):
            pass
    finally:
        watcher.close()
    return 0
