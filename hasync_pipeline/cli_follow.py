"""`ha-sync follow --pair media [job flags]`: outside Kubernetes, the change feed's trigger.  Every second it
reads the tip of each side's change log (the last line only, on a thread the loop never waits for past
TIP_TIMEOUT: a dead server's share may not answer) and, when a side's tip has moved past what the runs have
carried (a run's own writes on the other side count as carried: engine/echo.py), runs that side's direction
as `ha-sync job <pair>_<direction> --scope changes [job flags]`, one run at a time: the same command the
timers run, so the lease, the audit trail and every check are the same.  The timers stay, running full
walks, as the safety net."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from .engine.changelog import Position, tip
from .engine.incremental import consumed
from .pairs import load_registry, validate_pair_name

POLL_SECONDS = 1.0
TIP_TIMEOUT = 5.0  # seconds a side's tip may take to read before that side is skipped this round
DIRECTION_OF = {"dell": "dell_to_hp", "hp": "hp_to_dell"}  # a change on a side travels away from it


_READING: dict[str, threading.Thread] = {}  # a root's read still waiting on its share: no second one meanwhile


def read_tip(root: str, timeout: float = TIP_TIMEOUT) -> tuple[bool, Position | None, bool]:
    """(answered, tip, waiting) of the change log under `root`: waiting is False when every record up to the
    tip is carried already (or is an echo of the other direction's own writes: engine/echo.py).  A share that
    does not answer is left behind, and not asked again until that read has returned (a dead server costs one
    stuck thread, not one a second)."""
    stuck = _READING.get(root)
    if stuck is not None and stuck.is_alive():
        return False, None, False
    found: list[tuple[Position | None, bool]] = []

    def read() -> None:
        try:
            now = tip(root)
            done = consumed(root, now.epoch) if now is not None else None
            found.append((now, now is not None and (done is None or done < now.seq)))
        except OSError:
            found.append((None, False))

    reader = threading.Thread(target=read, daemon=True, name="tip")
    _READING[root] = reader
    reader.start()
    reader.join(timeout)
    return (True, *found[0]) if found else (False, None, False)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ha-sync follow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", required=True, help="the pair to follow, e.g. media")
    args, job_flags = parser.parse_known_args(argv)
    pair = validate_pair_name(args.pair)
    registry = load_registry()
    settings = registry.settings_for(pair)
    roots = {side: registry.get(pair).folder(side, settings) for side in DIRECTION_OF}
    stopped: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopped.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    seen: dict[str, Position | None] = {}
    follow_round(roots, seen, pair, job_flags, stopped)  # where each log stands now: the timers' up to here
    print(f"ha-sync follow: following {pair} ({roots['dell']}, {roots['hp']})", flush=True)
    while not stopped:
        time.sleep(POLL_SECONDS)  # the poll interval itself: no event to wait for across NFS
        follow_round(roots, seen, pair, job_flags, stopped)
    return 0


def follow_round(
    roots: dict[str, str], seen: dict[str, Position | None], pair: str, job_flags: list[str], stopped: list[int]
) -> None:
    """Read each side's tip once; run the direction away from each side whose tip moved since `seen`."""
    for side, root in roots.items():
        answered, now, waiting = read_tip(root)
        if not answered:
            print(f"ha-sync follow: {side} ({root}) is not answering; its changes wait", file=sys.stderr)
            continue
        first = side not in seen
        if not first and now == seen[side]:
            continue
        seen[side] = now
        if first or stopped or not waiting:
            continue
        job = f"{pair}_{DIRECTION_OF[side]}"
        command = [sys.executable, "-m", "hasync_pipeline.cli", "job", job, "--scope", "changes", *job_flags]
        done = subprocess.run(command)
        print(f"ha-sync follow: {job} ended with exit code {done.returncode}", flush=True)
