"""The local lease: the same semantics as the Kubernetes one, between processes on one machine.

One JSON file per pair in the state folder, `<state>/leases/ha-sync-<pair>.json`, read and rewritten under
an exclusive flock.  A holder on this machine whose process is gone counts as expired at once (a SIGKILLed
demo run does not block the next one for an hour); otherwise the TTL decides, as in the cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime

from .base import HeldLease, LeaseHeld, LeaseLost


@contextlib.contextmanager
def _locked(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return None  # a torn or foreign file: nobody holds it


def _write(fd: int, data: dict | None) -> None:
    os.ftruncate(fd, 0)
    if data is not None:
        os.pwrite(fd, json.dumps(data).encode(), 0)


def _alive(data: dict) -> bool:
    if data.get("host") != socket.gethostname():
        return True  # cannot tell from here: the TTL decides
    try:
        os.kill(int(data["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        pass
    return True


def _expired(data: dict, now: float) -> bool:
    return now > data["renewed"] + data["ttl"] or not _alive(data)


class LocalLease(HeldLease):
    def __init__(self, path: str, name: str, holder: str, ttl: float):
        super().__init__(ttl)
        self.path, self.name, self.holder = path, name, holder

    def _renew(self) -> None:
        with _locked(self.path) as fd:
            data = _read(fd)
            if data is None or data.get("holder") != self.holder:
                raise LeaseLost(f"lease {self.name} was taken over by {data and data.get('holder')}")
            data["renewed"] = time.time()
            _write(fd, data)

    def _verify(self) -> None:
        with _locked(self.path) as fd:
            data = _read(fd)
        if data is None or data.get("holder") != self.holder:
            raise LeaseLost(f"lease {self.name} was taken over by {data and data.get('holder')}")

    def _delete_if_ours(self) -> None:
        with _locked(self.path) as fd:
            data = _read(fd)
            if data is not None and data.get("holder") == self.holder:
                _write(fd, None)


def acquire_local(state_dir: str, pair: str, holder: str, ttl: float) -> LocalLease:
    name = f"ha-sync-{pair}"
    path = os.path.join(state_dir, "leases", f"{name}.json")
    with _locked(path) as fd:
        data = _read(fd)
        now = time.time()
        if data is not None and data.get("holder") != holder and not _expired(data, now):
            since = datetime.fromtimestamp(data["acquired"], UTC) if "acquired" in data else None
            raise LeaseHeld(name, data["holder"], since)
        _write(
            fd,
            {
                "holder": holder,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired": now,
                "renewed": now,
                "ttl": ttl,
            },
        )
    return LocalLease(path, name, holder, ttl)
