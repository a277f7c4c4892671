"""`ha-sync watch ROOT... [--server dell]`: watch this server's pair roots and keep their change logs
(feed/watcher.py), until SIGTERM or SIGINT.  Run it on each server, on its own disks (not through NFS: a client
sees no events).  With --server, each root's tip is also published to the audit database (feed_tips, by pair:
a root is the pair whose folder name it has), with when its oldest change not yet on the other side was seen
(the replication lag), at most once a second and at least once a minute, for the Dagster change-feed sensor
and the dashboard, which must not read a share.  A database that does not answer costs a warning, never a
change-log record."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import UTC, datetime
from types import FrameType

from .audit import AuditUnavailable, FeedTip
from .feed.lag import HEARTBEAT
from .feed.watcher import Watcher

PUBLISH_EVERY = 1.0  # seconds between two publications of the tips (a burst is one row update)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ha-sync watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", help="pair roots on this server's own disks, e.g. /data/media")
    parser.add_argument("--server", help='this server\'s name ("dell" or "hp"): publish the tips as that server')
    args = parser.parse_args(argv)
    missing = [root for root in args.roots if not os.path.isdir(root)]
    if missing:
        print(f"ha-sync watch: not a folder: {', '.join(missing)} (is the disk mounted?)", file=sys.stderr)
        return 2
    publisher = Publisher(args.server, args.roots) if args.server else None
    stopped: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopped.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    watcher = Watcher([os.path.abspath(root) for root in args.roots])
    print(f"ha-sync watch: watching {', '.join(args.roots)}", flush=True)
    try:
        if publisher is not None:
            publisher.publish(watcher)
        for _ in watcher.run(stop=lambda: bool(stopped)):
            if publisher is not None:
                publisher.publish(watcher)
    finally:
        watcher.close()
        if publisher is not None:
            publisher.close()
    return 0


class Publisher:
    """The tips of this server's roots, by pair, into feed_tips, with since when a change has waited for the
    other side: at most once a second, when something moved, and once a HEARTBEAT regardless (a silent
    watcher shows as silent, feed/lag.py)."""

    def __init__(self, server: str, roots: list[str]):
        from .audit import AuditStore
        from .pairs import load_registry

        registry = load_registry()
        by_folder = {pair.path or pair.name: pair.name for pair in registry.pairs}
        self.server = server
        self.pairs = {os.path.abspath(root): by_folder.get(os.path.basename(os.path.abspath(root))) for root in roots}
        self.store = AuditStore()
        self.sent: dict[str, FeedTip] = {}
        self.last = -HEARTBEAT
        self.down = False

    def publish(self, watcher: Watcher, force: bool = False) -> None:
        """Publish the tips if anything moved, and a second has passed since the last time (or `force`)."""
        if not force and time.monotonic() - self.last < PUBLISH_EVERY:
            return
        tips = {}
        for root in watcher.roots:
            if (pair := self.pairs.get(root.root)) is not None:
                since = root.pending_since()
                when = datetime.fromtimestamp(since, UTC) if since is not None else None
                tips[pair] = FeedTip(root.log.tip.epoch, root.log.tip.seq, when)
        if tips == self.sent and time.monotonic() - self.last < HEARTBEAT:
            return
        self.last = time.monotonic()
        try:
            self.store.publish_tips(self.server, tips, datetime.now(UTC))
        except AuditUnavailable as exc:
            if not self.down:
                print(f"ha-sync watch: cannot publish the tips ({exc}); the change logs go on", file=sys.stderr)
            self.down = True
            return
        self.sent, self.down = tips, False

    def close(self) -> None:
        self.store.dispose()
