"""The opslog folder, reached only through calls that cannot hang the run.

In the seed's deployment the opslogs live on the HP's NFS export (192.168.2.193:/data/infra/ha-sync-logs):
when the HP dies, every run of every pair would wait forever on its first write there.  So every call on the
folder runs on a thread of its own and the run waits for it at most `timeout` seconds; past that the folder
counts as dead for the rest of the run (`LogFolderStalled`, at once, for every later call), the thread is
left behind where it waits (a write that cannot complete harms nothing; the process's exit ends it), and
the audit trail keeps its record in the local spool instead, flushed later (trail.py): a dead log folder is
handled like a dead database, never a hang.  A thread and not a child process: the opslog's file and its
POSIX lock belong to this process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
HURRY = 1.0  # seconds a call may take once the run is being interrupted


class LogFolderStalled(OSError):
    """The opslog folder did not answer in time (its server is down?): the message says which and how long."""


class LogFolder:
    """Runs calls on the folder `path` on one thread, each within `timeout` seconds (None: in the caller's
    thread, with no deadline: tools and tests on a local disk)."""

    def __init__(self, path: str, timeout: float | None = None, source: str = ""):
        self.path, self.timeout, self.source = path, timeout, source
        self.dead: str | None = None  # why the folder counts as dead, once it does
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """fn(*args) on the folder's thread; raises LogFolderStalled when it does not return within `timeout`
        (default: the folder's), or at once when the folder is already dead.  fn's own exception is raised."""
        if self.dead is not None:
            raise LogFolderStalled(self.dead)
        limit = timeout if timeout is not None else self.timeout
        if limit is None:
            return fn(*args)
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="opslog-folder", daemon=True)
            self._thread.start()
        box: list[Any] = []
        done = threading.Event()
        self._jobs.put((lambda: fn(*args), box, done))
        if not done.wait(limit):  # interruptible: a signal's handler runs here, and its exception rises
            shown = f"{self.path} ({self.source})" if self.source else self.path
            self.dead = f"opslog folder {shown} stopped answering: no reply for {limit:g} s"
            raise LogFolderStalled(self.dead)
        ok, value = box
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def hurry(self) -> None:
        """The run is being interrupted: no call waits more than HURRY seconds from now on."""
        self.timeout = HURRY if self.timeout is None else min(self.timeout, HURRY)

    def _serve(self) -> None:
        while True:
            job, box, done = self._jobs.get()
            try:
                box[:] = [True, job()]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box[:] = [False, exc]
            done.set()
